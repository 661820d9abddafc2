"""A stand-in Globus service on loopback that the real globus-sdk talks to.

Role: the HTTP face of the stand-in. ``GlobusStandin`` serves Transfer under
``<url>/transfer/`` and Auth under ``<url>/auth/`` from one ``ThreadingHTTPServer``
in a background thread, and runs the transfer worker. Point globus-sdk at it with
the two variables in ``environ`` (``GLOBUS_SDK_SERVICE_URL_TRANSFER`` and
``GLOBUS_SDK_SERVICE_URL_AUTH``); the SDK appends ``/v0.10/...`` and
``/v2/oauth2/...`` to them itself. Tests drive faults with ``standin.faults``;
other processes use ``POST /_standin/faults`` (see ``StandinFaults.apply_json``).

Run it by hand::

    python -m balsam_tui.testing.globus_standin --endpoint UUID=DIR --port 8765

Traps:

- globus-sdk reads the variables when a client is constructed: build clients
  after setting them (nothing is cached globally), and rebuild them if you change.
- The two services have distinct prefixes on purpose: a client sent to the wrong
  base URL gets a 404 naming the mistake instead of silently working. Keep the
  trailing "/" of the Auth URL: globus-sdk's command-line login builds its default
  redirect URI by plain string concatenation onto it.
- Transfer routes want ``Authorization: Bearer <token>`` from this stand-in's
  token endpoint (or ``issue_tokens``); any unexpired token for the Transfer
  resource server will do. The ``/_standin`` control routes want nothing.
- ``GET /auth/v2/oauth2/authorize`` approves at once and answers the code as plain
  text instead of redirecting: a test (or a person) fetches the URL a login flow
  prints and pastes the body as the code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import re
import secrets
import socket
import string
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path

from balsam_tui.testing.standin_auth import (
    AUTH_RESOURCE_SERVER,
    DEFAULT_TOKEN_LIFETIME,
    DEFAULT_USER,
    TRANSFER_RESOURCE_SERVER,
    TRANSFER_SCOPE,
    AccessToken,
    AuthRefusal,
    AuthService,
    Identity,
)
from balsam_tui.testing.standin_faults import (
    RequestFault,
    RequestTally,
    StandinCounters,
    StandinFaults,
)
from balsam_tui.testing.standin_oidc import openid_configuration
from balsam_tui.testing.standin_transfer import (
    TransferRefusal,
    TransferService,
    TransferWorker,
)

log = logging.getLogger(__name__)

TRANSFER_PREFIX = "/transfer/v0.10"
AUTH_BASE = "/auth"
AUTH_PREFIX = AUTH_BASE + "/v2"
CONTROL_PREFIX = "/_standin"

_REQUEST_ID_ALPHABET = string.ascii_letters + string.digits
_STATUS_CODES = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass
class _Answer:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    match: re.Match[str]

    def json(self) -> dict[str, object]:
        try:
            document = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise TransferRefusal(
                400, "ClientError.BadRequest", "the body is not JSON"
            ) from exc
        if not isinstance(document, dict):
            raise TransferRefusal(400, "ClientError.BadRequest", "expected an object")
        return document

    def form(self) -> dict[str, str]:
        pairs = urllib.parse.parse_qsl(
            self.body.decode("utf-8"), keep_blank_values=True
        )
        return dict(pairs)


def _request_id() -> str:
    return "".join(secrets.choice(_REQUEST_ID_ALPHABET) for _ in range(9))


def _transfer_error(status: int, code: str, message: str, resource: str) -> _Answer:
    body = {
        "code": code,
        "message": message,
        "request_id": _request_id(),
        "resource": resource,
    }
    return _Answer(status, body)


def _auth_error(status: int, code: str, detail: str) -> _Answer:
    error_id = _request_id()
    body = {
        "errors": [
            {
                "status": str(status),
                "id": error_id,
                "code": code,
                "detail": detail,
                "title": code.replace("_", " ").title(),
            }
        ],
        "error": code.lower(),
        "error_description": detail,
    }
    return _Answer(status, body)


def _oauth_error(refusal: AuthRefusal) -> _Answer:
    body = {"error": refusal.error, "error_description": refusal.description}
    return _Answer(refusal.status, body)


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise TransferRefusal(
            400, "ClientError.BadRequest", f"{name} must be an integer"
        ) from exc


class GlobusStandin:
    """The stand-in service: construct, ``start()`` (or ``with``), use, ``stop()``.

    ``endpoints`` maps endpoint (collection) ids to existing local directories.
    ``per_file_delay`` spaces the copies of one task so a test can watch it
    ACTIVE; ``retry_interval`` spaces a stuck task's retries (one fault and one
    error event each); ``active_task_limit`` is per owner, as at Globus.
    ``client_secrets`` makes the token endpoint check secrets; without it any
    client id and secret are accepted.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str | PathLike[str]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        per_file_delay: float = 0.0,
        active_task_limit: int = 3,
        retry_interval: float = 1.0,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        user: Identity = DEFAULT_USER,
        client_secrets: Mapping[str, str] | None = None,
    ) -> None:
        for endpoint_id, directory in endpoints.items():
            if not Path(directory).is_dir():
                raise ValueError(
                    f"endpoint {endpoint_id}: {directory} is not a directory"
                )
        self.transfer = TransferService(
            endpoints,
            per_file_delay=per_file_delay,
            active_task_limit=active_task_limit,
            retry_interval=retry_interval,
        )
        self.auth = AuthService(user=user, token_lifetime=token_lifetime)
        self.faults = StandinFaults(self.transfer, self.auth)
        self.client_secrets = dict(client_secrets) if client_secrets else None
        self._tally = RequestTally()
        self._address = (host, port)
        self._server: _StandinHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._worker: TransferWorker | None = None

    # -- life cycle --------------------------------------------------------------

    def start(self) -> GlobusStandin:
        server = _StandinHTTPServer(self._address, _StandinHandler)
        server.standin = self
        self._server = server
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="globus-standin-http",
            daemon=True,
        )
        self._serve_thread.start()
        self._worker = TransferWorker(self.transfer)
        self._worker.start()
        log.info("Globus stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
        self._server = self._serve_thread = self._worker = None

    def __enter__(self) -> GlobusStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where it is ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, once started."""
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def transfer_url(self) -> str:
        return f"{self.url}/transfer/"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/auth/"

    @property
    def environ(self) -> dict[str, str]:
        """The variables that point globus-sdk here."""
        return {
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": self.transfer_url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": self.auth_url,
        }

    # -- shortcuts for tests ----------------------------------------------------------

    def issue_auth_code(
        self,
        *,
        client_id: str,
        scopes: str = TRANSFER_SCOPE,
        redirect_uri: str | None = None,
        code_challenge: str | None = None,
        refresh_tokens: bool = True,
    ) -> str:
        """An approved authorization code, as if the user had logged in."""
        return self.auth.issue_auth_code(
            client_id=client_id,
            scopes=scopes,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            refresh_tokens=refresh_tokens,
        )

    def issue_tokens(
        self, *, scopes: str = TRANSFER_SCOPE, client_id: str = "standin-test-client"
    ) -> dict[str, object]:
        """A token answer for the stand-in's user, shaped like the token endpoint's."""
        return self.auth.issue_tokens(scopes=scopes, client_id=client_id)

    def transfer_token(self, *, scopes: str = TRANSFER_SCOPE) -> str:
        """A fresh access token for Transfer (no refresh token)."""
        answer = self.auth.issue_tokens(scopes=scopes, refresh_tokens=False)
        others = answer.get("other_tokens", [])
        for document in [answer, *others]:  # type: ignore[list-item]
            if document["resource_server"] == TRANSFER_RESOURCE_SERVER:
                return str(document["access_token"])
        raise ValueError(f"scopes {scopes!r} grant nothing on Transfer")

    def counters(self) -> StandinCounters:
        return StandinCounters(
            requests=self._tally.snapshot(),
            submissions_applied=self.transfer.submissions_applied,
            duplicate_submissions=self.transfer.duplicate_submissions,
            tasks_created=self.transfer.tasks_created,
        )

    # -- request handling (called from handler threads) ----------------------------

    def count(self, route: str) -> None:
        """Called by the HTTP layer for every API request it sees."""
        self._tally.add(route)


# -- routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Callable[[GlobusStandin, _Request], _Answer]
    service: str  # "transfer", "auth" or "control"


def _bearer_token(standin: GlobusStandin, request: _Request) -> AccessToken | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return standin.auth.active_token(value.strip())


def _transfer_caller(standin: GlobusStandin, request: _Request) -> AccessToken:
    if not request.headers.get("Authorization"):
        raise TransferRefusal(401, "AuthenticationFailed", "No Authorization header")
    token = _bearer_token(standin, request)
    if token is None:
        raise TransferRefusal(401, "AuthenticationFailed", "Token is not active")
    if token.grant.resource_server != TRANSFER_RESOURCE_SERVER:
        raise TransferRefusal(
            401, "AuthenticationFailed", "Token is not valid for the Transfer service"
        )
    return token


def _get_submission_id(standin: GlobusStandin, request: _Request) -> _Answer:
    _transfer_caller(standin, request)
    value = standin.transfer.new_submission_id()
    return _Answer(200, {"DATA_TYPE": "submission_id", "value": value})


def _submit_transfer(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    outcome = standin.transfer.submit(
        token.grant.identity,
        request.json(),
        consented_scopes=token.grant.dependent_scopes,
    )
    if outcome.duplicate:
        status, code = 200, "Duplicate"
        message = "A task was already created for this submission id."
    else:
        status, code = 202, "Accepted"
        message = "The transfer was accepted and a task was queued for it."
    body = {
        "DATA_TYPE": "transfer_result",
        "code": code,
        "message": message,
        "request_id": _request_id(),
        "resource": "/transfer",
        "submission_id": outcome.submission_id,
        "task_id": outcome.task_id,
        "task_link": {
            "DATA_TYPE": "link",
            "href": f"task/{outcome.task_id}?format=json",
            "rel": "related",
            "resource": "task",
            "title": "related task",
        },
    }
    return _Answer(status, body)


def _task_list(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    document = standin.transfer.task_list(
        token.grant.identity,
        filter_text=request.query.get("filter"),
        limit=_int_param(request.query, "limit"),
        offset=_int_param(request.query, "offset") or 0,
    )
    return _Answer(200, document)


def _get_task(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    task_id = request.match["task_id"]
    return _Answer(200, standin.transfer.task_document(token.grant.identity, task_id))


def _task_skipped_errors(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    document = standin.transfer.skipped_errors(
        token.grant.identity,
        request.match["task_id"],
        marker=request.query.get("marker"),
    )
    return _Answer(200, document)


def _task_successful_transfers(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    document = standin.transfer.successful_transfers(
        token.grant.identity,
        request.match["task_id"],
        marker=request.query.get("marker"),
    )
    return _Answer(200, document)


def _task_event_list(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    document = standin.transfer.event_list(
        token.grant.identity,
        request.match["task_id"],
        filter_text=request.query.get("filter"),
        limit=_int_param(request.query, "limit"),
        offset=_int_param(request.query, "offset") or 0,
    )
    return _Answer(200, document)


def _cancel_task(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _transfer_caller(standin, request)
    task_id = request.match["task_id"]
    code, message = standin.transfer.cancel(token.grant.identity, task_id)
    body = {
        "DATA_TYPE": "result",
        "code": code,
        "message": message,
        "request_id": _request_id(),
        "resource": f"/task/{task_id}/cancel",
    }
    return _Answer(200, body)


def _client_credentials(
    standin: GlobusStandin, request: _Request
) -> tuple[str | None, str | None]:
    """(client id, secret) from HTTP Basic, or (form client_id, None)."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthRefusal(401, "invalid_client", "bad Basic header") from exc
        client_id, _, secret = decoded.partition(":")
        expected = (standin.client_secrets or {}).get(client_id)
        if standin.client_secrets is not None and expected != secret:
            raise AuthRefusal(401, "invalid_client", "unknown client or wrong secret")
        return client_id, secret
    return request.form().get("client_id"), None


def _oauth2_token(standin: GlobusStandin, request: _Request) -> _Answer:
    form = request.form()
    try:
        client_id, secret = _client_credentials(standin, request)
        if not client_id:
            raise AuthRefusal(401, "invalid_client", "no client id")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            answer = standin.auth.exchange_code(
                client_id=client_id,
                code=form.get("code", ""),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
            )
        elif grant_type == "refresh_token":
            answer = standin.auth.refresh(
                client_id=client_id, refresh_token=form.get("refresh_token", "")
            )
        elif grant_type == "client_credentials":
            if secret is None:
                raise AuthRefusal(
                    401, "invalid_client", "client credentials need Basic"
                )
            answer = standin.auth.client_credentials(
                client_id=client_id, scopes=form.get("scope", "")
            )
        else:
            raise AuthRefusal(400, "unsupported_grant_type", f"{grant_type!r}")
    except AuthRefusal as refusal:
        return _oauth_error(refusal)
    return _Answer(200, answer)


def _oauth2_revoke_token(standin: GlobusStandin, request: _Request) -> _Answer:
    try:
        _client_credentials(standin, request)
    except AuthRefusal as refusal:
        return _oauth_error(refusal)
    standin.auth.revoke(request.form().get("token", ""))
    return _Answer(200, {"active": False})


def _oauth2_token_introspect(standin: GlobusStandin, request: _Request) -> _Answer:
    try:
        _, secret = _client_credentials(standin, request)
        if secret is None:
            raise AuthRefusal(401, "invalid_client", "introspection needs a client")
    except AuthRefusal as refusal:
        return _oauth_error(refusal)
    return _Answer(200, standin.auth.introspect(request.form().get("token", "")))


def _oauth2_userinfo(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _bearer_token(standin, request)
    if token is None:
        return _auth_error(401, "UNAUTHORIZED", "Call must be authenticated")
    if token.grant.resource_server != AUTH_RESOURCE_SERVER:
        return _auth_error(403, "FORBIDDEN", "Token is not for Globus Auth")
    return _Answer(200, standin.auth.userinfo(token))


def _oauth2_authorize(standin: GlobusStandin, request: _Request) -> _Answer:
    query = request.query
    client_id, scope = query.get("client_id"), query.get("scope")
    method = query.get("code_challenge_method", "S256")
    if not client_id or not scope or query.get("response_type", "code") != "code":
        return _Answer(400, "client_id, scope and response_type=code are needed\n")
    if query.get("code_challenge") and method != "S256":
        return _Answer(400, "only the S256 code challenge method is supported\n")
    code = standin.auth.issue_auth_code(
        client_id=client_id,
        scopes=scope,
        redirect_uri=query.get("redirect_uri"),
        code_challenge=query.get("code_challenge"),
        refresh_tokens=query.get("access_type") == "offline",
        state=query.get("state"),
    )
    return _Answer(200, code + "\n", content_type="text/plain; charset=utf-8")


def _get_openid_configuration(standin: GlobusStandin, request: _Request) -> _Answer:
    return _Answer(200, openid_configuration(standin.auth_url))


def _get_jwk(standin: GlobusStandin, request: _Request) -> _Answer:
    return _Answer(200, standin.auth.signer.jwks())


def _get_consents(standin: GlobusStandin, request: _Request) -> _Answer:
    token = _bearer_token(standin, request)
    if token is None:
        return _auth_error(401, "UNAUTHORIZED", "Call must be authenticated")
    identity_id = request.match["identity_id"]
    if token.grant.identity.sub != identity_id:
        return _auth_error(403, "FORBIDDEN", "only your own consents are visible")
    return _Answer(200, {"consents": standin.auth.consents(identity_id)})


def _control_faults(standin: GlobusStandin, request: _Request) -> _Answer:
    try:
        standin.faults.apply_json(json.loads(request.body or b"{}"))
    except (ValueError, KeyError, TypeError) as exc:
        return _Answer(400, {"error": f"bad fault: {exc}"})
    return _Answer(200, {"ok": True})


def _control_counters(standin: GlobusStandin, request: _Request) -> _Answer:
    return _Answer(200, asdict(standin.counters()))


def _control_tokens(standin: GlobusStandin, request: _Request) -> _Answer:
    document = json.loads(request.body or b"{}")
    scopes = str(document.get("scopes", TRANSFER_SCOPE))
    return _Answer(200, standin.issue_tokens(scopes=scopes))


def _route(method: str, path: str, handler: Callable[..., _Answer]) -> _Route:
    # The route's name is its handler's, which is globus-sdk's method name.
    service = path.split("/")[1].lstrip("_")
    service = "control" if service == "standin" else service
    name = handler.__name__.lstrip("_")
    return _Route(method, re.compile(f"{path}$"), name, handler, service)


_TASK = TRANSFER_PREFIX + r"/task/(?P<task_id>[^/]+)"
_ROUTES = (
    _route("GET", TRANSFER_PREFIX + "/submission_id", _get_submission_id),
    _route("POST", TRANSFER_PREFIX + "/transfer", _submit_transfer),
    _route("GET", TRANSFER_PREFIX + "/task_list", _task_list),
    _route("GET", _TASK, _get_task),
    _route("GET", _TASK + "/skipped_errors", _task_skipped_errors),
    _route("GET", _TASK + "/successful_transfers", _task_successful_transfers),
    _route("GET", _TASK + "/event_list", _task_event_list),
    _route("POST", _TASK + "/cancel", _cancel_task),
    _route("GET", AUTH_PREFIX + "/oauth2/authorize", _oauth2_authorize),
    _route("POST", AUTH_PREFIX + "/oauth2/token", _oauth2_token),
    _route("POST", AUTH_PREFIX + "/oauth2/token/revoke", _oauth2_revoke_token),
    _route("POST", AUTH_PREFIX + "/oauth2/token/introspect", _oauth2_token_introspect),
    _route("GET", AUTH_PREFIX + "/oauth2/userinfo", _oauth2_userinfo),
    _route(
        "GET",
        AUTH_PREFIX + r"/api/identities/(?P<identity_id>[^/]+)/consents",
        _get_consents,
    ),
    _route(
        "GET",
        AUTH_BASE + "/.well-known/openid-configuration",
        _get_openid_configuration,
    ),
    _route("GET", AUTH_BASE + "/jwk.json", _get_jwk),
    _route("POST", CONTROL_PREFIX + "/faults", _control_faults),
    _route("GET", CONTROL_PREFIX + "/counters", _control_counters),
    _route("POST", CONTROL_PREFIX + "/tokens", _control_tokens),
)


def _fault_answer(fault: RequestFault, route: _Route, resource: str) -> _Answer:
    code = fault.code or _STATUS_CODES.get(fault.status, f"HTTP{fault.status}")
    message = f"stand-in fault: HTTP {fault.status}"
    if route.service == "auth":
        answer = _auth_error(fault.status, code, message)
    else:
        answer = _transfer_error(fault.status, code, message, resource)
    if fault.retry_after is not None:
        answer.headers["Retry-After"] = str(fault.retry_after)
    return answer


# -- the HTTP server ---------------------------------------------------------------


class _StandinHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: GlobusStandin

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        # A client that hung up (a test dropping connections on purpose, an SDK
        # giving up on a slow answer) is not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections so their threads finish now."""
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this, Nagle's algorithm and delayed ACKs add ~40 ms to each answer.
    disable_nagle_algorithm = True
    server_version = "GlobusStandin/1"
    timeout = 30  # an idle kept-alive connection is closed after this
    server: _StandinHTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # The request line never carries a token; bodies are not logged.
        log.debug("%s %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))

        route, match = self._match(method, path)
        if route is None or match is None:
            self._send(self._not_found(method, path))
            return
        request = _Request(method, path, query, self.headers, body, match)
        resource = path.removeprefix(TRANSFER_PREFIX)

        fault = None
        if route.service != "control":
            standin.count(route.name)
            fault = standin.faults.take(route.name)
        if fault is not None and not fault.after_apply:
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            else:
                self._send(_fault_answer(fault, route, resource))
                return

        answer = self._answer(standin, route, request, resource)

        if fault is not None and fault.after_apply:
            if fault.kind == "drop":
                self._drop()
                return
            time.sleep(fault.seconds)
        self._send(answer)

    def _match(
        self, method: str, path: str
    ) -> tuple[_Route | None, re.Match[str] | None]:
        for route in _ROUTES:
            match = route.pattern.match(path)
            if match and route.method == method:
                return route, match
        return None, None

    def _answer(
        self, standin: GlobusStandin, route: _Route, request: _Request, resource: str
    ) -> _Answer:
        try:
            return route.handler(standin, request)
        except TransferRefusal as refusal:
            answer = _transfer_error(
                refusal.status, refusal.code, refusal.message, resource
            )
            answer.body.update(refusal.extra)  # type: ignore[attr-defined]
            return answer
        except Exception:
            # A bug in the stand-in: answer like a broken server, keep the trace.
            log.exception("stand-in failed on %s %s", request.method, request.path)
            return _transfer_error(500, "InternalError", "stand-in bug", resource)

    def _not_found(self, method: str, path: str) -> _Answer:
        hint = (
            "the stand-in serves Transfer under /transfer/v0.10/ and Auth under "
            "/auth/v2/: set GLOBUS_SDK_SERVICE_URL_TRANSFER and "
            "GLOBUS_SDK_SERVICE_URL_AUTH from GlobusStandin.environ"
        )
        message = f"the stand-in has no route {method} {path}; {hint}"
        return _transfer_error(404, "ClientError.NotFound", message, path)

    def _send(self, answer: _Answer) -> None:
        if isinstance(answer.body, str):
            payload = answer.body.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(answer.body).encode("utf-8")
            content_type = answer.content_type
        self.send_response(answer.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -- command line ------------------------------------------------------------------


def _endpoint_argument(text: str) -> tuple[str, Path]:
    endpoint_id, separator, directory = text.partition("=")
    if not separator or not endpoint_id or not directory:
        raise argparse.ArgumentTypeError(f"expected UUID=DIR, got {text!r}")
    return endpoint_id, Path(directory).expanduser()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m balsam_tui.testing.globus_standin",
        description=(
            "Serve a stand-in Globus Transfer and Auth service on loopback. "
            "Each --endpoint maps an endpoint id to a local directory (created if "
            "missing); files really move between them."
        ),
        epilog=(
            "example: python -m balsam_tui.testing.globus_standin "
            "--endpoint 1b4c0c4e-0000-4000-8000-000000000001=/tmp/site "
            "--endpoint 1b4c0c4e-0000-4000-8000-000000000002=/tmp/remote --port 8765"
        ),
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        required=True,
        type=_endpoint_argument,
        metavar="UUID=DIR",
        help="an endpoint id and the directory standing for it (repeatable)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument(
        "--per-file-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause between the files of one task (default: %(default)s)",
    )
    parser.add_argument(
        "--active-task-limit",
        type=int,
        default=3,
        metavar="N",
        help="tasks per user that progress at once (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    endpoints = dict(args.endpoint)
    for directory in endpoints.values():
        directory.mkdir(parents=True, exist_ok=True)
    standin = GlobusStandin(
        endpoints,
        host=args.host,
        port=args.port,
        per_file_delay=args.per_file_delay,
        active_task_limit=args.active_task_limit,
    ).start()

    print(f"# Globus stand-in listening on {standin.url}")
    for name, value in standin.environ.items():
        print(f"export {name}={value}")
    for endpoint_id, directory in endpoints.items():
        print(f"# endpoint {endpoint_id} -> {directory}")
    print(
        "# log in: open the authorize URL your client prints; the page is the code\n"
        f"# faults: POST JSON to {standin.url}/_standin/faults; "
        f"counters: GET {standin.url}/_standin/counters\n"
        "# Ctrl-C stops it",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    raise SystemExit(main())
