"""One SQLite file shared by the engine, the CLI and the user's own scripts.

Every thread gets its own connection (SQLite connections must not cross threads).
The file runs in WAL mode, so readers never wait for the writer; writers take the
write lock up front (``BEGIN IMMEDIATE``) and wait for each other for up to
``BUSY_TIMEOUT`` seconds, so "database is locked" does not reach a user unless
another process holds the lock that long, and then it is a ``StoreBusy`` with a
sentence saying so.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from balsam_tui.store.schema import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT = 60.0


class StoreError(Exception):
    """The store cannot be used as asked."""


class StoreBusy(StoreError):
    """Another process held the write lock for longer than we wait."""


class StoreVersionError(StoreError):
    """The file was written by a newer release of this tool."""


class Database:
    """Connections to one store file, one per thread, with write transactions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            # Switching a new file to WAL needs a lock that busy_timeout does not
            # wait for, so a second process opening a fresh store retries here.
            self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA cache_size = -32768")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                raise StoreBusy(self._busy_message()) from None
            raise StoreError(f"{self.path}: cannot open the store ({exc})") from None
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        conn = self.connection()
        if conn.in_transaction:
            # Nested use joins the outer transaction.
            yield conn
            return
        self._begin_immediate(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of several statements."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        # busy_timeout covers the wait for the lock; the retry covers the rare
        # SQLITE_BUSY that SQLite returns at once (a WAL checkpoint in progress).
        self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))

    def _retry_busy(self, action) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreBusy(self._busy_message()) from None
                time.sleep(0.05)

    def _busy_message(self) -> str:
        return (
            f"{self.path}: another process has held the store's write lock for "
            f"over {BUSY_TIMEOUT:.0f} s; is one stuck?"
        )

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap 'anything new?'."""
        return self.connection().execute("PRAGMA data_version").fetchone()[0]

    def _migrate(self) -> None:
        conn = self.connection()
        with self.write():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} has schema version {version}, newer than this "
                    f"release understands ({SCHEMA_VERSION}); upgrade balsam-tui"
                )
            for step in MIGRATIONS[version:]:
                for statement in _statements(step):
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.ProgrammingError:
                pass
        self._local = threading.local()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 and newer
    if code is not None:
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement:
                yield statement
            buffer = ""
