"""From the wire to plain values: the lean search-entry decoder, attribute values, stable ids.

ldap3's generic BER decoding, per-value str conversion and case-insensitive result
dictionaries cost more than the network; search result entries are decoded by
:func:`decode_entry` into plain dicts of bytes, and only the attributes a mapping needs are
turned into text (the users of a read go straight to text in one pass:
:mod:`.projection`). ``objectGUID`` is 16 bytes whose first three fields are little-endian
(``uuid.UUID(bytes_le=...)``); OpenLDAP's ``entryUUID`` is text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping

from ..base import SourceError, Value

MEMBER_ATTRIBUTES = ("member", "uniqueMember")
GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid"})


def _ber_length(m: bytes, i: int) -> tuple[int, int]:
    first = m[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    if not n:
        raise ValueError("indefinite length")      # not allowed in LDAP (RFC 4511 5.1)
    return int.from_bytes(m[i + 1:i + 1 + n], "big"), i + 1 + n


def entry_start(m: bytes) -> tuple[int, bytes, int, int] | None:
    """Where a searchResEntry LDAPMessage's attributes are: (message id, raw DN, start and
    end of the attribute list), or None if ``m`` is some other message. Raises IndexError or
    ValueError on a truncated or malformed one. Short lengths are read inline: this runs
    once per entry."""
    if m[0] != 0x30:
        return None
    n = m[1]
    i = 2 if n < 0x80 else 2 + (n & 0x7F)
    if m[i] != 0x02:
        return None
    n = m[i + 1]
    if n < 0x80:
        i += 2
    else:
        n, i = _ber_length(m, i + 1)
    message_id = int.from_bytes(m[i:i + n], "big", signed=True)
    i += n
    if m[i] != 0x64:                               # [APPLICATION 4] searchResEntry
        return None
    n = m[i + 1]
    i += 2 if n < 0x80 else 2 + (n & 0x7F)
    if m[i] != 0x04:
        return None
    n = m[i + 1]
    if n < 0x80:
        i += 2
    else:
        n, i = _ber_length(m, i + 1)
    raw_dn = m[i:i + n]
    i += n
    if m[i] != 0x30:
        return None
    n = m[i + 1]
    if n < 0x80:
        i += 2
    else:
        n, i = _ber_length(m, i + 1)
    return message_id, raw_dn, i, i + n


_NAMES: dict[bytes, str] = {}     # attribute names as sent -> lower-cased text; a few dozen


def decode_entry(m: bytes) -> tuple[int, dict] | None:
    """(message id, response dict) if ``m`` is a searchResEntry LDAPMessage, else None.

    A straight walk over the BER that only a search entry can have: SEQUENCE { INTEGER id,
    [APPLICATION 4] { OCTET STRING dn, SEQUENCE OF SEQUENCE { OCTET STRING type, SET OF
    OCTET STRING } } }. Values stay bytes and attribute names come lower-cased, with empty
    attributes left out: the form :func:`lowered` gives, so the session takes them as they
    are (``"lowered": True``). ldap3's generic decoder builds a tuple per element, converts
    every value to str and looks up its config on each one, which costs more than the
    network. This loop runs for every attribute of every entry, so the usual cases are
    taken inline: short lengths (under 128), names already seen, one value. Anything
    unexpected returns None and ldap3 decodes the message instead."""
    try:
        start = entry_start(m)
        if start is None:
            return None
        message_id, raw_dn, i, end = start
        attrs: dict[str, list[bytes]] = {}
        names = _NAMES
        while i < end:
            if m[i] != 0x30:
                return None
            n = m[i + 1]                               # the attribute's SEQUENCE: skipped
            i += 2 if n < 0x80 else 2 + (n & 0x7F)
            n = m[i + 1]                               # attribute type
            if n < 0x80:
                i += 2
            else:
                n, i = _ber_length(m, i + 1)
            key = m[i:i + n]
            name = names.get(key)
            if name is None:
                name = key.decode().lower()
                if len(names) < 1024:
                    names[key] = name
            i += n
            n = m[i + 1]                               # SET OF values
            if n < 0x80:
                i += 2
            else:
                n, i = _ber_length(m, i + 1)
            if not n:
                continue                               # no values: left out
            stop = i + n
            n = m[i + 1]
            if n < 0x80 and n + 2 == stop - i:          # exactly one short value
                attrs[name] = [m[i + 2:stop]]
                i = stop
                continue
            values = []
            while i < stop:
                n = m[i + 1]
                if n < 0x80:
                    i += 2
                else:
                    n, i = _ber_length(m, i + 1)
                values.append(m[i:i + n])
                i += n
            attrs[name] = values
        if i != end:
            return None
        return message_id, {"type": "searchResEntry", "raw_dn": raw_dn, "dn": raw_dn.decode(),
                            "raw_attributes": attrs, "attributes": attrs, "lowered": True}
    except (IndexError, ValueError):               # UnicodeDecodeError is a ValueError
        return None


def lowered(raw: Mapping[str, list]) -> dict[str, list[bytes]]:
    """An entry's attributes under lower-cased names, values as bytes, empty ones left out."""
    return {name.lower(): [v if isinstance(v, bytes) else str(v).encode() for v in values]
            for name, values in raw.items() if values}


def entry_attributes(entry: Mapping) -> dict[str, list[bytes]]:
    """A search entry's attributes in :func:`lowered` form; the lean decoder's already are."""
    if entry.get("lowered"):
        return entry["raw_attributes"]
    return lowered(entry["raw_attributes"])


class AttributeDecoder:
    """Requested attributes as JSON-able values (one value -> str, several -> list[str]),
    under the spelling the mapping uses. Binary values (photos, SIDs), ids (GUIDs) and the
    ``skip`` attribute (the change stamp) are left out. The names are worked out once per
    read, not once per entry."""

    def __init__(self, names: Iterable[str], skip: str = ""):
        self.names = [(name, name.lower()) for name in names
                      if name.lower() not in GUID_ATTRIBUTES and name != skip]

    def __call__(self, attrs: Mapping[str, list[bytes]]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        get = attrs.get
        for name, key in self.names:
            raw = get(key)
            if not raw:
                continue
            try:
                if len(raw) == 1:
                    out[name] = raw[0].decode("utf-8")
                else:
                    out[name] = [v.decode("utf-8") for v in raw]
            except UnicodeDecodeError:
                continue
        return out


def decode_attributes(attrs: Mapping[str, list[bytes]], names: Iterable[str],
                      skip: str = "") -> dict[str, Value]:
    """:class:`AttributeDecoder` for one entry."""
    return AttributeDecoder(names, skip)(attrs)


def decode_id(attribute: str, raw: bytes) -> str:
    """A stable id as text: GUIDs as UUID strings (little-endian first fields, as AD and
    Windows show them), entryUUID and anything textual as is (lower-cased if a UUID)."""
    return id_decoder(attribute)(raw)


def id_decoder(attribute: str) -> Callable[[bytes], str]:
    """:func:`decode_id` for one ``attribute``, chosen once (a read decodes one id per
    entry)."""
    if attribute.lower() in GUID_ATTRIBUTES:
        def guid(raw: bytes) -> str:
            if len(raw) != 16:
                raise SourceError(f"an entry's {attribute} is {len(raw)} bytes long, not 16 "
                                  f"as a GUID is (check source.id_attribute)")
            return str(uuid.UUID(bytes_le=bytes(raw)))
        return guid
    return _text_id


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CANONICAL_UUID_BYTES = re.compile(_CANONICAL_UUID.pattern.encode())


def _text_id(raw: bytes) -> str:
    if _CANONICAL_UUID_BYTES.fullmatch(raw):
        return raw.decode("ascii")        # OpenLDAP's entryUUID: already in this form
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.hex()
    if _CANONICAL_UUID.fullmatch(text):
        return text
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
