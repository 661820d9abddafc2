"""The Tasks pane: transfer tasks in flight and recent ones, and a throughput line.

Everything here comes from the snapshot (the engine keeps its last 40 tasks and
every task in flight in it), so the pane costs the same whatever the size of the
store. The sparkline samples the snapshot's throughput into fixed buckets of the
engine's clock, so it reads the same however often snapshots arrive.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Sparkline, Static

from balsam_tui.engine.snapshot import EngineSnapshot
from balsam_tui.states import TaskState
from balsam_tui.store.records import TaskRecord
from balsam_tui.ui import cells
from balsam_tui.ui.messages import SelectionChanged, TaskChosen
from balsam_tui.ui.panes.keyed_table import KeyedTable

SPARK_BUCKET_SECONDS = 2.0
SPARK_BUCKETS = 90

# The service's word comes early but narrow (a long error is cut here and shown
# whole on the task's screen), so that it stays on an 80-column screen.
COLUMNS = (
    ("id", "task", None),
    ("state", "state", 12),
    ("dir", "dir", 3),
    ("alias", "alias", None),
    ("items", "items", 9),
    ("progress", "progress", 15),
    ("status", "status", 24),
    ("rate", "rate", 10),
    ("bytes", "bytes", 9),
    ("age", "age", 6),
    ("backend", "backend", None),
)


class TaskTable(KeyedTable):
    BINDINGS = [
        Binding(
            "enter",
            "select_cursor",
            "Items",
            show=True,
            tooltip="the task's items and its journal",
        )
    ]


class TasksPane(Vertical):
    DEFAULT_CSS = """
    TasksPane { height: 1fr; }
    TasksPane #tasks-summary { height: 1; padding: 0 1; color: $text-muted; }
    TasksPane TaskTable { height: 1fr; }
    TasksPane #throughput { height: 3; padding: 0 1; }
    TasksPane #throughput-label { width: 28; }
    TasksPane Sparkline { width: 1fr; height: 3; }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._tasks: dict[int, TaskRecord] = {}
        self._buckets: dict[int, float] = {}

    def compose(self) -> ComposeResult:
        yield Static("no transfer task yet", id="tasks-summary")
        yield TaskTable(id="task-table")
        with Horizontal(id="throughput"):
            yield Static("throughput", id="throughput-label")
            yield Sparkline([0.0], summary_function=max)

    def on_mount(self) -> None:
        self.query_one(TaskTable).reset_columns(COLUMNS)

    @property
    def table(self) -> TaskTable:
        return self.query_one(TaskTable)

    @property
    def selected(self) -> TaskRecord | None:
        key = self.table.cursor_key
        return self._tasks.get(int(key)) if key is not None else None

    def show_snapshot(self, snapshot: EngineSnapshot) -> None:
        now = self._clock()
        self._tasks = {task.id: task for task in snapshot.tasks}
        rows = [(str(task.id), _task_cells(task, now)) for task in snapshot.tasks]
        # A cursor on the top row follows the newest task, as a log's tail does;
        # anywhere else it stays on its task.
        on_top = self.table.cursor_row == 0 and rows
        self.table.show_rows(rows, keep=rows[0][0] if on_top else None)
        in_flight = len(snapshot.tasks_in_flight)
        self.query_one("#tasks-summary", Static).update(
            Text(
                f"{in_flight} in flight, {len(snapshot.tasks) - in_flight} recent"
                "  ·  Enter: the task's items and events"
                if snapshot.tasks
                else "no transfer task yet: tasks appear when items are pending"
            )
        )
        self._sample(snapshot)

    def _sample(self, snapshot: EngineSnapshot) -> None:
        bucket = int(snapshot.taken_at // SPARK_BUCKET_SECONDS)
        self._buckets[bucket] = max(
            self._buckets.get(bucket, 0.0), snapshot.bytes_per_second
        )
        first = bucket - SPARK_BUCKETS + 1
        for old in [b for b in self._buckets if b < first]:
            del self._buckets[old]
        # Between snapshots the rate held its last value; before the first, nothing
        # moved. The newest bucket is always at the right edge.
        series, last = [], 0.0
        for b in range(first, bucket + 1):
            last = self._buckets.get(b, last)
            series.append(last)
        self.query_one(Sparkline).data = series
        peak = max(series)
        label = Text("throughput ", style="bold")
        label.append(cells.rate(snapshot.bytes_per_second) or "-")
        label.append(f"\npeak {cells.rate(peak)}", style="dim")
        span = SPARK_BUCKETS * SPARK_BUCKET_SECONDS
        label.append(f"\nover the last {span:.0f} s", style="dim")
        self.query_one("#throughput-label", Static).update(label)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(TaskChosen(int(event.row_key.value)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(SelectionChanged())


def _task_cells(task: TaskRecord, now: float) -> tuple[Text, ...]:
    finished = task.finished_at is not None
    settled = task.files_done + task.files_failed
    items = cells.text(f"{task.files_done}/{task.item_count}")
    if task.files_failed:
        items.append(f" ✖{task.files_failed}", style="bold red")
    return (
        cells.text(task.id),
        cells.task_state(task.state),
        cells.text(task.direction),
        cells.text(task.location_alias),
        items,
        cells.progress_bar(
            settled,
            task.item_count,
            failed=task.files_failed,
            finished_ok=task.state == TaskState.SUCCEEDED and not task.files_failed,
        ),
        cells.text(_status(task), "red" if task.error and not finished else ""),
        cells.text("" if finished else cells.rate(task.bytes_per_second)),
        cells.text(cells.size(task.bytes_done)),
        cells.text(cells.age(now - task.created_at)),
        cells.text(task.protocol),
    )


def _status(task: TaskRecord) -> str:
    """What the service says of the task, or why it is not moving."""
    if task.cancel_reason and task.finished_at is None:
        return f"cancelling: {task.cancel_reason}"
    if task.state == TaskState.SUBMITTING:
        if task.error:
            return f"not submitted yet (attempt {task.submit_attempts}): {task.error}"
        return "submitting"
    if task.state in (TaskState.FAILED, TaskState.CANCELLED) and task.error:
        return task.error
    if task.state == TaskState.CANCELLED and task.cancel_reason:
        return task.cancel_reason
    if task.state == TaskState.ACTIVE and not (task.status_text or task.remote_state):
        return "submitted"
    return task.status_text or task.remote_state or ""
