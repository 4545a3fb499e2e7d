"""Vendor protocols: sources that read directories, and the SCIM target.

The registry maps a ``[source] type`` to its class. Classes are imported lazily so that a
file-source install never loads ldap3 or msal.
"""

from __future__ import annotations

import importlib

SOURCES: dict[str, str] = {
    "file": "connectors.files:FileSource",
    "ldap": "connectors.ldap:LdapSource",
    "okta": "connectors.okta:OktaSource",
    "entra": "connectors.entra:EntraSource",
}


def source_class(type_name: str) -> type:
    """The source class registered under ``type_name`` (KeyError if there is none)."""
    module_name, _, attr = SOURCES[type_name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
