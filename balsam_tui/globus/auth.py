"""Globus login: the site's token file, the login flow, and the engine's credentials.

Role: everything about *who* talks to Globus. A person logs in once with a
native-app flow (``GlobusLogin``: ``start()`` returns the URL to open, ``finish(code)``
ends it); the tokens, refresh tokens included, go to ``<site>/globus-tokens.json``
(mode 0600, replaced atomically, never logged). The engine's Transfer client runs
on ``EngineCredentials``: a globus-sdk ``UserApp`` over that file, or a ``ClientApp``
when ``GLOBUS_CLIENT_ID`` and ``GLOBUS_CLIENT_SECRET`` are set (a service account,
which needs no login at all).

Traps:

- globus-sdk's default answer to missing or stale tokens is an interactive login on
  stdin in the middle of a client call. The engine's app refuses instead: it raises
  ``LoginRequired``, which the backend reports as ``CredentialsRequired``.
- A login may happen in another process (``balsam-tui login`` while the headless
  engine runs). Every login gets a new ``login_id`` in the file; a renewed token of
  an older login is never written over a newer one, nor does it bring back a file
  that ``logout`` removed. ``EngineCredentials.changed()`` tells the backend to
  build a new app when the file changed under it.
- data_access consents are asked only for collections known to need them: those
  named with ``--endpoint``, those Globus refused for want of consent (remembered in
  the file as ``consent_needed``) and those consented before. The data_access scope
  of a collection that has none (a guest collection, a Globus Connect Personal
  endpoint) makes the login page fail with an unknown scope, so none is asked
  blindly.
- A ``GlobusApp`` is not thread-safe: ``EngineCredentials`` belongs to the engine's
  thread. A ``GlobusLogin`` shares nothing with it but the file, which is written
  under a lock file (``fcntl``, where the platform has it) so two processes never
  interleave their read-modify-write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import globus_sdk
import jwt
from globus_sdk.login_flows import LoginFlowManager
from globus_sdk.scopes import GCSCollectionScopes, Scope, TransferScopes
from globus_sdk.token_storage import (
    MemoryTokenStorage,
    TokenStorage,
    TokenStorageData,
    TokenValidationError,
)
from globus_sdk.token_storage.validating_token_storage.errors import (
    MissingTokenError,
)
from globus_sdk.transport import RetryConfig

from balsam_tui.settings import TransferSettings
from balsam_tui.site import Site

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms HPC sites run
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

TOKENS_FILE = "globus-tokens.json"
APP_NAME = "balsam-tui"
CLIENT_ID_VARIABLE = "BALSAM_TUI_GLOBUS_CLIENT_ID"
SERVICE_ID_VARIABLE = "GLOBUS_CLIENT_ID"
SERVICE_SECRET_VARIABLE = "GLOBUS_CLIENT_SECRET"
AUTH_RESOURCE_SERVER = "auth.globus.org"
TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
IDENTITY_SCOPES = ("openid", "profile", "email")

EXPIRED_MESSAGE = "Globus login expired or was revoked: run 'balsam-tui login'"
NOT_LOGGED_IN_MESSAGE = (
    "not logged in to Globus: run 'balsam-tui login' (or set GLOBUS_CLIENT_ID and "
    "GLOBUS_CLIENT_SECRET for a service account)"
)
NO_CLIENT_ID_MESSAGE = (
    "no Globus client id is configured (balsam-tui has no registered client of its "
    "own): register a native app at https://app.globus.org/settings/developers and "
    f"set transfers.globus_client_id in settings.yml or {CLIENT_ID_VARIABLE}, or set "
    f"{SERVICE_ID_VARIABLE} and {SERVICE_SECRET_VARIABLE} for a service account"
)

_FILE_FORMAT = 1
_LOCK_FILE = ".globus-tokens.lock"


class GlobusAuthError(Exception):
    """A Globus login problem; the message is one line that says what to do."""


class ClientIdMissing(GlobusAuthError):
    """No client id to log in with, and no service account either."""


class LoginRequired(GlobusAuthError):
    """The stored login cannot be used: missing, expired, revoked or short of scopes.

    ``expired`` is false when there never was a login.
    """

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


class LoginFailed(GlobusAuthError):
    """A login flow could not be finished (a wrong or used code, Auth unreachable)."""


class TokenFileError(GlobusAuthError):
    """The site's token file exists but cannot be read or is not ours."""


def short_retry_config() -> RetryConfig:
    """Few, short retries inside globus-sdk: the engine backs off by itself.

    429 is not retried here at all, so its Retry-After reaches the engine. Each client
    needs its own instance: a client registers its checks on the one it is given.
    """
    return RetryConfig(
        max_retries=2,
        max_sleep=0.5,
        retry_after_status_codes=(),
        transient_error_status_codes=(500, 502, 503, 504),
    )


def canonical_endpoint(value: str) -> str:
    """A collection id in canonical form; ``ValueError`` if it is not a UUID."""
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not a Globus collection UUID") from None


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- who is configured ---------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccount:
    """A confidential client acting as itself (``GLOBUS_CLIENT_ID``/``_SECRET``)."""

    client_id: str
    client_secret: str = field(repr=False)


def service_account_from_env(
    environ: Mapping[str, str] | None = None,
) -> ServiceAccount | None:
    env = os.environ if environ is None else environ
    client_id = env.get(SERVICE_ID_VARIABLE, "").strip()
    secret = env.get(SERVICE_SECRET_VARIABLE, "")
    if client_id and secret:
        return ServiceAccount(client_id, secret)
    return None


def configured_client_id(
    settings: TransferSettings | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The native-app client id from the settings, else from the environment."""
    if settings is not None and settings.globus_client_id:
        return settings.globus_client_id
    env = os.environ if environ is None else environ
    value = env.get(CLIENT_ID_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ClientIdMissing(
            f"{CLIENT_ID_VARIABLE}={value!r} is not a UUID; set it to the client id "
            "of your registered Globus native app"
        ) from None


# -- the token file ------------------------------------------------------------------


@dataclass(frozen=True)
class LoginRecord:
    """What the token file says about the stored login (tokens included: never log)."""

    client_id: str
    login_id: str
    identity_id: str | None
    username: str | None
    name: str | None
    logged_in_at: float | None
    consented_endpoints: tuple[str, ...]
    consent_needed: tuple[str, ...]
    tokens: Mapping[str, TokenStorageData] = field(repr=False)

    @property
    def renewable(self) -> bool:
        """Whether every token can be renewed without a new login."""
        return bool(self.tokens) and all(t.refresh_token for t in self.tokens.values())


class SiteTokenStorage(TokenStorage):
    """globus-sdk token storage in ``<site>/globus-tokens.json``, bound to one login.

    Reads always return what the file holds now. Writes of renewed tokens (what the
    SDK stores) go through only while the file still holds the login this instance
    was bound to (``bind``); a login replaces the file whole (``replace_login``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(namespace="DEFAULT")
        self.path = Path(path)
        self._thread_lock = threading.RLock()
        self._login_id: str | None = None
        self._seen: tuple[int, int, int] | None = None

    @classmethod
    def for_site(cls, site: Site) -> SiteTokenStorage:
        return cls(site.root / TOKENS_FILE)

    # -- what people and the backend ask -------------------------------------------

    def login(self) -> LoginRecord | None:
        """The stored login, or None; ``TokenFileError`` if the file is unusable."""
        with self._locked():
            return _record(self._read())

    def bind(self) -> LoginRecord | None:
        """Serve the login stored now; ``changed()`` compares against this moment."""
        with self._locked():
            document = self._read()
            self._login_id = document.get("login_id")
            self._seen = self._fingerprint()
            return _record(document)

    def changed(self) -> bool:
        """Whether someone else rewrote or removed the file since ``bind``."""
        return self._fingerprint() != self._seen

    def endpoints_to_consent(self) -> tuple[str, ...]:
        """Collections a new login should ask data_access consent for."""
        with self._locked():
            document = self._read_or_nothing()
        return _unique(
            [
                *document.get("consented_endpoints", []),
                *document.get("consent_needed", []),
            ]
        )

    def note_consent_needed(self, endpoints: Iterable[str]) -> None:
        """Remember collections Globus refused for want of consent (for ``login``)."""
        with self._locked():
            document = self._read_or_nothing()
            known = list(document.get("consent_needed", []))
            fresh = [e for e in endpoints if e not in known]
            if not fresh:
                return
            document.setdefault("format", _FILE_FORMAT)
            document["consent_needed"] = [*known, *fresh]
            self._write(document)

    def replace_login(
        self,
        response: globus_sdk.OAuthTokenResponse,
        *,
        client_id: str,
        claims: Mapping[str, Any],
        endpoints: Iterable[str],
    ) -> LoginRecord:
        """Store a new login in place of whatever the file held."""
        identity_id = claims.get("sub")
        tokens = {
            resource_server: TokenStorageData(
                resource_server=resource_server,
                identity_id=identity_id,
                scope=data["scope"],
                access_token=data["access_token"],
                refresh_token=data.get("refresh_token"),
                expires_at_seconds=int(data["expires_at_seconds"]),
                token_type=data.get("token_type"),
            ).to_dict()
            for resource_server, data in response.by_resource_server.items()
        }
        consented = _unique(endpoints)
        with self._locked():
            previous = self._read_or_nothing()
            document = {
                "format": _FILE_FORMAT,
                "login_id": uuid.uuid4().hex,
                "client_id": client_id,
                "identity": {
                    "id": identity_id,
                    "username": claims.get("preferred_username"),
                    "name": claims.get("name"),
                },
                "logged_in_at": time.time(),
                "consented_endpoints": list(consented),
                "consent_needed": [
                    e for e in previous.get("consent_needed", []) if e not in consented
                ],
                "tokens": tokens,
            }
            self._write(document)
            record = _record(document)
        assert record is not None
        return record

    def delete(self) -> bool:
        """Remove the file; true if there was one."""
        with self._locked():
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            return True

    # -- the TokenStorage interface (what globus-sdk calls) ------------------------

    def get_token_data_by_resource_server(self) -> dict[str, TokenStorageData]:
        with self._locked():
            document = self._read()
        return {
            resource_server: TokenStorageData.from_dict(data)
            for resource_server, data in document.get("tokens", {}).items()
        }

    def store_token_data_by_resource_server(
        self, token_data_by_resource_server: Mapping[str, TokenStorageData]
    ) -> None:
        with self._locked():
            document = self._read()
            if not self._still_ours(document):
                return
            for resource_server, data in token_data_by_resource_server.items():
                document["tokens"][resource_server] = data.to_dict()
            self._write(document)

    def remove_token_data(self, resource_server: str) -> bool:
        with self._locked():
            document = self._read()
            if not self._still_ours(document):
                return False
            removed = document["tokens"].pop(resource_server, None)
            self._write(document)
        return removed is not None

    # -- the file ------------------------------------------------------------------

    def _still_ours(self, document: Mapping[str, Any]) -> bool:
        if document.get("tokens") and document.get("login_id") == self._login_id:
            return True
        log.info(
            "renewed Globus tokens not stored: the login they belong to was replaced "
            "or logged out"
        )
        return False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if fcntl is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(
                self.path.parent / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600
            )
            try:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                except OSError:
                    # Some parallel filesystems are mounted without flock; the
                    # thread lock and the atomic rename still hold there.
                    log.debug("no file lock on %s; going on without", self.path)
                yield
            finally:
                os.close(descriptor)

    def _fingerprint(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenFileError(
                f"{self.path}: cannot read the Globus token file "
                f"({exc.strerror or exc})"
            ) from None
        self._keep_private()
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("format") != _FILE_FORMAT:
            raise TokenFileError(
                f"{self.path} is not a balsam-tui Globus token file: remove it with "
                "'balsam-tui logout', then run 'balsam-tui login'"
            )
        return document

    def _read_or_nothing(self) -> dict[str, Any]:
        try:
            return self._read()
        except TokenFileError:
            return {}

    def _write(self, document: Mapping[str, Any]) -> None:
        """Write the whole file under a temporary name (0600), then rename it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=".globus-tokens.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # Our own write is no change for ``changed()`` to report.
        self._seen = self._fingerprint()

    def _keep_private(self) -> None:
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o077:
                os.chmod(self.path, 0o600)
                log.warning(
                    "%s was readable by others (mode %o); made it owner-only",
                    self.path,
                    mode,
                )
        except OSError:
            pass


def _record(document: Mapping[str, Any]) -> LoginRecord | None:
    tokens = document.get("tokens")
    if not tokens or not document.get("client_id"):
        return None
    identity = document.get("identity") or {}
    return LoginRecord(
        client_id=document["client_id"],
        login_id=document.get("login_id", ""),
        identity_id=identity.get("id"),
        username=identity.get("username"),
        name=identity.get("name"),
        logged_in_at=document.get("logged_in_at"),
        consented_endpoints=tuple(document.get("consented_endpoints", ())),
        consent_needed=tuple(document.get("consent_needed", ())),
        tokens={rs: TokenStorageData.from_dict(data) for rs, data in tokens.items()},
    )


def current_login(site: Site) -> LoginRecord | None:
    """The login stored in the site, if any (``TokenFileError`` if unreadable)."""
    return SiteTokenStorage.for_site(site).login()


# -- logging in and out ---------------------------------------------------------------


def login_scopes(endpoints: Iterable[str]) -> list[Scope]:
    """Identity scopes, and Transfer with a data_access consent per collection."""
    transfer = TransferScopes.all
    dependencies = [
        GCSCollectionScopes(endpoint).data_access.with_optional(True)
        for endpoint in endpoints
    ]
    if dependencies:
        transfer = transfer.with_dependencies(dependencies)
    return [*(Scope(name) for name in IDENTITY_SCOPES), transfer]


class GlobusLogin:
    """One native-app login: ``start()`` gives the URL, ``finish(code)`` stores tokens.

    The user opens the URL, logs in, consents, and Globus shows a code to paste
    back. Use an instance for one attempt, from one thread; ``finish`` without a
    ``start`` is an error. ``endpoints`` are collections to consent to on top of the
    ones the site already knows need it (see the module docstring).
    """

    def __init__(
        self,
        site: Site,
        settings: TransferSettings | None,
        *,
        endpoints: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        client_id = configured_client_id(settings, environ)
        if client_id is None:
            raise ClientIdMissing(NO_CLIENT_ID_MESSAGE)
        self.client_id = client_id
        self._storage = SiteTokenStorage.for_site(site)
        try:
            asked = [canonical_endpoint(endpoint) for endpoint in endpoints]
        except ValueError as exc:
            raise LoginFailed(str(exc)) from None
        self.endpoints: tuple[str, ...] = _unique(
            [*asked, *self._storage.endpoints_to_consent()]
        )
        self._client: globus_sdk.NativeAppAuthClient | None = None

    @property
    def scopes(self) -> list[Scope]:
        return login_scopes(self.endpoints)

    def start(self) -> str:
        """Begin the flow; return the URL the user must open in a browser."""
        client = globus_sdk.NativeAppAuthClient(
            self.client_id, app_name=APP_NAME, retry_config=short_retry_config()
        )
        client.oauth2_start_flow(
            requested_scopes=self.scopes,
            refresh_tokens=True,
            prefill_named_grant=f"{APP_NAME} on {socket.gethostname()}",
        )
        self._client = client
        return client.oauth2_get_authorize_url()

    def finish(self, code: str) -> LoginRecord:
        """Trade the code the user pasted for tokens and store them in the site.

        A refused code (a typo) leaves the flow open: ``finish`` may be called again
        with the right one. Anything else ends the attempt.
        """
        client = self._client
        if client is None:
            raise LoginFailed("the login was not started: call start() first")
        code = code.strip()
        if not code:
            self.cancel()
            raise LoginFailed("no authorization code was given: the login is aborted")
        try:
            response = client.oauth2_exchange_code_for_tokens(code)
        except globus_sdk.GlobusAPIError as exc:
            raise LoginFailed(
                f"Globus Auth refused the code (HTTP {exc.http_status}): check it, "
                "or start the login again"
            ) from None
        except globus_sdk.NetworkError as exc:
            self.cancel()
            raise LoginFailed(
                f"could not reach Globus Auth ({type(exc).__name__}): try again"
            ) from None
        try:
            claims = response.decode_id_token() if response.get("id_token") else {}
        except (globus_sdk.GlobusError, jwt.PyJWTError) as exc:
            raise LoginFailed(
                "the identity token from Globus Auth could not be checked "
                f"({type(exc).__name__}): try again"
            ) from None
        finally:
            self.cancel()
        record = self._storage.replace_login(
            response, client_id=self.client_id, claims=claims, endpoints=self.endpoints
        )
        log.info(
            "logged in to Globus as %s; data_access consent for %d collection(s)",
            record.username or record.identity_id,
            len(record.consented_endpoints),
        )
        return record

    def cancel(self) -> None:
        """Give up this attempt (a dialog closed); a new ``start`` may follow."""
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass(frozen=True)
class LogoutOutcome:
    was_logged_in: bool
    revoked: int
    problems: tuple[str, ...]


def logout(site: Site) -> LogoutOutcome:
    """Revoke the stored tokens at Globus Auth, then delete the token file.

    The file goes even when Globus cannot be reached: the problems say which tokens
    may still be live (they can be revoked at app.globus.org).
    """
    storage = SiteTokenStorage.for_site(site)
    try:
        record = storage.login()
    except TokenFileError as exc:
        storage.delete()
        return LogoutOutcome(True, 0, (f"{exc}; it was deleted",))
    if record is None:
        storage.delete()
        return LogoutOutcome(False, 0, ())

    client = globus_sdk.NativeAppAuthClient(
        record.client_id, app_name=APP_NAME, retry_config=short_retry_config()
    )
    revoked = 0
    problems: list[str] = []
    try:
        for data in record.tokens.values():
            for token in (data.access_token, data.refresh_token):
                if not token:
                    continue
                try:
                    client.oauth2_revoke_token(token)
                except globus_sdk.GlobusAPIError as exc:
                    problems.append(
                        f"Globus Auth refused to revoke a {data.resource_server} "
                        f"token (HTTP {exc.http_status})"
                    )
                    continue
                revoked += 1
    except globus_sdk.NetworkError as exc:
        problems.append(
            f"could not reach Globus Auth ({type(exc).__name__}); revoke the "
            "tokens at https://app.globus.org/account/consents"
        )
    finally:
        client.close()
        storage.delete()
    log.info("logged out of Globus: %d token(s) revoked", revoked)
    return LogoutOutcome(True, revoked, tuple(problems))


# -- what the engine runs on ----------------------------------------------------------


def _refuse_interactive_login(
    app: globus_sdk.GlobusApp, error: TokenValidationError
) -> None:
    """globus-sdk's hook for unusable tokens: never a prompt, always an error."""
    if isinstance(error, MissingTokenError):
        raise LoginRequired(NOT_LOGGED_IN_MESSAGE, expired=False) from error
    raise LoginRequired(EXPIRED_MESSAGE, expired=True) from error


class _RefusingLoginFlow(LoginFlowManager):
    """Stands where the SDK would put its stdin login flow; only ever refuses."""

    def run_login_flow(self, auth_parameters: Any) -> globus_sdk.OAuthTokenResponse:
        raise LoginRequired(EXPIRED_MESSAGE, expired=True)


class EngineCredentials:
    """The ``GlobusApp`` the engine's Transfer client runs on; engine thread only.

    A service account (``GLOBUS_CLIENT_ID`` and ``GLOBUS_CLIENT_SECRET``) wins over a
    stored login. ``ClientIdMissing`` at construction means neither is possible.
    """

    def __init__(
        self,
        site: Site,
        settings: TransferSettings,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.service_account = service_account_from_env(environ)
        self._storage = SiteTokenStorage.for_site(site)
        self._client_id = None
        if self.service_account is None:
            self._client_id = configured_client_id(settings, environ)
            if self._client_id is None and not self._storage.path.exists():
                raise ClientIdMissing(NO_CLIENT_ID_MESSAGE)
        self._app: globus_sdk.GlobusApp | None = None
        self._consented: tuple[str, ...] = ()
        self._service_consents: list[str] = []

    @property
    def is_service_account(self) -> bool:
        return self.service_account is not None

    @property
    def who(self) -> str:
        """How the engine is authenticated, for messages."""
        if self.service_account is not None:
            return f"service account {self.service_account.client_id}"
        return "the stored Globus login"

    @property
    def consented_endpoints(self) -> tuple[str, ...]:
        """Collections whose data_access scope the app's Transfer scope carries."""
        if self.service_account is not None:
            return tuple(self._service_consents)
        return self._consented

    def changed(self) -> bool:
        """Whether the app must be rebuilt (a new login, a logout)."""
        return (
            self._app is not None
            and self.service_account is None
            and self._storage.changed()
        )

    def app(self) -> globus_sdk.GlobusApp:
        """The app, built on first use or after ``reset``."""
        if self._app is None:
            if self.service_account is not None:
                self._app = self._service_app(self.service_account)
            else:
                self._app = self._user_app()
        return self._app

    def reset(self) -> None:
        """Forget the app (and its cached tokens); the next ``app()`` builds anew."""
        if self._app is not None:
            self._app.close()
        self._app = None

    def note_consent_needed(self, endpoints: Iterable[str]) -> None:
        """Globus refused for want of consent: remember it for the next login."""
        if self.service_account is None:
            self._storage.note_consent_needed(endpoints)

    def add_service_consents(self, endpoints: Iterable[str]) -> bool:
        """A service account asks for data_access itself; true if any is new."""
        if self.service_account is None:
            return False
        fresh = [e for e in endpoints if e not in self._service_consents]
        if not fresh:
            return False
        self._service_consents.extend(fresh)
        self.reset()
        return True

    def close(self) -> None:
        self.reset()

    def _user_app(self) -> globus_sdk.UserApp:
        record = self._storage.bind()
        client_id = record.client_id if record is not None else self._client_id
        if client_id is None:
            raise LoginRequired(NOT_LOGGED_IN_MESSAGE, expired=False)
        self._consented = record.consented_endpoints if record is not None else ()
        login_client = globus_sdk.NativeAppAuthClient(
            client_id, app_name=APP_NAME, retry_config=short_retry_config()
        )
        config = globus_sdk.GlobusAppConfig(
            login_flow_manager=_RefusingLoginFlow(login_client),
            token_storage=self._storage,
            request_refresh_tokens=True,
            token_validation_error_handler=_refuse_interactive_login,
        )
        return globus_sdk.UserApp(APP_NAME, login_client=login_client, config=config)

    def _service_app(self, account: ServiceAccount) -> globus_sdk.ClientApp:
        login_client = globus_sdk.ConfidentialAppAuthClient(
            account.client_id,
            account.client_secret,
            app_name=APP_NAME,
            retry_config=short_retry_config(),
        )
        config = globus_sdk.GlobusAppConfig(
            token_storage=MemoryTokenStorage(),
            token_validation_error_handler=_refuse_interactive_login,
        )
        return globus_sdk.ClientApp(APP_NAME, login_client=login_client, config=config)
