"""Staging in many small files through the engine, against a plain ``cp`` of them.

Run: ``python bench/stage_in.py [--files 10000] [--files-per-job 10] [--rounds 3]``

Both copy the same files on the same disk, alternately, ``--rounds`` times each; the
figure is the ratio of the medians. The engine's time runs from its start to the
moment every job is STAGED_IN, so it includes planning, the store's bookkeeping for
every file, the copies and reconciliation; building the jobs is set-up, not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balsam_tui.engine import Engine  # noqa: E402
from balsam_tui.settings import load_settings  # noqa: E402
from balsam_tui.site import init_site  # noqa: E402
from balsam_tui.states import JobState  # noqa: E402
from balsam_tui.store import Database  # noqa: E402
from balsam_tui.store import jobs as job_store  # noqa: E402
from balsam_tui.store.jobs import JobSpec  # noqa: E402

PER_DIR = 500


def make_sources(root: Path, files: int, size: int) -> list[Path]:
    block = os.urandom(size)
    paths = []
    for n in range(files):
        folder = root / f"d{n // PER_DIR:03d}"
        if n % PER_DIR == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{n:06d}.bin"
        path.write_bytes(block)
        paths.append(path)
    return paths


def time_cp(sources: Path, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(sources), str(target)], check=True)
    return time.perf_counter() - started


def time_engine(
    work: Path,
    sources: Path,
    paths: list[Path],
    workers: int | None = None,
    per_job: int = 1,
) -> float:
    settings = (
        f"transfers:\n  transfer_locations:\n    src: local://localhost{sources}\n"
    )
    if workers is not None:
        settings += f"  local_workers: {workers}\n"
    site = init_site(work / "site", settings_text=settings)
    db = Database(site.store_path)
    slots = {f"f{k}": {"direction": "in", "local_path": "."} for k in range(per_job)}
    job_store.create_app(db, "copy", slots)
    specs = [
        JobSpec(
            workdir=f"j/{n // PER_DIR:03d}/{n:06d}",
            app="copy",
            transfers={
                f"f{k}": f"src:{p}"
                for k, p in enumerate(paths[n * per_job : (n + 1) * per_job])
            },
        )
        for n in range(len(paths) // per_job)
    ]
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)

    engine = Engine(site)
    done = threading.Event()

    def watch(snapshot) -> None:
        if snapshot.job_counts.get(JobState.STAGED_IN, 0) == len(paths) // per_job:
            done.set()
            engine.stop()

    engine.subscribe(watch)
    started = time.perf_counter()
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    runner.join()
    elapsed = time.perf_counter() - started
    staged = job_store.job_counts(db).get(JobState.STAGED_IN, 0)
    db.close()
    if staged != len(paths) // per_job:
        raise SystemExit(f"engine stopped with {staged} jobs staged in")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", default=None, help="where to work (default: a temp dir)"
    )
    parser.add_argument(
        "--files-per-job",
        type=int,
        default=10,
        help="stage-in files per job (default 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local_workers for the engine (default: the setting's)",
    )
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-stage-in-", dir=args.dir))
    try:
        sources = base / "sources"
        paths = make_sources(sources, args.files, args.size)
        cp_times, engine_times = [], []
        for round_ in range(args.rounds):
            target = base / f"cp-{round_}"
            cp_times.append(time_cp(sources, target))
            shutil.rmtree(target)
            work = base / f"engine-{round_}"
            engine_times.append(
                time_engine(work, sources, paths, args.workers, args.files_per_job)
            )
            shutil.rmtree(work)
            print(
                f"round {round_ + 1}: cp {cp_times[-1]:.2f} s, "
                f"engine {engine_times[-1]:.2f} s",
                flush=True,
            )
        cp, engine = statistics.median(cp_times), statistics.median(engine_times)
        mib = args.files * args.size / 2**20
        print(
            f"{args.files} files of {args.size // 1024} KiB ({mib:.0f} MiB) in "
            f"{args.files // args.files_per_job} jobs, median of {args.rounds} rounds:"
        )
        print(f"  cp -r   {cp:6.2f} s  {mib / cp:7.0f} MiB/s")
        print(
            f"  engine  {engine:6.2f} s  {mib / engine:7.0f} MiB/s  "
            f"{args.files / engine:7.0f} files/s"
        )
        print(f"  ratio engine/cp: {engine / cp:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
