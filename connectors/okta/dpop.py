"""DPoP proofs (RFC 9449) for an Okta service app, as Okta's own SDKs make them.

Okta creates API service apps with "Require Demonstrating Proof of Possession (DPoP) header in
token requests" switched on. Such an app gets a token only with a ``DPoP`` proof on the token
request, and only after one round trip: the first answer is ``400 use_dpop_nonce`` with a
``DPoP-Nonce`` header, to be put in the next proof (okta/okta-developer-docs
``guides/dpop/main/index.md``: the nonce is renewed every 24 hours, an old one works for three
days). The token comes back with ``token_type: DPoP``; every API call then carries
``Authorization: DPoP <token>`` and a fresh proof bound to it by ``ath``
(``guides/dpop/main/oktaresourceserver/requestresource.md``).

Like okta-sdk-python (``okta/dpop.py``, ``DPoPProofGenerator``), the proof is signed by a key
pair made for DPoP when the source starts (RSA, RS256, public part only in the ``jwk``
header), not by the app's client-assertion key: the proof key is shown to the server in every
request, the private_key_jwt key never needs to be. The ``htu`` is the request URL without
query and fragment, its path percent-decoded, as Okta compares it (okta-sdk-python issue
#541: an encoded ``%40`` in htu is refused with ``invalid_dpop_proof``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from urllib.parse import unquote, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

DPOP_KEY_BITS = 2048
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the token's ASCII (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def htu_of(url: str) -> str:
    """The ``htu`` of a request URL: scheme, host, port and decoded path; no query/fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{unquote(parts.path)}"


def thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), the ``jkt`` a DPoP token is bound to."""
    members = ("e", "kty", "n") if jwk.get("kty") == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


class ProofKey:
    """The key pair that signs DPoP proofs; made in memory, never written anywhere."""

    def __init__(self):
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=DPOP_KEY_BITS)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        self.jwk = {"kty": "RSA", "n": public["n"], "e": public["e"]}

    def proof(self, method: str, url: str, now: float, *, nonce: str | None = None,
              access_token: str | None = None) -> str:
        """A proof for one request: a new ``jti`` each time, ``ath`` when a token is sent."""
        claims: dict = {"jti": uuid.uuid4().hex, "htm": method.upper(), "htu": htu_of(url),
                        "iat": int(now)}
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = access_token_hash(access_token)
        return jwt.encode(claims, self._key, algorithm="RS256",
                          headers={"typ": "dpop+jwt", "jwk": self.jwk})


def dpop_error(response: httpx.Response) -> tuple[str, str]:
    """(error, description) of a DPoP refusal: the token endpoint puts them in its JSON body,
    a resource server in ``WWW-Authenticate: DPoP error="...", error_description="..."``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"]), str(body.get("error_description") or "")
    for value in response.headers.get_list("WWW-Authenticate"):
        params = dict(_AUTH_PARAM.findall(value))
        if params.get("error"):
            return params["error"], params.get("error_description", "")
    return "", ""
