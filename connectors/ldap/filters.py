"""Building search filters: wrapping, AND-ing, the Active Directory matching rules.

Values placed into filters are escaped (``escape_filter_chars``), so a DN or a name with
``( ) * \\`` in it can neither break a filter nor widen it.
"""

from __future__ import annotations

from ldap3.core.exceptions import LDAPInvalidFilterError
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars

BIT_AND_RULE = "1.2.840.113556.1.4.803"       # LDAP_MATCHING_RULE_BIT_AND
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"     # LDAP_MATCHING_RULE_IN_CHAIN
AD_DISABLED_FILTER = f"(userAccountControl:{BIT_AND_RULE}:=2)"


def wrap(flt: str) -> str:
    """A filter in parentheses, as operators need it (``objectClass=x`` -> ``(objectClass=x)``)."""
    flt = flt.strip()
    return flt if flt.startswith("(") else f"({flt})"


def and_(*filters: str | None) -> str:
    """The conjunction of the filters given (None and "" are left out)."""
    parts = [f for f in filters if f]
    return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"


def member_of_in_chain(group_dn: str) -> str:
    """Entries that are direct or nested members of ``group_dn`` (AD only)."""
    return f"(memberOf:{IN_CHAIN_RULE}:={escape_filter_chars(group_dn)})"


def is_valid(flt: str) -> bool:
    """``flt`` parses as an RFC 4515 filter (ldap3's own parser, no schema)."""
    try:
        parse_filter(flt, None, True, True, None, False)
    except LDAPInvalidFilterError:
        return False
    return True
