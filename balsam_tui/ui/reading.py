"""What the console reads from the store on its own, besides the engine's snapshots.

A snapshot holds only what is cheap whatever the size of the store (counters, a few
tasks, the last journal entries). Pages of jobs, a job's story and a task's items
are read here, on demand, on the console's own connection: the store runs in WAL
mode, so these reads never wait for the engine's writes.

Jobs are paged by key (``id > ?``), never by OFFSET, so a page deep among 100,000
jobs costs what the first page costs. The job-page query lives here rather than in
``balsam_tui.store.jobs`` because ``list_jobs`` pages by OFFSET; it reuses the
store's own filter clauses (``JobQuery.where``) so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from balsam_tui.engine.snapshot import EngineSnapshot, EngineStatus
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery
from balsam_tui.store.records import (
    AppRecord,
    ItemRecord,
    JobRecord,
    JournalEntry,
    Slot,
    TaskRecord,
)
from balsam_tui.ui.cells import UNFILLED
from balsam_tui.ui.job_filter import JobFilter

SNAPSHOT_TASKS = 40
SNAPSHOT_EVENTS = 60

_ITEM_IN_STATE = (
    "EXISTS (SELECT 1 FROM transfer_items i WHERE i.job_id = jobs.id AND i.state = ?)"
)
_JOB_COLUMNS = (
    "SELECT jobs.id, jobs.workdir, jobs.state, jobs.state_reason, apps.name AS app"
    " FROM jobs JOIN apps ON apps.id = jobs.app_id"
)


@dataclass(frozen=True)
class JobRow:
    """One line of the Jobs pane: a job and the fill status of each of its slots."""

    id: int
    workdir: str
    app: str
    state: str
    reason: str
    fills: tuple[tuple[str, str], ...]  # (slot, item state or UNFILLED), app order

    def fill(self, slot: str) -> str | None:
        """The slot's fill, or ``None`` if the job's app has no such slot."""
        for name, fill in self.fills:
            if name == slot:
                return fill
        return None

    @property
    def retryable(self) -> bool:
        return any(fill in ("error", "inactive") for _, fill in self.fills)


# -- pages of jobs --------------------------------------------------------------------


def jobs_from(
    db: Database,
    flt: JobFilter,
    start: int | None,
    limit: int,
    *,
    descending: bool = False,
) -> list[JobRow]:
    """Up to ``limit`` jobs from job ``start`` on (inclusive), in display order.

    ``start=None`` begins at the first job of the order.
    """
    bound = None if start is None else ("<=" if descending else ">=", start)
    return _page(db, flt, bound, limit, descending=descending)


def jobs_before(
    db: Database,
    flt: JobFilter,
    end: int | None,
    limit: int,
    *,
    descending: bool = False,
) -> list[JobRow]:
    """Up to ``limit`` jobs just before job ``end`` (exclusive), in display order.

    ``end=None`` means the last jobs of the order.
    """
    bound = None if end is None else (">" if descending else "<", end)
    rows = _page(db, flt, bound, limit, descending=not descending)
    rows.reverse()
    return rows


def count_matching(db: Database, flt: JobFilter, job_counts: Mapping[str, int]) -> int:
    """How many jobs the filter matches; free when only states are asked for."""
    if flt.counted_by_state:
        if not flt.states:
            return sum(job_counts.values())
        return sum(job_counts.get(state, 0) for state in flt.states)
    sql, params = _filtered(
        flt, "SELECT COUNT(*) FROM jobs JOIN apps ON apps.id = jobs.app_id"
    )
    return db.connection().execute(sql, params).fetchone()[0]


def _filtered(
    flt: JobFilter, select: str, bound: tuple[str, int] | None = None
) -> tuple[str, list[Any]]:
    where, params = flt.query().where()
    clauses = [where.removeprefix(" WHERE ")] if where else []
    if flt.item_state:
        clauses.append(_ITEM_IN_STATE)
        params.append(flt.item_state)
    if bound is not None:
        clauses.append(f"jobs.id {bound[0]} ?")
        params.append(bound[1])
    sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "")
    return sql, params


def _page(
    db: Database,
    flt: JobFilter,
    bound: tuple[str, int] | None,
    limit: int,
    *,
    descending: bool,
) -> list[JobRow]:
    sql, params = _filtered(flt, _JOB_COLUMNS, bound)
    sql += f" ORDER BY jobs.id {'DESC' if descending else 'ASC'} LIMIT ?"
    params.append(limit)
    conn = db.connection()
    with db.read():
        jobs = conn.execute(sql, params).fetchall()
        items = job_store.list_items(db, ItemQuery(job_ids=[j["id"] for j in jobs]))
        apps = {app.name: app for app in job_store.list_apps(db)}
    by_job: dict[int, dict[str, str]] = {}
    for item in items:
        by_job.setdefault(item.job_id, {})[item.slot] = item.state
    return [
        JobRow(
            id=job["id"],
            workdir=job["workdir"],
            app=job["app"],
            state=job["state"],
            reason=job["state_reason"],
            fills=_fills(apps.get(job["app"]), by_job.get(job["id"], {})),
        )
        for job in jobs
    ]


def _fills(
    app: AppRecord | None, states: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    slots = list(app.slots) if app is not None else []
    slots += [name for name in states if name not in slots]  # slots the app dropped
    return tuple((name, states.get(name, UNFILLED)) for name in slots)


def slot_columns(rows: Sequence[JobRow]) -> tuple[str, ...]:
    """The slot names to show as columns: every slot of the jobs shown, in order."""
    return tuple(dict.fromkeys(name for row in rows for name, _ in row.fills))


# -- one job, one task ----------------------------------------------------------------


@dataclass(frozen=True)
class SlotStory:
    slot: Slot
    item: ItemRecord | None
    task: TaskRecord | None


@dataclass(frozen=True)
class JobStory:
    """Everything about one job: its slots, their items and tasks, and its journal."""

    job: JobRecord
    slots: tuple[SlotStory, ...]
    journal: tuple[JournalEntry, ...]

    @property
    def last_error(self) -> str:
        errors = [s.item.error for s in self.slots if s.item and s.item.error]
        return errors[-1] if errors else ""

    @property
    def retryable(self) -> bool:
        return any(
            s.item is not None and s.item.state in ("error", "inactive")
            for s in self.slots
        )


def job_story(db: Database, job_id: int, *, journal_limit: int = 300) -> JobStory:
    """The story of one job; ``NotFound`` if there is no such job."""
    with db.read():
        job = job_store.get_job(db, job_id)
        app = job_store.get_app(db, job.app_name)
        items = {
            item.slot: item
            for item in job_store.list_items(db, ItemQuery(job_ids=[job_id]))
        }
        task_ids = sorted({i.task_id for i in items.values() if i.task_id is not None})
        tasks = {t: task_store.get_task(db, t) for t in task_ids}
        journal = job_store.recent_journal(db, journal_limit, job_id=job_id)
    slots = dict(app.slots)
    for name, item in items.items():
        if name not in slots:  # the app lost the slot after the job was made
            slots[name] = Slot(name, item.direction, item.local_path)
    return JobStory(
        job=job,
        slots=tuple(
            SlotStory(
                slot=slot,
                item=items.get(name),
                task=tasks.get(items[name].task_id) if name in items else None,
            )
            for name, slot in slots.items()
        ),
        journal=tuple(journal),
    )


@dataclass(frozen=True)
class TaskDetail:
    """One transfer task: its record, the items it carries now, and its journal."""

    task: TaskRecord
    items: tuple[ItemRecord, ...]
    workdirs: Mapping[int, str]
    journal: tuple[JournalEntry, ...]


def task_detail(
    db: Database, task_id: int, *, item_limit: int = 2000, journal_limit: int = 500
) -> TaskDetail | None:
    with db.read():
        task = task_store.get_task(db, task_id)
        if task is None:
            return None
        items = job_store.list_items(db, ItemQuery(task_id=task_id), limit=item_limit)
        workdirs = job_store.workdirs(db, [i.job_id for i in items])
        journal = job_store.recent_journal(db, journal_limit, task_id=task_id)
    return TaskDetail(task, tuple(items), workdirs, tuple(journal))


def failed_items_of_task(db: Database, task_id: int) -> list[int]:
    query = ItemQuery(task_id=task_id, state="error")
    return [item.id for item in job_store.list_items(db, query)]


# -- the journal and whole-store pictures ---------------------------------------------


def journal_after(
    db: Database, after_id: int, newest_id: int, limit: int
) -> list[JournalEntry]:
    """Entries with ``after_id < id <= newest_id``, oldest first, at most ``limit``."""
    wanted = min(max(newest_id - after_id, 0), limit)
    if wanted == 0:
        return []
    entries = job_store.recent_journal(db, wanted)
    return [e for e in entries if after_id < e.id <= newest_id]


def store_snapshot(
    db: Database,
    *,
    site: str,
    status: EngineStatus,
    now: float,
    problems: tuple[str, ...] = (),
) -> EngineSnapshot:
    """A snapshot read straight from the store, for when no engine publishes one.

    The console uses it while another process's engine runs the site, or after its
    own engine failed; tests and the scale benchmark use it for fixed pictures.
    """
    with db.read():
        tasks = {t.id: t for t in task_store.recent_tasks(db, SNAPSHOT_TASKS)}
        for task in task_store.in_flight_tasks(db):
            tasks.setdefault(task.id, task)
        return EngineSnapshot(
            taken_at=now,
            site=site,
            status=status,
            item_counts=dict(job_store.item_counts(db)),
            job_counts=dict(job_store.job_counts(db)),
            tasks=tuple(sorted(tasks.values(), key=lambda t: -t.id)),
            events=tuple(job_store.recent_journal(db, SNAPSHOT_EVENTS)),
            problems=problems,
            bytes_per_second=sum(
                t.bytes_per_second for t in tasks.values() if t.finished_at is None
            ),
        )


def count_before(
    db: Database, flt: JobFilter, start: int | None, *, descending: bool = False
) -> int:
    """How many matching jobs come before job ``start`` in display order."""
    if start is None:
        return 0
    bound = (">" if descending else "<", start)
    sql, params = _filtered(
        flt, "SELECT COUNT(*) FROM jobs JOIN apps ON apps.id = jobs.app_id", bound
    )
    return db.connection().execute(sql, params).fetchone()[0]
