"""Distinguished names compared by value, not by spelling.

``CN=Alice,OU=People`` and ``cn=alice, ou=people`` are the same entry, and ``\\2C`` is ``\\,``:
directories hand back member DNs spelt differently from the entries' own DNs (hex escapes,
upper case, the older RFC 2253/1779 forms), so every DN is matched in normalised form.
"""

from __future__ import annotations

import re

from ..base import SourceError

# a DN with no escapes, quotes or multi-valued RDNs (nearly every DN a server sends): only
# case and the spaces around separators can differ, which one substitution settles
_SIMPLE_DN = re.compile(r'[^\\"+<>;#=,]+=[^\\"+<>;#=,]*(?:,[^\\"+<>;#=,]+=[^\\"+<>;#=,]*)*')


# the commonest of those: printable ASCII with no space next to a separator or at either
# end, whose canonical spelling is its lower case (what the steps below come to for it)
_S = r'[^\x00-\x20\x7f\\"+<>;#=,]'
_RDN = _S + r'+=(?:' + _S + r'(?:[^\x00-\x1f\x7f\\"+<>;#=,]*' + _S + r')?)?'
_PLAIN_DN = re.compile(_RDN + r'(?:,' + _RDN + r')*')


def normalise_dn(dn: str) -> str:
    """A DN in one canonical spelling for comparisons: attribute types lower-cased, values
    unescaped then case-folded, multi-valued RDNs sorted, insignificant spaces dropped, and
    special characters re-escaped the same way every time."""
    if dn.isascii() and _PLAIN_DN.fullmatch(dn):
        return dn.lower()
    return _normalised(dn)


def _normalised(dn: str) -> str:
    if _SIMPLE_DN.fullmatch(dn):
        if _padded(dn):
            dn = ",".join(f"{attr.strip()}={value.strip()}"
                          for attr, _, value in (rdn.partition("=") for rdn in dn.split(",")))
        if dn.isascii():
            return dn.lower()
        return ",".join(f"{attr.lower()}={value.casefold()}"
                        for attr, _, value in (rdn.partition("=") for rdn in dn.split(",")))
    return ",".join("+".join(sorted(f"{attr.lower()}={_escape_value(value.casefold())}"
                                    for attr, value in rdn))
                    for rdn in parse_dn(dn))


def _padded(dn: str) -> bool:
    """Whitespace at either end or next to a separator (tabs and the like make it not
    printable)."""
    return (not dn.isprintable() or dn[:1] == " " or dn[-1:] == " " or " ," in dn
            or ", " in dn or " =" in dn or "= " in dn)


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """RFC 4514 DN -> RDNs -> (type, unescaped value). Tolerates the older RFC 2253/1779
    forms directories still return (spaces around separators, quoted values, ``;``)."""
    rdns: list[list[tuple[str, str]]] = []
    rdn: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    while i < n:
        # attribute type
        j = dn.find("=", i)
        if j < 0:
            if dn[i:].strip():
                raise SourceError(f"{dn!r} is not a valid distinguished name")
            break
        attr = dn[i:j].strip()
        i = j + 1
        while i < n and dn[i] == " ":
            i += 1
        value = bytearray()
        if i < n and dn[i] == '"':
            i += 1
            while i < n and dn[i] != '"':
                if dn[i] == "\\" and i + 1 < n:
                    i += 1
                value += dn[i].encode()
                i += 1
            i += 1
            while i < n and dn[i] == " ":
                i += 1
        else:
            trailing = 0                     # unescaped trailing spaces are not part of it
            while i < n and dn[i] not in ",;+":
                ch = dn[i]
                if ch == "\\" and i + 1 < n:
                    pair = dn[i + 1:i + 3]
                    if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                        value.append(int(pair, 16))
                        i += 3
                    else:
                        value += dn[i + 1].encode()
                        i += 2
                    trailing = 0
                    continue
                trailing = trailing + 1 if ch == " " else 0
                value += ch.encode()
                i += 1
            if trailing:
                del value[-trailing:]
        rdn.append((attr, value.decode("utf-8", "replace")))
        if i < n and dn[i] == "+":
            i += 1
            continue
        rdns.append(rdn)
        rdn = []
        i += 1                               # skip , or ;
    if rdn:
        rdns.append(rdn)
    return rdns


def _escape_value(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
