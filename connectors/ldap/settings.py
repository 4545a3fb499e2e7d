"""The ``[source]`` keys of ``type = "ldap"``, the two flavors' defaults, and every check
that the settings alone decide (``Settings.validate()``, run when the config is loaded)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..base import Secret, SettingError, is_loopback
from .filters import AD_DISABLED_FILTER, is_valid, wrap


@dataclass(frozen=True)
class Flavor:
    """What ``flavor`` sets when the corresponding keys are left out."""

    id_attribute: str
    user_filter: str
    group_filter: str
    disabled_filter: str | None
    change_attribute: str          # what read_changes filters on


FLAVORS = {
    "openldap": Flavor("entryUUID", "(objectClass=inetOrgPerson)",
                       "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
                       None, "modifyTimestamp"),
    "ad": Flavor("objectGUID", "(&(objectCategory=person)(objectClass=user))",
                 "(objectClass=group)", AD_DISABLED_FILTER, "uSNChanged"),
}


@dataclass(frozen=True)
class Settings:
    """``[source]`` of ``type = "ldap"``, as ``agent/config.py`` builds it from the TOML."""

    url: tuple[str, ...] = field(metadata={
        "help": "ldap:// or ldaps:// URL of the directory; several are tried in order"})
    user_base: str = field(metadata={"help": "DN under which users are searched"})
    group_base: str | None = field(default=None, metadata={
        "help": "DN under which groups are searched (default: user_base)"})
    bind_dn: str | None = field(default=None, metadata={
        "help": "DN (or AD user@domain) to bind as; anonymous when unset"})
    password: Secret | None = field(default=None, metadata={
        "help": "password of bind_dn (a secret)"})
    start_tls: bool = field(default=False, metadata={
        "help": "upgrade an ldap:// connection with StartTLS before binding"})
    ca_file: Path | None = field(default=None, metadata={
        "help": "PEM file of the CA that signed the server certificate "
                "(default: the operating system's trust store)"})
    flavor: str = field(default="openldap", metadata={
        "help": "\"openldap\" or \"ad\": sets the defaults of the filters and the id"})
    user_filter: str | None = field(default=None, metadata={
        "help": "LDAP filter selecting users (default per flavor)"})
    group_filter: str | None = field(default=None, metadata={
        "help": "LDAP filter selecting groups (default per flavor)"})
    id_attribute: str | None = field(default=None, metadata={
        "help": "stable id attribute (default: objectGUID for AD, entryUUID for OpenLDAP)"})
    disabled_filter: str | None = field(default=None, metadata={
        "help": "filter matching disabled users (AD default: userAccountControl bit 2)"})
    scope_group: str | None = field(default=None, metadata={
        "help": "DN of a group: only its direct or nested members are in scope"})
    in_chain: bool | None = field(default=None, metadata={
        "help": "let AD resolve scope_group nesting with the in-chain matching rule "
                "(default: on for AD, unavailable for OpenLDAP)"})
    page_size: int = field(default=500, metadata={
        "help": "entries per page of a paged search"})
    full_read_every: dt.timedelta = field(default=dt.timedelta(hours=24), metadata={
        "help": "how often a complete read replaces change reads (catches deletions)"})
    timeout: float = field(default=30.0, metadata={
        "help": "seconds to wait for a connection or a response"})

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first wrong key. Nothing here needs a
        secret's value, so an unresolved ``password`` is checked like a resolved one."""
        if self.flavor not in FLAVORS:
            raise SettingError("flavor", f"must be \"openldap\" or \"ad\", not {self.flavor!r}")
        if not self.url:
            raise SettingError("url", "needs at least one ldap:// or ldaps:// URL")
        for url in self.url:
            if not _is_ldap_url(url):
                raise SettingError("url", f"{url!r} is not an ldap:// or ldaps:// URL")
            if urlsplit(url).scheme == "ldaps" and self.start_tls:
                raise SettingError("start_tls", f"cannot be combined with ldaps:// ({url})")
        if self.password is not None and not self.bind_dn:
            raise SettingError("password", "is set but bind_dn is not")
        for url in self.url:
            if self.password_in_clear(url):
                raise SettingError("url", refusal_in_clear(url))
        if self.in_chain and self.flavor != "ad":
            raise SettingError("in_chain", "works only with Active Directory (flavor = \"ad\"): "
                                           "OpenLDAP answers the in-chain rule with no entries")
        if not 1 <= self.page_size <= 100_000:
            raise SettingError("page_size", f"must be between 1 and 100000, not {self.page_size}")
        if self.timeout <= 0:
            raise SettingError("timeout", "must be positive")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise SettingError("ca_file", f"{self.ca_file} is not a readable file")
        for key in ("user_filter", "group_filter", "disabled_filter"):
            value = getattr(self, key)
            if value is not None and not is_valid(wrap(value)):
                raise SettingError(key, f"{value!r} is not a valid LDAP filter")

    def password_in_clear(self, url: str) -> bool:
        """Binding to ``url`` would send the password unencrypted beyond this machine."""
        parts = urlsplit(url)
        return (self.password is not None and parts.scheme == "ldap" and not self.start_tls
                and not is_loopback(parts.hostname))


def host_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what messages name, never a path or credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def refusal_in_clear(url: str) -> str:
    return (f"refusing to send the bind password to {host_of(url)} without TLS; use an "
            f"ldaps:// URL or start_tls = true (plain ldap:// is for a loopback address only)")


def _is_ldap_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port                          # raises ValueError when it is not a number
    except ValueError:
        return False
    return (parts.scheme in ("ldap", "ldaps") and bool(parts.hostname)
            and url.isascii() and url.isprintable() and not any(c.isspace() for c in url))
