"""Signing in to Okta: an API token, or an OAuth 2.0 service app with ``private_key_jwt``.

Okta-scoped access tokens are only issued for ``private_key_jwt``: we sign a short-lived
client assertion (aud = ``{org}/oauth2/v1/token``, iss = sub = client id) with PyJWT, cache the
one-hour access token and renew it a few minutes before it expires. A 401 on a cached token
(revoked, clock jump) drops it, so the shared path fetches one new token and tries once more.
Both are :class:`connectors.http.Auth` objects: another scheme replaces this module only.

With ``dpop`` on (the default, as Okta creates service apps), the token request carries a
DPoP proof (:mod:`.dpop`); ``400 use_dpop_nonce`` is answered by the same request again with
the server's nonce and a new client assertion (Okta spends an assertion's ``jti`` even on that
400, okta-sdk-python ``oauth.py``), at most :data:`NONCE_ROUNDS` times. The token type the
server answers decides what API calls carry: ``DPoP <token>`` plus a proof bound to the token
(``ath``), or a plain ``Bearer`` for an app that does not require DPoP. A resource server
asking for a nonce (``401``, ``WWW-Authenticate: DPoP error="use_dpop_nonce"``) is answered
the same way, once per refusal.
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
from .dpop import ProofKey, dpop_error

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/v1/token"
ASSERTION_LIFETIME = 300              # seconds; Okta accepts at most one hour
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NONCE_ROUNDS = 3                      # token requests answered use_dpop_nonce before giving up
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


class NonceRequired(SourceError):
    """The server asked for a DPoP nonce (``use_dpop_nonce``): send again with it."""

    def __init__(self, message: str, nonce: str):
        super().__init__(message)
        self.nonce = nonce


class ServiceAppAuth:
    """``Bearer <access token>`` (or ``DPoP <access token>`` with a proof per request) for an
    OAuth service app; the token is fetched when missing or due for renewal, through ``fetch``
    (a token request on the shared path: form, headers)."""

    def __init__(self, signer: Signer, scopes: tuple[str, ...], base: str, host: str,
                 clock: Callable[[], float],
                 fetch: Callable[[Mapping[str, str], Mapping[str, str]], httpx.Response],
                 dpop: ProofKey | None = None):
        self.signer, self.scopes, self._clock, self._fetch = signer, scopes, clock, fetch
        self.base = base
        self._audience = base + TOKEN_PATH
        self._host = host
        self.dpop = dpop
        self._token: Secret | None = None
        self.token_type = "Bearer"
        self._renew_at = 0.0
        self._token_nonce: str | None = None       # the authorization server's DPoP-Nonce
        self._resource_nonce: str | None = None    # the resource server's, if it asks

    @property
    def client_id(self) -> str:
        return self.signer.client_id

    @property
    def bound(self) -> bool:
        """The current token is DPoP-bound (API calls carry a proof)."""
        return self.token_type.lower() == "dpop"

    def headers(self, request: Request) -> Mapping[str, str]:
        if self._token is None or self._clock() >= self._renew_at:
            self._fetch_token()
        assert self._token is not None
        token = self._token.reveal()
        if not (self.bound and self.dpop is not None):
            return {"Authorization": f"Bearer {token}"}
        url = request.url if "://" in request.url else self.base + request.url
        return {"Authorization": f"DPoP {token}",
                "DPoP": self.dpop.proof(request.method, url, self._clock(),
                                        nonce=self._resource_nonce, access_token=token)}

    def renew(self, request: Request, response: httpx.Response) -> bool:
        nonce = response.headers.get("DPoP-Nonce")
        if self.bound and nonce and dpop_error(response)[0] == "use_dpop_nonce":
            # RFC 9449 §9: the resource server wants its nonce in the proof; same token
            log.info("Okta %s asked for a DPoP nonce on %s; sending again with it", self._host,
                     request.path)
            self._resource_nonce = nonce
            return True
        if self._token is None:
            return False
        self._token = None            # revoked, or our clock jumped: ask for a new one
        return True

    def _fetch_token(self) -> None:
        for _ in range(NONCE_ROUNDS + 1):
            form = {
                "grant_type": "client_credentials",
                "scope": " ".join(self.scopes),
                "client_assertion_type": ASSERTION_TYPE,
                # a new assertion each round: Okta spends its jti even on a use_dpop_nonce 400
                "client_assertion": self.signer.assertion(self._audience, self._clock()),
            }
            headers = {}
            if self.dpop is not None:
                headers["DPoP"] = self.dpop.proof("POST", self._audience, self._clock(),
                                                  nonce=self._token_nonce)
            try:
                response = self._fetch(form, headers)
            except NonceRequired as exc:
                if exc.nonce == self._token_nonce:
                    raise SourceAuthError(f"Okta {self._host} refused the DPoP nonce it had "
                                          "just handed out; check this machine's clock") \
                        from None
                self._token_nonce = exc.nonce
                continue
            except SourceAuthError:
                raise
            except SourceError as exc:
                raise SourceError(f"could not get an OAuth access token: {exc}") from None
            self._take(response)
            return
        raise SourceAuthError(f"Okta {self._host} asked for a new DPoP nonce {NONCE_ROUNDS} "
                              f"times in a row at {TOKEN_PATH}; giving up")

    def _take(self, response: httpx.Response) -> None:
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"Okta {self._host} answered POST {TOKEN_PATH} without an "
                              f"access token") from None
        if response.headers.get("DPoP-Nonce"):
            self._token_nonce = response.headers["DPoP-Nonce"]
        self.token_type = str(body.get("token_type") or "Bearer")
        if self.dpop is not None and not self.bound:
            log.info("Okta %s issued a plain bearer token: the app of client %s does not "
                     "require DPoP", self._host, self.client_id)
        # renew well before the end: 5 minutes for Okta's fixed hour (as the Okta SDK does)
        margin = min(300.0, lifetime / 10)
        self._token = Secret(token, "okta access token")
        self._renew_at = self._clock() + lifetime - margin
        log.info("got an Okta %s access token for client %s (valid %.0fs)", self.token_type,
                 self.client_id, lifetime)


def service_app(client_id: str, private_key: Secret, key_id: str | None,
                scopes: tuple[str, ...], base: str, host: str, clock: Callable[[], float],
                fetch: Callable[[Mapping[str, str], Mapping[str, str]], httpx.Response],
                dpop: bool = True) -> ServiceAppAuth:
    key, algorithm, kid = signing_key(private_key)
    return ServiceAppAuth(Signer(client_id, key, algorithm, key_id or kid), scopes, base, host,
                          clock, fetch, ProofKey() if dpop else None)
