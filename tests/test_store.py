"""The embedded store: schema versioning, the counters kept by triggers, and many
writers on one file at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from balsam_tui.settings import load_settings
from balsam_tui.site import Site
from balsam_tui.states import ItemState, JobState
from balsam_tui.store import Database, StoreVersionError
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery, JobQuery, JobSpec
from balsam_tui.store.schema import SCHEMA_VERSION
from balsam_tui.store.tasks import ItemUpdate

APP = "sim"
SLOTS = {
    "inp": {"direction": "in", "local_path": "in.dat", "required": True},
    "out": {"direction": "out", "local_path": "out.dat"},
}


def spec(site: Site, workdir: str, *, with_out: bool = True) -> JobSpec:
    root = site.root.parent
    transfers = {"inp": f"laptop:{root}/laptop/{workdir}.dat"}
    if with_out:
        transfers["out"] = f"archive:{root}/archive/{workdir}.dat"
    return JobSpec(workdir=workdir, app=APP, transfers=transfers)


# -- schema version -----------------------------------------------------------------


def test_new_store_records_its_schema_version(tmp_path: Path) -> None:
    Database(tmp_path / "store.sqlite3").close()

    raw = sqlite3.connect(tmp_path / "store.sqlite3")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    assert {"apps", "jobs", "transfer_items", "transfer_tasks", "journal"} <= tables


def test_reopening_a_store_keeps_its_data(site: Site) -> None:
    db = Database(site.store_path)
    job_store.create_app(db, APP, SLOTS)
    db.close()

    again = Database(site.store_path)
    assert [a.name for a in job_store.list_apps(again)] == [APP]
    again.close()


def test_store_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()

    with pytest.raises(StoreVersionError) as refused:
        Database(path)

    message = str(refused.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade balsam-tui" in message
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    raw.close()


# -- counters -----------------------------------------------------------------------


def assert_counters_match_the_rows(db: Database) -> None:
    conn = db.connection()
    kept_items = {
        (r[0], r[1], r[2]): r[3]
        for r in conn.execute(
            "SELECT direction, location_alias, state, n FROM item_counts"
        )
    }
    real_items = {
        (r[0], r[1], r[2]): r[3]
        for r in conn.execute(
            "SELECT direction, location_alias, state, COUNT(*) FROM transfer_items"
            " GROUP BY direction, location_alias, state"
        )
    }
    assert all(n >= 0 for n in kept_items.values())
    assert {k: n for k, n in kept_items.items() if n} == real_items

    kept_jobs = {r[0]: r[1] for r in conn.execute("SELECT state, n FROM job_counts")}
    real_jobs = {
        r[0]: r[1]
        for r in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
    }
    assert all(n >= 0 for n in kept_jobs.values())
    assert {k: n for k, n in kept_jobs.items() if n} == real_jobs

    by_direction_state: dict[tuple[str, str], int] = {}
    for (direction, _, state), n in real_items.items():
        key = (direction, state)
        by_direction_state[key] = by_direction_state.get(key, 0) + n
    assert job_store.item_counts(db) == by_direction_state
    assert job_store.job_counts(db) == real_jobs


def test_counters_equal_real_counts_after_inserts_updates_and_deletes(
    site: Site,
) -> None:
    db = Database(site.store_path)
    locations = load_settings(site.settings_path).locations
    job_store.create_app(db, APP, SLOTS)
    ids = job_store.create_jobs(
        db, [spec(site, f"j{n}", with_out=n % 2 == 0) for n in range(12)], locations
    )
    assert_counters_match_the_rows(db)

    # Updates: a batch of stage-in items claimed; some done, one failed, one retried.
    pending = job_store.list_items(db, ItemQuery(direction="in", state="pending"))
    now = time.time()
    claimed = task_store.claim_batch(
        db,
        protocol="local",
        alias="laptop",
        direction="in",
        items=pending[:6],
        submission_id="s1",
        label_prefix="t",
        now=now,
    )
    assert claimed is not None
    task, active = claimed
    assert_counters_match_the_rows(db)
    updates = [
        ItemUpdate(i.id, i.job_id, ItemState.DONE, attempts=1) for i in active[:4]
    ] + [
        ItemUpdate(i.id, i.job_id, ItemState.ERROR, error="gone", attempts=1)
        for i in active[4:]
    ]
    task_store.settle_items(db, task.id, updates, now)
    assert_counters_match_the_rows(db)
    assert job_store.retry_items(db, ItemQuery(ids=[active[5].id])) == 1
    job_store.set_job_states(db, ids[:4], "POSTPROCESSED")
    job_store.set_job_states(db, ids[6:8], "FAILED")
    assert_counters_match_the_rows(db)

    # Deletes: one item on its own, and whole jobs with their items (a cascade).
    with db.write() as conn:
        conn.execute("DELETE FROM transfer_items WHERE id = ?", (pending[-1].id,))
        conn.execute("DELETE FROM jobs WHERE id IN (?, ?)", (ids[1], ids[8]))
    assert_counters_match_the_rows(db)

    # And rows made again where some were deleted.
    job_store.create_jobs(db, [spec(site, "again")], locations)
    assert_counters_match_the_rows(db)
    assert job_store.count_jobs(db) == 11
    db.close()


def test_counters_survive_a_rolled_back_transaction(site: Site) -> None:
    db = Database(site.store_path)
    locations = load_settings(site.settings_path).locations
    job_store.create_app(db, APP, SLOTS)
    job_store.create_jobs(db, [spec(site, "kept")], locations)

    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute("UPDATE transfer_items SET state = 'done'")
        conn.execute("DELETE FROM jobs")
        raise RuntimeError("changed my mind")

    assert job_store.job_counts(db) == {JobState.READY: 1}
    assert_counters_match_the_rows(db)
    db.close()


# -- many writers at once -----------------------------------------------------------

WRITERS = 3
JOBS_EACH = 25


def _writer(site_root: str, name: str, start: Any, results: Any) -> None:
    """One writer's share: open the store, then create jobs and move them on.

    Reports ``(name, job ids)``, or ``(name, the error)`` if anything went wrong.
    """
    try:
        site = Site(Path(site_root))
        start.wait(timeout=30)
        db = Database(site.store_path)
        locations = load_settings(site.settings_path).locations
        job_store.create_app(db, APP, SLOTS)
        created = []
        for n in range(JOBS_EACH):
            (job_id,) = job_store.create_jobs(
                db, [spec(site, f"{name}/{n}")], locations
            )
            created.append(job_id)
            job_store.set_job_states(db, [job_id], "STAGED_IN", source=name)
            if n % 2:
                job_store.set_job_states(db, [job_id], "POSTPROCESSED", source=name)
            job_store.count_jobs(db, JobQuery(state="POSTPROCESSED"))
        db.close()
        results.put((name, created))
    except BaseException as exc:
        results.put((name, f"{type(exc).__name__}: {exc}"))


def test_opening_a_new_store_waits_for_a_writer_that_is_creating_it(
    tmp_path: Path,
) -> None:
    """Two processes opening a store that does not exist yet, at the same moment.

    The first to connect holds the write lock while it creates the file; the
    second's ``PRAGMA journal_mode = WAL`` then fails at once with "database is
    locked" instead of waiting for it. ``init_site`` avoids this for every site it
    makes by creating the store up front; a store deleted from a site still shows
    it. Here a raw connection plays the first process, deterministically.
    """
    path = tmp_path / "new.sqlite3"
    locked, released = threading.Event(), threading.Event()

    def first_writer() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE being_created (x)")
        locked.set()
        time.sleep(0.3)
        conn.execute("COMMIT")
        conn.close()
        released.set()

    thread = threading.Thread(target=first_writer)
    thread.start()
    locked.wait(timeout=10)
    try:
        Database(path).close()
    finally:
        thread.join(timeout=10)
    assert released.is_set()


def test_concurrent_writers_all_succeed_and_every_job_is_kept(site: Site) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WRITERS + 1)  # the processes and one thread start together
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_writer, args=(str(site.root), f"proc{n}", start, results))
        for n in range(WRITERS)
    ]
    for process in processes:
        process.start()
    thread = threading.Thread(
        target=_writer, args=(str(site.root), "thread", start, results)
    )
    thread.start()

    reports = dict(results.get(timeout=60) for _ in range(WRITERS + 1))
    thread.join(timeout=10)
    for process in processes:
        process.join(timeout=10)

    errors = {name: r for name, r in reports.items() if isinstance(r, str)}
    assert errors == {}
    every_id = [job_id for ids in reports.values() for job_id in ids]
    assert len(every_id) == len(set(every_id)) == (WRITERS + 1) * JOBS_EACH

    db = Database(site.store_path)
    stored = {job.id: job for job in job_store.list_jobs(db)}
    assert set(stored) == set(every_id)
    assert job_store.count_jobs(db, JobQuery(state="STAGED_IN")) == (
        (WRITERS + 1) * ((JOBS_EACH + 1) // 2)
    )
    assert job_store.count_jobs(db, JobQuery(state="POSTPROCESSED")) == (
        (WRITERS + 1) * (JOBS_EACH // 2)
    )
    assert [a.name for a in job_store.list_apps(db)] == [APP]
    assert_counters_match_the_rows(db)
    db.close()
