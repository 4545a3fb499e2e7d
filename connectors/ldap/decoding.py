"""From the wire to plain values: the lean search-entry decoder, attribute values, stable ids.

ldap3's generic BER decoding, per-value str conversion and case-insensitive result
dictionaries cost more than the network; search result entries are decoded by
:func:`decode_entry` into plain dicts of bytes, and only the attributes a mapping needs are
turned into text. ``objectGUID`` is 16 bytes whose first three fields are little-endian
(``uuid.UUID(bytes_le=...)``); OpenLDAP's ``entryUUID`` is text.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import ldap3

from ..base import SourceError, Value

MEMBER_ATTRIBUTES = ("member", "uniqueMember")
GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid"})


def install_lean_decoder(conn: ldap3.Connection) -> None:
    """Decode search result entries with :func:`decode_entry` instead of ldap3's generic BER
    walker. Only on the real synchronous strategy; the mock builds responses its own way."""
    from ldap3.strategy.mockBase import MockBaseStrategy
    from ldap3.strategy.sync import SyncStrategy

    strategy = conn.strategy
    if not isinstance(strategy, SyncStrategy) or isinstance(strategy, MockBaseStrategy):
        return
    strategy._get_response = lambda message_id, timeout: _get_response(strategy, message_id)


def _get_response(strategy, message_id: int):
    """ldap3's SyncStrategy._get_response (2.9.1), with search entries decoded by
    :func:`decode_entry`; everything else still goes through ldap3's own decoder."""
    from ldap3.core.exceptions import LDAPSocketReceiveError
    from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER
    from ldap3.utils.asn1 import decode_message_fast

    responses: list = []
    complete = False
    while not complete:
        messages = strategy.receiving()
        if not messages:
            return SESSION_TERMINATED_BY_SERVER
        for raw in messages:
            if not raw:
                continue
            entry = decode_entry(raw)
            if entry is not None:
                mid, response = entry
            else:
                message = decode_message_fast(raw)
                mid, response = int(message["messageID"]), strategy.decode_response_fast(message)
            if mid == message_id:
                responses.append(response)
                if response["type"] not in ("searchResEntry", "searchResRef",
                                            "intermediateResponse"):
                    complete = True
            elif mid == 0 and response.get("responseName") == "1.3.6.1.4.1.1466.20036":
                return SESSION_TERMINATED_BY_SERVER       # notice of disconnection
            else:
                raise LDAPSocketReceiveError(f"unexpected LDAP message id {mid}")
    responses.append(RESPONSE_COMPLETE)
    return responses


def _ber_length(m: bytes, i: int) -> tuple[int, int]:
    first = m[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(m[i + 1:i + 1 + n], "big"), i + 1 + n


def decode_entry(m: bytes) -> tuple[int, dict] | None:
    """(message id, response dict) if ``m`` is a searchResEntry LDAPMessage, else None.

    A straight walk over the BER that only a search entry can have: SEQUENCE { INTEGER id,
    [APPLICATION 4] { OCTET STRING dn, SEQUENCE OF SEQUENCE { OCTET STRING type, SET OF
    OCTET STRING } } }. Values stay bytes; ldap3's generic decoder builds a tuple per element,
    converts every value to str and looks up its config on each one, which costs more than
    the network. Anything unexpected returns None and ldap3 decodes the message instead."""
    try:
        if m[0] != 0x30:
            return None
        _, i = _ber_length(m, 1)
        if m[i] != 0x02:
            return None
        n, i = _ber_length(m, i + 1)
        message_id = int.from_bytes(m[i:i + n], "big", signed=True)
        i += n
        if m[i] != 0x64:                               # [APPLICATION 4] searchResEntry
            return None
        _, i = _ber_length(m, i + 1)
        if m[i] != 0x04:
            return None
        n, i = _ber_length(m, i + 1)
        raw_dn = m[i:i + n]
        i += n
        if m[i] != 0x30:
            return None
        total, i = _ber_length(m, i + 1)
        end = i + total
        attrs: dict[str, list[bytes]] = {}
        while i < end:
            if m[i] != 0x30:
                return None
            _, i = _ber_length(m, i + 1)
            n, i = _ber_length(m, i + 1)              # attribute type
            name = m[i:i + n].decode()
            i += n
            size, i = _ber_length(m, i + 1)           # SET OF values
            stop = i + size
            values = []
            while i < stop:
                n, i = _ber_length(m, i + 1)
                values.append(m[i:i + n])
                i += n
            attrs[name] = values
        if i != end:
            return None
        return message_id, {"type": "searchResEntry", "raw_dn": raw_dn, "dn": raw_dn.decode(),
                            "raw_attributes": attrs, "attributes": attrs}
    except (IndexError, UnicodeDecodeError):
        return None


def lowered(raw: Mapping[str, list]) -> dict[str, list[bytes]]:
    """An entry's attributes under lower-cased names, values as bytes, empty ones left out."""
    return {name.lower(): [v if isinstance(v, bytes) else str(v).encode() for v in values]
            for name, values in raw.items() if values}


def decode_attributes(attrs: Mapping[str, list[bytes]], names: Iterable[str],
                      skip: str = "") -> dict[str, Value]:
    """Requested attributes as JSON-able values (one value -> str, several -> list[str]),
    under the spelling the mapping uses. Binary values (photos, SIDs) are left out."""
    out: dict[str, Value] = {}
    for name in names:
        raw = attrs.get(name.lower())
        if not raw or name.lower() in GUID_ATTRIBUTES or name == skip:
            continue
        try:
            values = [v.decode("utf-8") for v in raw]
        except UnicodeDecodeError:
            continue
        out[name] = values[0] if len(values) == 1 else values
    return out


def decode_id(attribute: str, raw: bytes) -> str:
    """A stable id as text: GUIDs as UUID strings (little-endian first fields, as AD and
    Windows show them), entryUUID and anything textual as is (lower-cased if a UUID)."""
    if attribute.lower() in GUID_ATTRIBUTES:
        if len(raw) != 16:
            raise SourceError(f"an entry's {attribute} is {len(raw)} bytes long, not 16 as a "
                              f"GUID is (check source.id_attribute)")
        return str(uuid.UUID(bytes_le=bytes(raw)))
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.hex()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def member_dns(attrs: Mapping[str, list[bytes]]) -> list[str]:
    """The member DNs of a group entry (``member`` and ``uniqueMember``), as text."""
    dns = []
    for name in ("member", "uniquemember"):
        for raw in attrs.get(name, ()):
            dn = raw.decode("utf-8", "replace")
            if name == "uniquemember" and dn.endswith("'B") and "#'" in dn:
                dn = dn.rsplit("#'", 1)[0]          # nameAndOptionalUID: drop the bit string
            dns.append(dn)
    return dns
