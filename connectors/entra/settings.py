"""The ``[source]`` keys of the Entra ID source, checked completely when the config is loaded."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..base import Secret, SettingError
from .auth import load_certificate

GUEST_POLICIES = ("push", "skip")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", re.I)
# multi-tenant authorities: msal calls them unreliable for the client-credentials flow
_NOT_A_TENANT = frozenset({"common", "organizations", "consumers"})


@dataclass(frozen=True)
class Settings:
    tenant_id: str = field(metadata={"help": "the directory (tenant) id, a GUID or a "
                                             "verified domain"})
    client_id: str = field(metadata={"help": "the application (client) id of the app "
                                             "registration"})
    client_secret: Secret | None = field(default=None, metadata={
        "help": "a client secret value of the app registration (or use certificate)",
        "token": True})   # printable ASCII without spaces: its format is checked at load
    certificate: Secret | None = field(default=None, metadata={
        "help": "PEM with the private key and certificate, usually {file = \"...\"}"})
    groups: tuple[str, ...] = field(default=(), metadata={
        "help": "group names or ids whose transitive members are in scope; empty = all"})
    guests: str = field(default="push", metadata={
        "help": "guests (userType Guest): \"push\" them with a deliverable address (mail, "
                "else otherMails; never the #EXT# userPrincipalName), or \"skip\" them"})
    authority: str = field(default="https://login.microsoftonline.com", metadata={
        "help": "sign-in host (national clouds: login.microsoftonline.us, "
                "login.chinacloudapi.cn)"})
    graph_url: str = field(default="https://graph.microsoft.com", metadata={
        "help": "Graph host (national clouds: graph.microsoft.us, "
                "microsoftgraph.chinacloudapi.cn)"})
    ca_file: Path | None = field(default=None, metadata={
        "help": "CA bundle to verify sign-in and Graph TLS with (default: public CAs)"})
    full_read_every: dt.timedelta = field(default=dt.timedelta(days=7), metadata={
        "help": "full read at least this often (delta tokens live 7 days)"})
    timeout: float = field(default=30.0, metadata={"help": "seconds per HTTP request"})

    def validate(self) -> None:
        """Every check that needs no network, each naming its key. A secret that is not
        resolved for this command is only checked for being there."""
        tenant = self.tenant_id.strip()
        if not tenant:
            raise SettingError("tenant_id", "is empty")
        if tenant.lower() in _NOT_A_TENANT:
            raise SettingError("tenant_id", f"{tenant!r} is not one tenant; use the directory "
                                            "(tenant) id from the app's Overview page")
        if not (GUID.match(tenant) or _DOMAIN.match(tenant)):
            raise SettingError("tenant_id", f"{tenant!r} is neither a GUID nor a domain name "
                                            "such as contoso.onmicrosoft.com")
        if not self.client_id.strip():
            raise SettingError("client_id", "is empty")
        if not GUID.match(self.client_id.strip()):
            raise SettingError("client_id", f"{self.client_id!r} is not an application (client) "
                                            "id, a GUID such as "
                                            "0f8fad5b-d9cb-469f-a165-70867728950e")
        if self.client_secret is None and self.certificate is None:
            raise SettingError("client_secret", "set exactly one of client_secret and "
                                                "certificate")
        if self.client_secret is not None and self.certificate is not None:
            raise SettingError("certificate", "set exactly one of client_secret and "
                                              "certificate, not both")
        for name in ("authority", "graph_url"):
            url = urlsplit(getattr(self, name))
            if url.scheme != "https" or not url.hostname:
                raise SettingError(name, "must be an https:// URL (TLS is always verified)")
        if self.certificate is not None and self.certificate.resolved:
            load_certificate(self.certificate.reveal())
        for entry in self.groups:
            if not entry.strip():
                raise SettingError("groups", "holds an empty group name")
        if self.guests not in GUEST_POLICIES:
            raise SettingError("guests", f"{self.guests!r} is not one of "
                                         f"{', '.join(GUEST_POLICIES)}")
        if self.timeout <= 0:
            raise SettingError("timeout", "must be positive")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SettingError("ca_file", f"{self.ca_file} is not a readable file")
