"""The stand-in Globus service answers the real globus-sdk the way Globus does.

The tests talk to a stand-in on loopback, through the real globus-sdk pointed there
by its own base-URL variables (nothing in the SDK is patched), or with plain HTTP
for the control routes and the command line; the last few drive the transfer state
machine alone on a fake clock. Shapes are checked against the canned payloads
globus-sdk ships in ``globus_sdk.testing``. Retry waits are shortened through the
SDK's public ``retry_config`` where the wait itself is not what a test proves.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import globus_sdk
import pytest
import requests
from globus_sdk.gare import to_gare
from globus_sdk.login_flows import CommandLineLoginFlowManager
from globus_sdk.testing import get_response_set

from balsam_tui.testing.globus_standin import GlobusStandin
from balsam_tui.testing.standin_auth import (
    TRANSFER_SCOPE,
    Identity,
    client_identity,
    data_access_scope,
    pkce_challenge,
)
from balsam_tui.testing.standin_transfer import TransferService

SITE = "5a1e0000-0000-4000-8000-000000000001"
REMOTE = "5a1e0000-0000-4000-8000-000000000002"
NATIVE_CLIENT = "c11e0000-0000-4000-8000-00000000000a"
SERVICE_CLIENT = "c11e0000-0000-4000-8000-00000000000b"
REPO = Path(__file__).resolve().parents[1]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    return directory


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "remote"
    directory.mkdir()
    return directory


@pytest.fixture
def make_standin(
    site_dir: Path, remote_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., GlobusStandin]]:
    started: list[GlobusStandin] = []

    def make(**options: object) -> GlobusStandin:
        standin = GlobusStandin({SITE: site_dir, REMOTE: remote_dir}, **options)
        started.append(standin.start())
        for name, value in standin.environ.items():
            monkeypatch.setenv(name, value)
        return standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def standin(make_standin: Callable[..., GlobusStandin]) -> GlobusStandin:
    return make_standin(retry_interval=0.05)


def _service_token(scopes: str = TRANSFER_SCOPE) -> str:
    """A Transfer token from the stand-in's token endpoint, via client credentials."""
    auth = globus_sdk.ConfidentialAppAuthClient(SERVICE_CLIENT, "not-a-real-secret")
    answer = auth.oauth2_client_credentials_tokens(requested_scopes=scopes)
    return answer.by_resource_server["transfer.api.globus.org"]["access_token"]


@pytest.fixture
def transfer_client(standin: GlobusStandin) -> globus_sdk.TransferClient:
    authorizer = globus_sdk.AccessTokenAuthorizer(_service_token())
    return globus_sdk.TransferClient(authorizer=authorizer)


def _write(directory: Path, relative: str, payload: bytes) -> Path:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _transfer(**options: object) -> globus_sdk.TransferData:
    return globus_sdk.TransferData(SITE, REMOTE, label="stand-in test", **options)


def _wait_for(
    client: globus_sdk.TransferClient,
    task_id: str,
    done: Callable[[dict[str, object]], bool],
    timeout: float = 5.0,
) -> dict[str, object]:
    """Poll the task the way the engine does (task_list with a filter)."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.task_list(filter={"task_id": [task_id]}, limit=100)
        task = dict(page["DATA"][0])
        if done(task) or time.monotonic() > deadline:
            return task
        time.sleep(0.02)


def _finished(task: dict[str, object]) -> bool:
    return task["status"] in ("SUCCEEDED", "FAILED")


def _assert_same_shape(ours: object, canned: object, where: str = "") -> None:
    """Ours has every key of the canned payload, with the same JSON type."""
    if isinstance(canned, dict):
        assert isinstance(ours, dict), where
        for key, value in canned.items():
            assert key in ours, f"{where}.{key} missing"
            _assert_same_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(canned, list):
        assert isinstance(ours, list), where
        if canned and ours:
            _assert_same_shape(ours[0], canned[0], f"{where}[0]")
    elif canned is not None and ours is not None:
        assert type(ours) is type(canned), f"{where}: {ours!r} vs {canned!r}"


def _canned(name: str, case: str = "default") -> object:
    return get_response_set(name).lookup(case).json


# -- shapes ----------------------------------------------------------------------------


def test_transfer_answers_have_the_shape_of_the_sdk_canned_payloads(
    standin: GlobusStandin,
    transfer_client: globus_sdk.TransferClient,
    site_dir: Path,
) -> None:
    _write(site_dir, "in/a.dat", b"alpha")
    submission_id = transfer_client.get_submission_id()
    _assert_same_shape(submission_id.data, _canned("transfer.get_submission_id"))

    data = _transfer(submission_id=submission_id["value"])
    data.add_item("/in/a.dat", "/out/a.dat")
    submitted = transfer_client.submit_transfer(data)
    _assert_same_shape(submitted.data, _canned("transfer.submit_transfer"))
    assert submitted.http_status == 202 and submitted["code"] == "Accepted"

    _wait_for(transfer_client, submitted["task_id"], _finished)
    listing = transfer_client.task_list(filter={"task_id": [submitted["task_id"]]})
    _assert_same_shape(listing.data, _canned("transfer.task_list"))
    task = transfer_client.get_task(submitted["task_id"])
    canned = _canned("transfer.task_list")["DATA"][0]  # type: ignore[index]
    _assert_same_shape(task.data, canned)

    stuck = _transfer(skip_source_errors=False)
    stuck.add_item("/in/missing.dat", "/out/missing.dat")
    stuck_id = transfer_client.submit_transfer(stuck)["task_id"]
    canceled = transfer_client.cancel_task(stuck_id)
    _assert_same_shape(canceled.data, _canned("transfer.cancel_task"))
    assert canceled["code"] == "Canceled"


def test_auth_answers_have_the_shape_of_the_sdk_canned_payloads(
    standin: GlobusStandin,
) -> None:
    confidential = globus_sdk.ConfidentialAppAuthClient(SERVICE_CLIENT, "secret")
    credentials = confidential.oauth2_client_credentials_tokens(
        requested_scopes=TRANSFER_SCOPE
    )
    _assert_same_shape(
        credentials.data, _canned("auth.oauth2_client_credentials_tokens")
    )

    native = globus_sdk.NativeAppAuthClient(NATIVE_CLIENT)
    native.oauth2_start_flow(requested_scopes=TRANSFER_SCOPE, refresh_tokens=True)
    code = requests.get(native.oauth2_get_authorize_url(), timeout=5).text.strip()
    exchanged = native.oauth2_exchange_code_for_tokens(code)
    _assert_same_shape(exchanged.data, _canned("auth.oauth2_exchange_code_for_tokens"))

    access = credentials.by_resource_server["transfer.api.globus.org"]["access_token"]
    introspected = confidential.oauth2_token_introspect(access)
    _assert_same_shape(introspected.data, _canned("auth.oauth2_token_introspect"))
    revoked = confidential.oauth2_revoke_token(access)
    _assert_same_shape(revoked.data, _canned("auth.oauth2_revoke_token"))
    assert confidential.oauth2_token_introspect(access)["active"] is False


# -- moving files ----------------------------------------------------------------------


def test_files_submitted_through_the_sdk_arrive_byte_identical(
    transfer_client: globus_sdk.TransferClient, site_dir: Path, remote_dir: Path
) -> None:
    payloads = {
        "job1/input.txt": b"first job\n",
        "job2/deep/params.json": b'{"x": 1}',
        "job3/blob.bin": os.urandom(200_000),
    }
    for relative, payload in payloads.items():
        _write(site_dir, f"stage/{relative}", payload)
    _write(site_dir, "tree/a.txt", b"a")
    _write(site_dir, "tree/sub/b.txt", b"b")

    data = _transfer(verify_checksum=True)
    for relative in payloads:
        data.add_item(f"/stage/{relative}", f"/arrived/{relative}")
    data.add_item("/tree", "/arrived/tree", recursive=True)
    task_id = transfer_client.submit_transfer(data)["task_id"]
    task = _wait_for(transfer_client, task_id, _finished)

    assert task["status"] == "SUCCEEDED" and task["nice_status"] is None
    assert task["files"] == task["files_transferred"] == 5
    assert task["directories"] == 2
    assert task["bytes_transferred"] == sum(map(len, payloads.values())) + 2
    for relative, payload in payloads.items():
        assert (remote_dir / "arrived" / relative).read_bytes() == payload
    assert (remote_dir / "arrived/tree/sub/b.txt").read_bytes() == b"b"
    leftovers = [p for p in remote_dir.rglob(".standin-*")]
    assert leftovers == []


def test_a_repeated_submission_id_creates_one_task(
    standin: GlobusStandin,
    transfer_client: globus_sdk.TransferClient,
    site_dir: Path,
) -> None:
    _write(site_dir, "a.dat", b"a")
    data = _transfer(submission_id=transfer_client.get_submission_id()["value"])
    data.add_item("/a.dat", "/a.dat")

    first = transfer_client.submit_transfer(data)
    second = transfer_client.submit_transfer(data)

    assert (first["code"], second["code"]) == ("Accepted", "Duplicate")
    assert first["task_id"] == second["task_id"]
    counters = standin.counters()
    assert counters.tasks_created == counters.submissions_applied == 1
    assert counters.duplicate_submissions == 1


def test_a_lost_answer_to_a_submission_is_retried_by_the_sdk_into_the_same_task(
    standin: GlobusStandin,
    transfer_client: globus_sdk.TransferClient,
    site_dir: Path,
) -> None:
    _write(site_dir, "a.dat", b"a")
    data = _transfer(submission_id=transfer_client.get_submission_id()["value"])
    data.add_item("/a.dat", "/a.dat")
    transfer_client.retry_config.max_sleep = 0.05
    standin.faults.drop_next(route="submit_transfer", after_apply=True)

    answer = transfer_client.submit_transfer(data)

    assert answer["code"] == "Duplicate"
    assert standin.counters().requests["submit_transfer"] == 2
    assert standin.counters().tasks_created == 1


def test_missing_sources_are_skipped_and_listed_under_skip_source_errors(
    standin: GlobusStandin,
    transfer_client: globus_sdk.TransferClient,
    site_dir: Path,
    remote_dir: Path,
) -> None:
    standin.transfer.skipped_errors_page_size = 1  # make the SDK follow markers
    _write(site_dir, "present.dat", b"here")
    data = _transfer(skip_source_errors=True)
    data.add_item("/missing-1.dat", "/missing-1.dat")
    data.add_item("/present.dat", "/present.dat")
    data.add_item("/missing-2.dat", "/missing-2.dat")

    task_id = transfer_client.submit_transfer(data)["task_id"]
    task = _wait_for(transfer_client, task_id, _finished)
    skipped = list(transfer_client.paginated.task_skipped_errors(task_id).items())

    assert task["status"] == "SUCCEEDED"
    assert task["subtasks_skipped_errors"] == 2
    assert task["files_transferred"] == 1
    assert (remote_dir / "present.dat").read_bytes() == b"here"
    assert [(s["error_code"], s["source_path"]) for s in skipped] == [
        ("FILE_NOT_FOUND", "/missing-1.dat"),
        ("FILE_NOT_FOUND", "/missing-2.dat"),
    ]
    assert standin.counters().requests["task_skipped_errors"] == 2


def test_a_missing_source_without_skipping_leaves_the_task_active_until_canceled(
    transfer_client: globus_sdk.TransferClient, site_dir: Path, remote_dir: Path
) -> None:
    _write(site_dir, "present.dat", b"here")
    data = _transfer(skip_source_errors=False)
    data.add_item("/missing.dat", "/missing.dat")
    data.add_item("/present.dat", "/present.dat")
    task_id = transfer_client.submit_transfer(data)["task_id"]

    stuck = _wait_for(
        transfer_client, task_id, lambda t: t["nice_status"] == "FILE_NOT_FOUND"
    )
    errors = transfer_client.task_event_list(
        task_id, query_params={"filter": "is_error:1"}
    )

    assert stuck["status"] == "ACTIVE" and stuck["faults"] >= 1
    assert errors["DATA"][0]["code"] == "FILE_NOT_FOUND"
    assert all(event["is_error"] is True for event in errors["DATA"])
    assert not (remote_dir / "present.dat").exists()

    assert transfer_client.cancel_task(task_id)["code"] == "Canceled"
    ended = transfer_client.get_task(task_id)
    assert ended["status"] == "FAILED" and ended["nice_status"] is None
    assert ended["fatal_error"]["code"] == "CANCELED"
    assert transfer_client.cancel_task(task_id)["code"] == "TaskComplete"


def test_the_files_a_task_copied_are_listed_once_it_has_ended(
    standin: GlobusStandin,
    transfer_client: globus_sdk.TransferClient,
    site_dir: Path,
) -> None:
    standin.transfer.successful_transfers_page_size = 1  # make the SDK follow markers
    _write(site_dir, "a.dat", b"a")
    _write(site_dir, "b.dat", b"b")
    _write(site_dir, "c.dat", b"c")
    data = _transfer(skip_source_errors=False)
    for name in ("a", "b", "missing", "c"):
        data.add_item(f"/{name}.dat", f"/out/{name}.dat")
    task_id = transfer_client.submit_transfer(data)["task_id"]
    _wait_for(transfer_client, task_id, lambda t: t["nice_status"] == "FILE_NOT_FOUND")

    with pytest.raises(globus_sdk.TransferAPIError) as still_active:
        transfer_client.task_successful_transfers(task_id)
    transfer_client.cancel_task(task_id)
    first_page = transfer_client.task_successful_transfers(task_id)
    listed = list(transfer_client.paginated.task_successful_transfers(task_id).items())

    assert (still_active.value.http_status, still_active.value.code) == (
        400,
        "ClientError.BadRequest",
    )
    # globus-sdk 4 ships a canned page for the admin twin of this route only; the
    # two documents have one shape.
    _assert_same_shape(
        first_page.data, _canned("transfer.endpoint_manager_task_successful_transfers")
    )
    assert first_page["next_marker"] is not None
    assert [(t["source_path"], t["destination_path"]) for t in listed] == [
        ("/a.dat", "/out/a.dat"),
        ("/b.dat", "/out/b.dat"),
    ]
    assert {t["DATA_TYPE"] for t in listed} == {"successful_transfer"}
    assert standin.counters().requests["task_successful_transfers"] == 4


def test_a_stuck_task_fails_at_its_deadline(
    transfer_client: globus_sdk.TransferClient,
) -> None:
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=0.5
    )
    data = _transfer(deadline=soon.isoformat())
    data.add_item("/missing.dat", "/missing.dat")
    task_id = transfer_client.submit_transfer(data)["task_id"]

    task = _wait_for(transfer_client, task_id, _finished)

    assert task["status"] == "FAILED"
    assert task["fatal_error"]["code"] == "EXPIRED"  # type: ignore[index]


def test_tasks_beyond_the_active_limit_wait_queued_behind_a_stuck_one(
    make_standin: Callable[..., GlobusStandin], site_dir: Path, remote_dir: Path
) -> None:
    make_standin(active_task_limit=1, retry_interval=0.05)
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(_service_token())
    )
    _write(site_dir, "b.dat", b"b")
    blocked = _transfer()
    blocked.add_item("/missing.dat", "/missing.dat")
    waiting = _transfer()
    waiting.add_item("/b.dat", "/b.dat")
    blocked_id = client.submit_transfer(blocked)["task_id"]
    waiting_id = client.submit_transfer(waiting)["task_id"]

    _wait_for(client, blocked_id, lambda t: t["nice_status"] == "FILE_NOT_FOUND")
    time.sleep(0.1)
    queued = client.get_task(waiting_id)
    assert (queued["status"], queued["nice_status"]) == ("ACTIVE", "Queued")
    assert queued["files_transferred"] == 0 and not (remote_dir / "b.dat").exists()

    client.cancel_task(blocked_id)
    done = _wait_for(client, waiting_id, _finished)
    assert done["status"] == "SUCCEEDED"
    assert (remote_dir / "b.dat").read_bytes() == b"b"


def test_a_task_stays_active_while_its_files_are_copied_one_by_one(
    make_standin: Callable[..., GlobusStandin], site_dir: Path
) -> None:
    make_standin(per_file_delay=0.15)
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(_service_token())
    )
    data = _transfer()
    for name in ("a", "b", "c"):
        _write(site_dir, f"{name}.dat", name.encode())
        data.add_item(f"/{name}.dat", f"/{name}.dat")
    task_id = client.submit_transfer(data)["task_id"]

    partway = _wait_for(client, task_id, lambda t: t["files_transferred"] == 1)

    assert (partway["status"], partway["nice_status"]) == ("ACTIVE", "OK")
    assert partway["files"] == 3 and partway["subtasks_pending"] == 2
    assert _wait_for(client, task_id, _finished)["status"] == "SUCCEEDED"


# -- faults the SDK must ride out ------------------------------------------------------


def test_the_sdk_honours_retry_after_on_429_and_succeeds(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient
) -> None:
    standin.faults.rate_limit_next(retry_after=1, route="task_list")

    started = time.monotonic()
    transfer_client.task_list(limit=10)

    assert time.monotonic() - started >= 1.0
    assert standin.counters().requests["task_list"] == 2


def test_the_sdk_retries_5xx_itself_but_not_an_external_error(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient
) -> None:
    transfer_client.retry_config.max_sleep = 0.05
    standin.faults.fail_next(2, status=503, route="get_submission_id")
    standin.faults.fail_next(1, status=500, route="task_list")

    transfer_client.get_submission_id()
    transfer_client.task_list()

    assert standin.counters().requests["get_submission_id"] == 3
    assert standin.counters().requests["task_list"] == 2

    standin.faults.fail_next(status=502, route="task_list", code="ExternalError")
    with pytest.raises(globus_sdk.TransferAPIError) as raised:
        transfer_client.task_list()
    assert (raised.value.http_status, raised.value.code) == (502, "ExternalError")


def test_dropped_and_slow_answers_are_ridden_out(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient
) -> None:
    transfer_client.retry_config.max_sleep = 0.05
    standin.faults.drop_next(route="task_list")
    transfer_client.task_list()
    assert standin.counters().requests["task_list"] == 2

    standin.faults.delay_next(seconds=0.3, route="get_submission_id")
    started = time.monotonic()
    transfer_client.get_submission_id()
    assert time.monotonic() - started >= 0.3


# -- auth ------------------------------------------------------------------------------


def test_an_expired_or_missing_token_gets_401_authentication_failed(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient
) -> None:
    standin.faults.expire_access_tokens()
    with pytest.raises(globus_sdk.TransferAPIError) as expired:
        transfer_client.task_list()
    assert (expired.value.http_status, expired.value.code) == (
        401,
        "AuthenticationFailed",
    )

    with pytest.raises(globus_sdk.TransferAPIError) as anonymous:
        globus_sdk.TransferClient().task_list()
    assert anonymous.value.http_status == 401


def test_native_login_with_pkce_gives_tokens_for_transfer_and_auth(
    standin: GlobusStandin,
) -> None:
    native = globus_sdk.NativeAppAuthClient(NATIVE_CLIENT)
    native.oauth2_start_flow(
        requested_scopes=f"{TRANSFER_SCOPE} openid profile email",
        refresh_tokens=True,
    )
    authorize_url = native.oauth2_get_authorize_url()
    assert authorize_url.startswith(standin.auth_url + "v2/oauth2/authorize?")
    code = requests.get(authorize_url, timeout=5).text.strip()

    tokens = native.oauth2_exchange_code_for_tokens(code).by_resource_server

    assert set(tokens) == {"transfer.api.globus.org", "auth.globus.org"}
    assert all(t["refresh_token"] for t in tokens.values())
    auth_token = tokens["auth.globus.org"]["access_token"]
    who = globus_sdk.AuthClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(auth_token)
    ).userinfo()
    assert who["preferred_username"] == standin.auth.user.username
    introspected = globus_sdk.ConfidentialAppAuthClient(
        SERVICE_CLIENT, "secret"
    ).oauth2_token_introspect(tokens["transfer.api.globus.org"]["access_token"])
    assert introspected["active"] and introspected["sub"] == standin.auth.user.sub

    with pytest.raises(globus_sdk.AuthAPIError) as replayed:
        native.oauth2_exchange_code_for_tokens(code)
    assert replayed.value.raw_json == {
        "error": "invalid_grant",
        "error_description": "unknown or used code",
    }


def test_a_code_without_the_matching_pkce_verifier_is_refused(
    standin: GlobusStandin,
) -> None:
    native = globus_sdk.NativeAppAuthClient(NATIVE_CLIENT)
    flow = native.oauth2_start_flow(requested_scopes=TRANSFER_SCOPE)
    code = standin.issue_auth_code(
        client_id=NATIVE_CLIENT,
        redirect_uri=flow.redirect_uri,
        code_challenge=pkce_challenge("someone else's verifier"),
    )

    with pytest.raises(globus_sdk.AuthAPIError) as refused:
        native.oauth2_exchange_code_for_tokens(code)
    assert refused.value.raw_json["error"] == "invalid_grant"  # type: ignore[index]


def test_refresh_renews_an_expired_token_until_tokens_are_revoked(
    standin: GlobusStandin,
) -> None:
    native = globus_sdk.NativeAppAuthClient(NATIVE_CLIENT)
    flow = native.oauth2_start_flow(
        requested_scopes=TRANSFER_SCOPE, refresh_tokens=True
    )
    code = standin.issue_auth_code(
        client_id=NATIVE_CLIENT,
        redirect_uri=flow.redirect_uri,
        code_challenge=flow.challenge,
    )
    tokens = native.oauth2_exchange_code_for_tokens(code).by_resource_server
    transfer_tokens = tokens["transfer.api.globus.org"]
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.RefreshTokenAuthorizer(
            transfer_tokens["refresh_token"],
            native,
            access_token=transfer_tokens["access_token"],
            expires_at=transfer_tokens["expires_at_seconds"],
        )
    )

    standin.faults.expire_access_tokens()
    client.task_list()  # 401, refresh, retry: the SDK does it all
    assert standin.counters().requests["oauth2_token"] == 2  # exchange, refresh

    standin.faults.revoke_all_tokens()
    with pytest.raises(globus_sdk.AuthAPIError) as refused:
        client.task_list()
    assert refused.value.raw_json["error"] == "invalid_grant"  # type: ignore[index]


def test_consent_required_parses_in_the_sdk_and_a_consented_token_passes(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient, site_dir: Path
) -> None:
    _write(site_dir, "a.dat", b"a")
    standin.faults.require_consent(REMOTE)
    data = _transfer()
    data.add_item("/a.dat", "/a.dat")
    needed = f"{TRANSFER_SCOPE}[*{data_access_scope(REMOTE)}]"

    with pytest.raises(globus_sdk.TransferAPIError) as refused:
        transfer_client.submit_transfer(data)

    error = refused.value
    assert (error.http_status, error.code) == (403, "ConsentRequired")
    assert error.info.consent_required.required_scopes == [needed]
    gare = to_gare(error)
    assert gare is not None and gare.authorization_parameters.required_scopes == [
        needed
    ]

    consented = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(_service_token(needed))
    )
    assert consented.submit_transfer(data)["code"] == "Accepted"


class _FetchingLoginFlow(CommandLineLoginFlowManager):
    """A login flow whose "user" fetches the printed URL and pastes the answer."""

    def print_authorize_url(self, authorize_url: str) -> None:
        self.authorize_url = authorize_url

    def prompt_for_code(self) -> str:
        return requests.get(self.authorize_url, timeout=5).text.strip()


def test_a_globus_user_app_logs_in_with_data_access_consent_and_submits(
    standin: GlobusStandin, site_dir: Path, remote_dir: Path
) -> None:
    _write(site_dir, "a.dat", b"a")
    standin.faults.require_consent(REMOTE)
    app = globus_sdk.UserApp(
        "balsam-tui tests",
        client_id=NATIVE_CLIENT,
        config=globus_sdk.GlobusAppConfig(
            login_flow_manager=_FetchingLoginFlow,
            token_storage="memory",
            request_refresh_tokens=True,
        ),
    )
    client = globus_sdk.TransferClient(app=app).add_app_data_access_scope(REMOTE)
    app.login()
    data = _transfer()
    data.add_item("/a.dat", "/a.dat")

    task_id = client.submit_transfer(data)["task_id"]

    assert _wait_for(client, task_id, _finished)["status"] == "SUCCEEDED"
    assert (remote_dir / "a.dat").read_bytes() == b"a"
    # The app checked the data_access consent itself, via the consents API.
    assert standin.counters().requests["get_consents"] >= 1


# -- control routes, paths, command line -----------------------------------------------


def test_faults_and_counters_work_over_the_http_control_routes(
    standin: GlobusStandin,
) -> None:
    token = requests.post(f"{standin.url}/_standin/tokens", json={}, timeout=5).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    submission_url = f"{standin.transfer_url}v0.10/submission_id"
    armed = requests.post(
        f"{standin.url}/_standin/faults",
        json={"kind": "status", "status": 500, "route": "get_submission_id"},
        timeout=5,
    )

    failed = requests.get(submission_url, headers=headers, timeout=5)
    passed = requests.get(submission_url, headers=headers, timeout=5)
    counters = requests.get(f"{standin.url}/_standin/counters", timeout=5).json()

    assert armed.status_code == 200
    assert failed.status_code == 500 and failed.json()["code"] == "InternalError"
    assert passed.json()["DATA_TYPE"] == "submission_id"
    assert counters["requests"] == {"get_submission_id": 2}


def test_paths_outside_an_endpoint_and_wrong_base_urls_are_refused(
    standin: GlobusStandin, transfer_client: globus_sdk.TransferClient
) -> None:
    data = _transfer()
    data.add_item("/../../etc/passwd", "/passwd")
    with pytest.raises(globus_sdk.TransferAPIError) as escaped:
        transfer_client.submit_transfer(data)
    assert escaped.value.http_status == 400

    wrong = globus_sdk.TransferClient(base_url=standin.url)
    with pytest.raises(globus_sdk.TransferAPIError) as unrouted:
        wrong.task_list()
    assert unrouted.value.http_status == 404
    assert "GLOBUS_SDK_SERVICE_URL_TRANSFER" in unrouted.value.message


def test_the_command_line_prints_the_environment_and_stops_on_ctrl_c(
    site_dir: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "balsam_tui.testing.globus_standin",
            "--endpoint",
            f"{SITE}={site_dir}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exports = {}
        assert process.stdout is not None
        while len(exports) < 2:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            if line.startswith("export "):
                name, _, value = line[len("export ") :].strip().partition("=")
                exports[name] = value
        base = exports["GLOBUS_SDK_SERVICE_URL_TRANSFER"].removesuffix("/transfer/")
        answer = requests.get(f"{base}/_standin/counters", timeout=5)
        assert answer.status_code == 200
        assert exports["GLOBUS_SDK_SERVICE_URL_AUTH"] == f"{base}/auth/"
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=10)
    assert returncode == 0


def test_the_standin_imports_neither_textual_nor_rich_nor_the_sdk() -> None:
    probe = (
        "import sys, balsam_tui.testing.globus_standin; "
        "print(sorted(m for m in ('textual', 'rich', 'globus_sdk') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- the state machine alone, on a fake clock ------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _service(
    site_dir: Path, remote_dir: Path, clock: _Clock, **options: object
) -> TransferService:
    return TransferService({SITE: site_dir, REMOTE: remote_dir}, clock=clock, **options)


def _document(*paths: str, **fields: object) -> dict[str, object]:
    return {
        "DATA_TYPE": "transfer",
        "submission_id": fields.pop("submission_id", os.urandom(8).hex()),
        "source_endpoint": SITE,
        "destination_endpoint": REMOTE,
        "DATA": [
            {"DATA_TYPE": "transfer_item", "source_path": p, "destination_path": p}
            for p in paths
        ],
        **fields,
    }


def test_per_file_delay_spaces_the_copies_of_a_task(
    site_dir: Path, remote_dir: Path
) -> None:
    clock = _Clock()
    service = _service(site_dir, remote_dir, clock, per_file_delay=10.0)
    user = Identity(sub="u1", username="u1", name="u1", email=None)
    _write(site_dir, "a", b"a")
    _write(site_dir, "b", b"b")
    task_id = service.submit(user, _document("/a", "/b")).task_id

    def transferred() -> object:
        return service.task_document(user, task_id)["files_transferred"]

    service.advance()
    assert transferred() == 0  # nothing is due before the first delay
    clock.now += 10
    service.advance()  # the scan
    clock.now += 10
    service.advance()
    assert transferred() == 1
    clock.now += 10
    service.advance()
    clock.now += 10
    service.advance()
    assert service.task_document(user, task_id)["status"] == "SUCCEEDED"


def test_the_active_limit_is_per_owner(site_dir: Path, remote_dir: Path) -> None:
    clock = _Clock()
    service = _service(site_dir, remote_dir, clock, active_task_limit=1)
    alice, bob = client_identity("alice"), client_identity("bob")
    first = service.submit(alice, _document("/gone")).task_id
    clock.now += 1
    second = service.submit(alice, _document("/gone")).task_id
    clock.now += 1
    other = service.submit(bob, _document("/gone")).task_id

    service.advance()
    service.advance()

    def nice(owner: Identity, task_id: str) -> object:
        return service.task_document(owner, task_id)["nice_status"]

    assert nice(alice, first) == "FILE_NOT_FOUND"
    assert nice(alice, second) == "Queued"
    assert nice(bob, other) == "FILE_NOT_FOUND"
    listing = service.task_list(bob, filter_text=None, limit=None, offset=0)
    tasks = listing["DATA"]  # type: ignore[index]
    assert [task["task_id"] for task in tasks] == [other]


def test_sync_level_leaves_identical_files_alone(
    site_dir: Path, remote_dir: Path
) -> None:
    clock = _Clock()
    service = _service(site_dir, remote_dir, clock)
    user = client_identity("u")
    _write(site_dir, "same", b"same bytes")
    _write(remote_dir, "same", b"same bytes")
    _write(site_dir, "changed", b"new")
    _write(remote_dir, "changed", b"old!")
    task_id = service.submit(user, _document("/same", "/changed", sync_level=3)).task_id

    for _ in range(4):
        service.advance()

    task = service.task_document(user, task_id)
    assert (task["status"], task["files_skipped"], task["files_transferred"]) == (
        "SUCCEEDED",
        1,
        1,
    )
    assert (remote_dir / "changed").read_bytes() == b"new"
    listed = service.successful_transfers(user, task_id, marker=None)
    entries = listed["DATA"]  # type: ignore[index]
    assert [t["source_path"] for t in entries] == ["/changed"]
