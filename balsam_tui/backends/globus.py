"""The ``globus://`` backend: each batch is one Globus Transfer task, via globus-sdk.

Role: turn a ``TaskSpec`` into a ``TransferData`` between this site's collection
(``globus_endpoint_id``) and the location's collection, submit it under the engine's
submission id, and report on many tasks with one ``task_list`` request per 100 ids.
A finished task is reconciled per file: Globus's list of skipped files (and, for a
failed or cancelled task, of files that did arrive) is mapped back to items by path.

Paths on this site's side are local absolute paths under the site directory. With
``globus_endpoint_site_path`` set, the site directory's absolute path is replaced by
that prefix, as a whole leading path and nowhere else; unset, the local paths are
sent unchanged (the collection shows this machine's filesystem from ``/``). Before
sending, each site-side path is checked here with symlinks resolved against its
job's workdir; an item that fails the check is not sent and is reported failed when
the task is polled (the backend protocol has no way to refuse one item at submit).

Traps:

- A Globus task with a missing source and ``skip_source_errors`` off stays ACTIVE
  until its deadline, retrying. It is recognised by its ``nice_status`` code (never
  by text), and the file by an exact match of a submitted path in the task's error
  events. When no event names a file, the task is still reported stuck; its items
  go again with ``skip_source_errors`` forced on, and an item in two such tasks
  fails (transiently, so the retry limit ends the loop).
- ``task_successful_transfers`` tells which files arrived in a task that did not
  succeed (a stuck task once cancelled, a task cancelled by the operator or
  expired): those items are done, not copied again. Globus answers it only once a
  task has ended, so it is asked for FAILED tasks only. A service that has no such
  list (404) or refuses it only means those items are copied again. Directories are
  never taken as complete from that list, and files a ``sync_level`` left alone
  are not on it (they go again, and are left alone again).
- The engine must never sleep: globus-sdk retries at most twice, half a second
  apart, and never on 429, whose Retry-After goes to the engine instead.
- What this instance remembers (items refused locally, tasks reported stuck) is lost
  with it. After a restart, refused items are found again by checking the paths of
  a finished task anew: an item whose path was fixed while the engine was down is
  then taken as sent. Moving the symlink check into the engine, before submit, would
  close that gap for every backend.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import globus_sdk
from globus_sdk.gare import to_gare
from globus_sdk.scopes import ScopeParser
from globus_sdk.token_storage import TokenValidationError

from balsam_tui.backends.base import (
    BackendError,
    CredentialsRequired,
    FileOutcome,
    InFlightTask,
    PermanentBackendError,
    RemoteState,
    TaskSpec,
    TaskStatus,
    TransientBackendError,
    WakeCallback,
)
from balsam_tui.backends.registry import BackendUnavailable
from balsam_tui.globus.auth import (
    EXPIRED_MESSAGE,
    ClientIdMissing,
    EngineCredentials,
    GlobusAuthError,
    short_retry_config,
)
from balsam_tui.locations import inside, resolved_inside
from balsam_tui.settings import TransferSettings
from balsam_tui.site import Site

log = logging.getLogger(__name__)

#: Most task ids in one ``task_list`` request.
TASK_LIST_CHUNK = 100
#: Error events read to find the file a stuck task is stuck on.
EVENT_PAGE = 100
#: ``nice_status`` codes of an ACTIVE task that retrying will not get past: the file
#: is at fault. Others (QUOTA_EXCEEDED, CONNECT_FAILED...) may pass; they are shown.
FILE_ERROR_CODES = frozenset(
    {
        "FILE_NOT_FOUND",
        "PERMISSION_DENIED",
        "IS_A_DIRECTORY",
        "NOT_A_DIRECTORY",
        "AMBIGUOUS_PATH",
    }
)
QUEUED_NICE_STATUS = "Queued"
CANCELED_CODE = "CANCELED"
#: Backend id of a task none of whose items could be sent (nothing at Globus).
REFUSED_PREFIX = "refused-"
HTTP_TIMEOUT = 20.0
_TIMEOUT_VARIABLE = "GLOBUS_SDK_HTTP_TIMEOUT"
_DATA_ACCESS = re.compile(
    r"^https://auth\.globus\.org/scopes/([0-9a-fA-F-]{36})/data_access$"
)
_PATH_IN_TEXT = re.compile(r"/[^\s\"'<>|,;]*")
_REASON_LENGTH = 300

T = TypeVar("T")


# -- pure pieces ----------------------------------------------------------------------


@dataclass(frozen=True)
class SitePaths:
    """Where the site directory appears on the site's Globus collection."""

    site_root: str
    endpoint_path: str | None

    def on_endpoint(self, path: str) -> str | None:
        """The collection path of a local path; None if it cannot have one."""
        path = posixpath.normpath(path)
        if self.endpoint_path is None:
            return path
        root = posixpath.normpath(self.site_root)
        if not inside(path, root):
            return None
        relative = posixpath.relpath(path, root)
        if relative == ".":
            return self.endpoint_path
        return posixpath.join(self.endpoint_path, relative)


@dataclass(frozen=True)
class GlobusCopy:
    """One item as Globus sees it: paths on the source and destination collections."""

    item_id: int
    source: str
    destination: str
    recursive: bool


def plan_copies(
    spec: TaskSpec, paths: SitePaths
) -> tuple[list[GlobusCopy], list[FileOutcome]]:
    """The items that may be sent, and the refusals of those that may not."""
    copies: list[GlobusCopy] = []
    refused: list[FileOutcome] = []
    for item in spec.files:
        if spec.direction == "in":
            side, local, root = "destination", item.destination, item.destination_root
        else:
            side, local, root = "source", item.source, item.source_root
        mapped = paths.on_endpoint(local)
        if mapped is None:
            reason = (
                f"{side} {local} is outside the site directory {paths.site_root}, so "
                "it has no path on the site's Globus collection"
            )
        elif not resolved_inside(local, root):
            reason = (
                f"{side} {local} resolves to {os.path.realpath(local)}, outside "
                f"its root {root}"
            )
        else:
            source, destination = (
                (item.source, mapped)
                if spec.direction == "in"
                else (mapped, item.destination)
            )
            copies.append(GlobusCopy(item.item_id, source, destination, item.recursive))
            continue
        refused.append(
            FileOutcome(item.item_id, ok=False, error=reason, permanent=True)
        )
    return copies, refused


class PathIndex:
    """Finds the item a path Globus reports belongs to (exactly, or inside a tree)."""

    def __init__(self, copies: Iterable[GlobusCopy]) -> None:
        self._exact: dict[str, int] = {}
        trees: list[tuple[str, int]] = []
        for copy in copies:
            for path in (copy.source, copy.destination):
                path = posixpath.normpath(path)
                self._exact.setdefault(path, copy.item_id)
                if copy.recursive:
                    trees.append((path, copy.item_id))
        self._trees = sorted(trees, key=lambda tree: -len(tree[0]))

    def item_for(self, path: str | None) -> int | None:
        if not path:
            return None
        path = posixpath.normpath(path)
        found = self._exact.get(path)
        if found is not None:
            return found
        for root, item_id in self._trees:
            if inside(path, root):
                return item_id
        return None

    def is_tree(self, item_id: int) -> bool:
        """Whether the item is a directory (recursive) copy."""
        return any(tree_item == item_id for _root, tree_item in self._trees)

    def items_named_in(self, text: str | None) -> set[int]:
        """Items one of whose submitted paths appears, whole, in ``text``."""
        found = set()
        for candidate in _PATH_IN_TEXT.findall(text or ""):
            item_id = self.item_for(candidate.rstrip(".:)]}"))
            if item_id is not None:
                found.add(item_id)
        return found


def data_access_collections(scopes: Iterable[str]) -> tuple[str, ...]:
    """Collection ids of the data_access scopes inside scope strings, sorted.

    Sorted because globus-sdk's scope parser does not keep dependencies in order.
    """
    found: list[str] = []
    pending = []
    for text in scopes:
        try:
            pending.extend(ScopeParser.parse(text))
        except ValueError:
            continue
    while pending:
        scope = pending.pop(0)
        match = _DATA_ACCESS.match(scope.scope_string)
        if match:
            found.append(match.group(1).lower())
        pending.extend(scope.dependencies)
    return tuple(sorted(set(found)))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date); else None."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = datetime.datetime.now(datetime.timezone.utc)
    return max((moment - now).total_seconds(), 0.0)


def status_text(document: Mapping[str, Any]) -> str:
    """The task's state in Globus's words, for the tasks pane."""
    status = str(document.get("status") or "").lower()
    nice = document.get("nice_status")
    if status in ("active", "inactive") and nice:
        if nice == QUEUED_NICE_STATUS:
            return "queued at Globus (per-user limit of running tasks)"
        described = document.get("nice_status_short_description")
        text = f"{nice}: {described}" if described and described != nice else str(nice)
        return text if status == "active" else f"inactive: {text}"
    if status == "failed":
        fatal = document.get("fatal_error") or {}
        return f"failed: {fatal.get('code') or 'unknown'}"
    return status or "unknown"


def _one_line(text: object) -> str:
    line = " ".join(str(text or "").split())
    if len(line) > _REASON_LENGTH:
        line = line[: _REASON_LENGTH - 3] + "..."
    return line


def _globus_reason(code: object, details: object) -> str:
    explained = _one_line(details)
    return f"Globus: {code}: {explained}" if explained else f"Globus: {code}"


# -- the backend ----------------------------------------------------------------------


class GlobusBackend:
    """Globus Transfer tasks for the engine; every method on the engine's thread."""

    protocol = "globus"

    def __init__(
        self,
        *,
        settings: TransferSettings,
        site: Site,
        wake: WakeCallback | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if settings.globus_endpoint_id is None:
            raise BackendUnavailable(
                "globus:// locations need transfers.globus_endpoint_id in "
                "settings.yml: the id of this site's own Globus collection"
            )
        try:
            self._credentials = EngineCredentials(site, settings, environ=environ)
        except ClientIdMissing as exc:
            raise BackendUnavailable(str(exc)) from None
        self.min_poll_interval = settings.globus_poll_interval
        self._settings = settings
        self._site_endpoint = settings.globus_endpoint_id
        self._paths = SitePaths(str(site.root), settings.globus_endpoint_site_path)
        self._wake = wake
        env = os.environ if environ is None else environ
        self._http_timeout = None if env.get(_TIMEOUT_VARIABLE) else HTTP_TIMEOUT
        self._lock = threading.RLock()
        self._client: globus_sdk.TransferClient | None = None
        # Memory of this instance; see the module docstring for what a restart loses.
        self._submitted: set[int] = set()
        self._refused: dict[int, tuple[FileOutcome, ...]] = {}
        self._stuck_reported: set[str] = set()
        self._suspects: dict[int, int] = {}

    # -- the Backend protocol -------------------------------------------------------

    def new_submission_id(self) -> str:
        with self._lock:
            answer = self._call(lambda client: client.get_submission_id())
            return str(answer["value"])

    def submit(self, spec: TaskSpec) -> str:
        """Submit the batch (a repeat under the same submission id is a no-op)."""
        with self._lock:
            copies, refused = plan_copies(spec, self._paths)
            if refused:
                self._refused[spec.task_id] = tuple(refused)
                for outcome in refused:
                    log.warning("item %d not sent: %s", outcome.item_id, outcome.error)
            else:
                self._refused.pop(spec.task_id, None)
            if not copies:
                self._submitted.add(spec.task_id)
                return f"{REFUSED_PREFIX}{spec.submission_id}"

            data = self._transfer_data(spec, copies)
            answer = self._call(lambda client: client.submit_transfer(data))
            self._submitted.add(spec.task_id)
            backend_task_id = str(answer["task_id"])
            if answer.get("code") == "Duplicate":
                log.info(
                    "task %d was already at Globus as %s (submission %s)",
                    spec.task_id,
                    backend_task_id,
                    spec.submission_id,
                )
            return backend_task_id

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        """One ``task_list`` request per 100 tasks, then per-file detail if needed."""
        with self._lock:
            report: dict[int, TaskStatus] = {}
            at_globus: dict[str, list[InFlightTask]] = {}
            for asked in tasks:
                backend_id = asked.backend_task_id
                if not backend_id:
                    report[asked.task_id] = _lost(asked, "no Globus task id recorded")
                elif backend_id.startswith(REFUSED_PREFIX):
                    report[asked.task_id] = self._refused_only(asked)
                else:
                    at_globus.setdefault(backend_id, []).append(asked)

            documents = self._task_documents(list(at_globus))
            for backend_id, askers in at_globus.items():
                document = documents.get(backend_id)
                for asked in askers:
                    if document is None:
                        report[asked.task_id] = _lost(asked, "Globus does not know it")
                        continue
                    status = self._status(asked, document)
                    if status is not None:
                        report[asked.task_id] = status
            return report

    def cancel(self, task: InFlightTask) -> None:
        backend_id = task.backend_task_id
        if not backend_id or backend_id.startswith(REFUSED_PREFIX):
            return

        def cancel(client: globus_sdk.TransferClient) -> Any:
            try:
                return client.cancel_task(backend_id)
            except globus_sdk.GlobusAPIError as exc:
                if exc.http_status == 404:
                    return None
                raise

        with self._lock:
            answer = self._call(cancel)
        code = answer.get("code") if answer is not None else "not found"
        log.info("task %d: Globus cancel of %s: %s", task.task_id, backend_id, code)

    def close(self) -> None:
        with self._lock:
            self._drop_client()
            self._credentials.close()

    # -- submitting -----------------------------------------------------------------

    def _transfer_data(
        self, spec: TaskSpec, copies: Sequence[GlobusCopy]
    ) -> globus_sdk.TransferData:
        settings = self._settings
        remote = spec.location.netloc
        if spec.direction == "in":
            source, destination = remote, self._site_endpoint
        else:
            source, destination = self._site_endpoint, remote
        # An item that sat in a task stuck on an unnamed file goes with skipping on,
        # so a bad source is skipped and named instead of blocking the task again.
        skip = settings.globus_skip_source_errors or any(
            copy.item_id in self._suspects for copy in copies
        )
        options: dict[str, Any] = {}
        if settings.globus_sync_level is not None:
            options["sync_level"] = settings.globus_sync_level
        if settings.globus_deadline_hours is not None:
            options["deadline"] = datetime.datetime.now(
                datetime.timezone.utc
            ) + datetime.timedelta(hours=settings.globus_deadline_hours)
        data = globus_sdk.TransferData(
            source,
            destination,
            label=spec.label,
            submission_id=spec.submission_id,
            skip_source_errors=skip,
            verify_checksum=settings.globus_verify_checksum,
            encrypt_data=settings.globus_encrypt_data,
            **options,
        )
        for copy in copies:
            data.add_item(copy.source, copy.destination, recursive=copy.recursive)
        return data

    # -- polling --------------------------------------------------------------------

    def _task_documents(self, backend_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        documents: dict[str, dict[str, Any]] = {}
        for start in range(0, len(backend_ids), TASK_LIST_CHUNK):
            chunk = list(backend_ids[start : start + TASK_LIST_CHUNK])

            def task_list(
                client: globus_sdk.TransferClient, chunk: list[str] = chunk
            ) -> list[dict[str, Any]]:
                answer = client.task_list(filter={"task_id": chunk}, limit=len(chunk))
                return [dict(document) for document in answer]

            for document in self._call(task_list):
                documents[str(document["task_id"])] = document
        return documents

    def _status(
        self, asked: InFlightTask, document: Mapping[str, Any]
    ) -> TaskStatus | None:
        progress = _progress(asked, document)
        state = document.get("status")
        if state in ("ACTIVE", "INACTIVE"):
            nice = document.get("nice_status")
            if state == "ACTIVE" and nice in FILE_ERROR_CODES:
                return self._stuck(asked, document, progress)
            remote = (
                RemoteState.QUEUED if nice == QUEUED_NICE_STATUS else RemoteState.ACTIVE
            )
            return TaskStatus(state=remote, **progress)
        if state not in ("SUCCEEDED", "FAILED"):
            log.warning(
                "task %d: Globus status %r is new to balsam-tui", asked.task_id, state
            )
            return TaskStatus(state=RemoteState.ACTIVE, **progress)

        fatal = document.get("fatal_error") or {}
        cancelled = state == "FAILED" and fatal.get("code") == CANCELED_CODE
        try:
            outcomes = self._settled_items(asked, document, arrived=state == "FAILED")
        except CredentialsRequired:
            raise
        except BackendError as exc:
            log.warning(
                "task %d finished at Globus, but its per-file report could not be "
                "read (%s); asking again at the next poll",
                asked.task_id,
                exc,
            )
            return None
        self._forget(asked)

        if state == "SUCCEEDED":
            return TaskStatus(
                state=RemoteState.SUCCEEDED, outcomes=outcomes, **progress
            )
        if cancelled:
            return TaskStatus(
                state=RemoteState.CANCELLED, outcomes=outcomes, **progress
            )
        reason = _globus_reason(fatal.get("code") or "FAILED", fatal.get("description"))
        return TaskStatus(
            state=RemoteState.FAILED,
            fatal_error=f"the Globus task failed: {reason}",
            outcomes=outcomes,
            **progress,
        )

    def _settled_items(
        self, asked: InFlightTask, document: Mapping[str, Any], *, arrived: bool
    ) -> tuple[FileOutcome, ...]:
        """Per-item outcomes of a finished task: arrived, skipped, refused here."""
        backend_id = str(document["task_id"])
        index: PathIndex | None = None

        def paths() -> PathIndex:
            nonlocal index
            if index is None:
                index = PathIndex(self._copies(asked)[0])
            return index

        outcomes: dict[int, FileOutcome] = {}
        if arrived and (document.get("files_transferred") or 0) > 0:
            for entry in self._successful_transfers(backend_id):
                item_id = paths().item_for(entry.get("destination_path"))
                if item_id is not None and not paths().is_tree(item_id):
                    outcomes[item_id] = FileOutcome(item_id, ok=True)
            if outcomes:
                log.info(
                    "task %d: %d item(s) had arrived before Globus task %s ended; "
                    "they are done",
                    asked.task_id,
                    len(outcomes),
                    backend_id,
                )

        if (document.get("subtasks_skipped_errors") or 0) > 0:
            for entry in self._skipped_errors(backend_id):
                item_id = paths().item_for(entry.get("source_path"))
                if item_id is None:
                    item_id = paths().item_for(entry.get("destination_path"))
                if item_id is None:
                    log.warning(
                        "task %d: Globus skipped %s, which matches none of its items",
                        asked.task_id,
                        entry.get("source_path"),
                    )
                    continue
                reason = _globus_reason(
                    entry.get("error_code"), entry.get("error_details")
                )
                outcomes[item_id] = FileOutcome(
                    item_id, ok=False, error=reason, permanent=True
                )

        for outcome in self._refusals(asked):
            outcomes[outcome.item_id] = outcome
        return tuple(outcomes.values())

    def _copies(
        self, asked: InFlightTask
    ) -> tuple[list[GlobusCopy], list[FileOutcome]]:
        if asked.load_spec is None:
            return [], []
        return plan_copies(asked.load_spec(), self._paths)

    def _refusals(self, asked: InFlightTask) -> tuple[FileOutcome, ...]:
        known = self._refused.get(asked.task_id)
        if known is not None:
            return known
        if asked.task_id in self._submitted:
            return ()
        # Submitted by an earlier process: check the paths again.
        return tuple(self._copies(asked)[1])

    def _successful_transfers(self, backend_id: str) -> list[Mapping[str, Any]]:
        def fetch(client: globus_sdk.TransferClient) -> list[Mapping[str, Any]] | None:
            try:
                pages = client.paginated.task_successful_transfers(backend_id)
                return list(pages.items())
            except globus_sdk.GlobusAPIError as exc:
                if exc.http_status == 404:
                    return None
                raise

        try:
            found = self._call(fetch)
        except PermanentBackendError as exc:
            log.warning(
                "Globus would not list the files task %s transferred (%s); they "
                "are copied again",
                backend_id,
                exc,
            )
            return []
        if found is None:
            log.debug(
                "Globus lists no successful transfers for %s: its files go again",
                backend_id,
            )
            return []
        return found

    def _skipped_errors(self, backend_id: str) -> list[Mapping[str, Any]]:
        return self._call(
            lambda client: list(
                client.paginated.task_skipped_errors(backend_id).items()
            )
        )

    def _stuck(
        self, asked: InFlightTask, document: Mapping[str, Any], progress: dict[str, Any]
    ) -> TaskStatus:
        """An ACTIVE task retrying a file error: fail the files it names, cancel it."""
        backend_id = str(document["task_id"])
        nice = document.get("nice_status")
        if backend_id in self._stuck_reported:
            # Already reported; the engine is cancelling it.
            return TaskStatus(state=RemoteState.ACTIVE, stuck=True, **progress)

        try:
            events = self._call(
                lambda client: list(
                    client.task_event_list(
                        backend_id,
                        limit=EVENT_PAGE,
                        query_params={"filter": "is_error:1"},
                    )
                )
            )
        except CredentialsRequired:
            raise
        except BackendError as exc:
            log.warning(
                "task %d: reading its Globus error events failed (%s)",
                asked.task_id,
                exc,
            )
            return TaskStatus(state=RemoteState.ACTIVE, **progress)

        copies = self._copies(asked)[0]
        index = PathIndex(copies)
        bad: dict[int, str] = {}
        for event in events:
            code = event.get("code")
            if code not in FILE_ERROR_CODES:
                continue
            for item_id in index.items_named_in(event.get("details")):
                bad.setdefault(item_id, _globus_reason(code, event.get("details")))

        outcomes: list[FileOutcome] = []
        if bad:
            for item_id, reason in bad.items():
                self._suspects.pop(item_id, None)
                outcomes.append(
                    FileOutcome(item_id, ok=False, error=reason, permanent=True)
                )
            log.warning(
                "task %d is stuck at Globus on %s of %d item(s); cancelling it",
                asked.task_id,
                nice,
                len(bad),
            )
        else:
            for copy in copies:
                seen = self._suspects[copy.item_id] = (
                    self._suspects.get(copy.item_id, 0) + 1
                )
                if seen >= 2:
                    outcomes.append(
                        FileOutcome(
                            copy.item_id,
                            ok=False,
                            error=(
                                f"Globus: {nice}: the item was in two tasks stuck on "
                                "a file Globus did not name"
                            ),
                        )
                    )
            log.warning(
                "task %d is stuck at Globus on %s, and its error events name no file; "
                "cancelling it and sending its items again with skip_source_errors",
                asked.task_id,
                nice,
            )
        self._stuck_reported.add(backend_id)
        return TaskStatus(
            state=RemoteState.ACTIVE, stuck=True, outcomes=tuple(outcomes), **progress
        )

    def _refused_only(self, asked: InFlightTask) -> TaskStatus:
        outcomes = self._refused.get(asked.task_id)
        if outcomes is None:
            return _lost(asked, "its refusals were forgotten; checking its paths again")
        self._forget(asked)
        return TaskStatus(
            task_id=asked.task_id,
            state=RemoteState.SUCCEEDED,
            backend_task_id=asked.backend_task_id,
            files_total=len(outcomes),
            files_failed=len(outcomes),
            status_text="not sent: no item of the batch may be copied",
            outcomes=outcomes,
        )

    def _forget(self, asked: InFlightTask) -> None:
        self._refused.pop(asked.task_id, None)
        self._submitted.discard(asked.task_id)
        if asked.backend_task_id:
            self._stuck_reported.discard(asked.backend_task_id)

    # -- the client and its errors --------------------------------------------------

    def _transfer_client(self) -> globus_sdk.TransferClient:
        if self._client is not None and self._credentials.changed():
            log.info("the site's Globus login changed; using the new one")
            self._drop_client()
        if self._client is None:
            client = globus_sdk.TransferClient(
                app=self._credentials.app(), retry_config=short_retry_config()
            )
            if self._http_timeout is not None:
                client.transport.http_timeout = self._http_timeout
            consented = self._credentials.consented_endpoints
            if consented:
                client.add_app_data_access_scope(consented)
            self._client = client
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._credentials.reset()

    def _call(self, action: Callable[[globus_sdk.TransferClient], T]) -> T:
        """Run one client call; turn every failure into the engine's error classes."""
        try:
            return action(self._transfer_client())
        except GlobusAuthError as exc:
            raise CredentialsRequired(str(exc)) from None
        except TokenValidationError:
            raise CredentialsRequired(EXPIRED_MESSAGE) from None
        except globus_sdk.GlobusAPIError as exc:
            raise self._classify(exc) from None
        except globus_sdk.NetworkError as exc:
            raise TransientBackendError(
                f"cannot reach Globus ({type(exc).__name__})"
            ) from None

    def _classify(self, exc: globus_sdk.GlobusAPIError) -> BackendError:
        """Decide by status, code and structured info; never by the message text."""
        status = exc.http_status
        retry_after = retry_after_seconds(exc.headers)
        if isinstance(exc, globus_sdk.AuthAPIError):
            # Renewing a token (or a service account's grant) failed at Globus Auth.
            if status == 429 or status >= 500:
                return TransientBackendError(
                    f"Globus Auth is unavailable (HTTP {status})",
                    retry_after=retry_after,
                )
            return CredentialsRequired(self._refused_login(status))
        if status == 401:
            return CredentialsRequired(self._refused_login(status))

        needed = _authorization_needed(exc)
        if needed is not None:
            return self._consent_needed(needed)
        if status in (408, 429) or status >= 500:
            return TransientBackendError(
                f"Globus answered HTTP {status} {exc.code}", retry_after=retry_after
            )
        return PermanentBackendError(
            f"Globus refused the request: HTTP {status} {exc.code}: "
            f"{_one_line(exc.message)}"
        )

    def _refused_login(self, status: int) -> str:
        account = self._credentials.service_account
        if account is None:
            return EXPIRED_MESSAGE
        return (
            f"Globus Auth refused service account {account.client_id} (HTTP {status}): "
            "check GLOBUS_CLIENT_ID and GLOBUS_CLIENT_SECRET"
        )

    def _consent_needed(self, endpoints: tuple[str, ...]) -> BackendError:
        if not endpoints:
            return CredentialsRequired(
                "Globus asks for a new login session for this transfer: run "
                "'balsam-tui login'"
            )
        names = ", ".join(endpoints)
        if self._credentials.add_service_consents(endpoints):
            self._drop_client()
            return TransientBackendError(
                f"Globus asked for data_access consent to {names}; the service "
                "account asks for it and tries again",
                retry_after=1.0,
            )
        if self._credentials.is_service_account:
            return CredentialsRequired(
                f"Globus refused {self._credentials.who} on collection {names} even "
                "with a data_access consent: give it access to the collection",
                endpoints=endpoints,
            )
        self._credentials.note_consent_needed(endpoints)
        flags = " ".join(f"--endpoint {endpoint}" for endpoint in endpoints)
        return CredentialsRequired(
            f"Globus needs your consent to use collection {names}: run "
            f"'balsam-tui login {flags}'",
            endpoints=endpoints,
        )


def _authorization_needed(exc: globus_sdk.GlobusAPIError) -> tuple[str, ...] | None:
    """The collections a consent error names (maybe none); None if it is no such."""
    scopes: list[str] = []
    consent = exc.info.consent_required
    if consent:
        scopes.extend(consent.required_scopes)
    gare = to_gare(exc)
    if gare is not None:
        scopes.extend(gare.authorization_parameters.required_scopes or [])
    if not consent and gare is None:
        return None
    return data_access_collections(scopes)


def _progress(asked: InFlightTask, document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "task_id": asked.task_id,
        "backend_task_id": str(document.get("task_id") or asked.backend_task_id),
        "files_total": int(
            document.get("files") or document.get("subtasks_total") or 0
        ),
        "files_done": int(document.get("files_transferred") or 0),
        "files_failed": int(document.get("subtasks_skipped_errors") or 0),
        "bytes_done": int(document.get("bytes_transferred") or 0),
        "bytes_per_second": float(document.get("effective_bytes_per_second") or 0.0),
        "status_text": status_text(document),
    }


def _lost(asked: InFlightTask, why: str) -> TaskStatus:
    return TaskStatus(
        task_id=asked.task_id,
        state=RemoteState.LOST,
        backend_task_id=asked.backend_task_id,
        status_text=f"lost: {why}",
    )
