"""Signing in to Entra ID with msal: a client secret or a certificate, tokens for Graph.

- msal needs its own HTTP client. msal's ``verify=`` is ignored when ``REQUESTS_CA_BUNDLE``
  is set (requests prefers the environment), so msal gets a ``requests.Session`` with
  ``trust_env=False`` and ``verify`` = ``ca_file`` (or the certifi bundle). The sign-in host
  is msal's business, not the shared HTTP path's: only Graph goes through that.
- A certificate credential is a PEM file holding the private key and the certificate; msal
  wants the key and the certificate's SHA-1 thumbprint, computed here with ``cryptography``.
- Token errors come back as ``AADSTSnnnn`` codes; the common ones (bad or expired secret,
  rejected certificate, missing consent, unknown tenant, unknown app) become one sentence
  telling the operator what to fix.
- Tokens are cached by msal (one app object per source): :class:`GraphAuth` asks for one
  before each Graph request, which costs nothing until it nears expiry, so long reads never
  run on an expired token.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..base import Secret, SettingError, SourceAuthError, SourceError
from ..http import Request

log = logging.getLogger(__name__)

_AADSTS = re.compile(r"AADSTS(\d+)")

# What an operator should do about the token errors people actually meet.
AADSTS_ADVICE: dict[int, str] = {
    7000215: "the client secret is wrong (use the secret's Value, not its Secret ID)",
    7000222: "the client secret has expired; add a new one under Certificates & secrets",
    700027: "the certificate was rejected: upload its public part to the app registration, "
            "or replace it if it has expired",
    7000218: "neither a client secret nor a certificate was sent",
    65001: "admin consent is missing; grant admin consent for the app's API permissions",
    90002: "the tenant does not exist in this cloud; check tenant_id and authority",
    700016: "no application with this client_id exists in the tenant; check client_id and "
            "tenant_id",
    1002012: "the scope was refused; check graph_url",
    70011: "the scope was refused; check graph_url",
}


def _cert_advice(description: str) -> str:
    if "expired" in description.lower():
        return "the certificate has expired; upload a new one and point certificate at it"
    return AADSTS_ADVICE[700027]


@dataclass(frozen=True)
class Credential:
    """What msal needs, and what check() may show about it (never the secret itself)."""

    msal_value: Any = field(repr=False)   # the secret or the private key: never shown
    description: str
    expires: dt.datetime | None = None


def load_certificate(pem: str) -> Credential:
    """A PEM holding an unencrypted private key and its certificate -> msal's dict;
    SettingError("certificate") when it is not that.

    msal (1.30+) wants ``{"private_key": PEM, "thumbprint": SHA-1 hex}``; the portal shows
    the same SHA-1 thumbprint, so an operator can match them.
    """
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise SettingError("certificate", "the private key is encrypted; store it unencrypted "
                                          "in a file only the agent can read") from None
    except ValueError:
        raise SettingError("certificate", "no PEM private key found (the file must hold the "
                                          "private key and the certificate)") from None
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        certs = []
    wanted = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    cert = next((c for c in certs if c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == wanted),
        None)
    if cert is None:
        raise SettingError("certificate", "no PEM certificate matching the private key found "
                                          "(the file must hold the private key and the "
                                          "certificate)")
    thumb = cert.fingerprint(hashes.SHA1()).hex().upper()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return Credential({"private_key": key_pem, "thumbprint": thumb},
                      f"certificate {thumb}", cert.not_valid_after_utc)


def credential_of(client_secret: Secret | None, certificate: Secret | None) -> Credential:
    if client_secret is not None:
        return Credential(client_secret.reveal(), "client secret")
    assert certificate is not None
    return load_certificate(certificate.reveal())


def login_session(ca_file: Path | None, timeout: float) -> requests.Session:
    """The HTTP client msal uses: TLS verified against ca_file (else certifi), and blind to
    REQUESTS_CA_BUNDLE / proxies / .netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file) if ca_file else certifi.where()
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore
    return session


class GraphAuth:
    """``Bearer <token>`` for Graph, from msal's client-credentials flow (an
    :class:`connectors.http.Auth`)."""

    def __init__(self, tenant_id: str, client_id: str, credential: Credential, authority: str,
                 graph_url: str, ca_file: Path | None, timeout: float):
        self.tenant_id, self.client_id, self.credential = tenant_id, client_id, credential
        self._authority_host = urlsplit(authority).netloc
        self.authority_url = f"{authority.rstrip('/')}/{tenant_id}"
        self._scope = f"{graph_url.rstrip('/')}/.default"
        self._login = login_session(ca_file, timeout)
        self._token_cache = msal.TokenCache()
        self._msal: msal.ConfidentialClientApplication | None = None

    def close(self) -> None:
        self._login.close()

    def headers(self, request: Request) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def renew(self, request: Request, response: httpx.Response) -> bool:
        return False        # msal renews before expiry; a 401 means a wrong cloud or app

    def _app(self) -> msal.ConfidentialClientApplication:
        if self._msal is None:
            try:
                # msal fetches the tenant's OpenID configuration here
                self._msal = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self.credential.msal_value,
                    authority=self.authority_url,
                    http_client=self._login,
                    instance_discovery=False,   # a specific tenant; no call to a fixed host
                    token_cache=self._token_cache,
                )
            except requests.RequestException as exc:
                raise self._login_unreachable(exc) from None
            except ValueError as exc:
                raise self._discovery_error(exc) from None
        return self._msal

    def access_token(self) -> str:
        app = self._app()
        try:
            result = app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as exc:
            raise self._login_unreachable(exc) from None
        except ValueError as exc:          # a non-JSON answer from the token endpoint
            raise SourceError(f"the token endpoint of {self.authority_url} gave an "
                              f"unreadable answer ({type(exc).__name__})") from None
        if "access_token" in result:
            log.debug("Graph token from %s", result.get("token_source", "identity provider"))
            return result["access_token"]
        raise self._token_error(result)

    def _token_error(self, result: Mapping[str, Any]) -> SourceError:
        description = str(result.get("error_description") or "")
        codes = result.get("error_codes") or []
        match = _AADSTS.search(description)
        code = int(codes[0]) if codes else int(match.group(1)) if match else None
        where = f"app {self.client_id} in tenant {self.tenant_id}"
        if code == 700027:
            advice = _cert_advice(description)
        elif code in AADSTS_ADVICE:
            advice = AADSTS_ADVICE[code]
        else:  # the service's own first sentence, without trace ids
            advice = (_AADSTS.sub("", description).split(". ")[0].strip(" :.")
                      or str(result.get("error") or "unknown error"))
        label = f"AADSTS{code}" if code is not None else str(result.get("error"))
        return SourceAuthError(f"Entra ID refused a token for {where} ({label}): {advice}.")

    def _discovery_error(self, exc: ValueError) -> SourceError:
        text = f"{exc} {exc.__context__ or ''}"
        match = _AADSTS.search(text)
        if match and int(match.group(1)) in AADSTS_ADVICE:
            code = int(match.group(1))
            return SourceAuthError(f"Entra ID sign-in at {self.authority_url} failed "
                                   f"(AADSTS{code}): {AADSTS_ADVICE[code]}.")
        return SourceError(f"OpenID discovery at {self.authority_url} failed; check "
                           "authority and tenant_id.")

    def _login_unreachable(self, exc: requests.RequestException) -> SourceError:
        if isinstance(exc, requests.exceptions.SSLError):
            return SourceError(f"TLS verification of the sign-in host {self._authority_host} "
                               "failed; set ca_file to the CA that signed its certificate.")
        return SourceError(f"cannot reach the sign-in host {self._authority_host} "
                           f"({type(exc).__name__}).")
