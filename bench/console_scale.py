"""How the console's cost grows with the store: 1,000 jobs against 100,000.

For each size, a fresh process builds (or reuses) a site with that many jobs, opens
the real console headless at 200x50 on its Jobs pane, and then, again and again,
changes a few of the jobs on screen in the store, takes a snapshot (the same reads
the engine makes) and times the console applying it and redrawing. It also times
jumping to the last job and filtering by text, and reads the process's memory.
The parent prints the figures side by side and the ratio of the medians, which
should stay near 1: the console reads a window of jobs by key, never the whole
store.

    python bench/console_scale.py                  # 1,000 and 100,000 jobs
    python bench/console_scale.py --sizes 1000,20000 --rounds 20
    python bench/console_scale.py --cache /tmp/sites   # keep the sites for reruns

The engine is not started: the numbers are the console's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = (200, 50)
SETTINGS = """\
transfers:
  transfer_locations:
    beamline: local://localhost{root}/beamline
    archive: local://localhost{root}/archive
"""


def build(root: Path, jobs: int) -> float:
    """A site with ``jobs`` jobs of one stage-in and one stage-out slot."""
    from balsam_tui.settings import load_settings
    from balsam_tui.site import init_site
    from balsam_tui.store import Database
    from balsam_tui.store import jobs as job_store
    from balsam_tui.store.jobs import JobSpec

    started = time.perf_counter()
    site = init_site(root / "site", settings_text=SETTINGS.format(root=root))
    db = Database(site.store_path)
    job_store.create_app(
        db,
        "scan.reduce",
        {
            "frame": {"direction": "in", "local_path": "frame.h5", "required": True},
            "result": {"direction": "out", "local_path": "result.json"},
        },
    )
    locations = load_settings(site.settings_path).locations
    for first in range(0, jobs, 10_000):
        specs = [
            JobSpec(
                workdir=f"scan/{n:06d}",
                app="scan.reduce",
                transfers={
                    "frame": f"beamline:{root}/beamline/{n:06d}/frame.h5",
                    "result": f"archive:{root}/archive/{n:06d}.json",
                },
            )
            for n in range(first, min(first + 10_000, jobs))
        ]
        job_store.create_jobs(db, specs, locations)
    db.close()
    (root / "built").write_text(str(jobs))
    return time.perf_counter() - started


async def measure(root: Path, rounds: int) -> dict[str, object]:
    from balsam_tui.engine import Engine
    from balsam_tui.engine.snapshot import EngineStatus
    from balsam_tui.site import Site
    from balsam_tui.states import JobState
    from balsam_tui.store import Database
    from balsam_tui.store import jobs as job_store
    from balsam_tui.ui import reading
    from balsam_tui.ui.app import BalsamConsole
    from balsam_tui.ui.job_filter import parse_filter
    from balsam_tui.ui.panes.jobs import JobsPane

    site = Site(root / "site")
    db = Database(site.store_path)

    def picture():
        return reading.store_snapshot(
            db, site=site.name, status=EngineStatus.RUNNING, now=time.time()
        )

    app = BalsamConsole(site, Engine(site), start_engine=False)
    snapshot_seconds, apply_seconds = [], []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        pane = app.query_one(JobsPane)
        states = (JobState.STAGED_IN, JobState.READY)
        for n in range(rounds):
            # A few jobs on screen change, as the engine would move them.
            job_store.set_job_states(
                db, [3 + n % 20, 30], states[n % 2], source="bench"
            )
            started = time.perf_counter()
            snapshot = picture()
            snapshot_seconds.append(time.perf_counter() - started)

            # pause(0): let the screen take its messages, then redraw at once
            # (pause() would also wait for the CPU to fall idle).
            started = time.perf_counter()
            app.apply_snapshot(snapshot)
            await pilot.pause(0)
            apply_seconds.append(time.perf_counter() - started)
            await pilot.pause()

        started = time.perf_counter()
        await pilot.press("end")
        await pilot.pause(0)
        last_job = time.perf_counter() - started
        selected = pane.selected.id

        started = time.perf_counter()
        pane.set_filter(parse_filter("scan/0009"))
        await pilot.pause(0)
        text_filter = time.perf_counter() - started
        rows_in_table = pane.table.row_count

    rss_kib = _rss_kib()
    db.close()
    return {
        "jobs": job_store_count(site),
        "snapshot_ms": _ms(snapshot_seconds),
        "apply_and_redraw_ms": _ms(apply_seconds),
        "apply_only_ms": _ms(list(app.apply_seconds)[-rounds:]),
        "end_key_ms": round(last_job * 1000, 1),
        "last_job": selected,
        "text_filter_ms": round(text_filter * 1000, 1),
        "rows_in_table_after_filter": rows_in_table,
        "rss_mib": round(rss_kib / 1024, 1),
        "peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }


def job_store_count(site) -> int:
    from balsam_tui.store import Database
    from balsam_tui.store import jobs as job_store

    db = Database(site.store_path)
    try:
        return sum(job_store.job_counts(db).values())
    finally:
        db.close()


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values) * 1000, 1),
        "p90": round(sorted(values)[int(len(values) * 0.9) - 1] * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    root = Path(args.root)
    built = root / "built"
    seconds = 0.0
    if not (built.exists() and built.read_text() == str(args.child)):
        seconds = build(root, args.child)
    figures = asyncio.run(measure(root, args.rounds))
    figures["build_s"] = round(seconds, 1)
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--cache", help="keep the built sites here, and reuse them")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp())
    results = []
    for jobs in (int(s) for s in args.sizes.split(",")):
        root = cache / f"jobs-{jobs}"
        root.mkdir(parents=True, exist_ok=True)
        print(f"measuring {jobs:,} jobs ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(jobs),
                "--root",
                str(root),
                "--rounds",
                str(args.rounds),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"console at {SIZE[0]}x{SIZE[1]}, Jobs pane, {args.rounds} snapshots each")
    header = f"{'':34}" + "".join(f"{r['jobs']:>14,} jobs" for r in results)
    print(header)
    rows = (
        ("site built in (s)", lambda r: r["build_s"]),
        ("snapshot taken, median (ms)", lambda r: r["snapshot_ms"]["median"]),
        ("applied, median (ms)", lambda r: r["apply_only_ms"]["median"]),
        (
            "applied + redrawn, median (ms)",
            lambda r: r["apply_and_redraw_ms"]["median"],
        ),
        ("applied + redrawn, p90 (ms)", lambda r: r["apply_and_redraw_ms"]["p90"]),
        ("applied + redrawn, max (ms)", lambda r: r["apply_and_redraw_ms"]["max"]),
        ("End: last job (ms)", lambda r: r["end_key_ms"]),
        ("text filter (ms)", lambda r: r["text_filter_ms"]),
        ("rows held by the table", lambda r: r["rows_in_table_after_filter"]),
        ("RSS after (MiB)", lambda r: r["rss_mib"]),
        ("peak RSS (MiB)", lambda r: r["peak_rss_mib"]),
    )
    for label, value in rows:
        print(f"{label:34}" + "".join(f"{value(r):>19}" for r in results))
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = (
            large["apply_and_redraw_ms"]["median"]
            / small["apply_and_redraw_ms"]["median"]
        )
        print(
            f"\nratio {large['jobs']:,} / {small['jobs']:,} jobs, applying and "
            f"redrawing a snapshot (median): {ratio:.2f}  (aim: <= 1.5)"
        )
    if not args.cache:
        print(f"(sites left in {cache}; pass --cache to reuse them)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
