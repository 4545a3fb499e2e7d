"""The ``[source]`` keys of the Okta source, checked completely when the config is loaded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from ..base import Secret, SettingError, is_loopback
from .auth import signing_key

DEFAULT_SCOPES = ("okta.users.read", "okta.groups.read")


@dataclass(frozen=True)
class Settings:
    org_url: str = field(metadata={"help": "Okta org URL, e.g. https://acme.okta.com "
                                            "(not the -admin URL)"})
    token: Secret | None = field(default=None, metadata={
        "help": "API token (sent as 'SSWS <token>'); or use client_id + private_key",
        "token": True})   # sent in a header: its format is checked at load
    client_id: str | None = field(default=None, metadata={
        "help": "client id of an OAuth 2.0 API service app (private_key_jwt)"})
    private_key: Secret | None = field(default=None, metadata={
        "help": "PEM private key (RSA or EC) registered on that service app"})
    key_id: str | None = field(default=None, metadata={
        "help": "kid of that key, needed when the app has several keys"})
    scopes: tuple[str, ...] = field(default=DEFAULT_SCOPES, metadata={
        "help": "OAuth scopes to request (granted on the app's 'Okta API Scopes' tab)"})
    dpop: bool = field(default=True, metadata={
        "help": "send DPoP proofs (RFC 9449) with the service app's requests, as Okta requires "
                "for apps with 'Require DPoP' on (its default); false for apps with it off"})
    username: str = field(default="email", metadata={
        "help": "what becomes the Split userName: \"email\" (profile.email, the address "
                "Split keys users on) or \"login\" (profile.login, unique in Okta, what "
                "Okta's own SCIM client sends)"})
    groups: tuple[str, ...] = field(default=(), metadata={
        "help": "Okta group names or ids: only their members are in scope (empty = all)"})
    include_staged: bool = field(default=False, metadata={
        "help": "also push STAGED and PROVISIONED (not yet activated) users"})
    full_read_every: timedelta = field(default=timedelta(hours=24), metadata={
        "help": "read everything at least this often (catches hard deletes)"})
    ca_file: Path | None = field(default=None, metadata={
        "help": "CA bundle to verify Okta's TLS certificate (default: public CAs)"})
    timeout: float = field(default=30.0, metadata={"help": "seconds per HTTP request"})
    rate_limit_headroom: int | None = field(default=None, metadata={
        "help": "requests left unused in each Okta rate-limit window "
                "(default: 10% of the limit)"})

    def mapping_overrides(self) -> dict[str, tuple[str, ...]]:
        if self.username == "login":
            return {"userName": ("profile.login",)}
        return {}

    @property
    def oauth(self) -> bool:
        """Signed in as an OAuth service app (else with an API token)."""
        return self.token is None

    def validate(self) -> None:
        """Every check that needs no network, each naming its key. A secret that is not
        resolved for this command is only checked for being there."""
        org_base(self.org_url)
        if self.token is not None and (self.client_id or self.private_key is not None):
            raise SettingError("token", "set either token or client_id + private_key, not both")
        if self.token is None:
            if not self.client_id and self.private_key is None:
                raise SettingError("token", "set token (an Okta API token) or both client_id "
                                            "and private_key (an OAuth service app)")
            if not self.client_id:
                raise SettingError("client_id", "is required with private_key: the client id "
                                                "of the OAuth service app")
            if self.private_key is None:
                raise SettingError("private_key", "is required with client_id: the PEM "
                                                  "private key registered on the service app")
            if not self.scopes:
                raise SettingError("scopes", "is empty; Okta needs okta.users.read "
                                             "okta.groups.read")
            if self.private_key.resolved:
                signing_key(self.private_key)
        if self.username not in ("email", "login"):
            raise SettingError("username", f"{self.username!r} is not one of email, login")
        for name in self.groups:
            if not name.strip():
                raise SettingError("groups", "holds an empty group name")
        if self.timeout <= 0:
            raise SettingError("timeout", "must be positive")
        if self.rate_limit_headroom is not None and self.rate_limit_headroom < 0:
            raise SettingError("rate_limit_headroom", "cannot be negative")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SettingError("ca_file", f"{self.ca_file} is not a readable file")


def org_base(value: str) -> str:
    """``scheme://host[:port]`` of an org URL, or SettingError("org_url") if it is not one."""
    bare = value.strip()
    if not bare.isascii() or not bare.isprintable() or any(c.isspace() for c in bare):
        raise SettingError("org_url", "holds a space, a line break or a non-ASCII character; "
                                      "an org URL is plain, e.g. https://acme.okta.com")
    url = httpx.URL(bare.rstrip("/"))
    if not url.host or url.path not in ("", "/") or url.query:
        raise SettingError("org_url", f"{value!r} must be the bare org URL, "
                                      f"e.g. https://acme.okta.com")
    if re.search(r"-admin\.(okta|oktapreview|okta-emea)\.com$", url.host):
        raise SettingError("org_url", f"{value!r} is the admin console URL; use the org URL "
                                      f"without '-admin'")
    if url.scheme != "https" and not (url.scheme == "http" and is_loopback(url.host)):
        raise SettingError("org_url", f"{value!r} must use https")
    return f"{url.scheme}://{url.netloc.decode()}"
