"""The engine end to end with the local backend: real files, a real store, many jobs.

The same final result must hold whether the engine runs undisturbed or is killed
with SIGKILL part way and started again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from balsam_tui.engine import Engine
from balsam_tui.states import ItemState, JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import ItemQuery, JobQuery
from tests.engine_site import (
    ComputeSide,
    EngineSite,
    files_under,
    make_site,
    result_text,
    settled,
    wait_until,
)

JOBS = 1000
MISSING = frozenset({3, 250, 251, 777, 999})


def check_final_result(es: EngineSite, before: set[Path]) -> None:
    """Every job with its files finished, byte for byte; missing files failed alone."""
    db = Database(es.site.store_path)
    try:
        jobs = {j.workdir: j for j in job_store.list_jobs(db)}
        items = job_store.list_items(db)
    finally:
        db.close()

    assert len(jobs) == es.jobs
    for n in range(es.jobs):
        job = jobs[f"jobs/{n:05d}"]
        workdir = es.workdir(n)
        if n in es.missing:
            assert job.state == JobState.READY
            assert "slot frame" in job.state_reason
            assert "not found" in job.state_reason
            assert not (workdir / "frame.dat").exists()
            continue
        assert job.state == JobState.JOB_FINISHED, (n, job.state, job.state_reason)
        assert (workdir / "frame.dat").read_bytes() == es.source(n).read_bytes()
        calib = workdir / es.calibration(n).name
        assert calib.read_bytes() == es.calibration(n).read_bytes()
        assert es.archived(n).read_text() == result_text(workdir)

    by_state: dict[str, list] = {}
    for item in items:
        by_state.setdefault(item.state, []).append(item)
    failed = by_state.get(ItemState.ERROR, [])
    assert sorted(i.slot for i in failed) == ["frame"] * len(es.missing)
    assert all(i.permanent for i in failed)
    # The missing jobs' calibration arrived; their results wait for the job to run.
    assert len(by_state.get(ItemState.AWAITING_JOB, [])) == len(es.missing)
    assert set(by_state) <= {ItemState.DONE, ItemState.ERROR, ItemState.AWAITING_JOB}

    written = files_under(es.root) - before
    allowed = (es.site.data_dir, es.root / "archive", es.site.log_dir)
    stray = [
        p
        for p in written
        if not any(p.is_relative_to(a) for a in allowed)
        and p.parent != es.site.root  # the store and the engine's lock
    ]
    assert stray == []
    assert [p for p in files_under(es.root) if p.name.endswith(".part")] == []


def test_a_thousand_jobs_stage_in_run_and_stage_out(tmp_path: Path) -> None:
    es = make_site(tmp_path, jobs=JOBS, missing=MISSING)
    before = files_under(es.root)
    engine = Engine(es.site)
    runner = threading.Thread(target=engine.run, daemon=True)

    with ComputeSide(es.site):
        runner.start()
        wait_until(settled(es.site, JOBS - len(MISSING)), 120, "all jobs to settle")
    engine.stop()
    runner.join(timeout=10)
    assert not runner.is_alive()

    check_final_result(es, before)
    db = Database(es.site.store_path)
    try:
        journal = job_store.recent_journal(db, 100_000)
    finally:
        db.close()
    staged_in = [
        e for e in journal if e.kind == "job.state" and "STAGED_IN" in e.message
    ]
    assert len(staged_in) == JOBS - len(MISSING)


def _headless(es: EngineSite, stderr_path: Path) -> subprocess.Popen:
    # stderr goes to a file: an unread pipe would fill and block the engine.
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "balsam_tui",
                "--site",
                str(es.site.root),
                "--no-ui",
                "--summary-every",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=es.root,
        )


def _done_items(es: EngineSite) -> int:
    db = Database(es.site.store_path)
    try:
        return job_store.count_items(db, ItemQuery(state=ItemState.DONE))
    finally:
        db.close()


@pytest.mark.parametrize("kill_after_done", [400, 1700])
def test_a_killed_engine_restarts_to_the_same_result(
    tmp_path: Path, kill_after_done: int
) -> None:
    # Bigger files, one copy thread and small batches keep many tasks in flight
    # when the kill lands.
    es = make_site(
        tmp_path,
        jobs=JOBS,
        missing=MISSING,
        size=64 * 1024,
        batch=20,
        workers=1,
        concurrency=4,
    )
    before = files_under(es.root)

    with ComputeSide(es.site):
        first = _headless(es, es.site.log_dir / "first.err")
        try:
            wait_until(
                lambda: _done_items(es) >= kill_after_done,
                120,
                f"{kill_after_done} items done",
            )
        finally:
            first.kill()
            first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL

        db = Database(es.site.store_path)
        try:
            interrupted = job_store.count_items(db, ItemQuery(state=ItemState.ACTIVE))
            finished_jobs = job_store.count_jobs(
                db, JobQuery(state=JobState.JOB_FINISHED)
            )
        finally:
            db.close()
        assert finished_jobs < JOBS - len(MISSING), (
            "the kill came too late to prove much"
        )

        second = _headless(es, es.site.log_dir / "second.err")
        try:
            wait_until(settled(es.site, JOBS - len(MISSING)), 180, "all jobs to settle")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    stderr = (es.site.log_dir / "second.err").read_text()
    assert second.returncode == 0, stderr[-2000:]
    assert "SIGTERM received" in stderr
    check_final_result(es, before)
    # Something was in flight when the process died, and it was redone.
    assert interrupted > 0 or "submitting again" in stderr or "unknown to" in stderr
    assert (es.site.log_dir / "balsam-tui.log").stat().st_size > 0
    assert os.path.exists(es.site.store_path)
