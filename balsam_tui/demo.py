"""``balsam-tui --demo``: a throw-away site that shows the whole life of a job.

The demo site has two local locations: ``beamline`` (where input frames appear) and
``archive`` (where results go). A few hundred jobs each stage in a frame and a shared
calibration file, "run" (the demo compute side writes a result and marks the job
POSTPROCESSED) and stage their result out. A few frames are missing on purpose, so
some items fail with a clear reason; one frame arrives late, and the demo operator
retries it, so the retry path shows too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from balsam_tui.site import Site, init_site
from balsam_tui.states import ItemState, JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import ItemQuery, JobQuery, JobSpec

log = logging.getLogger(__name__)

APP = "demo.reconstruct"
MISSING_FRAMES = (7, 42, 99)
LATE_FRAME = 13
LATE_AFTER = 4.0

SETTINGS = """\
# A demo site made by `balsam-tui --demo`. Safe to delete.
transfers:
  transfer_locations:
    beamline: local://localhost{root}/beamline
    archive: local://localhost{root}/archive
  max_concurrent_transfers: 4
  transfer_batch_size: 25
  service_period: 1
  retry_limit: 2
  retry_backoff: 2
  retry_backoff_max: 10
"""


def build_demo_site(
    root: str | os.PathLike[str], *, jobs: int = 240, seed: int = 7
) -> Site:
    """Create the demo site, its source files and its jobs; return the site."""
    root = Path(root).resolve()
    site = init_site(root, settings_text=SETTINGS.format(root=root))
    beamline, archive = root / "beamline", root / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    (beamline / "calibration").mkdir(parents=True, exist_ok=True)
    (beamline / "calibration" / "detector.json").write_text(
        json.dumps({"pixel_size_um": 75, "distance_mm": 312.5}) + "\n"
    )
    for n in range(jobs):
        if n in MISSING_FRAMES or n == LATE_FRAME:
            continue
        _write_frame(beamline, n, rng)

    from balsam_tui.settings import load_settings

    db = Database(site.store_path)
    job_store.create_app(
        db,
        APP,
        {
            "frame": {
                "direction": "in",
                "local_path": "frame.h5",
                "required": True,
                "description": "one detector frame",
            },
            "calibration": {
                "direction": "in",
                "local_path": ".",
                "required": True,
                "description": "detector calibration (keeps its name)",
            },
            "result": {
                "direction": "out",
                "local_path": "result.json",
                "required": True,
                "description": "reconstruction result",
            },
        },
        "reconstruct one detector frame",
    )
    specs = [
        JobSpec(
            workdir=f"scan/{n:04d}",
            app=APP,
            transfers={
                "frame": f"beamline:{beamline}/scan-{n:04d}/frame.h5",
                "calibration": f"beamline:{beamline}/calibration/detector.json",
                "result": f"archive:{archive}/scan-{n:04d}/result.json",
            },
            tags={"scan": f"{n // 60}"},
        )
        for n in range(jobs)
    ]
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return site


def _write_frame(beamline: Path, n: int, rng: random.Random) -> None:
    folder = beamline / f"scan-{n:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frame.h5").write_bytes(rng.randbytes(rng.randint(4, 64) * 1024))


class DemoComputeSide:
    """Plays the compute side (and, once, the operator) of the demo in a thread."""

    def __init__(self, site: Site, *, pace: float = 0.2) -> None:
        self.site = site
        self.pace = pace
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="demo-compute", daemon=True
        )
        self._started = 0.0
        self.late_frame_retried = False

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def finished(self) -> bool:
        """True once the late frame was retried and nothing is left to happen.

        Read from the store itself, not from an engine snapshot, which may be a
        moment old: a retried item must not look finished before it has moved.
        """
        if not self.late_frame_retried:
            return False
        db = Database(self.site.store_path)
        try:
            items = job_store.item_counts(db)
            jobs = job_store.job_counts(db)
        finally:
            db.close()
        moving = sum(
            n
            for (_, state), n in items.items()
            if state in (ItemState.PENDING, ItemState.ACTIVE)
        )
        return moving == 0 and not jobs.get(JobState.STAGED_IN)

    def _run(self) -> None:
        db = Database(self.site.store_path)
        try:
            while not self._stop.wait(self.pace):
                try:
                    self._run_staged_jobs(db)
                    self._deliver_late_frame(db)
                except Exception:
                    log.exception("the demo compute side failed a step")
        finally:
            db.close()

    def _run_staged_jobs(self, db: Database) -> None:
        staged = job_store.list_jobs(db, JobQuery(state=JobState.STAGED_IN), limit=40)
        for job in staged:
            workdir = self.site.workdir(job.workdir)
            frame = workdir / "frame.h5"
            size = frame.stat().st_size if frame.exists() else 0
            (workdir / "result.json").write_text(
                json.dumps({"job": job.id, "frame_bytes": size, "peaks": size % 97})
                + "\n"
            )
        if staged:
            job_store.set_job_states(
                db,
                [j.id for j in staged],
                JobState.POSTPROCESSED,
                source="demo compute",
            )

    def _deliver_late_frame(self, db: Database) -> None:
        if self.late_frame_retried or time.monotonic() - self._started < LATE_AFTER:
            return
        jobs = job_store.list_jobs(db, JobQuery(workdir=f"scan/{LATE_FRAME:04d}"))
        if not jobs:
            self.late_frame_retried = True
            return
        items = job_store.list_items(
            db, ItemQuery(job_ids=[jobs[0].id], direction="in")
        )
        frame = next(i for i in items if i.slot == "frame")
        if frame.state not in (ItemState.ERROR,):
            return  # not failed yet: wait until it has
        path = Path(frame.remote_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"late frame\n" * 512)
        n = job_store.retry_items(db, ItemQuery(ids=[frame.id]), source="demo operator")
        log.info(
            "demo: frame %d arrived late; the operator retried %d item(s)",
            LATE_FRAME,
            n,
        )
        self.late_frame_retried = True


def run_demo(args: argparse.Namespace) -> int:
    """Build a demo site and run it: headless to the end, or in the console."""
    root = args.site or tempfile.mkdtemp(prefix="balsam-tui-demo-")
    if args.site and Path(args.site).exists() and any(Path(args.site).iterdir()):
        from balsam_tui.site import SiteError

        raise SiteError(f"--demo builds a new site: {args.site} is not empty")
    site = build_demo_site(root)
    if not args.no_ui:
        from balsam_tui.ui import run_console

        return run_console(site, demo=True)
    return _run_demo_headless(site, args)


def _run_demo_headless(site: Site, args: argparse.Namespace) -> int:
    from balsam_tui.engine import Engine
    from balsam_tui.headless import run_headless

    engine = Engine(site)
    compute = DemoComputeSide(site)
    started = time.monotonic()

    def watch() -> None:
        while not compute.finished() or not engine.is_idle():
            time.sleep(0.25)
            if engine.snapshot.status == "stopped":
                return
        engine.stop()

    compute.start()
    threading.Thread(target=watch, name="demo-watch", daemon=True).start()
    try:
        status = run_headless(
            site,
            summary_every=min(args.summary_every, 2.0),
            verbose=args.verbose,
            engine=engine,
        )
    finally:
        compute.stop()
    _print_outcome(site, time.monotonic() - started)
    return status


def _print_outcome(site: Site, seconds: float) -> None:
    db = Database(site.store_path)
    try:
        jobs = job_store.job_counts(db)
        failed = job_store.list_items(db, ItemQuery(state=ItemState.ERROR))
    finally:
        db.close()
    print(f"\ndemo finished in {seconds:.1f} s on site {site.root}")
    print("jobs: " + ", ".join(f"{s} {n}" for s, n in sorted(jobs.items())))
    for item in failed:
        print(
            f"  item {item.id} of job {item.job_id} failed (on purpose): {item.error}"
        )
    print(f"look around: balsam-tui --site {site.root} jobs --state READY")
