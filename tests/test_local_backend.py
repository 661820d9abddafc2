"""The local backend against real files: copies, confinement, atomicity, lifecycle."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from balsam_tui.backends.base import (
    FINISHED_REMOTE_STATES,
    FileCopy,
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
    TransientBackendError,
)
from balsam_tui.backends.local import CHUNK, LocalBackend, _explain
from balsam_tui.locations import parse_location

T = TypeVar("T")

_task_ids = itertools.count(1)
_item_ids = itertools.count(1)


def wait_until(condition: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s")
        time.sleep(0.005)


class WakeRecorder:
    """A wake callback that counts its calls and can hold a worker on a chosen call."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._holds: dict[int, threading.Event] = {}

    def hold_on(self, call: int) -> threading.Event:
        """Block the worker making the ``call``-th wake until the event is set."""
        release = self._holds[call] = threading.Event()
        return release

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            release = self._holds.get(self.calls)
        if release is not None:
            release.wait(10)


@pytest.fixture
def wake() -> WakeRecorder:
    return WakeRecorder()


@pytest.fixture
def backend(wake: WakeRecorder) -> Iterator[LocalBackend]:
    local = LocalBackend(workers=4, wake=wake)
    yield local
    local.close()


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    source_root, workdir = tmp_path / "data", tmp_path / "work" / "job1"
    source_root.mkdir()
    workdir.mkdir(parents=True)
    return source_root, workdir


def item(
    source: Path,
    destination: Path,
    source_root: Path,
    destination_root: Path,
    *,
    recursive: bool = False,
) -> FileCopy:
    return FileCopy(
        item_id=next(_item_ids),
        source=str(source),
        destination=str(destination),
        source_root=str(source_root),
        destination_root=str(destination_root),
        recursive=recursive,
    )


def task(*files: FileCopy, submission_id: str | None = None) -> TaskSpec:
    task_id = next(_task_ids)
    return TaskSpec(
        task_id=task_id,
        submission_id=submission_id or f"submission-{task_id}",
        label=f"test task {task_id}",
        direction="in",
        location=parse_location("data", "local:///data"),
        files=files,
    )


def asked(spec: TaskSpec, backend_task_id: str | None = None) -> InFlightTask:
    return InFlightTask(spec.task_id, backend_task_id, spec.submission_id)


def finished_status(backend: LocalBackend, spec: TaskSpec) -> TaskStatus:
    def finished() -> TaskStatus | None:
        status = backend.poll([asked(spec)])[spec.task_id]
        return status if status.state in FINISHED_REMOTE_STATES else None

    return wait_until(finished)


def run(backend: LocalBackend, spec: TaskSpec) -> TaskStatus:
    backend.submit(spec)
    return finished_status(backend, spec)


def leftovers(*directories: Path) -> list[Path]:
    return [
        path
        for directory in directories
        for path in directory.rglob("*")
        if path.name.endswith((".part", ".old"))
    ]


def failures(status: TaskStatus) -> dict[int, tuple[str | None, bool]]:
    return {o.item_id: (o.error, o.permanent) for o in status.outcomes if not o.ok}


def test_batch_of_files_is_copied_byte_identical_with_modes(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    files = []
    for number in range(60):
        source = source_root / f"run{number % 3}" / f"f{number}.dat"
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(os.urandom(number * 1000))
        source.chmod(0o640 if number % 2 else 0o755)
        destination = workdir / f"sub{number % 4}" / source.name
        files.append(item(source, destination, source_root, workdir))

    status = run(backend, task(*files))

    assert status.state is RemoteState.SUCCEEDED
    assert (status.files_total, status.files_done, status.files_failed) == (60, 60, 0)
    assert status.status_text == "done"
    assert sorted(o.item_id for o in status.outcomes if o.ok) == sorted(
        f.item_id for f in files
    )
    expected_bytes = sum(number * 1000 for number in range(60))
    assert status.bytes_done == status.bytes_total == expected_bytes
    for copy in files:
        source, destination = Path(copy.source), Path(copy.destination)
        assert destination.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(destination.stat().st_mode) == stat.S_IMODE(
            source.stat().st_mode
        )
    assert leftovers(workdir) == []


def test_missing_source_fails_only_that_item_permanently(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "here.dat").write_bytes(b"present")
    good = item(source_root / "here.dat", workdir / "here.dat", source_root, workdir)
    missing = item(source_root / "gone.dat", workdir / "gone.dat", source_root, workdir)

    status = run(backend, task(good, missing))

    assert status.state is RemoteState.SUCCEEDED
    assert (status.files_done, status.files_failed) == (1, 1)
    assert status.status_text == "1 of 2 failed"
    assert failures(status) == {
        missing.item_id: (f"source not found: {source_root / 'gone.dat'}", True)
    }
    assert (workdir / "here.dat").read_bytes() == b"present"
    assert not (workdir / "gone.dat").exists()
    assert leftovers(workdir) == []


def test_task_whose_every_item_failed_still_succeeds_with_failures(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    missing = item(source_root / "gone.dat", workdir / "gone.dat", source_root, workdir)

    status = run(backend, task(missing))

    assert status.state is RemoteState.SUCCEEDED
    assert failures(status).keys() == {missing.item_id}


def test_source_symlink_leading_outside_its_root_fails_and_writes_nothing(
    backend: LocalBackend, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    source_root, workdir = roots
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (source_root / "innocent.txt").symlink_to(secret)
    copy = item(
        source_root / "innocent.txt", workdir / "innocent.txt", source_root, workdir
    )

    status = run(backend, task(copy))

    error, permanent = failures(status)[copy.item_id]
    assert permanent
    assert "outside its root" in error
    assert list(workdir.iterdir()) == []


def test_source_symlink_staying_inside_its_root_is_followed(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "real.txt").write_text("content")
    (source_root / "alias.txt").symlink_to(source_root / "real.txt")
    copy = item(source_root / "alias.txt", workdir / "alias.txt", source_root, workdir)

    status = run(backend, task(copy))

    assert failures(status) == {}
    assert not (workdir / "alias.txt").is_symlink()
    assert (workdir / "alias.txt").read_text() == "content"


def test_destination_through_symlinked_directory_outside_root_fails_and_writes_nothing(
    backend: LocalBackend, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "escape").symlink_to(outside)
    copy = item(
        source_root / "x.dat",
        workdir / "escape" / "deeper" / "x.dat",
        source_root,
        workdir,
    )

    status = run(backend, task(copy))

    error, permanent = failures(status)[copy.item_id]
    assert permanent
    assert error.startswith(f"destination {copy.destination} resolves to ")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("side", ["source", "destination"])
def test_parent_reference_cannot_leave_the_root(
    backend: LocalBackend, roots: tuple[Path, Path], tmp_path: Path, side: str
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    (tmp_path / "above.dat").write_bytes(b"above")
    if side == "source":
        source, destination = source_root / ".." / "above.dat", workdir / "x.dat"
    else:
        source, destination = source_root / "x.dat", workdir / ".." / ".." / "new" / "x"

    status = run(backend, task(item(source, destination, source_root, workdir)))

    [(error, permanent)] = failures(status).values()
    assert permanent
    assert "outside its root" in error
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "new").exists()


def test_source_directory_without_recursive_fails_permanently(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "tree").mkdir()
    copy = item(source_root / "tree", workdir / "tree", source_root, workdir)

    status = run(backend, task(copy))

    error, permanent = failures(status)[copy.item_id]
    assert permanent
    assert "recursive" in error
    assert list(workdir.iterdir()) == []


def test_file_onto_an_existing_directory_fails_and_leaves_no_temporary(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x" * 5000)
    (workdir / "x.dat").mkdir()
    copy = item(source_root / "x.dat", workdir / "x.dat", source_root, workdir)

    status = run(backend, task(copy))

    assert failures(status) == {
        copy.item_id: (f"destination is a directory: {copy.destination}", True)
    }
    assert leftovers(workdir) == []
    assert list(workdir.iterdir()) == [workdir / "x.dat"]


def test_a_copy_redone_after_a_kill_replaces_its_leftover_temporary(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"whole")
    copy = item(source_root / "x.dat", workdir / "x.dat", source_root, workdir)
    (workdir / f".x.dat.{copy.item_id}.part").write_bytes(b"ha")

    status = run(backend, task(copy))

    assert failures(status) == {}
    assert (workdir / "x.dat").read_bytes() == b"whole"
    assert leftovers(workdir) == []


def test_a_symlink_planted_at_the_temporary_name_is_not_written_through(
    backend: LocalBackend, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"payload")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    copy = item(source_root / "x.dat", workdir / "x.dat", source_root, workdir)
    (workdir / f".x.dat.{copy.item_id}.part").symlink_to(victim)

    status = run(backend, task(copy))

    assert failures(status) == {}
    assert victim.read_text() == "untouched"
    assert (workdir / "x.dat").read_bytes() == b"payload"
    assert leftovers(workdir) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_source_fails_permanently(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    locked = source_root / "locked.dat"
    locked.write_bytes(b"x")
    locked.chmod(0)
    copy = item(locked, workdir / "locked.dat", source_root, workdir)

    status = run(backend, task(copy))

    assert failures(status) == {
        copy.item_id: (f"permission denied on source: {locked}", True)
    }
    assert leftovers(workdir) == []


def test_existing_destination_file_is_replaced(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"new")
    (workdir / "x.dat").write_bytes(b"old and longer")

    run(
        backend,
        task(item(source_root / "x.dat", workdir / "x.dat", source_root, workdir)),
    )

    assert (workdir / "x.dat").read_bytes() == b"new"


def make_tree(top: Path) -> dict[str, bytes]:
    contents = {
        "a.txt": b"a",
        "inner/b.bin": os.urandom(70_000),
        "inner/deeper/c.txt": b"c" * 10,
        "empty.txt": b"",
    }
    for relative, data in contents.items():
        path = top / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (top / "vacant").mkdir()
    return contents


def files_under(top: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(top)): path.read_bytes()
        for path in top.rglob("*")
        if path.is_file()
    }


def test_recursive_item_copies_a_directory_tree_replacing_the_old_one(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    contents = make_tree(source_root / "inputs")
    (source_root / "inputs" / "link.txt").symlink_to(source_root / "inputs" / "a.txt")
    contents["link.txt"] = b"a"
    (workdir / "inputs").mkdir()
    (workdir / "inputs" / "stale.txt").write_text("from an earlier run")
    copy = item(
        source_root / "inputs", workdir / "inputs", source_root, workdir, recursive=True
    )

    status = run(backend, task(copy))

    assert failures(status) == {}
    assert files_under(workdir / "inputs") == contents
    assert (workdir / "inputs" / "vacant").is_dir()
    assert not (workdir / "inputs" / "link.txt").is_symlink()
    assert status.outcomes[0].bytes == sum(len(data) for data in contents.values())
    assert leftovers(workdir) == []
    assert sorted(path.name for path in workdir.iterdir()) == ["inputs"]


def test_recursive_item_with_a_symlink_leaving_the_root_fails_and_writes_nothing(
    backend: LocalBackend, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    source_root, workdir = roots
    make_tree(source_root / "inputs")
    (tmp_path / "private").mkdir()
    (source_root / "inputs" / "inner" / "peek").symlink_to(tmp_path / "private")
    copy = item(
        source_root / "inputs", workdir / "inputs", source_root, workdir, recursive=True
    )

    status = run(backend, task(copy))

    error, permanent = failures(status)[copy.item_id]
    assert permanent
    assert "outside its root" in error
    assert list(workdir.iterdir()) == []


def test_recursive_item_with_a_symlink_loop_fails(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    make_tree(source_root / "inputs")
    (source_root / "inputs" / "inner" / "again").symlink_to(source_root / "inputs")
    copy = item(
        source_root / "inputs", workdir / "inputs", source_root, workdir, recursive=True
    )

    status = run(backend, task(copy))

    error, permanent = failures(status)[copy.item_id]
    assert permanent
    assert "loop" in error
    assert list(workdir.iterdir()) == []


def test_recursive_item_onto_an_existing_file_fails_and_leaves_no_temporary(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    make_tree(source_root / "inputs")
    (workdir / "inputs").write_text("a file, not a directory")
    copy = item(
        source_root / "inputs", workdir / "inputs", source_root, workdir, recursive=True
    )

    status = run(backend, task(copy))

    assert failures(status) == {
        copy.item_id: (f"destination is not a directory: {copy.destination}", True)
    }
    assert (workdir / "inputs").read_text() == "a file, not a directory"
    assert sorted(path.name for path in workdir.iterdir()) == ["inputs"]


def test_recursive_copy_keeps_directory_modes_and_can_be_repeated(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    contents = make_tree(source_root / "inputs")
    (source_root / "inputs" / "inner").chmod(0o555)
    copy = item(
        source_root / "inputs", workdir / "inputs", source_root, workdir, recursive=True
    )

    first = run(backend, task(copy))
    second = run(backend, task(copy))

    assert failures(first) == failures(second) == {}
    assert files_under(workdir / "inputs") == contents
    assert stat.S_IMODE((workdir / "inputs" / "inner").stat().st_mode) == 0o555
    assert sorted(path.name for path in workdir.iterdir()) == ["inputs"]


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), True),
        (PermissionError(errno.EACCES, "Permission denied"), True),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), True),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EIO, "Input/output error"), False),
    ],
)
def test_failures_are_classified_by_error_type(error: OSError, permanent: bool) -> None:
    failure = _explain(error, "destination", "/work/job1/x.dat")

    assert failure.permanent is permanent
    assert "/work/job1/x.dat" in failure.reason
    assert "\n" not in failure.reason


def test_resubmitting_a_known_submission_does_not_copy_again(
    backend: LocalBackend, roots: tuple[Path, Path], wake: WakeRecorder
) -> None:
    source_root, workdir = roots
    source = source_root / "x.dat"
    source.write_bytes(b"first")
    spec = task(item(source, workdir / "x.dat", source_root, workdir))

    first_id = backend.submit(spec)
    wait_until(lambda: wake.calls == 1)
    source.write_bytes(b"second")
    second_id = backend.submit(spec)
    status = finished_status(backend, spec)

    assert second_id == first_id
    assert (status.files_total, status.files_done) == (1, 1)
    assert (workdir / "x.dat").read_bytes() == b"first"
    assert wake.calls == 1


def test_a_fresh_backend_reports_lost_and_a_resubmission_recovers(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    spec = task(item(source_root / "x.dat", workdir / "x.dat", source_root, workdir))
    backend_task_id = backend.submit(spec)
    backend.close()

    restarted = LocalBackend()
    try:
        lost = restarted.poll([asked(spec, backend_task_id)])[spec.task_id]
        again = run(restarted, spec)
    finally:
        restarted.close()

    assert lost.state is RemoteState.LOST
    assert lost.backend_task_id == backend_task_id
    assert again.state is RemoteState.SUCCEEDED
    assert (workdir / "x.dat").read_bytes() == b"x"


def test_a_finished_task_is_reported_once_then_forgotten(
    backend: LocalBackend, roots: tuple[Path, Path]
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    spec = task(item(source_root / "x.dat", workdir / "x.dat", source_root, workdir))

    run(backend, spec)

    assert backend.poll([asked(spec)])[spec.task_id].state is RemoteState.LOST


def test_cancel_skips_items_not_yet_started(
    roots: tuple[Path, Path], wake: WakeRecorder
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    single = LocalBackend(workers=1, wake=wake)
    try:
        # The one worker finishing the first task is held inside its wake call, so
        # the second task cannot start before it is cancelled.
        release = wake.hold_on(1)
        blocker = task(item(source_root / "x.dat", workdir / "0", source_root, workdir))
        single.submit(blocker)
        wait_until(lambda: wake.calls == 1)
        copies = [
            item(source_root / "x.dat", workdir / str(n), source_root, workdir)
            for n in range(1, 20)
        ]
        cancelled = task(*copies)
        single.submit(cancelled)

        single.cancel(asked(cancelled))
        release.set()
        status = finished_status(single, cancelled)
    finally:
        single.close()

    assert status.state is RemoteState.CANCELLED
    assert (status.files_total, status.files_done) == (19, 0)
    assert sorted(path.name for path in workdir.iterdir()) == ["0"]
    assert wake.calls == 2


def test_cancelling_an_unknown_task_is_harmless(backend: LocalBackend) -> None:
    backend.cancel(InFlightTask(999, "local-999", "never-submitted"))


def test_a_small_task_is_not_kept_waiting_behind_a_large_one(
    roots: tuple[Path, Path], wake: WakeRecorder
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x")
    single = LocalBackend(workers=1, wake=wake)
    try:
        blocked, finished_small = wake.hold_on(1), wake.hold_on(2)
        single.submit(
            task(item(source_root / "x.dat", workdir / "b", source_root, workdir))
        )
        wait_until(lambda: wake.calls == 1)
        large = task(
            *(
                item(source_root / "x.dat", workdir / f"l{n}", source_root, workdir)
                for n in range(200)
            )
        )
        small = task(
            *(
                item(source_root / "x.dat", workdir / f"s{n}", source_root, workdir)
                for n in range(3)
            )
        )
        single.submit(large)
        single.submit(small)
        blocked.set()

        wait_until(lambda: wake.calls == 2)
        progress = single.poll([asked(large), asked(small)])
        finished_small.set()
        finished_status(single, large)
    finally:
        single.close()

    assert progress[small.task_id].state is RemoteState.SUCCEEDED
    assert progress[large.task_id].state is RemoteState.ACTIVE
    # Tasks take turns a chunk at a time: the large one got one chunk at most.
    assert progress[large.task_id].files_done <= CHUNK
    assert progress[large.task_id].status_text.startswith("copying ")


def test_wake_is_called_once_per_finished_task(
    backend: LocalBackend, roots: tuple[Path, Path], wake: WakeRecorder
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x" * 100)
    specs = [
        task(
            *(
                item(source_root / "x.dat", workdir / f"t{t}f{n}", source_root, workdir)
                for n in range(10)
            )
        )
        for t in range(5)
    ]
    empty = task()

    for spec in [*specs, empty]:
        backend.submit(spec)
    statuses = [finished_status(backend, spec) for spec in [*specs, empty]]

    assert all(status.state is RemoteState.SUCCEEDED for status in statuses)
    assert wake.calls == 6


def test_poll_answers_every_task_asked_with_progress_while_active(
    roots: tuple[Path, Path], wake: WakeRecorder
) -> None:
    source_root, workdir = roots
    (source_root / "x.dat").write_bytes(b"x" * 1000)
    single = LocalBackend(workers=1, wake=wake)
    try:
        release = wake.hold_on(1)
        first = task(item(source_root / "x.dat", workdir / "a", source_root, workdir))
        second = task(item(source_root / "x.dat", workdir / "b", source_root, workdir))
        single.submit(first)
        wait_until(lambda: wake.calls == 1)
        single.submit(second)
        statuses = single.poll([asked(first), asked(second)])
        release.set()
        finished_status(single, second)
    finally:
        single.close()

    assert statuses[first.task_id].state is RemoteState.SUCCEEDED
    assert statuses[first.task_id].bytes_done == 1000
    assert statuses[second.task_id].state is RemoteState.ACTIVE
    assert statuses[second.task_id].status_text == "copying 0/1 files"
    assert statuses[second.task_id].outcomes == ()


def test_submit_after_close_is_refused(backend: LocalBackend) -> None:
    backend.close()

    with pytest.raises(TransientBackendError, match="closed"):
        backend.submit(task())


def test_new_submission_ids_are_distinct(backend: LocalBackend) -> None:
    assert backend.new_submission_id() != backend.new_submission_id()
