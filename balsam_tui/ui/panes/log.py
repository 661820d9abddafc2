"""The Log pane: the engine's log lines and the store's journal, newest last.

Both are plain ``Log`` widgets with a line limit, so a console left open for a week
holds the same few thousand lines as one opened a minute ago. Log records come
through ``QueuedLogHandler`` and are drained on a timer; journal entries come from
the snapshots, and when more happened between two snapshots than a snapshot
carries, the missing entries are read from the store, so none is skipped.
"""

from __future__ import annotations

import logging

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Log, Static

from balsam_tui.engine.snapshot import EngineSnapshot
from balsam_tui.store import Database
from balsam_tui.store.records import JournalEntry
from balsam_tui.ui import cells, reading
from balsam_tui.ui.log_bridge import QueuedLogHandler

MAX_LINES = 5000
FIRST_JOURNAL_LINES = 300
DRAIN_SECONDS = 0.25


class LogPane(Vertical):
    DEFAULT_CSS = """
    LogPane { height: 1fr; }
    LogPane .heading { height: 1; padding: 0 1; text-style: bold; }
    LogPane #engine-log { height: 1fr; }
    LogPane #journal { height: 1fr; }
    """

    def __init__(
        self,
        db: Database,
        *,
        handler: QueuedLogHandler | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._db = db
        self._handler = handler
        self._last_journal_id: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(
            "Engine log (also in the site's log/balsam-tui.log)", classes="heading"
        )
        yield Log(max_lines=MAX_LINES, id="engine-log")
        yield Static(
            "Journal: what happened to jobs, items and tasks", classes="heading"
        )
        yield Log(max_lines=MAX_LINES, id="journal")

    def on_mount(self) -> None:
        if self._handler is not None:
            self.set_interval(DRAIN_SECONDS, self._drain_and_tell)

    def _drain_and_tell(self) -> None:
        for message in self.drain_log()[-3:]:
            self.app.notify(message, title="Engine error", severity="error", timeout=8)

    def drain_log(self) -> list[str]:
        """Move queued log lines into the widget; return the new ERROR messages."""
        if self._handler is None:
            return []
        records, dropped = self._handler.drain()
        if not records and not dropped:
            return []
        log = self.query_one("#engine-log", Log)
        if dropped:
            log.write_line(f"... {dropped} log record(s) dropped: see the log file")
        log.write_lines([line for record in records for line in record.lines])
        return [r.message for r in records if r.level >= logging.ERROR]

    def show_snapshot(self, snapshot: EngineSnapshot) -> None:
        if not snapshot.events:
            return
        newest = snapshot.events[-1].id
        if self._last_journal_id is None:
            entries = reading.journal_after(
                self._db, newest - FIRST_JOURNAL_LINES, newest, FIRST_JOURNAL_LINES
            )
        elif newest <= self._last_journal_id:
            return
        elif snapshot.events[0].id <= self._last_journal_id + 1:
            entries = [e for e in snapshot.events if e.id > self._last_journal_id]
        else:
            entries = reading.journal_after(
                self._db, self._last_journal_id, newest, MAX_LINES
            )
        self._last_journal_id = newest
        self.query_one("#journal", Log).write_lines(
            [_journal_line(entry) for entry in entries]
        )


def _journal_line(entry: JournalEntry) -> str:
    return f"{cells.clock_time(entry.ts)} {entry.kind:<18} {entry.message}"
