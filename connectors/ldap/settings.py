"""The ``[source]`` keys of ``type = "ldap"`` and the two flavors' defaults."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from ..base import Secret
from .filters import AD_DISABLED_FILTER


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
