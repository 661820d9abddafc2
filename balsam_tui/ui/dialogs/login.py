"""The Globus login dialog: show the URL, offer to copy it, take the code.

``GlobusLogin.start`` only builds the URL, so it runs on the UI's thread;
``finish`` talks to Globus Auth, so it runs in a thread worker and the dialog stays
responsive. A refused code keeps the login open (a typo can be corrected and sent
again); "New link" starts over with a fresh URL when the old one is spent.

The dialog is dismissed with the logged-in user's name, or None if the operator
gave up. It never shows or logs a token.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static
from textual.worker import Worker, WorkerState

from balsam_tui.settings import TransferSettings
from balsam_tui.site import Site


class LoginDialog(ModalScreen[str | None]):
    DEFAULT_CSS = """
    LoginDialog { align: center middle; }
    LoginDialog > Vertical {
        width: 90; max-width: 98%; height: auto; max-height: 98%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    LoginDialog .title { text-style: bold; }
    LoginDialog #login-url {
        margin: 1 0; padding: 0 1; background: $boost; color: $text;
    }
    LoginDialog #login-message { margin-bottom: 1; }
    LoginDialog #login-error { color: $error; height: auto; }
    LoginDialog Horizontal { height: auto; margin-top: 1; }
    LoginDialog Button { margin-right: 2; }
    """

    BINDINGS = [Binding("escape", "give_up", "Cancel")]

    def __init__(self, site: Site, transfers: TransferSettings | None) -> None:
        super().__init__()
        self._site = site
        self._transfers = transfers
        self._login = None
        self.url = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Log this site in to Globus", classes="title")
            yield Static("", id="login-message")
            yield Static("", id="login-url", markup=False)
            yield Input(placeholder="paste the code Globus shows here", id="login-code")
            yield Static("", id="login-error")
            with Horizontal():
                yield Button("Log in", variant="primary", id="login-submit")
                yield Button("Copy URL", id="login-copy")
                yield Button("New link", id="login-restart")
                yield Button("Cancel", id="login-cancel")

    def on_mount(self) -> None:
        from balsam_tui.globus.auth import GlobusAuthError, GlobusLogin

        try:
            self._login = GlobusLogin(self._site, self._transfers)
        except GlobusAuthError as exc:
            self._cannot_log_in(str(exc))
            return
        self._start(GlobusAuthError)

    def _start(self, error_class: type[Exception]) -> None:
        try:
            self.url = self._login.start()
        except error_class as exc:
            self._cannot_log_in(str(exc))
            return
        self.query_one("#login-message", Static).update(
            "1. Open this URL in a browser (Copy URL puts it on the clipboard):"
        )
        self.query_one("#login-url", Static).update(self.url)
        self.query_one("#login-error", Static).update(
            Text("2. Log in, allow access, and paste the code Globus shows.", "dim")
        )
        box = self.query_one("#login-code", Input)
        box.value = ""
        box.disabled = False
        box.focus()

    def _cannot_log_in(self, message: str) -> None:
        self.query_one("#login-message", Static).update(
            Text("Cannot start a Globus login:", style="bold")
        )
        self.query_one("#login-error", Static).update(Text(message))
        for selector in (
            "#login-url",
            "#login-code",
            "#login-submit",
            "#login-copy",
            "#login-restart",
        ):
            self.query_one(selector).display = False
        self.query_one("#login-cancel", Button).label = "Close"
        self.query_one("#login-cancel", Button).focus()

    # -- what the operator does -------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "login-submit":
            self._submit()
        elif event.button.id == "login-copy":
            self.app.copy_to_clipboard(self.url)
            self.app.notify("login URL copied to the clipboard", timeout=3)
        elif event.button.id == "login-restart":
            from balsam_tui.globus.auth import GlobusAuthError

            self._login.cancel()
            self._start(GlobusAuthError)
        else:
            self.action_give_up()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def action_give_up(self) -> None:
        if self._login is not None:
            self._login.cancel()
        self.dismiss(None)

    def _submit(self) -> None:
        box = self.query_one("#login-code", Input)
        code = box.value.strip()
        if not code:
            self._show_error("paste the code Globus showed after the login first")
            return
        box.disabled = True
        self.query_one("#login-error", Static).update(
            Text("checking the code with Globus Auth…", "dim")
        )
        self._finish(code)

    @work(thread=True, exclusive=True, exit_on_error=False, group="login")
    def _finish(self, code: str) -> str:
        record = self._login.finish(code)
        return record.username or record.name or record.identity_id or "?"

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "login":
            return
        if event.state == WorkerState.SUCCESS:
            self.dismiss(event.worker.result)
        elif event.state == WorkerState.ERROR:
            from balsam_tui.globus.auth import GlobusAuthError

            error = event.worker.error
            if isinstance(error, GlobusAuthError):
                self._show_error(str(error))
            else:
                self._show_error(f"the login failed: {type(error).__name__}: {error}")
            box = self.query_one("#login-code", Input)
            box.disabled = False
            box.focus()

    def _show_error(self, message: str) -> None:
        self.query_one("#login-error", Static).update(
            Text(f"✖ {message}", style="bold red")
        )
