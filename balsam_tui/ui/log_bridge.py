"""Log records from any thread, carried to the Log pane without touching a widget.

``QueuedLogHandler`` is a ``logging.Handler`` that only formats each record and
appends the lines to a bounded deque (thread-safe for one appender and one taker).
The Log pane drains it on a timer, on the UI's thread: a widget must never be
written from the engine's thread. When records arrive faster than the pane drains
them, the oldest are dropped, and the pane says how many.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import NamedTuple


class QueuedRecord(NamedTuple):
    level: int
    message: str
    lines: list[str]


LINE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
TIME_FORMAT = "%H:%M:%S"


class QueuedLogHandler(logging.Handler):
    def __init__(self, capacity: int = 5000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(LINE_FORMAT, TIME_FORMAT))
        self._records: deque[QueuedRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        queued = QueuedRecord(record.levelno, record.getMessage(), text.splitlines())
        with self._lock:
            if len(self._records) == self._records.maxlen:
                self._dropped += 1
            self._records.append(queued)

    def drain(self) -> tuple[list[QueuedRecord], int]:
        """Take every queued record, and how many were dropped since the last call."""
        with self._lock:
            records = list(self._records)
            self._records.clear()
            dropped, self._dropped = self._dropped, 0
        return records, dropped
