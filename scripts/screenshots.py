"""Screenshots of the console, taken from the real app running the demo site.

Builds a fresh demo site (as ``balsam-tui --demo`` does), runs the console headless
with its engine and the demo's compute side, and saves each pane and the main
dialogs as SVG (``App.save_screenshot``) and PNG (``rsvg-convert``, from Debian's
``librsvg2-bin``) into ``screenshots/``. The pictures show a live run, so they
differ a little from one run to the next.

    python scripts/screenshots.py              # into ./screenshots
    python scripts/screenshots.py --out /tmp/shots --size 100x30
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEMO_ROOT = Path("/tmp/balsam-tui-demo")  # a short path reads better on screen


async def take(out: Path, size: tuple[int, int]) -> list[Path]:
    from textual.pilot import Pilot

    from balsam_tui.demo import DemoComputeSide, build_demo_site
    from balsam_tui.engine import Engine
    from balsam_tui.headless import configure_logging
    from balsam_tui.ui.app import BalsamConsole
    from balsam_tui.ui.job_filter import parse_filter
    from balsam_tui.ui.log_bridge import QueuedLogHandler
    from balsam_tui.ui.panes.jobs import JobsPane
    from balsam_tui.ui.panes.tasks import TasksPane

    shutil.rmtree(DEMO_ROOT, ignore_errors=True)
    site = build_demo_site(DEMO_ROOT)
    configure_logging(site, stderr=False)
    app = BalsamConsole(
        site,
        Engine(site),
        log_handler=QueuedLogHandler(),
        demo_side=DemoComputeSide(site),
    )
    saved: list[Path] = []

    async def shot(pilot: Pilot, name: str) -> None:
        await pilot.pause(0.6)  # one redraw after the last snapshot
        app.save_screenshot(f"{name}.svg", path=str(out))
        saved.append(out / f"{name}.svg")

    async def until(
        pilot: Pilot, condition: Callable[[], object], limit: float
    ) -> None:
        deadline = time.monotonic() + limit
        while not condition() and time.monotonic() < deadline:
            await pilot.pause(0.1)

    async with app.run_test(size=size) as pilot:
        await until(
            pilot, lambda: app.snapshot and len(app.snapshot.tasks_in_flight) >= 3, 10
        )
        await shot(pilot, "tasks")
        await pilot.press("2")
        await shot(pilot, "jobs")

        await until(pilot, lambda: app._demo_done, 60)
        app.clear_notifications()
        await pilot.press("1")
        tasks = app.query_one(TasksPane)
        failed = next(k for k, t in enumerate(app.snapshot.tasks) if t.files_failed)
        tasks.table.move_cursor(row=failed)
        await pilot.press("enter")
        await shot(pilot, "task-items")
        await pilot.press("escape")

        await pilot.press("2")
        app.query_one(JobsPane).set_filter(parse_filter("errors"))
        await shot(pilot, "jobs-with-errors")
        await pilot.press("enter")
        await shot(pilot, "job-story")
        await pilot.press("escape")

        await pilot.press("3")
        await shot(pilot, "settings")
        await pilot.press("4")
        await shot(pilot, "log")
        await pilot.press("question_mark")
        await shot(pilot, "help")
        await pilot.press("escape", "R")
        await shot(pilot, "retry-all")
        await pilot.press("n", "q")
    return saved


def to_png(svg: Path) -> Path:
    """Convert with rsvg-convert, which needs to be told to keep the spaces."""
    text = svg.read_text(encoding="utf-8")
    if 'xml:space="preserve"' not in text:
        text = text.replace("<svg ", '<svg xml:space="preserve" ', 1)
        svg.write_text(text, encoding="utf-8")
    png = svg.with_suffix(".png")
    subprocess.run(["rsvg-convert", str(svg), "-o", str(png)], check=True)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="screenshots")
    parser.add_argument("--size", default="120x34", help="COLUMNSxLINES")
    args = parser.parse_args()
    columns, lines = (int(n) for n in args.size.split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if shutil.which("rsvg-convert") is None:
        print(
            "screenshots: rsvg-convert not found (apt-get install librsvg2-bin); "
            "writing SVG only",
            file=sys.stderr,
        )
    saved = asyncio.run(take(out, (columns, lines)))
    for svg in saved:
        made = [svg]
        if shutil.which("rsvg-convert"):
            made.append(to_png(svg))
        print("  ".join(str(p) for p in made))
    shutil.rmtree(DEMO_ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
