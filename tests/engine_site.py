"""A real site with three local locations and many jobs, shared by the engine tests.

Jobs have two stage-in slots (a frame from one of two source locations, and a
calibration file) and one stage-out slot (a result to the archive). ``ComputeSide``
plays the part of whatever runs the jobs: it writes each staged-in job's result and
marks it POSTPROCESSED.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from balsam_tui.settings import load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.states import JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import JobQuery, JobSpec

APP = "scan.reduce"

SETTINGS = """\
transfers:
  transfer_locations:
    alpha: local://localhost{root}/alpha
    beta: local:///{root}/beta
    archive: local://localhost{root}/archive
  max_concurrent_transfers: {concurrency}
  transfer_batch_size: {batch}
  service_period: {period}
  local_workers: {workers}
  retry_backoff: 1
"""


@dataclass
class EngineSite:
    site: Site
    root: Path
    jobs: int
    missing: frozenset[int]

    def source(self, n: int) -> Path:
        location = "alpha" if n % 2 == 0 else "beta"
        return self.root / location / f"run-{n // 100}" / f"frame-{n:05d}.dat"

    def calibration(self, n: int) -> Path:
        return self.root / "beta" / "calib" / f"calib-{n % 7}.json"

    def archived(self, n: int) -> Path:
        return self.root / "archive" / f"result-{n:05d}.txt"

    def workdir(self, n: int) -> Path:
        return self.site.data_dir / f"jobs/{n:05d}"


def make_site(
    root: Path,
    *,
    jobs: int,
    missing: Iterable[int] = (),
    size: int = 2048,
    concurrency: int = 5,
    batch: int = 100,
    period: float = 0.5,
    workers: int = 4,
) -> EngineSite:
    root = root.resolve()
    site = init_site(
        root / "site",
        settings_text=SETTINGS.format(
            root=root,
            concurrency=concurrency,
            batch=batch,
            period=period,
            workers=workers,
        ),
    )
    built = EngineSite(site, root, jobs, frozenset(missing))
    (root / "archive").mkdir()
    for k in range(7):
        path = root / "beta" / "calib" / f"calib-{k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{{"calibration": {k}}}\n')
    for n in range(jobs):
        if n in built.missing:
            continue
        path = built.source(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(n, size))

    db = Database(site.store_path)
    job_store.create_app(
        db,
        APP,
        {
            "frame": {"direction": "in", "local_path": "frame.dat", "required": True},
            "calib": {"direction": "in", "local_path": ".", "required": True},
            "result": {
                "direction": "out",
                "local_path": "out/result.txt",
                "required": True,
            },
        },
    )
    specs = [
        JobSpec(
            workdir=f"jobs/{n:05d}",
            app=APP,
            transfers={
                "frame": f"{'alpha' if n % 2 == 0 else 'beta'}:{built.source(n)}",
                "calib": {"location_alias": "beta", "path": str(built.calibration(n))},
                "result": f"archive:{built.archived(n)}",
            },
        )
        for n in range(jobs)
    ]
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return built


def _content(n: int, size: int) -> bytes:
    seed = hashlib.sha256(str(n).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def result_text(workdir: Path) -> str:
    frame = workdir / "frame.dat"
    return f"{workdir.name} {hashlib.sha256(frame.read_bytes()).hexdigest()}\n"


class ComputeSide:
    """Writes results for staged-in jobs and marks them POSTPROCESSED, in a thread."""

    def __init__(self, site: Site, pace: float = 0.05) -> None:
        self.site = site
        self.pace = pace
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ComputeSide:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        db = Database(self.site.store_path)
        try:
            while not self._stop.wait(self.pace):
                staged = job_store.list_jobs(
                    db, JobQuery(state=JobState.STAGED_IN), limit=200
                )
                for job in staged:
                    workdir = self.site.workdir(job.workdir)
                    out = workdir / "out" / "result.txt"
                    out.parent.mkdir(exist_ok=True)
                    out.write_text(result_text(workdir))
                if staged:
                    job_store.set_job_states(
                        db,
                        [j.id for j in staged],
                        JobState.POSTPROCESSED,
                        source="test compute side",
                    )
                    self.done += len(staged)
        finally:
            db.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settled(site: Site, expected_finished: int) -> Callable[[], bool]:
    """True once the expected jobs finished and no item is pending or active."""

    def check() -> bool:
        db = Database(site.store_path)
        try:
            jobs = job_store.job_counts(db)
            items = job_store.item_counts(db)
        finally:
            db.close()
        busy = sum(n for (_, s), n in items.items() if s in ("pending", "active"))
        return jobs.get(JobState.JOB_FINISHED, 0) == expected_finished and busy == 0

    return check


def files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, files in os.walk(root) for f in files}
