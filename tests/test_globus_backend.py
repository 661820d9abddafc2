"""The Globus backend end to end: the real engine, the real globus-sdk, the stand-in.

Every test runs a real site (SQLite store, files on disk) against the stand-in
Globus service on loopback, which really copies files between the directories that
stand for the two collections. Nothing in the SDK or the project is patched; faults
are injected at the stand-in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from balsam_tui.backends.base import (
    FileCopy,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
)
from balsam_tui.backends.globus import (
    REFUSED_PREFIX,
    GlobusBackend,
    GlobusCopy,
    PathIndex,
    SitePaths,
    data_access_collections,
    retry_after_seconds,
    status_text,
)
from balsam_tui.backends.registry import BackendUnavailable
from balsam_tui.globus.auth import EXPIRED_MESSAGE
from balsam_tui.settings import load_settings
from balsam_tui.states import ItemState, JobState, TaskState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.testing.globus_standin import GlobusStandin
from balsam_tui.testing.standin_auth import DEFAULT_USER, Identity, client_identity
from tests.engine_site import ComputeSide, result_text, settled, wait_until
from tests.globus_site import (
    REMOTE_COLLECTION,
    SERVICE_CLIENT,
    SERVICE_ENV,
    GlobusSite,
    count_items,
    globus_task_ids,
    log_in,
    make_globus_site,
    running_engine,
    standin_for,
)

BUSY = ("pending", "active", "inactive")
SERVICE_OWNER = client_identity(SERVICE_CLIENT)


@pytest.fixture
def start_standin(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., GlobusStandin]]:
    """Start a stand-in for a site and point globus-sdk (and the engine) at it."""
    started: list[GlobusStandin] = []

    def start(
        gs: GlobusSite, *, service_account: bool = True, **options: object
    ) -> GlobusStandin:
        standin = standin_for(gs, **options)
        started.append(standin)
        for name, value in standin.environ.items():
            monkeypatch.setenv(name, value)
        for name, value in SERVICE_ENV.items():
            if service_account:
                monkeypatch.setenv(name, value)
            else:
                monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("BALSAM_TUI_GLOBUS_CLIENT_ID", raising=False)
        return standin

    yield start
    for standin in started:
        standin.stop()


def _tasks_at_globus(standin: GlobusStandin, owner: Identity) -> list[dict]:
    listing = standin.transfer.task_list(owner, filter_text=None, limit=1000, offset=0)
    return list(listing["DATA"])  # type: ignore[arg-type]


def _copied_sources(standin: GlobusStandin, task: dict) -> list[str]:
    """The source paths a finished task copied, in the order it copied them."""
    listing = standin.transfer.successful_transfers(
        SERVICE_OWNER, task["task_id"], marker=None
    )
    return [entry["source_path"] for entry in listing["DATA"]]  # type: ignore[index]


def _journal(gs: GlobusSite) -> list[job_store.JournalEntry]:
    db = Database(gs.site.store_path)
    try:
        return job_store.recent_journal(db, 100_000)
    finally:
        db.close()


# -- the engine end to end -------------------------------------------------------------


def test_500_jobs_stage_in_and_out_and_only_missing_sources_fail(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    missing = frozenset({7, 123, 377})
    gs = make_globus_site(tmp_path, jobs=500, missing=missing)
    standin = start_standin(gs)

    with ComputeSide(gs.site), running_engine(gs.site):
        wait_until(settled(gs.site, 500 - len(missing)), 60, "all jobs to settle")

    db = Database(gs.site.store_path)
    try:
        jobs = {job.workdir: job for job in job_store.list_jobs(db)}
        failed = job_store.list_items(db, job_store.ItemQuery(state=ItemState.ERROR))
    finally:
        db.close()
    for n in range(500):
        job = jobs[f"jobs/{n:05d}"]
        if n in missing:
            assert job.state == JobState.READY
            assert "FILE_NOT_FOUND" in job.state_reason
            continue
        assert job.state == JobState.JOB_FINISHED, (n, job.state_reason)
        frame = gs.workdir(n) / "frame.dat"
        assert frame.read_bytes() == gs.source_file(n).read_bytes()
        assert gs.archived_file(n).read_text() == result_text(gs.workdir(n))
    assert sorted(item.slot for item in failed) == ["frame"] * len(missing)
    assert all(item.permanent for item in failed)

    counters = standin.counters()
    recorded = globus_task_ids(gs.site)
    assert counters.tasks_created == len(recorded) == len(set(recorded))
    assert counters.duplicate_submissions == 0
    assert "get_task" not in counters.requests  # polled by task_list only
    moved = sum(
        t["files_transferred"] for t in _tasks_at_globus(standin, SERVICE_OWNER)
    )
    assert moved == 2 * (500 - len(missing))  # every file exactly once


def test_a_stuck_task_is_split_the_good_files_arrive_and_the_bad_item_fails(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(
        tmp_path, jobs=30, missing={11}, stage_out=False, skip_source_errors=False
    )
    standin = start_standin(gs, retry_interval=0.05)

    with running_engine(gs.site):
        wait_until(
            lambda: count_items(gs.site, state=BUSY) == 0, 30, "the items to settle"
        )

    assert count_items(gs.site, state=ItemState.DONE) == 29
    db = Database(gs.site.store_path)
    try:
        (bad,) = job_store.list_items(db, job_store.ItemQuery(state=ItemState.ERROR))
        bad_job = job_store.get_job(db, bad.job_id)
    finally:
        db.close()
    assert bad_job.workdir == "jobs/00011"
    assert bad.permanent and "FILE_NOT_FOUND" in bad.error
    for n in range(30):
        if n != 11:
            assert (gs.workdir(n) / "frame.dat").read_bytes() == (
                gs.source_file(n).read_bytes()
            )

    at_globus = {t["status"]: t for t in _tasks_at_globus(standin, SERVICE_OWNER)}
    assert sorted(at_globus) == ["FAILED", "SUCCEEDED"]  # stuck, then the rest
    assert at_globus["FAILED"]["fatal_error"]["code"] == "CANCELED"
    assert any(entry.kind == "task.stuck" for entry in _journal(gs))


def test_files_that_arrived_before_a_stuck_task_was_cancelled_are_not_sent_again(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    jobs, missing = 20, 8
    gs = make_globus_site(
        tmp_path,
        jobs=jobs,
        missing={missing},
        stage_out=False,
        skip_source_errors=False,
    )
    # The stand-in copies a task's files in order, one per delay: the frames before
    # the missing one arrive, then the task retries the missing one for good.
    standin = start_standin(gs, per_file_delay=0.02, retry_interval=0.05)

    with running_engine(gs.site):
        wait_until(
            lambda: count_items(gs.site, state=BUSY) == 0, 30, "the items to settle"
        )

    stuck, rest = sorted(
        _tasks_at_globus(standin, SERVICE_OWNER), key=lambda t: t["status"]
    )
    assert (stuck["status"], stuck["fatal_error"]["code"]) == ("FAILED", "CANCELED")
    assert rest["status"] == "SUCCEEDED"
    before, after = range(missing), range(missing + 1, jobs)
    assert _copied_sources(standin, stuck) == [gs.source(n) for n in before]
    # The second task held only what had not arrived: nothing was copied twice.
    assert rest["files"] == rest["subtasks_total"] == len(after)
    assert _copied_sources(standin, rest) == [gs.source(n) for n in after]
    assert standin.counters().requests["task_successful_transfers"] >= 1

    assert count_items(gs.site, state=ItemState.DONE) == jobs - 1
    db = Database(gs.site.store_path)
    try:
        (bad,) = job_store.list_items(db, job_store.ItemQuery(state=ItemState.ERROR))
        bad_job = job_store.get_job(db, bad.job_id)
    finally:
        db.close()
    assert bad_job.workdir == f"jobs/{missing:05d}"
    assert bad.permanent and "FILE_NOT_FOUND" in bad.error
    assert not (gs.workdir(missing) / "frame.dat").exists()
    for n in [*before, *after]:
        assert (gs.workdir(n) / "frame.dat").read_bytes() == (
            gs.source_file(n).read_bytes()
        )


def test_every_file_arrives_once_through_5xx_429_and_dropped_connections(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=60, stage_out=False, batch=10, concurrency=3)
    standin = start_standin(gs)
    faults = standin.faults
    faults.fail_next(2, status=503, route="get_submission_id")
    faults.rate_limit_next(2, retry_after=1, route="submit_transfer")
    faults.drop_next(2, route="submit_transfer", after_apply=True)
    faults.fail_next(1, status=500, route="submit_transfer")
    faults.fail_next(3, status=502, route="task_list")
    faults.rate_limit_next(1, retry_after=1, route="task_list")
    faults.drop_next(1, route="task_list")

    with running_engine(gs.site):
        wait_until(
            lambda: count_items(gs.site, state=ItemState.DONE) == 60,
            45,
            "all 60 frames",
        )

    counters = standin.counters()
    recorded = globus_task_ids(gs.site)
    assert len(recorded) == len(set(recorded)) == 6
    assert counters.tasks_created == counters.submissions_applied == 6
    assert counters.duplicate_submissions >= 1  # a lost answer, resubmitted
    moved = sum(
        t["files_transferred"] for t in _tasks_at_globus(standin, SERVICE_OWNER)
    )
    assert moved == 60
    for n in range(60):
        assert (gs.workdir(n) / "frame.dat").read_bytes() == (
            gs.source_file(n).read_bytes()
        )

    # A 429 held its task's next submission for at least its Retry-After.
    journal = _journal(gs)
    rate_limited = [
        e for e in journal if e.kind == "task.submit_failed" and "429" in e.message
    ]
    assert rate_limited
    for failure in rate_limited:
        later = [
            e
            for e in journal
            if e.task_id == failure.task_id
            and e.id > failure.id
            and e.kind in ("task.submitted", "task.submit_failed")
        ]
        assert later and later[0].ts - failure.ts >= 0.95


def _headless(gs: GlobusSite, name: str, *extra: str) -> subprocess.Popen:
    with open(gs.site.log_dir / name, "w") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "balsam_tui",
                "--site",
                str(gs.site.root),
                "--no-ui",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=gs.root,
            env=dict(os.environ),
        )


def test_a_kill_between_submit_and_its_answer_leaves_one_task_at_globus(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=40, stage_out=False)
    standin = start_standin(gs)
    standin.faults.delay_next(route="submit_transfer", seconds=30, after_apply=True)

    first = _headless(gs, "first.err")
    try:
        wait_until(
            lambda: standin.counters().submissions_applied == 1,
            30,
            "the first submission to take effect at Globus",
        )
    finally:
        first.kill()
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    db = Database(gs.site.store_path)
    try:
        (interrupted,) = task_store.in_flight_tasks(db)
    finally:
        db.close()
    assert interrupted.state == TaskState.SUBMITTING
    assert interrupted.backend_task_id is None

    second = _headless(gs, "second.err", "--exit-when-idle")
    returncode = second.wait(timeout=60)
    stderr = (gs.site.log_dir / "second.err").read_text()
    assert returncode == 0, stderr[-2000:]

    assert count_items(gs.site, state=ItemState.DONE) == 40
    counters = standin.counters()
    assert counters.tasks_created == counters.submissions_applied == 1
    assert counters.duplicate_submissions == 1
    (at_globus,) = _tasks_at_globus(standin, SERVICE_OWNER)
    assert globus_task_ids(gs.site) == [at_globus["task_id"]]


def test_a_consent_error_holds_the_items_and_names_the_collection_until_login(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=20, stage_out=False)
    standin = start_standin(gs, service_account=False)
    log_in(gs.site)
    standin.faults.require_consent(REMOTE_COLLECTION)

    with running_engine(gs.site) as engine:

        def consent_problem() -> str:
            found = [p for p in engine.snapshot.problems if "consent" in p]
            return found[0] if found else ""

        wait_until(
            lambda: (
                consent_problem()
                and count_items(gs.site, state=ItemState.INACTIVE) == 20
            ),
            20,
            "the items to wait for consent",
        )
        assert REMOTE_COLLECTION in consent_problem()
        assert f"balsam-tui login --endpoint {REMOTE_COLLECTION}" in consent_problem()
        assert count_items(gs.site, state=ItemState.DONE) == 0

        log_in(gs.site, endpoints=[REMOTE_COLLECTION])
        engine.credentials_changed()
        wait_until(
            lambda: count_items(gs.site, state=ItemState.DONE) == 20,
            20,
            "the frames after the new login",
        )
        wait_until(lambda: not engine.snapshot.problems, 5, "the problem to clear")

    assert standin.counters().tasks_created == 1
    assert standin.counters().submissions_applied == 1


def test_an_expired_login_says_so_and_work_resumes_after_a_new_login(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=20, stage_out=False)
    standin = start_standin(gs, service_account=False, per_file_delay=0.1)
    log_in(gs.site)

    with running_engine(gs.site) as engine:
        wait_until(lambda: globus_task_ids(gs.site), 20, "a task at Globus")
        standin.faults.revoke_all_tokens()
        wait_until(
            lambda: any(EXPIRED_MESSAGE in p for p in engine.snapshot.problems),
            20,
            "the expired-login message",
        )
        assert count_items(gs.site, state=ItemState.DONE) == 0

        log_in(gs.site)
        engine.credentials_changed()
        wait_until(
            lambda: count_items(gs.site, state=ItemState.DONE) == 20,
            20,
            "the frames after the new login",
        )
    owner = DEFAULT_USER
    assert [t["status"] for t in _tasks_at_globus(standin, owner)] == ["SUCCEEDED"]


# -- the backend on its own ------------------------------------------------------------


def _backend(gs: GlobusSite) -> GlobusBackend:
    settings = load_settings(gs.site.settings_path).transfers
    assert settings is not None
    return GlobusBackend(settings=settings, site=gs.site)


def _stage_in_spec(
    gs: GlobusSite, backend: GlobusBackend, task_id: int, jobs: range
) -> TaskSpec:
    location = load_settings(gs.site.settings_path).locations["remote"]
    files = tuple(
        FileCopy(
            item_id=n,
            source=gs.source(n),
            destination=str(gs.workdir(n) / "frame.dat"),
            source_root=location.root,
            destination_root=str(gs.workdir(n)),
        )
        for n in jobs
    )
    return TaskSpec(
        task_id=task_id,
        submission_id=backend.new_submission_id(),
        label=f"balsam-tui test task {task_id}",
        direction="in",
        location=location,
        files=files,
    )


def _asked(spec: TaskSpec, backend_task_id: str) -> InFlightTask:
    return InFlightTask(spec.task_id, backend_task_id, spec.submission_id, lambda: spec)


def _poll_until_finished(
    backend: GlobusBackend, asked: InFlightTask, timeout: float = 10
) -> TaskStatus:
    found: dict[str, TaskStatus] = {}

    def finished() -> bool:
        status = backend.poll([asked]).get(asked.task_id)
        if status is not None and status.state not in (
            RemoteState.ACTIVE,
            RemoteState.QUEUED,
        ):
            found["status"] = status
            return True
        return False

    wait_until(finished, timeout, f"task {asked.task_id} to finish")
    return found["status"]


def test_sixty_tasks_are_polled_in_one_request_and_the_queued_ones_say_so(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=60, stage_out=False)
    standin = start_standin(gs, per_file_delay=60)
    backend = _backend(gs)
    try:
        asked = []
        for n in range(60):
            spec = _stage_in_spec(gs, backend, n + 1, range(n, n + 1))
            asked.append(_asked(spec, backend.submit(spec)))
        unknown = InFlightTask(61, str(uuid.uuid4()), "never submitted")
        before = standin.counters().requests.get("task_list", 0)

        report = backend.poll([*asked, unknown])

        assert standin.counters().requests["task_list"] == before + 1
    finally:
        backend.close()
    states = [report[a.task_id].state for a in asked]
    assert states.count(RemoteState.ACTIVE) == 3  # the stand-in's per-user limit
    assert states.count(RemoteState.QUEUED) == 57
    assert "queued" in report[asked[-1].task_id].status_text
    assert report[61].state == RemoteState.LOST


def test_a_symlink_out_of_the_workdir_fails_its_item_alone(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=3, stage_out=False)
    start_standin(gs)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for n in range(3):
        gs.workdir(n).mkdir(parents=True)
    (gs.workdir(1) / "frame.dat").symlink_to(outside / "frame.dat")
    backend = _backend(gs)
    try:
        spec = _stage_in_spec(gs, backend, 1, range(3))
        status = _poll_until_finished(backend, _asked(spec, backend.submit(spec)))

        only_bad = _stage_in_spec(gs, backend, 2, range(1, 2))
        refused_id = backend.submit(only_bad)
        refused = backend.poll([_asked(only_bad, refused_id)])[2]
    finally:
        backend.close()

    assert status.state == RemoteState.SUCCEEDED
    (failure,) = status.outcomes
    assert failure.item_id == 1 and not failure.ok and failure.permanent
    assert "outside its root" in (failure.error or "")
    assert not (outside / "frame.dat").exists()
    for n in (0, 2):
        assert (gs.workdir(n) / "frame.dat").read_bytes() == (
            gs.source_file(n).read_bytes()
        )
    assert refused_id.startswith(REFUSED_PREFIX)
    assert refused.state == RemoteState.SUCCEEDED
    assert [o.item_id for o in refused.outcomes if not o.ok] == [1]


def test_a_task_stuck_on_a_file_no_event_names_goes_again_with_skipping_on(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(
        tmp_path, jobs=2, missing={0}, stage_out=False, skip_source_errors=False
    )
    standin = start_standin(gs, retry_interval=0.05)
    backend = _backend(gs)
    try:
        spec = _stage_in_spec(gs, backend, 1, range(2))
        # Globus names files in a form this site did not send (as a real endpoint
        # may): the error events then match no item.
        unrecognisable = replace(
            spec,
            files=tuple(
                replace(f, source=f.source.replace("/in/", "/elsewhere/"))
                for f in spec.files
            ),
        )
        stuck_task = InFlightTask(
            1, backend.submit(spec), spec.submission_id, lambda: unrecognisable
        )
        found: dict[str, TaskStatus] = {}

        def reported_stuck() -> bool:
            found["status"] = backend.poll([stuck_task])[1]
            return found["status"].stuck

        wait_until(reported_stuck, 10, "the task to be reported stuck")
        assert found["status"].outcomes == ()  # nobody to blame yet
        backend.cancel(stuck_task)
        cancelled = _poll_until_finished(backend, stuck_task)
        assert cancelled.state == RemoteState.CANCELLED

        again = _stage_in_spec(gs, backend, 2, range(2))
        status = _poll_until_finished(backend, _asked(again, backend.submit(again)))
    finally:
        backend.close()

    assert status.state == RemoteState.SUCCEEDED
    (failure,) = status.outcomes
    assert failure.item_id == 0 and failure.permanent
    assert "FILE_NOT_FOUND" in (failure.error or "")
    first, second = sorted(
        _tasks_at_globus(standin, SERVICE_OWNER), key=lambda t: t["status"]
    )
    assert (first["status"], second["status"]) == ("FAILED", "SUCCEEDED")
    assert first["skip_source_errors"] is False
    assert second["skip_source_errors"] is True
    assert (gs.workdir(1) / "frame.dat").read_bytes() == gs.source_file(1).read_bytes()


def test_a_task_cancelled_partway_reports_the_files_that_arrived_as_done(
    tmp_path: Path, start_standin: Callable[..., GlobusStandin]
) -> None:
    gs = make_globus_site(tmp_path, jobs=8, stage_out=False)
    start_standin(gs, per_file_delay=0.1)
    backend = _backend(gs)
    try:
        spec = _stage_in_spec(gs, backend, 1, range(8))
        asked = _asked(spec, backend.submit(spec))
        wait_until(lambda: backend.poll([asked])[1].files_done >= 2, 10, "two frames")
        backend.cancel(asked)  # as the operator would
        status = _poll_until_finished(backend, asked)
    finally:
        backend.close()

    arrived = {n for n in range(8) if (gs.workdir(n) / "frame.dat").exists()}
    assert status.state == RemoteState.CANCELLED
    assert 2 <= len(arrived) < 8
    assert {o.item_id for o in status.outcomes if o.ok} == arrived
    assert all(o.ok for o in status.outcomes)  # the rest are the engine's to judge
    for n in arrived:
        assert (gs.workdir(n) / "frame.dat").read_bytes() == (
            gs.source_file(n).read_bytes()
        )


def test_a_backend_without_an_endpoint_or_a_client_id_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gs = make_globus_site(tmp_path, jobs=1)
    settings = load_settings(gs.site.settings_path).transfers
    assert settings is not None
    for name in ("GLOBUS_CLIENT_ID", "GLOBUS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BALSAM_TUI_GLOBUS_CLIENT_ID", raising=False)

    with pytest.raises(BackendUnavailable) as no_endpoint:
        GlobusBackend(
            settings=settings.model_copy(update={"globus_endpoint_id": None}),
            site=gs.site,
        )
    with pytest.raises(BackendUnavailable) as no_client:
        GlobusBackend(
            settings=settings.model_copy(update={"globus_client_id": None}),
            site=gs.site,
        )

    assert "transfers.globus_endpoint_id" in str(no_endpoint.value)
    assert "transfers.globus_client_id" in str(no_client.value)
    assert "GLOBUS_CLIENT_SECRET" in str(no_client.value)
    assert "\n" not in str(no_endpoint.value) + str(no_client.value)


# -- pure pieces -----------------------------------------------------------------------


def test_site_paths_are_mapped_by_prefix_only() -> None:
    paths = SitePaths("/home/me/site", "/~/balsam/site")

    assert (
        paths.on_endpoint("/home/me/site/data/j/a.dat") == "/~/balsam/site/data/j/a.dat"
    )
    assert paths.on_endpoint("/home/me/site") == "/~/balsam/site"
    assert paths.on_endpoint("/scratch/home/me/site/data/a.dat") is None
    assert paths.on_endpoint("/home/me/site2/data/a.dat") is None
    assert SitePaths("/home/me/site", None).on_endpoint("/home/me/x/../site/a") == (
        "/home/me/site/a"
    )


def test_a_path_in_an_error_event_names_its_item_only_when_whole() -> None:
    index = PathIndex(
        [
            GlobusCopy(1, "/data/in/a.dat", "/site/data/jobs/1/a.dat", False),
            GlobusCopy(2, "/data/in/tree", "/site/data/jobs/2/tree", True),
        ]
    )

    assert index.items_named_in("Error on source: /data/in/a.dat") == {1}
    assert index.items_named_in("open('/data/in/tree/x/y.dat') failed.") == {2}
    assert index.items_named_in("Error on source: /data/in/a.dat.bak") == set()
    assert index.items_named_in("Error on source: /data/in") == set()
    assert index.items_named_in(None) == set()
    assert index.is_tree(2) and not index.is_tree(1)


def test_consent_scopes_name_their_collections() -> None:
    transfer = "urn:globus:auth:scope:transfer.api.globus.org:all"
    a, b = (
        "6c54cade-bde5-45c1-bdea-f4bd71dba2cc",
        "0a1b2c3d-0000-4000-8000-000000000000",
    )
    scope = (
        f"{transfer}[*https://auth.globus.org/scopes/{a}/data_access "
        f"https://auth.globus.org/scopes/{b}/data_access]"
    )

    assert data_access_collections([scope, transfer]) == (b, a)  # sorted
    assert data_access_collections([transfer]) == ()


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None


def test_status_text_speaks_globus() -> None:
    assert "queued" in status_text({"status": "ACTIVE", "nice_status": "Queued"})
    assert status_text(
        {
            "status": "ACTIVE",
            "nice_status": "FILE_NOT_FOUND",
            "nice_status_short_description": "file not found",
        }
    ) == ("FILE_NOT_FOUND: file not found")
    assert status_text({"status": "FAILED", "fatal_error": {"code": "EXPIRED"}}) == (
        "failed: EXPIRED"
    )
    assert status_text({"status": "SUCCEEDED", "nice_status": None}) == "succeeded"
