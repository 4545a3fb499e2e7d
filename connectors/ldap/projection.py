"""Search entries straight to what a record needs, in one walk over the BER.

A full read spends most of its time on the users' search, and there a decoded entry is only
a step on the way to three things: the requested attributes as text (under the spelling the
mapping uses), the raw id value and the raw change stamp. :class:`Projection` goes from the
wire to those three in one pass: no dict of byte lists in between, each value sliced and
decoded once, and an attribute no record uses skipped by its length without being read.

Its meaning is :meth:`Projection.from_attrs`, which takes an entry in the ``lowered`` form
(:func:`.decoding.lowered`) and is what every entry the fast walk does not take goes through
(``;range=`` windows, names that are not UTF-8, anything malformed): the two agree on every
message, which tests/test_ldap_decoding.py checks against ldap3's own decoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..base import Value
from .decoding import GUID_ATTRIBUTES, entry_start

# a name's slot: its output name (text only), IGNORE, or (output name or None, roles)
IGNORE = 0
ID = 1              # roles, as bits
STAMP = 2
_RANGED = -1        # a window of a ranged attribute (AD): left to the general path

Projected = tuple[dict[str, Value], bytes | None, bytes | None]


class Projection:
    """``names``: the attributes wanted as text; ``id_attribute``: the stable id (its raw
    first value is kept; as text too unless it is a GUID); ``stamp``: the change attribute
    (raw first value kept, not text). Text values follow :class:`.decoding.AttributeDecoder`:
    one value -> str, several -> list[str], and an attribute with a value that is not
    UTF-8 (a photo, a SID) left out."""

    def __init__(self, names: Iterable[str], id_attribute: str, stamp: str):
        self.id_key, self.stamp_key = id_attribute.lower(), stamp.lower()
        self.text: dict[str, str] = {}
        for name in names:
            key = name.lower()
            if key not in GUID_ATTRIBUTES and key != self.stamp_key:
                self.text.setdefault(key, name)
        self._slots: dict[bytes, object] = {}       # names as sent -> slot; a few dozen

    def from_attrs(self, attrs: Mapping[str, list[bytes]]) -> Projected:
        """What :meth:`__call__` gives, from an entry's attributes in ``lowered`` form."""
        values: dict[str, Value] = {}
        for key, name in self.text.items():
            raw = attrs.get(key)
            if not raw:
                continue
            try:
                values[name] = raw[0].decode() if len(raw) == 1 else [v.decode() for v in raw]
            except UnicodeDecodeError:
                continue
        ident, stamp = attrs.get(self.id_key), attrs.get(self.stamp_key)
        return values, ident[0] if ident else None, stamp[0] if stamp else None

    def _slot(self, sent: bytes) -> object:
        name = sent.decode().lower()                # not UTF-8: UnicodeDecodeError
        if ";range=" in name:
            slot: object = _RANGED
        else:
            text = self.text.get(name)
            roles = (ID if name == self.id_key else 0) | (STAMP if name == self.stamp_key else 0)
            slot = (text, roles) if roles else text or IGNORE
        if len(self._slots) < 1024:
            self._slots[sent] = slot
        return slot

    def __call__(self, m: bytes) -> tuple[int, bytes, str, Projected] | None:
        """(message id, raw DN, DN, projected) if ``m`` is a searchResEntry LDAPMessage the
        walk takes, else None.

        This loop runs for every attribute of every user, so the usual form, short lengths
        and one value, is taken inline and told apart by its lengths alone: the attribute's
        SEQUENCE, its type and its SET must end at the same byte, and the value at the end
        of the SET. The tags are not looked at there: RFC 4511 fixes them (SEQUENCE, OCTET
        STRING, SET OF OCTET STRING, primitive, definite lengths). Any other form goes
        through :func:`_attribute`, which reads every length form and checks every tag. An
        odd form at the very end of a message (an empty SET, a needlessly long length of a
        type) can make the inline test read past the end: the entry is then declined and
        takes the general path, with the same result."""
        try:
            start = entry_start(m)
            if start is None:
                return None
            message_id, raw_dn, i, end = start
            values: dict[str, Value] = {}
            ident = stamp = None
            slots = self._slots
            while i < end:
                n = m[i + 1]
                if n < 0x80:
                    stop = i + 2 + n
                    j = i + 4 + m[i + 3]             # the SET OF values, if all is short
                    n = m[j + 1]
                    if j + 2 + n == stop and m[j + 3] + 2 == n:
                        sent = m[i + 4:j]
                        i = stop
                        slot = slots.get(sent)
                        if slot is None:
                            slot = self._slot(sent)
                        if slot.__class__ is str:
                            try:
                                values[slot] = m[j + 4:stop].decode()
                            except UnicodeDecodeError:
                                values.pop(slot, None)   # as if this attribute had not come
                            continue
                        if not slot:
                            continue
                        if slot == _RANGED:
                            return None
                        text, roles = slot           # the id or the stamp: one value
                        value = m[j + 4:stop]
                        if roles & ID:
                            ident = value
                        if roles & STAMP:
                            stamp = value
                        if text is not None:
                            try:
                                values[text] = value.decode()
                            except UnicodeDecodeError:
                                values.pop(text, None)
                        continue
                    else:
                        sent, raw, i = _attribute(m, i)
                        slot = slots.get(sent)
                        if slot is None:
                            slot = self._slot(sent)
                else:
                    sent, raw, i = _attribute(m, i)
                    slot = slots.get(sent)
                    if slot is None:
                        slot = self._slot(sent)
                if not raw or not slot:              # no values, or not wanted
                    continue
                if slot == _RANGED:
                    return None
                if slot.__class__ is str:
                    text = slot
                else:
                    text, roles = slot
                    if roles & ID:
                        ident = raw[0]
                    if roles & STAMP:
                        stamp = raw[0]
                    if text is None:
                        continue
                try:
                    values[text] = raw[0].decode() if len(raw) == 1 else [v.decode() for v in raw]
                except UnicodeDecodeError:
                    values.pop(text, None)
            if i != end:
                return None
            return message_id, raw_dn, raw_dn.decode(), (values, ident, stamp)
        except (IndexError, ValueError):             # UnicodeDecodeError is a ValueError
            return None


def _attribute(m: bytes, i: int) -> tuple[bytes, list[bytes], int]:
    """The PartialAttribute at ``m[i]`` in any definite form: (type as sent, values, where
    the next one starts). Raises ValueError or IndexError if it is not one."""
    if m[i] != 0x30:
        raise ValueError("not a SEQUENCE")
    n, i = _length(m, i + 1)
    stop = i + n
    if m[i] != 0x04:
        raise ValueError("not an OCTET STRING")
    n, i = _length(m, i + 1)
    sent = m[i:i + n]
    i += n
    if m[i] != 0x31:
        raise ValueError("not a SET")
    n, i = _length(m, i + 1)
    if i + n != stop:
        raise ValueError("SET and SEQUENCE do not end together")
    raw = []
    while i < stop:
        if m[i] != 0x04:
            raise ValueError("not an OCTET STRING")
        n, i = _length(m, i + 1)
        raw.append(m[i:i + n])
        i += n
    if i != stop:
        raise ValueError("values overrun their SET")
    return sent, raw, stop


def _length(m: bytes, i: int) -> tuple[int, int]:
    """A BER length at ``m[i]``: (length, where its contents start)."""
    n = m[i]
    if n < 0x80:
        return n, i + 1
    n &= 0x7F
    if not n:
        raise ValueError("indefinite length")      # not allowed in LDAP (RFC 4511 5.1)
    return int.from_bytes(m[i + 1:i + 1 + n], "big"), i + 1 + n
