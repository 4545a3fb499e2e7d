"""Signing in to Okta: an API token, or an OAuth 2.0 service app with ``private_key_jwt``.

Okta-scoped access tokens are only issued for ``private_key_jwt``: we sign a short-lived
client assertion (aud = ``{org}/oauth2/v1/token``, iss = sub = client id) with PyJWT, cache the
one-hour access token and renew it a few minutes before it expires. A 401 on a cached token
(revoked, clock jump) drops it, so the shared path fetches one new token and tries once more.
Both are :class:`connectors.http.Auth` objects: another scheme replaces this module only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..base import Secret, SettingError, SourceAuthError, SourceError
from ..http import HeaderAuth, Request

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/v1/token"
ASSERTION_LIFETIME = 300              # seconds; Okta accepts at most one hour
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def api_token(token: Secret) -> HeaderAuth:
    return HeaderAuth("SSWS", token)


def signing_key(secret: Secret) -> tuple[Any, str, str | None]:
    """(key, JWS algorithm, kid) from PEM, or from a JWK as the Okta console also offers;
    SettingError("private_key") when it is not a key Okta accepts."""
    text = secret.reveal().strip()
    try:
        if text.startswith("{"):
            jwk = json.loads(text)
            algo = jwt.algorithms.RSAAlgorithm if jwk.get("kty") == "RSA" \
                else jwt.algorithms.ECAlgorithm
            key = algo.from_jwk(jwk)
            kid = jwk.get("kid")
        else:
            key = serialization.load_pem_private_key(text.encode(), password=None)
            kid = None
    except (ValueError, TypeError, jwt.exceptions.PyJWTError) as exc:
        raise SettingError("private_key", f"({secret.origin}) is not an unencrypted PEM "
                                          f"private key ({type(exc).__name__})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256", kid
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SettingError("private_key", f"({secret.origin}) must be an RSA or EC private key")
    algorithm = _CURVES.get(key.curve.name)
    if algorithm is None:
        raise SettingError("private_key", f"uses curve {key.curve.name}, which Okta does not "
                                          f"accept (P-256, P-384, P-521)")
    return key, algorithm, kid


class Signer:
    """Signs ``private_key_jwt`` client assertions for one service app."""

    def __init__(self, client_id: str, key: Any, algorithm: str, key_id: str | None):
        self.client_id, self._key, self.algorithm, self.key_id = client_id, key, algorithm, key_id

    def assertion(self, audience: str, now: float) -> str:
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME,
                  "jti": uuid.uuid4().hex}
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)


class ServiceAppAuth:
    """``Bearer <access token>`` for an OAuth service app; the token is fetched when missing or
    due for renewal, through ``fetch`` (a token request on the shared path)."""

    def __init__(self, signer: Signer, scopes: tuple[str, ...], base: str, host: str,
                 clock: Callable[[], float],
                 fetch: Callable[[Mapping[str, str]], httpx.Response]):
        self.signer, self.scopes, self._clock, self._fetch = signer, scopes, clock, fetch
        self._audience = base + TOKEN_PATH
        self._host = host
        self._token: Secret | None = None
        self._renew_at = 0.0

    @property
    def client_id(self) -> str:
        return self.signer.client_id

    def headers(self, request: Request) -> Mapping[str, str]:
        if self._token is None or self._clock() >= self._renew_at:
            self._fetch_token()
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def renew(self, request: Request, response: httpx.Response) -> bool:
        if self._token is None:
            return False
        self._token = None            # revoked, or our clock jumped: ask for a new one
        return True

    def _fetch_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(self.scopes),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.signer.assertion(self._audience, self._clock()),
        }
        try:
            response = self._fetch(form)
        except SourceAuthError:
            raise
        except SourceError as exc:
            raise SourceError(f"could not get an OAuth access token: {exc}") from None
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"Okta {self._host} answered POST {TOKEN_PATH} without an "
                              f"access token") from None
        # renew well before the end: 5 minutes for Okta's fixed hour (as the Okta SDK does)
        margin = min(300.0, lifetime / 10)
        self._token = Secret(token, "okta access token")
        self._renew_at = self._clock() + lifetime - margin
        log.info("got an Okta access token for client %s (valid %.0fs)", self.client_id,
                 lifetime)


def service_app(client_id: str, private_key: Secret, key_id: str | None,
                scopes: tuple[str, ...], base: str, host: str, clock: Callable[[], float],
                fetch: Callable[[Mapping[str, str]], httpx.Response]) -> ServiceAppAuth:
    key, algorithm, kid = signing_key(private_key)
    return ServiceAppAuth(Signer(client_id, key, algorithm, key_id or kid), scopes, base, host,
                          clock, fetch)
