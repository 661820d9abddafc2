"""The Settings pane: the settings the engine runs with, and where each came from.

It shows the engine's own ``SiteSettings`` (after a reload, the new ones; after a
refused reload, still the old ones, with the reason among the problems), so what
is on screen is what the engine does, not what the file says now.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from balsam_tui.settings import SiteSettings, TransferSettings
from balsam_tui.ui import cells


class SettingsPane(VerticalScroll):
    DEFAULT_CSS = """
    SettingsPane { height: 1fr; padding: 0 1; }
    SettingsPane .heading { text-style: bold; margin-top: 1; }
    SettingsPane DataTable { height: auto; max-height: 100%; }
    SettingsPane #settings-problems { color: $error; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._settings: SiteSettings | None = None
        self._problems: tuple[str, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="settings-source")
        yield Static("Problems", classes="heading")
        yield Static("", id="settings-problems")
        yield Static("Transfer settings (transfers:)", classes="heading")
        yield DataTable(id="settings-values", cursor_type="row", zebra_stripes=True)
        yield Static("Location aliases (transfer_locations)", classes="heading")
        yield DataTable(id="settings-locations", cursor_type="row", zebra_stripes=True)
        yield Static("Other sections of the file", classes="heading")
        yield Static("", id="settings-ignored")

    def on_mount(self) -> None:
        values = self.query_one("#settings-values", DataTable)
        values.add_columns("key", "value", "from", "meaning")
        locations = self.query_one("#settings-locations", DataTable)
        locations.add_columns("alias", "protocol", "host or endpoint", "root")

    def show(self, settings: SiteSettings, problems: tuple[str, ...]) -> None:
        """Redraw when the engine's settings or its problems changed."""
        if settings is self._settings and problems == self._problems:
            return
        self._problems = problems
        self._show_problems(settings, problems)
        if settings is self._settings:
            return
        self._settings = settings
        where = str(settings.path) if settings.path else "(not from a file)"
        source = Text("Settings file ", style="bold")
        source.append(where)
        source.append("   ctrl+r reloads it without a restart", style="dim")
        self.query_one("#settings-source", Static).update(source)
        self._show_values(settings)
        self._show_locations(settings)
        ignored = ", ".join(settings.ignored_sections)
        self.query_one("#settings-ignored", Static).update(
            Text(
                f"ignored (this tool uses only transfers:): {ignored}"
                if ignored
                else "none: the file holds only transfers:",
                style="dim",
            )
        )

    def _show_problems(self, settings: SiteSettings, problems: tuple[str, ...]) -> None:
        lines = list(problems)
        if settings.transfers is None and not any("transfers" in p for p in lines):
            lines.insert(0, "transfers are off: settings.yml has `transfers: null`")
        body = (
            Text("\n".join(f"✖ {line}" for line in lines))
            if lines
            else Text("✔ none", style="green")
        )
        self.query_one("#settings-problems", Static).update(body)

    def _show_values(self, settings: SiteSettings) -> None:
        table = self.query_one("#settings-values", DataTable)
        table.clear()
        fields = TransferSettings.model_fields
        for key, value, origin in settings.effective():
            meaning = fields[key].description if key in fields else ""
            table.add_row(
                cells.text(key, "bold"),
                cells.text(_value(value)),
                cells.text(origin, "cyan" if origin == "file" else "dim"),
                cells.text(meaning or "", "dim"),
                key=key,
            )

    def _show_locations(self, settings: SiteSettings) -> None:
        table = self.query_one("#settings-locations", DataTable)
        table.clear()
        for alias, location in sorted(settings.locations.items()):
            table.add_row(
                cells.text(alias, "bold"),
                cells.text(location.protocol),
                cells.text(location.netloc or "-", "dim"),
                cells.text(location.root),
                key=alias,
            )


def _value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return f"{len(value)} alias(es), below" if value else "{}"
    return str(value)
