"""What each pane and dialog of the console looks like, compared with approved SVGs.

The store behind every picture is built by the real engine, driven cycle by cycle
with a fixed clock against a scripted transfer service (``picture_site``), at a
fixed path; times are shown in UTC. The engine is not started, so nothing moves
while the picture is taken. Update the pictures after an intended change with
``pytest tests/test_ui_snapshots.py --snapshot-update`` and look at them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from balsam_tui.engine import Engine
from balsam_tui.site import init_site
from balsam_tui.ui.app import BalsamConsole
from balsam_tui.ui.job_filter import parse_filter
from balsam_tui.ui.log_bridge import QueuedLogHandler
from balsam_tui.ui.panes.jobs import JobsPane
from balsam_tui.ui.panes.log import LogPane
from tests.test_ui_sites import PICTURES, T0, FixedClock, Picture, picture_site

WIDE = (100, 30)
SMALL = (80, 24)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture(autouse=True)
def no_globus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GLOBUS_CLIENT_ID",
        "GLOBUS_CLIENT_SECRET",
        "BALSAM_TUI_GLOBUS_CLIENT_ID",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def picture() -> Picture:
    # Nothing here changes the store: the engine is never started.
    return picture_site("snapshots")


def console(picture: Picture, **options: object) -> BalsamConsole:
    return BalsamConsole(
        picture.site,
        picture.engine,
        start_engine=False,
        clock=picture.clock,
        snapshot=picture.snapshot,
        **options,
    )


async def steady_inputs(pilot: Pilot) -> None:
    """Input cursors blink; a picture wants them still."""
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False


def test_tasks_pane(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), terminal_size=WIDE)


def test_jobs_pane(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), press=["2"], terminal_size=WIDE)


def test_jobs_pane_on_a_small_terminal(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), press=["2"], terminal_size=SMALL)


def test_jobs_pane_filtered_to_jobs_with_errors(snap_compare, picture: Picture) -> None:
    async def filter_errors(pilot: Pilot) -> None:
        await pilot.press("2")
        pilot.app.query_one(JobsPane).set_filter(parse_filter("errors"))

    assert snap_compare(console(picture), run_before=filter_errors, terminal_size=WIDE)


def test_jobs_pane_while_typing_a_filter(snap_compare, picture: Picture) -> None:
    async def type_filter(pilot: Pilot) -> None:
        await pilot.press("slash", *"state:READY")
        await steady_inputs(pilot)

    assert snap_compare(
        console(picture),
        run_before=type_filter,
        terminal_size=WIDE,
    )


def test_settings_pane(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), press=["3"], terminal_size=WIDE)


def test_log_pane(snap_compare, picture: Picture) -> None:
    handler = QueuedLogHandler()
    record = logging.LogRecord(
        "balsam_tui.engine.engine",
        logging.INFO,
        __file__,
        1,
        "task %d submitted: in beamline, 4 file(s), svc-4",
        (4,),
        None,
    )
    record.created = T0 + 20

    async def log_a_line(pilot: Pilot) -> None:
        handler.handle(record)
        pilot.app.query_one(LogPane).drain_log()

    assert snap_compare(
        console(picture, log_handler=handler),
        press=["4"],
        run_before=log_a_line,
        terminal_size=WIDE,
    )


def test_job_story(snap_compare, picture: Picture) -> None:
    # Job 5 is the one whose frame is missing.
    assert snap_compare(
        console(picture),
        press=["2", "down", "down", "down", "down", "enter"],
        terminal_size=WIDE,
    )


def test_task_items_and_events(snap_compare, picture: Picture) -> None:
    # Tasks are newest first: task 2 is the fourth row, the one with a failure.
    assert snap_compare(
        console(picture),
        press=["down", "down", "down", "enter"],
        terminal_size=WIDE,
    )


def test_help_screen(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), press=["question_mark"], terminal_size=WIDE)


def test_retry_all_asks_first(snap_compare, picture: Picture) -> None:
    assert snap_compare(console(picture), press=["R"], terminal_size=SMALL)


def test_login_dialog_says_why_it_cannot_log_in(snap_compare) -> None:
    root = PICTURES / "login"
    shutil.rmtree(root, ignore_errors=True)
    site = init_site(
        root / "site",
        settings_text="transfers:\n  transfer_locations:\n"
        "    remote: globus://5a1e0000-0000-4000-8000-0000000000b2/data\n",
    )
    clock = FixedClock()
    app = BalsamConsole(
        site, Engine(site, clock=clock), start_engine=False, clock=clock
    )

    assert snap_compare(app, press=["l"], terminal_size=WIDE)
