"""The ``?`` screen: every key, what the symbols mean, and the filter words.

The key list is built from the bindings themselves, so it cannot drift from what
the keys do.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from balsam_tui.ui import cells
from balsam_tui.ui.job_filter import HINT

KeySection = tuple[str, Sequence[tuple[str, str]]]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 98%; height: 90%;
        border: thick $primary; background: $surface; padding: 0 2;
    }
    """

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: Sequence[KeySection]) -> None:
        super().__init__()
        self._sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(_keys(self._sections))
            yield Static(_legend())

    def action_dismiss(self) -> None:
        self.dismiss(None)


def _keys(sections: Sequence[KeySection]) -> Table:
    table = Table(title="balsam-tui keys", title_style="bold", expand=True, box=None)
    table.add_column("key", style="bold cyan", no_wrap=True, width=14)
    table.add_column("does")
    for heading, keys in sections:
        table.add_row("", "")
        table.add_row(Text(heading, style="bold underline"), "")
        for key, description in keys:
            table.add_row(key, description)
    return table


def _legend() -> Table:
    table = Table(
        title="\nslot fill (Jobs pane)", title_style="bold", box=None, expand=True
    )
    table.add_column("cell", no_wrap=True, width=14)
    table.add_column("means")
    for fill, meaning in cells.SLOT_FILL_MEANINGS.items():
        table.add_row(cells.slot_fill(fill), meaning)
    table.add_row("", "")
    table.add_row(Text("filter (/)", style="bold"), HINT)
    table.add_row(
        "",
        "a job state's name alone (e.g. ready) filters by it; "
        "'errors' finds jobs with a failed item",
    )
    return table
