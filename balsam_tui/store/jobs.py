"""Apps, jobs and their transfer items: creation with every check, queries, states.

Everything that changes a job's state goes through ``enter_states``, which also
applies what the new state implies (stage-out items released on POSTPROCESSED,
children released on JOB_FINISHED, a job with nothing to move passed straight on),
in the caller's transaction, so no script, CLI call or engine cycle can leave a job
half-moved.
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from balsam_tui.locations import (
    Location,
    LocationError,
    has_parent_reference,
    inside,
    parse_remote_ref,
)
from balsam_tui.states import Direction, ItemState, JobState
from balsam_tui.store.db import Database, StoreError
from balsam_tui.store.records import (
    AppRecord,
    ItemRecord,
    JobRecord,
    JournalEntry,
    Slot,
)

SLOT_KEYS = frozenset(
    {"direction", "local_path", "required", "description", "recursive"}
)
JOB_STATES = frozenset(s.value for s in JobState)


class ValidationError(StoreError):
    """Input refused before anything was written; the message names what and where."""


class NotFound(StoreError):
    """No app, job or item with that name or id."""


@dataclass
class JobSpec:
    """A job to create. ``transfers`` maps slot names to location references."""

    workdir: str
    app: str
    transfers: Mapping[str, Any] = field(default_factory=dict)
    parents: Sequence[int] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


def journal(
    conn: sqlite3.Connection,
    kind: str,
    message: str,
    *,
    job_id: int | None = None,
    item_id: int | None = None,
    task_id: int | None = None,
    now: float | None = None,
) -> None:
    conn.execute(
        "INSERT INTO journal (ts, kind, job_id, item_id, task_id, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (time.time() if now is None else now, kind, job_id, item_id, task_id, message),
    )


def journal_many(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, int | None, int | None, int | None, str]],
    now: float,
) -> None:
    """Journal ``(kind, job_id, item_id, task_id, message)`` rows at once."""
    conn.executemany(
        "INSERT INTO journal (ts, kind, job_id, item_id, task_id, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        ((now, *row) for row in rows),
    )


# -- apps ---------------------------------------------------------------------------


def validate_slots(app: str, transfers: Mapping[str, Any]) -> dict[str, Slot]:
    if not isinstance(transfers, Mapping):
        raise ValidationError(f"app {app!r}: transfers must be a mapping of slot names")
    slots = {}
    for name, spec in transfers.items():
        where = f"app {app!r}, slot {name!r}"
        if not isinstance(name, str) or not name:
            raise ValidationError(f"app {app!r}: slot names must be non-empty strings")
        if not isinstance(spec, Mapping):
            raise ValidationError(
                f"{where}: must be a mapping with direction and local_path"
            )
        unknown = set(spec) - SLOT_KEYS
        if unknown:
            raise ValidationError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
                f" (allowed: {', '.join(sorted(SLOT_KEYS))})"
            )
        direction = spec.get("direction")
        if direction not in ("in", "out"):
            raise ValidationError(
                f"{where}: direction must be 'in' or 'out', not {direction!r}"
            )
        local_path = spec.get("local_path", ".")
        if not isinstance(local_path, str) or not local_path:
            raise ValidationError(f"{where}: local_path must be a non-empty string")
        if local_path.startswith("/"):
            raise ValidationError(
                f"{where}: local_path {local_path!r} must be relative to the workdir"
            )
        if has_parent_reference(local_path):
            raise ValidationError(
                f"{where}: local_path {local_path!r} may not contain '..'"
            )
        for flag in ("required", "recursive"):
            if not isinstance(spec.get(flag, False), bool):
                raise ValidationError(f"{where}: {flag} must be true or false")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ValidationError(f"{where}: description must be text")
        slots[name] = Slot(
            name=name,
            direction=direction,
            local_path=posixpath.normpath(local_path),
            required=spec.get("required", False),
            description=description,
            recursive=spec.get("recursive", False),
        )
    return slots


def create_app(
    db: Database, name: str, transfers: Mapping[str, Any], description: str = ""
) -> AppRecord:
    """Create an app, or update the slots of an app of the same name."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("an app needs a non-empty name")
    slots = validate_slots(name, transfers)
    payload = json.dumps({n: s.as_dict() for n, s in slots.items()}, sort_keys=True)
    now = time.time()
    with db.write() as conn:
        conn.execute(
            "INSERT INTO apps (name, description, slots, created_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET slots = excluded.slots,"
            " description = excluded.description",
            (name, description, payload, now),
        )
        journal(
            conn, "app.saved", f"app {name} saved with {len(slots)} slot(s)", now=now
        )
        row = conn.execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
    return AppRecord.from_row(row)


def get_app(db: Database, name: str) -> AppRecord:
    row = (
        db.connection().execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
    )
    if row is None:
        raise NotFound(f"no app named {name!r}")
    return AppRecord.from_row(row)


def list_apps(db: Database) -> list[AppRecord]:
    rows = db.connection().execute("SELECT * FROM apps ORDER BY name").fetchall()
    return [AppRecord.from_row(row) for row in rows]


# -- jobs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ItemRow:
    slot: Slot
    remote_path: str
    alias: str


def _job_label(spec: JobSpec) -> str:
    return f"job {spec.workdir!r}"


def validate_job(
    spec: JobSpec, app: AppRecord, locations: Mapping[str, Location]
) -> list[_ItemRow]:
    """Check a job against its app and the site's trusted locations."""
    label = _job_label(spec)
    workdir = spec.workdir
    if not isinstance(workdir, str) or not workdir.strip():
        raise ValidationError(f"{label}: workdir must be a non-empty relative path")
    if workdir.startswith("/"):
        raise ValidationError(f"{label}: workdir must be relative to the site's data/")
    if has_parent_reference(workdir) or posixpath.normpath(workdir) in (".", ""):
        raise ValidationError(
            f"{label}: workdir may not contain '..' or be data/ itself"
        )
    if not isinstance(spec.transfers, Mapping):
        raise ValidationError(f"{label}: transfers must map slot names to locations")
    if not isinstance(spec.tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in spec.tags.items()
    ):
        raise ValidationError(f"{label}: tags must map strings to strings")
    parents = spec.parents
    if (
        not isinstance(parents, Sequence)
        or isinstance(parents, str)
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in parents)
    ):
        raise ValidationError(f"{label}: parents must be a list of job ids")
    rows = []
    for slot_name, value in spec.transfers.items():
        where = f"{label}, slot {slot_name!r}"
        slot = app.slots.get(slot_name)
        if slot is None:
            known = ", ".join(sorted(app.slots)) or "none"
            raise ValidationError(
                f"{where}: app {app.name!r} has no such slot (its slots: {known})"
            )
        try:
            ref = parse_remote_ref(value)
        except LocationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
        location = locations.get(ref.alias)
        if location is None:
            known = ", ".join(sorted(locations)) or "none configured"
            raise ValidationError(
                f"{where}: location alias {ref.alias!r} is not in the site's "
                f"transfer_locations (known: {known})"
            )
        if not inside(ref.path, location.root):
            raise ValidationError(
                f"{where}: {ref.path!r} lies outside location {ref.alias!r} "
                f"(root {location.root})"
            )
        rows.append(_ItemRow(slot, posixpath.normpath(ref.path), ref.alias))
    missing = [
        name
        for name, slot in app.slots.items()
        if slot.required and name not in spec.transfers
    ]
    if missing:
        raise ValidationError(
            f"{label}: required slot(s) not filled: {', '.join(sorted(missing))}"
        )
    return rows


def create_jobs(
    db: Database, specs: Sequence[JobSpec], locations: Mapping[str, Location]
) -> list[int]:
    """Validate every job, then create them all in one transaction (or none)."""
    apps: dict[str, AppRecord] = {}
    validated = []
    for spec in specs:
        if spec.app not in apps:
            try:
                apps[spec.app] = get_app(db, spec.app)
            except NotFound:
                raise ValidationError(
                    f"{_job_label(spec)}: no app named {spec.app!r}; create it first"
                ) from None
        validated.append((spec, validate_job(spec, apps[spec.app], locations)))

    now = time.time()
    ids = []
    with db.write() as conn:
        for spec, rows in validated:
            ids.append(_insert_job(conn, spec, apps[spec.app], rows, now))
    return ids


def _insert_job(
    conn: sqlite3.Connection,
    spec: JobSpec,
    app: AppRecord,
    rows: list[_ItemRow],
    now: float,
) -> int:
    parents = sorted(set(int(p) for p in spec.parents))
    finished = 0
    if parents:
        marks = ",".join("?" * len(parents))
        found = conn.execute(
            f"SELECT id, state FROM jobs WHERE id IN ({marks})", parents
        ).fetchall()
        if len(found) != len(parents):
            missing = sorted(set(parents) - {r["id"] for r in found})
            raise ValidationError(
                f"{_job_label(spec)}: parent job(s) {missing} do not exist"
            )
        finished = sum(r["state"] == JobState.JOB_FINISHED for r in found)
    has_in = any(r.slot.direction == Direction.IN for r in rows)
    if finished < len(parents):
        state = JobState.AWAITING_PARENTS
    elif has_in:
        state = JobState.READY
    else:
        state = JobState.STAGED_IN

    workdir = posixpath.normpath(spec.workdir)
    job_id = conn.execute(
        "INSERT INTO jobs (workdir, app_id, state, tags, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (workdir, app.id, state, json.dumps(dict(spec.tags)), now, now),
    ).lastrowid
    conn.executemany(
        "INSERT INTO job_parents (job_id, parent_id) VALUES (?, ?)",
        [(job_id, p) for p in parents],
    )
    conn.executemany(
        "INSERT INTO transfer_items (job_id, slot, direction, local_path, remote_path,"
        " location_alias, recursive, state, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                job_id,
                r.slot.name,
                r.slot.direction,
                r.slot.local_path,
                r.remote_path,
                r.alias,
                int(r.slot.recursive),
                ItemState.PENDING
                if r.slot.direction == Direction.IN and state == JobState.READY
                else ItemState.AWAITING_JOB,
                now,
            )
            for r in rows
        ],
    )
    journal(
        conn,
        "job.created",
        f"job {job_id} created in {state} ({len(rows)} item(s))",
        job_id=job_id,
        now=now,
    )
    return job_id


_JOB_SELECT = (
    "SELECT jobs.*, apps.name AS app_name FROM jobs JOIN apps ON apps.id = jobs.app_id"
)


def _match_any(
    clauses: list[str], params: list[Any], column: str, values: list[Any]
) -> None:
    """Add ``column IN (...)``; an empty list matches nothing."""
    values = values or [None]
    clauses.append(f"{column} IN ({','.join('?' * len(values))})")
    params += values


def _states(
    state: str | Sequence[str], names: type[JobState] | type[ItemState]
) -> list[str]:
    """The states asked for, refusing a name that is not one of ``names``."""
    states = [state] if isinstance(state, str) else list(state)
    known = [s.value for s in names]
    for name in states:
        if name not in known:
            kind = "job" if names is JobState else "item"
            raise ValidationError(
                f"unknown {kind} state {name!r} (one of: {', '.join(known)})"
            )
    return states


@dataclass(frozen=True)
class JobQuery:
    """Filters for listing jobs; every field narrows, ``None`` means any."""

    ids: Sequence[int] | None = None
    state: str | Sequence[str] | None = None
    app: str | None = None
    workdir: str | None = None
    tags: Mapping[str, str] | None = None
    alias: str | None = None
    text: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.ids is not None:
            _match_any(clauses, params, "jobs.id", list(self.ids))
        if self.state is not None:
            _match_any(clauses, params, "jobs.state", _states(self.state, JobState))
        if self.app is not None:
            clauses.append("apps.name = ?")
            params.append(self.app)
        if self.workdir is not None:
            clauses.append("jobs.workdir = ?")
            params.append(posixpath.normpath(self.workdir))
        for key, value in (self.tags or {}).items():
            clauses.append("json_extract(jobs.tags, ?) = ?")
            params += [f'$."{key}"', value]
        if self.alias is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM transfer_items i WHERE i.job_id = jobs.id"
                " AND i.location_alias = ?)"
            )
            params.append(self.alias)
        if self.text:
            clauses.append(
                "(jobs.workdir LIKE ? OR apps.name LIKE ? OR jobs.tags LIKE ?)"
            )
            params += [f"%{self.text}%"] * 3
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_jobs(
    db: Database,
    query: JobQuery = JobQuery(),
    *,
    limit: int | None = None,
    offset: int = 0,
    descending: bool = False,
) -> list[JobRecord]:
    where, params = query.where()
    sql = f"{_JOB_SELECT}{where} ORDER BY jobs.id {'DESC' if descending else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [limit, offset]
    with db.read() as conn:
        rows = conn.execute(sql, params).fetchall()
        parents = _parents_of(conn, [r["id"] for r in rows])
    return [JobRecord.from_row(r, parents.get(r["id"], ())) for r in rows]


def count_jobs(db: Database, query: JobQuery = JobQuery()) -> int:
    where, params = query.where()
    sql = f"SELECT COUNT(*) FROM jobs JOIN apps ON apps.id = jobs.app_id{where}"
    return db.connection().execute(sql, params).fetchone()[0]


def get_job(db: Database, job_id: int) -> JobRecord:
    jobs = list_jobs(db, JobQuery(ids=[job_id]))
    if not jobs:
        raise NotFound(f"no job with id {job_id}")
    return jobs[0]


def _parents_of(
    conn: sqlite3.Connection, job_ids: list[int]
) -> dict[int, tuple[int, ...]]:
    result: dict[int, list[int]] = {}
    for chunk in _chunks(job_ids, 500):
        rows = conn.execute(
            "SELECT job_id, parent_id FROM job_parents WHERE job_id IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY parent_id",
            chunk,
        ).fetchall()
        for row in rows:
            result.setdefault(row["job_id"], []).append(row["parent_id"])
    return {k: tuple(v) for k, v in result.items()}


def _chunks(values: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# -- job states ---------------------------------------------------------------------


def set_job_states(
    db: Database,
    job_ids: Sequence[int],
    state: str,
    reason: str = "",
    *,
    source: str = "api",
) -> int:
    """Set jobs' states (as the compute side or an operator does); return how many."""
    if state not in JOB_STATES:
        raise ValidationError(
            f"unknown job state {state!r}"
            f" (one of: {', '.join(s.value for s in JobState)})"
        )
    with db.write() as conn:
        marks = ",".join("?" * len(job_ids)) or "NULL"
        found = {
            r[0]
            for r in conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", job_ids)
        }
        missing = sorted(set(job_ids) - found)
        if missing:
            raise NotFound(f"no job with id {', '.join(map(str, missing))}")
        moves = enter_states(
            conn,
            [(j, state, reason or f"set by {source}") for j in job_ids],
            time.time(),
        )
    # ``moves`` also holds what followed (a child released, a job passed on): count
    # only the jobs asked for.
    return len({job_id for job_id, _ in moves} & found)


def enter_states(
    conn: sqlite3.Connection, changes: Iterable[tuple[int, str, str]], now: float
) -> list[tuple[int, str]]:
    """Move jobs to new states and apply what each state implies; return the moves.

    Works in rounds, a handful of statements per round whatever the number of jobs:
    the jobs of one round change state together, then what their new states imply
    (items released, jobs passed on, children freed) makes the next round.
    """
    moved: list[tuple[int, str]] = []
    waiting = list(changes)
    while waiting:
        this_round, waiting = _one_change_per_job(waiting)
        effective = _changing(conn, this_round)
        if not effective:
            continue
        conn.executemany(
            "UPDATE jobs SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
            [(state, reason, now, job_id) for job_id, state, reason in effective],
        )
        journal_many(
            conn,
            (
                ("job.state", job_id, None, None, f"job {job_id} -> {state}: {reason}")
                for job_id, state, reason in effective
            ),
            now,
        )
        moved += [(job_id, state) for job_id, state, _ in effective]
        by_state: dict[str, list[int]] = {}
        for job_id, state, _ in effective:
            by_state.setdefault(state, []).append(job_id)
        for state, job_ids in by_state.items():
            waiting += _consequences(conn, job_ids, state, now)
    return moved


def _one_change_per_job(
    changes: list[tuple[int, str, str]],
) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
    seen: set[int] = set()
    now_, later = [], []
    for change in changes:
        (later if change[0] in seen else now_).append(change)
        seen.add(change[0])
    return now_, later


def _changing(
    conn: sqlite3.Connection, changes: list[tuple[int, str, str]]
) -> list[tuple[int, str, str]]:
    """The changes that really move a job (it exists and is in another state)."""
    ids = [c[0] for c in changes]
    current = {
        r[0]: r[1]
        for chunk in _chunks(ids, 500)
        for r in conn.execute(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
    }
    return [c for c in changes if c[0] in current and current[c[0]] != c[1]]


def _consequences(
    conn: sqlite3.Connection, job_ids: list[int], state: str, now: float
) -> list[tuple[int, str, str]]:
    if state == JobState.READY:
        return _release_items(conn, job_ids, Direction.IN, JobState.STAGED_IN, now)
    if state == JobState.POSTPROCESSED:
        return _release_items(conn, job_ids, Direction.OUT, JobState.JOB_FINISHED, now)
    if state == JobState.JOB_FINISHED:
        return _released_children(conn, job_ids)
    return []


def _release_items(
    conn: sqlite3.Connection,
    job_ids: list[int],
    direction: str,
    next_state: str,
    now: float,
) -> list[tuple[int, str, str]]:
    """Make the jobs' items of one direction pending; pass on jobs with none left."""
    busy: set[int] = set()
    for chunk in _chunks(job_ids, 500):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            "UPDATE transfer_items SET state = ?, updated_at = ?"
            f" WHERE job_id IN ({marks}) AND direction = ? AND state = ?",
            [ItemState.PENDING, now, *chunk, direction, ItemState.AWAITING_JOB],
        )
        busy.update(
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT job_id FROM transfer_items"
                f" WHERE job_id IN ({marks}) AND direction = ? AND state <> ?",
                [*chunk, direction, ItemState.DONE],
            )
        )
    word = "stage-in" if direction == Direction.IN else "stage-out"
    return [
        (job_id, next_state, f"no {word} items left to move")
        for job_id in job_ids
        if job_id not in busy
    ]


def _released_children(
    conn: sqlite3.Connection, job_ids: list[int]
) -> list[tuple[int, str, str]]:
    released = []
    for chunk in _chunks(job_ids, 500):
        rows = conn.execute(
            "SELECT DISTINCT c.id, jp.parent_id FROM job_parents jp"
            " JOIN jobs c ON c.id = jp.job_id"
            f" WHERE jp.parent_id IN ({','.join('?' * len(chunk))}) AND c.state = ?"
            " AND NOT EXISTS (SELECT 1 FROM job_parents p2"
            "   JOIN jobs pj ON pj.id = p2.parent_id"
            "   WHERE p2.job_id = c.id AND pj.state <> ?)",
            [*chunk, JobState.AWAITING_PARENTS, JobState.JOB_FINISHED],
        ).fetchall()
        released += [
            (r[0], JobState.READY, f"parents finished (last: job {r[1]})") for r in rows
        ]
    return released


def advance_after_items(
    conn: sqlite3.Connection, job_ids: Iterable[int], now: float
) -> list[tuple[int, str]]:
    """Move on the jobs whose items just changed, if all their data has arrived."""
    ids = sorted(set(job_ids))
    changes = []
    for chunk in _chunks(ids, 500):
        rows = conn.execute(
            "SELECT j.id, j.state FROM jobs j WHERE j.id IN"
            f" ({','.join('?' * len(chunk))}) AND j.state IN (?, ?)"
            " AND NOT EXISTS (SELECT 1 FROM transfer_items i WHERE i.job_id = j.id"
            "   AND i.direction = CASE j.state WHEN ? THEN 'in' ELSE 'out' END"
            "   AND i.state <> ?)",
            [
                *chunk,
                JobState.READY,
                JobState.POSTPROCESSED,
                JobState.READY,
                ItemState.DONE,
            ],
        ).fetchall()
        for row in rows:
            if row["state"] == JobState.READY:
                changes.append(
                    (row["id"], JobState.STAGED_IN, "all stage-in items done")
                )
            else:
                changes.append(
                    (row["id"], JobState.JOB_FINISHED, "all stage-out items done")
                )
    return enter_states(conn, changes, now)


# -- items --------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemQuery:
    ids: Sequence[int] | None = None
    job_ids: Sequence[int] | None = None
    direction: str | None = None
    state: str | Sequence[str] | None = None
    location_alias: str | None = None
    task_id: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, values in (("id", self.ids), ("job_id", self.job_ids)):
            if values is not None:
                _match_any(clauses, params, column, list(values))
        if self.state is not None:
            _match_any(clauses, params, "state", _states(self.state, ItemState))
        if self.direction is not None:
            if self.direction not in ("in", "out"):
                raise ValidationError(
                    f"direction must be 'in' or 'out', not {self.direction!r}"
                )
            clauses.append("direction = ?")
            params.append(self.direction)
        if self.location_alias is not None:
            clauses.append("location_alias = ?")
            params.append(self.location_alias)
        if self.task_id is not None:
            clauses.append("task_id = ?")
            params.append(self.task_id)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_items(
    db: Database,
    query: ItemQuery = ItemQuery(),
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[ItemRecord]:
    where, params = query.where()
    sql = f"SELECT * FROM transfer_items{where} ORDER BY id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [limit, offset]
    return [ItemRecord.from_row(r) for r in db.connection().execute(sql, params)]


def count_items(db: Database, query: ItemQuery = ItemQuery()) -> int:
    where, params = query.where()
    return (
        db.connection()
        .execute(f"SELECT COUNT(*) FROM transfer_items{where}", params)
        .fetchone()[0]
    )


def retry_items(db: Database, query: ItemQuery, *, source: str = "operator") -> int:
    """Return failed (or credential-held) items to pending, now; return how many."""
    where, params = query.where()
    retryable = (ItemState.ERROR, ItemState.INACTIVE)
    now = time.time()
    with db.write() as conn:
        rows = conn.execute(
            f"SELECT id, job_id FROM transfer_items{where}"
            f"{' AND' if where else ' WHERE'} state IN (?, ?)",
            [*params, *retryable],
        ).fetchall()
        ids = [r["id"] for r in rows]
        for chunk in _chunks(ids, 500):
            conn.execute(
                "UPDATE transfer_items SET state = ?, retry_at = NULL, permanent = 0,"
                " task_id = NULL, updated_at = ?"
                f" WHERE id IN ({','.join('?' * len(chunk))})",
                [ItemState.PENDING, now, *chunk],
            )
        journal_many(
            conn,
            (
                (
                    "item.retry",
                    r["job_id"],
                    r["id"],
                    None,
                    f"item {r['id']} retried by {source}",
                )
                for r in rows
            ),
            now,
        )
        job_ids = sorted({r["job_id"] for r in rows})
        for chunk in _chunks(job_ids, 500):
            conn.execute(
                f"UPDATE jobs SET state_reason = 'retrying transfers', updated_at = ?"
                f" WHERE id IN ({','.join('?' * len(chunk))})",
                [now, *chunk],
            )
    return len(ids)


def item_counts(db: Database) -> dict[tuple[str, str], int]:
    """Items by (direction, state), from the counters the triggers keep."""
    rows = (
        db.connection()
        .execute(
            "SELECT direction, state, SUM(n) FROM item_counts GROUP BY direction, state"
        )
        .fetchall()
    )
    return {(r[0], r[1]): r[2] for r in rows if r[2]}


def job_counts(db: Database) -> dict[str, int]:
    rows = db.connection().execute("SELECT state, n FROM job_counts").fetchall()
    return {r[0]: r[1] for r in rows if r[1]}


def workdirs(db: Database, job_ids: Iterable[int]) -> dict[int, str]:
    """Each job's workdir, relative to the site's data/."""
    ids = sorted(set(job_ids))
    conn = db.connection()
    return {
        r[0]: r[1]
        for chunk in _chunks(ids, 500)
        for r in conn.execute(
            f"SELECT id, workdir FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
    }


def recent_journal(
    db: Database, limit: int, *, job_id: int | None = None, task_id: int | None = None
) -> list[JournalEntry]:
    """The newest journal entries (oldest first), optionally for one job or task."""
    sql, params = "SELECT * FROM journal", []
    if job_id is not None:
        sql += " WHERE job_id = ?"
        params.append(job_id)
    elif task_id is not None:
        sql += " WHERE task_id = ?"
        params.append(task_id)
    rows = (
        db.connection()
        .execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        .fetchall()
    )
    return [JournalEntry.from_row(r) for r in reversed(rows)]
