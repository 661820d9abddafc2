"""The engine's decisions, driven cycle by cycle through a scripted backend.

The scripted backend stands in for a transfer service (it is the boundary the engine
talks to, not one of our modules): it records what it is asked, fails when told to,
and finishes tasks when the test says so. The store, the settings and the engine are
the real ones.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from balsam_tui.backends.base import (
    CredentialsRequired,
    FileOutcome,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
    TransientBackendError,
)
from balsam_tui.engine import Engine
from balsam_tui.engine.lock import EngineAlreadyRunning, SiteLock
from balsam_tui.settings import load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.states import ItemState, JobState, TaskState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery, JobSpec
from tests.engine_site import wait_until


class ScriptedBackend:
    protocol = "local"
    min_poll_interval = 0.0

    def __init__(self) -> None:
        self.submissions: list[TaskSpec] = []
        self.fail_submits: list[Exception] = []
        self.fail_polls: list[Exception] = []
        self.statuses: dict[int, TaskStatus] = {}
        self.cancelled: list[int] = []
        self.known: dict[str, str] = {}
        self.polls = 0

    def new_submission_id(self) -> str:
        return str(uuid.uuid4())

    def submit(self, spec: TaskSpec) -> str:
        self.submissions.append(spec)
        if self.fail_submits:
            raise self.fail_submits.pop(0)
        return self.known.setdefault(spec.submission_id, f"remote-{spec.task_id}")

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        self.polls += 1
        if self.fail_polls:
            raise self.fail_polls.pop(0)
        return {
            t.task_id: self.statuses.get(
                t.task_id, TaskStatus(t.task_id, RemoteState.ACTIVE, status_text="busy")
            )
            for t in tasks
        }

    def cancel(self, task: InFlightTask) -> None:
        self.cancelled.append(task.task_id)
        self.statuses[task.task_id] = TaskStatus(task.task_id, RemoteState.CANCELLED)

    def close(self) -> None:
        pass

    def finish(
        self, spec: TaskSpec, failed: dict[int, tuple[str, bool]] | None = None
    ) -> None:
        failed = failed or {}
        outcomes = tuple(
            FileOutcome(
                f.item_id,
                ok=f.item_id not in failed,
                error=failed.get(f.item_id, ("", False))[0] or None,
                permanent=failed.get(f.item_id, ("", False))[1],
            )
            for f in spec.files
        )
        self.statuses[spec.task_id] = TaskStatus(
            spec.task_id, RemoteState.SUCCEEDED, outcomes=outcomes
        )


SETTINGS = """\
transfers:
  transfer_locations:
    big: local://localhost{root}/big
    small: local://localhost{root}/small
  max_concurrent_transfers: {slots}
  transfer_batch_size: 10
  service_period: 3600
  retry_backoff: 30
  retry_limit: 2
"""


def make_site(tmp_path: Path, *, slots: int = 2, big: int = 50, small: int = 3) -> Site:
    site = init_site(
        tmp_path / "site", settings_text=SETTINGS.format(root=tmp_path, slots=slots)
    )
    db = Database(site.store_path)
    job_store.create_app(db, "a", {"f": {"direction": "in", "local_path": "f.dat"}})
    specs = [
        JobSpec(workdir=f"big/{n}", app="a", transfers={"f": f"big:{tmp_path}/big/{n}"})
        for n in range(big)
    ] + [
        JobSpec(
            workdir=f"small/{n}",
            app="a",
            transfers={"f": f"small:{tmp_path}/small/{n}"},
        )
        for n in range(small)
    ]
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return site


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


def engine_for(site: Site, backend: ScriptedBackend, clock=time.time) -> Engine:
    return Engine(site, backend_factory=lambda *args: backend, clock=clock)


def items(site: Site, **query) -> list:
    db = Database(site.store_path)
    try:
        return job_store.list_items(db, ItemQuery(**query))
    finally:
        db.close()


def test_a_small_group_gets_a_slot_beside_a_large_one(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=2)
    engine = engine_for(site, scripted)
    engine.run_cycle()
    assert sorted(s.location.alias for s in scripted.submissions) == ["big", "small"]
    engine.close()


def test_the_submission_id_is_stored_before_the_call_and_reused_after_a_failure(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, small=0)
    scripted.fail_submits.append(TransientBackendError("connection reset"))
    now = [1000.0]
    engine = engine_for(site, scripted, clock=lambda: now[0])
    engine.run_cycle()
    first = scripted.submissions[-1]
    db = Database(site.store_path)
    (task,) = task_store.in_flight_tasks(db)
    assert task.state == TaskState.SUBMITTING
    assert task.submission_id == first.submission_id
    assert "connection reset" in task.error

    engine.run_cycle()  # too early: the backoff holds it
    assert len(scripted.submissions) == 1
    now[0] += 60
    engine.run_cycle()
    assert scripted.submissions[-1].submission_id == first.submission_id
    assert [t.state for t in task_store.in_flight_tasks(db)] == [TaskState.ACTIVE]
    db.close()
    engine.close()


def test_a_task_left_submitting_by_a_crash_is_submitted_again_with_its_id(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, small=0)
    db = Database(site.store_path)
    pending = task_store.pending_items(db, "in", "big", 10, time.time())
    task, _ = task_store.claim_batch(
        db,
        protocol="local",
        alias="big",
        direction="in",
        items=pending,
        submission_id="crashed-before-the-call",
        label_prefix="t",
        now=time.time(),
    )
    db.close()

    engine = engine_for(site, scripted)
    engine.run_cycle()
    assert [s.submission_id for s in scripted.submissions] == [
        "crashed-before-the-call"
    ]
    assert [f.item_id for f in scripted.submissions[0].files] == [i.id for i in pending]
    engine.close()


def test_transient_failures_retry_after_a_backoff_and_permanent_ones_wait(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=3, small=0)
    now = [1000.0]
    engine = engine_for(site, scripted, clock=lambda: now[0])
    engine.run_cycle()
    (spec,) = scripted.submissions
    first, second, third = (f.item_id for f in spec.files)
    scripted.finish(spec, {first: ("disk full", False), second: ("not found", True)})
    engine.run_cycle()

    states = {i.id: (i.state, i.retry_at) for i in items(site)}
    assert states[first] == (ItemState.PENDING, 1030.0)
    assert states[second][0] == ItemState.ERROR
    assert states[third][0] == ItemState.DONE
    engine.run_cycle()
    assert len(scripted.submissions) == 1  # the backoff holds the retry
    now[0] += 31
    engine.run_cycle()
    assert [f.item_id for f in scripted.submissions[-1].files] == [first]
    (retried,) = items(site, ids=[first])
    assert retried.transfer_info["attempts"] == 1
    assert retried.transfer_info["history"][0]["error"] == "disk full"
    engine.close()


def test_pause_holds_new_submissions_but_still_settles_tasks_in_flight(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=20, small=0)
    engine = engine_for(site, scripted)
    engine.run_cycle()
    engine.pause()
    scripted.finish(scripted.submissions[0])
    engine.run_cycle()
    assert len(scripted.submissions) == 1
    assert len(items(site, state="done")) == 10
    assert engine.snapshot.status == "paused"
    engine.resume()
    engine.run_cycle()
    assert len(scripted.submissions) == 2
    kinds = [e.kind for e in engine.snapshot.events]
    assert "command.pause" in kinds and "command.resume" in kinds
    engine.close()


def test_an_operator_cancel_stops_the_task_and_leaves_retryable_errors(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=5, small=0)
    engine = engine_for(site, scripted)
    engine.run_cycle()
    (spec,) = scripted.submissions
    engine.pause()
    engine.cancel_task(spec.task_id)
    engine.run_cycle()
    assert scripted.cancelled == [spec.task_id]
    engine.run_cycle()
    cancelled = items(site, state="error")
    assert len(cancelled) == 5
    assert {i.error for i in cancelled} == {"cancelled by the operator"}
    engine.retry_all_errors()
    engine.run_cycle()
    assert len(items(site, state="error")) == 0
    engine.close()


def test_a_stuck_task_is_cancelled_its_bad_item_failed_and_the_rest_sent_again(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=4, small=0)
    engine = engine_for(site, scripted)
    engine.pause()
    engine.run_cycle()
    engine.resume()
    engine.run_cycle()
    (spec,) = scripted.submissions
    bad, good, *rest = (f.item_id for f in spec.files)
    scripted.statuses[spec.task_id] = TaskStatus(
        spec.task_id,
        RemoteState.ACTIVE,
        stuck=True,
        status_text="FILE_NOT_FOUND",
        outcomes=(FileOutcome(bad, ok=False, error="not found", permanent=True),),
    )
    engine.pause()
    engine.run_cycle()
    assert scripted.cancelled == [spec.task_id]
    scripted.statuses[spec.task_id] = TaskStatus(
        spec.task_id, RemoteState.CANCELLED, outcomes=(FileOutcome(good, ok=True),)
    )
    engine.run_cycle()
    states = {i.id: i.state for i in items(site)}
    assert states[bad] == ItemState.ERROR
    assert states[good] == ItemState.DONE
    assert {states[i] for i in rest} == {ItemState.PENDING}
    engine.resume()
    engine.run_cycle()
    assert sorted(f.item_id for f in scripted.submissions[-1].files) == sorted(rest)
    engine.close()


def test_missing_credentials_hold_items_inactive_until_a_login(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=2, small=0)
    scripted.fail_submits.append(
        CredentialsRequired("consent needed for endpoint X: run login", endpoints=["X"])
    )
    engine = engine_for(site, scripted)
    engine.run_cycle()
    assert {i.state for i in items(site)} == {ItemState.INACTIVE}
    assert any("consent needed" in p for p in engine.snapshot.problems)
    engine.run_cycle()
    assert len(scripted.submissions) == 1  # held: no new attempt without a login
    engine.credentials_changed()
    engine.run_cycle()
    assert len(scripted.submissions) == 2
    assert {i.state for i in items(site)} == {ItemState.ACTIVE}
    assert engine.snapshot.problems == ()
    engine.close()


def test_the_engine_wakes_for_work_added_by_another_process(tmp_path: Path) -> None:
    # A service period of an hour: only a wake-up can move this job in time.
    site = make_site(tmp_path, slots=1, big=0, small=0)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "late.dat").write_text("late\n")
    engine = Engine(site)
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: engine.snapshot.cycle >= 1, 30, "the first cycle")
        db = Database(site.store_path)
        job_store.create_jobs(
            db,
            [
                JobSpec(
                    workdir="late",
                    app="a",
                    transfers={"f": f"big:{tmp_path}/big/late.dat"},
                )
            ],
            load_settings(site.settings_path).locations,
        )
        wait_until(
            lambda: job_store.job_counts(db).get(JobState.STAGED_IN) == 1,
            30,
            "the new job to be staged in",
        )
        db.close()
    finally:
        engine.stop()
        runner.join(timeout=10)
    assert (site.data_dir / "late" / "f.dat").read_text() == "late\n"


def test_a_settings_reload_with_errors_keeps_the_old_settings(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path)
    engine = engine_for(site, scripted)
    good = site.settings_path.read_text()
    site.settings_path.write_text(
        good.replace("transfer_batch_size: 10", "transfer_batch_size: -1")
    )
    engine.reload_settings()
    engine.run_cycle()
    assert engine.settings.transfers.transfer_batch_size == 10
    (problem,) = engine.snapshot.problems
    assert "settings.yml:6" in problem and "transfer_batch_size" in problem
    site.settings_path.write_text(
        good.replace("transfer_batch_size: 10", "transfer_batch_size: 3")
    )
    engine.reload_settings()
    engine.run_cycle()
    assert engine.settings.transfers.transfer_batch_size == 3
    assert engine.snapshot.problems == ()
    engine.close()


def test_transfers_off_in_settings_moves_nothing_and_says_so(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path)
    engine = engine_for(site, scripted)
    site.settings_path.write_text("transfers: null\n")
    engine.reload_settings()
    engine.run_cycle()
    assert scripted.submissions == []
    assert engine.snapshot.status == "transfers off"
    assert "transfers are off" in engine.snapshot.problems[0]
    engine.close()


def test_a_second_engine_on_the_same_site_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    first = SiteLock(site.root)
    first.acquire()
    try:
        with pytest.raises(EngineAlreadyRunning, match="already running"):
            Engine(site).run()
    finally:
        first.release()


def test_a_symlink_leading_out_of_its_location_fails_that_item_alone(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, big=0, small=0)
    (tmp_path / "big").mkdir()
    (tmp_path / "secret.txt").write_text("secret\n")
    (tmp_path / "big" / "sneaky").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "big" / "fine").write_text("fine\n")
    db = Database(site.store_path)
    job_store.create_jobs(
        db,
        [
            JobSpec(
                workdir="s", app="a", transfers={"f": f"big:{tmp_path}/big/sneaky"}
            ),
            JobSpec(workdir="g", app="a", transfers={"f": f"big:{tmp_path}/big/fine"}),
        ],
        load_settings(site.settings_path).locations,
    )
    engine = Engine(site)
    runner = threading.Thread(target=engine.run, kwargs={"exit_when_idle": True})
    runner.start()
    runner.join(timeout=60)
    by_workdir = {j.workdir: j for j in job_store.list_jobs(db)}
    db.close()
    assert by_workdir["g"].state == JobState.STAGED_IN
    assert by_workdir["s"].state == JobState.READY
    assert "outside its root" in by_workdir["s"].state_reason
    assert not (site.data_dir / "s" / "f.dat").exists()


def test_a_backoff_that_has_passed_does_not_turn_the_wait_into_a_busy_loop(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    site = make_site(tmp_path, slots=1, big=30, small=0)
    scripted.fail_polls.append(TransientBackendError("busy", retry_after=0.05))
    engine = engine_for(site, scripted)
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    try:
        # The first poll fails and backs off for 50 ms; the next one succeeds, and
        # the task then stays in flight (the scripted service never ends it) with
        # every slot taken: nothing to do for an hour-long service period.
        wait_until(lambda: len(scripted.submissions) == 1, 30, "the submission")
        engine.wake()
        wait_until(lambda: scripted.polls >= 2, 30, "a poll after the backoff")
        settled_at = engine.snapshot.cycle
        time.sleep(1.0)
        quiet_cycles = engine.snapshot.cycle - settled_at
    finally:
        engine.stop()
        runner.join(timeout=10)
    # A second of quiet is a handful of cycles at most, not thousands.
    assert quiet_cycles < 10


def test_changed_settings_rebuild_a_backend_only_once_its_tasks_are_settled(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, slots=1, big=20, small=0)
    built: list[ScriptedBackend] = []

    def factory(*args: object) -> ScriptedBackend:
        built.append(ScriptedBackend())
        return built[-1]

    engine = Engine(site, backend_factory=factory)
    engine.run_cycle()
    site.settings_path.write_text(
        site.settings_path.read_text().replace("retry_limit: 2", "retry_limit: 5")
    )
    engine.reload_settings()
    engine.run_cycle()
    engine.run_cycle()
    assert len(built) == 1  # its task is still in flight: keep it
    built[0].finish(built[0].submissions[0])
    engine.run_cycle()  # settles the task, then plans with a fresh backend
    assert len(built) == 2
    assert engine.settings.transfers.retry_limit == 5
    assert len(built[1].submissions) == 1
    engine.close()
