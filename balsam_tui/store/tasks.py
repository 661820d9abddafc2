"""Transfer tasks in the store: claiming batches, recording progress and outcomes.

The order of writes is the crash-safety argument. A task row with its submission id
is committed, and its items marked active, *before* any backend is called; the
backend's task id is recorded after. A process killed at any point therefore leaves
either pending items (nothing was claimed) or a task that the next run submits again
under the same submission id, which the service applies at most once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from balsam_tui.states import IN_FLIGHT_TASK_STATES, ItemState, TaskState
from balsam_tui.store.db import Database
from balsam_tui.store.jobs import _chunks, advance_after_items, journal, journal_many
from balsam_tui.store.records import ItemRecord, TaskRecord

HISTORY_KEPT = 10


@dataclass(frozen=True)
class ItemUpdate:
    """What one item becomes once its task's outcome is known."""

    item_id: int
    job_id: int
    state: str
    error: str = ""
    permanent: bool = False
    retry_at: float | None = None
    attempts: int = 0
    bytes: int = 0
    keep_task: bool = True


def pending_groups(db: Database) -> list[tuple[str, str]]:
    """(direction, alias) groups with pending items, read from the counters."""
    rows = (
        db.connection()
        .execute(
            "SELECT direction, location_alias FROM item_counts"
            " WHERE state = ? AND n > 0 ORDER BY direction, location_alias",
            (ItemState.PENDING,),
        )
        .fetchall()
    )
    return [(r[0], r[1]) for r in rows]


def pending_items(
    db: Database, direction: str, alias: str, limit: int, now: float
) -> list[ItemRecord]:
    """The oldest pending items of one group that are not waiting out a backoff."""
    rows = (
        db.connection()
        .execute(
            "SELECT * FROM transfer_items WHERE state = ? AND direction = ?"
            " AND location_alias = ? AND (retry_at IS NULL OR retry_at <= ?)"
            " ORDER BY id LIMIT ?",
            (ItemState.PENDING, direction, alias, now, limit),
        )
        .fetchall()
    )
    return [ItemRecord.from_row(r) for r in rows]


def next_retry_at(db: Database, now: float) -> float | None:
    """When the next backed-off pending item becomes due, if one is still waiting."""
    row = (
        db.connection()
        .execute(
            "SELECT MIN(retry_at) FROM transfer_items WHERE state = ? AND retry_at > ?",
            (ItemState.PENDING, now),
        )
        .fetchone()
    )
    return row[0]


def claim_batch(
    db: Database,
    *,
    protocol: str,
    alias: str,
    direction: str,
    items: Sequence[ItemRecord],
    submission_id: str,
    label_prefix: str,
    now: float,
) -> tuple[TaskRecord, list[ItemRecord]] | None:
    """Write a task and mark its items active; ``None`` if none were still pending.

    Returns the task and its items; the item records are the ones given (as read
    before the claim) when all of them were claimed, which is the usual case.
    """
    with db.write() as conn:
        task_id = conn.execute(
            "INSERT INTO transfer_tasks (protocol, location_alias, direction, state,"
            " submission_id, label, item_count, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, '', 0, ?, ?)",
            (protocol, alias, direction, TaskState.SUBMITTING, submission_id, now, now),
        ).lastrowid
        claimed = 0
        for chunk in _chunks([i.id for i in items], 500):
            claimed += conn.execute(
                "UPDATE transfer_items SET state = ?, task_id = ?, updated_at = ?"
                f" WHERE id IN ({','.join('?' * len(chunk))}) AND state = ?",
                [ItemState.ACTIVE, task_id, now, *chunk, ItemState.PENDING],
            ).rowcount
        if claimed == 0:
            conn.execute("DELETE FROM transfer_tasks WHERE id = ?", (task_id,))
            return None
        label = f"{label_prefix} task {task_id}"
        conn.execute(
            "UPDATE transfer_tasks SET label = ?, item_count = ? WHERE id = ?",
            (label, claimed, task_id),
        )
        if claimed != len(items):  # some changed meanwhile: take what was claimed
            items = _task_items(conn, task_id, (ItemState.ACTIVE,))
        journal(
            conn,
            "task.created",
            f"task {task_id}: {direction} {alias}, {claimed} item(s), "
            f"submission {submission_id}",
            task_id=task_id,
            now=now,
        )
        journal_many(
            conn,
            (
                (
                    "item.state",
                    i.job_id,
                    i.id,
                    task_id,
                    f"item {i.id} active in task {task_id}",
                )
                for i in items
            ),
            now,
        )
        task = _task(conn, task_id)
    return task, items


def _task(conn: sqlite3.Connection, task_id: int) -> TaskRecord:
    return TaskRecord.from_row(
        conn.execute("SELECT * FROM transfer_tasks WHERE id = ?", (task_id,)).fetchone()
    )


def get_task(db: Database, task_id: int) -> TaskRecord | None:
    row = (
        db.connection()
        .execute("SELECT * FROM transfer_tasks WHERE id = ?", (task_id,))
        .fetchone()
    )
    return TaskRecord.from_row(row) if row else None


def _task_items(
    conn: sqlite3.Connection, task_id: int, states: Sequence[str] | None = None
) -> list[ItemRecord]:
    sql, params = "SELECT * FROM transfer_items WHERE task_id = ?", [task_id]
    if states:
        sql += f" AND state IN ({','.join('?' * len(states))})"
        params += list(states)
    return [ItemRecord.from_row(r) for r in conn.execute(sql + " ORDER BY id", params)]


def task_items(
    db: Database, task_id: int, states: Sequence[str] | None = None
) -> list[ItemRecord]:
    return _task_items(db.connection(), task_id, states)


def in_flight_tasks(db: Database) -> list[TaskRecord]:
    rows = (
        db.connection()
        .execute(
            "SELECT * FROM transfer_tasks WHERE state IN (?, ?) ORDER BY id",
            IN_FLIGHT_TASK_STATES,
        )
        .fetchall()
    )
    return [TaskRecord.from_row(r) for r in rows]


def recent_tasks(db: Database, limit: int) -> list[TaskRecord]:
    """In-flight tasks and the most recently created finished ones, newest first."""
    rows = (
        db.connection()
        .execute("SELECT * FROM transfer_tasks ORDER BY id DESC LIMIT ?", (limit,))
        .fetchall()
    )
    return [TaskRecord.from_row(r) for r in rows]


def record_submitted(
    db: Database, task_id: int, backend_task_id: str, now: float
) -> None:
    """The service accepted the task; items held for credentials rejoin it."""
    with db.write() as conn:
        conn.execute(
            "UPDATE transfer_items SET state = ?, updated_at = ?"
            " WHERE task_id = ? AND state = ?",
            (ItemState.ACTIVE, now, task_id, ItemState.INACTIVE),
        )
        conn.execute(
            "UPDATE transfer_tasks SET state = ?, backend_task_id = ?,"
            " submitted_at = ?, submit_attempts = submit_attempts + 1,"
            " next_attempt_at = NULL, error = '',"
            " updated_at = ? WHERE id = ? AND state = ?",
            (
                TaskState.ACTIVE,
                backend_task_id,
                now,
                now,
                task_id,
                TaskState.SUBMITTING,
            ),
        )
        journal(
            conn,
            "task.submitted",
            f"task {task_id} submitted as {backend_task_id}",
            task_id=task_id,
            now=now,
        )


def record_submit_failure(
    db: Database,
    task_id: int,
    error: str,
    next_attempt_at: float,
    now: float,
    *,
    hold_items: bool = False,
) -> None:
    """A submission did not go through; it will be repeated with the same id."""
    with db.write() as conn:
        conn.execute(
            "UPDATE transfer_tasks SET submit_attempts = submit_attempts + 1,"
            " error = ?,"
            " next_attempt_at = ?, updated_at = ? WHERE id = ?",
            (error, next_attempt_at, now, task_id),
        )
        if hold_items:
            conn.execute(
                "UPDATE transfer_items SET state = ?, updated_at = ?"
                " WHERE task_id = ? AND state = ?",
                (ItemState.INACTIVE, now, task_id, ItemState.ACTIVE),
            )
        journal(
            conn,
            "task.submit_failed",
            f"task {task_id}: {error}",
            task_id=task_id,
            now=now,
        )


def record_progress(
    db: Database, task_id: int, fields: dict[str, Any], now: float
) -> None:
    if not fields:
        return
    names = sorted(fields)
    with db.write() as conn:
        conn.execute(
            f"UPDATE transfer_tasks SET {', '.join(f'{n} = ?' for n in names)},"
            " updated_at = ? WHERE id = ?",
            [*(fields[n] for n in names), now, task_id],
        )


def request_cancel(db: Database, task_id: int, reason: str, now: float) -> bool:
    with db.write() as conn:
        changed = conn.execute(
            "UPDATE transfer_tasks SET cancel_reason = ?, updated_at = ?"
            " WHERE id = ? AND state IN (?, ?) AND cancel_reason = ''",
            (reason, now, task_id, *IN_FLIGHT_TASK_STATES),
        ).rowcount
        if changed:
            journal(
                conn,
                "task.cancel",
                f"task {task_id}: cancel requested ({reason})",
                task_id=task_id,
                now=now,
            )
    return bool(changed)


def settle_items(
    db: Database,
    task_id: int,
    updates: Sequence[ItemUpdate],
    now: float,
    *,
    task_fields: dict[str, Any] | None = None,
) -> list[tuple[int, str]]:
    """Apply per-item outcomes (and the task's final fields) and move jobs on.

    Returns the jobs that changed state, with their new states.
    """
    with db.write() as conn:
        _write_item_updates(conn, task_id, updates, now)
        if task_fields:
            names = sorted(task_fields)
            conn.execute(
                f"UPDATE transfer_tasks SET {', '.join(f'{n} = ?' for n in names)},"
                " updated_at = ? WHERE id = ?",
                [*(task_fields[n] for n in names), now, task_id],
            )
            if "state" in task_fields:
                journal(
                    conn,
                    "task.finished",
                    f"task {task_id} {task_fields['state']}: "
                    f"{sum(u.state == ItemState.DONE for u in updates)} done, "
                    f"{sum(u.state == ItemState.ERROR for u in updates)} failed, "
                    f"{sum(u.state == ItemState.PENDING for u in updates)} to retry",
                    task_id=task_id,
                    now=now,
                )
        _explain_failures(conn, updates, now)
        return advance_after_items(
            conn, [u.job_id for u in updates if u.state == ItemState.DONE], now
        )


def _write_item_updates(
    conn: sqlite3.Connection, task_id: int, updates: Sequence[ItemUpdate], now: float
) -> None:
    """Write outcomes; ``transfer_info`` gains one history entry per attempt.

    The JSON is edited in SQL, so settling a batch reads no row back.
    """
    if not updates:
        return
    rows = []
    for u in updates:
        entry = {"at": round(now, 3), "task": task_id, "result": u.state}
        patch: dict[str, object] = {"attempts": u.attempts, "error": u.error or None}
        if u.error:
            entry["error"] = u.error
        if u.bytes:
            entry["bytes"] = patch["bytes"] = u.bytes
        rows.append(
            (
                u.state,
                u.error,
                int(u.permanent),
                u.retry_at,
                u.attempts,
                json.dumps(entry),
                json.dumps(patch),
                now,
                task_id if u.keep_task else None,
                u.item_id,
                task_id,
            )
        )
    # A merge patch sets attempts, error and bytes (a null error removes the key);
    # the history keeps the last HISTORY_KEPT attempts.
    conn.executemany(
        "UPDATE transfer_items SET state = ?, error = ?, permanent = ?, retry_at = ?,"
        " attempts = ?, transfer_info = json_patch(json_set(json_insert("
        f"   CASE WHEN json_array_length(transfer_info, '$.history') >= {HISTORY_KEPT}"
        "   THEN json_remove(transfer_info, '$.history[0]') ELSE transfer_info END,"
        "   '$.history', json('[]')), '$.history[#]', json(?)), ?),"
        " updated_at = ?, task_id = ? WHERE id = ? AND task_id = ?",
        rows,
    )
    journal_many(
        conn,
        (
            (
                "item.state",
                u.job_id,
                u.item_id,
                task_id,
                f"item {u.item_id} {u.state}" + (f": {u.error}" if u.error else ""),
            )
            for u in updates
        ),
        now,
    )


def _explain_failures(
    conn: sqlite3.Connection, updates: Sequence[ItemUpdate], now: float
) -> None:
    """A job held up by a failed item says why, in its state reason."""
    failed = [u for u in updates if u.state == ItemState.ERROR]
    conn.executemany(
        "UPDATE jobs SET state_reason = ("
        "  SELECT 'slot ' || slot || ': ' || ? FROM transfer_items WHERE id = ?"
        "), updated_at = ? WHERE id = ?",
        [(u.error or "transfer failed", u.item_id, now, u.job_id) for u in failed],
    )


def items_of_tasks(
    db: Database, task_ids: Sequence[int]
) -> dict[int, list[ItemRecord]]:
    result: dict[int, list[ItemRecord]] = {t: [] for t in task_ids}
    conn = db.connection()
    for chunk in _chunks(list(task_ids), 500):
        rows = conn.execute(
            "SELECT * FROM transfer_items WHERE task_id IN"
            f" ({','.join('?' * len(chunk))}) AND state IN (?, ?) ORDER BY id",
            [*chunk, ItemState.ACTIVE, ItemState.INACTIVE],
        ).fetchall()
        for row in rows:
            result[row["task_id"]].append(ItemRecord.from_row(row))
    return result
