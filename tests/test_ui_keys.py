"""Every key of the console, pressed through Textual's pilot against a real engine.

Each test runs ``BalsamConsole`` on a real site with the real engine in its worker
thread (the local backend copies real files, or a scripted service holds tasks in
flight where a test needs one to stay there) and asserts what the key changed: in
the store's journal, in the engine's snapshot, on the screen.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest
import requests
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from balsam_tui.demo import build_demo_site
from balsam_tui.engine import Engine
from balsam_tui.engine.lock import SiteLock
from balsam_tui.globus.auth import TOKENS_FILE
from balsam_tui.site import Site
from balsam_tui.states import JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.testing.globus_standin import GlobusStandin
from balsam_tui.ui.app import BalsamConsole
from balsam_tui.ui.dialogs.confirm import ConfirmDialog
from balsam_tui.ui.dialogs.help import HelpScreen
from balsam_tui.ui.dialogs.job_story import JobStoryScreen
from balsam_tui.ui.dialogs.login import LoginDialog
from balsam_tui.ui.dialogs.task_detail import TaskScreen
from balsam_tui.ui.panes import jobs as jobs_pane
from balsam_tui.ui.panes.jobs import JobsPane, JobTable
from balsam_tui.ui.panes.tasks import TasksPane
from balsam_tui.ui.status import StatusBar
from tests.globus_site import make_globus_site, standin_for
from tests.test_ui_sites import ScriptedService, build_site

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_globus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GLOBUS_CLIENT_ID",
        "GLOBUS_CLIENT_SECRET",
        "BALSAM_TUI_GLOBUS_CLIENT_ID",
    ):
        monkeypatch.delenv(name, raising=False)


def pilot_test(scenario: Callable[..., Coroutine]) -> Callable[..., None]:
    """Run an async scenario as a plain test (no asyncio plugin needed)."""

    @functools.wraps(scenario)
    def test(*args: object, **kwargs: object) -> None:
        asyncio.run(scenario(*args, **kwargs))

    return test


async def until(
    pilot: Pilot, condition: Callable[[], object], what: str, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)


def journal(site: Site) -> list[str]:
    db = Database(site.store_path)
    try:
        return [f"{e.kind} {e.message}" for e in job_store.recent_journal(db, 10_000)]
    finally:
        db.close()


def said(app: BalsamConsole) -> str:
    return str(app.query_one(StatusBar).content)


def key_state(app: BalsamConsole, key: str) -> tuple[str, bool]:
    """The action a key runs now, and whether it is enabled (not greyed)."""
    active = app.screen.active_bindings[key]
    return active.binding.action, active.enabled


def running(site: Site, **options: object) -> BalsamConsole:
    return BalsamConsole(site, Engine(site), **options)


# -- pause, resume, reload, panes, help, palette ------------------------------------


@pilot_test
async def test_pause_resume_reload_help_and_the_palette(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=4)
    settings = built.site.settings_path
    app = running(built.site)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.engine_view.state == "running", "the engine")
        assert key_state(app, "p") == ("pause", True)

        await pilot.press("p")
        await until(pilot, lambda: app.engine_view.state == "paused", "a pause")
        assert key_state(app, "p") == ("resume", True)
        assert "paused" in said(app)

        await pilot.press("p")
        await until(pilot, lambda: app.engine_view.state == "running", "a resume")

        # 3 and 4 are pressed by the Settings and Log pictures (test_ui_snapshots).
        await pilot.press("2")
        assert app._active_pane() == "jobs"
        await pilot.press("1")
        assert app._active_pane() == "tasks"

        text = settings.read_text()
        settings.write_text(text.replace("batch_size: 6", "batch_size: 9"))
        await pilot.press("ctrl+r")
        await until(
            pilot,
            lambda: app.engine.settings.transfers.transfer_batch_size == 9,
            "the reload",
        )
        values = app.query_one("#settings-values", DataTable)
        await until(
            pilot,
            lambda: "9" in str(values.get_row("transfer_batch_size")),
            "the new value in the Settings pane",
        )
        settings.write_text(
            text.replace("  retry_limit", "  no_such_key: 1\n  retry_limit")
        )
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "refused" in said(app), "the refusal on screen")
        problems = app.query_one("#settings-problems", Static)
        assert "no_such_key" in str(problems.content)
        assert app.engine.settings.transfers.transfer_batch_size == 9

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"pause")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.engine_view.state == "paused", "palette pause")

    kinds = journal(built.site)
    assert sum(k.startswith("command.pause") for k in kinds) == 2
    assert any(k.startswith("command.resume") for k in kinds)
    assert any(k.startswith("settings.reloaded") for k in kinds)


# -- retry -----------------------------------------------------------------------------


@pilot_test
async def test_retry_keys_send_failed_items_again(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=5, missing=(0,), period=0.2)
    app = running(built.site)

    def errors() -> int:
        return app.snapshot.items(state="error") if app.snapshot else 0

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: errors() == 1, "job 1's frame to fail")
        await until(
            pilot, lambda: app.query_one(JobsPane).selected.retryable, "the row"
        )
        assert app.query_one(JobsPane).selected.id == 1
        assert key_state(app, "r") == ("retry", True)

        await pilot.press("r")
        await until(
            pilot,
            lambda: any("retried by operator" in k for k in journal(built.site)),
            "the retry of job 1",
        )

        def failed_twice() -> bool:
            events = app.snapshot.events
            return sum(e.message.startswith("item 1 error") for e in events) == 2

        await until(pilot, failed_twice, "the frame to fail again")

        await pilot.press("down")  # job 2 has nothing to retry: r is greyed
        await until(pilot, lambda: key_state(app, "r") == ("retry", False), "grey r")

        await pilot.press("R")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert not any("retry of all" in k for k in journal(built.site))

        await pilot.press("R")
        await pilot.press("y")
        await until(
            pilot,
            lambda: any("retry of all 1 failed" in k for k in journal(built.site)),
            "retry all",
        )


# -- cancel, task items, job story -----------------------------------------------------


@pilot_test
async def test_cancel_a_task_after_a_confirm_and_open_its_items(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=3)
    service = ScriptedService()  # tasks stay queued until cancelled
    engine = Engine(built.site, backend_factory=lambda *args: service)
    app = BalsamConsole(built.site, engine)

    async with app.run_test(size=SIZE) as pilot:
        tasks = app.query_one(TasksPane)
        await until(pilot, lambda: tasks.selected is not None, "a task in flight")
        task_id = tasks.selected.id
        assert key_state(app, "c") == ("cancel_task", True)

        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: task_id in service.cancelled, "the cancel")
        await until(
            pilot, lambda: tasks.selected.state == "cancelled", "the cancelled task"
        )
        assert key_state(app, "c") == ("cancel_task", False)  # nothing to cancel

        await pilot.press("enter")
        assert isinstance(app.screen, TaskScreen)
        await until(pilot, lambda: app.screen.detail is not None, "the task's items")
        assert all(
            i.error == "cancelled by the operator" for i in app.screen.detail.items
        )
        assert key_state(app, "r") == ("retry", True)
        await pilot.press("escape")

        await pilot.press("2", "enter")
        assert isinstance(app.screen, JobStoryScreen)
        assert app.screen.story.job.id == 1
        assert "cancelled by the operator" in app.screen.story.last_error
        await pilot.press("r")  # retry from the story
        await until(
            pilot,
            lambda: any("retried by operator" in k for k in journal(built.site)),
            "the retry from the story",
        )
        await pilot.press("escape")
        assert not isinstance(app.screen, JobStoryScreen)


# -- the jobs pane: filter, marks, order, paging ---------------------------------------


@pilot_test
async def test_filter_marks_order_and_paging_through_many_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small window, so that a few pages reach its edge.
    monkeypatch.setattr(jobs_pane, "WINDOW", 40)
    monkeypatch.setattr(jobs_pane, "EDGE", 8)
    built = build_site(tmp_path, jobs=300)
    app = BalsamConsole(built.site, Engine(built.site), start_engine=False)

    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(JobsPane)
        table = app.query_one(JobTable)
        title = pane.query_one("#jobs-title", Static)

        await pilot.press("slash")
        box = pane.query_one("#job-filter", Input)
        assert app.focused is box
        await pilot.press(*"scan/05", "enter")
        assert pane.job_filter.text == "scan/05"
        assert [int(k) for k in table.keys] == list(range(51, 61))
        assert "of 10" in str(title.content)

        await pilot.press("escape")  # clears the filter
        assert pane.job_filter.is_empty and table.row_count == 40

        await pilot.press("end")
        assert pane.selected.id == 300 and table.row_count <= 40
        assert "of 300" in str(title.content)
        await pilot.press("home")
        assert pane.selected.id == 1

        for _ in range(5):  # past the end of the first window: it moves along
            await pilot.press("pagedown")
        assert pane.selected.id > 40 and table.row_count <= 40
        assert int(table.keys[0]) > 1
        for _ in range(7):
            await pilot.press("pageup")
        assert pane.selected.id < 10 and int(table.keys[0]) == 1

        await pilot.press("space")
        marked = pane.selected.id - 1
        assert pane.marked == {marked} and "1 marked" in str(title.content)
        assert key_state(app, "r") == ("retry", True)

        await pilot.press("o")  # newest first; the cursor stays on its job
        assert pane.selected.id == marked + 1
        assert int(table.keys[0]) > int(table.keys[-1])

        await pilot.press("escape")
        assert pane.marked == frozenset()


# -- Globus login ----------------------------------------------------------------------


@pytest.fixture
def globus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    gs = make_globus_site(tmp_path, jobs=2, stage_out=False)
    standin = standin_for(gs)
    for name, value in standin.environ.items():
        monkeypatch.setenv(name, value)
    yield gs, standin
    standin.stop()


@pilot_test
async def test_login_dialog_logs_in_against_the_globus_standin(
    globus: tuple,
) -> None:
    gs, standin = globus
    standin: GlobusStandin
    app = running(gs.site)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "not logged in" in said(app), "the login state")
        await until(pilot, lambda: app.snapshot.problems, "the engine's complaint")

        await pilot.press("l")
        dialog = app.screen
        assert isinstance(dialog, LoginDialog)
        assert dialog.url.startswith(standin.auth_url)
        await pilot.click("#login-copy")
        assert app.clipboard == dialog.url

        box = dialog.query_one("#login-code", Input)
        await pilot.click("#login-code")
        await pilot.press(*"typo", "enter")
        error = dialog.query_one("#login-error", Static)
        await until(pilot, lambda: "refused the code" in str(error.content), "refusal")
        assert app.screen is dialog and not box.disabled

        code = await asyncio.to_thread(
            lambda: requests.get(dialog.url, timeout=10).text.strip()
        )
        box.value = code
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, LoginDialog), "dismissal")
        assert "logged in as researcher@standin.example.org" in said(app)
        assert (gs.site.root / TOKENS_FILE).exists()

        def staged() -> bool:
            return app.snapshot.job_counts.get(JobState.STAGED_IN, 0) == 2

        await until(pilot, staged, "both frames through the stand-in", timeout=20)
    assert any(k.startswith("command.credentials") for k in journal(gs.site))


# -- quitting, failures, another engine ------------------------------------------------


@pilot_test
async def test_the_cursor_stays_on_its_row_and_quit_loses_nothing(
    tmp_path: Path,
) -> None:
    built = build_site(tmp_path, jobs=12, batch=2, concurrency=3, period=0.1)
    service = ScriptedService()  # tasks finish when this test says so
    engine = Engine(built.site, backend_factory=lambda *args: service)
    app = BalsamConsole(built.site, engine)

    async with app.run_test(size=SIZE) as pilot:
        tasks = app.query_one(TasksPane)
        await until(pilot, lambda: len(tasks.table.keys) == 3, "three tasks")
        await pilot.press("down")
        followed = tasks.selected.id
        service.finish(1)
        service.finish(3)
        await until(pilot, lambda: len(tasks.table.keys) == 5, "newer tasks on top")
        assert tasks.selected.id == followed and tasks.table.keys[0] == "5"

        await pilot.press("2")
        pane = app.query_one(JobsPane)
        for _ in range(6):
            await pilot.press("down")
        assert pane.selected.id == 7
        service.finish(2)
        await until(
            pilot, lambda: app.snapshot.job_counts.get("STAGED_IN", 0) >= 2, "changes"
        )
        assert pane.selected.id == 7

        assert app.snapshot.tasks_in_flight
        started = time.monotonic()
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, "the exit", timeout=5)
    assert time.monotonic() - started < 2.0
    assert app.return_code == 0

    lock = SiteLock(built.site.root)
    lock.acquire()  # the engine let go of the site
    lock.release()
    # The next start, with the real local backend, redoes the tasks left in flight.
    Engine(built.site).run(exit_when_idle=True)
    db = Database(built.site.store_path)
    assert job_store.job_counts(db) == {JobState.STAGED_IN: 12}
    db.close()


@pilot_test
async def test_an_engine_failure_is_shown_and_the_console_goes_on(
    tmp_path: Path,
) -> None:
    built = build_site(tmp_path, jobs=3)
    (built.site.root / "engine.lock").mkdir()  # the engine cannot take its lock
    app = running(built.site)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.engine_view.state == "failed", "the failure")
        assert "IsADirectoryError" in said(app)
        assert key_state(app, "p") == ("pause", False)
        assert key_state(app, "R") == ("retry_all", False)
        await pilot.press("2")
        assert app.query_one(JobsPane).selected.id == 1


@pilot_test
async def test_with_another_engine_running_the_console_follows_the_store(
    tmp_path: Path,
) -> None:
    built = build_site(tmp_path, jobs=3)
    other = SiteLock(built.site.root)
    other.acquire()
    app = running(built.site)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.engine_view.state == "elsewhere", "refusal")
            assert f"(pid {os.getpid()}) is already running" in said(app)
            await pilot.press("2")
            db = Database(built.site.store_path)
            job_store.set_job_states(db, [2], JobState.FAILED, source="another tool")
            db.close()
            await until(
                pilot,
                lambda: app.snapshot.job_counts.get("FAILED") == 1,
                "the change from outside",
            )
            await until(
                pilot,
                lambda: "FAILED" in str(app.query_one(JobTable).get_row("2")),
                "the row",
            )
    finally:
        other.release()


# -- the demo --------------------------------------------------------------------------


@pilot_test
async def test_the_demo_shows_stage_in_out_failures_and_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from balsam_tui import demo

    monkeypatch.setattr(demo, "LATE_AFTER", 1.0)  # the late frame, sooner
    site = build_demo_site(tmp_path / "demo", jobs=24)
    app = running(site, demo_side=demo.DemoComputeSide(site))

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._demo_done, "the end of the demo", timeout=25)
        kinds = journal(site)
        await pilot.press("q")
    assert app.snapshot.job_counts.get(JobState.JOB_FINISHED) == 23
    assert app.snapshot.items(state="error") == 1  # frame 7 never arrives
    assert any("retried by demo operator" in k for k in kinds)
