"""OpenID Connect pieces of the stand-in's Auth: a signing key, id_tokens, discovery.

Role: globus-sdk's ``UserApp`` refuses to store tokens without an ``id_token`` (it
records who logged in and checks the identity never changes), and it verifies the
token's RS256 signature against the key it finds through
``/.well-known/openid-configuration``. This module makes that key, signs id_tokens
with it and writes the discovery and JWK documents.

Trap: PyJWT and cryptography are imported lazily, only when an id_token is first
needed, so that importing the stand-in stays cheap. Both come with globus-sdk (its
own dependencies), so the stand-in adds none. A 2048-bit key is generated per
stand-in, which costs tens of milliseconds on the first login.
"""

from __future__ import annotations

import json
import threading
from typing import Any

ISSUER = "https://auth.globus.org"
SIGNING_ALGORITHM = "RS256"
KEY_ID = "standin-signing-key"


class IdTokenSigner:
    """Signs id_tokens with a key made on first use. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._private_key: Any = None

    def _key(self) -> Any:
        with self._lock:
            if self._private_key is None:
                from cryptography.hazmat.primitives.asymmetric import rsa

                self._private_key = rsa.generate_private_key(
                    public_exponent=65537, key_size=2048
                )
            return self._private_key

    def sign(self, claims: dict[str, object]) -> str:
        import jwt

        return jwt.encode(
            claims, self._key(), algorithm=SIGNING_ALGORITHM, headers={"kid": KEY_ID}
        )

    def jwks(self) -> dict[str, object]:
        """The ``jwk.json`` document: the public half of the signing key."""
        from jwt.algorithms import RSAAlgorithm

        public = json.loads(RSAAlgorithm.to_jwk(self._key().public_key()))
        public.update({"kid": KEY_ID, "use": "sig", "alg": SIGNING_ALGORITHM})
        return {"keys": [public]}


def openid_configuration(auth_url: str) -> dict[str, object]:
    """The discovery document; ``auth_url`` is the stand-in's Auth base, with "/"."""
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{auth_url}v2/oauth2/authorize",
        "token_endpoint": f"{auth_url}v2/oauth2/token",
        "revocation_endpoint": f"{auth_url}v2/oauth2/token/revoke",
        "introspection_endpoint": f"{auth_url}v2/oauth2/token/introspect",
        "userinfo_endpoint": f"{auth_url}v2/oauth2/userinfo",
        "jwks_uri": f"{auth_url}jwk.json",
        "response_types_supported": ["code"],
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            "refresh_token",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "name",
            "email",
            "preferred_username",
            "identity_provider",
            "identity_set",
        ],
    }
