"""Pure reconciliation: what each item of a task becomes, given the backend's report.

A task's outcome is never copied onto all of its items. Each item is settled on its
own: done, failed for good (the operator must act), or back to pending after a
backoff when the failure was transient. Every attempt counts toward the retry limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from balsam_tui.backends.base import FileOutcome, RemoteState, TaskStatus
from balsam_tui.states import ItemState, TaskState
from balsam_tui.store.records import ItemRecord, TaskRecord
from balsam_tui.store.tasks import ItemUpdate

CANCEL_OPERATOR = "operator"
CANCEL_STUCK = "stuck"


@dataclass(frozen=True)
class RetryPolicy:
    limit: int = 3
    backoff: float = 30.0
    backoff_max: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1, 2, ...)."""
        return min(self.backoff * 2 ** max(failures - 1, 0), self.backoff_max)

    def after_failure(
        self, item: ItemRecord, error: str, permanent: bool, now: float
    ) -> ItemUpdate:
        failures = item.attempts + 1
        if permanent or failures > self.limit:
            if not permanent:
                error = f"{error} (gave up after {failures} attempts)"
            return ItemUpdate(
                item.id,
                item.job_id,
                ItemState.ERROR,
                error=error,
                permanent=permanent,
                attempts=failures,
            )
        return ItemUpdate(
            item.id,
            item.job_id,
            ItemState.PENDING,
            error=error,
            retry_at=now + self.delay(failures),
            attempts=failures,
            keep_task=False,
        )


@dataclass(frozen=True)
class Settlement:
    """What to write for one polled task. ``cancel`` asks the backend to stop it."""

    updates: tuple[ItemUpdate, ...] = ()
    task_fields: dict[str, Any] = field(default_factory=dict)
    cancel: bool = False

    @property
    def finished(self) -> bool:
        return "state" in self.task_fields


_FINAL = {
    RemoteState.SUCCEEDED: TaskState.SUCCEEDED,
    RemoteState.FAILED: TaskState.FAILED,
    RemoteState.CANCELLED: TaskState.CANCELLED,
}


def progress_fields(status: TaskStatus) -> dict[str, Any]:
    return {
        "remote_state": status.state.value,
        "files_done": status.files_done,
        "files_failed": status.files_failed,
        "bytes_done": status.bytes_done,
        "bytes_total": status.bytes_total,
        "bytes_per_second": status.bytes_per_second,
        "status_text": status.status_text,
    }


def reconcile(
    task: TaskRecord,
    items: Sequence[ItemRecord],
    status: TaskStatus,
    policy: RetryPolicy,
    now: float,
) -> Settlement:
    """Settle the task's still-active ``items`` against the backend's ``status``."""
    fields = progress_fields(status)
    outcomes = {o.item_id: o for o in status.outcomes}

    if status.state in (RemoteState.QUEUED, RemoteState.ACTIVE):
        if not status.stuck or task.cancel_reason:
            return Settlement(task_fields=fields)
        # Fail what cannot succeed now; the rest wait for the cancel to land.
        failed = [i for i in items if i.id in outcomes and not outcomes[i.id].ok]
        updates = tuple(_failed(i, outcomes[i.id], policy, now) for i in failed)
        fields["cancel_reason"] = CANCEL_STUCK
        return Settlement(updates=updates, task_fields=fields, cancel=True)

    final = _FINAL[status.state]
    updates = tuple(
        _settle_one(task, item, outcomes.get(item.id), status, policy, now)
        for item in items
    )
    fields.update(state=final.value, finished_at=now, error=status.fatal_error or "")
    return Settlement(updates=updates, task_fields=fields)


def _settle_one(
    task: TaskRecord,
    item: ItemRecord,
    outcome: FileOutcome | None,
    status: TaskStatus,
    policy: RetryPolicy,
    now: float,
) -> ItemUpdate:
    if outcome is not None and outcome.ok:
        return _done(item, outcome.bytes)
    if outcome is not None:
        return _failed(item, outcome, policy, now)
    if status.state == RemoteState.SUCCEEDED:
        return _done(item, 0)
    if status.state == RemoteState.FAILED:
        error = status.fatal_error or "the transfer task failed"
        return policy.after_failure(item, error, False, now)
    # Cancelled, and this item had not been reported done or failed.
    if task.cancel_reason == CANCEL_STUCK:
        return ItemUpdate(
            item.id,
            item.job_id,
            ItemState.PENDING,
            attempts=item.attempts,
            keep_task=False,
        )
    reason = (
        "cancelled by the operator"
        if task.cancel_reason == CANCEL_OPERATOR
        else "the task was cancelled at the transfer service"
    )
    return ItemUpdate(
        item.id, item.job_id, ItemState.ERROR, error=reason, attempts=item.attempts + 1
    )


def _done(item: ItemRecord, size: int) -> ItemUpdate:
    return ItemUpdate(
        item.id, item.job_id, ItemState.DONE, attempts=item.attempts + 1, bytes=size
    )


def _failed(
    item: ItemRecord, outcome: FileOutcome, policy: RetryPolicy, now: float
) -> ItemUpdate:
    return policy.after_failure(
        item, outcome.error or "transfer failed", outcome.permanent, now
    )
