"""The ``balsam-tui login``, ``logout`` and ``whoami`` commands.

Role: the command-line face of ``balsam_tui.globus.auth``. ``add_parsers`` adds the
three commands to the main parser's subcommands; ``run(site, args)`` carries one
out and returns the exit status. The work is done by ``auth``; this module only
asks and prints, so a console can offer the same login with ``GlobusLogin``.

Trap: ``login`` reads the code from stdin. Without a terminal (a batch job, cron)
it gets end of input at once and stops with one line; such places should use a
service account (``GLOBUS_CLIENT_ID`` and ``GLOBUS_CLIENT_SECRET``) instead.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from balsam_tui.site import Site

COMMANDS = ("login", "logout", "whoami")

LOGIN_HELP = """\
Log this site in to Globus: print a URL to open in a browser, then read the
authorization code Globus shows after the login. Tokens (refresh tokens included)
go to globus-tokens.json in the site directory, readable by you alone.

The client id is transfers.globus_client_id in settings.yml, else
BALSAM_TUI_GLOBUS_CLIENT_ID. A collection that needs a data_access consent (a
Globus Connect Server mapped collection) is added with --endpoint; collections
Globus already refused for want of consent, and those consented before, are
included by themselves.

examples:
  balsam-tui login
  balsam-tui login --endpoint 6c54cade-bde5-45c1-bdea-f4bd71dba2cc
"""

LOGOUT_HELP = """\
Revoke the site's Globus tokens at Globus Auth and delete globus-tokens.json.
The engine then waits for a new login (or uses a service account, if
GLOBUS_CLIENT_ID and GLOBUS_CLIENT_SECRET are set).

example:
  balsam-tui logout
"""

WHOAMI_HELP = """\
Show who the site is logged in to Globus as, for which scopes and collections,
and until when its access tokens run. Exits 1 when there is no login.

example:
  balsam-tui whoami
"""


def add_parsers(subparsers: Any) -> None:
    """Add ``login``, ``logout`` and ``whoami`` to an argparse subparsers object."""
    formatter = argparse.RawDescriptionHelpFormatter
    login = subparsers.add_parser(
        "login",
        help="log in to Globus (prints a URL, reads the code)",
        description=LOGIN_HELP,
        formatter_class=formatter,
    )
    login.add_argument(
        "--endpoint",
        action="append",
        default=[],
        type=_collection_id,
        metavar="UUID",
        help="also consent to data_access on this collection (repeatable)",
    )
    subparsers.add_parser(
        "logout",
        help="revoke and delete the site's Globus tokens",
        description=LOGOUT_HELP,
        formatter_class=formatter,
    )
    subparsers.add_parser(
        "whoami",
        help="show the site's Globus login",
        description=WHOAMI_HELP,
        formatter_class=formatter,
    )


def run(
    site: Site,
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Carry out ``args.command`` (one of ``COMMANDS``); return the exit status."""
    from balsam_tui.globus.auth import GlobusAuthError
    from balsam_tui.settings import SettingsError

    streams = _Streams(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    env = os.environ if environ is None else environ
    try:
        if args.command == "login":
            return _login(site, args.endpoint, streams, env)
        if args.command == "logout":
            return _logout(site, streams)
        if args.command == "whoami":
            return _whoami(site, streams, env)
    except (GlobusAuthError, SettingsError) as exc:
        streams.error(str(exc))
        return 1
    raise ValueError(f"not a Globus command: {args.command!r}")


class _Streams:
    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        print(f"balsam-tui: error: {text}", file=self.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"balsam-tui: warning: {text}", file=self.stderr, flush=True)


def _collection_id(text: str) -> str:
    from balsam_tui.globus.auth import canonical_endpoint

    try:
        return canonical_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _transfer_settings(site: Site) -> Any:
    from balsam_tui.settings import load_settings

    return load_settings(site.settings_path).transfers


def _login(
    site: Site, endpoints: list[str], streams: _Streams, env: Mapping[str, str]
) -> int:
    from balsam_tui.globus.auth import (
        SERVICE_ID_VARIABLE,
        GlobusLogin,
        service_account_from_env,
    )

    login = GlobusLogin(
        site, _transfer_settings(site), endpoints=endpoints, environ=env
    )
    url = login.start()
    streams.say("Open this URL in a browser, log in to Globus and allow the access:")
    streams.say()
    streams.say(f"  {url}")
    streams.say()
    if login.endpoints:
        streams.say(f"data_access consent asked for: {', '.join(login.endpoints)}")
    streams.stdout.write("Paste the authorization code here: ")
    streams.stdout.flush()
    code = streams.stdin.readline()
    if not code.strip():
        streams.say()
        streams.error("no authorization code was read: the login is aborted")
        return 1

    record = login.finish(code)
    who = record.username or record.identity_id or "an unnamed identity"
    streams.say(
        f"logged in to Globus as {who}; tokens in {site.root}/globus-tokens.json"
    )
    if service_account_from_env(env) is not None:
        streams.warn(
            f"{SERVICE_ID_VARIABLE} and its secret are set, so the engine runs as that "
            "service account, not as this login"
        )
    return 0


def _logout(site: Site, streams: _Streams) -> int:
    from balsam_tui.globus.auth import TOKENS_FILE, logout

    outcome = logout(site)
    if not outcome.was_logged_in:
        streams.say("not logged in to Globus: nothing to do")
        return 0
    streams.say(
        f"logged out of Globus: {outcome.revoked} token(s) revoked, "
        f"{site.root / TOKENS_FILE} deleted"
    )
    for problem in outcome.problems:
        streams.warn(problem)
    return 1 if outcome.problems else 0


def _whoami(site: Site, streams: _Streams, env: Mapping[str, str]) -> int:
    from balsam_tui.globus.auth import current_login, service_account_from_env

    account = service_account_from_env(env)
    record = current_login(site)
    if account is not None:
        streams.say(
            f"the engine runs as service account {account.client_id} "
            "(GLOBUS_CLIENT_ID and GLOBUS_CLIENT_SECRET are set)"
        )
    if record is None:
        if account is None:
            streams.say("not logged in to Globus: run 'balsam-tui login'")
            return 1
        return 0

    who = record.username or "an unnamed identity"
    named = f" ({record.name})" if record.name else ""
    streams.say(f"logged in to Globus as {who}{named}")
    streams.say(f"  identity:   {record.identity_id or 'unknown'}")
    streams.say(f"  client:     {record.client_id}")
    if record.logged_in_at:
        streams.say(f"  logged in:  {_when(record.logged_in_at)}")
    for resource_server, data in sorted(record.tokens.items()):
        renewal = (
            "renewed with a refresh token"
            if data.refresh_token
            else "no refresh token: log in again then"
        )
        streams.say(f"  {resource_server}:")
        streams.say(f"    scopes:   {data.scope}")
        streams.say(
            f"    access token until {_when(data.expires_at_seconds)}, {renewal}"
        )
    consented = ", ".join(record.consented_endpoints) or "none"
    streams.say(f"  data_access consent: {consented}")
    if record.consent_needed:
        needed = " ".join(f"--endpoint {e}" for e in record.consent_needed)
        streams.say(
            f"  consent needed for: {', '.join(record.consent_needed)} "
            f"(run 'balsam-tui login {needed}')"
        )
    return 0


def _when(epoch_seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_seconds).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
