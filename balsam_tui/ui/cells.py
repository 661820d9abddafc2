"""How the console turns states, sizes and times into table cells.

Every state is shown with a symbol AND a colour, so that it reads at a glance on a
monochrome terminal, to a colour-blind operator, and in a pasted screen capture.
Cells are Rich ``Text`` objects, never plain strings: a DataTable parses strings as
markup, and a workdir such as ``run[3]`` would be mangled.
"""

from __future__ import annotations

import time

from rich.text import Text

from balsam_tui.states import ItemState, JobState, TaskState

UNFILLED = "unfilled"
"""The fill of an optional slot that a job left empty (it has no transfer item)."""

# fill -> (symbol, word, style). The word keeps the cell readable without colour.
SLOT_FILLS: dict[str, tuple[str, str, str]] = {
    UNFILLED: ("·", "none", "dim"),
    ItemState.AWAITING_JOB: ("◦", "later", "dim"),
    ItemState.PENDING: ("○", "pending", "yellow"),
    ItemState.ACTIVE: ("▶", "active", "bold cyan"),
    ItemState.INACTIVE: ("‖", "held", "magenta"),
    ItemState.DONE: ("✔", "done", "green"),
    ItemState.ERROR: ("✖", "error", "bold red"),
}

SLOT_FILL_MEANINGS: dict[str, str] = {
    UNFILLED: "optional slot the job left empty",
    ItemState.AWAITING_JOB: "stage-out waiting for the job to run",
    ItemState.PENDING: "waiting for a transfer task",
    ItemState.ACTIVE: "in a transfer task now",
    ItemState.INACTIVE: "held by the service (a login or consent is needed)",
    ItemState.DONE: "transferred",
    ItemState.ERROR: "failed: see the job's story; r retries",
}

JOB_STATE_STYLES: dict[str, str] = {
    JobState.CREATED: "dim",
    JobState.AWAITING_PARENTS: "dim",
    JobState.READY: "yellow",
    JobState.STAGED_IN: "cyan",
    JobState.PREPROCESSED: "cyan",
    JobState.RUNNING: "bold cyan",
    JobState.RUN_DONE: "blue",
    JobState.RUN_ERROR: "bold red",
    JobState.RUN_TIMEOUT: "red",
    JobState.RESTART_READY: "yellow",
    JobState.POSTPROCESSED: "blue",
    JobState.STAGED_OUT: "green",
    JobState.JOB_FINISHED: "green",
    JobState.FAILED: "bold red",
}

TASK_STATES: dict[str, tuple[str, str]] = {
    TaskState.SUBMITTING: ("…", "yellow"),
    TaskState.ACTIVE: ("▶", "bold cyan"),
    TaskState.SUCCEEDED: ("✔", "green"),
    TaskState.FAILED: ("✖", "bold red"),
    TaskState.CANCELLED: ("⊘", "magenta"),
}

BAR_WIDTH = 10


def text(value: object, style: str = "") -> Text:
    """Any value as literal text (no markup), optionally styled."""
    return Text("" if value is None else str(value), style=style, end="")


def slot_fill(fill: str | None) -> Text:
    """A slot's fill status; ``None`` (the job's app has no such slot) is blank."""
    if fill is None:
        return Text("", end="")
    symbol, word, style = SLOT_FILLS.get(fill, ("?", fill, ""))
    return Text(f"{symbol} {word}", style=style, end="")


def job_state(state: str) -> Text:
    return Text(state, style=JOB_STATE_STYLES.get(state, ""), end="")


def task_state(state: str) -> Text:
    symbol, style = TASK_STATES.get(state, ("?", ""))
    return Text(f"{symbol} {state}", style=style, end="")


def progress_bar(
    settled: int, total: int, *, failed: int = 0, finished_ok: bool = False
) -> Text:
    """A fixed-width bar with a percentage: ``█████░░░░░  50%``.

    ``settled`` counts files done or failed; the bar turns yellow when some failed
    and red when all did, so a finished bar does not look like a success.
    """
    fraction = 1.0 if finished_ok else (settled / total if total else 0.0)
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * BAR_WIDTH)
    if failed and failed >= total:
        colour = "red"
    elif failed:
        colour = "yellow"
    else:
        colour = "green" if fraction >= 1.0 else "cyan"
    bar = Text(end="")
    bar.append("█" * filled, style=colour)
    bar.append("░" * (BAR_WIDTH - filled), style="dim")
    bar.append(f" {fraction * 100:3.0f}%")
    return bar


def size(n: int | float | None) -> str:
    """Bytes in decimal units, as transfer services count them: ``12.3 MB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def rate(bytes_per_second: float) -> str:
    return f"{size(bytes_per_second)}/s" if bytes_per_second > 0 else "-"


def age(seconds: float) -> str:
    """A short duration: ``42s``, ``3m05s``, ``2h10m``, ``4d03h``."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock_time(ts: float) -> str:
    """A timestamp as local wall-clock time, the way an operator reads a log."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def count(n: int) -> str:
    return f"{n:,}"
