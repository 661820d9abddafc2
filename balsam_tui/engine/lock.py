"""One engine per site: an advisory lock on a file in the site directory.

Two engines on one site would both redo the tasks a crash left in flight, and both
poll the same service. The lock is an ``flock`` on ``engine.lock``, so the kernel
drops it when the holder dies, however it dies; the file keeps the holder's pid
only to make the refusal message useful.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class EngineAlreadyRunning(Exception):
    """Another engine holds this site's lock."""


class SiteLock:
    def __init__(self, site_root: Path) -> None:
        self.path = site_root / "engine.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EngineAlreadyRunning(
                f"another balsam-tui engine (pid {holder}) is already running for "
                f"site {self.path.parent}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
