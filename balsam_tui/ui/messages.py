"""Messages the console posts to itself, named for what happened.

``SnapshotArrived`` is posted from the engine's thread (``post_message`` is
thread-safe). A newer snapshot replaces an older one still waiting in the queue, so
a console that falls behind skips pictures instead of drawing every one late.
"""

from __future__ import annotations

from textual.message import Message

from balsam_tui.engine.snapshot import EngineSnapshot


class SnapshotArrived(Message):
    """The engine published a new picture of itself."""

    def __init__(self, snapshot: EngineSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


class TaskChosen(Message):
    """The operator asked for one task's items and events (Enter on its row)."""

    def __init__(self, task_id: int) -> None:
        super().__init__()
        self.task_id = task_id


class JobChosen(Message):
    """The operator asked for one job's story (Enter on its row)."""

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id


class SelectionChanged(Message):
    """The row under a pane's cursor changed: the keys that apply may change."""
