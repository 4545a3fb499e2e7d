"""One bound connection and the searches a read needs: paged, by DN, and range retrieval.

* **Size limits.** Every search is an RFC 2696 paged search with the control marked
  *critical*: a server that cannot page fails loudly instead of truncating at its size limit
  (AD stops plain searches at 1000 entries). A size limit, time limit, referral result or a
  dropped connection anywhere aborts the read with :class:`SourceError`; a partial view
  would look like mass deletion.
* **Range retrieval (AD).** A ``member`` attribute longer than AD's MaxValRange comes back as
  ``member;range=0-1499``; the rest is fetched with base searches ``member;range=1500-*``
  until the high bound is ``*``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

import ldap3
from ldap3.core import exceptions as lx

from ..base import SourceError, activity
from .decoding import lowered
from .dn import normalise_dn
from .settings import host_of

log = logging.getLogger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
NO_ATTRIBUTES = "1.1"          # RFC 4511: ask for the DN only


class Session:
    """A bound connection to ``url``. ``on_search(what, filter)`` is told each paged search
    as it starts, ``on_page(what, entries so far)`` each page as it ends."""

    def __init__(self, conn: ldap3.Connection, url: str, *, page_size: int, flavor: str,
                 on_page: Callable[[str, int], None], on_search: Callable[[str, str], None]):
        self.conn = conn
        self.url = url
        self.host = host_of(url)
        self.page_size = page_size
        self.flavor = flavor
        self._on_page = on_page
        self._on_search = on_search

    def search(self, what: str, base: str, flt: str,
               attributes: Iterable[str]) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Every entry, page by page; (dn, {lowercased attribute: [raw values]})."""
        cookie = None
        count = 0
        attributes = list(attributes)
        pages = 0
        seen_cookies: set[bytes] = set()
        self._on_search(what, flt)
        while True:
            try:
                self.conn.search(base, flt, ldap3.SUBTREE, attributes=attributes,
                                 paged_size=self.page_size, paged_cookie=cookie,
                                 paged_criticality=True)
            except lx.LDAPNoSuchObjectResult as exc:
                raise SourceError(f"{self.host}: the search base {base!r} does not exist "
                                  f"(check source.user_base/group_base)") from exc
            self._complete_or_fail(what)
            # Take this page's entries and cookie now: range retrieval below runs searches of
            # its own on the same connection, which replace conn.result and conn.response.
            page = list(self.conn.response or ())
            controls = self.conn.result.get("controls") or {}
            cookie = (controls.get(PAGED_RESULTS_OID) or {}).get("value", {}).get("cookie")
            for entry in page:
                kind = entry.get("type")
                if kind == "searchResEntry":
                    attrs = lowered(entry["raw_attributes"])
                    self._complete_ranges(entry["dn"], attrs)
                    count += 1
                    yield entry["dn"], attrs
                elif kind == "searchResRef":
                    self._reference(entry)
            pages += 1
            activity()
            self._on_page(what, count)
            if not cookie:
                break
            if cookie in seen_cookies:      # a server that never ends the search
                raise SourceError(f"{self.host}: the server repeated a paging cookie while "
                                  f"reading {what}; the read was stopped")
            seen_cookies.add(cookie)
        log.debug("%s: %d entries in %d pages from %s", what, count, pages, self.host)

    def search_all(self, what: str, base: str, flt: str, attributes: Iterable[str]):
        return list(self.search(what, base, flt, attributes))

    def dns(self, base: str, flt: str) -> set[str]:
        """Normalised DNs of the entries matching ``flt`` (no attributes transferred)."""
        return {normalise_dn(dn) for dn, _ in self.search("dns", base, flt, [NO_ATTRIBUTES])}

    def read_entry(self, dn: str, flt: str, attributes: Iterable[str]) -> dict | None:
        """One entry by DN if it matches ``flt``; None if it does not or does not exist."""
        try:
            self.conn.search(dn, flt, ldap3.BASE, attributes=list(attributes))
        except lx.LDAPNoSuchObjectResult:
            return None
        self._complete_or_fail(f"read of {dn!r}")
        for entry in self.conn.response:
            if entry.get("type") == "searchResEntry":
                attrs = lowered(entry["raw_attributes"])
                self._complete_ranges(entry["dn"], attrs)
                return attrs
        return None

    def _complete_or_fail(self, what: str) -> None:
        """ldap3 does not raise for sizeLimitExceeded, timeLimitExceeded or referral even
        with raise_exceptions: the entries so far arrive as if that were all. Refuse them."""
        result = self.conn.result or {}
        code = result.get("result", 0)
        if code == 0:
            return
        reason = {4: "its size limit", 3: "its time limit", 10: "a referral",
                  11: "its administrative limit"}.get(code, result.get("description", code))
        raise SourceError(f"{self.host} cut the {what} short with {reason} "
                          f"({result.get('description')}); the read is incomplete and was "
                          f"abandoned")

    def _reference(self, entry: Mapping) -> None:
        # AD returns continuation references to its application partitions (DomainDnsZones,
        # ForestDnsZones, Configuration) when searching from a domain root; users and groups
        # never live there. Anywhere else a reference means part of the tree is elsewhere.
        uris = entry.get("uri") or []
        if self.flavor == "ad":
            log.debug("ignored continuation reference %s", uris)
            return
        raise SourceError(f"{self.host} referred part of the search to {', '.join(uris)}; "
                          f"point source.user_base/group_base at the server holding the entries")

    def _complete_ranges(self, dn: str, attrs: dict[str, list[bytes]]) -> None:
        """AD range retrieval: ``member;range=0-1499`` -> fetch ``member;range=1500-*`` and
        so on until the high bound is ``*``; the values end up under ``member``."""
        for key in [k for k in attrs if ";range=" in k]:
            name, _, bounds = key.partition(";range=")
            values = list(attrs.pop(key))
            high = bounds.split("-", 1)[1]
            steps = 0
            while high != "*":
                steps += 1
                if steps > 100_000:
                    raise SourceError(f"range retrieval of {name} on {dn!r} did not end")
                self.conn.search(dn, "(objectClass=*)", ldap3.BASE,
                                 attributes=[f"{name};range={int(high) + 1}-*"])
                self._complete_or_fail(f"range retrieval of {name} on {dn!r}")
                chunk = [e for e in self.conn.response if e.get("type") == "searchResEntry"]
                ranged = {k.lower(): v for k, v in (chunk[0]["raw_attributes"].items()
                                                    if chunk else ())
                          if k.lower().startswith(name + ";range=")}
                if len(ranged) != 1:
                    raise SourceError(f"{self.host} broke off the range retrieval of {name} "
                                      f"on {dn!r} after {len(values)} values")
                (next_key, chunk_values), = ranged.items()
                values.extend(chunk_values)
                high = next_key.partition(";range=")[2].split("-", 1)[1]
            attrs[name] = values
            log.debug("range retrieval: %d values of %s on %s", len(values), name, dn)
