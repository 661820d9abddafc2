"""Globus Transfer as the stand-in plays it: tasks that really copy files.

Role: the state machine behind the stand-in's ``/v0.10/*`` routes. Endpoints are
local directories; a Globus path ``/a/b`` on endpoint E is ``<dir of E>/a/b``. A
task is scanned on its first step (recursive items are expanded, existing files
counted), then copies one file per step, atomically (temporary name, then rename).
``advance()`` performs due steps; ``TransferWorker`` calls it from a thread, and a
test may call it directly with a fake clock.

Behaviour copied from the real service, because the engine must cope with it:

- At most ``active_task_limit`` ACTIVE tasks per owner make progress; the others
  stay ACTIVE with ``nice_status`` "Queued". A stuck task keeps its slot.
- With ``skip_source_errors``, a missing or unreadable source is skipped, listed
  by ``skipped_errors`` and counted in ``subtasks_skipped_errors`` (``files_skipped``
  counts files left alone by ``sync_level``, as in the real task document). Without
  it the task stays ACTIVE, retrying, with the error as ``nice_status`` and one error
  event per attempt, until its deadline (then FAILED, fatal_error EXPIRED) or a
  cancel (FAILED, fatal_error CANCELED). ``nice_status`` is null once a task ends.
- A submission id is applied once per owner; a repeat answers "Duplicate" with the
  first task's id.
- ``successful_transfers`` lists the files a task really copied (not directories,
  not files left alone by ``sync_level``, not skipped errors), in the order they
  were copied, and only once the task has ended: for an ACTIVE or INACTIVE task it
  answers 400 ``ClientError.BadRequest``, the code Globus answers (in other words).

Trap: a step, file copy included, runs under the service lock, so HTTP answers wait
for it. Fine for the small files of tests; do not point it at large data.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from balsam_tui.testing.standin_auth import Identity, data_access_scope

log = logging.getLogger(__name__)

SKIPPABLE_ERRORS = frozenset({"FILE_NOT_FOUND", "PERMISSION_DENIED", "AMBIGUOUS_PATH"})
DEFAULT_DEADLINE = datetime.timedelta(hours=24)
TASK_LIST_DEFAULT_LIMIT = 10
TASK_LIST_MAX_LIMIT = 1000
SKIPPED_ERRORS_PAGE_SIZE = 100
SUCCESSFUL_TRANSFERS_PAGE_SIZE = 100

_ERROR_DESCRIPTIONS = {
    "FILE_NOT_FOUND": "file not found",
    "PERMISSION_DENIED": "permission denied",
    "IS_A_DIRECTORY": "is a directory",
    "NOT_A_DIRECTORY": "not a directory",
    "NO_SPACE_LEFT": "no space left on device",
    "UNKNOWN": "unknown error",
}


class TransferRefusal(Exception):
    """A Transfer request refused; becomes ``{code, message, ...extra}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class SubmitOutcome:
    task_id: str
    submission_id: str
    duplicate: bool


@dataclass
class _Unit:
    """One path to move: a file, or (before the scan) a recursive item."""

    source_path: str
    destination_path: str
    source: Path
    destination: Path
    recursive: bool
    counted: bool = False


@dataclass
class _Task:
    task_id: str
    submission_id: str
    owner: Identity
    label: str | None
    source_endpoint_id: str
    destination_endpoint_id: str
    units: list[_Unit]
    sync_level: int | None
    verify_checksum: bool
    encrypt_data: bool
    skip_source_errors: bool
    preserve_timestamp: bool
    fail_on_quota_errors: bool
    delete_destination_extra: bool
    request_time: float
    deadline: float
    next_step_at: float
    status: str = "ACTIVE"
    scanned: bool = False
    completion_time: float | None = None
    fatal_error: dict[str, str] | None = None
    stuck: tuple[str, str] | None = None
    files: int = 0
    directories: int = 0
    files_transferred: int = 0
    files_skipped: int = 0
    bytes_transferred: int = 0
    bytes_checksummed: int = 0
    faults: int = 0
    subtasks_total: int = 0
    subtasks_succeeded: int = 0
    subtasks_canceled: int = 0
    subtasks_expired: int = 0
    subtasks_skipped_errors: int = 0
    skipped: list[dict[str, object]] = field(default_factory=list)
    transferred: list[dict[str, object]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)


def iso_time(moment: float | None) -> str | None:
    """Epoch seconds the way Transfer writes times: ``2024-01-02T03:04:05+00:00``."""
    if moment is None:
        return None
    stamp = datetime.datetime.fromtimestamp(int(moment), tz=datetime.timezone.utc)
    return stamp.isoformat()


def _event_time(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(int(moment), tz=datetime.timezone.utc)
    return stamp.isoformat(sep=" ")


def _parse_deadline(text: object, request_time: float) -> float:
    if text in (None, ""):
        return request_time + DEFAULT_DEADLINE.total_seconds()
    if not isinstance(text, str):
        raise TransferRefusal(
            400, "ClientError.BadRequest", "deadline must be a string"
        )
    try:
        # Python 3.10's fromisoformat does not take a trailing "Z".
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TransferRefusal(
            400, "ClientError.BadRequest", f"deadline {text!r} is not ISO 8601"
        ) from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TransferService:
    """Tasks, their documents and their progress. Thread-safe."""

    def __init__(
        self,
        endpoints: Mapping[str, str | os.PathLike[str]],
        *,
        per_file_delay: float = 0.0,
        active_task_limit: int = 3,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retry_interval <= 0 or per_file_delay < 0 or active_task_limit < 1:
            raise ValueError(
                "need retry_interval > 0, per_file_delay >= 0, active_task_limit >= 1"
            )
        self.endpoints = {
            str(endpoint): Path(directory).resolve()
            for endpoint, directory in endpoints.items()
        }
        self.per_file_delay = per_file_delay
        self.active_task_limit = active_task_limit
        self.retry_interval = retry_interval
        # Tests may lower these to see marker paging with a handful of entries.
        self.skipped_errors_page_size = SKIPPED_ERRORS_PAGE_SIZE
        self.successful_transfers_page_size = SUCCESSFUL_TRANSFERS_PAGE_SIZE
        self._clock = clock
        self._lock = threading.RLock()
        self._tasks: dict[str, _Task] = {}
        self._by_submission: dict[tuple[str, str], str] = {}
        self._consent_required: set[str] = set()
        self.submissions_applied = 0
        self.duplicate_submissions = 0

    # -- paths -----------------------------------------------------------------

    def resolve(self, endpoint_id: str, globus_path: str) -> Path:
        """The local path of ``globus_path`` on an endpoint; refuses escapes."""
        root = self.endpoints.get(endpoint_id)
        if root is None:
            raise TransferRefusal(
                404,
                "ClientError.NotFound",
                f"No collection found with id {endpoint_id}",
            )
        if globus_path.startswith("/~/"):
            globus_path = globus_path[2:]
        elif globus_path.startswith("~/"):
            globus_path = globus_path[1:]
        if not globus_path.startswith("/"):
            raise TransferRefusal(
                400,
                "ClientError.BadRequest.InvalidPath",
                f"path {globus_path!r} must be absolute",
            )
        parts = PurePosixPath(globus_path).parts[1:]
        local = Path(os.path.normpath(root.joinpath(*parts))) if parts else root
        if local != root and root not in local.parents:
            raise TransferRefusal(
                400,
                "ClientError.BadRequest.InvalidPath",
                f"path {globus_path!r} is outside collection {endpoint_id}",
            )
        return local

    def remove_file(self, endpoint_id: str, globus_path: str) -> None:
        """Delete a file on an endpoint (the "source vanished" fault)."""
        self.resolve(endpoint_id, globus_path).unlink(missing_ok=True)

    def require_consent(self, endpoint_id: str) -> None:
        """Submissions touching this endpoint need its data_access consent."""
        with self._lock:
            self._consent_required.add(endpoint_id)

    # -- submission ------------------------------------------------------------

    def new_submission_id(self) -> str:
        return str(uuid.uuid4())

    def submit(
        self,
        owner: Identity,
        document: Mapping[str, object],
        *,
        consented_scopes: frozenset[str] = frozenset(),
    ) -> SubmitOutcome:
        """Accept a transfer document, or find the task of its submission id."""
        if document.get("DATA_TYPE") != "transfer":
            raise TransferRefusal(
                400, "ClientError.BadRequest", "DATA_TYPE must be 'transfer'"
            )
        submission_id = document.get("submission_id")
        if not isinstance(submission_id, str) or not submission_id:
            raise TransferRefusal(
                400, "ClientError.BadRequest", "submission_id is required"
            )
        source = str(document.get("source_endpoint") or "")
        destination = str(document.get("destination_endpoint") or "")
        items = document.get("DATA")
        if not isinstance(items, list) or not items:
            raise TransferRefusal(
                400,
                "ClientError.BadRequest.NoTransferItems",
                "a transfer needs at least one item",
            )

        with self._lock:
            self._check_consent(source, destination, consented_scopes)
            known = self._by_submission.get((owner.sub, submission_id))
            if known is not None:
                self.duplicate_submissions += 1
                return SubmitOutcome(known, submission_id, duplicate=True)

            task = self._new_task(owner, submission_id, source, destination, document)
            self._tasks[task.task_id] = task
            self._by_submission[(owner.sub, submission_id)] = task.task_id
            self.submissions_applied += 1
        log.info("stand-in task %s created (%d items)", task.task_id, len(items))
        return SubmitOutcome(task.task_id, submission_id, duplicate=False)

    def _check_consent(
        self, source: str, destination: str, consented: frozenset[str]
    ) -> None:
        missing = [
            data_access_scope(endpoint)
            for endpoint in dict.fromkeys((source, destination))
            if endpoint in self._consent_required
            and data_access_scope(endpoint) not in consented
        ]
        if not missing:
            return
        dependencies = " ".join(f"*{scope}" for scope in missing)
        required = [
            f"urn:globus:auth:scope:transfer.api.globus.org:all[{dependencies}]"
        ]
        message = "Missing required data_access consent"
        raise TransferRefusal(
            403,
            "ConsentRequired",
            message,
            extra={
                "required_scopes": required,
                "authorization_parameters": {
                    "session_message": message,
                    "required_scopes": required,
                },
            },
        )

    def _new_task(
        self,
        owner: Identity,
        submission_id: str,
        source: str,
        destination: str,
        document: Mapping[str, object],
    ) -> _Task:
        units = []
        for item in document["DATA"]:  # type: ignore[union-attr]
            kind = (
                item.get("DATA_TYPE", "transfer_item")
                if isinstance(item, dict)
                else None
            )
            if kind != "transfer_item":
                raise TransferRefusal(
                    400,
                    "ClientError.BadRequest",
                    "only transfer_item entries are supported by the stand-in",
                )
            source_path = str(item.get("source_path", ""))
            destination_path = str(item.get("destination_path", ""))
            units.append(
                _Unit(
                    source_path=source_path,
                    destination_path=destination_path,
                    source=self.resolve(source, source_path),
                    destination=self.resolve(destination, destination_path),
                    recursive=bool(item.get("recursive", False)),
                )
            )

        now = self._clock()
        label = document.get("label")
        sync_level = document.get("sync_level")
        return _Task(
            task_id=str(uuid.uuid4()),
            submission_id=submission_id,
            owner=owner,
            label=label if isinstance(label, str) else None,
            source_endpoint_id=source,
            destination_endpoint_id=destination,
            units=units,
            sync_level=sync_level if isinstance(sync_level, int) else None,
            verify_checksum=bool(document.get("verify_checksum", True)),
            encrypt_data=bool(document.get("encrypt_data", False)),
            skip_source_errors=bool(document.get("skip_source_errors", False)),
            preserve_timestamp=bool(document.get("preserve_timestamp", False)),
            fail_on_quota_errors=bool(document.get("fail_on_quota_errors", False)),
            delete_destination_extra=bool(
                document.get("delete_destination_extra", False)
            ),
            request_time=now,
            deadline=_parse_deadline(document.get("deadline"), now),
            next_step_at=now + self.per_file_delay,
            subtasks_total=len(units),
        )

    # -- reading ---------------------------------------------------------------

    @property
    def tasks_created(self) -> int:
        with self._lock:
            return len(self._tasks)

    def task_document(self, owner: Identity, task_id: str) -> dict[str, object]:
        with self._lock:
            task = self._owned_task(owner, task_id)
            return self._document(task, self._running_ids())

    def task_list(
        self,
        owner: Identity,
        *,
        filter_text: str | None,
        limit: int | None,
        offset: int,
    ) -> dict[str, object]:
        limit = TASK_LIST_DEFAULT_LIMIT if limit is None else limit
        if not 0 < limit <= TASK_LIST_MAX_LIMIT or offset < 0:
            raise TransferRefusal(
                400,
                "ClientError.BadRequest",
                f"limit must be 1..{TASK_LIST_MAX_LIMIT} and offset >= 0",
            )
        wanted = _parse_task_filter(filter_text)
        with self._lock:
            running = self._running_ids()
            matching = [
                task
                for task in sorted(
                    self._tasks.values(), key=lambda t: t.request_time, reverse=True
                )
                if task.owner.sub == owner.sub and _matches(task, wanted)
            ]
            page = matching[offset : offset + limit]
            return {
                "DATA_TYPE": "task_list",
                "DATA": [self._document(task, running) for task in page],
                "length": len(page),
                "limit": limit,
                "offset": offset,
                "total": len(matching),
            }

    def skipped_errors(
        self, owner: Identity, task_id: str, *, marker: str | None
    ) -> dict[str, object]:
        start = _marker_start(marker)
        with self._lock:
            task = self._owned_task(owner, task_id)
            return _marker_page(
                "skipped_errors", task.skipped, start, self.skipped_errors_page_size
            )

    def successful_transfers(
        self, owner: Identity, task_id: str, *, marker: str | None
    ) -> dict[str, object]:
        """The files the task copied, a page at a time; only for a task that ended."""
        start = _marker_start(marker)
        with self._lock:
            task = self._owned_task(owner, task_id)
            if task.status in ("ACTIVE", "INACTIVE"):
                raise TransferRefusal(
                    400,
                    "ClientError.BadRequest",
                    f"Task '{task_id}' has not ended ({task.status}); the files it "
                    "transferred are listed once it has",
                )
            return _marker_page(
                "successful_transfers",
                task.transferred,
                start,
                self.successful_transfers_page_size,
            )

    def event_list(
        self,
        owner: Identity,
        task_id: str,
        *,
        filter_text: str | None,
        limit: int | None,
        offset: int,
    ) -> dict[str, object]:
        only_errors = None
        for clause in (filter_text or "").split("/"):
            key, _, value = clause.partition(":")
            if key == "is_error":
                only_errors = value.strip().lower() in ("1", "true")
            elif key:
                raise TransferRefusal(
                    400, "ClientError.BadRequest", f"cannot filter events on {key!r}"
                )
        limit = TASK_LIST_DEFAULT_LIMIT if limit is None else limit
        with self._lock:
            task = self._owned_task(owner, task_id)
            events = [
                dict(event)
                for event in reversed(task.events)
                if only_errors is None or event["is_error"] == only_errors
            ]
        page = events[offset : offset + limit]
        return {
            "DATA_TYPE": "event_list",
            "DATA": page,
            "length": len(page),
            "limit": limit,
            "offset": offset,
            "total": len(events),
        }

    # -- cancel ----------------------------------------------------------------

    def cancel(self, owner: Identity, task_id: str) -> tuple[str, str]:
        """Cancel a task; answers (code, message) as the cancel route does."""
        with self._lock:
            task = self._owned_task(owner, task_id)
            if task.status not in ("ACTIVE", "INACTIVE"):
                return "TaskComplete", "The task had already ended; nothing to cancel."
            now = self._clock()
            task.subtasks_canceled = len(task.units)
            task.units.clear()
            self._end(task, now, "FAILED", ("CANCELED", "canceled"))
            self._event(task, now, "CANCELED", "canceled", "canceled by its owner")
        log.info("stand-in task %s canceled", task_id)
        return "Canceled", "The task has been canceled."

    # -- progress ---------------------------------------------------------------

    def advance(self) -> bool:
        """Perform every step that is due now; True if anything changed."""
        changed = False
        with self._lock:
            now = self._clock()
            for task in self._tasks.values():
                if task.status == "ACTIVE" and now >= task.deadline:
                    self._expire(task, now)
                    changed = True
            running = self._running_ids()
            for task_id in running:
                task = self._tasks[task_id]
                if now >= task.next_step_at:
                    self._step(task, now)
                    changed = True
        return changed

    def _running_ids(self) -> list[str]:
        """Ids of the ACTIVE tasks that hold a slot, oldest first per owner."""
        slots: dict[str, int] = {}
        running = []
        for task in sorted(self._tasks.values(), key=lambda t: t.request_time):
            if task.status != "ACTIVE":
                continue
            used = slots.get(task.owner.sub, 0)
            if used < self.active_task_limit:
                slots[task.owner.sub] = used + 1
                running.append(task.task_id)
        return running

    def _step(self, task: _Task, now: float) -> None:
        if not task.scanned:
            self._scan(task, now)
            task.next_step_at = now + self.per_file_delay
            if task.units:
                return
        if not task.units:
            self._end(task, now, "SUCCEEDED", None)
            self._event(task, now, "SUCCEEDED", "succeeded", "task completed")
            log.info("stand-in task %s succeeded", task.task_id)
            return

        unit = task.units[0]
        if unit.recursive and not unit.source.exists():
            self._unit_failed(task, unit, now, "FILE_NOT_FOUND", on_source=True)
        elif unit.recursive and not unit.source.is_dir():
            self._unit_failed(task, unit, now, "NOT_A_DIRECTORY", on_source=True)
        elif not unit.source.exists():
            self._unit_failed(task, unit, now, "FILE_NOT_FOUND", on_source=True)
        elif unit.source.is_dir():
            self._unit_failed(task, unit, now, "IS_A_DIRECTORY", on_source=True)
        elif not os.access(unit.source, os.R_OK):
            self._unit_failed(task, unit, now, "PERMISSION_DENIED", on_source=True)
        else:
            self._copy(task, unit, now)

    def _scan(self, task: _Task, now: float) -> None:
        """Expand recursive items and count what exists, as Globus does first."""
        task.scanned = True
        expanded: list[_Unit] = []
        for unit in task.units:
            if unit.recursive and unit.source.is_dir():
                expanded.extend(self._expand(task, unit))
            else:
                expanded.append(unit)
                if unit.source.is_file():
                    unit.counted = True
                    task.files += 1
        task.units = expanded
        task.subtasks_total = len(expanded) + task.directories
        task.subtasks_succeeded += task.directories
        self._event(task, now, "STARTED", "started", "the task was scanned")

    def _expand(self, task: _Task, unit: _Unit) -> list[_Unit]:
        units = []
        for folder, subfolders, files in os.walk(unit.source):
            subfolders.sort()
            relative = Path(folder).relative_to(unit.source)
            (unit.destination / relative).mkdir(parents=True, exist_ok=True)
            task.directories += 1
            for name in sorted(files):
                rel = (relative / name).as_posix()
                units.append(
                    _Unit(
                        source_path=f"{unit.source_path.rstrip('/')}/{rel}",
                        destination_path=f"{unit.destination_path.rstrip('/')}/{rel}",
                        source=unit.source / relative / name,
                        destination=unit.destination / relative / name,
                        recursive=False,
                        counted=True,
                    )
                )
                task.files += 1
        return units

    def _copy(self, task: _Task, unit: _Unit, now: float) -> None:
        if self._in_sync(task, unit):
            task.files_skipped += 1
            self._unit_done(task, now)
            return
        try:
            unit.destination.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                dir=unit.destination.parent, prefix=".standin-"
            )
            os.close(handle)
            shutil.copyfile(unit.source, temporary)
            if task.preserve_timestamp:
                shutil.copystat(unit.source, temporary)
            os.replace(temporary, unit.destination)
        except PermissionError:
            self._unit_failed(task, unit, now, "PERMISSION_DENIED", on_source=False)
            return
        except OSError as exc:
            code = "NO_SPACE_LEFT" if exc.errno == 28 else "UNKNOWN"
            self._unit_failed(task, unit, now, code, on_source=False)
            return

        size = unit.destination.stat().st_size
        if not unit.counted:  # a source that appeared after the scan
            unit.counted = True
            task.files += 1
        task.files_transferred += 1
        task.bytes_transferred += size
        task.transferred.append(
            {
                "DATA_TYPE": "successful_transfer",
                "source_path": unit.source_path,
                "destination_path": unit.destination_path,
            }
        )
        if task.verify_checksum:
            task.bytes_checksummed += size
        self._unit_done(task, now)

    def _in_sync(self, task: _Task, unit: _Unit) -> bool:
        if task.sync_level is None or not unit.destination.is_file():
            return False
        source, destination = unit.source.stat(), unit.destination.stat()
        if task.sync_level == 0:
            return True
        if source.st_size != destination.st_size:
            return False
        if task.sync_level == 1:
            return True
        if task.sync_level == 2:
            return destination.st_mtime >= source.st_mtime
        return _md5(unit.source) == _md5(unit.destination)

    def _unit_done(self, task: _Task, now: float) -> None:
        task.units.pop(0)
        task.subtasks_succeeded += 1
        task.stuck = None
        task.next_step_at = now + self.per_file_delay

    def _unit_failed(
        self, task: _Task, unit: _Unit, now: float, code: str, *, on_source: bool
    ) -> None:
        description = _ERROR_DESCRIPTIONS.get(code, code.lower().replace("_", " "))
        failing = unit.source_path if on_source else unit.destination_path
        details = f"Error on {'source' if on_source else 'destination'}: {failing}"
        task.faults += 1
        self._event(task, now, code, description, details, is_error=True)

        if on_source and task.skip_source_errors and code in SKIPPABLE_ERRORS:
            task.units.pop(0)
            task.subtasks_skipped_errors += 1
            task.skipped.append(
                {
                    "DATA_TYPE": "skipped_error",
                    "checksum_algorithm": None,
                    "destination_path": unit.destination_path,
                    "error_code": code,
                    "error_details": details,
                    "error_time": iso_time(now),
                    "external_checksum": None,
                    "is_delete_destination_extra": False,
                    "is_directory": unit.recursive,
                    "is_symlink": False,
                    "source_path": unit.source_path,
                }
            )
            self._event(task, now, "SKIPPED_ERRORS", "skipped errors", details)
            task.next_step_at = now + self.per_file_delay
            return

        # Not skippable: the real service retries until the deadline.
        task.stuck = (code, description)
        task.next_step_at = now + self.retry_interval

    def _expire(self, task: _Task, now: float) -> None:
        task.subtasks_expired = len(task.units)
        task.units.clear()
        self._end(task, now, "FAILED", ("EXPIRED", "the task reached its deadline"))
        self._event(task, now, "EXPIRED", "expired", "deadline reached", is_error=True)
        log.info("stand-in task %s expired", task.task_id)

    def _end(
        self, task: _Task, now: float, status: str, fatal: tuple[str, str] | None
    ) -> None:
        task.status = status
        task.completion_time = now
        task.stuck = None
        if fatal is not None:
            task.fatal_error = {"code": fatal[0], "description": fatal[1]}

    def _event(
        self,
        task: _Task,
        now: float,
        code: str,
        description: str,
        details: str,
        *,
        is_error: bool = False,
    ) -> None:
        task.events.append(
            {
                "DATA_TYPE": "event",
                "code": code,
                "is_error": is_error,
                "description": description,
                "details": details,
                "time": _event_time(now),
            }
        )

    # -- documents ---------------------------------------------------------------

    def _owned_task(self, owner: Identity, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None or task.owner.sub != owner.sub:
            raise TransferRefusal(
                404, "ClientError.NotFound", f"No task found with id '{task_id}'"
            )
        return task

    def _document(self, task: _Task, running: list[str]) -> dict[str, object]:
        active = task.status == "ACTIVE"
        if not active:
            nice = (None, None, None)
        elif task.stuck is not None:
            nice = (task.stuck[0], task.stuck[1], f"retrying: {task.stuck[1]}")
        elif task.task_id not in running:
            nice = ("Queued", "Queued", None)
        else:
            nice = ("OK", "OK", None)
        end = task.completion_time if task.completion_time else self._clock()
        elapsed = max(end - task.request_time, 1.0)
        pending = len(task.units) if active else 0
        return {
            "DATA_TYPE": "task",
            "task_id": task.task_id,
            "type": "TRANSFER",
            "status": task.status,
            "nice_status": nice[0],
            "nice_status_short_description": nice[1],
            "nice_status_details": nice[2],
            "nice_status_expires_in": -1 if active else None,
            "is_ok": (task.stuck is None) if active else None,
            "is_paused": False,
            "label": task.label,
            "command": "API 0.10",
            "files": task.files,
            "files_transferred": task.files_transferred,
            "files_skipped": task.files_skipped,
            "directories": task.directories,
            "symlinks": 0,
            "bytes_transferred": task.bytes_transferred,
            "bytes_checksummed": task.bytes_checksummed,
            "effective_bytes_per_second": int(task.bytes_transferred / elapsed),
            "subtasks_total": task.subtasks_total,
            "subtasks_pending": pending,
            "subtasks_succeeded": task.subtasks_succeeded,
            "subtasks_failed": 0,
            "subtasks_canceled": task.subtasks_canceled,
            "subtasks_expired": task.subtasks_expired,
            "subtasks_retrying": 1 if task.stuck is not None else 0,
            "subtasks_skipped_errors": task.subtasks_skipped_errors,
            "faults": task.faults,
            "fatal_error": dict(task.fatal_error) if task.fatal_error else None,
            "request_time": iso_time(task.request_time),
            "completion_time": iso_time(task.completion_time),
            "deadline": iso_time(task.deadline),
            "source_endpoint": task.source_endpoint_id,
            "source_endpoint_id": task.source_endpoint_id,
            "source_endpoint_display_name": f"stand-in {task.source_endpoint_id}",
            "destination_endpoint": task.destination_endpoint_id,
            "destination_endpoint_id": task.destination_endpoint_id,
            "destination_endpoint_display_name": (
                f"stand-in {task.destination_endpoint_id}"
            ),
            "sync_level": task.sync_level,
            "verify_checksum": task.verify_checksum,
            "encrypt_data": task.encrypt_data,
            "skip_source_errors": task.skip_source_errors,
            "preserve_timestamp": task.preserve_timestamp,
            "fail_on_quota_errors": task.fail_on_quota_errors,
            "delete_destination_extra": task.delete_destination_extra,
            "recursive_symlinks": "ignore",
            "filter_rules": None,
            "history_deleted": False,
            "canceled_by_admin": None,
            "canceled_by_admin_message": None,
            "owner_id": task.owner.sub,
            "username": task.owner.username,
        }


def _marker_start(marker: str | None) -> int:
    """Where a page starts: the stand-in's markers are plain list positions."""
    try:
        return int(marker) if marker else 0
    except ValueError as exc:
        raise TransferRefusal(
            400, "ClientError.BadRequest", f"bad marker {marker!r}"
        ) from exc


def _marker_page(
    data_type: str, entries: list[dict[str, object]], start: int, size: int
) -> dict[str, object]:
    """One page of a marker-paged list; ``next_marker`` is null on the last page."""
    page = entries[start : start + size]
    end = start + len(page)
    return {
        "DATA_TYPE": data_type,
        "marker": start,
        "next_marker": end if end < len(entries) else None,
        "DATA": [dict(entry) for entry in page],
    }


def _parse_task_filter(text: str | None) -> dict[str, set[str]]:
    """``task_id:a,b/status:ACTIVE`` -> {"task_id": {a, b}, "status": {ACTIVE}}."""
    wanted: dict[str, set[str]] = {}
    for clause in (text or "").split("/"):
        if not clause:
            continue
        key, _, values = clause.partition(":")
        if key not in ("task_id", "status", "type"):
            raise TransferRefusal(
                400,
                "ClientError.BadRequest",
                f"the stand-in cannot filter tasks on {key!r}",
            )
        wanted[key] = {value for value in values.split(",") if value}
    return wanted


def _matches(task: _Task, wanted: dict[str, set[str]]) -> bool:
    fields = {"task_id": task.task_id, "status": task.status, "type": "TRANSFER"}
    return all(fields[key] in values for key, values in wanted.items())


class TransferWorker(threading.Thread):
    """Calls ``TransferService.advance`` until stopped, resting a tick when idle.

    While steps are due it goes on without resting, so a task with no per-file
    delay finishes as fast as its files copy; the lock is released between steps.
    """

    def __init__(self, service: TransferService, *, tick: float = 0.005) -> None:
        super().__init__(name="globus-standin-transfer", daemon=True)
        self._service = service
        self._tick = tick
        self._stop_requested = threading.Event()

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                while self._service.advance() and not self._stop_requested.is_set():
                    pass
            except Exception:  # a worker that dies silently would hang every test
                log.exception("stand-in transfer worker step failed")
            self._stop_requested.wait(self._tick)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        self.join(timeout)
