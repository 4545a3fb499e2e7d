"""The whole engine against each directory source, end to end: config file -> source server ->
read (full or change set) -> map -> plan -> apply -> FakeSplit.

Every test runs four times, once per source: LDAP against a real slapd
(tests/servers/slapd.py, over ldaps:// with a CA generated here), LDAP with ``flavor = "ad"``
against a real Samba AD domain controller (tests/servers/samba.py, one per session, each test
in OUs of its own, reached through a relay that can cut the connection), Okta against the fake
org (tests/fakes/okta.py, plain http on loopback, which the connector allows for loopback
only), Entra against the fake login + Graph over TLS (tests/fakes/graph.py). Each holds the
source contract's PEOPLE and TEAMS (tests/source_contract.py) the vendor's way, and the Agent
is built from a real config.toml with secrets in files. Assertions are on FakeSplit's store
and request log, on the snapshot, and on which read path the engine took: a spy on the source
class records ``read`` / ``read_changes`` calls, and each server's own log shows what was asked
for (LDAP: the search filters the connector sent; Okta: ``filter=lastUpdated gt``; Graph:
``/delta``).

Test seams used, nothing else is faked: the spy can set an attribute on every source the
engine builds (``on_page`` to kill slapd, or cut the relay to Samba, after the first page of
users), and add constructor arguments (the ``clock`` and ``sleep`` time seam, so the Okta and
Graph retry backoff does not really wait).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import re
import time
import uuid
from pathlib import Path

import ldap3
import pytest
from ldap3.utils.dn import escape_rdn

from agent.core.outcome import Outcome
from agent.app import build_agent
from agent.cli.main import main
from agent.config import load
from agent.store.state import Meta, State
from connectors.entra import EntraSource
from connectors.ldap import LdapSource
from connectors.okta import OktaSource
from tests.conftest import TOKEN, FakeTime
from tests.fakes.graph import FakeEntra, FakeEntraServer, make_pki
from tests.fakes.okta import FakeClock, FakeOkta
from tests.servers import samba as samba_server
from tests.servers import slapd as slapd_server
from tests.servers.relay import Relay
from tests.source_contract import PEOPLE, TEAMS, team_people

EMAIL = {p.key: p.email for p in PEOPLE}
TEAM = {t.key: t for t in TEAMS}

# What Split should hold after the first sync: active people only, groups flattened to
# their active members (carol is disabled; Loop A and Loop B nest each other).
PUSHED_USERS = {p.email: True for p in PEOPLE if p.active}
PUSHED_GROUPS = {
    "Engineering": {EMAIL["alice"], EMAIL["bob"], EMAIL["dave"]},
    "Platform": {EMAIL["dave"]},
    "Split_Administrators": {EMAIL["alice"]},
    "Loop A": {EMAIL["zoe"], EMAIL["obrien"]},
    "Loop B": {EMAIL["zoe"], EMAIL["obrien"]},
}
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)



def toml(value) -> str:
    """A TOML value: strings quoted (JSON string escapes are valid TOML), tables inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value) if isinstance(value, Path) else value)


# ---------------------------------------------------------------------------------------------
# One backend per source: seeds the contract directory, changes it, breaks it, and tells
# from its own log which kind of read the connector made.


class Backend:
    kind: str
    source_cls: type
    fixtures: tuple[str, ...] = ()          # session fixtures the constructor takes, by name
    check_counts: dict[str, int]            # expected in the source line of `check`
    failure_words: str                      # in the message of a read broken mid-page

    def settings(self) -> dict:             # the [source] keys, as Python values
        raise NotImplementedError

    def mark(self) -> int:
        """A position in the server's request log."""
        raise NotImplementedError

    def listed_everything(self, since: int) -> bool:
        raise NotImplementedError

    def asked_for_changes(self, since: int) -> bool:
        raise NotImplementedError

    def retitle(self, key: str, title: str) -> None: ...
    def leave(self, team: str, key: str) -> None: ...
    def disable(self, key: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def break_users_page_2(self, spy: "SourceSpy") -> None: ...
    def mend(self) -> None: ...
    def invalidate_cursor(self, setup: "Setup") -> None: ...
    def install(self, monkeypatch) -> None: ...
    def stop(self) -> None: ...


PEOPLE_BASE = f"ou=people,{slapd_server.SUFFIX}"
GROUPS_BASE = f"ou=groups,{slapd_server.SUFFIX}"


def person_dn(key: str) -> str:
    return f"uid={key},{PEOPLE_BASE}"


def team_dn(key: str) -> str:
    return f"cn={escape_rdn(TEAM[key].name)},{GROUPS_BASE}"


def contract_ldif() -> str:
    """PEOPLE and TEAMS dated 2020, a minute apart, so change reads see only what a test
    touches; a disabled person has employeeType=disabled."""
    def stamp(i: int) -> str:
        return f"20200101{i // 60:02d}{i % 60:02d}00Z"

    out = []
    for i, p in enumerate(PEOPLE):
        attrs = {"objectClass": "inetOrgPerson", "uid": p.key, "cn": p.display, "sn": p.family,
                 "givenName": p.given, "displayName": p.display, "mail": p.email,
                 "title": p.title, "departmentNumber": p.department,
                 "modifyTimestamp": stamp(i), "createTimestamp": stamp(i)}
        if not p.active:
            attrs["employeeType"] = "disabled"
        out.append(slapd_server.ldif_entry(person_dn(p.key), attrs))
    for i, t in enumerate(TEAMS, start=len(PEOPLE)):
        out.append(slapd_server.ldif_entry(team_dn(t.key), {
            "objectClass": "groupOfNames", "cn": t.name,
            "member": [person_dn(k) for k in t.people] + [team_dn(k) for k in t.teams],
            "modifyTimestamp": stamp(i), "createTimestamp": stamp(i)}))
    return "".join(out)


class Ldap(Backend):
    kind, source_cls = "ldap", LdapSource
    check_counts = {"users": 6, "groups": 5, "disabled": 1}
    failure_words = "connection to .* was lost"

    def __init__(self, root: Path, pki):
        self.slapd = slapd_server.Slapd(root / "slapd", tls=True)
        self.slapd.slapadd(slapd_server.BASE_LDIF + "\n" + contract_ldif())
        self.slapd.start()
        self.url = self.slapd.ldaps_url                   # ldaps://localhost:<port>
        (root / "ldap.password").write_text(slapd_server.READER_PASSWORD + "\n")
        self.searches: list[tuple[str, str]] = []         # (what, filter) as sent

    def settings(self) -> dict:
        return {"url": self.url, "ca_file": self.slapd.ca_file,
                "bind_dn": slapd_server.READER_DN, "password": {"file": "ldap.password"},
                "user_base": PEOPLE_BASE, "group_base": GROUPS_BASE,
                "disabled_filter": "(employeeType=disabled)", "page_size": 2, "timeout": 5}

    def install(self, monkeypatch) -> None:
        # every source the engine builds reports its searches through the on_search hook
        init, searches = LdapSource.__init__, self.searches

        @functools.wraps(init)
        def init_reporting_searches(source, settings, **kwargs):
            init(source, settings, on_search=lambda what, flt: searches.append((what, flt)),
                 **kwargs)

        monkeypatch.setattr(LdapSource, "__init__", init_reporting_searches)

    def mark(self) -> int:
        return len(self.searches)

    def _user_filters(self, since: int) -> list[str]:
        return [flt for what, flt in self.searches[since:] if what == "users"]

    def listed_everything(self, since: int) -> bool:
        return any("modifyTimestamp" not in f for f in self._user_filters(since))

    def asked_for_changes(self, since: int) -> bool:
        return any("(modifyTimestamp>=" in f for f in self._user_filters(since))

    def _modify(self, dn: str, changes: dict) -> None:
        conn = self.slapd.admin_connection()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def retitle(self, key, title):
        self._modify(person_dn(key), {"title": [(ldap3.MODIFY_REPLACE, [title])]})

    def leave(self, team, key):
        self._modify(team_dn(team), {"member": [(ldap3.MODIFY_DELETE, [person_dn(key)])]})

    def disable(self, key):
        self._modify(person_dn(key), {"employeeType": [(ldap3.MODIFY_REPLACE, ["disabled"])]})

    def delete(self, key):
        conn = self.slapd.admin_connection()
        try:
            conn.delete(person_dn(key))    # memberof-refint drops it from its groups
        finally:
            conn.unbind()

    def break_users_page_2(self, spy):
        slapd = self.slapd

        def kill_after_first_page(what, count):
            if what == "users":
                slapd.kill()

        spy.adjust["on_page"] = kill_after_first_page

    def mend(self):
        self.slapd.start()                  # same data directory, same ports

    def invalidate_cursor(self, setup):
        # a cursor this version cannot read (e.g. written by another version); a config
        # edit is caught earlier, by the engine's fingerprint of the [source] settings
        with State.open(setup.state_path, lock=False) as state:
            state.meta.set(Meta.SOURCE_CURSOR, "ldap0;since=yesterday")

    def stop(self):
        self.slapd.stop()


_ad_areas = itertools.count(1)


class Ad(Ldap):
    """The contract directory in two fresh OUs of the session's Samba DC, read as svc-deleted
    (an ordinary user that may also list deleted objects) through a relay."""

    kind = "ldap"
    fixtures = ("samba_dc",)
    check_counts = {"users": 6, "groups": 5, "disabled": 1}

    def __init__(self, root: Path, pki, samba_dc):
        from tests.test_ldap_ad import contract_ldif, ou
        self.dc = samba_dc
        n = next(_ad_areas)
        self.people_base = f"OU=E2E{n} People,{samba_server.BASE}"
        self.groups_base = f"OU=E2E{n} Groups,{samba_server.BASE}"
        self.dc.add_ldif(ou(self.people_base) + ou(self.groups_base)
                         + "".join(contract_ldif(self.people_base, self.groups_base, f"e{n}")))
        self.relay = Relay(samba_dc.address, 636)
        (root / "ad.password").write_text(samba_server.SVC_DELETED_PASSWORD + "\n")
        self.searches = []

    def settings(self) -> dict:
        return {"flavor": "ad", "url": self.relay.url(), "ca_file": self.dc.ca_file,
                "bind_dn": samba_server.SVC_DELETED_UPN, "password": {"file": "ad.password"},
                "user_base": self.people_base, "group_base": self.groups_base,
                "page_size": 2, "timeout": 15}

    def listed_everything(self, since: int) -> bool:
        return any("uSNChanged" not in f for f in self._user_filters(since))

    def asked_for_changes(self, since: int) -> bool:
        return any("(uSNChanged>=" in f for f in self._user_filters(since))

    def _dn(self, key: str) -> str:
        person = next(p for p in PEOPLE if p.key == key)
        return f"CN={escape_rdn(person.display)},{self.people_base}"

    def _team(self, key: str) -> str:
        return f"CN={escape_rdn(TEAM[key].name)},{self.groups_base}"

    def _modify(self, dn: str, changes: dict) -> None:
        conn = self.dc.admin_connection()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def retitle(self, key, title):
        self._modify(self._dn(key), {"title": [(ldap3.MODIFY_REPLACE, [title])]})

    def leave(self, team, key):
        self._modify(self._team(team), {"member": [(ldap3.MODIFY_DELETE, [self._dn(key)])]})

    def disable(self, key):
        self._modify(self._dn(key), {"userAccountControl": [(ldap3.MODIFY_REPLACE, ["546"])]})

    def delete(self, key):
        conn = self.dc.admin_connection()
        try:
            conn.delete(self._dn(key))      # AD drops it from its groups by itself
        finally:
            conn.unbind()

    def break_users_page_2(self, spy):
        relay = self.relay
        spy.adjust["on_page"] = lambda what, count: relay.cut() if what == "users" else None

    def mend(self):
        self.relay.mend()

    def stop(self):
        self.relay.close()


class Okta(Backend):
    kind, source_cls = "okta", OktaSource
    check_counts = {"users": 6, "groups": 5, "inactive": 1}
    failure_words = "GET /api/v1/users on Okta"

    def __init__(self, root: Path, pki):
        self.clock = FakeClock()            # the fake's clock; the connector keeps real time
        self.okta = FakeOkta(clock=self.clock).start()
        self.ids = {p.key: self.okta.add_user(
            p.email, p.given, p.family, status="ACTIVE" if p.active else "DEPROVISIONED",
            title=p.title, department=p.department) for p in PEOPLE}
        self.groups = {t.key: self.okta.add_group(t.name, [self.ids[k] for k in
                                                           sorted(team_people(t.key))])
                       for t in TEAMS}
        self.okta.add_group("Everyone", list(self.ids.values()), type="BUILT_IN")
        self.clock.advance(3600)            # the seed is an hour old when the agent starts

    def settings(self) -> dict:
        return {"org_url": self.okta.url, "token": self.okta.api_token, "timeout": 5}

    def mark(self) -> int:
        return len(self.okta.requests)

    def _user_lists(self, since: int):
        return [r for r in self.okta.requests[since:] if r.path == "/api/v1/users"]

    def listed_everything(self, since: int) -> bool:
        return any("filter" not in r.query for r in self._user_lists(since))

    def asked_for_changes(self, since: int) -> bool:
        return any(r.query.get("filter", "").startswith('lastUpdated gt "')
                   for r in self._user_lists(since))

    def _later(self) -> None:
        self.clock.advance(120)             # past the cursor's one-minute overlap

    def retitle(self, key, title):
        self._later()
        self.okta.update_user(self.ids[key], title=title)

    def leave(self, team, key):
        self._later()
        self.okta.remove_member(self.groups[team], self.ids[key])

    def disable(self, key):
        self._later()
        self.okta.set_status(self.ids[key], "DEPROVISIONED")

    def delete(self, key):
        self._later()
        self.okta.delete_user(self.ids[key])

    def break_users_page_2(self, spy):
        self.okta.page_cap = 2
        self.okta.fail("/api/v1/users", page=2, action="drop")
        fake_time = FakeTime()          # the retries' backoff waits on a fake clock
        spy.kwargs.update(clock=fake_time.clock, sleep=fake_time.sleep)

    def mend(self):
        self.okta.faults.clear()

    def invalidate_cursor(self, setup):
        # a cursor this version cannot read (e.g. written by another version)
        with State.open(setup.state_path, lock=False) as state:
            state.meta.set(Meta.SOURCE_CURSOR, "okta0;since=yesterday")

    def stop(self):
        self.okta.stop()


def oid(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


ENTRA_CLIENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
ENTRA_SECRET = "s3cr3t~value.that-is-long"


class Entra(Backend):
    kind, source_cls = "entra", EntraSource
    check_counts = {"users": 6, "groups": 5, "disabled users": 1}
    failure_words = "Graph GET /v1.0/users kept failing"

    def __init__(self, root: Path, pki):
        self.pki = pki
        self.fake = FakeEntra()
        self.fake.add_app(ENTRA_CLIENT, secret=ENTRA_SECRET)
        for p in PEOPLE:
            self.fake.add_user(oid(p.key), mail=p.email, userPrincipalName=f"{p.key}@contoso.test",
                               givenName=p.given, surname=p.family, displayName=p.display,
                               jobTitle=p.title, department=p.department, accountEnabled=p.active)
        for t in TEAMS:
            self.fake.add_group(oid("g-" + t.key), displayName=t.name)
        for t in TEAMS:
            for member in [oid(k) for k in t.people] + [oid("g-" + k) for k in t.teams]:
                self.fake.add_member(oid("g-" + t.key), member)
        self.server = FakeEntraServer(self.fake, pki).start()
        (root / "entra.secret").write_text(ENTRA_SECRET)

    def settings(self) -> dict:
        return {"tenant_id": self.fake.tenant_id, "client_id": ENTRA_CLIENT,
                "client_secret": {"file": "entra.secret"}, "authority": self.server.url,
                "graph_url": self.server.url, "ca_file": self.pki.ca_file, "timeout": 5}

    def mark(self) -> int:
        return len(self.fake.requests)

    def listed_everything(self, since: int) -> bool:
        return any(p == "/v1.0/users" for _, p, _ in self.fake.requests[since:])

    def asked_for_changes(self, since: int) -> bool:
        return any(p == "/v1.0/users/delta" and q.get("$deltatoken") not in (None, "latest")
                   for _, p, q in self.fake.requests[since:])

    def retitle(self, key, title):
        self.fake.update_user(oid(key), jobTitle=title)

    def leave(self, team, key):
        self.fake.remove_member(oid("g-" + team), oid(key))

    def disable(self, key):
        self.fake.update_user(oid(key), accountEnabled=False)

    def delete(self, key):
        self.fake.delete_user(oid(key), hard=True)

    def break_users_page_2(self, spy):
        self.fake.page_cap = 2
        self.fake.inject("/v1.0/users", drop=True, times=float("inf"), later_pages_only=True)
        fake_time = FakeTime()          # the retries' backoff waits on a fake clock
        spy.kwargs.update(clock=fake_time.clock, sleep=fake_time.sleep)

    def mend(self):
        self.fake.rules.clear()

    def invalidate_cursor(self, setup):
        self.fake.expire_delta_tokens("410")      # 410 Gone, resyncRequired

    def stop(self):
        self.server.stop()


BACKENDS = {"ldap": Ldap, "ad": Ad, "okta": Okta, "entra": Entra}


# ---------------------------------------------------------------------------------------------
# The engine side: a spy on the source class, a config file, and views of FakeSplit


class SourceSpy:
    """Wraps a source class: records which reads the engine makes, and sets ``adjust``
    attributes on every instance it builds (test seams such as ``on_page``) and passes it
    ``kwargs`` (the clock and sleep seam)."""

    def __init__(self, monkeypatch, cls: type):
        self.calls: list[str] = []
        self.adjust: dict[str, object] = {}
        self.kwargs: dict[str, object] = {}     # constructor arguments, e.g. clock and sleep
        init, read, read_changes = cls.__init__, cls.read, cls.read_changes
        spy = self

        @functools.wraps(init)       # keeps the signature: the engine inspects it
        def spied_init(source, *args, **kwargs):
            init(source, *args, **{**kwargs, **spy.kwargs})
            for name, value in spy.adjust.items():
                setattr(source, name, value)

        def spied_read(source):
            spy.calls.append("read")
            return read(source)

        def spied_read_changes(source, cursor, known):
            spy.calls.append("read_changes")
            return read_changes(source, cursor, known)

        monkeypatch.setattr(cls, "__init__", spied_init)
        monkeypatch.setattr(cls, "read", spied_read)
        monkeypatch.setattr(cls, "read_changes", spied_read_changes)


class Setup:
    """tmp_path with config.toml ([source] from the backend, [target] at FakeSplit, secrets
    in files), the spy, and one-call cycles that reset the logs first."""

    def __init__(self, root: Path, split, backend: Backend, spy: SourceSpy):
        self.root, self.split, self.backend, self.spy = root, split, backend, spy
        self.config = root / "config.toml"
        self.state_path = root / "state" / "agent.db"
        (root / "split.token").write_text(TOKEN + "\n")
        self.full_read_every = "1h"
        self.source_extra: dict = {}        # more [source] keys, e.g. a changed filter
        self.write_config()

    def write_config(self) -> None:
        source = {"type": self.backend.kind, "full_read_every": self.full_read_every,
                  **self.backend.settings(), **self.source_extra}
        target = {"url": self.split.base_url, "token": {"file": "split.token"},
                  "rate_limit": 1000.0, "concurrency": 4, "timeout": 5, "max_attempts": 4}
        lines = ['[state]', 'path = "state/agent.db"', "", "[source]"]
        lines += [f"{k} = {toml(v)}" for k, v in source.items()]
        lines += ["", "[target]"] + [f"{k} = {toml(v)}" for k, v in target.items()]
        lines += ["", "[sync]", 'admin_group = "Split_Administrators"']   # the admins team
        self.config.write_text("\n".join(lines) + "\n")

    def agent(self):
        return build_agent(load(self.config))

    def sync(self):
        """One cycle; afterwards ``spy.calls`` and ``split.requests`` hold only its own."""
        self.spy.calls.clear()
        self.split.reset_log()
        self.read_mark = self.backend.mark()
        return self.agent().sync()

    def took_change_path(self) -> bool:
        return (self.spy.calls == ["read_changes"]
                and self.backend.asked_for_changes(self.read_mark)
                and not self.backend.listed_everything(self.read_mark))

    def took_full_read(self) -> bool:
        return "read" in self.spy.calls and self.backend.listed_everything(self.read_mark)

    def state(self) -> State:
        return State.open(self.state_path, lock=False)

    def age_last_full_read(self) -> None:
        with self.state() as state:
            state.meta.set(Meta.LAST_FULL_READ, LONG_AGO)


def pushed_users(split) -> dict[str, bool]:
    return {u["userName"]: u["active"] for u in split.users.values()}


def pushed_groups(split) -> dict[str, set[str]]:
    names = {sid: u["userName"] for sid, u in split.users.items()}
    return {g["displayName"]: {names[m["value"]] for m in g.get("members", [])}
            for g in split.groups.values()}


def writes(split) -> list[tuple[str, str]]:
    """Every write as (method, "user <userName>" | "group <name>" | path), sorted."""
    users = {sid: u["userName"] for sid, u in split.users.items()}
    groups = {sid: g["displayName"] for sid, g in split.groups.items()}
    out = []
    for r in split.writes():
        _, kind, *rest = r.path.split("/")
        sid = rest[0] if rest else ""
        name = (f"user {users.get(sid, sid)}" if kind == "Users" and sid
                else f"group {groups.get(sid, sid)}" if kind == "Groups" and sid else r.path)
        out.append((r.method, name))
    return sorted(out)


def deactivations(split) -> list[str]:
    users = {sid: u["userName"] for sid, u in split.users.items()}
    return sorted(users[r.path.split("/")[2]] for r in split.writes()
                  if r.method == "PATCH" and r.path.startswith("/Users/")
                  and any(_switches_off(op) for op in r.body["Operations"]))


def _switches_off(op: dict) -> bool:
    """``active`` set to false, in any dialect's spelling (with a path, or Okta's no-path)."""
    if str(op.get("op", "")).lower() != "replace":
        return False
    return (op.get("path") == "active" and op.get("value") is False) or \
        (op.get("path") is None and op.get("value") == {"active": False})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=sorted(BACKENDS))
def setup(request, tmp_path, fake_split, monkeypatch, pki):
    if request.param == "ldap" and not slapd_server.available():
        pytest.skip("slapd / ldap-utils not installed")
    cls = BACKENDS[request.param]
    backend = cls(tmp_path, pki, *(request.getfixturevalue(name) for name in cls.fixtures))
    try:
        backend.install(monkeypatch)
        yield Setup(tmp_path, fake_split, backend, SourceSpy(monkeypatch, backend.source_cls))
    finally:
        backend.stop()


@pytest.fixture
def synced(setup):
    """A setup after a successful first sync (a full read; the view and cursor stored)."""
    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    assert setup.spy.calls == ["read"]
    return setup


# ---------------------------------------------------------------------------------------------
# 1. First sync, check, and a quiet second sync


def test_first_sync_pushes_the_directory_and_a_second_sync_writes_nothing(setup):
    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    assert setup.spy.calls == ["read"] and setup.took_full_read()
    assert pushed_users(setup.split) == PUSHED_USERS          # carol (disabled) not created
    assert pushed_groups(setup.split) == PUSHED_GROUPS        # nesting flattened, cycles too
    assert not result.report.failed

    again = setup.sync()
    assert again.outcome is Outcome.OK, again.message
    assert again.plan.is_empty
    assert setup.split.writes() == []
    assert setup.took_change_path()                           # and it was a change read


def test_check_reports_source_and_target_counts(synced):
    synced.split.reset_log()
    lines = {what: (ok, detail) for what, ok, detail in synced.agent().check()}
    ok, detail = lines[f"source ({synced.backend.kind})"]
    assert ok, detail
    for name, count in synced.backend.check_counts.items():
        assert f"{name}: {count}" in detail.split(", "), detail
    assert lines["target"] == (True, f"users: {len(PUSHED_USERS)}, groups: {len(PUSHED_GROUPS)}")
    ok, detail = lines["state"]
    assert ok and f"users: {len(PUSHED_USERS)}" in detail
    assert all(ok for ok, _ in lines.values())
    assert synced.split.writes() == []                        # check is read-only


# ---------------------------------------------------------------------------------------------
# 2. The incremental path through the engine


def test_a_change_read_sends_one_user_patch_and_one_membership_patch(synced):
    synced.backend.retitle("bob", "Lead Designer")
    synced.backend.leave("eng", "alice")
    result = synced.sync()
    assert result.outcome is Outcome.OK, result.message
    assert synced.took_change_path()
    assert writes(synced.split) == [("PATCH", "group Engineering"),
                                    ("PATCH", f"user {EMAIL['bob']}")]
    bob = next(u for u in synced.split.users.values() if u["userName"] == EMAIL["bob"])
    assert bob["title"] == "Lead Designer"
    assert pushed_groups(synced.split)["Engineering"] == {EMAIL["bob"], EMAIL["dave"]}
    assert pushed_groups(synced.split)["Split_Administrators"] == {EMAIL["alice"]}


def test_a_user_disabled_in_the_source_is_deactivated_by_the_next_change_read(synced):
    synced.backend.retitle("bob", "Lead Designer")
    assert synced.sync().outcome is Outcome.OK                 # the view moves on once

    synced.backend.disable("dave")
    result = synced.sync()
    assert result.outcome is Outcome.OK, result.message
    assert synced.took_change_path()
    assert deactivations(synced.split) == [EMAIL["dave"]]
    assert pushed_users(synced.split) == {**PUSHED_USERS, EMAIL["dave"]: False}
    groups = pushed_groups(synced.split)
    assert EMAIL["dave"] not in groups["Engineering"] and groups["Platform"] == set()
    assert not [r for r in synced.split.requests if r.method == "DELETE"]


# ---------------------------------------------------------------------------------------------
# 3. A read that breaks half-way writes nothing


def test_a_failure_in_the_middle_of_a_paged_read_writes_nothing(synced):
    synced.backend.retitle("bob", "Lead Designer")        # a complete read would PATCH bob
    synced.age_last_full_read()                           # the next read is a full, paged one
    with synced.state() as state:
        before = (state.snapshot(), state.source_view(), state.meta.last_full_read())
    synced.backend.break_users_page_2(synced.spy)

    result = synced.sync()
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith("reading the source failed: ")
    assert "\n" not in result.message and "Traceback" not in result.message
    assert re.search(synced.backend.failure_words, result.message), result.message
    assert synced.spy.calls == ["read"]
    assert synced.split.requests == []                    # not even a GET
    with synced.state() as state:
        assert (state.snapshot(), state.source_view(), state.meta.last_full_read()) == before
        assert state.runs(1)[0].outcome == "error"

    # once the server is back, the next cycle reads in full and converges
    synced.backend.mend()
    synced.spy.adjust.clear()
    result = synced.sync()
    assert result.outcome is Outcome.OK, result.message
    assert synced.took_full_read()
    assert writes(synced.split) == [("PATCH", f"user {EMAIL['bob']}")]


# ---------------------------------------------------------------------------------------------
# 4. The periodic full read catches what a change feed cannot


def test_full_read_every_forces_a_full_read_that_deactivates_a_removed_user(setup):
    setup.full_read_every = "1s"
    setup.write_config()
    assert setup.sync().outcome is Outcome.OK
    setup.backend.delete("dave")
    time.sleep(1.1)                                      # full_read_every has elapsed

    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    assert setup.spy.calls == ["read"] and setup.took_full_read()
    assert deactivations(setup.split) == [EMAIL["dave"]]
    assert pushed_users(setup.split)[EMAIL["dave"]] is False
    assert EMAIL["dave"] not in pushed_groups(setup.split)["Engineering"]


@pytest.mark.parametrize("setup", ["ad"], indirect=True)
def test_an_ad_account_deleted_is_deactivated_by_the_next_change_read(synced):
    synced.backend.delete("dave")
    result = synced.sync()
    assert result.outcome is Outcome.OK, result.message
    assert synced.took_change_path()                     # no full read was needed
    assert deactivations(synced.split) == [EMAIL["dave"]]
    assert pushed_users(synced.split)[EMAIL["dave"]] is False
    assert EMAIL["dave"] not in pushed_groups(synced.split)["Engineering"]


# ---------------------------------------------------------------------------------------------
# 5. A cursor the source no longer honours means one full read, then change reads again


def test_an_invalid_cursor_falls_back_to_one_full_read(synced):
    with synced.state() as state:
        old_cursor = state.meta.source_cursor()
    synced.backend.retitle("bob", "Lead Designer")
    synced.backend.invalidate_cursor(synced)

    result = synced.sync()
    assert result.outcome is Outcome.OK, result.message
    assert synced.spy.calls == ["read_changes", "read"]
    assert synced.backend.listed_everything(synced.read_mark)
    assert writes(synced.split) == [("PATCH", f"user {EMAIL['bob']}")]
    with synced.state() as state:
        assert state.meta.source_cursor() not in (None, old_cursor)

    again = synced.sync()                                # and the feed resumes from there
    assert again.outcome is Outcome.OK, again.message
    assert synced.took_change_path()
    assert synced.split.writes() == []


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_check_prints_source_counts(setup, capsys):
    code = main(["--config", str(setup.config), "check"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    line = next(l for l in out.splitlines() if f"source ({setup.backend.kind})" in l)
    assert line.startswith("ok")
    for name, count in setup.backend.check_counts.items():
        assert f"{name}: {count}" in line, line
    assert "target: users: 0, groups: 0" in out
    assert TOKEN not in out + err


def test_cli_plan_json_sends_and_stores_nothing(setup, capsys):
    code = main(["--config", str(setup.config), "plan", "--output", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = json.loads(out)
    assert plan["summary"]["create_user"] == len(PUSHED_USERS)
    assert plan["summary"]["create_group"] == len(PUSHED_GROUPS)
    assert plan["summary"]["add_members"] == sum(len(m) for m in PUSHED_GROUPS.values())
    created = {c["key"] for c in plan["changes"] if c["op"] == "create_user"}
    assert created == set(PUSHED_USERS)
    assert setup.split.requests == []
    assert not setup.state_path.exists()



# ---------------------------------------------------------------------------------------------
# A config edit invalidates the stored view


@pytest.mark.parametrize("setup", ["ldap"], indirect=True)
def test_narrowing_the_ldap_user_filter_deactivates_at_the_next_sync(setup):
    assert setup.sync().outcome is Outcome.OK
    setup.source_extra = {"user_filter": "(&(objectClass=inetOrgPerson)(!(uid=dave)))"}
    setup.write_config()
    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    assert pushed_users(setup.split)[EMAIL["dave"]] is False     # dave left the scope
