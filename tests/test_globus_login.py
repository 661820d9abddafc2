"""Logging a site in to Globus, through the stand-in's Auth and the real globus-sdk.

The "user" of a login reads the URL the command printed, fetches it (the stand-in
approves at once and answers the code), and pastes the code back on stdin.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from balsam_tui.backends.base import CredentialsRequired
from balsam_tui.backends.globus import GlobusBackend
from balsam_tui.globus import commands
from balsam_tui.globus.auth import (
    EXPIRED_MESSAGE,
    TOKENS_FILE,
    GlobusLogin,
    LoginFailed,
    SiteTokenStorage,
)
from balsam_tui.settings import load_settings
from balsam_tui.site import Site
from balsam_tui.testing.globus_standin import GlobusStandin
from tests.globus_site import (
    NATIVE_CLIENT,
    REMOTE_COLLECTION,
    SERVICE_CLIENT,
    SERVICE_ENV,
    GlobusSite,
    log_in,
    make_globus_site,
    standin_for,
)


@pytest.fixture
def gs(tmp_path: Path) -> GlobusSite:
    return make_globus_site(tmp_path, jobs=1, stage_out=False)


@pytest.fixture
def standin(gs: GlobusSite, monkeypatch: pytest.MonkeyPatch) -> Iterator[GlobusStandin]:
    started = standin_for(gs)
    for name, value in started.environ.items():
        monkeypatch.setenv(name, value)
    for name in (*SERVICE_ENV, "BALSAM_TUI_GLOBUS_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    yield started
    started.stop()


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to read a terminal fails the test."""

    class _NoTerminal(io.StringIO):
        def readline(self, *args: object) -> str:
            raise AssertionError("something tried to prompt on stdin")

        read = readline

    monkeypatch.setattr("sys.stdin", _NoTerminal())


class _Browser(io.StringIO):
    """Stdin of a user who opens the printed URL and pastes what Globus shows."""

    def __init__(self, printed: io.StringIO) -> None:
        super().__init__()
        self.printed = printed
        self.urls: list[str] = []

    def readline(self, *args: object) -> str:
        url = re.findall(r"https?://\S+", self.printed.getvalue())[-1]
        self.urls.append(url)
        return requests.get(url, timeout=10).text


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="balsam-tui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _run(
    site: Site,
    *argv: str,
    stdin: io.StringIO | None = None,
    environ: dict | None = None,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = commands.run(
        site,
        _parse(*argv),
        stdin=stdin if stdin is not None else io.StringIO(),
        stdout=out,
        stderr=err,
        environ=environ if environ is not None else {},
    )
    return status, out.getvalue(), err.getvalue()


def _login_command(site: Site, *argv: str, environ: dict | None = None) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    browser = _Browser(out)
    status = commands.run(
        site,
        _parse("login", *argv),
        stdin=browser,
        stdout=out,
        stderr=err,
        environ=environ if environ is not None else {},
    )
    return status, out.getvalue(), err.getvalue(), browser.urls


def _tokens(site: Site) -> dict:
    return json.loads((site.root / TOKENS_FILE).read_text())["tokens"]


def _backend(gs: GlobusSite) -> GlobusBackend:
    settings = load_settings(gs.site.settings_path).transfers
    assert settings is not None
    return GlobusBackend(settings=settings, site=gs.site)


# -- login, whoami, logout -----------------------------------------------------------


def test_login_prints_a_url_and_keeps_the_tokens_owner_only(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    status, out, err, urls = _login_command(gs.site)

    assert status == 0, err
    (url,) = urls
    assert url.startswith(standin.auth_url) and "access_type=offline" in url
    tokens_file = gs.site.root / TOKENS_FILE
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    tokens = _tokens(gs.site)
    assert set(tokens) == {"auth.globus.org", "transfer.api.globus.org"}
    assert all(t["refresh_token"] for t in tokens.values())
    secrets = [
        v for t in tokens.values() for v in (t["access_token"], t["refresh_token"])
    ]
    assert not any(secret in out + err for secret in secrets)
    assert standin.auth.user.username in out
    leftovers = [p.name for p in gs.site.root.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_whoami_says_who_for_which_scopes_and_until_when(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    status, out, _ = _run(gs.site, "whoami")
    assert status == 1 and "not logged in" in out

    log_in(gs.site)
    status, out, _ = _run(gs.site, "whoami")

    assert status == 0
    assert f"logged in to Globus as {standin.auth.user.username}" in out
    assert NATIVE_CLIENT in out
    assert "urn:globus:auth:scope:transfer.api.globus.org:all" in out
    assert "access token until" in out and "refresh token" in out
    assert "data_access consent: none" in out


def test_logout_revokes_the_tokens_at_globus_and_deletes_the_file(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    log_in(gs.site)
    tokens = _tokens(gs.site)

    status, out, err = _run(gs.site, "logout")

    assert status == 0, err
    assert "4 token(s) revoked" in out
    assert not (gs.site.root / TOKENS_FILE).exists()
    for data in tokens.values():
        assert standin.auth.introspect(data["access_token"])["active"] is False
        assert standin.auth.introspect(data["refresh_token"])["active"] is False
    assert _run(gs.site, "logout")[1].startswith("not logged in")


def test_login_without_a_client_id_says_what_to_do_in_one_line(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    settings = gs.site.settings_path
    settings.write_text(
        re.sub(r"(?m)^  globus_client_id: .*\n", "", settings.read_text())
    )

    status, out, err = _run(gs.site, "login")

    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("balsam-tui: error: ")
    assert "transfers.globus_client_id" in err and "BALSAM_TUI_GLOBUS_CLIENT_ID" in err

    status, _, err, _ = _login_command(
        gs.site, environ={"BALSAM_TUI_GLOBUS_CLIENT_ID": NATIVE_CLIENT}
    )
    assert status == 0, err


def test_a_wrong_code_or_no_code_fails_in_one_line(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    status, _, err = _run(gs.site, "login", stdin=io.StringIO("not-a-code\n"))
    assert status == 1 and "refused the code" in err and err.count("\n") == 1

    status, _, err = _run(gs.site, "login", stdin=io.StringIO(""))
    assert status == 1 and "no authorization code" in err
    assert not (gs.site.root / TOKENS_FILE).exists()


def test_a_refused_code_can_be_followed_by_the_right_one_in_the_same_login(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    login = GlobusLogin(gs.site, load_settings(gs.site.settings_path).transfers)
    url = login.start()

    with pytest.raises(LoginFailed):
        login.finish("a-typo")
    record = login.finish(requests.get(url, timeout=10).text)

    assert record.username == standin.auth.user.username
    with pytest.raises(LoginFailed):
        login.finish("the flow is over")


def test_login_rejects_an_endpoint_that_is_not_a_uuid() -> None:
    with pytest.raises(SystemExit) as refused:
        _parse("login", "--endpoint", "my-laptop")
    assert refused.value.code == 2


def test_login_consents_to_collections_globus_refused_before(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    SiteTokenStorage.for_site(gs.site).note_consent_needed([REMOTE_COLLECTION])
    login = GlobusLogin(gs.site, load_settings(gs.site.settings_path).transfers)

    url = login.start()
    record = login.finish(requests.get(url, timeout=10).text)

    scope = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["scope"][0]
    assert f"/scopes/{REMOTE_COLLECTION}/data_access" in scope
    assert record.consented_endpoints == (REMOTE_COLLECTION,)
    assert record.consent_needed == ()
    status, out, _ = _run(gs.site, "whoami")
    assert f"data_access consent: {REMOTE_COLLECTION}" in out


# -- what the engine's backend does with the login -------------------------------------


def test_a_service_account_from_the_environment_needs_no_login(
    gs: GlobusSite,
    standin: GlobusStandin,
    monkeypatch: pytest.MonkeyPatch,
    no_prompt: None,
) -> None:
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)
    backend = _backend(gs)
    try:
        assert backend.new_submission_id()
    finally:
        backend.close()

    assert not (gs.site.root / TOKENS_FILE).exists()
    assert standin.counters().requests["oauth2_token"] == 1
    status, out, _ = _run(gs.site, "whoami", environ=dict(SERVICE_ENV))
    assert status == 0 and f"service account {SERVICE_CLIENT}" in out


def test_without_a_login_the_backend_asks_for_one_and_never_prompts(
    gs: GlobusSite, standin: GlobusStandin, no_prompt: None
) -> None:
    backend = _backend(gs)
    try:
        with pytest.raises(CredentialsRequired) as needed:
            backend.new_submission_id()
    finally:
        backend.close()
    assert "not logged in to Globus: run 'balsam-tui login'" in str(needed.value)
    assert needed.value.endpoints == ()


def test_an_expired_access_token_is_renewed_and_stored_without_a_prompt(
    gs: GlobusSite, standin: GlobusStandin, no_prompt: None
) -> None:
    log_in(gs.site)
    before = _tokens(gs.site)["transfer.api.globus.org"]["access_token"]
    standin.faults.expire_access_tokens()

    backend = _backend(gs)
    try:
        assert backend.new_submission_id()
    finally:
        backend.close()

    after = _tokens(gs.site)["transfer.api.globus.org"]
    assert after["access_token"] != before and after["refresh_token"]
    mode = (gs.site.root / TOKENS_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_revoked_login_is_reported_and_a_new_login_is_used_at_once(
    gs: GlobusSite, standin: GlobusStandin, no_prompt: None
) -> None:
    log_in(gs.site)
    backend = _backend(gs)
    try:
        assert backend.new_submission_id()
        standin.faults.revoke_all_tokens()
        with pytest.raises(CredentialsRequired) as expired:
            backend.new_submission_id()
        assert str(expired.value) == EXPIRED_MESSAGE

        log_in(gs.site)  # as another process would: only the file is shared
        assert backend.new_submission_id()
    finally:
        backend.close()


def test_renewed_tokens_of_an_old_login_never_overwrite_a_new_one_or_a_logout(
    gs: GlobusSite, standin: GlobusStandin
) -> None:
    log_in(gs.site)
    engine_side = SiteTokenStorage.for_site(gs.site)
    engine_side.bind()
    old = engine_side.get_token_data_by_resource_server()

    log_in(gs.site)
    newer = _tokens(gs.site)
    engine_side.store_token_data_by_resource_server(old)
    assert _tokens(gs.site) == newer
    assert engine_side.changed()

    assert _run(gs.site, "logout")[0] == 0
    engine_side.store_token_data_by_resource_server(old)
    assert not (gs.site.root / TOKENS_FILE).exists()


def test_the_commands_load_without_globus_sdk_textual_or_rich() -> None:
    probe = (
        "import sys, balsam_tui.globus.commands; "
        "print(sorted(m for m in ('globus_sdk', 'textual', 'rich') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    assert result.stdout.strip() == "[]"
