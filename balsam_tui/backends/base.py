"""What every transfer backend offers the engine, and what it reports back.

A backend moves the files of one batch (a *transfer task*) and answers, for many
tasks at once, how far each has got. The engine owns all state: a backend may be
rebuilt at any time (after a crash, a settings reload) and must then answer
``TaskStatus(state=LOST)`` for tasks it no longer knows, so the engine can submit
them again under the same submission id.

Errors are classified here, once, by type: the engine never reads an error's text to
decide what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from balsam_tui.locations import Location
from balsam_tui.states import StrEnum


@dataclass(frozen=True)
class FileCopy:
    """One transfer item of a batch, with both ends resolved.

    ``source`` and ``destination`` are absolute paths in the namespaces of the two
    sides; ``source_root`` and ``destination_root`` are the directories each path must
    stay inside once symlinks are resolved (the location's root, the job's workdir).
    """

    item_id: int
    source: str
    destination: str
    source_root: str
    destination_root: str
    recursive: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """Everything a backend needs to run one batch; rebuilt from the store at will."""

    task_id: int
    submission_id: str
    label: str
    direction: str
    location: Location
    files: tuple[FileCopy, ...]


class RemoteState(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


FINISHED_REMOTE_STATES = (
    RemoteState.SUCCEEDED,
    RemoteState.FAILED,
    RemoteState.CANCELLED,
)


@dataclass(frozen=True)
class FileOutcome:
    """How one item of a finished (or stuck) task ended.

    ``permanent`` is true for failures retrying cannot fix by itself (a missing source
    file, a permission, a path outside its root); the operator has to act on those.
    """

    item_id: int
    ok: bool
    error: str | None = None
    permanent: bool = False
    bytes: int = 0


@dataclass(frozen=True)
class TaskStatus:
    """A backend's answer about one task.

    ``outcomes`` lists per-item results. A finished task must list every item that
    failed; items it does not list are taken as done when the task succeeded and as
    failed with ``fatal_error`` when it failed. A task that is ``stuck`` (still
    active, but on an error it will not get past) lists the items to fail; the engine
    cancels it and returns the others to pending.
    """

    task_id: int
    state: RemoteState
    backend_task_id: str | None = None
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None
    bytes_per_second: float = 0.0
    status_text: str = ""
    stuck: bool = False
    fatal_error: str | None = None
    outcomes: tuple[FileOutcome, ...] = field(default=())


@dataclass(frozen=True)
class InFlightTask:
    """What the engine tells a backend about a task it is asking after.

    ``load_spec`` rebuilds the task's spec from the store (its still-unsettled items
    with both ends resolved). It costs a query, so a backend calls it only when it
    must map the service's per-file report back to items; it is ``None`` where the
    engine has nothing to offer (a cancel).
    """

    task_id: int
    backend_task_id: str | None
    submission_id: str
    load_spec: Callable[[], TaskSpec] | None = field(default=None, compare=False)


class BackendError(Exception):
    """A backend call failed. ``transient`` errors are retried after a backoff."""

    transient: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientBackendError(BackendError):
    transient = True


class PermanentBackendError(BackendError):
    transient = False


class CredentialsRequired(BackendError):
    """The service needs a new login or a consent; work waits instead of failing.

    ``endpoints`` names the collections that need a ``data_access`` consent, empty
    when the whole login has expired or was revoked.
    """

    transient = True

    def __init__(self, message: str, *, endpoints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.endpoints = tuple(endpoints)


class Backend(Protocol):
    """The interface the engine drives. Every method is called from one thread."""

    protocol: str
    #: The least time, in seconds, between two polls (a service's rate limits).
    min_poll_interval: float

    def new_submission_id(self) -> str:
        """A fresh id that makes a later repeat of the same submission a no-op."""
        ...

    def submit(self, spec: TaskSpec) -> str:
        """Start the task (idempotent on ``spec.submission_id``); return its id."""
        ...

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        """Report on many tasks in as few service requests as possible."""
        ...

    def cancel(self, task: InFlightTask) -> None:
        """Ask the service to stop the task; its status then turns CANCELLED."""
        ...

    def close(self) -> None:
        """Release threads and connections."""
        ...


WakeCallback = Callable[[], None]
