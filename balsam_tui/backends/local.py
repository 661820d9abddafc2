"""The ``local://`` backend: copies transfer items on this machine with a few threads.

Each transfer task is a queue of items; a small shared pool of worker threads takes
one item at a time from the tasks in turn, so a small task submitted behind a large
one is not kept waiting for all of it. Every item is checked before anything is
written: its source, with symlinks resolved, must lie inside ``source_root`` and its
destination directory inside ``destination_root``. A file is written under a hidden
temporary name in the destination directory, its size is compared with the source,
and only then is it renamed onto the final name, so a reader never sees half a file.
The temporary name is fixed per item (``.<name>.<item id>.part``), so when a killed
process leaves one behind, redoing the item overwrites and renames it away. There is
no fsync: the rename protects against a killed process, not against a power loss.

Traps:

- The confinement check and the copy are two steps. A path that someone swaps for a
  symlink between the two is not caught; the check is against mistakes and job
  inputs, not against a user racing the tool on their own files.
- A task is forgotten once ``poll`` has reported it finished, so memory stays flat
  over a long run. Asking about it again, or asking a new instance after a restart,
  answers LOST, and the engine submits it again under the same submission id:
  copying again is harmless because every item is replaced atomically.
- A task whose every item failed still SUCCEEDED; its outcomes carry the failures.
  Locally there is no failure of a task as a whole.
- Because the temporary name is fixed per item, two live copies of the same item
  (possible only when a backend is rebuilt while an old copy is still running)
  share it; one of them then fails with a transient error and is retried. The
  final file is never left half-written either way.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from balsam_tui.backends.base import (
    FINISHED_REMOTE_STATES,
    FileCopy,
    FileOutcome,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
    TransientBackendError,
    WakeCallback,
)
from balsam_tui.backends.copier import Copier, CopierDied
from balsam_tui.locations import inside

logger = logging.getLogger(__name__)

# Failures that come back the same on every retry until someone changes the files.
# Anything else (a full disk, an I/O error, a size that changed mid-copy) may pass.
PERMANENT_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)

_PROBLEMS: dict[type[OSError], str] = {
    FileNotFoundError: "{side} not found: {path}",
    PermissionError: "permission denied on {side}: {path}",
    IsADirectoryError: "{side} is a directory: {path}",
    NotADirectoryError: "{side} is not a directory: {path}",
    FileExistsError: "a file is in the way of the {side} directory: {path}",
}

# Items handed to a copy worker process at once: enough to make the round trip
# cheap, few enough that tasks still take turns and progress moves smoothly.
CHUNK = 16

# Keeps temporary names (".<name>.<item id>.part") under the 255-byte name limit.
_NAME_KEPT_IN_TEMPORARY = 100


class ItemFailed(Exception):
    """One transfer item cannot be copied; ``reason`` is the line shown to people."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class LocalBackend:
    """Copies the items of transfer tasks on this machine, in the background.

    ``workers`` threads are shared by all tasks. ``wake`` is called once, from a
    worker thread, each time a task finishes, so the engine can reconcile at once.
    """

    protocol = "local"

    def __init__(self, workers: int = 4, wake: WakeCallback | None = None) -> None:
        if workers < 1:
            raise ValueError(
                f"the local backend needs at least one worker, not {workers}"
            )
        self._workers = workers
        self._wake = wake
        self._changed = threading.Condition(threading.Lock())
        self._tasks: dict[str, _Task] = {}
        self._turns: deque[_Task] = deque()
        self._threads: list[threading.Thread] = []
        self._closing = False

    def new_submission_id(self) -> str:
        return str(uuid.uuid4())

    def submit(self, spec: TaskSpec) -> str:
        """Queue every item of the task; a repeat of a known submission is a no-op."""
        with self._changed:
            if self._closing:
                raise TransientBackendError("the local backend is closed")
            known = self._tasks.get(spec.submission_id)
            if known is not None:
                return known.backend_task_id

            task = _Task(
                task_id=spec.task_id,
                backend_task_id=f"local-{spec.task_id}",
                waiting=deque(spec.files),
                files_total=len(spec.files),
                started=time.monotonic(),
            )
            self._tasks[spec.submission_id] = task
            self._start_threads()
            if task.waiting:
                self._turns.append(task)
                self._changed.notify(min(len(task.waiting), self._workers))
            finished_now = task.settle(time.monotonic())

        logger.debug(
            "local task %s (%s) submitted: %d items",
            spec.task_id,
            task.backend_task_id,
            task.files_total,
        )
        if finished_now:
            self._call_wake()
        return task.backend_task_id

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        """Report on each task; a finished task is reported once, then forgotten."""
        now = time.monotonic()
        report: dict[int, TaskStatus] = {}
        with self._changed:
            for asked in tasks:
                task = self._tasks.get(asked.submission_id)
                if task is None or task.task_id != asked.task_id:
                    report[asked.task_id] = TaskStatus(
                        task_id=asked.task_id,
                        state=RemoteState.LOST,
                        backend_task_id=asked.backend_task_id,
                        status_text="not known to this local backend",
                    )
                    continue
                status = task.status(now)
                if status.state in FINISHED_REMOTE_STATES:
                    del self._tasks[asked.submission_id]
                report[asked.task_id] = status
        return report

    def cancel(self, task: InFlightTask) -> None:
        """Skip the items not yet started; the task turns CANCELLED once idle."""
        with self._changed:
            known = self._tasks.get(task.submission_id)
            if known is None or known.finished is not None:
                return
            known.cancelled = True
            known.waiting.clear()
            if known in self._turns:
                self._turns.remove(known)
            finished_now = known.settle(time.monotonic())

        logger.debug("local task %s cancelled", task.task_id)
        if finished_now:
            self._call_wake()

    def close(self, timeout: float = 5.0) -> None:
        """Drop queued items and give running copies ``timeout`` seconds to end."""
        with self._changed:
            self._closing = True
            self._turns.clear()
            self._tasks.clear()
            self._changed.notify_all()
            threads, self._threads = self._threads, []

        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        still_running = sum(thread.is_alive() for thread in threads)
        if still_running:
            logger.warning(
                "local backend closed with %d copies still running; they are abandoned",
                still_running,
            )

    def _start_threads(self) -> None:
        # Started on first use, so an instance built only to answer polls costs none.
        while len(self._threads) < self._workers:
            thread = threading.Thread(
                target=self._work,
                name=f"balsam-local-copy-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        copier = Copier()
        try:
            while True:
                with self._changed:
                    while not self._turns and not self._closing:
                        self._changed.wait()
                    if self._closing:
                        return
                    task = self._turns.popleft()
                    chunk = [
                        task.waiting.popleft()
                        for _ in range(min(CHUNK, len(task.waiting)))
                    ]
                    if task.waiting:
                        self._turns.append(task)
                    task.running += len(chunk)

                outcomes = _copy_chunk(copier, task.task_id, chunk)

                with self._changed:
                    task.running -= len(chunk)
                    for outcome in outcomes:
                        task.record(outcome)
                    finished_now = task.settle(time.monotonic())
                if finished_now and not self._closing:
                    self._call_wake()
        finally:
            copier.close()

    def _call_wake(self) -> None:
        if self._wake is None:
            return
        try:
            self._wake()
        except Exception:
            logger.exception("the engine's wake callback raised; carrying on")


@dataclass(eq=False)
class _Task:
    """One submitted task; every field is guarded by the backend's lock."""

    task_id: int
    backend_task_id: str
    waiting: deque[FileCopy]
    files_total: int
    started: float
    running: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_done: int = 0
    outcomes: list[FileOutcome] = field(default_factory=list)
    cancelled: bool = False
    finished: float | None = None

    def record(self, outcome: FileOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.ok:
            self.files_done += 1
            self.bytes_done += outcome.bytes
        else:
            self.files_failed += 1

    def settle(self, now: float) -> bool:
        """Mark the task finished if nothing is left; true only on that transition."""
        if self.finished is not None or self.waiting or self.running:
            return False
        self.finished = now
        return True

    def status(self, now: float) -> TaskStatus:
        elapsed = (self.finished if self.finished is not None else now) - self.started
        settled = self.files_done + self.files_failed
        if self.finished is None:
            state = RemoteState.ACTIVE
            text = f"copying {settled}/{self.files_total} files"
            if self.files_failed:
                text += f", {self.files_failed} failed"
        elif self.cancelled:
            state = RemoteState.CANCELLED
            text = f"cancelled after {settled}/{self.files_total} files"
        else:
            state = RemoteState.SUCCEEDED
            text = (
                f"{self.files_failed} of {self.files_total} failed"
                if self.files_failed
                else "done"
            )
        return TaskStatus(
            task_id=self.task_id,
            state=state,
            backend_task_id=self.backend_task_id,
            files_total=self.files_total,
            files_done=self.files_done,
            files_failed=self.files_failed,
            bytes_done=self.bytes_done,
            # The sizes of items not yet reached are unknown until a worker gets there.
            bytes_total=None if self.finished is None else self.bytes_done,
            bytes_per_second=self.bytes_done / elapsed if elapsed > 0 else 0.0,
            status_text=text,
            outcomes=() if self.finished is None else tuple(self.outcomes),
        )


class _Resolver:
    """Resolves and confines one task's paths, remembering directories already done.

    Items of a batch mostly share a few directories; resolving each directory once
    turns a dozen ``lstat`` calls per item into one. Worker threads may race to fill
    the same entry, which only repeats the work.
    """

    def __init__(self) -> None:
        self._real: dict[str, str] = {}
        self._destination_directories: dict[str, str] = {}

    def real(self, path: str) -> str:
        real = self._real.get(path)
        if real is None:
            real = self._real[path] = os.path.realpath(path)
        return real

    def source(self, item: FileCopy) -> tuple[str, os.stat_result]:
        """The resolved source path and its status; raise if it leaves its root."""
        parent, name = os.path.split(item.source)
        root = self.real(item.source_root)
        try:
            status = os.lstat(item.source)
            if stat.S_ISLNK(status.st_mode) or name in ("", ".", ".."):
                real = os.path.realpath(item.source)
                _confine("source", item.source, real, item.source_root, root)
                status = os.stat(real)
            else:
                real = os.path.join(self.real(parent), name)
                _confine("source", item.source, real, item.source_root, root)
        except OSError as error:
            raise _explain(error, "source", item.source) from None
        return real, status

    def destination(self, item: FileCopy) -> tuple[str, str]:
        """The resolved, existing destination directory and the item's file name.

        Symlinks in the part of the path that exists are resolved before any missing
        directory is created, and the missing ones are created under the resolved
        path, so neither a symlinked directory nor ``..`` can lead outside the root.
        """
        parent, name = os.path.split(item.destination.rstrip("/"))
        if name in ("", ".", ".."):
            raise ItemFailed(
                f"destination does not end in a file name: {item.destination}",
                permanent=True,
            )
        directory = self._destination_directories.get(parent)
        if directory is None:
            directory = os.path.realpath(parent)
            root = self.real(item.destination_root)
            _confine(
                "destination", item.destination, directory, item.destination_root, root
            )
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as error:
                raise _explain(error, "destination", item.destination) from None
            self._destination_directories[parent] = directory
        return directory, name


def _copy_chunk(
    copier: Copier, task_id: int, chunk: list[FileCopy]
) -> list[FileOutcome]:
    """Copy a chunk in the thread's worker process; a dead worker fails it, to retry."""
    try:
        return copier.copy(task_id, chunk)
    except CopierDied as exc:
        logger.warning("%s; %d item(s) will be retried", exc, len(chunk))
        return [
            FileOutcome(item.item_id, ok=False, error=str(exc), permanent=False)
            for item in chunk
        ]


def _confine(side: str, path: str, real: str, root: str, real_root: str) -> None:
    if not inside(real, real_root):
        raise ItemFailed(
            f"{side} {path} resolves to {real}, outside its root {root}",
            permanent=True,
        )


def _explain(error: OSError, side: str, path: str) -> ItemFailed:
    """Turn an OS error into a one-line reason, classified by the error's type."""
    template = _PROBLEMS.get(type(error))
    if template is None:
        reason = f"{side} {path}: {error.strerror or error}"
    else:
        reason = template.format(side=side, path=path)
    return ItemFailed(reason, permanent=isinstance(error, PERMANENT_ERRORS))


def _copy_item_or_report(item: FileCopy, resolver: _Resolver) -> FileOutcome:
    """Copy one item and describe how it went; never raises."""
    try:
        if item.recursive:
            size = _copy_tree(item, resolver)
        else:
            size = _copy_file(item, resolver)
    except ItemFailed as failure:
        logger.debug("item %s failed: %s", item.item_id, failure.reason)
        return FileOutcome(
            item.item_id, ok=False, error=failure.reason, permanent=failure.permanent
        )
    except Exception as error:
        # A bug, not a file problem: keep the worker alive and let the item retry.
        logger.exception("unexpected error copying item %s", item.item_id)
        return FileOutcome(
            item.item_id,
            ok=False,
            error=f"unexpected error copying {item.source}: {error!r}",
            permanent=False,
        )
    return FileOutcome(item.item_id, ok=True, bytes=size)


def _copy_file(item: FileCopy, resolver: _Resolver) -> int:
    source, status = resolver.source(item)
    if stat.S_ISDIR(status.st_mode):
        raise ItemFailed(
            f"source is a directory; mark the item recursive to copy it: {item.source}",
            permanent=True,
        )
    if not stat.S_ISREG(status.st_mode):
        raise ItemFailed(f"source is not a regular file: {item.source}", permanent=True)
    directory, name = resolver.destination(item)

    temporary = _temporary_path(directory, name, item.item_id)
    try:
        _write_file(source, status, temporary, item, shown=item.source)
        try:
            os.replace(temporary, os.path.join(directory, name))
        except OSError as error:
            raise _explain_write(error, item) from None
    except BaseException:
        _discard_file(temporary)
        raise
    return status.st_size


def _write_file(
    source: str,
    status: os.stat_result,
    temporary: str,
    item: FileCopy,
    *,
    shown: str,
) -> None:
    """Copy ``source`` to ``temporary`` with its mode; raise unless the size matches.

    ``shown`` is how errors about the source name it (the path the job gave). The
    temporary is created exclusively: a leftover from a killed copy, or a symlink
    planted under this predictable name, is removed first, never written through.
    """
    mode = stat.S_IMODE(status.st_mode)
    try:
        source_fd = os.open(source, os.O_RDONLY)
    except OSError as error:
        raise _explain(error, "source", shown) from None
    try:
        target_fd = _create_exclusive(temporary)
        try:
            written = _copy_bytes(source_fd, target_fd)
            os.fchmod(target_fd, mode)
        finally:
            os.close(target_fd)
    except OSError as error:
        raise _explain_write(error, item) from None
    finally:
        os.close(source_fd)
    if written != status.st_size:
        raise ItemFailed(
            f"size of {shown} changed while copying "
            f"({status.st_size} bytes expected, {written} written)",
            permanent=False,
        )


def _create_exclusive(path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        os.unlink(path)  # removes a symlink itself, not what it points at
        return os.open(path, flags, 0o600)


def _copy_bytes(source_fd: int, target_fd: int) -> int:
    """Copy a file between descriptors, in the kernel where it can; bytes copied."""
    written = 0
    try:
        while True:
            sent = os.sendfile(target_fd, source_fd, written, 1 << 30)
            if sent == 0:
                return written
            written += sent
    except OSError as error:
        if written or error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
    # No sendfile between these files (another OS, an odd filesystem): plain reads.
    while chunk := os.read(source_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view) :]
        written += len(chunk)
    return written


def _explain_write(error: OSError, item: FileCopy) -> ItemFailed:
    """Explain an error met while writing or installing the item's temporary copy."""
    if type(error) not in _PROBLEMS:
        # A full disk or an I/O error mid-copy names the source file too, so the
        # sentence does not guess which side it came from.
        return ItemFailed(
            f"copying {item.source} to {item.destination} failed: "
            f"{error.strerror or error}",
            permanent=False,
        )
    if isinstance(error, FileNotFoundError):
        # The temporary vanished under us: a clean-up, or a second copy of the same
        # item (a backend rebuilt while an old copy still ran). Trying again works.
        return ItemFailed(
            f"destination changed while copying: {item.destination}", permanent=False
        )
    return _explain(error, "destination", item.destination)


@dataclass
class _TreePlan:
    """Everything a directory copy will create, found before anything is written."""

    mode: int
    directories: list[tuple[str, int]] = field(default_factory=list)
    files: list[tuple[str, str, os.stat_result]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(status.st_size for _relative, _source, status in self.files)


def _copy_tree(item: FileCopy, resolver: _Resolver) -> int:
    top, status = resolver.source(item)
    if not stat.S_ISDIR(status.st_mode):
        raise ItemFailed(
            f"source is not a directory, but the item is recursive: {item.source}",
            permanent=True,
        )
    plan = _plan_tree(item, top, status, resolver.real(item.source_root))
    directory, name = resolver.destination(item)

    temporary = _temporary_path(directory, name, item.item_id)
    old = _temporary_path(directory, name, item.item_id, suffix=".old")
    # Leftovers of a killed copy of this same item.
    _discard(temporary)
    _discard(old)
    try:
        _build_tree(plan, temporary, item)
        _install_tree(temporary, os.path.join(directory, name), old, item)
    except BaseException:
        _discard_tree(temporary)
        raise
    return plan.size


def _plan_tree(
    item: FileCopy, top: str, status: os.stat_result, real_root: str
) -> _TreePlan:
    """List the tree under ``top``, following symlinks that stay inside the root."""
    plan = _TreePlan(mode=stat.S_IMODE(status.st_mode))
    pending: list[tuple[str, str, frozenset[str]]] = [(top, "", frozenset((top,)))]
    while pending:
        directory, relative_directory, ancestors = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except OSError as error:
            raise _explain(error, "source", directory) from None

        for entry in listed:
            relative = os.path.join(relative_directory, entry.name)
            try:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    _confine("source", entry.path, real, item.source_root, real_root)
                    entry_status = os.stat(real)
                else:
                    real = entry.path
                    entry_status = entry.stat(follow_symlinks=False)
            except OSError as error:
                raise _explain(error, "source", entry.path) from None

            mode = entry_status.st_mode
            if stat.S_ISDIR(mode):
                if real in ancestors:
                    raise ItemFailed(
                        f"source {item.source} has a symlink loop at {entry.path}",
                        permanent=True,
                    )
                plan.directories.append((relative, stat.S_IMODE(mode)))
                pending.append((real, relative, ancestors | {real}))
            elif stat.S_ISREG(mode):
                plan.files.append((relative, real, entry_status))
            else:
                raise ItemFailed(
                    f"source {entry.path} is neither a file nor a directory",
                    permanent=True,
                )
    return plan


def _build_tree(plan: _TreePlan, temporary: str, item: FileCopy) -> None:
    """Write the planned tree under ``temporary``, modes last so writing stays open."""
    try:
        os.mkdir(temporary, 0o700)
        for relative, _mode in plan.directories:
            os.mkdir(os.path.join(temporary, relative), 0o700)
    except OSError as error:
        raise _explain_write(error, item) from None

    for relative, source, status in plan.files:
        _write_file(
            source, status, os.path.join(temporary, relative), item, shown=source
        )

    try:
        for relative, mode in reversed(plan.directories):
            os.chmod(os.path.join(temporary, relative), mode)
        os.chmod(temporary, plan.mode)
    except OSError as error:
        raise _explain_write(error, item) from None


def _install_tree(temporary: str, target: str, old: str, item: FileCopy) -> None:
    """Rename the finished tree onto ``target``, replacing a directory already there.

    A directory cannot be renamed over a non-empty one, so the old one is first moved
    aside under a hidden name and removed afterwards; for that instant the target is
    absent, which is the price of never showing a mixed tree.
    """
    try:
        existing = os.lstat(target)
    except FileNotFoundError:
        existing = None
    except OSError as error:
        raise _explain_write(error, item) from None

    if existing is None or not (
        stat.S_ISDIR(existing.st_mode) or stat.S_ISLNK(existing.st_mode)
    ):
        try:
            os.rename(temporary, target)
        except OSError as error:
            raise _explain_write(error, item) from None
        return

    try:
        os.rename(target, old)
        try:
            os.rename(temporary, target)
        except OSError:
            os.rename(old, target)
            raise
    except OSError as error:
        raise _explain_write(error, item) from None
    _discard(old)


def _temporary_path(
    directory: str, name: str, item_id: int, suffix: str = ".part"
) -> str:
    hidden = f".{name[:_NAME_KEPT_IN_TEMPORARY]}.{item_id}{suffix}"
    return os.path.join(directory, hidden)


def _discard(path: str) -> None:
    """Remove whatever is at ``path``: a tree, a file, or a symlink (not its target)."""
    try:
        is_tree = stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return
    if is_tree:
        _discard_tree(path)
    else:
        _discard_file(path)


def _discard_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _discard_tree(path: str) -> None:
    """Remove a real directory tree, opening up directories whose modes forbid it."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    for directory, subdirectories, _files in os.walk(path):
        for subdirectory in subdirectories:
            child = os.path.join(directory, subdirectory)
            if not os.path.islink(child):
                try:
                    os.chmod(child, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        logger.warning("could not remove the temporary tree %s", path)
