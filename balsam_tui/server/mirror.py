"""The local mirror of a server-backed site: server rows in, unpushed changes out.

Role: every SQL statement that touches the ``server_*`` tables (schema V2) lives
here, so the sync reads as the steps of a conversation and the store keeps its own
rules. The engine works on the mirrored rows exactly as on its own; the triggers of
V2 mark what it changes as unpushed.

Traps:

- Mirrored rows take the server's ids when those are free locally, so the console
  and the server speak of the same job 42; when an id is taken (a store that also
  held local jobs) a new local id is used and only the mapping knows the server's.
- Job states written here are the server's verdict: they are written as they are,
  without the consequences ``store.jobs.enter_states`` would apply, because the
  server has applied them already.
- Jobs are mirrored only when one of their items is, so the console shows the jobs
  with transfer work, not every job of the site.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from balsam_tui.states import ItemState, JobState
from balsam_tui.store.db import Database
from balsam_tui.store.jobs import _chunks, journal, journal_many

FINISHED_JOB_STATES = (JobState.JOB_FINISHED, JobState.FAILED)


@dataclass(frozen=True)
class ServerJob:
    """A job as ``GET /jobs/`` gives it; only what the agent uses."""

    id: int
    workdir: str
    state: str
    app_id: int
    tags: Mapping[str, str]
    parent_ids: tuple[int, ...]
    last_update: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerJob:
        return cls(
            id=int(data["id"]),
            workdir=str(data["workdir"]),
            state=str(data["state"]),
            app_id=int(data["app_id"]),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            parent_ids=tuple(sorted(int(p) for p in data.get("parent_ids") or ())),
            last_update=str(data.get("last_update") or ""),
        )


@dataclass(frozen=True)
class ServerItem:
    """A transfer item as ``GET /transfers/`` gives it."""

    id: int
    job_id: int
    direction: str
    local_path: str
    remote_path: str
    location_alias: str
    recursive: bool
    state: str
    task_id: str
    transfer_info: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerItem:
        return cls(
            id=int(data["id"]),
            job_id=int(data["job_id"]),
            direction=str(data["direction"]),
            local_path=str(data["local_path"]),
            remote_path=str(data["remote_path"]),
            location_alias=str(data["location_alias"]),
            recursive=bool(data.get("recursive")),
            state=str(data["state"]),
            task_id=str(data.get("task_id") or ""),
            transfer_info=dict(data.get("transfer_info") or {}),
        )


@dataclass(frozen=True)
class KnownItem:
    item_id: int
    state: str
    unpushed: bool


@dataclass(frozen=True)
class Unpushed:
    """A mirrored item whose local changes the server has not accepted yet."""

    item_id: int
    server_id: int
    version: int
    state: str
    task_id: str
    transfer_info: str
    direction: str
    server_job_id: int


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def known_items(db: Database, server_ids: Iterable[int]) -> dict[int, KnownItem]:
    conn = db.connection()
    found: dict[int, KnownItem] = {}
    for chunk in _chunks(sorted(set(server_ids)), 500):
        rows = conn.execute(
            "SELECT s.server_id, s.item_id, i.state, s.version <> s.pushed_version"
            " FROM server_items s JOIN transfer_items i ON i.id = s.item_id"
            f" WHERE s.server_id IN ({_marks(chunk)})",
            chunk,
        )
        for server_id, item_id, state, unpushed in rows:
            found[server_id] = KnownItem(item_id, state, bool(unpushed))
    return found


def known_jobs(db: Database, server_ids: Iterable[int]) -> dict[int, int]:
    """Server job id -> local job id, for the mirrored ones."""
    return _known(db, "server_jobs", "job_id", server_ids)


def known_apps(db: Database, server_ids: Iterable[int]) -> dict[int, int]:
    return _known(db, "server_apps", "app_id", server_ids)


def _known(
    db: Database, table: str, column: str, server_ids: Iterable[int]
) -> dict[int, int]:
    conn = db.connection()
    found: dict[int, int] = {}
    for chunk in _chunks(sorted(set(server_ids)), 500):
        found.update(
            conn.execute(
                f"SELECT server_id, {column} FROM {table}"
                f" WHERE server_id IN ({_marks(chunk)})",
                chunk,
            ).fetchall()
        )
    return found


def add_app(db: Database, server_id: int, name: str, now: float) -> int:
    """Mirror a server app (without slots: the server checked the jobs already)."""
    with db.write() as conn:
        taken = conn.execute("SELECT 1 FROM apps WHERE name = ?", (name,)).fetchone()
        local_name = f"{name}#{server_id}" if taken else name
        app_id = conn.execute(
            "INSERT INTO apps (name, description, slots, created_at)"
            " VALUES (?, 'mirrored from the Balsam server', '{}', ?)",
            (local_name, now),
        ).lastrowid
        conn.execute(
            "INSERT INTO server_apps (app_id, server_id) VALUES (?, ?)",
            (app_id, server_id),
        )
    return app_id


def add_jobs(
    db: Database, jobs: Sequence[ServerJob], app_ids: Mapping[int, int], now: float
) -> dict[int, int]:
    """Mirror jobs; server job id -> local job id for each."""
    added: dict[int, int] = {}
    with db.write() as conn:
        for job in {job.id: job for job in jobs}.values():
            local_id = conn.execute(
                "INSERT INTO jobs (id, workdir, app_id, state, state_reason, tags,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _free_id(conn, "jobs", job.id),
                    job.workdir,
                    app_ids[job.app_id],
                    job.state,
                    "on the Balsam server",
                    json.dumps(dict(job.tags)),
                    now,
                    now,
                ),
            ).lastrowid
            conn.execute(
                "INSERT INTO server_jobs (job_id, server_id) VALUES (?, ?)",
                (local_id, job.id),
            )
            added[job.id] = local_id
        journal_many(
            conn,
            (
                (
                    "job.mirrored",
                    local_id,
                    None,
                    None,
                    f"job {local_id} mirrored from the Balsam server (server job "
                    f"{job.id}) in {job.state}",
                )
                for job in jobs
                if (local_id := added.get(job.id)) is not None
            ),
            now,
        )
    return added


def add_items(
    db: Database, items: Sequence[ServerItem], job_ids: Mapping[int, int], now: float
) -> list[int]:
    """Mirror items as pending (in flight on the server but unknown here: again)."""
    added = []
    with db.write() as conn:
        for item in items:
            local_id = conn.execute(
                "INSERT INTO transfer_items (id, job_id, slot, direction, local_path,"
                " remote_path, location_alias, recursive, state, transfer_info,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _free_id(conn, "transfer_items", item.id),
                    job_ids[item.job_id],
                    item.local_path,
                    item.direction,
                    item.local_path,
                    item.remote_path,
                    item.location_alias,
                    int(item.recursive),
                    ItemState.PENDING,
                    json.dumps(dict(item.transfer_info)),
                    now,
                ),
            ).lastrowid
            conn.execute(
                "INSERT INTO server_items (item_id, server_id) VALUES (?, ?)",
                (local_id, item.id),
            )
            added.append(local_id)
        journal_many(
            conn,
            (
                (
                    "item.mirrored",
                    job_ids[item.job_id],
                    local_id,
                    None,
                    f"item {local_id} mirrored from the Balsam server"
                    + (
                        ""
                        if item.state == ItemState.PENDING
                        else f" ({item.state} there under task {item.task_id!r}, "
                        "unknown here: moving it again)"
                    ),
                )
                for item, local_id in zip(items, added, strict=True)
            ),
            now,
        )
    return added


def _free_id(conn: sqlite3.Connection, table: str, wanted: int) -> int | None:
    taken = conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (wanted,)).fetchone()
    return None if taken else wanted


def reopen_items(db: Database, item_ids: Sequence[int], now: float) -> None:
    """Items the server made pending again after we settled them: move them again."""
    with db.write() as conn:
        for chunk in _chunks(list(item_ids), 500):
            conn.execute(
                "UPDATE transfer_items SET state = ?, task_id = NULL, retry_at = NULL,"
                f" permanent = 0, updated_at = ? WHERE id IN ({_marks(chunk)})",
                [ItemState.PENDING, now, *chunk],
            )
        for item_id in item_ids:
            journal(
                conn,
                "item.retry",
                f"item {item_id} made pending again on the Balsam server",
                item_id=item_id,
                now=now,
            )


def unpushed(db: Database, limit: int) -> list[Unpushed]:
    rows = (
        db.connection()
        .execute(
            "SELECT s.item_id, s.server_id, s.version, i.state,"
            " COALESCE(t.backend_task_id, ''), i.transfer_info, i.direction,"
            " sj.server_id"
            " FROM server_items s JOIN transfer_items i ON i.id = s.item_id"
            " JOIN server_jobs sj ON sj.job_id = i.job_id"
            " LEFT JOIN transfer_tasks t ON t.id = i.task_id"
            " WHERE s.version <> s.pushed_version AND s.gone = 0"
            " ORDER BY s.item_id LIMIT ?",
            (limit,),
        )
        .fetchall()
    )
    return [Unpushed(*row) for row in rows]


def mark_pushed(db: Database, pushed: Sequence[Unpushed]) -> None:
    """The server accepted these versions; a change made meanwhile stays unpushed."""
    with db.write() as conn:
        conn.executemany(
            "UPDATE server_items SET pushed_version = ? WHERE item_id = ?",
            [(u.version, u.item_id) for u in pushed],
        )


def mark_gone(db: Database, gone: Sequence[Unpushed], now: float) -> None:
    """Items deleted on the server: never pushed again, and said so in the journal."""
    with db.write() as conn:
        conn.executemany(
            "UPDATE server_items SET gone = 1 WHERE item_id = ?",
            [(u.item_id,) for u in gone],
        )
        journal_many(
            conn,
            (
                (
                    "item.gone",
                    None,
                    u.item_id,
                    None,
                    f"item {u.item_id} no longer exists on the Balsam server "
                    f"(server item {u.server_id})",
                )
                for u in gone
            ),
            now,
        )


def unfinished_jobs(db: Database) -> list[int]:
    """Server ids of mirrored jobs the server may still move."""
    rows = db.connection().execute(
        "SELECT s.server_id FROM server_jobs s JOIN jobs j ON j.id = s.job_id"
        f" WHERE j.state NOT IN ({_marks(FINISHED_JOB_STATES)}) ORDER BY s.server_id",
        [str(s) for s in FINISHED_JOB_STATES],
    )
    return [row[0] for row in rows]


def take_job_states(
    db: Database, states: Mapping[int, str], now: float
) -> list[tuple[int, str]]:
    """Write the server's job states into the mirror; the (server id, state) moves."""
    local = known_jobs(db, states)
    moves: list[tuple[int, int, str]] = []
    with db.write() as conn:
        for server_id, job_id in local.items():
            state = states[server_id]
            changed = conn.execute(
                "UPDATE jobs SET state = ?, state_reason = ?, updated_at = ?"
                " WHERE id = ? AND state <> ?",
                (state, "on the Balsam server", now, job_id, state),
            ).rowcount
            if changed:
                moves.append((server_id, job_id, state))
        journal_many(
            conn,
            (
                (
                    "job.state",
                    job_id,
                    None,
                    None,
                    f"job {job_id} -> {state} (on the Balsam server)",
                )
                for _, job_id, state in moves
            ),
            now,
        )
    return [(server_id, state) for server_id, _, state in moves]
