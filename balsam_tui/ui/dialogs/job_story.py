"""A job's story: each slot, its item, its task, the service's word, and the journal.

This answers "what happened to job 42?" on one screen. It is read from the store
when opened and again after each snapshot that brought new journal entries, so it
follows a transfer as it happens.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Log, Static

from balsam_tui.engine.snapshot import EngineSnapshot
from balsam_tui.store import Database
from balsam_tui.store.jobs import NotFound
from balsam_tui.ui import cells, reading
from balsam_tui.ui.cells import UNFILLED
from balsam_tui.ui.reading import JobStory, SlotStory

SLOT_COLUMNS = (
    "slot",
    "dir",
    "fill",
    "last error",
    "task",
    "service says",
    "item",
    "tries",
    "remote",
    "local",
)


class JobStoryScreen(Screen[None]):
    DEFAULT_CSS = """
    JobStoryScreen #story-head { padding: 0 1; height: auto; background: $panel; }
    JobStoryScreen #story-slots { height: auto; max-height: 12; margin-top: 1; }
    JobStoryScreen .heading { padding: 0 1; text-style: bold; margin-top: 1; }
    JobStoryScreen Log { height: 1fr; }
    """

    BINDINGS = [Binding("escape,backspace", "back", "Back")]

    def __init__(self, db: Database, job_id: int) -> None:
        super().__init__()
        self._db = db
        self.job_id = job_id
        self.story: JobStory | None = None
        self._journal_id = -1

    def compose(self) -> ComposeResult:
        yield Static("", id="story-head")
        yield DataTable(id="story-slots", cursor_type="row", zebra_stripes=True)
        yield Static("Journal of this job, newest last", classes="heading")
        yield Log(id="story-journal", max_lines=2000)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*SLOT_COLUMNS)
        self.reload()

    def show_snapshot(self, snapshot: EngineSnapshot) -> None:
        newest = snapshot.events[-1].id if snapshot.events else -1
        if newest != self._journal_id:
            self.reload()

    def reload(self) -> None:
        try:
            story = reading.job_story(self._db, self.job_id)
        except NotFound:
            self.query_one("#story-head", Static).update(
                Text(f"job {self.job_id} is no longer in the store", style="bold red")
            )
            return
        self.story = story
        self._journal_id = story.journal[-1].id if story.journal else -1
        self.query_one("#story-head", Static).update(_head(story))
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for slot in story.slots:
            table.add_row(*_slot_cells(slot), key=slot.slot.name)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)
        log = self.query_one(Log)
        log.clear()
        log.write_lines(
            f"{cells.clock_time(e.ts)} {e.kind:<18} {e.message}" for e in story.journal
        )

    def action_back(self) -> None:
        self.dismiss(None)


def _head(story: JobStory) -> Text:
    job = story.job
    text = Text()
    text.append(f"job {job.id}", style="bold")
    text.append(f"  {job.workdir}  ·  app {job.app_name}  ·  ")
    text.append_text(cells.job_state(job.state))
    if job.state_reason:
        text.append(f"  ({job.state_reason})", style="dim")
    if job.parents:
        text.append(f"\nparents: {', '.join(map(str, job.parents))}")
    if job.tags:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(job.tags.items()))
        text.append(f"\ntags: {tags}")
    if story.last_error:
        text.append("\nlast error: ", style="bold red")
        text.append(story.last_error)
    if story.retryable:
        text.append("\nr sends its failed items again", style="dim")
    return text


def _slot_cells(story: SlotStory) -> tuple[Text, ...]:
    slot, item, task = story.slot, story.item, story.task
    required = "" if slot.required else " (optional)"
    if item is None:
        return (
            cells.text(f"{slot.name}{required}", "bold"),
            cells.text(slot.direction),
            cells.slot_fill(UNFILLED),
            *(cells.text("") for _ in range(len(SLOT_COLUMNS) - 3)),
        )
    service = ""
    if task is not None:
        service = f"{task.state}: {task.status_text or task.remote_state or '-'}"
    return (
        cells.text(f"{slot.name}{required}", "bold"),
        cells.text(slot.direction),
        cells.slot_fill(item.state),
        cells.text(item.error, "red"),
        cells.text(item.task_id if item.task_id is not None else "-"),
        cells.text(service),
        cells.text(item.id),
        cells.text(item.attempts),
        cells.text(f"{item.location_alias}:{item.remote_path}"),
        cells.text(item.local_path),
    )
