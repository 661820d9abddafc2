"""The HTTP client of a Balsam server: the requests the transfer agent makes, no more.

Role: turn Balsam's REST answers into Python values and its failures into a few
specific exceptions whose messages are one line an operator can act on. Only
network errors and 5xx answers are retried, a bounded number of times with short
sleeps; a 4xx is the server's considered answer and is never retried.

Where the server and the token come from (first found wins):

- the server: ``balsam_server.api_root`` in settings.yml, else ``BALSAM_API_ROOT``,
  else ``api_root`` in the Balsam client configuration;
- the token: ``BALSAM_TOKEN``, else ``token`` in the Balsam client configuration.

The Balsam client configuration is the file ``balsam login`` writes:
``BALSAM_CLIENT_PATH`` if set, else ``~/.balsam/client.yml``.

Traps:

- The server answers 401 both for an expired token and for a forged one; either
  way the cure is ``balsam login``. The file is read again before every request
  after a 401, so a new login is picked up without a restart.
- A site that does not exist and a site of another user look the same (404).
- Retries sleep on the calling thread (the engine's): keep them short, and let the
  caller back off between cycles.
- httpx imports its command-line tool, and with it Rich, whenever Rich is installed
  (Textual brings it). The engine must never load Rich, so that one module of
  httpx is masked before httpx is first imported; nothing here uses it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # see the last trap above

import httpx  # noqa: E402
import yaml  # noqa: E402

log = logging.getLogger(__name__)

CLIENT_PATH_VARIABLE = "BALSAM_CLIENT_PATH"
API_ROOT_VARIABLE = "BALSAM_API_ROOT"
TOKEN_VARIABLE = "BALSAM_TOKEN"
ATTEMPTS = 3
RETRY_SLEEP = 0.5
PAGE_SIZE = 1000


class ServerError(Exception):
    """A request to the Balsam server did not give an answer we can use."""


class ServerConfigError(ServerError):
    """No server or no token is configured."""


class ServerUnreachable(ServerError):
    """The server did not answer, or answered 5xx, even after retries."""


class TokenExpired(ServerError):
    """The server refused the token (401)."""


class SiteNotFound(ServerError):
    """The configured site id is not a site of this user on this server."""


class ServerRefused(ServerError):
    """Any other 4xx answer; ``status`` and ``detail`` say what the server said."""

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how we prove who we are; ``source`` names the file."""

    api_root: str
    token: str = field(repr=False)
    source: str


def client_config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    explicit = environ.get(CLIENT_PATH_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".balsam" / "client.yml"


def load_client_config(
    api_root: str | None = None, environ: Mapping[str, str] | None = None
) -> ClientConfig:
    """The server and token to use; ``ServerConfigError`` says what is missing."""
    environ = os.environ if environ is None else environ
    path = client_config_path(environ)
    from_file = _read_client_file(path)

    root = api_root or environ.get(API_ROOT_VARIABLE) or from_file.get("api_root")
    token = environ.get(TOKEN_VARIABLE) or from_file.get("token")
    if not root:
        raise ServerConfigError(
            f"no Balsam server named: set balsam_server.api_root in settings.yml, "
            f"{API_ROOT_VARIABLE}, or run `balsam login` (writes {path})"
        )
    if not token:
        raise ServerConfigError(
            f"no token for the Balsam server {root}: run `balsam login` "
            f"(writes {path}) or set {TOKEN_VARIABLE}"
        )
    source = TOKEN_VARIABLE if environ.get(TOKEN_VARIABLE) else str(path)
    return ClientConfig(str(root).rstrip("/"), str(token), source)


def _read_client_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ServerConfigError(
            f"{path}: cannot read the Balsam client configuration ({exc})"
        ) from None
    return loaded if isinstance(loaded, dict) else {}


class BalsamClient:
    """Requests to one Balsam server with a bearer token; see the module docstring."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        timeout: float = 30.0,
        attempts: int = ATTEMPTS,
        retry_sleep: float = RETRY_SLEEP,
        reload_config: bool = True,
    ) -> None:
        self.config = config
        self._attempts = max(1, attempts)
        self._retry_sleep = retry_sleep
        self._reload = reload_config
        self._token_refused = False
        self._http = httpx.Client(
            base_url=config.api_root,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": "application/json"},
        )

    @property
    def api_root(self) -> str:
        return self.config.api_root

    def close(self) -> None:
        self._http.close()

    # -- what the agent asks ----------------------------------------------------

    def site(self, site_id: int) -> dict[str, Any]:
        try:
            return self.request("GET", f"/sites/{site_id}")
        except ServerRefused as exc:
            if exc.status == 404:
                raise SiteNotFound(
                    f"site {site_id} does not exist on {self.api_root} (or belongs "
                    "to another user): check balsam_server.site_id in settings.yml"
                ) from None
            raise

    def transfers(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Transfer items matching ``params`` (site_id, state, direction...), paged."""
        return self._pages("/transfers/", params)

    def jobs(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Jobs matching ``params`` (id, site_id, state, last_update_after...)."""
        return self._pages("/jobs/", params)

    def apps(self, **params: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/apps/", params)

    def update_transfers(self, updates: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One bulk PATCH of items: each a dict with ``id`` and the fields to set."""
        return self.request("PATCH", "/transfers/", json=list(updates))

    def update_jobs(self, updates: Sequence[Mapping[str, Any]]) -> Any:
        return self.request("PATCH", "/jobs/", json=list(updates))

    # -- the mechanics ------------------------------------------------------------

    def _pages(
        self, path: str, params: Mapping[str, Any], page_size: int = PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.request(
                "GET", path, params={**params, "limit": page_size, "offset": offset}
            )
            results = page.get("results", [])
            yield from results
            offset += len(results)
            if not results or offset >= page.get("count", 0):
                return

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one request, retrying network errors and 5xx; the decoded answer."""
        if self._token_refused and self._reload:
            self._reload_token()
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(self._retry_sleep * 2 ** (attempt - 1))
            try:
                answer = self._http.request(
                    method,
                    path,
                    params=_query(params),
                    json=json,
                    headers={"Authorization": f"Bearer {self.config.token}"},
                )
            except httpx.TransportError as exc:
                problem = _network_problem(exc)
                continue
            if answer.status_code >= 500:
                problem = f"answered {answer.status_code}"
                continue
            return self._decode(method, path, answer)
        raise ServerUnreachable(
            f"Balsam server {self.api_root} unreachable ({method} {path}: {problem}, "
            f"{self._attempts} attempt(s)); will keep trying"
        )

    def _decode(self, method: str, path: str, answer: httpx.Response) -> Any:
        status = answer.status_code
        if status == 401:
            self._token_refused = True
            raise TokenExpired(
                f"Balsam login expired or refused by {self.api_root} (token from "
                f"{self.config.source}): run `balsam login`"
            )
        self._token_refused = False
        if status >= 400:
            detail = _detail(answer)
            raise ServerRefused(
                f"Balsam server refused {method} {path} ({status}): {detail}",
                status=status,
                detail=detail,
            )
        try:
            return answer.json()
        except ValueError:
            raise ServerUnreachable(
                f"Balsam server {self.api_root} sent a reply that is not JSON "
                f"to {method} {path}"
            ) from None

    def _reload_token(self) -> None:
        try:
            fresh = load_client_config(self.config.api_root)
        except ServerConfigError:
            return
        if fresh.token != self.config.token:
            log.info("new Balsam token read from %s", fresh.source)
            self.config = fresh


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """httpx repeats a key for a list; sets and tuples are made lists for it."""
    if params is None:
        return None
    query: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, (set, frozenset, tuple)):
            value = sorted(value)
        query[key] = value
    return query


def _network_problem(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or no route"
    return type(exc).__name__


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return " ".join(answer.text.split())[:200] or "(no detail)"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        # Validation errors: say where the first one is.
        first = detail[0] if detail else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid')}"
    return " ".join(str(detail).split())[:200]
