"""Globus Auth as the stand-in plays it: authorization codes, tokens and scopes.

Role: the state behind the stand-in's ``/v2/oauth2/*`` routes. It issues opaque
random tokens (one per resource server, the way Globus Auth splits a grant), checks
PKCE for native apps, refreshes, revokes and introspects. The HTTP layer in
``globus_standin`` turns ``AuthRefusal`` into the OAuth error body.

Traps:

- A login that asks for ``openid`` gets a signed ``id_token`` (``standin_oidc``):
  globus-sdk's ``UserApp`` will not store tokens without one. Such a login also
  records consents, which ``UserApp`` reads back through the consents API to check
  dependent scopes (data_access) before every use of a token.
- Consent is enforced where Globus enforces it, at Transfer submission
  (``TransferService.require_consent``), from the grant's dependent scopes.
- The ``scope`` field of a token answer lists root scopes only; dependent scopes
  (``transfer:all[*.../data_access]``) are remembered on the grant, not echoed.
- A refresh token is reused, not rotated, as with Globus Auth's default.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from balsam_tui.testing.standin_oidc import ISSUER, IdTokenSigner

AUTH_RESOURCE_SERVER = "auth.globus.org"
TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
DEFAULT_TOKEN_LIFETIME = 172800.0
AUTH_CODE_LIFETIME = 600.0

_AUTH_SHORT_SCOPES = frozenset({"openid", "profile", "email"})
_URN_PREFIX = "urn:globus:auth:scope:"
_URL_PREFIX = "https://auth.globus.org/scopes/"


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for: the stand-in's user, or a client acting as itself."""

    sub: str
    username: str
    name: str
    email: str | None
    identity_provider: str = "41143743-f3c8-4d60-bbdb-eeecaba85bd9"
    identity_provider_display_name: str = "Globus ID"


DEFAULT_USER = Identity(
    sub=str(uuid.uuid5(uuid.NAMESPACE_URL, "balsam-tui-standin-user")),
    username="researcher@standin.example.org",
    name="Stand-in Researcher",
    email="researcher@standin.example.org",
)


def client_identity(client_id: str) -> Identity:
    """The identity a confidential client has when it uses client credentials."""
    return Identity(
        sub=client_id,
        username=f"{client_id}@clients.auth.globus.org",
        name=f"client {client_id}",
        email=None,
    )


@dataclass(frozen=True)
class RequestedScope:
    """One top-level scope of a request and the dependent scopes in its brackets."""

    root: str
    dependencies: tuple[str, ...] = ()


def parse_scope_string(text: str) -> list[RequestedScope]:
    """Split ``"a b[*c d] e"`` into top-level scopes with their dependencies.

    A leading ``*`` (optional dependency) is dropped; nesting deeper than one
    level is flattened into the top-level scope's dependencies.
    """
    scopes: list[RequestedScope] = []
    depth = 0
    current = ""
    for char in text.strip() + " ":
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char.isspace() and depth == 0:
            if current:
                scopes.append(_split_brackets(current))
            current = ""
        else:
            current += char
    return scopes


def _split_brackets(text: str) -> RequestedScope:
    if "[" not in text:
        return RequestedScope(root=text)
    root, _, inner = text.partition("[")
    flat = inner.replace("[", " ").replace("]", " ")
    dependencies = tuple(word.lstrip("*") for word in flat.split() if word)
    return RequestedScope(root=root, dependencies=dependencies)


def resource_server_of(scope: str) -> str:
    """The resource server a scope string belongs to, by Globus naming rules."""
    if scope in _AUTH_SHORT_SCOPES:
        return AUTH_RESOURCE_SERVER
    if scope.startswith(_URN_PREFIX):
        return scope[len(_URN_PREFIX) :].rsplit(":", 1)[0]
    if scope.startswith(_URL_PREFIX):
        return scope[len(_URL_PREFIX) :].split("/", 1)[0]
    return scope


def data_access_scope(endpoint_id: str) -> str:
    """The dependent scope a mapped collection asks consent for."""
    return f"{_URL_PREFIX}{endpoint_id}/data_access"


class AuthRefusal(Exception):
    """A token-endpoint request refused; ``error`` is the OAuth error code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass
class Grant:
    """What a user or client agreed to for one resource server."""

    identity: Identity
    client_id: str
    resource_server: str
    scopes: tuple[str, ...]
    dependent_scopes: frozenset[str]
    refresh_token: str | None
    revoked: bool = False


@dataclass
class AccessToken:
    value: str
    grant: Grant
    issued_at: float
    expires_at: float
    revoked: bool = False

    def is_active(self, now: float) -> bool:
        return not self.revoked and not self.grant.revoked and now < self.expires_at


@dataclass
class _AuthCode:
    client_id: str
    scopes: list[RequestedScope]
    redirect_uri: str | None
    code_challenge: str | None
    refresh_tokens: bool
    state: str | None
    expires_at: float
    used: bool = False


@dataclass
class _State:
    codes: dict[str, _AuthCode] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    grants_by_refresh: dict[str, Grant] = field(default_factory=dict)
    consents: dict[tuple[str, str, tuple[int, ...], str], dict[str, object]] = field(
        default_factory=dict
    )


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge for a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class AuthService:
    """Issues and checks the stand-in's tokens. Thread-safe."""

    def __init__(
        self,
        *,
        user: Identity = DEFAULT_USER,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.user = user
        self.token_lifetime = token_lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()
        self.signer = IdTokenSigner()

    # -- authorization codes -------------------------------------------------

    def issue_auth_code(
        self,
        *,
        client_id: str,
        scopes: str,
        redirect_uri: str | None = None,
        code_challenge: str | None = None,
        refresh_tokens: bool = True,
        state: str | None = None,
    ) -> str:
        """Approve a login for the stand-in's user at once and return the code.

        ``code_challenge`` is the S256 challenge of a native app's PKCE verifier;
        without one, the code is for a confidential client.
        """
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._state.codes[code] = _AuthCode(
                client_id=client_id,
                scopes=parse_scope_string(scopes),
                redirect_uri=redirect_uri,
                code_challenge=code_challenge,
                refresh_tokens=refresh_tokens,
                state=state,
                expires_at=self._clock() + AUTH_CODE_LIFETIME,
            )
        return code

    def exchange_code(
        self,
        *,
        client_id: str,
        code: str,
        redirect_uri: str | None,
        code_verifier: str | None,
    ) -> dict[str, object]:
        """The ``authorization_code`` grant."""
        with self._lock:
            pending = self._state.codes.get(code)
            if pending is None or pending.used or self._clock() > pending.expires_at:
                raise AuthRefusal(401, "invalid_grant", "unknown or used code")
            if pending.client_id != client_id:
                raise AuthRefusal(401, "invalid_grant", "code issued to another client")
            if pending.redirect_uri and redirect_uri != pending.redirect_uri:
                raise AuthRefusal(401, "invalid_grant", "redirect_uri does not match")
            if pending.code_challenge is not None:
                if not code_verifier or (
                    pkce_challenge(code_verifier) != pending.code_challenge
                ):
                    raise AuthRefusal(401, "invalid_grant", "PKCE verifier mismatch")
            pending.used = True
            grants = self._new_grants(
                self.user, client_id, pending.scopes, pending.refresh_tokens
            )
            answer = self._token_answer(grants)
            self._record_consents(self.user, client_id, pending.scopes)
        if pending.state is not None:
            answer["state"] = pending.state
        if any(scope.root == "openid" for scope in pending.scopes):
            answer["id_token"] = self._id_token(self.user, client_id)
        return answer

    # -- other grants --------------------------------------------------------

    def client_credentials(self, *, client_id: str, scopes: str) -> dict[str, object]:
        """The ``client_credentials`` grant: the client acts as itself."""
        with self._lock:
            grants = self._new_grants(
                client_identity(client_id),
                client_id,
                parse_scope_string(scopes),
                refresh_tokens=False,
            )
            return self._token_answer(grants)

    def refresh(self, *, client_id: str, refresh_token: str) -> dict[str, object]:
        """The ``refresh_token`` grant: a new access token for the same grant."""
        with self._lock:
            grant = self._state.grants_by_refresh.get(refresh_token)
            if grant is None or grant.revoked:
                raise AuthRefusal(401, "invalid_grant", "refresh token is not active")
            if grant.client_id != client_id:
                raise AuthRefusal(
                    401, "invalid_grant", "token issued to another client"
                )
            return self._token_answer([grant])

    def issue_tokens(
        self,
        *,
        scopes: str = TRANSFER_SCOPE,
        client_id: str = "standin-test-client",
        identity: Identity | None = None,
        refresh_tokens: bool = True,
    ) -> dict[str, object]:
        """Tokens for a test without any HTTP round trip (the user's by default)."""
        with self._lock:
            grants = self._new_grants(
                identity or self.user,
                client_id,
                parse_scope_string(scopes),
                refresh_tokens,
            )
            return self._token_answer(grants)

    # -- checking, revoking --------------------------------------------------

    def active_token(self, value: str) -> AccessToken | None:
        """The access token with this value if it is still good, else None."""
        with self._lock:
            token = self._state.access_tokens.get(value)
            if token is None or not token.is_active(self._clock()):
                return None
            return token

    def introspect(self, value: str) -> dict[str, object]:
        """The ``/token/introspect`` answer for an access or refresh token."""
        now = self._clock()
        with self._lock:
            token = self._state.access_tokens.get(value)
            if token is not None and token.is_active(now):
                grant, issued, expires = token.grant, token.issued_at, token.expires_at
            else:
                grant = self._state.grants_by_refresh.get(value)
                if grant is None or grant.revoked:
                    return {"active": False}
                issued, expires = now, now + self.token_lifetime
        return {
            "active": True,
            "token_type": "Bearer",
            "scope": " ".join(grant.scopes),
            "client_id": grant.client_id,
            "username": grant.identity.username,
            "name": grant.identity.name,
            "email": grant.identity.email,
            "sub": grant.identity.sub,
            "exp": int(expires),
            "iat": int(issued),
            "nbf": int(issued),
            "aud": [grant.resource_server, grant.client_id],
            "iss": "https://auth.globus.org",
        }

    def revoke(self, value: str) -> None:
        """Revoke one token; a refresh token takes its access tokens with it."""
        with self._lock:
            token = self._state.access_tokens.get(value)
            if token is not None:
                token.revoked = True
            grant = self._state.grants_by_refresh.get(value)
            if grant is not None:
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now; refresh still works."""
        now = self._clock()
        with self._lock:
            for token in self._state.access_tokens.values():
                token.expires_at = min(token.expires_at, now)

    def revoke_all(self) -> None:
        """Every token issued so far is revoked; refreshing answers invalid_grant."""
        with self._lock:
            for token in self._state.access_tokens.values():
                token.revoked = True
            for grant in self._state.grants_by_refresh.values():
                grant.revoked = True

    def consents(self, identity_sub: str) -> list[dict[str, object]]:
        """The consents an identity gave in logins, as the consents API lists them."""
        with self._lock:
            return [
                dict(consent)
                for (sub, *_), consent in self._state.consents.items()
                if sub == identity_sub
            ]

    def userinfo(self, token: AccessToken) -> dict[str, object]:
        return self._identity_claims(token.grant.identity, token.issued_at)

    def _identity_claims(
        self, identity: Identity, issued_at: float
    ) -> dict[str, object]:
        return {
            "sub": identity.sub,
            "preferred_username": identity.username,
            "name": identity.name,
            "email": identity.email,
            "identity_provider": identity.identity_provider,
            "identity_provider_display_name": identity.identity_provider_display_name,
            "organization": "Stand-in",
            "last_authentication": int(issued_at),
            "identity_set": [
                {
                    "sub": identity.sub,
                    "username": identity.username,
                    "name": identity.name,
                    "email": identity.email,
                    "identity_provider": identity.identity_provider,
                }
            ],
        }

    # -- internals (caller holds the lock) -------------------------------------

    def _id_token(self, identity: Identity, client_id: str) -> str:
        now = self._clock()
        claims = self._identity_claims(identity, now)
        claims.update(
            {
                "iss": ISSUER,
                "aud": client_id,
                "iat": int(now),
                "exp": int(now + self.token_lifetime),
            }
        )
        return self.signer.sign(claims)

    def _record_consents(
        self, identity: Identity, client_id: str, requested: Iterable[RequestedScope]
    ) -> None:
        # A root consent belongs to the app's client; a dependent one to the
        # client of the resource server that uses it (Transfer, for data_access).
        for scope in requested:
            root_path = self._consent(identity, client_id, scope.root, ())
            server_client = str(
                uuid.uuid5(uuid.NAMESPACE_DNS, resource_server_of(scope.root))
            )
            for dependency in scope.dependencies:
                self._consent(identity, server_client, dependency, root_path)

    def _consent(
        self,
        identity: Identity,
        client: str,
        scope_name: str,
        parent_path: tuple[int, ...],
    ) -> tuple[int, ...]:
        """Record one consent once; answers its dependency path."""
        key = (identity.sub, client, parent_path, scope_name)
        known = self._state.consents.get(key)
        if known is not None:
            return tuple(known["dependency_path"])  # type: ignore[arg-type]

        consent_id = len(self._state.consents) + 1
        path = (*parent_path, consent_id)
        stamp = datetime.datetime.fromtimestamp(
            self._clock(), tz=datetime.timezone.utc
        ).isoformat()
        self._state.consents[key] = {
            "id": consent_id,
            "client": client,
            "scope": str(uuid.uuid5(uuid.NAMESPACE_URL, scope_name)),
            "scope_name": scope_name,
            "effective_identity": identity.sub,
            "dependency_path": list(path),
            "status": "approved",
            "allows_refresh": True,
            "auto_approved": False,
            "atomically_revocable": bool(parent_path),
            "created": stamp,
            "updated": stamp,
            "last_used": stamp,
        }
        return path

    def _new_grants(
        self,
        identity: Identity,
        client_id: str,
        requested: Iterable[RequestedScope],
        refresh_tokens: bool,
    ) -> list[Grant]:
        by_server: dict[str, list[RequestedScope]] = {}
        for scope in requested:
            by_server.setdefault(resource_server_of(scope.root), []).append(scope)
        if not by_server:
            raise AuthRefusal(400, "invalid_scope", "no scope was requested")

        grants = []
        for server, scopes in by_server.items():
            grant = Grant(
                identity=identity,
                client_id=client_id,
                resource_server=server,
                scopes=tuple(dict.fromkeys(s.root for s in scopes)),
                dependent_scopes=frozenset(d for s in scopes for d in s.dependencies),
                refresh_token=secrets.token_urlsafe(32) if refresh_tokens else None,
            )
            if grant.refresh_token:
                self._state.grants_by_refresh[grant.refresh_token] = grant
            grants.append(grant)
        return grants

    def _token_answer(self, grants: list[Grant]) -> dict[str, object]:
        # Globus Auth puts one token at the top and the rest in other_tokens; the
        # SDK reads both through by_resource_server, so the order is free.
        grants = sorted(grants, key=lambda g: g.resource_server != AUTH_RESOURCE_SERVER)
        documents = [self._token_document(grant) for grant in grants]
        top = documents[0]
        top["other_tokens"] = documents[1:]
        return top

    def _token_document(self, grant: Grant) -> dict[str, object]:
        now = self._clock()
        token = AccessToken(
            value=secrets.token_urlsafe(32),
            grant=grant,
            issued_at=now,
            expires_at=now + self.token_lifetime,
        )
        self._state.access_tokens[token.value] = token
        document: dict[str, object] = {
            "access_token": token.value,
            "expires_in": int(self.token_lifetime),
            "resource_server": grant.resource_server,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if grant.refresh_token:
            document["refresh_token"] = grant.refresh_token
        return document
