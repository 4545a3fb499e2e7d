"""One bound connection and the searches a read needs: paged, by DN, and range retrieval.

* **Size limits.** Every search is an RFC 2696 paged search with the control marked
  *critical*: a server that cannot page fails loudly instead of truncating at its size limit
  (AD stops plain searches at MaxPageSize, 1000 entries by default). A size limit, time
  limit, referral result or a dropped connection anywhere aborts the read with
  :class:`SourceError`; a partial view would look like mass deletion.
* **Paging ends when the server says so.** The cookie is opaque: Samba sends the same one on
  every page, so a repeated cookie means nothing. What stops a server that never ends is what
  it actually sends (:class:`_PagingGuard`): entries it already sent in this search may not
  outnumber the new ones, and pages that bring nothing new may not go on for long.
* **Range retrieval (AD).** A multi-valued attribute longer than AD's MaxValRange (1500 since
  Windows Server 2003) comes back as ``member;range=0-1499``; the rest is fetched window by
  window with base searches (``member;range=1500-2999``, ...) until the high bound is ``*``.
  For AD the members are asked for in windows from the start (``member;range=0-1499``), which
  Windows caps at its MaxValRange and Samba honours as asked. Every window must bring values
  and start where the last one ended, so the loop is bounded by what the server sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import ldap3
from ldap3.core import exceptions as lx

from ..base import SourceError, activity
from .decoding import MEMBER_ATTRIBUTES, entry_attributes
from .dn import normalise_dn
from .projection import Projection
from .settings import host_of
from .wire import receiver_of

log = logging.getLogger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
NO_ATTRIBUTES = "1.1"          # RFC 4511: ask for the DN only
RANGE_SIZE = 1500              # values per window; AD's MaxValRange since Windows Server 2003
# Pages in a row that bring no entry not already sent in this search. AD may send a few empty
# pages on a slow, sparse search; a server that keeps doing it is not going to finish.
MAX_IDLE_PAGES = 100

Control = tuple[str, bool, bytes | None]


class Session:
    """A bound connection to ``url``. ``on_search(what, filter)`` is told each paged search
    as it starts, ``on_page(what, entries so far)`` each page as it ends. ``range_size`` is
    the window asked for in range retrieval (AD)."""

    def __init__(self, conn: ldap3.Connection, url: str, *, page_size: int, flavor: str,
                 on_page: Callable[[str, int], None], on_search: Callable[[str, str], None],
                 range_size: int = RANGE_SIZE):
        self.conn = conn
        self.url = url
        self.host = host_of(url)
        self.page_size = page_size
        self.flavor = flavor
        self.range_size = range_size
        self._on_page = on_page
        self._on_search = on_search

    @property
    def member_attributes(self) -> list[str]:
        """What to ask for to get a group's members. OpenLDAP answers an attribute option it
        does not know with no values at all, so ranges are asked of AD only."""
        if self.flavor == "ad":
            return [f"member;range=0-{self.range_size - 1}"]
        return list(MEMBER_ATTRIBUTES)

    def search(self, what: str, base: str, flt: str, attributes: Iterable[str], *,
               controls: Sequence[Control] = (), base_key: str = "user_base/group_base",
               projection: Projection | None = None) -> Iterator[tuple[str, Any]]:
        """Every entry, page by page; (dn, {lowercased attribute: [raw values]}), or with a
        ``projection`` (dn, what it projects the entry to). ``what`` names the search in
        messages ("users", "disabled users"); ``base_key`` the setting a missing base comes
        from.

        A projected search that needs no range retrieval asks for the next page before it
        hands out the entries of this one, so the server prepares it while the caller builds
        records (only the range retrieval searches in between pages)."""
        cookie = None
        attributes = list(attributes)
        guard = _PagingGuard(self.host, what, self.page_size)
        # only AD is asked for value ranges (member_attributes), and only it answers in them
        ranged = self.flavor == "ad" or any(";range=" in name for name in attributes)
        receiver = receiver_of(self.conn) if projection is not None else None
        ahead = receiver is not None and not ranged
        asked: int | None = None           # the message id of a page asked for ahead
        self._on_search(what, flt)
        try:
            while True:
                if receiver is not None:
                    receiver.projection = projection
                try:
                    if asked is not None:
                        message_id, asked = asked, None
                        with self.conn.connection_lock:
                            self.conn.post_send_search(message_id)
                    else:
                        self.conn.search(base, flt, ldap3.SUBTREE, attributes=attributes,
                                         paged_size=self.page_size, paged_cookie=cookie,
                                         paged_criticality=True,
                                         controls=list(controls) or None)
                except lx.LDAPNoSuchObjectResult as exc:
                    raise SourceError(f"{self.host} has no entry {base!r}, the search base of "
                                      f"the {what} (check source.{base_key})") from exc
                finally:
                    if receiver is not None:
                        receiver.projection = None
                self._complete_or_fail(f"search of {what}")
                # Take this page's entries and cookie now: range retrieval below runs searches
                # of its own on the same connection, which replace conn.result and .response.
                page = list(self.conn.response or ())
                controls_back = self.conn.result.get("controls") or {}
                cookie = ((controls_back.get(PAGED_RESULTS_OID) or {}).get("value", {})
                          .get("cookie"))
                guard.page_started()
                guard.entries([entry.get("raw_dn") or entry["dn"] for entry in page
                               if entry.get("type") == "searchResEntry"])  # a re-sent one wins
                if cookie:
                    guard.page_ended()
                    if ahead:
                        asked = self._ask(base, flt, attributes, cookie, controls)
                for entry in page:
                    projected = entry.get("projected")      # only search entries have it
                    if projected is not None:
                        yield entry["dn"], projected
                        continue
                    kind = entry.get("type")
                    if kind == "searchResEntry":
                        dn = entry["dn"]
                        attrs = entry_attributes(entry)
                        if ranged:
                            self._complete_ranges(dn, attrs)
                        yield dn, attrs if projection is None else projection.from_attrs(attrs)
                    elif kind == "searchResRef":
                        self._reference(entry)
                activity()
                self._on_page(what, guard.new)
                if not cookie:
                    break
        finally:
            if asked is not None:           # left before the page asked for ahead: take it
                self._drain(asked)
        log.debug("%s: %s from %s", what, guard.summary(), self.host)

    def _ask(self, base: str, flt: str, attributes: list[str], cookie: bytes,
             controls: Sequence[Control]) -> int:
        """Send the request for the page after ``cookie`` (what ldap3's Connection.search
        sends) without waiting for it; its answer is taken with post_send_search."""
        from ldap3.operation.search import search_operation
        from ldap3.protocol.rfc2696 import paged_search_control

        conn = self.conn
        request = search_operation(base, flt, ldap3.SUBTREE, ldap3.DEREF_ALWAYS, attributes,
                                   0, 0, False, conn.auto_escape, conn.auto_encode, None,
                                   validator=conn.server.custom_validator,
                                   check_names=conn.check_names)
        with conn.connection_lock:
            return conn.send("searchRequest", request,
                             [*controls, paged_search_control(True, self.page_size, cookie)])

    def _drain(self, message_id: int) -> None:
        try:
            with self.conn.connection_lock:
                self.conn.post_send_search(message_id)
        except Exception:                   # the read is being abandoned anyway
            log.debug("page asked for ahead not taken", exc_info=True)

    def search_all(self, what: str, base: str, flt: str, attributes: Iterable[str], **kw):
        return list(self.search(what, base, flt, attributes, **kw))

    def dns(self, what: str, base: str, flt: str, **kw) -> set[str]:
        """Normalised DNs of the entries matching ``flt`` (no attributes transferred)."""
        return {normalise_dn(dn) for dn, _ in self.search(what, base, flt, [NO_ATTRIBUTES],
                                                          **kw)}

    def read_entry(self, dn: str, flt: str, attributes: Iterable[str], *,
                   controls: Sequence[Control] = ()) -> dict | None:
        """One entry by DN if it matches ``flt``; None if it does not or does not exist."""
        try:
            self.conn.search(dn, flt, ldap3.BASE, attributes=list(attributes),
                             controls=list(controls) or None)
        except lx.LDAPNoSuchObjectResult:
            return None
        self._complete_or_fail(f"read of {dn!r}")
        for entry in self.conn.response:
            if entry.get("type") == "searchResEntry":
                attrs = entry_attributes(entry)
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
                  11: "its administrative limit"}.get(code)
        detail = result.get("message") or result.get("description") or f"result code {code}"
        raise SourceError(f"{self.host} cut the {what} short with "
                          f"{reason or 'an error'} ({detail}); the read is incomplete and "
                          f"was abandoned")

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
        """AD range retrieval: ``member;range=0-1499`` -> fetch ``member;range=1500-2999``
        and so on until the high bound is ``*``; the values end up under ``member``. Each
        window must start where the last ended and bring values: a server that does not
        move forward is stopped at once, so this ends after as many requests as it sent
        windows."""
        for key in [k for k in attrs if ";range=" in k]:
            name, _, bounds = key.partition(";range=")
            values = list(attrs.pop(key))
            low, high = _bounds(bounds)
            requests = 0
            while high != "*":
                start = int(high) + 1
                self.conn.search(dn, "(objectClass=*)", ldap3.BASE,
                                 attributes=[f"{name};range={start}-{start + self.range_size - 1}"])
                requests += 1
                self._complete_or_fail(f"range retrieval of {name} on {dn!r}")
                chunk = [e for e in self.conn.response if e.get("type") == "searchResEntry"]
                ranged = {k.lower(): v for k, v in (chunk[0]["raw_attributes"].items()
                                                    if chunk else ())
                          if k.lower().startswith(name + ";range=")}
                if len(ranged) != 1:
                    raise SourceError(f"{self.host} stopped sending the values of {name} on "
                                      f"{dn!r} after {len(values)} of them")
                (next_key, chunk_values), = ranged.items()
                low, high = _bounds(next_key.partition(";range=")[2])
                if low != start:
                    raise SourceError(f"{self.host} sent values {low}-{high} of {name} on "
                                      f"{dn!r} when values from {start} on were asked for; the "
                                      f"read was stopped after {len(values)} values")
                if high != "*" and (not chunk_values or int(high) < low):
                    raise SourceError(f"{self.host} sent no values of {name} on {dn!r} from "
                                      f"{start} on but did not say they ended; the read was "
                                      f"stopped after {len(values)} values")
                values.extend(chunk_values)
            attrs[name] = values
            log.debug("range retrieval: %d values of %s on %s in %d more requests",
                      len(values), name, dn, requests)


def _bounds(text: str) -> tuple[int, str]:
    low, _, high = text.partition("-")
    try:
        if high != "*":
            int(high)
        return int(low), high
    except ValueError:
        raise SourceError(f"a server answered with a malformed value range {text!r}") from None


class _PagingGuard:
    """What one paged search has received, and the two rules that stop a server that would
    page forever; both are bounded by what it actually sent, not by its cookies:

    * entries it sent again (same DN) may not outnumber the new ones by more than a page
      (a few re-sends are legal: an entry modified during an indexed search can come twice,
      and the later copy is the one kept);
    * at most :data:`MAX_IDLE_PAGES` pages in a row may bring nothing new.
    """

    def __init__(self, host: str, what: str, page_size: int):
        self.host, self.what, self.page_size = host, what, page_size
        self.seen: set[bytes | str] = set()
        self.new = self.repeated = self.pages = self.idle = 0
        self._new_at_page_start = 0
        self.started = time.monotonic()

    def entry(self, dn: bytes | str) -> None:
        if dn in self.seen:
            self.repeated += 1
        else:
            self.seen.add(dn)
            self.new += 1

    def entries(self, dns: list[bytes | str]) -> None:
        """:meth:`entry` for each of ``dns``, in one set update: each DN is new exactly
        when it grows the set, whether it was sent before this page or earlier in it."""
        before = len(self.seen)
        self.seen.update(dns)
        added = len(self.seen) - before
        self.new += added
        self.repeated += len(dns) - added

    def page_started(self) -> None:
        self.pages += 1
        self._new_at_page_start = self.new

    def page_ended(self) -> None:
        """Called before asking for the next page."""
        self.idle = self.idle + 1 if self.new == self._new_at_page_start else 0
        looping = self.repeated > self.new + self.page_size
        if looping or self.idle > MAX_IDLE_PAGES:
            why = (f"it sent {self.repeated} entries a second time" if looping
                   else f"{self.idle} pages in a row brought nothing new")
            raise SourceError(f"{self.host} did not end the paged search of {self.what} "
                              f"({why}; {self.summary()}); the read was stopped")

    def summary(self) -> str:
        return (f"{self.new} entries in {self.pages} pages over "
                f"{time.monotonic() - self.started:.1f}s")
