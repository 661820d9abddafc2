"""The transfer engine: one loop that polls, reconciles, plans and submits batches.

``Engine.run`` is the loop; ``run_cycle`` is one turn of it. Everything else that
touches the engine from outside goes through its command methods (``pause``,
``retry_items``, ``cancel_task``...), which only queue a command and wake the loop,
so they are safe from any thread; the loop applies them at the start of its next
cycle and journals them. Displays read the immutable ``snapshot`` or subscribe to it.

The loop sleeps until the next service period, but wakes at once when a backend
finishes a task, when a command arrives, or when another process commits to the
store (new jobs from the CLI, a compute side marking jobs POSTPROCESSED): SQLite's
``data_version`` tells it so for the price of one PRAGMA.

The engine must outlive anything one item, task or response can do to it: each step
of a cycle is guarded, logged and retried on the next cycle.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from balsam_tui.backends.base import (
    Backend,
    BackendError,
    CredentialsRequired,
    FileCopy,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
)
from balsam_tui.backends.registry import BackendUnavailable, make_backend
from balsam_tui.engine.lock import SiteLock
from balsam_tui.engine.planning import (
    Allotment,
    Group,
    PathProblem,
    allot_batches,
    plan_label,
    resolve_copy,
)
from balsam_tui.engine.reconcile import (
    CANCEL_OPERATOR,
    RetryPolicy,
    Settlement,
    reconcile,
)
from balsam_tui.engine.snapshot import EngineSnapshot, EngineStatus, _frozen
from balsam_tui.locations import inside
from balsam_tui.settings import SettingsError, SiteSettings, load_settings
from balsam_tui.site import Site
from balsam_tui.states import ItemState, TaskState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery
from balsam_tui.store.records import ItemRecord, TaskRecord
from balsam_tui.store.tasks import ItemUpdate

if TYPE_CHECKING:
    from balsam_tui.server.sync import ServerSync

log = logging.getLogger(__name__)

SNAPSHOT_TASKS = 40
SNAPSHOT_EVENTS = 60
SNAPSHOT_MIN_INTERVAL = 0.25
WAKE_CHECK_INTERVAL = 0.2
CREDENTIALS_RECHECK = 60.0
SUBMIT_BACKOFF = (2.0, 300.0)

BackendFactory = Callable[[str, object, Site, Callable[[], None]], Backend]
SnapshotListener = Callable[[EngineSnapshot], None]


@dataclass(frozen=True)
class _Command:
    kind: str
    args: tuple = ()
    source: str = "operator"


class Engine:
    """Moves the transfer items of one site; see the module docstring."""

    def __init__(
        self,
        site: Site,
        *,
        settings: SiteSettings | None = None,
        backend_factory: BackendFactory = make_backend,
        clock: Callable[[], float] = time.time,
        sync: ServerSync | None = None,
    ) -> None:
        self.site = site
        self.db = Database(site.store_path)
        self._settings = (
            settings if settings is not None else load_settings(site.settings_path)
        )
        self._backend_factory = backend_factory
        self._clock = clock
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listeners: list[SnapshotListener] = []
        self._listeners_lock = threading.Lock()

        self._paused = False
        self._backends: dict[str, Backend] = {}
        self._stale_backends: set[str] = set()
        self._backend_problems: dict[str, str] = {}
        self._not_before: dict[str, float] = {}
        self._last_poll: dict[str, float] = {}
        self._poll_failures: dict[str, int] = {}
        self._cancel_sent: set[int] = set()
        self._settings_problem = ""
        self._turn: Group | None = None
        self._cycle = 0
        self._data_version: int | None = None
        self._last_publish = 0.0
        self._label = plan_label(site.name)
        self._snapshot = EngineSnapshot(
            taken_at=clock(), site=site.name, status=EngineStatus.STARTING
        )
        # Server mode (balsam_tui/server): the site's items live on a Balsam server
        # and the store is the agent's mirror and journal, pulled before each cycle
        # and pushed after it. The sync swallows the server's failures itself.
        self._sync = sync if sync is not None else self._server_sync()

    def _server_sync(self) -> ServerSync | None:
        if self._settings.server is None:
            return None
        # Imported only here: a site served from its own store never loads httpx.
        from balsam_tui.server.sync import sync_for_settings

        return sync_for_settings(self.site, self._settings, self.db, self._clock)

    # -- what displays read ---------------------------------------------------------

    @property
    def snapshot(self) -> EngineSnapshot:
        return self._snapshot

    @property
    def settings(self) -> SiteSettings:
        return self._settings

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call ``listener`` (on the engine's thread) with every new snapshot."""
        with self._listeners_lock:
            self._listeners.append(listener)

    # -- commands: safe from any thread ---------------------------------------------

    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def retry_items(self, item_ids: Sequence[int]) -> None:
        self._command("retry_items", (tuple(item_ids),))

    def retry_jobs(self, job_ids: Sequence[int]) -> None:
        self._command("retry_jobs", (tuple(job_ids),))

    def retry_all_errors(self) -> None:
        self._command("retry_all")

    def cancel_task(self, task_id: int) -> None:
        self._command("cancel_task", (task_id,))

    def reload_settings(self) -> None:
        self._command("reload")

    def credentials_changed(self) -> None:
        """A new login happened: let held work try again at once."""
        self._command("credentials")

    def run_now(self) -> None:
        self._command("run_now")

    def stop(self) -> None:
        """Ask the loop to finish its cycle and return; returns at once."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _command(self, kind: str, args: tuple = (), source: str = "operator") -> None:
        self._commands.put(_Command(kind, args, source))
        self._wake.set()

    # -- the loop -------------------------------------------------------------------

    def run(self, *, exit_when_idle: bool = False) -> None:
        """Run cycles until ``stop()`` (or, with ``exit_when_idle``, until idle)."""
        lock = SiteLock(self.site.root)
        lock.acquire()
        log.info("engine started for site %s", self.site.root)
        try:
            while not self._stop.is_set():
                snapshot = self.run_cycle(force_publish=exit_when_idle)
                if exit_when_idle and self.is_idle(snapshot):
                    log.info("nothing pending or in flight: stopping")
                    break
                if not self._wake.is_set() and snapshot.cycle != self._cycle:
                    # The throttle skipped this cycle's picture and the loop is about
                    # to sleep: publish it now, or displays would lag a whole period.
                    self._publish(self._clock(), force=True)
                self._wait(self._next_timeout())
        finally:
            self.close()
            lock.release()

    def run_cycle(self, *, force_publish: bool = True) -> EngineSnapshot:
        """One cycle: commands, poll and settle, plan and submit, publish."""
        started = self._clock()
        self._cycle += 1
        self._apply_commands()
        if self._sync is not None:  # server mode
            self._guarded("pull", self._sync.pull)
        if self._settings.transfers is not None:
            self._guarded("poll", self._poll_and_settle)
            if not self._paused:
                self._guarded("submit", self._plan_and_submit)
        if self._sync is not None:  # server mode
            self._guarded("push", self._sync.push)
        return self._publish(started, force=force_publish)

    def is_idle(self, snapshot: EngineSnapshot | None = None) -> bool:
        """Nothing pending, active or in flight (errors wait for an operator)."""
        snapshot = snapshot or self._snapshot
        if self._settings.transfers is None:
            return True
        busy = snapshot.items(state=ItemState.PENDING) + snapshot.items(
            state=ItemState.ACTIVE
        )
        return busy == 0 and not snapshot.tasks_in_flight

    def close(self) -> None:
        for protocol, backend in list(self._backends.items()):
            try:
                backend.close()
            except Exception:
                log.exception("closing the %s backend failed", protocol)
        self._backends.clear()
        if self._sync is not None:  # server mode
            self._sync.close()
        self._snapshot = _replace_status(self._snapshot, EngineStatus.STOPPED)
        self._notify(self._snapshot)
        log.info("engine stopped")
        self.db.close()

    def _guarded(self, step: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            # Unexpected by definition: keep the traceback for the person who fixes it.
            log.exception(
                "the %s step of cycle %d failed; retrying next cycle", step, self._cycle
            )

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        if self._data_version is None:
            self._data_version = self.db.data_version()
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(min(remaining, WAKE_CHECK_INTERVAL)):
                self._wake.clear()
                return
            version = self.db.data_version()
            if version != self._data_version:
                self._data_version = version
                return

    def _next_timeout(self) -> float:
        transfers = self._settings.transfers
        if transfers is None:
            return 5.0
        now = self._clock()
        later = [*self._not_before.values(), task_store.next_retry_at(self.db, now)]
        for task in task_store.in_flight_tasks(self.db):
            if task.state == TaskState.SUBMITTING:
                later.append(task.next_attempt_at)
        # Only moments still ahead count: one already past (a backoff over, a retry
        # due while every slot is taken) must not turn the wait into a busy loop.
        ahead = [t for t in later if t is not None and t > now]
        return min([transfers.service_period, *(t - now for t in ahead)])

    # -- commands -------------------------------------------------------------------

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply(command)
            except Exception as exc:  # a bad id from a script must not stop the engine
                log.warning("command %s failed: %s", command.kind, exc)

    def _apply(self, command: _Command) -> None:
        kind, args, now = command.kind, command.args, self._clock()
        if kind == "pause" and not self._paused:
            self._paused = True
            self._journal("command.pause", "engine paused: no new submissions")
        elif kind == "resume" and self._paused:
            self._paused = False
            self._journal("command.resume", "engine resumed")
        elif kind == "retry_items":
            n = job_store.retry_items(
                self.db, ItemQuery(ids=args[0]), source=command.source
            )
            self._journal("command.retry", f"retry of {n} item(s) requested")
        elif kind == "retry_jobs":
            n = job_store.retry_items(
                self.db, ItemQuery(job_ids=args[0]), source=command.source
            )
            self._journal(
                "command.retry", f"retry of {n} item(s) of {len(args[0])} job(s)"
            )
        elif kind == "retry_all":
            n = job_store.retry_items(
                self.db, ItemQuery(state=ItemState.ERROR), source=command.source
            )
            self._journal("command.retry", f"retry of all {n} failed item(s)")
        elif kind == "cancel_task":
            if task_store.request_cancel(self.db, args[0], CANCEL_OPERATOR, now):
                log.info("task %d: cancel requested by the operator", args[0])
            else:
                log.warning("task %s is not in flight; nothing to cancel", args[0])
        elif kind == "reload":
            self._reload_settings()
        elif kind == "credentials":
            self._backend_problems.clear()
            self._not_before.clear()
            for task in task_store.in_flight_tasks(self.db):
                if task.state == TaskState.SUBMITTING:
                    task_store.record_submit_failure(
                        self.db, task.id, task.error, now, now
                    )
            self._journal("command.credentials", "new credentials: held work resumes")
        elif kind == "run_now":
            self._not_before.clear()
            self._journal("command.run_now", "cycle run now, backoffs cleared")

    def _journal(self, kind: str, message: str) -> None:
        log.info("%s", message)
        with self.db.write() as conn:
            job_store.journal(conn, kind, message, now=self._clock())

    def _reload_settings(self) -> None:
        try:
            fresh = load_settings(self.site.settings_path)
        except SettingsError as exc:
            self._settings_problem = (
                f"settings reload refused, old settings kept: {exc}"
            )
            log.error("%s", self._settings_problem)
            return
        old = self._settings.transfers
        self._settings = fresh
        self._settings_problem = ""
        if fresh.transfers != old:
            # Rebuilt once their tasks in flight are settled, with the new values.
            self._stale_backends.update(self._backends)
        self._backend_problems.clear()
        self._journal("settings.reloaded", f"settings reloaded from {fresh.path}")

    # -- backends -------------------------------------------------------------------

    def _backend(self, protocol: str) -> Backend | None:
        if protocol in self._stale_backends and not any(
            t.protocol == protocol for t in task_store.in_flight_tasks(self.db)
        ):
            # Settings changed: rebuild, but only once nothing of it is in flight.
            self._stale_backends.discard(protocol)
            stale = self._backends.pop(protocol, None)
            if stale is not None:
                stale.close()
        backend = self._backends.get(protocol)
        if backend is None:
            try:
                backend = self._backend_factory(
                    protocol, self._settings.transfers, self.site, self._wake.set
                )
            except BackendUnavailable as exc:
                self._backend_problems[protocol] = str(exc)
                return None
            self._backends[protocol] = backend
        return backend

    def _held(self, protocol: str) -> bool:
        """Whether work for this protocol waits (throttled, or no credentials)."""
        return self._clock() < self._not_before.get(protocol, 0.0)

    # -- step 1 and 2: poll and settle ----------------------------------------------

    def _poll_and_settle(self) -> None:
        tasks = task_store.in_flight_tasks(self.db)
        by_protocol: dict[str, list[TaskRecord]] = {}
        for task in tasks:
            by_protocol.setdefault(task.protocol, []).append(task)
        for protocol, group in by_protocol.items():
            backend = self._backend(protocol)
            if backend is None:
                continue
            self._send_cancels(backend, group)
            if self._held(protocol):
                continue
            self._resubmit_due(
                backend, [t for t in group if t.state == TaskState.SUBMITTING]
            )
            active = [t for t in group if t.state == TaskState.ACTIVE]
            interval = getattr(backend, "min_poll_interval", 0.0)
            if (
                active
                and self._clock() - self._last_poll.get(protocol, 0.0) >= interval
            ):
                self._last_poll[protocol] = self._clock()
                self._poll(protocol, backend, active)

    def _send_cancels(self, backend: Backend, tasks: list[TaskRecord]) -> None:
        for task in tasks:
            if not task.cancel_reason or task.id in self._cancel_sent:
                continue
            if task.state == TaskState.SUBMITTING:
                # Never accepted by the service as far as we know: settle it here.
                items = task_store.task_items(
                    self.db, task.id, (ItemState.ACTIVE, ItemState.INACTIVE)
                )
                status = TaskStatus(
                    task.id, RemoteState.CANCELLED, status_text="cancelled"
                )
                self._settle(task, items, status)
                continue
            try:
                backend.cancel(_in_flight(task))
            except BackendError as exc:
                log.warning("task %d: cancel failed, will try again: %s", task.id, exc)
                continue
            self._cancel_sent.add(task.id)

    def _resubmit_due(self, backend: Backend, tasks: list[TaskRecord]) -> None:
        now = self._clock()
        for task in tasks:
            if task.next_attempt_at is not None and task.next_attempt_at > now:
                continue
            if task.cancel_reason:
                continue
            items = task_store.task_items(
                self.db, task.id, (ItemState.ACTIVE, ItemState.INACTIVE)
            )
            if task.submit_attempts:
                log.info(
                    "task %d: submitting again (attempt %d) under submission %s",
                    task.id,
                    task.submit_attempts + 1,
                    task.submission_id,
                )
            else:
                log.info(
                    "task %d: submission interrupted earlier; submitting under "
                    "the same submission id %s",
                    task.id,
                    task.submission_id,
                )
            self._submit(backend, task, items)

    def _poll(self, protocol: str, backend: Backend, tasks: list[TaskRecord]) -> None:
        try:
            statuses = backend.poll([self._in_flight_with_spec(t) for t in tasks])
        except CredentialsRequired as exc:
            self._credentials_needed(protocol, exc)
            return
        except BackendError as exc:
            self._backoff(protocol, exc, "polling")
            return
        self._poll_failures.pop(protocol, None)
        # Items are read only for tasks with news for them; a task still running
        # costs no more than its progress update.
        settling = [
            t.id for t in tasks if t.id in statuses and _needs_items(statuses[t.id])
        ]
        items_by_task = task_store.items_of_tasks(self.db, settling)
        for task in tasks:
            status = statuses.get(task.id)
            if status is None:
                continue
            items = items_by_task.get(task.id, [])
            try:
                if status.state == RemoteState.LOST and task.cancel_reason:
                    # Gone, and no longer wanted: settle it as cancelled.
                    self._settle(
                        task, items, replace(status, state=RemoteState.CANCELLED)
                    )
                elif status.state == RemoteState.LOST:
                    log.warning(
                        "task %d is unknown to the %s backend (restarted?); "
                        "submitting it again under the same submission id",
                        task.id,
                        protocol,
                    )
                    self._submit(backend, task, items)
                elif self._settle(task, items, status):
                    fresh = task_store.get_task(self.db, task.id)
                    self._send_cancels(backend, [fresh] if fresh else [])
            except Exception:
                log.exception(
                    "task %d: settling failed; will retry next cycle", task.id
                )

    def _in_flight_with_spec(self, task: TaskRecord) -> InFlightTask:
        def load_spec() -> TaskSpec:
            items = task_store.task_items(
                self.db, task.id, (ItemState.ACTIVE, ItemState.INACTIVE)
            )
            return self._spec(task, items)[0]

        return InFlightTask(
            task.id, task.backend_task_id, task.submission_id, load_spec
        )

    def _settle(
        self, task: TaskRecord, items: list[ItemRecord], status: TaskStatus
    ) -> bool:
        """Write what the status means for the task's items; true if it must cancel."""
        transfers = self._settings.transfers
        policy = RetryPolicy(
            transfers.retry_limit, transfers.retry_backoff, transfers.retry_backoff_max
        )
        now = self._clock()
        settlement = reconcile(task, items, status, policy, now)
        if not settlement.updates and not settlement.finished and not settlement.cancel:
            if _progress_changed(task, settlement):
                task_store.record_progress(
                    self.db, task.id, settlement.task_fields, now
                )
            return False
        moves = task_store.settle_items(
            self.db,
            task.id,
            settlement.updates,
            now,
            task_fields=settlement.task_fields,
        )
        if settlement.cancel:
            self._journal(
                "task.stuck",
                f"task {task.id} is stuck ({status.status_text}): failing "
                f"{len(settlement.updates)} item(s), cancelling it, and sending the "
                "rest again in a new task",
            )
        if settlement.finished:
            self._cancel_sent.discard(task.id)
            _log_finished(task, settlement)
        _log_moves(moves)
        return settlement.cancel

    def _credentials_needed(self, protocol: str, exc: CredentialsRequired) -> None:
        message = str(exc)
        if self._backend_problems.get(protocol) != message:
            log.error("%s", message)
        self._backend_problems[protocol] = message
        self._not_before[protocol] = self._clock() + CREDENTIALS_RECHECK

    def _backoff(self, protocol: str, exc: BackendError, doing: str) -> None:
        failures = self._poll_failures.get(protocol, 0) + 1
        self._poll_failures[protocol] = failures
        delay = exc.retry_after or min(2.0 * 2 ** (failures - 1), 120.0)
        self._not_before[protocol] = self._clock() + delay
        log.warning(
            "%s %s tasks failed (%s); trying again in %.0f s",
            doing,
            protocol,
            exc,
            delay,
        )

    # -- steps 5 and 6: plan and submit ---------------------------------------------

    def _plan_and_submit(self) -> None:
        transfers = self._settings.transfers
        in_flight = len(task_store.in_flight_tasks(self.db))
        free = transfers.max_concurrent_transfers - in_flight
        if free <= 0:
            return
        now = self._clock()
        candidates: dict[Group, list[ItemRecord]] = {}
        budget = transfers.num_items_query_limit
        for direction, alias in task_store.pending_groups(self.db):
            if budget <= 0:
                break
            location = self._settings.locations.get(alias)
            if location is not None and self._held(location.protocol):
                continue
            limit = min(budget, transfers.transfer_batch_size * free)
            items = task_store.pending_items(self.db, direction, alias, limit, now)
            if items:
                candidates[(direction, alias)] = items
                budget -= len(items)
        allotments = allot_batches(
            {g: len(v) for g, v in candidates.items()},
            free_slots=free,
            batch_size=transfers.transfer_batch_size,
            query_limit=transfers.num_items_query_limit,
            after=self._turn,
        )
        taken: dict[Group, int] = {}
        for allotment in allotments:
            start = taken.get(allotment.group, 0)
            batch = candidates[allotment.group][start : start + allotment.size]
            taken[allotment.group] = start + allotment.size
            self._turn = allotment.group
            self._submit_batch(allotment, batch)

    def _submit_batch(self, allotment: Allotment, batch: list[ItemRecord]) -> None:
        direction, alias = allotment.group
        location = self._settings.locations.get(alias)
        if location is None:
            self._fail_unknown_alias(alias, batch)
            return
        backend = self._backend(location.protocol)
        if backend is None:
            return
        try:
            submission_id = backend.new_submission_id()
        except CredentialsRequired as exc:
            self._credentials_needed(location.protocol, exc)
            return
        except BackendError as exc:
            self._backoff(location.protocol, exc, "getting a submission id for")
            return
        claimed = task_store.claim_batch(
            self.db,
            protocol=location.protocol,
            alias=alias,
            direction=direction,
            items=batch,
            submission_id=submission_id,
            label_prefix=self._label,
            now=self._clock(),
        )
        if claimed is None:
            return
        task, items = claimed
        self._submit(backend, task, items)

    def _fail_unknown_alias(self, alias: str, batch: list[ItemRecord]) -> None:
        message = f"location alias {alias!r} is not in the site's transfer_locations"
        now = self._clock()
        updates = [
            ItemUpdate(
                i.id,
                i.job_id,
                ItemState.ERROR,
                error=message,
                permanent=True,
                attempts=i.attempts + 1,
                keep_task=False,
            )
            for i in batch
        ]
        with self.db.write() as conn:
            # These items never joined a task: write them directly.
            for u in updates:
                conn.execute(
                    "UPDATE transfer_items SET state = ?, error = ?, permanent = 1,"
                    " attempts = ?, updated_at = ? WHERE id = ? AND state = ?",
                    (u.state, u.error, u.attempts, now, u.item_id, ItemState.PENDING),
                )
            job_store.journal_many(
                conn,
                (
                    (
                        "item.state",
                        u.job_id,
                        u.item_id,
                        None,
                        f"item {u.item_id} error: {message}",
                    )
                    for u in updates
                ),
                now,
            )
        log.error("%d item(s) refer to %s", len(batch), message)

    def _submit(
        self, backend: Backend, task: TaskRecord, items: list[ItemRecord]
    ) -> None:
        spec, problems = self._spec(task, items)
        now = self._clock()
        if problems:
            updates = [
                ItemUpdate(
                    p.item_id,
                    _job_of(items, p.item_id),
                    ItemState.ERROR,
                    error=p.reason,
                    permanent=True,
                    attempts=1,
                )
                for p in problems
            ]
            fields = None
            if not spec.files:
                fields = {
                    "state": TaskState.FAILED.value,
                    "finished_at": now,
                    "error": "no file of the batch may be copied",
                    "status_text": "refused",
                }
            task_store.settle_items(self.db, task.id, updates, now, task_fields=fields)
            for p in problems:
                log.warning("item %d refused: %s", p.item_id, p.reason)
            if not spec.files:
                return
        try:
            backend_task_id = backend.submit(spec)
        except CredentialsRequired as exc:
            self._credentials_needed(task.protocol, exc)
            task_store.record_submit_failure(
                self.db,
                task.id,
                str(exc),
                now + CREDENTIALS_RECHECK,
                now,
                hold_items=True,
            )
            return
        except BackendError as exc:
            if not exc.transient:
                self._fail_submission(task, spec, str(exc))
                return
            delay = exc.retry_after or min(
                SUBMIT_BACKOFF[0] * 2**task.submit_attempts, SUBMIT_BACKOFF[1]
            )
            task_store.record_submit_failure(
                self.db, task.id, str(exc), now + delay, now
            )
            log.warning(
                "task %d: submission failed (%s); repeating it in %.0f s "
                "under the same submission id",
                task.id,
                exc,
                delay,
            )
            return
        self._backend_problems.pop(task.protocol, None)
        task_store.record_submitted(self.db, task.id, backend_task_id, now)
        log.info(
            "task %d submitted: %s %s, %d file(s), %s",
            task.id,
            task.direction,
            task.location_alias,
            len(spec.files),
            backend_task_id,
        )

    def _fail_submission(self, task: TaskRecord, spec: TaskSpec, error: str) -> None:
        now = self._clock()
        items = task_store.task_items(
            self.db, task.id, (ItemState.ACTIVE, ItemState.INACTIVE)
        )
        updates = [
            ItemUpdate(
                i.id,
                i.job_id,
                ItemState.ERROR,
                error=error,
                permanent=True,
                attempts=i.attempts + 1,
            )
            for i in items
        ]
        task_store.settle_items(
            self.db,
            task.id,
            updates,
            now,
            task_fields={
                "state": TaskState.FAILED.value,
                "finished_at": now,
                "error": error,
                "status_text": "refused by the service",
            },
        )
        log.error(
            "task %d refused by the %s service: %s", task.id, task.protocol, error
        )

    def _spec(
        self, task: TaskRecord, items: Sequence[ItemRecord]
    ) -> tuple[TaskSpec, list[PathProblem]]:
        location = self._settings.locations.get(task.location_alias)
        workdirs = job_store.workdirs(self.db, [i.job_id for i in items])
        data_dir = str(self.site.data_dir)
        workdir_check = _WorkdirCheck(data_dir)
        files: list[FileCopy] = []
        problems: list[PathProblem] = []
        for item in items:
            if location is None:
                problems.append(
                    PathProblem(
                        item.id,
                        f"location alias "
                        f"{task.location_alias!r} is no longer in transfer_locations",
                    )
                )
                continue
            workdir = f"{data_dir}/{workdirs[item.job_id]}"
            resolved = resolve_copy(item, workdir, location)
            if isinstance(resolved, FileCopy) and task.direction == "in":
                resolved = workdir_check.problem(item.id, workdir) or resolved
            if isinstance(resolved, PathProblem):
                problems.append(resolved)
            else:
                files.append(resolved)
        spec = TaskSpec(
            task_id=task.id,
            submission_id=task.submission_id,
            label=task.label,
            direction=task.direction,
            location=location,
            files=tuple(files),
        )
        return spec, problems

    # -- publishing -----------------------------------------------------------------

    def _publish(self, started: float, *, force: bool) -> EngineSnapshot:
        now = self._clock()
        if not force and now - self._last_publish < SNAPSHOT_MIN_INTERVAL:
            return self._snapshot
        self._last_publish = now
        with self.db.read():
            tasks = {t.id: t for t in task_store.recent_tasks(self.db, SNAPSHOT_TASKS)}
            for task in task_store.in_flight_tasks(self.db):
                tasks.setdefault(task.id, task)
            snapshot = EngineSnapshot(
                taken_at=now,
                site=self.site.name,
                status=self._status(),
                cycle=self._cycle,
                cycle_seconds=now - started,
                item_counts=_frozen(job_store.item_counts(self.db)),
                job_counts=_frozen(job_store.job_counts(self.db)),
                tasks=tuple(sorted(tasks.values(), key=lambda t: -t.id)),
                events=tuple(job_store.recent_journal(self.db, SNAPSHOT_EVENTS)),
                problems=self._problems(),
                bytes_per_second=sum(
                    t.bytes_per_second for t in tasks.values() if t.finished_at is None
                ),
            )
        self._snapshot = snapshot
        self._notify(snapshot)
        return snapshot

    def _notify(self, snapshot: EngineSnapshot) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("a snapshot listener failed")

    def _status(self) -> EngineStatus:
        if self._settings.transfers is None:
            return EngineStatus.TRANSFERS_OFF
        return EngineStatus.PAUSED if self._paused else EngineStatus.RUNNING

    def _problems(self) -> tuple[str, ...]:
        problems = []
        if self._settings.transfers is None:
            problems.append("transfers are off: settings.yml has `transfers: null`")
        if self._settings_problem:
            problems.append(self._settings_problem)
        if self._sync is not None and self._sync.problem:  # server mode
            problems.append(self._sync.problem)
        problems.extend(
            f"{protocol}: {message}"
            for protocol, message in sorted(self._backend_problems.items())
        )
        return tuple(problems)


def _in_flight(task: TaskRecord) -> InFlightTask:
    return InFlightTask(task.id, task.backend_task_id, task.submission_id)


def _job_of(items: Iterable[ItemRecord], item_id: int) -> int:
    return next(i.job_id for i in items if i.id == item_id)


class _WorkdirCheck:
    """Refuses workdirs that resolve outside data/ (through a symlink, say).

    A workdir need not exist yet: the backend creates it under the resolved path,
    and ``realpath`` resolves whatever part of it already exists. Jobs' workdirs
    share parents, so each parent is resolved once per batch.
    """

    def __init__(self, data_dir: str) -> None:
        self.real_data_dir = os.path.realpath(data_dir)
        self._parents: dict[str, str] = {}

    def problem(self, item_id: int, workdir: str) -> PathProblem | None:
        parent, name = os.path.split(workdir)
        real_parent = self._parents.get(parent)
        if real_parent is None:
            real_parent = self._parents[parent] = os.path.realpath(parent)
        real = os.path.join(real_parent, name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if not inside(real, self.real_data_dir):
            return PathProblem(
                item_id, f"workdir {workdir} resolves outside the site's data/"
            )
        return None


def _needs_items(status: TaskStatus) -> bool:
    return status.stuck or status.state not in (RemoteState.QUEUED, RemoteState.ACTIVE)


def _progress_changed(task: TaskRecord, settlement: Settlement) -> bool:
    return any(getattr(task, k, None) != v for k, v in settlement.task_fields.items())


def _replace_status(snapshot: EngineSnapshot, status: EngineStatus) -> EngineSnapshot:
    return replace(snapshot, status=status)


def _log_finished(task: TaskRecord, settlement: Settlement) -> None:
    done = sum(u.state == ItemState.DONE for u in settlement.updates)
    failed = sum(u.state == ItemState.ERROR for u in settlement.updates)
    again = sum(u.state == ItemState.PENDING for u in settlement.updates)
    state = settlement.task_fields["state"]
    level = logging.INFO if not failed else logging.WARNING
    log.log(
        level,
        "task %d %s: %d done, %d failed, %d to retry",
        task.id,
        state,
        done,
        failed,
        again,
    )
    for update in settlement.updates:
        if update.state == ItemState.ERROR:
            log.warning(
                "item %d (job %d) failed: %s",
                update.item_id,
                update.job_id,
                update.error,
            )


def _log_moves(moves: Iterable[tuple[int, str]], shown: int = 12) -> None:
    """One line per new state, naming the jobs (the journal keeps every one)."""
    by_state: dict[str, list[int]] = {}
    for job_id, state in moves:
        by_state.setdefault(state, []).append(job_id)
    for state, job_ids in by_state.items():
        named = ", ".join(map(str, job_ids[:shown]))
        more = f" and {len(job_ids) - shown} more" if len(job_ids) > shown else ""
        noun = "job" if len(job_ids) == 1 else "jobs"
        log.info("%s %s%s -> %s", noun, named, more, state)
