"""The status bar at the top: site, engine state, Globus login, counts by state.

``status_text`` is a pure function of what it is given, so what the operator sees
at a glance can be checked without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from balsam_tui.engine.snapshot import EngineSnapshot
from balsam_tui.states import ItemState, JobState
from balsam_tui.ui import cells

ENGINE_STATES: dict[str, tuple[str, str]] = {
    "starting": ("◌", "yellow"),
    "running": ("●", "bold green"),
    "paused": ("‖", "bold yellow"),
    "transfers off": ("○", "magenta"),
    "stopping": ("◌", "yellow"),
    "stopped": ("■", "dim"),
    "failed": ("✖", "bold red"),
    "elsewhere": ("◆", "bold yellow"),
}
ENGINE_WORDS = {"elsewhere": "run by another process"}

ITEM_ORDER = (
    ItemState.PENDING,
    ItemState.ACTIVE,
    ItemState.INACTIVE,
    ItemState.ERROR,
    ItemState.DONE,
    ItemState.AWAITING_JOB,
)
ITEM_WORDS = {ItemState.INACTIVE: "held", ItemState.AWAITING_JOB: "later"}


@dataclass(frozen=True)
class EngineView:
    """The engine as the console sees it: its state word and, if any, why."""

    state: str
    note: str = ""


def status_text(
    *, site: str, engine: EngineView, login: str, snapshot: EngineSnapshot | None
) -> Text:
    """Two or three lines, most important first; a narrow terminal cuts line ends."""
    symbol, style = ENGINE_STATES.get(engine.state, ("?", ""))
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{symbol} {ENGINE_WORDS.get(engine.state, engine.state)}", style=style)
    if snapshot is not None and snapshot.cycle and engine.state != "elsewhere":
        text.append(f" (cycle {snapshot.cycle})", style="dim")
    if snapshot is not None:
        flying = len(snapshot.tasks_in_flight)
        text.append(f"  {flying} task(s) in flight", style="bold" if flying else "dim")
        if snapshot.bytes_per_second > 0:
            text.append(f" · {cells.rate(snapshot.bytes_per_second)}")
    text.append("  Globus ")
    text.append(login, style="dim" if login == "not used" else "")
    text.append("  site ")
    text.append(site, style="bold")
    if snapshot is not None:
        text.append("\n")
        text.append_text(_counts(snapshot))
    notes = [engine.note] if engine.note else []
    if snapshot is not None:
        notes += list(snapshot.problems)
    if notes:
        more = f" (+{len(notes) - 1} more: see Settings)" if len(notes) > 1 else ""
        text.append("\n")
        text.append(f"⚠ {notes[0]}{more}", style="bold red")
    return text


def _counts(snapshot: EngineSnapshot) -> Text:
    text = Text()
    text.append("jobs ", style="bold")
    jobs = [
        (state.value, snapshot.job_counts.get(state.value, 0)) for state in JobState
    ]
    shown = [(state, n) for state, n in jobs if n]
    for n, (state, number) in enumerate(shown):
        if n:
            text.append(" · ", style="dim")
        text.append(state, style=cells.JOB_STATE_STYLES.get(state, ""))
        text.append(f" {cells.count(number)}")
    if not shown:
        text.append("none", style="dim")
    text.append("   items ", style="bold")
    first = True
    for state in ITEM_ORDER:
        number = snapshot.items(state=state.value)
        if not number:
            continue
        symbol, _, style = cells.SLOT_FILLS[state.value]
        if not first:
            text.append(" · ", style="dim")
        first = False
        text.append(f"{symbol} {ITEM_WORDS.get(state, state.value)}", style=style)
        text.append(f" {cells.count(number)}")
    if first:
        text.append("none", style="dim")
    return text


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar {
        dock: top;
        height: auto;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """
