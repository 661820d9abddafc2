"""The console: the engine in a worker thread, its snapshots on four panes, its keys.

Data flows one way. The engine runs in a thread worker and publishes immutable
snapshots; its listener (on the engine's thread) only posts ``SnapshotArrived``,
and a newer snapshot replaces one still queued. Everything else happens on the
UI's thread: panes redraw from the snapshot, and read pages of jobs from the store
on their own connection. Commands go the other way through the engine's
thread-safe command methods (``pause``, ``retry_jobs``...), never through its
internals.

An engine that fails, or that cannot start because another process already runs
this site's engine, does not end the console: the status bar says so, the keys
that need an engine are greyed, and the panes keep showing the store, read again
whenever another process commits to it.

Quitting stops the engine (its cycle finishes; tasks in flight are picked up again
at the next start) and waits for it at most ``STOP_WAIT`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from balsam_tui.engine import Engine
from balsam_tui.engine.lock import EngineAlreadyRunning
from balsam_tui.engine.snapshot import EngineSnapshot, EngineStatus
from balsam_tui.site import Site
from balsam_tui.states import ItemState, TaskState
from balsam_tui.store import Database
from balsam_tui.ui import reading
from balsam_tui.ui.dialogs.confirm import ConfirmDialog
from balsam_tui.ui.dialogs.help import HelpScreen, KeySection
from balsam_tui.ui.dialogs.job_story import JobStoryScreen
from balsam_tui.ui.dialogs.login import LoginDialog
from balsam_tui.ui.dialogs.task_detail import TaskScreen
from balsam_tui.ui.log_bridge import QueuedLogHandler
from balsam_tui.ui.messages import (
    JobChosen,
    SelectionChanged,
    SnapshotArrived,
    TaskChosen,
)
from balsam_tui.ui.panes.jobs import JobsPane, JobTable
from balsam_tui.ui.panes.log import LogPane
from balsam_tui.ui.panes.settings import SettingsPane
from balsam_tui.ui.panes.tasks import TasksPane, TaskTable
from balsam_tui.ui.status import EngineView, StatusBar, status_text

log = logging.getLogger(__name__)

STOP_WAIT = 1.8
REDRAW_EVERY = 0.5
STORE_WATCH_SECONDS = 1.0
LOGIN_CHECK_SECONDS = 15.0
DEMO_CHECK_SECONDS = 2.0
PANES = ("tasks", "jobs", "settings", "log")
ENGINE_UP = ("starting", "running", "paused", "transfers off")

# (action, palette title, what it does): the commands of the palette and help.
COMMANDS = (
    ("pause", "Pause the engine", "hold new submissions; tasks in flight go on"),
    ("resume", "Resume the engine", "submit pending items again"),
    (
        "retry",
        "Retry the selection",
        "send the failed items of the marked jobs, the selected job or task again",
    ),
    ("retry_all", "Retry all errors", "send every failed item again (asks first)"),
    (
        "cancel_task",
        "Cancel the selected task",
        "stop it at the service; its items fail as 'cancelled' (asks first)",
    ),
    ("login", "Log in to Globus", "show the login URL and take the code"),
    ("filter", "Filter jobs", "by state, location alias, app, or text"),
    ("reload_settings", "Reload settings", "apply a changed settings.yml now"),
    ("help", "Keys and symbols", "every key and what the table symbols mean"),
)


class DemoSide(Protocol):
    """What the console needs of the demo's simulated compute side."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def finished(self) -> bool: ...


class BalsamConsole(App[int]):
    TITLE = "balsam-tui"

    CSS = """
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    """

    BINDINGS = [
        Binding(
            "1",
            "show_pane('tasks')",
            "Tasks",
            show=False,
            tooltip="show the Tasks pane",
        ),
        Binding(
            "2", "show_pane('jobs')", "Jobs", show=False, tooltip="show the Jobs pane"
        ),
        Binding(
            "3",
            "show_pane('settings')",
            "Settings",
            show=False,
            tooltip="show the Settings pane",
        ),
        Binding(
            "4", "show_pane('log')", "Log", show=False, tooltip="show the Log pane"
        ),
        Binding(
            "p",
            "pause",
            "Pause",
            tooltip="pause the engine: no new "
            "submissions, tasks in flight are still followed",
        ),
        Binding("p", "resume", "Resume", tooltip="resume the engine"),
        Binding(
            "r",
            "retry",
            "Retry",
            tooltip="retry the failed items of the "
            "marked jobs, or of the job or task under the cursor",
        ),
        Binding(
            "R",
            "retry_all",
            "Retry all",
            key_display="R",
            tooltip="retry every failed item (asks first)",
        ),
        Binding(
            "c",
            "cancel_task",
            "Cancel",
            tooltip="cancel the transfer task under the cursor (asks first)",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            tooltip="filter the jobs by state, alias, app or text",
        ),
        Binding("l", "login", "Log in", tooltip="log this site in to Globus"),
        Binding(
            "ctrl+r",
            "reload_settings",
            "Reload",
            tooltip="reload settings.yml; a refused file keeps the old one",
        ),
        Binding(
            "question_mark",
            "help",
            "Help",
            key_display="?",
            tooltip="this help: keys and symbols",
        ),
        Binding("q", "quit", "Quit", tooltip="stop the engine and quit"),
    ]

    def __init__(
        self,
        site: Site,
        engine: Engine,
        *,
        start_engine: bool = True,
        clock: Callable[[], float] = time.time,
        log_handler: QueuedLogHandler | None = None,
        demo_side: DemoSide | None = None,
        snapshot: EngineSnapshot | None = None,
    ) -> None:
        """``snapshot`` is the first picture to show; by default the engine's, or
        one read from the store if the engine has published none yet."""
        super().__init__()
        self.site = site
        self.engine = engine
        self.db = Database(site.store_path)
        self._start_engine = start_engine
        self._clock = clock
        self._log_handler = log_handler
        self._demo_side = demo_side
        self._demo_done = False
        self._first_snapshot = snapshot
        self.snapshot: EngineSnapshot | None = None
        self._trouble: EngineView | None = None
        self._quitting = False
        self._login = "not used"
        self._jobs_stale = True
        self._store_version: int | None = None
        self._binding_state: tuple | None = None
        self._waiting: EngineSnapshot | None = None
        self._drawn_at = float("-inf")
        self._draw_scheduled = False
        self.apply_seconds: deque[float] = deque(maxlen=200)

    # -- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(initial="tasks"):
            with TabPane("1 Tasks", id="tasks"):
                yield TasksPane(clock=self._clock, id="tasks-pane")
            with TabPane("2 Jobs", id="jobs"):
                yield JobsPane(self.db, id="jobs-pane")
            with TabPane("3 Settings", id="settings"):
                yield SettingsPane(id="settings-pane")
            with TabPane("4 Log", id="log"):
                yield LogPane(self.db, handler=self._log_handler, id="log-pane")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("balsam_tui").addHandler(self._log_handler)
        self.engine.subscribe(self._engine_published)
        first = self._first_snapshot or self.engine.snapshot
        if first.status == EngineStatus.STARTING:
            first = self._store_picture(EngineStatus.STARTING)
        self.apply_snapshot(first)
        self._check_login()
        self.set_interval(LOGIN_CHECK_SECONDS, self._check_login)
        self.set_interval(STORE_WATCH_SECONDS, self._watch_store)
        if self._start_engine:
            self.run_worker(
                self._run_engine,
                name="engine",
                group="engine",
                thread=True,
                exit_on_error=False,
            )
        if self._demo_side is not None:
            self._demo_side.start()
            self.set_interval(DEMO_CHECK_SECONDS, self._check_demo)
        self.query_one(TasksPane).table.focus()

    def on_unmount(self) -> None:
        self.engine.stop()
        if self._log_handler is not None:
            logging.getLogger("balsam_tui").removeHandler(self._log_handler)
        self.db.close()

    # -- the engine -------------------------------------------------------------------

    def _run_engine(self) -> None:
        self.engine.run()

    def _engine_published(self, snapshot: EngineSnapshot) -> None:
        # The engine's thread: post, never touch a widget.
        self.post_message(SnapshotArrived(snapshot))

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        # Drawing a table costs far more than a snapshot does: draw at most every
        # REDRAW_EVERY seconds, always the newest picture, never one left behind.
        self._waiting = message.snapshot
        due = self._drawn_at + REDRAW_EVERY - time.monotonic()
        if due <= 0:
            self._draw_waiting()
        elif not self._draw_scheduled:
            self._draw_scheduled = True
            self.set_timer(due, self._draw_waiting)

    def _draw_waiting(self) -> None:
        self._draw_scheduled = False
        snapshot, self._waiting = self._waiting, None
        if snapshot is not None:
            self.apply_snapshot(snapshot)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "engine" or self._quitting or self._closing_down:
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            if isinstance(error, EngineAlreadyRunning):
                self._trouble = EngineView(
                    "elsewhere", f"{error}; this console shows the store read-only"
                )
                self.notify(
                    str(error),
                    title="Engine not started",
                    severity="warning",
                    timeout=10,
                )
            else:
                log.error(
                    "the engine stopped on an unexpected error: %s: %s",
                    type(error).__name__,
                    error,
                    exc_info=error,
                )
                self._trouble = EngineView(
                    "failed",
                    f"the engine stopped: {type(error).__name__}: {error} "
                    "(details in the Log pane; restart balsam-tui)",
                )
                self.notify(
                    f"{type(error).__name__}: {error}",
                    title="The engine stopped",
                    severity="error",
                    timeout=15,
                )
            self.apply_snapshot(self._store_picture(EngineStatus.STOPPED))
        elif event.state == WorkerState.SUCCESS:
            self.apply_snapshot(self._store_picture(EngineStatus.STOPPED))

    @property
    def _closing_down(self) -> bool:
        """Messages and timers can still arrive while the app takes itself apart."""
        return self.return_code is not None or not self.screen_stack

    @property
    def engine_view(self) -> EngineView:
        if self._quitting:
            return EngineView("stopping")
        if self._trouble is not None:
            return self._trouble
        return EngineView(str(self.snapshot.status) if self.snapshot else "starting")

    @property
    def engine_up(self) -> bool:
        return self.engine_view.state in ENGINE_UP

    def _store_picture(self, status: EngineStatus) -> EngineSnapshot:
        problems = self.snapshot.problems if self.snapshot else ()
        return reading.store_snapshot(
            self.db,
            site=self.site.name,
            status=status,
            now=self._clock(),
            problems=problems,
        )

    def _watch_store(self) -> None:
        """Without an engine of our own, follow the store as others change it."""
        if self.engine_up or self._quitting or self._closing_down:
            return
        version = self.db.data_version()
        if version != self._store_version:
            self._store_version = version
            self.apply_snapshot(self._store_picture(EngineStatus.STOPPED))

    # -- drawing a snapshot -----------------------------------------------------------

    def apply_snapshot(self, snapshot: EngineSnapshot) -> None:
        if self._closing_down:
            return
        started = time.perf_counter()
        self._drawn_at = time.monotonic()
        self.snapshot = snapshot
        self._show_status()
        self.query_one(TasksPane).show_snapshot(snapshot)
        self.query_one(LogPane).show_snapshot(snapshot)
        self.query_one(SettingsPane).show(self.engine.settings, snapshot.problems)
        if self._active_pane() == "jobs":
            self.query_one(JobsPane).refresh_jobs(snapshot.job_counts)
            self._jobs_stale = False
        else:
            self._jobs_stale = True
        screen = self.screen
        if isinstance(screen, (JobStoryScreen, TaskScreen)):
            screen.show_snapshot(snapshot)
        self._update_bindings()
        self.apply_seconds.append(time.perf_counter() - started)

    def _show_status(self) -> None:
        if self._closing_down:
            return
        self.query_one(StatusBar).update(
            status_text(
                site=self.site.name,
                engine=self.engine_view,
                login=self._login,
                snapshot=self.snapshot,
            )
        )

    def _update_bindings(self) -> None:
        """Redraw the footer only when what the keys can do has changed."""
        if self._closing_down:
            return
        state = tuple(self.check_action(action, ()) for action, _, _ in COMMANDS) + (
            self._active_pane(),
            self.screen,
        )
        if state != self._binding_state:
            self._binding_state = state
            self.refresh_bindings()

    def on_selection_changed(self, message: SelectionChanged) -> None:
        self._update_bindings()

    def on_tabbed_content_tab_activated(
        self, event: TabbedContent.TabActivated
    ) -> None:
        if self._closing_down:
            return
        pane = event.pane.id
        jobs = self.query_one(JobsPane)
        if pane == "jobs":
            if self._jobs_stale and self.snapshot is not None:
                jobs.refresh_jobs(self.snapshot.job_counts)
                self._jobs_stale = False
            if not jobs.has_class("filtering"):
                self.query_one(JobTable).focus()
        elif pane == "tasks":
            self.query_one(TaskTable).focus()
        self._update_bindings()

    def _active_pane(self) -> str:
        return self.query_one(TabbedContent).active or "tasks"

    # -- what a key can do now --------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self._can(action, self.screen)

    def _can(self, action: str, screen: Screen) -> bool | None:
        """True: the key acts; None: it cannot now (greyed); False: hidden here."""
        up = self.engine_up
        paused = self.engine_view.state == "paused"
        if action == "pause":
            return False if paused else (True if up else None)
        if action == "resume":
            return paused or False
        if action == "retry":
            where, ids = self._retry_targets(screen)
            if where is None:
                return False
            return True if ids and up else None
        if action == "retry_all":
            errors = self.snapshot.items(state=ItemState.ERROR) if self.snapshot else 0
            return True if errors and up else None
        if action == "cancel_task":
            where, task = self._cancel_target(screen)
            if where is None:
                return False
            return True if task is not None and up else None
        if action == "login":
            return self._uses_globus() or False
        if action == "reload_settings":
            return True if up else None
        if action in ("filter", "show_pane"):
            return screen is self.screen_stack[0]
        return True

    def _retry_targets(self, screen: Screen) -> tuple[str | None, list[int]]:
        """What ``r`` would retry here: ("jobs", ids), ("task", [id]) or nothing."""
        if isinstance(screen, JobStoryScreen):
            story = screen.story
            return "jobs", [screen.job_id] if story and story.retryable else []
        if isinstance(screen, TaskScreen):
            detail = screen.detail
            failed = detail is not None and any(
                i.state == ItemState.ERROR for i in detail.items
            )
            return "task", [screen.task_id] if failed else []
        if screen is not self.screen_stack[0]:
            return None, []
        pane = self._active_pane()
        if pane == "jobs":
            return "jobs", self.query_one(JobsPane).retry_targets()
        if pane == "tasks":
            task = self.query_one(TasksPane).selected
            failed = (
                task is not None
                and task.finished_at is not None
                and (
                    task.files_failed > 0
                    or task.state in (TaskState.FAILED, TaskState.CANCELLED)
                )
            )
            return "task", [task.id] if failed else []
        return None, []

    def _cancel_target(self, screen: Screen) -> tuple[str | None, int | None]:
        if isinstance(screen, TaskScreen):
            task = screen.detail.task if screen.detail else None
        elif screen is self.screen_stack[0] and self._active_pane() == "tasks":
            task = self.query_one(TasksPane).selected
        else:
            return None, None
        if task is None or task.finished_at is not None or task.cancel_reason:
            return "task", None
        return "task", task.id

    def _uses_globus(self) -> bool:
        settings = self.engine.settings
        return any(loc.protocol == "globus" for loc in settings.locations.values())

    # -- actions ----------------------------------------------------------------------

    def action_show_pane(self, pane: str) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self.query_one(TabbedContent).active = pane

    def action_pause(self) -> None:
        self.engine.pause()
        self.notify("pausing: no new submissions; tasks in flight go on", timeout=3)

    def action_resume(self) -> None:
        self.engine.resume()
        self.notify("resuming", timeout=3)

    def action_retry(self) -> None:
        where, ids = self._retry_targets(self.screen)
        if where == "jobs" and ids:
            self.engine.retry_jobs(ids)
            self.notify(f"retrying the failed items of {len(ids)} job(s)", timeout=4)
            if self.screen is self.screen_stack[0]:
                self.query_one(JobsPane).clear_marks()
        elif where == "task" and ids:
            items = reading.failed_items_of_task(self.db, ids[0])
            if items:
                self.engine.retry_items(items)
                self.notify(
                    f"retrying {len(items)} failed item(s) of task {ids[0]}", timeout=4
                )
            else:
                self.notify(
                    f"task {ids[0]} has no failed item left to retry", timeout=4
                )

    def action_retry_all(self) -> None:
        errors = self.snapshot.items(state=ItemState.ERROR) if self.snapshot else 0

        def answered(yes: bool | None) -> None:
            if yes:
                self.engine.retry_all_errors()
                self.notify(f"retrying all {errors} failed item(s)", timeout=4)

        self.push_screen(
            ConfirmDialog(
                "Retry all errors",
                f"Send all {errors:,} failed transfer item(s) back to pending? Items "
                "whose cause persists (a missing source file) will fail again.",
                yes="Retry all",
            ),
            answered,
        )

    def action_cancel_task(self) -> None:
        _, task_id = self._cancel_target(self.screen)
        if task_id is None:
            return
        task = next((t for t in self.snapshot.tasks if t.id == task_id), None)
        what = (
            f"{task.direction} {task.location_alias}, {task.item_count} item(s)"
            if task
            else "its items"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.engine.cancel_task(task_id)
                self.notify(f"cancelling task {task_id}", timeout=4)

        self.push_screen(
            ConfirmDialog(
                "Cancel a transfer task",
                f"Cancel task {task_id} ({what})? Its unfinished items fail as "
                "'cancelled'; r retries them later.",
                yes="Cancel task",
            ),
            answered,
        )

    def action_filter(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self.query_one(TabbedContent).active = "jobs"
        self.query_one(JobsPane).open_filter()

    def action_login(self) -> None:
        def answered(username: str | None) -> None:
            if username:
                self.engine.credentials_changed()
                self.notify(f"logged in to Globus as {username}", timeout=5)
            self._check_login()

        self.push_screen(
            LoginDialog(self.site, self.engine.settings.transfers), answered
        )

    def action_reload_settings(self) -> None:
        self.engine.reload_settings()
        self.notify("reloading settings.yml", timeout=3)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self._help_sections()))

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        self._show_status()
        self.engine.stop()
        if self._demo_side is not None:
            await asyncio.to_thread(self._demo_side.stop)
        deadline = time.monotonic() + STOP_WAIT
        engine_workers = [w for w in self.workers if w.group == "engine"]
        while any(not w.is_finished for w in engine_workers):
            if time.monotonic() > deadline:
                log.warning(
                    "the engine did not stop within %.1f s; quitting anyway "
                    "(its tasks in flight resume at the next start)",
                    STOP_WAIT,
                )
                break
            await asyncio.sleep(0.05)
        self.exit(0)

    # -- screens ----------------------------------------------------------------------

    def on_task_chosen(self, message: TaskChosen) -> None:
        self.push_screen(TaskScreen(self.db, message.task_id, clock=self._clock))

    def on_job_chosen(self, message: JobChosen) -> None:
        self.push_screen(JobStoryScreen(self.db, message.job_id))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane in PANES:
            yield SystemCommand(
                f"Show the {pane.capitalize()} pane",
                f"switch to {pane}",
                lambda pane=pane: self.action_show_pane(pane),
            )
        for action, title, help_text in COMMANDS:
            if self._can(action, screen):
                yield SystemCommand(
                    title, help_text, lambda action=action: self.run_action(action)
                )

    def _help_sections(self) -> list[KeySection]:
        def rows(bindings: Iterable[Binding]) -> list[tuple[str, str]]:
            seen: dict[str, str] = {}
            for binding in bindings:
                key = binding.key_display or self.get_key_display(binding)
                text = binding.tooltip or binding.description
                seen.setdefault(binding.action, f"{key}\t{text}")
            return [tuple(line.split("\t", 1)) for line in seen.values()]

        palette = [
            ("ctrl+p", "command palette: every command by name"),
            ("ctrl+q", "quit, as q"),
        ]
        return [
            ("Everywhere", [*rows(self.BINDINGS), *palette]),
            (
                "Tasks pane",
                [
                    ("↑ ↓ PgUp PgDn", "move"),
                    *rows(Binding.make_bindings(TaskTable.BINDINGS)),
                ],
            ),
            (
                "Jobs pane",
                [
                    ("↑ ↓ PgUp PgDn", "move (the list pages in by itself)"),
                    *rows(Binding.make_bindings(JobTable.BINDINGS)),
                    *rows(Binding.make_bindings(JobsPane.BINDINGS)),
                ],
            ),
            ("Story and task screens", [("Esc", "back to the panes")]),
        ]

    # -- login and demo ---------------------------------------------------------------

    def _check_login(self) -> None:
        if not self._uses_globus():
            self._login = "not used"
        else:
            from balsam_tui.globus.auth import (
                GlobusAuthError,
                current_login,
                service_account_from_env,
            )

            try:
                record = current_login(self.site)
            except GlobusAuthError as exc:
                self._login = f"token file unusable ({exc})"
            else:
                if service_account_from_env() is not None:
                    self._login = "service account"
                elif record is None:
                    self._login = "not logged in (l logs in)"
                else:
                    who = record.username or record.name or record.identity_id
                    self._login = f"logged in as {who}"
        self._show_status()

    def _check_demo(self) -> None:
        side = self._demo_side
        if self._demo_done or side is None or self.snapshot is None:
            return
        if self._closing_down:
            return
        if side.finished() and self.engine.is_idle(self.snapshot):
            self._demo_done = True
            errors = self.snapshot.items(state=ItemState.ERROR)
            self.notify(
                f"The demo is done: every job ran; {errors} item(s) failed on "
                "purpose (missing frames). Look at them in the Jobs pane (/ errors, "
                "Enter), retry with R, or quit with q.",
                title="Demo finished",
                timeout=15,
            )
