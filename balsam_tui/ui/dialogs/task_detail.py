"""One transfer task: its ids and state, the items it carries, and its journal.

Items retried after the task ended leave it (they join a new task), so a finished
task lists what it still owns; its journal keeps the whole story.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Log, Static

from balsam_tui.engine.snapshot import EngineSnapshot
from balsam_tui.store import Database
from balsam_tui.store.records import TaskRecord
from balsam_tui.ui import cells, reading
from balsam_tui.ui.reading import TaskDetail

ITEM_COLUMNS = ("item", "job", "workdir", "slot", "state", "error", "tries", "remote")


class TaskScreen(Screen[None]):
    DEFAULT_CSS = """
    TaskScreen #task-head { padding: 0 1; height: auto; background: $panel; }
    TaskScreen #task-items { height: 1fr; margin-top: 1; }
    TaskScreen .heading { padding: 0 1; text-style: bold; }
    TaskScreen Log { height: 1fr; max-height: 14; }
    """

    BINDINGS = [Binding("escape,backspace", "back", "Back")]

    def __init__(
        self, db: Database, task_id: int, *, clock: Callable[[], float]
    ) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self.task_id = task_id
        self.detail: TaskDetail | None = None
        self._seen: float | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="task-head")
        yield DataTable(id="task-items", cursor_type="row", zebra_stripes=True)
        yield Static("Journal of this task, newest last", classes="heading")
        yield Log(id="task-journal", max_lines=2000)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*ITEM_COLUMNS)
        self.reload()

    def show_snapshot(self, snapshot: EngineSnapshot) -> None:
        task = next((t for t in snapshot.tasks if t.id == self.task_id), None)
        if task is not None and task.updated_at != self._seen:
            self.reload()

    def reload(self) -> None:
        detail = reading.task_detail(self._db, self.task_id)
        if detail is None:
            self.query_one("#task-head", Static).update(
                Text(f"task {self.task_id} is not in the store", style="bold red")
            )
            return
        self.detail = detail
        self._seen = detail.task.updated_at
        self.query_one("#task-head", Static).update(_head(detail.task, self._clock()))
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for item in detail.items:
            table.add_row(
                cells.text(item.id),
                cells.text(item.job_id),
                cells.text(detail.workdirs.get(item.job_id, "?")),
                cells.text(item.slot),
                cells.slot_fill(item.state),
                cells.text(item.error, "red"),
                cells.text(item.attempts),
                cells.text(item.remote_path),
                key=str(item.id),
            )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)
        log = self.query_one(Log)
        log.clear()
        log.write_lines(
            f"{cells.clock_time(e.ts)} {e.kind:<18} {e.message}" for e in detail.journal
        )

    def action_back(self) -> None:
        self.dismiss(None)


def _head(task: TaskRecord, now: float) -> Text:
    text = Text()
    text.append(f"task {task.id}", style="bold")
    text.append(f"  {task.direction} {task.location_alias} ({task.protocol})  ·  ")
    text.append_text(cells.task_state(task.state))
    text.append(f"  ·  {task.item_count} item(s), {task.files_done} done")
    if task.files_failed:
        text.append(f", {task.files_failed} failed", style="bold red")
    text.append(f"  ·  {cells.size(task.bytes_done)}")
    text.append(f"\nlabel: {task.label}", style="dim")
    text.append(f"\nservice task id: {task.backend_task_id or '-'}", style="dim")
    text.append(f"   submission id: {task.submission_id}", style="dim")
    text.append(f"\ncreated {cells.age(now - task.created_at)} ago")
    if task.finished_at is not None:
        text.append(f", finished {cells.age(now - task.finished_at)} ago")
    if task.status_text:
        text.append(f"\nservice says: {task.status_text}")
    if task.error:
        text.append("\nerror: ", style="bold red")
        text.append(task.error)
    if task.cancel_reason:
        text.append(f"\ncancel: {task.cancel_reason}", style="magenta")
    return text
