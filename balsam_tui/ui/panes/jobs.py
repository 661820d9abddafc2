"""The Jobs pane: one row per job, with the fill status of each of its slots.

A site may hold 100,000 jobs; the table never does. It holds a *window* of at most
``WINDOW`` jobs read from the store by key (see ``reading``), and the window moves
along when the cursor comes near either end of it, recentred on the cursor's job,
so scrolling feels continuous while the table stays small. Filtering and ordering
happen in the store's query, never in the widget. After each snapshot the window is
read again from the same first job and only changed cells are redrawn.

Keys of its own: ``/`` (through the app) filters, Space marks jobs for a retry,
``o`` flips the order (oldest or newest first), Home and End go to the first and
last job of the whole list, Esc closes the filter or clears marks and filter.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from balsam_tui.store import Database
from balsam_tui.store.jobs import ValidationError
from balsam_tui.ui import cells, reading
from balsam_tui.ui.job_filter import HINT, FilterError, JobFilter, parse_filter
from balsam_tui.ui.messages import JobChosen, SelectionChanged
from balsam_tui.ui.panes.keyed_table import KeyedTable
from balsam_tui.ui.reading import JobRow

WINDOW = 400
EDGE = 60
RECOUNT_SECONDS = 5.0

# The slot columns come between state and app: on a narrow terminal the fills are
# what must stay on screen.
LEADING_COLUMNS = (
    ("mark", " ", 1),
    ("id", "job", None),
    ("workdir", "workdir", None),
    ("state", "state", None),
)
TRAILING_COLUMNS = (
    ("app", "app", None),
    ("reason", "reason", None),
)


class JobTable(KeyedTable):
    BINDINGS = [
        Binding(
            "enter",
            "select_cursor",
            "Story",
            show=True,
            tooltip="the job's story: slots, items, tasks, errors, journal",
        ),
        Binding(
            "space",
            "toggle_mark",
            "Mark",
            show=False,
            tooltip="mark or unmark the job for r",
        ),
        Binding(
            "home,ctrl+home",
            "jump('first')",
            "First job",
            show=False,
            tooltip="the first job of the whole list",
        ),
        Binding(
            "end,ctrl+end",
            "jump('last')",
            "Last job",
            show=False,
            tooltip="the last job of the whole list",
        ),
    ]

    class Jump(Message):
        """Home or End: go to the first or last job of the whole list."""

        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

    class MarkToggled(Message):
        pass

    def action_jump(self, where: str) -> None:
        self.post_message(self.Jump(where))

    def action_toggle_mark(self) -> None:
        self.post_message(self.MarkToggled())


class JobsPane(Vertical):
    DEFAULT_CSS = """
    JobsPane { height: 1fr; }
    JobsPane #jobs-title { height: 1; padding: 0 1; color: $text-muted; }
    JobsPane JobTable { height: 1fr; }
    JobsPane #job-filter { display: none; }
    JobsPane.filtering #job-filter { display: block; }
    """

    BINDINGS = [
        Binding(
            "o",
            "toggle_order",
            "Order",
            show=False,
            tooltip="oldest or newest jobs first",
        ),
        Binding(
            "escape",
            "clear",
            "Clear",
            tooltip="close the filter box, else clear the marks, else the filter",
        ),
    ]

    def __init__(self, db: Database, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._db = db
        self._filter = JobFilter()
        self._descending = False
        self._start: int | None = None
        self._rows: list[JobRow] = []
        self._by_id: dict[int, JobRow] = {}
        self._slots: tuple[str, ...] | None = None
        self._more_before = False
        self._more_after = False
        self._offset = 0
        self._total = 0
        self._counted_at = float("-inf")
        self._job_counts: Mapping[str, int] = {}
        self._marked: set[int] = set()
        self._made: dict[int, tuple[tuple, tuple[Text, ...]]] = {}
        self._moving = False

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-title")
        yield JobTable(id="job-table")
        yield Input(placeholder=HINT, id="job-filter")

    @property
    def table(self) -> JobTable:
        return self.query_one(JobTable)

    # -- what the app asks ------------------------------------------------------------

    @property
    def selected(self) -> JobRow | None:
        key = self.table.cursor_key
        return self._by_id.get(int(key)) if key is not None else None

    @property
    def marked(self) -> frozenset[int]:
        return frozenset(self._marked)

    @property
    def job_filter(self) -> JobFilter:
        return self._filter

    def retry_targets(self) -> list[int]:
        """The marked jobs, else the job under the cursor if it has failed items."""
        if self._marked:
            return sorted(self._marked)
        row = self.selected
        return [row.id] if row is not None and row.retryable else []

    def refresh_jobs(self, job_counts: Mapping[str, int]) -> None:
        """Read the window again from the store (after a snapshot, say)."""
        self._job_counts = job_counts
        self._load(self._start)

    def open_filter(self) -> None:
        self.add_class("filtering")
        box = self.query_one("#job-filter", Input)
        box.value = self._filter.describe()
        box.focus()

    def clear_marks(self) -> None:
        if self._marked:
            self._marked.clear()
            self._show()
            self.post_message(SelectionChanged())

    def set_filter(self, flt: JobFilter) -> None:
        self._filter = flt
        self._counted_at = float("-inf")
        self._load(None, keep_row=0)
        self.post_message(SelectionChanged())

    # -- keys -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear":
            return bool(
                self.has_class("filtering") or self._marked or not self._filter.is_empty
            )
        return True

    def action_toggle_order(self) -> None:
        self._descending = not self._descending
        row = self.selected
        if row is None:
            self._load(None, keep_row=0)
        else:
            self._recentre(row.id)

    def action_clear(self) -> None:
        if self.has_class("filtering"):
            self._close_filter()
        elif self._marked:
            self.clear_marks()
        elif not self._filter.is_empty:
            self.set_filter(JobFilter())
        self.post_message(SelectionChanged())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            flt = parse_filter(event.value)
            flt.query().where()  # the store's own check of names
        except (FilterError, ValidationError) as exc:
            self.app.notify(str(exc), title="Filter", severity="error")
            return
        self._close_filter()
        self.set_filter(flt)

    def _close_filter(self) -> None:
        self.remove_class("filtering")
        self.table.focus()

    def on_job_table_jump(self, event: JobTable.Jump) -> None:
        event.stop()
        if event.where == "first":
            self._load(None, keep_row=0)
        else:
            rows = reading.jobs_before(
                self._db, self._filter, None, WINDOW, descending=self._descending
            )
            self._load(rows[0].id if rows else None, keep_row=-1)

    def on_job_table_mark_toggled(self, event: JobTable.MarkToggled) -> None:
        event.stop()
        row = self.selected
        if row is None:
            return
        self._marked.symmetric_difference_update({row.id})
        self._show(keep=str(row.id))
        self.table.action_cursor_down()
        self.post_message(SelectionChanged())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(JobChosen(int(event.row_key.value)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(SelectionChanged())
        if self._moving or event.row_key.value != self.table.cursor_key:
            return  # moved by the pane itself, or stale (the table was rebuilt)
        index = event.cursor_row
        row = self.selected
        if row is None:
            return
        near_end = index >= len(self._rows) - EDGE and self._more_after
        near_start = index < EDGE and self._more_before
        if near_end or near_start:
            self._recentre(row.id)

    # -- the window -------------------------------------------------------------------

    def _recentre(self, job_id: int) -> None:
        """Move the window so that ``job_id`` sits in its middle."""
        before = reading.jobs_before(
            self._db, self._filter, job_id, WINDOW // 2, descending=self._descending
        )
        start = before[0].id if before else None
        self._load(start, keep=str(job_id))

    def _load(
        self, start: int | None, *, keep: str | None = None, keep_row: int | None = None
    ) -> None:
        db, flt, descending = self._db, self._filter, self._descending
        rows = reading.jobs_from(db, flt, start, WINDOW, descending=descending)
        if not rows and start is not None:
            # Every job from ``start`` on left the filter: show the last ones.
            rows = reading.jobs_before(db, flt, None, WINDOW, descending=descending)
        moved = (rows[0].id if rows else None) != (
            self._rows[0].id if self._rows else None
        )
        self._start = rows[0].id if rows and start is not None else None
        self._rows = rows
        self._by_id = {row.id: row for row in rows}
        for gone in self._made.keys() - self._by_id.keys():
            del self._made[gone]
        step = -1 if descending else 1
        self._more_after = len(rows) == WINDOW and bool(
            reading.jobs_from(db, flt, rows[-1].id + step, 1, descending=descending)
        )
        self._more_before = bool(rows) and bool(
            reading.jobs_before(db, flt, rows[0].id, 1, descending=descending)
        )
        if moved or start is None:
            self._offset = reading.count_before(
                db, flt, self._start, descending=descending
            )
        self._count(force=moved)
        if keep_row is not None and rows:
            keep = str(rows[keep_row].id)
        self._show(keep=keep)

    def _count(self, *, force: bool) -> None:
        now = time.monotonic()
        if (
            self._filter.counted_by_state
            or force
            or (now - self._counted_at >= RECOUNT_SECONDS)
        ):
            self._total = reading.count_matching(
                self._db, self._filter, self._job_counts
            )
            self._counted_at = now
        self._total = max(self._total, self._offset + len(self._rows))

    def _show(self, *, keep: str | None = None) -> None:
        table = self.table
        slots = reading.slot_columns(self._rows)
        self._moving = True
        try:
            if slots != self._slots:
                self._slots = slots
                columns = [
                    *LEADING_COLUMNS,
                    *((f"slot:{name}", name, None) for name in slots),
                    *TRAILING_COLUMNS,
                ]
                table.reset_columns(columns)
            table.show_rows(
                [(str(row.id), self._cells_of(row, slots)) for row in self._rows],
                keep=keep,
            )
        finally:
            self._moving = False
        self._show_title()

    def _cells_of(self, row: JobRow, slots: tuple[str, ...]) -> tuple[Text, ...]:
        """The row's cells, made again only when the row changed (most do not)."""
        key = (row, row.id in self._marked, slots)
        made = self._made.get(row.id)
        if made is None or made[0] != key:
            made = self._made[row.id] = (key, _job_cells(row, slots, key[1]))
        return made[1]

    def _show_title(self) -> None:
        title = Text()
        if self._rows:
            first = self._offset + 1
            last = first + len(self._rows) - 1
            title.append(
                f"jobs {cells.count(first)}–{cells.count(last)}"
                f" of {cells.count(self._total)}"
            )
        else:
            title.append(
                "no job matches" if not self._filter.is_empty else "no job yet"
            )
        title.append("  ·  newest first" if self._descending else "  ·  oldest first")
        if not self._filter.is_empty:
            title.append("  ·  filter: ")
            title.append(self._filter.describe(), style="bold")
        if self._marked:
            title.append(f"  ·  {len(self._marked)} marked", style="magenta")
        self.query_one("#jobs-title", Static).update(title)


def _job_cells(row: JobRow, slots: tuple[str, ...], marked: bool) -> tuple[Text, ...]:
    return (
        cells.text("●" if marked else "", "bold magenta"),
        cells.text(row.id),
        cells.text(row.workdir),
        cells.job_state(row.state),
        *(cells.slot_fill(row.fill(name)) for name in slots),
        cells.text(row.app),
        cells.text(row.reason, "dim"),
    )
