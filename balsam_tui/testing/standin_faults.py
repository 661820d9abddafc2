"""Faults the stand-in injects, and the counters tests read.

Role: ``StandinFaults`` is the one object a test (or ``POST /_standin/faults``)
uses to make the stand-in misbehave. Request faults (an error status, 429 with
Retry-After, a dropped connection, a slow answer) are rules consumed by the HTTP
layer, one per matching request, in the order they were added. State faults
(consent required, tokens expired or revoked, a source file removed) act on the
Transfer and Auth state at once.

Route names are globus-sdk's method names (``ROUTES``), so a rule reads like the
call it breaks: ``faults.fail_next(2, route="task_list")``. A rule with no route
matches any API request but never the ``/_standin`` control routes.

Trap: a rule is used up by the request that meets it even when the client gives
up; a rule that no request meets stays armed for the next test that reuses the
stand-in (``clear()`` drops them all).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from balsam_tui.testing.standin_auth import AuthService
from balsam_tui.testing.standin_transfer import TransferService

ROUTES = (
    "get_submission_id",
    "submit_transfer",
    "task_list",
    "get_task",
    "task_skipped_errors",
    "task_successful_transfers",
    "task_event_list",
    "cancel_task",
    "oauth2_authorize",
    "oauth2_token",
    "oauth2_revoke_token",
    "oauth2_token_introspect",
    "oauth2_userinfo",
    "get_consents",
    "get_openid_configuration",
    "get_jwk",
)

FAULT_KINDS = ("status", "rate_limit", "drop", "delay")


@dataclass(frozen=True)
class RequestFault:
    """What to do to one request. ``after_apply``: act after the request took effect."""

    kind: str
    route: str | None = None
    status: int = 503
    code: str | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    after_apply: bool = False


@dataclass
class _Armed:
    fault: RequestFault
    remaining: int


@dataclass(frozen=True)
class StandinCounters:
    """A snapshot: requests seen per route (faulted ones included), and tasks."""

    requests: Mapping[str, int]
    submissions_applied: int
    duplicate_submissions: int
    tasks_created: int


class StandinFaults:
    """Arms faults; the HTTP layer takes request faults with ``take``. Thread-safe."""

    def __init__(self, transfer: TransferService, auth: AuthService) -> None:
        self._transfer = transfer
        self._auth = auth
        self._lock = threading.Lock()
        self._rules: list[_Armed] = []

    # -- request faults --------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        route: str | None = None,
        code: str | None = None,
    ) -> None:
        """The next ``count`` requests answer ``status`` with an error body.

        ``code`` sets the body's ``code`` (e.g. "ExternalError", which globus-sdk
        does not retry even on a 5xx).
        """
        self._add(RequestFault("status", route, status=status, code=code), count)

    def rate_limit_next(
        self, count: int = 1, *, retry_after: int = 1, route: str | None = None
    ) -> None:
        """The next ``count`` requests answer 429 with a ``Retry-After`` header."""
        fault = RequestFault("rate_limit", route, status=429, retry_after=retry_after)
        self._add(fault, count)

    def drop_next(
        self, count: int = 1, *, route: str | None = None, after_apply: bool = False
    ) -> None:
        """Close the connection instead of answering.

        With ``after_apply`` the request takes effect first (a submission creates
        its task) and only the answer is lost: the case submission ids exist for.
        """
        self._add(RequestFault("drop", route, after_apply=after_apply), count)

    def delay_next(
        self,
        count: int = 1,
        *,
        seconds: float,
        route: str | None = None,
        after_apply: bool = False,
    ) -> None:
        """Answer the next ``count`` requests ``seconds`` late."""
        fault = RequestFault("delay", route, seconds=seconds, after_apply=after_apply)
        self._add(fault, count)

    def clear(self) -> None:
        """Drop every armed request fault."""
        with self._lock:
            self._rules.clear()

    def take(self, route: str) -> RequestFault | None:
        """The first armed fault for this route, used up by this call."""
        with self._lock:
            for armed in self._rules:
                if armed.fault.route not in (None, route):
                    continue
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._rules.remove(armed)
                return armed.fault
        return None

    def _add(self, fault: RequestFault, count: int) -> None:
        if fault.route is not None and fault.route not in ROUTES:
            raise ValueError(f"unknown route {fault.route!r}; one of {ROUTES}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._rules.append(_Armed(fault, count))

    # -- state faults -----------------------------------------------------------

    def require_consent(self, endpoint_id: str) -> None:
        """Submissions touching ``endpoint_id`` answer 403 ConsentRequired until
        the token was granted with ``transfer:all[*<data_access of it>]``."""
        self._transfer.require_consent(endpoint_id)

    def expire_access_tokens(self) -> None:
        """All access tokens expire now (401 AuthenticationFailed); refresh works."""
        self._auth.expire_access_tokens()

    def revoke_all_tokens(self) -> None:
        """All tokens are revoked: 401 on Transfer, invalid_grant on refresh."""
        self._auth.revoke_all()

    def remove_source_file(self, endpoint_id: str, path: str) -> None:
        """Delete ``path`` on ``endpoint_id`` (a Globus path, e.g. ``/in/a.dat``)."""
        self._transfer.remove_file(endpoint_id, path)

    # -- the HTTP control route ---------------------------------------------------

    def apply_json(self, document: Mapping[str, object]) -> None:
        """Arm a fault from ``POST /_standin/faults`` JSON; same names as above.

        ``{"kind": "status", "status": 502, "count": 2, "route": "task_list"}``,
        ``{"kind": "rate_limit", "retry_after": 1}``, ``{"kind": "drop",
        "after_apply": true}``, ``{"kind": "delay", "seconds": 0.5}``,
        ``{"kind": "require_consent", "endpoint": ID}``,
        ``{"kind": "expire_access_tokens"}``, ``{"kind": "revoke_all_tokens"}``,
        ``{"kind": "remove_source_file", "endpoint": ID, "path": "/a"}``,
        ``{"kind": "clear"}``.
        """
        kind = document.get("kind")
        count = int(document.get("count", 1))  # type: ignore[call-overload]
        route = document.get("route")
        route = str(route) if route is not None else None
        after_apply = bool(document.get("after_apply", False))
        if kind == "status":
            code = document.get("code")
            self.fail_next(
                count,
                status=int(document.get("status", 503)),  # type: ignore[call-overload]
                route=route,
                code=str(code) if code is not None else None,
            )
        elif kind == "rate_limit":
            wait = document.get("retry_after", 1)
            retry_after = int(wait)  # type: ignore[call-overload]
            self.rate_limit_next(count, retry_after=retry_after, route=route)
        elif kind == "drop":
            self.drop_next(count, route=route, after_apply=after_apply)
        elif kind == "delay":
            seconds = float(document.get("seconds", 1.0))  # type: ignore[arg-type]
            self.delay_next(
                count, seconds=seconds, route=route, after_apply=after_apply
            )
        elif kind == "require_consent":
            self.require_consent(str(document["endpoint"]))
        elif kind == "expire_access_tokens":
            self.expire_access_tokens()
        elif kind == "revoke_all_tokens":
            self.revoke_all_tokens()
        elif kind == "remove_source_file":
            self.remove_source_file(str(document["endpoint"]), str(document["path"]))
        elif kind == "clear":
            self.clear()
        else:
            raise ValueError(f"unknown fault kind {kind!r}")


class RequestTally:
    """Requests seen per route. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, route: str) -> None:
        with self._lock:
            self._counts[route] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
