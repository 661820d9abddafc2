"""Sites for the console's tests, and tests of what the console reads from them.

``build_site`` makes a real local site on disk. ``ScriptedService`` stands in for a
transfer service the test drives (tasks stay in flight until the test finishes
them), so the engine's real cycles produce a fixed, known store; ``picture_site``
uses both, with a fixed clock, to build the store every snapshot test draws.

The other UI test modules import these helpers; the tests here cover the console's
own store reads (``balsam_tui.ui.reading``) and its filter words.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from balsam_tui.backends.base import (
    FileOutcome,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
)
from balsam_tui.engine import Engine
from balsam_tui.engine.snapshot import EngineSnapshot, EngineStatus
from balsam_tui.settings import load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.states import JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import JobSpec
from balsam_tui.ui import reading
from balsam_tui.ui.job_filter import FilterError, JobFilter, parse_filter

APP = "scan.reduce"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
PICTURES = Path("/tmp/balsam-tui-ui-pictures")

SETTINGS = """\
# console test site
transfers:
  transfer_locations:
    beamline: local://localhost{root}/beamline
    archive: local://localhost{root}/archive
  max_concurrent_transfers: {concurrency}
  transfer_batch_size: {batch}
  service_period: {period}
  retry_limit: 1
  retry_backoff: 1
scheduler:
  sync_period: 60
"""


class FixedClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class BuiltSite:
    site: Site
    root: Path
    jobs: int

    def source(self, n: int) -> Path:
        return self.root / "beamline" / f"scan-{n:03d}" / "frame.h5"


def build_site(
    root: Path,
    *,
    jobs: int,
    missing: Sequence[int] = (),
    notes: Sequence[int] = (),
    concurrency: int = 3,
    batch: int = 6,
    period: float = 0.3,
    apps: int = 1,
) -> BuiltSite:
    """A local site whose jobs stage in a frame and a calibration, and out a result.

    Jobs named in ``notes`` also fill the optional ``notes`` slot; frames named in
    ``missing`` are not written, so their items fail for good.
    """
    root = root.resolve()
    site = init_site(
        root / "site",
        settings_text=SETTINGS.format(
            root=root, concurrency=concurrency, batch=batch, period=period
        ),
    )
    built = BuiltSite(site, root, jobs)
    (root / "archive").mkdir(parents=True, exist_ok=True)
    calibration = root / "beamline" / "calibration.json"
    calibration.parent.mkdir(parents=True, exist_ok=True)
    calibration.write_text('{"distance_mm": 312.5}\n')
    for n in range(jobs):
        if n not in missing:
            built.source(n).parent.mkdir(parents=True, exist_ok=True)
            built.source(n).write_bytes(bytes(range(256)) * (4 + n % 5))
        if n in notes:
            (root / "beamline" / f"notes-{n:03d}.txt").write_text(f"job {n}\n")

    slots = {
        "frame": {"direction": "in", "local_path": "frame.h5", "required": True},
        "calib": {"direction": "in", "local_path": ".", "required": True},
        "notes": {"direction": "in", "local_path": "notes.txt"},
        "result": {"direction": "out", "local_path": "result.json", "required": True},
    }
    db = Database(site.store_path)
    job_store.create_app(db, APP, slots)
    for k in range(1, apps):
        job_store.create_app(db, f"{APP}.v{k + 1}", {"frame": slots["frame"]})
    specs = []
    for n in range(jobs):
        transfers = {
            "frame": f"beamline:{built.source(n)}",
            "calib": f"beamline:{calibration}",
            "result": f"archive:{root}/archive/result-{n:03d}.json",
        }
        if n in notes:
            transfers["notes"] = f"beamline:{root}/beamline/notes-{n:03d}.txt"
        app = APP if n % apps == 0 else f"{APP}.v{n % apps + 1}"
        if app != APP:
            transfers = {"frame": transfers["frame"]}
        specs.append(JobSpec(workdir=f"scan/{n:03d}", app=app, transfers=transfers))
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return built


class ScriptedService:
    """A transfer service driven by the test: tasks stay in flight until told.

    It is the boundary the engine talks to (not one of our modules); the engine,
    the store and the settings around it are the real ones. Ids are counters, so
    two runs of a test produce the same store.
    """

    protocol = "local"
    min_poll_interval = 0.0

    def __init__(self) -> None:
        self.specs: dict[int, TaskSpec] = {}
        self.statuses: dict[int, TaskStatus] = {}
        self.cancelled: list[int] = []
        self._submissions = 0

    def new_submission_id(self) -> str:
        self._submissions += 1
        return str(uuid.UUID(int=self._submissions))

    def submit(self, spec: TaskSpec) -> str:
        self.specs[spec.task_id] = spec
        return f"svc-{spec.task_id}"

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        return {
            t.task_id: self.statuses.get(
                t.task_id,
                TaskStatus(t.task_id, RemoteState.QUEUED, status_text="Queued"),
            )
            for t in tasks
        }

    def cancel(self, task: InFlightTask) -> None:
        self.cancelled.append(task.task_id)
        self.statuses[task.task_id] = TaskStatus(task.task_id, RemoteState.CANCELLED)

    def close(self) -> None:
        pass

    def progress(self, task_id: int, done: int, *, rate: float = 0.0) -> None:
        spec = self.specs[task_id]
        self.statuses[task_id] = TaskStatus(
            task_id,
            RemoteState.ACTIVE,
            files_total=len(spec.files),
            files_done=done,
            bytes_done=done * 1024,
            bytes_total=len(spec.files) * 1024,
            bytes_per_second=rate,
            status_text=f"copying ({done} of {len(spec.files)} files)",
        )

    def finish(self, task_id: int) -> None:
        """Finish a task; a file whose source is missing fails, as it would."""
        spec = self.specs[task_id]
        outcomes = tuple(
            FileOutcome(f.item_id, ok=True, bytes=1024)
            if Path(f.source).exists()
            else FileOutcome(
                f.item_id,
                ok=False,
                error=f"source not found: {f.source}",
                permanent=True,
            )
            for f in spec.files
        )
        self.statuses[task_id] = TaskStatus(
            task_id,
            RemoteState.SUCCEEDED,
            files_total=len(outcomes),
            files_done=sum(o.ok for o in outcomes),
            files_failed=sum(not o.ok for o in outcomes),
            bytes_done=sum(o.bytes for o in outcomes),
            status_text="done",
            outcomes=outcomes,
        )


def scripted_engine(
    site: Site, service: ScriptedService, clock: FixedClock | None = None
) -> Engine:
    return Engine(
        site,
        backend_factory=lambda *args: service,
        clock=clock if clock is not None else FixedClock(),
    )


def fix_journal_times(site: Site, start: float = T0) -> None:
    """Journal times the store took from the wall clock, made fixed: T0 + id."""
    db = Database(site.store_path)
    try:
        with db.write() as conn:
            conn.execute("UPDATE journal SET ts = ? + id", (start,))
    finally:
        db.close()


@dataclass
class Picture:
    site: Site
    engine: Engine
    service: ScriptedService
    clock: FixedClock
    snapshot: EngineSnapshot


def picture_site(name: str) -> Picture:
    """The fixed store every snapshot test draws: tasks at every stage, jobs too.

    It lives at a fixed path, because the screen shows paths.
    """
    root = PICTURES / name
    shutil.rmtree(root, ignore_errors=True)
    built = build_site(root, jobs=10, missing=(4,), notes=(3, 7))
    clock = FixedClock()
    service = ScriptedService()
    engine = scripted_engine(built.site, service, clock)

    engine.run_cycle()  # 22 stage-in items: three tasks of six, four left pending
    service.finish(1)
    service.finish(2)  # job 5's frame is missing
    service.progress(3, 3, rate=2_500_000.0)
    clock.advance(12)
    engine.run_cycle()  # tasks 1 and 2 settle; task 4 takes the last four items
    service.progress(4, 1, rate=800_000.0)
    clock.advance(20)
    engine.run_cycle()

    db = Database(built.site.store_path)
    staged = job_store.list_jobs(db, job_store.JobQuery(state=JobState.STAGED_IN))
    job_store.set_job_states(db, [staged[0].id], JobState.POSTPROCESSED)
    db.close()
    clock.advance(5)
    engine.run_cycle()  # the postprocessed job's result goes out in task 5
    fix_journal_times(built.site)
    return Picture(built.site, engine, service, clock, _fixed(engine.snapshot, built))


def _fixed(snapshot: EngineSnapshot, built: BuiltSite) -> EngineSnapshot:
    """The engine's last snapshot, with the journal times fixed as in the store."""
    db = Database(built.site.store_path)
    try:
        events = job_store.recent_journal(db, len(snapshot.events))
    finally:
        db.close()
    return replace(snapshot, events=tuple(events))


# -- what the console reads -----------------------------------------------------------


def test_job_pages_are_keyset_pages_in_either_order(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=25)
    db = Database(built.site.store_path)
    everything = JobFilter()

    first = reading.jobs_from(db, everything, None, 10)
    after = reading.jobs_from(db, everything, first[-1].id + 1, 10)
    before = reading.jobs_before(db, everything, after[0].id, 4)
    last = reading.jobs_before(db, everything, None, 3, descending=True)
    newest = reading.jobs_from(db, everything, None, 3, descending=True)

    assert [r.id for r in first] == list(range(1, 11))
    assert [r.id for r in after] == list(range(11, 21))
    assert [r.id for r in before] == [7, 8, 9, 10]
    assert [r.id for r in last] == [3, 2, 1]
    assert [r.id for r in newest] == [25, 24, 23]
    assert reading.count_before(db, everything, 11) == 10
    assert reading.count_before(db, everything, 23, descending=True) == 2


def test_a_job_row_shows_every_slot_of_its_app_filled_or_not(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=3, notes=(1,))
    db = Database(built.site.store_path)

    rows = reading.jobs_from(db, JobFilter(), None, 10)

    assert dict(rows[0].fills) == {
        "calib": "pending",
        "frame": "pending",
        "notes": "unfilled",
        "result": "awaiting_job",
    }
    assert rows[1].fill("notes") == "pending"
    assert rows[0].fill("no-such-slot") is None
    assert reading.slot_columns(rows) == ("calib", "frame", "notes", "result")


def test_filters_narrow_in_the_store_and_count_there(tmp_path: Path) -> None:
    built = build_site(tmp_path, jobs=12, apps=2)
    db = Database(built.site.store_path)
    counts = job_store.job_counts(db)

    second_app = parse_filter(f"app:{APP}.v2")
    text = parse_filter("scan/00")
    ready = parse_filter("ready")

    assert [r.id for r in reading.jobs_from(db, second_app, None, 50)] == list(
        range(2, 13, 2)
    )
    assert reading.count_matching(db, second_app, counts) == 6
    assert reading.count_matching(db, text, counts) == 10
    assert reading.count_matching(db, ready, counts) == 12
    assert reading.count_matching(db, parse_filter("errors"), counts) == 0


def test_filter_words_mean_what_the_help_says() -> None:
    flt = parse_filter("ready state:staged_in alias:beamline app:x item:error scan 7")

    assert flt.states == ("READY", "STAGED_IN")
    assert (flt.alias, flt.app, flt.item_state) == ("beamline", "x", "error")
    assert flt.text == "scan 7"
    assert parse_filter(flt.describe()) == flt
    assert parse_filter("").is_empty
    with pytest.raises(FilterError, match="'NOPE' is not a job state"):
        parse_filter("state:nope")
    with pytest.raises(FilterError, match="not a transfer item state"):
        parse_filter("item:lost")


def test_the_picture_site_has_tasks_at_every_stage() -> None:
    picture = picture_site("reading")
    db = Database(picture.site.store_path)

    snapshot = reading.store_snapshot(
        db, site="site", status=EngineStatus.RUNNING, now=picture.clock()
    )
    story = reading.job_story(db, 5)
    detail = reading.task_detail(db, 1)

    assert [(t.id, t.direction, t.state) for t in snapshot.tasks] == [
        (5, "out", "active"),
        (4, "in", "active"),
        (3, "in", "active"),
        (2, "in", "succeeded"),
        (1, "in", "succeeded"),
    ]
    assert story.retryable and "source not found" in story.last_error
    assert detail is not None and len(detail.items) == 6
    frame = next(s.item for s in story.slots if s.slot.name == "frame")
    assert reading.failed_items_of_task(db, 2) == [frame.id]
