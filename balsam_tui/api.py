"""The Python API: define apps, submit jobs, set their states and query transfers.

Modelled on Balsam's own API so that scripts read the same::

    from balsam_tui.api import App, Job, TransferItem

    App.objects.create(name="sim", transfers={"inp": {"direction": "in",
                                                     "local_path": "in.dat"}})
    job = Job.objects.create(workdir="runs/1", app="sim",
                             transfers={"inp": "laptop:/data/in.dat"})
    for item in TransferItem.objects.filter(direction="in", state="active"):
        print(item.remote_path, item.task_id)

The site is found as every command finds it (``BALSAM_SITE_PATH``, then the current
directory); ``use_site`` picks one explicitly and ``close`` lets go of it. The
store is shared safely with a running engine: each call is its own short
transaction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from balsam_tui.settings import SiteSettings, load_settings
from balsam_tui.site import Site, resolve_site
from balsam_tui.store import Database, NotFound, ValidationError
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import ItemQuery, JobQuery, JobSpec
from balsam_tui.store.records import AppRecord, ItemRecord, JobRecord

__all__ = [
    "App",
    "Job",
    "TransferItem",
    "use_site",
    "close",
    "NotFound",
    "ValidationError",
]


class _Connection:
    """The site, its settings and its store, opened on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.db = Database(site.store_path)
        self._settings: SiteSettings | None = None

    @property
    def settings(self) -> SiteSettings:
        if self._settings is None:
            self._settings = load_settings(self.site.settings_path)
        return self._settings


_current: _Connection | None = None
_current_lock = threading.Lock()


def use_site(path: str | os.PathLike[str] | None = None) -> Site:
    """Point the API at a site (``None``: find it as the commands do)."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.db.close()
        _current = _Connection(resolve_site(path))
        return _current.site


def close() -> None:
    """Close the store's connections; the next call finds the site afresh."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.db.close()
        _current = None


def _connection() -> _Connection:
    global _current
    with _current_lock:
        if _current is None:
            _current = _Connection(resolve_site(None))
        return _current


# -- apps ---------------------------------------------------------------------------


class _AppManager:
    def create(
        self,
        name: str,
        transfers: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> AppRecord:
        """Create an app (or replace the slots of the app of that name)."""
        return job_store.create_app(
            _connection().db, name, transfers or {}, description
        )

    def get(self, name: str) -> AppRecord:
        return job_store.get_app(_connection().db, name)

    def all(self) -> list[AppRecord]:
        return job_store.list_apps(_connection().db)


class App:
    """An app: a name and its transfer slots. ``App.objects`` creates and finds them."""

    objects = _AppManager()


# -- jobs ---------------------------------------------------------------------------


class Job:
    """A job: a workdir, an app, filled transfer slots, parents and tags.

    Make one with ``Job.objects.create(...)``, or build ``Job(...)`` objects and pass
    them to ``Job.objects.bulk_create``. Setting ``state`` and calling ``save()`` is
    how the compute side reports progress (``"POSTPROCESSED"`` releases stage-out).
    """

    objects: _JobManager

    def __init__(
        self,
        workdir: str,
        app: str,
        transfers: Mapping[str, Any] | None = None,
        parents: Sequence[int | Job] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.id: int | None = None
        self.workdir = workdir
        self.app = app
        self.transfers = dict(transfers or {})
        self.parents = [_parent_id(workdir, p) for p in parents]
        self.tags = dict(tags or {})
        self.state: str | None = None
        self.state_reason = ""
        self._saved_state: str | None = None

    @classmethod
    def _from_record(cls, record: JobRecord) -> Job:
        job = cls(
            record.workdir, record.app_name, parents=record.parents, tags=record.tags
        )
        job.id = record.id
        job.state = job._saved_state = record.state
        job.state_reason = record.state_reason
        return job

    def _spec(self) -> JobSpec:
        return JobSpec(
            workdir=self.workdir,
            app=self.app,
            transfers=self.transfers,
            parents=self.parents,
            tags=self.tags,
        )

    def save(self) -> Job:
        """Create the job, or record a change of its state."""
        conn = _connection()
        if self.id is None:
            (self.id,) = job_store.create_jobs(
                conn.db, [self._spec()], conn.settings.locations
            )
        elif self.state != self._saved_state and self.state is not None:
            job_store.set_job_states(conn.db, [self.id], self.state, source="api")
        return self.refresh_from_db()

    def refresh_from_db(self) -> Job:
        if self.id is None:
            return self
        record = job_store.get_job(_connection().db, self.id)
        self.state = self._saved_state = record.state
        self.state_reason = record.state_reason
        self.parents = list(record.parents)
        return self

    def items(self) -> list[ItemRecord]:
        """This job's transfer items."""
        if self.id is None:
            return []
        return job_store.list_items(_connection().db, ItemQuery(job_ids=[self.id]))

    def __repr__(self) -> str:
        return f"Job(id={self.id}, workdir={self.workdir!r}, state={self.state})"


def _parent_id(workdir: str, parent: int | Job) -> int:
    if not isinstance(parent, Job):
        return parent
    if parent.id is None:
        # Dropping it would start the child before its parent has even run.
        raise ValidationError(
            f"job {workdir!r}: parent job {parent.workdir!r} is not saved yet; "
            "create the parent first"
        )
    return parent.id


class JobQuerySet:
    """A lazy, chainable selection of jobs, evaluated in the store."""

    def __init__(self, query: JobQuery | None = None) -> None:
        self._query = query or JobQuery()

    def filter(
        self,
        *,
        id: int | Sequence[int] | None = None,
        state: str | Sequence[str] | None = None,
        app: str | None = None,
        workdir: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> JobQuerySet:
        q = self._query
        ids = [id] if isinstance(id, int) else id
        merged = JobQuery(
            ids=ids if ids is not None else q.ids,
            state=state if state is not None else q.state,
            app=app if app is not None else q.app,
            workdir=workdir if workdir is not None else q.workdir,
            tags={**(q.tags or {}), **(tags or {})} or None,
        )
        return JobQuerySet(merged)

    def count(self) -> int:
        return job_store.count_jobs(_connection().db, self._query)

    def __iter__(self) -> Iterator[Job]:
        records = job_store.list_jobs(_connection().db, self._query)
        return (Job._from_record(r) for r in records)

    def __len__(self) -> int:
        return self.count()

    def first(self) -> Job | None:
        records = job_store.list_jobs(_connection().db, self._query, limit=1)
        return Job._from_record(records[0]) if records else None

    def update(self, *, state: str) -> int:
        """Set the state of every selected job; return how many were selected."""
        ids = [j.id for j in self if j.id is not None]
        if ids:
            job_store.set_job_states(_connection().db, ids, state, source="api")
        return len(ids)


class _JobManager(JobQuerySet):
    def create(
        self,
        workdir: str,
        app: str,
        transfers: Mapping[str, Any] | None = None,
        parents: Sequence[int | Job] = (),
        tags: Mapping[str, str] | None = None,
    ) -> Job:
        return Job(workdir, app, transfers, parents, tags).save()

    def bulk_create(self, jobs: Sequence[Job]) -> list[Job]:
        """Create many jobs in one transaction: all of them, or none."""
        conn = _connection()
        ids = job_store.create_jobs(
            conn.db, [job._spec() for job in jobs], conn.settings.locations
        )
        for job, job_id in zip(jobs, ids, strict=True):
            job.id = job_id
        records = {r.id: r for r in job_store.list_jobs(conn.db, JobQuery(ids=ids))}
        for job in jobs:
            record = records[job.id]
            job.state = job._saved_state = record.state
        return list(jobs)

    def get(self, id: int) -> Job:
        return Job._from_record(job_store.get_job(_connection().db, id))


Job.objects = _JobManager()


# -- transfer items -----------------------------------------------------------------


class ItemQuerySet:
    """A lazy selection of transfer items, evaluated in the store."""

    def __init__(self, query: ItemQuery | None = None) -> None:
        self._query = query or ItemQuery()

    def filter(
        self,
        *,
        id: int | Sequence[int] | None = None,
        job_id: int | Sequence[int] | None = None,
        direction: str | None = None,
        state: str | Sequence[str] | None = None,
        location_alias: str | None = None,
        task_id: int | None = None,
    ) -> ItemQuerySet:
        q = self._query
        ids = [id] if isinstance(id, int) else id
        job_ids = [job_id] if isinstance(job_id, int) else job_id
        return ItemQuerySet(
            ItemQuery(
                ids=ids if ids is not None else q.ids,
                job_ids=job_ids if job_ids is not None else q.job_ids,
                direction=direction if direction is not None else q.direction,
                state=state if state is not None else q.state,
                location_alias=location_alias
                if location_alias is not None
                else q.location_alias,
                task_id=task_id if task_id is not None else q.task_id,
            )
        )

    def count(self) -> int:
        return job_store.count_items(_connection().db, self._query)

    def __iter__(self) -> Iterator[ItemRecord]:
        return iter(job_store.list_items(_connection().db, self._query))

    def __len__(self) -> int:
        return self.count()

    def retry(self) -> int:
        """Send the selected failed items again; return how many."""
        return job_store.retry_items(_connection().db, self._query, source="api")


class TransferItem:
    """Transfer items (one per filled slot of a job), found with ``.objects``."""

    objects = ItemQuerySet()
