"""LDAP source against a real OpenLDAP slapd (tests/servers/slapd.py), plus an AD stand-in.

Most tests run against one slapd per module, bulk-loaded offline with slapadd (fast) with
entries dated 2020 so that change reads see only what a test touches. Tests that change or
kill the server get their own slapd. The server's ``sizelimit`` is 50 for plain searches
(paged searches are unlimited, as with AD's MaxPageSize), and it also listens on ldaps://
with a CA generated here.

Active Directory is tested against a real Samba AD DC in tests/test_ldap_ad.py. What Samba
cannot show is exercised here against :class:`FakeAd`, ldap3's MOCK_SYNC server with a thin
layer that emulates what the mock lacks: rootDSE (highestCommittedUSN, dsServiceName,
namingContexts), the Deleted Objects container, Windows' own range replies (values of
``member`` in windows of MaxValRange = 4 whatever is asked, as Windows caps at 1500), and the
two extensible matching rules (bit-and 803, in-chain 1941), rewritten into equivalent plain
filters from the mock's own data; and against :class:`ScriptedServer`, which answers each
search from a script, for servers that never end a paged search or a range retrieval.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import ldap3
import pytest
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from agent.config import ConfigError, load
from connectors.base import (SettingError, ConnectorError, CursorExpired, Directory, Secret,
                             SourceAuthError, UserRecord,
                             SourceError)
from connectors.ldap import (AD_DISABLED_FILTER, LdapSource, decode_id, decode_entry,
                             normalise_dn, verifying_context)
from connectors.ldap.changes import SHOW_DELETED
from tests.servers.slapd import (BASE_LDIF, READER_DN, READER_PASSWORD, SUFFIX, Slapd,
                                 available, free_port, ldif_entry, make_ca)
from tests.source_contract import PEOPLE, TEAMS, SourceContract, people_by_key

pytestmark = pytest.mark.skipif(not available(), reason="slapd / ldap-utils not installed")

PEOPLE_BASE = f"ou=people,{SUFFIX}"
GROUPS_BASE = f"ou=groups,{SUFFIX}"
OLD = "20200101000000Z"          # seeded entries look old: change reads must not see them


def old(i: int) -> str:
    """Seed timestamps a minute apart, as in a directory edited over time (a bulk load in
    one second would put every entry inside the change read's overlap window)."""
    return (dt.datetime(2020, 1, 1) + dt.timedelta(minutes=i)).strftime("%Y%m%d%H%M%SZ")
WEIRD_CN = 'Weird ( ) * \\ , + " < > ; = Ünïcødé'
BULK_USERS, BULK_GROUPS, BIG_GROUP = 120, 60, 3000
LIMITED_DN = f"cn=limited,{SUFFIX}"


def person_dn(key: str, base: str = PEOPLE_BASE) -> str:
    return f"uid={key},{base}"


def team_dn(team) -> str:
    return f"cn={escape_rdn(team.name)},{GROUPS_BASE}"


def people_ldif(base: str = PEOPLE_BASE, stamped: bool = True) -> str:
    out = []
    for i, p in enumerate(PEOPLE):
        attrs = {"objectClass": "inetOrgPerson", "uid": p.key, "cn": p.display, "sn": p.family,
                 "givenName": p.given, "displayName": p.display, "mail": p.email,
                 "title": p.title, "departmentNumber": p.department}
        if stamped:
            attrs.update(modifyTimestamp=old(i), createTimestamp=old(i))
        if not p.active:
            attrs["employeeType"] = "disabled"
        out.append(ldif_entry(person_dn(p.key, base), attrs))
    return "".join(out)


def teams_ldif(stamped: bool = True) -> str:
    by_key = {t.key: t for t in TEAMS}
    out = []
    for i, t in enumerate(TEAMS, start=len(PEOPLE)):
        attrs = {"objectClass": "groupOfNames", "cn": t.name,
                 "member": [person_dn(k) for k in t.people] + [team_dn(by_key[k])
                                                               for k in t.teams]}
        if stamped:
            attrs.update(modifyTimestamp=old(i), createTimestamp=old(i))
        out.append(ldif_entry(team_dn(t), attrs))
    return "".join(out)


def extra_ldif() -> str:
    """Bulk users and groups beyond the size limit, a 3000-member group, special characters."""
    out = [ldif_entry(f"ou={ou},{SUFFIX}", {"objectClass": "organizationalUnit", "ou": ou})
           for ou in ("bulk", "bulkgroups", "big", "weird")]
    for i in range(BULK_USERS):
        out.append(ldif_entry(f"uid=bulk{i:03d},ou=bulk,{SUFFIX}", {
            "objectClass": "inetOrgPerson", "uid": f"bulk{i:03d}", "cn": f"Bulk {i}",
            "sn": "Bulk", "mail": f"bulk{i:03d}@example.org"}))
    for g in range(BULK_GROUPS):
        out.append(ldif_entry(f"cn=bulkgroup{g:02d},ou=bulkgroups,{SUFFIX}", {
            "objectClass": "groupOfNames", "cn": f"bulkgroup{g:02d}",
            "member": f"uid=bulk{g:03d},ou=bulk,{SUFFIX}"}))
    for i in range(BIG_GROUP):
        out.append(ldif_entry(f"uid=big{i:04d},ou=big,{SUFFIX}", {
            "objectClass": "inetOrgPerson", "uid": f"big{i:04d}", "cn": "Big", "sn": "Big",
            "mail": f"big{i:04d}@example.org"}))
    out.append(ldif_entry(f"cn=everyone,ou=big,{SUFFIX}", {
        "objectClass": "groupOfNames", "cn": "everyone",
        "member": [f"uid=big{i:04d},ou=big,{SUFFIX}" for i in range(BIG_GROUP)]}))
    weird_user = f"cn={escape_rdn(WEIRD_CN)},ou=weird,{SUFFIX}"
    out.append(ldif_entry(weird_user, {
        "objectClass": "inetOrgPerson", "cn": WEIRD_CN, "sn": "Ünal*", "givenName": "Zoë (x)",
        "mail": "weird@example.org"}))
    out.append(ldif_entry(f"cn={escape_rdn('Ops (EU), *all*')},ou=weird,{SUFFIX}", {
        "objectClass": "groupOfNames", "cn": "Ops (EU), *all*",
        # the member DN spelled differently from the entry's own DN: hex escapes, upper case
        "member": "CN=" + "".join(f"\\{b:02X}" for b in WEIRD_CN.encode()) + ",OU=Weird,"
                  + SUFFIX.upper()}))
    return "".join(out)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    slapd = Slapd(tmp_path_factory.mktemp("slapd"), tls=True, size_limit=50,
                  database_config=f'limits dn.exact="{LIMITED_DN}" size.soft=50 size.hard=50 '
                                  f'size.prtotal=60')
    slapd.slapadd(BASE_LDIF + "\n" + people_ldif() + teams_ldif() + extra_ldif()
                  + ldif_entry(LIMITED_DN, {"objectClass": ["simpleSecurityObject",
                                                            "organizationalRole"],
                                            "cn": "limited", "userPassword": "limited"}))
    slapd.start()
    yield slapd
    slapd.stop()


def make_source(url, user_base=PEOPLE_BASE, group_base=GROUPS_BASE, **kw) -> LdapSource:
    kw.setdefault("disabled_filter", "(employeeType=disabled)")
    hooks = {k: kw.pop(k) for k in ("on_page", "connection_factory", "attributes") if k in kw}
    settings = LdapSource.Settings(url=(url,) if isinstance(url, str) else tuple(url),
                                   user_base=user_base, group_base=group_base,
                                   bind_dn=kw.pop("bind_dn", READER_DN),
                                   password=kw.pop("password", Secret(READER_PASSWORD)), **kw)
    return LdapSource(settings, **hooks)


def fresh_server(tmp_path, online: bool = False) -> Slapd:
    """A slapd of its own holding PEOPLE and TEAMS: loaded offline with old timestamps, or
    (``online``) added through the server so that overlays such as memberof see them."""
    slapd = Slapd(tmp_path / "slapd")
    if online:
        slapd.start()
        slapd.add_ldif(people_ldif(stamped=False) + teams_ldif(stamped=False))
        return slapd
    slapd.slapadd(BASE_LDIF + "\n" + people_ldif() + teams_ldif())
    return slapd.start()


# ---------------------------------------------------------------------------------------------
# The shared contract


class TestContract(SourceContract):
    source_cls = LdapSource

    @pytest.fixture
    def seeded_source(self, server):
        return make_source(server.url)

    @pytest.fixture
    def failing_source(self, tmp_path):
        slapd = Slapd(tmp_path / "dying")
        slapd.slapadd(BASE_LDIF + "\n" + people_ldif() + teams_ldif() + extra_ldif())
        slapd.start()

        def kill_after_first_page(what, count):
            if what == "users":
                slapd.kill()

        yield make_source(slapd.url, user_base=f"ou=bulk,{SUFFIX}", page_size=25,
                          on_page=kill_after_first_page)
        slapd.stop()


# ---------------------------------------------------------------------------------------------
# Reading


def test_paged_read_goes_beyond_the_server_size_limit(server):
    plain = ldap3.Connection(ldap3.Server(server.url), READER_DN, READER_PASSWORD, auto_bind=True)
    plain.search(f"ou=bulk,{SUFFIX}", "(objectClass=inetOrgPerson)", attributes=["1.1"])
    assert plain.result["description"] == "sizeLimitExceeded" and len(plain.response) == 50

    pages = []
    source = make_source(server.url, user_base=f"ou=bulk,{SUFFIX}",
                         group_base=f"ou=bulkgroups,{SUFFIX}", page_size=20,
                         on_page=lambda what, n: pages.append((what, n)))
    directory = source.read()
    assert len(directory.users) == BULK_USERS and len(directory.groups) == BULK_GROUPS
    assert ("users", 20) in pages and ("users", BULK_USERS) in pages
    # a page larger than the size limit is fine too (the limit binds plain searches only)
    assert len(make_source(server.url, user_base=f"ou=bulk,{SUFFIX}").read().users) == BULK_USERS


def test_a_read_cut_short_by_a_server_limit_is_an_error_not_a_short_read(server):
    # cn=limited may page through 60 entries at most: ldap3 reports sizeLimitExceeded as a
    # normal end of the search, the connector must not
    source = make_source(server.url, user_base=f"ou=bulk,{SUFFIX}", page_size=20,
                         bind_dn=LIMITED_DN, password=Secret("limited"))
    with pytest.raises(SourceError, match="size limit"):
        source.read()


def test_groups_carry_direct_member_ids_including_nested_and_cyclic_groups(server):
    directory = make_source(server.url).read()
    by_dn = {normalise_dn(str(r.attributes["dn"])): r.id
             for r in (*directory.users.values(), *directory.groups.values())}
    groups = {g.attributes["cn"]: g for g in directory.groups.values()}
    eng, platform = groups["Engineering"], groups["Platform"]
    assert eng.members == {by_dn[normalise_dn(person_dn("alice"))],
                           by_dn[normalise_dn(person_dn("bob"))], platform.id}
    assert groups["Loop A"].id in groups["Loop B"].members
    assert groups["Loop B"].id in groups["Loop A"].members
    assert all(isinstance(g.attributes["dn"], str) for g in directory.groups.values())


def test_a_group_of_three_thousand_members(server):
    directory = make_source(server.url, user_base=f"ou=big,{SUFFIX}",
                            group_base=f"ou=big,{SUFFIX}").read()
    (group,) = directory.groups.values()
    assert len(directory.users) == BIG_GROUP
    assert group.members == set(directory.users)


def test_members_outside_the_user_base_are_left_out(server):
    directory = make_source(server.url, user_base=f"ou=bulk,{SUFFIX}").read()
    groups = {g.attributes["cn"]: g for g in directory.groups.values()}
    assert groups["Engineering"].members == {groups["Platform"].id}   # users are elsewhere


def test_special_characters_and_non_ascii_in_names_and_dns(server):
    directory = make_source(server.url, user_base=f"ou=weird,{SUFFIX}",
                            group_base=f"ou=weird,{SUFFIX}").read()
    (user,) = directory.users.values()
    (group,) = directory.groups.values()
    assert user.attributes["cn"] == WEIRD_CN and user.attributes["givenName"] == "Zoë (x)"
    assert group.attributes["cn"] == "Ops (EU), *all*"
    assert group.members == {user.id}          # member DN spelt with hex escapes, upper case


def test_normalised_dns_compare_by_value():
    same = ["cn=O\\2CBrien\\+x,ou=People,dc=Example,dc=Test",
            "CN=o\\,brien\\+X, OU=people,DC=example,DC=test",
            'cn="O,Brien+x",ou=people;dc=example,dc=test']
    assert len({normalise_dn(dn) for dn in same}) == 1
    assert normalise_dn("cn=a+sn=b,dc=x") == normalise_dn("sn=B+cn=A,dc=x")
    assert normalise_dn("cn=Zoë,dc=x") == normalise_dn("cn=Zo\\C3\\AB,dc=x")
    assert normalise_dn("cn=a\\,b,dc=x") != normalise_dn("cn=a,cn=b,dc=x")
    # the short path for plain DNs agrees with the full parse
    for plain, escaped in [(" CN = Zoë Ünal , DC=X ", "cn=Zo\\C3\\AB \\C3\\9Cnal,dc=x"),
                           ("cn=Straße,dc=x", "CN=Stra\\C3\\9Fe,DC=x"),
                           ("uid=User 7,ou=People", "uid=user\\207,ou=people")]:
        assert normalise_dn(plain) == normalise_dn(escaped)


def test_check_reports_users_groups_and_disabled(server):
    report = make_source(server.url).check()
    assert report["users"] == len(PEOPLE) and report["groups"] == len(TEAMS)
    assert report["disabled"] == 1 and report["server"] == server.url


def test_extra_attributes_from_the_mapping_are_read(server):
    directory = make_source(server.url, attributes=("uid",)).read()
    assert {u.attributes["uid"] for u in directory.users.values()} == set(people_by_key())


# ---------------------------------------------------------------------------------------------
# Identity and changes


def test_rename_and_move_keep_the_id(tmp_path):
    slapd = fresh_server(tmp_path, online=True)
    try:
        source = make_source(slapd.url, user_base=SUFFIX)
        before = source.read()
        alice_id = next(u.id for u in before.users.values() if u.attributes.get("mail") == "alice@example.org")
        conn = slapd.admin_connection()
        conn.add(f"ou=moved,{SUFFIX}", "organizationalUnit", {"ou": "moved"})
        conn.modify_dn(person_dn("alice"), "uid=alice2", new_superior=f"ou=moved,{SUFFIX}")
        after = source.read()
        assert after.users[alice_id].attributes["dn"] == f"uid=alice2,ou=moved,{SUFFIX}"
        assert set(after.users) == set(before.users)
        eng = next(g for g in after.groups.values() if g.attributes["cn"] == "Engineering")
        assert alice_id in eng.members        # memberof-refint rewrote the member DN
    finally:
        slapd.stop()


def test_change_read_sees_a_changed_user_and_a_membership_change_only(tmp_path):
    slapd = fresh_server(tmp_path)
    try:
        source = make_source(slapd.url)
        full = source.read()
        assert json.loads(full.cursor)["since"] < "2021"
        # only the newest entry falls in the overlap window the cursor keeps
        unchanged = source.read_changes(full.cursor, full)
        assert len(unchanged) <= 1

        conn = slapd.admin_connection()
        conn.modify(person_dn("bob"), {"title": [(ldap3.MODIFY_REPLACE, ["Principal Designer"])]})
        conn.modify(team_dn(TEAMS[1]), {"member": [(ldap3.MODIFY_ADD, [person_dn("zoe")])]})
        # the memberof trap: zoe's own timestamp did not move
        conn.search(person_dn("zoe"), "(objectClass=*)", ldap3.BASE, attributes=["modifyTimestamp"])
        assert conn.response[0]["raw_attributes"]["modifyTimestamp"][0].decode() < "2021"

        changes = source.read_changes(full.cursor, full)
        overlap = set(unchanged.users) | set(unchanged.groups)
        assert [u.attributes["mail"] for uid, u in changes.users.items()
                if uid not in overlap] == ["bob@example.org"]
        assert [g.attributes["cn"] for gid, g in changes.groups.items()
                if gid not in overlap] == ["Platform"]
        assert changes.users[next(iter(changes.users))].attributes["title"] == "Principal Designer"

        merged = changes.apply_to(full)
        again = source.read()
        assert merged.users == again.users and merged.groups == again.groups
        # the next change read starts after these changes and finds nothing new
        assert len(source.read_changes(changes.cursor, merged)) <= 2
    finally:
        slapd.stop()


def test_a_change_read_reads_in_full_when_too_many_members_are_new_to_it(tmp_path,
                                                                         monkeypatch):
    """A view that knows nobody's DN (as after an OU of everyone renamed): each member of a
    changed group is looked up, and past the limit the whole directory is read instead.
    The OU rename itself is tested on Samba (tests/test_ldap_ad.py): slapd's memberof overlay
    touches each member a group gains, so there the change read sees them anyway."""
    from connectors.ldap import source as module
    slapd = fresh_server(tmp_path)
    try:
        source = make_source(slapd.url)
        view = source.read()
        # a view that knows nobody's DN: every member of a changed group is new to it
        blind = Directory({uid: UserRecord(uid, {**u.attributes, "dn": "uid=x,o=elsewhere"},
                                           u.active) for uid, u in view.users.items()},
                          view.groups, view.cursor)
        conn = slapd.admin_connection()
        conn.modify(team_dn(TEAMS[0]), {"description": [(ldap3.MODIFY_REPLACE, ["changed"])]})
        monkeypatch.setattr(module, "MAX_MEMBER_LOOKUPS", 1)
        with pytest.raises(CursorExpired, match="reading in full"):
            source.read_changes(view.cursor, blind)
        monkeypatch.setattr(module, "MAX_MEMBER_LOOKUPS", 1000)
        changes = source.read_changes(view.cursor, blind)
        merged = changes.apply_to(blind)
        assert merged.groups == source.read().groups
    finally:
        slapd.stop()


def test_scope_group_keeps_nested_members_and_follows_changes(tmp_path):
    slapd = fresh_server(tmp_path)
    try:
        source = make_source(slapd.url, scope_group=team_dn(TEAMS[0]))   # Engineering
        full = source.read()
        mails = {u.attributes["mail"] for u in full.users.values()}
        assert mails == {"alice@example.org", "bob@example.org", "carol@example.org",
                         "dave@example.org"}
        conn = slapd.admin_connection()
        conn.modify(team_dn(TEAMS[1]), {"member": [(ldap3.MODIFY_ADD, [person_dn("zoe")])]})
        conn.modify(team_dn(TEAMS[0]), {"member": [(ldap3.MODIFY_DELETE, [person_dn("bob")])]})
        changes = source.read_changes(full.cursor, full)
        assert {u.attributes["mail"] for u in changes.users.values()} == {"zoe.unal@example.org"}
        bob = next(uid for uid, u in full.users.items() if u.attributes["mail"] == "bob@example.org")
        assert changes.removed_users == {bob}
        merged = changes.apply_to(full)
        assert set(merged.users) == set(source.read().users)
    finally:
        slapd.stop()


def test_a_scope_group_that_does_not_exist_is_an_error(server):
    with pytest.raises(SourceError, match="scope_group"):
        make_source(server.url, scope_group=f"cn=nope,{GROUPS_BASE}").read()


def test_unusable_cursors_expire(server):
    source = make_source(server.url)
    full = source.read()
    for cursor in ("", "not json", json.dumps({"v": 1, "flavor": "ad", "url": server.url}),
                   json.dumps({**json.loads(full.cursor), "url": "ldap://elsewhere:389"})):
        with pytest.raises(CursorExpired):
            source.read_changes(cursor, full)


# ---------------------------------------------------------------------------------------------
# Failures


def test_server_killed_in_the_middle_of_a_paged_read(tmp_path):
    slapd = Slapd(tmp_path / "slapd")
    slapd.slapadd(BASE_LDIF + "\n" + extra_ldif())
    slapd.start()
    pages = []

    def kill_on_second_page(what, count):
        if what == "users":
            pages.append(count)
            if len(pages) == 2:
                slapd.kill()

    source = make_source(slapd.url, user_base=f"ou=big,{SUFFIX}", group_base=f"ou=big,{SUFFIX}",
                         page_size=100, on_page=kill_on_second_page)
    try:
        with pytest.raises(SourceError, match="connection to .* was lost"):
            source.read()
        # the users' search asks for each page before handing out the last: the one asked
        # for before the kill may still arrive, the one after cannot
        assert pages in ([100, 200], [100, 200, 300])
    finally:
        slapd.stop()


def test_a_search_left_with_a_page_asked_for_ahead_leaves_the_session_usable(server):
    source = make_source(server.url, page_size=1)
    with source._session() as session:
        users = session.search("users", PEOPLE_BASE, source.user_filter,
                               source.user_attributes, projection=source._users)
        next(users)                        # the second page is asked for already
        users.close()                      # ... and taken off the wire here
        assert len(session.dns("users", PEOPLE_BASE, source.user_filter)) == len(PEOPLE)


def test_wrong_password_is_an_auth_error(server):
    with pytest.raises(SourceAuthError, match="rejected"):
        make_source(server.url, password=Secret("wrong")).read()


def test_missing_base_is_named(server):
    with pytest.raises(SourceError, match="ou=nowhere"):
        make_source(server.url, user_base=f"ou=nowhere,{SUFFIX}").read()


def test_failover_to_the_next_url(server):
    dead = f"ldap://127.0.0.1:{free_port()}"
    assert len(make_source([dead, server.url], timeout=3).read().users) == len(PEOPLE)
    with pytest.raises(SourceError) as info:
        make_source([dead, f"ldap://127.0.0.1:{free_port()}"], timeout=3).read()
    assert str(info.value).count("127.0.0.1") == 2


# ---------------------------------------------------------------------------------------------
# TLS


def test_ldaps_with_the_right_ca(server):
    assert len(make_source(server.ldaps_url, ca_file=server.ca_file).read().users) == len(PEOPLE)


def test_start_tls_with_the_right_ca(server):
    url = f"ldap://localhost:{server.port}"
    source = make_source(url, start_tls=True, ca_file=server.ca_file)
    assert len(source.read().users) == len(PEOPLE)


@pytest.mark.parametrize("start_tls", [False, True])
def test_a_wrong_ca_is_a_clear_error(server, tmp_path, start_tls):
    wrong = make_ca(tmp_path, "Other CA").cert_file
    url = f"ldap://localhost:{server.port}" if start_tls else server.ldaps_url
    with pytest.raises(SourceError, match="certificate of .*could not be verified.*ca_file"):
        make_source(url, start_tls=start_tls, ca_file=wrong, timeout=5).read()


def test_environment_ca_variables_do_not_leak_in(server, monkeypatch):
    # SSL_CERT_FILE naming the right CA must not make an unconfigured source trust it
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    monkeypatch.setenv("SSL_CERT_DIR", str(Path(server.ca_file).parent))
    with pytest.raises(SourceError, match="could not be verified"):
        make_source(server.ldaps_url, timeout=5).read()


def test_tls_context_always_verifies(tmp_path):
    ctx = verifying_context(make_ca(tmp_path).cert_file)
    assert ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"
    assert verifying_context(None).check_hostname


# (the key named, [source] keys as TOML values); each is wrong in exactly one way
BAD_SETTINGS = [
    ("url", {"url": "http://x"}),
    ("url", {"url": []}),
    ("url", {"url": "ldaps://x:port"}),
    ("start_tls", {"url": "ldaps://x", "start_tls": True}),
    ("flavor", {"url": "ldap://x", "flavor": "novell"}),
    ("in_chain", {"url": "ldap://x", "in_chain": True}),
    ("page_size", {"url": "ldap://x", "page_size": 0}),
    ("password", {"url": "ldap://x", "password": "p"}),
    ("timeout", {"url": "ldap://x", "timeout": 0}),
    ("ca_file", {"url": "ldaps://x", "ca_file": "/nonexistent/ca.pem"}),
    ("user_filter", {"url": "ldap://x", "user_filter": "(objectClass=person"}),
    ("disabled_filter", {"url": "ldap://x", "disabled_filter": "(a=b))"}),
    # a password over plain ldap:// beyond loopback: refused at load, not at the first bind
    ("url", {"url": ["ldaps://dc1.example.org", "ldap://dc2.example.org"],
             "bind_dn": "cn=svc,dc=x", "password": "p"}),
]


def toml_value(value) -> str:
    if isinstance(value, dict):                # a secret such as { env = "VAR" }
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)                   # JSON strings, lists and numbers are TOML


def ldap_config(tmp_path: Path, source: dict) -> Path:
    lines = ["[state]", 'path = "state.db"', "", "[source]", 'type = "ldap"',
             f"user_base = {json.dumps(PEOPLE_BASE)}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in source.items()]
    lines += ["", "[target]", 'url = "https://split.example.test/scim/v2"']
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings_of(source: dict) -> LdapSource.Settings:
    values = dict(source, user_base=PEOPLE_BASE)
    urls = values.pop("url")
    values["url"] = (urls,) if isinstance(urls, str) else tuple(urls)
    if "password" in values:
        values["password"] = Secret(values["password"])
    if "ca_file" in values:
        values["ca_file"] = Path(values["ca_file"])
    return LdapSource.Settings(**values)


@pytest.mark.parametrize("key, source", BAD_SETTINGS, ids=[f"{k}-{i}" for i, (k, _) in
                                                           enumerate(BAD_SETTINGS)])
def test_settings_are_validated(key, source, tmp_path):
    with pytest.raises(SettingError) as info:
        settings_of(source).validate()
    assert info.value.key == key
    # the loader runs the same checks and names the file and the key
    path = ldap_config(tmp_path, source)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: [source] {key}: ")


def test_checks_need_no_secret_value(tmp_path, monkeypatch):
    monkeypatch.delenv("LDAP_TEST_PASSWORD", raising=False)
    secret = {"env": "LDAP_TEST_PASSWORD"}
    # `status` loads without resolving source secrets: the cleartext rule still holds...
    cleartext = ldap_config(tmp_path, {"url": "ldap://ldap.example.org",
                                       "bind_dn": "cn=svc,dc=x", "password": secret})
    with pytest.raises(ConfigError, match=r"\[source\] url: refusing .* without TLS"):
        load(cleartext, resolve_source_secrets=False)
    # ...and a sound config loads with the password unresolved
    sound = ldap_config(tmp_path, {"url": "ldaps://ldap.example.org",
                                   "bind_dn": "cn=svc,dc=x", "password": secret})
    settings = load(sound, resolve_source_secrets=False).source.settings
    assert not settings.password.resolved


@pytest.mark.parametrize("source", [
    {"url": "ldap://127.0.0.1:3890", "bind_dn": "cn=svc,dc=x", "password": "p"},
    {"url": "ldap://localhost", "bind_dn": "cn=svc,dc=x", "password": "p"},
    {"url": "ldap://ldap.example.org", "start_tls": True, "bind_dn": "cn=svc,dc=x",
     "password": "p"},
    {"url": "ldap://ldap.example.org"},                          # anonymous: nothing to leak
    {"url": "ldaps://dc1.example.org", "flavor": "ad", "in_chain": True,
     "user_filter": "objectClass=user", "disabled_filter": AD_DISABLED_FILTER},
])
def test_sound_settings_load(source, tmp_path):
    settings_of(source).validate()
    assert load(ldap_config(tmp_path, source)).source.type == "ldap"


def test_entry_decoder_matches_ldap3_on_a_real_message():
    from ldap3.operation.search import search_result_entry_response_to_dict_fast
    from ldap3.utils.asn1 import decode_message_fast
    from connectors.ldap.decoding import lowered
    # searchResEntry id 7: dn "cn=a", attributes cn: [a], member: [x, y]
    def tlv(tag, body):
        return bytes([tag, len(body)]) + body
    attr = lambda n, vals: tlv(0x30, tlv(0x04, n) + tlv(0x31, b"".join(tlv(0x04, v) for v in vals)))
    message = tlv(0x30, tlv(0x02, b"\x07") + tlv(0x64, tlv(0x04, b"cn=a") + tlv(0x30, attr(b"cn", [b"a"]) + attr(b"member", [b"x", b"y"]))))
    mid, ours = decode_entry(message)
    theirs = search_result_entry_response_to_dict_fast(decode_message_fast(message)["payload"], None, None, False)
    assert mid == 7 and ours["dn"] == theirs["dn"]
    assert ours["raw_attributes"] == lowered(theirs["raw_attributes"])   # names lower-cased
    assert decode_entry(tlv(0x30, tlv(0x02, b"\x07") + tlv(0x65, b""))) is None


def test_entry_decoder_reads_long_lengths_and_drops_empty_attributes():
    from ldap3.protocol.rfc4511 import (LDAPMessage, MessageID, PartialAttribute,
                                        PartialAttributeList, ProtocolOp, SearchResultEntry, Vals)
    from pyasn1.codec.ber import encoder
    long_value = b"x" * 300                          # lengths of 128 and more: long form
    attributes = PartialAttributeList()
    for i, (name, values) in enumerate([("CN", [b"a"]), ("Member", [long_value] * 3),
                                        ("description", []), ("jpegPhoto", [long_value])]):
        vals = Vals()
        vals.setComponents(*values)
        attribute = PartialAttribute()
        attribute["type"], attribute["vals"] = name, vals
        attributes[i] = attribute
    entry = SearchResultEntry()
    entry["object"], entry["attributes"] = "cn=" + "y" * 200, attributes
    op = ProtocolOp()
    op["searchResEntry"] = entry
    message = LDAPMessage()
    message["messageID"], message["protocolOp"] = MessageID(300), op
    mid, ours = decode_entry(encoder.encode(message))
    assert mid == 300 and ours["dn"] == "cn=" + "y" * 200
    assert ours["raw_attributes"] == {"cn": [b"a"], "member": [long_value] * 3,
                                      "jpegphoto": [long_value]}


# ---------------------------------------------------------------------------------------------
# Active Directory, against ldap3's MOCK_SYNC with an emulation layer (see module docstring)


AD = "DC=corp,DC=example"
DSA_DN = f"CN=NTDS Settings,CN=DC1,CN=Servers,CN=Sites,CN=Configuration,{AD}"
SVC_DN = f"CN=svc-split,CN=Users,{AD}"
_EXT = re.compile(r"\(ExtensibleMatch:\s*matchingRule=(\S+)\s*type=(\S+)\s*matchValue=(.*?)\n"
                  r"\s*dnAttributes=\w+\s*\)", re.S)


class FakeAd:
    MAX_VAL_RANGE = 4

    def __init__(self):
        self.server = ldap3.Server("fake-ad", get_info=ldap3.NONE)
        self.usn = 100
        self.invocation = uuid.uuid4()
        self.admin = self.connection()
        self.add(SVC_DN, objectClass="user", userPassword="pw")
        self.add(DSA_DN, objectClass="nTDSDSA", invocationId=self.invocation.bytes_le)
        self.admin.bind()
        self.guids: dict[str, uuid.UUID] = {}

    def connection(self) -> ldap3.Connection:
        conn = ldap3.Connection(self.server, user=SVC_DN, password="pw",
                                client_strategy=ldap3.MOCK_SYNC, raise_exceptions=True,
                                check_names=False, return_empty_attributes=False,
                                auto_range=False)
        original = conn.strategy._execute_search
        conn.strategy._execute_search = lambda request: self._search(original, request)
        # the mock decodes only the paging control; the non-critical Show Deleted control
        # changes nothing here (the emulation has no tombstones), so it is dropped
        mock_search = conn.strategy.mock_search
        conn.strategy.mock_search = lambda request, controls: mock_search(
            request, [c for c in controls or () if c[0] != SHOW_DELETED[0]])
        return conn

    def add(self, dn, **attrs):
        attrs.setdefault("distinguishedName", dn)
        self.admin.strategy.add_entry(dn, attrs)

    def add_user(self, cn, *, disabled=False, mail=None, upn=None, ou="CN=Users"):
        dn = f"CN={escape_rdn(cn)},{ou},{AD}"
        guid = uuid.uuid4()
        attrs = dict(objectClass=["top", "person", "user"], objectCategory="person", cn=cn,
                     sn=cn.split()[-1], givenName=cn.split()[0], displayName=cn,
                     objectGUID=guid.bytes_le, uSNChanged="50",
                     userAccountControl=str(514 if disabled else 512))
        if mail:
            attrs["mail"] = mail
        if upn:
            attrs["userPrincipalName"] = upn
        self.add(dn, **attrs)
        self.guids[dn] = guid
        return dn

    def add_group(self, cn, members):
        dn = f"CN={escape_rdn(cn)},CN=Groups,{AD}"
        guid = uuid.uuid4()
        self.add(dn, objectClass=["top", "group"], cn=cn, objectGUID=guid.bytes_le,
                 uSNChanged="50", member=list(members))
        self.guids[dn] = guid
        return dn

    def touch(self, dn, **changes):
        self.usn += 1
        changes["uSNChanged"] = str(self.usn)
        self.admin.modify(dn, {k: [(ldap3.MODIFY_REPLACE, v if isinstance(v, list) else [v])]
                               for k, v in changes.items()})

    def source(self, *, on_search=None, **kw) -> LdapSource:
        kw.setdefault("group_base", AD)
        settings = LdapSource.Settings(url=("ldaps://dc1.corp.example",), user_base=AD,
                                       flavor="ad", bind_dn=SVC_DN, password=Secret("pw"),
                                       page_size=3, **kw)
        return LdapSource(settings, connection_factory=lambda url: self.connection(),
                          on_search=on_search)

    # -- the emulation -----------------------------------------------------------------
    def _entries(self):
        return self.server.dit

    def _values(self, dn, attr):
        entry = self._entries()[dn]
        key = next((k for k in entry if k.lower() == attr.lower()), None)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in entry.get(key, [])] if key else []

    def _matching(self, rule, attr, value):
        if rule == "1.2.840.113556.1.4.803":
            bits = int(value)
            return [dn for dn in self._entries()
                    if any(int(v) & bits == bits for v in self._values(dn, attr) if v.isdigit())]
        if rule == "1.2.840.113556.1.4.1941" and attr.lower() == "memberof":
            found, stack, seen = set(), [value], set()
            while stack:
                group = normalise_dn(stack.pop())
                if group in seen:
                    continue
                seen.add(group)
                dn = next((d for d in self._entries() if normalise_dn(d) == group), None)
                for member in self._values(dn, "member") if dn else []:
                    found.add(normalise_dn(member))
                    stack.append(member)
            return [dn for dn in self._entries() if normalise_dn(dn) in found]
        raise AssertionError(f"matching rule {rule} is not emulated")

    def _replace_extensible(self, match):
        dns = self._matching(match.group(1), match.group(2), match.group(3))
        if not dns:
            return "(objectClass=no-such-class)"
        return "(|" + "".join(f"(distinguishedName={escape_filter_chars(d)})" for d in dns) + ")"

    def _search(self, original, request):
        if request["base"] == "" and request["scope"] == 0:          # rootDSE
            return [{"object": "", "attributes": [
                {"type": "highestCommittedUSN", "vals": [str(self.usn).encode()]},
                {"type": "dsServiceName", "vals": [DSA_DN.encode()]},
                {"type": "namingContexts", "vals": [AD.encode()]},
                {"type": "defaultNamingContext", "vals": [AD.encode()]}]}], _ok()
        if request["base"].startswith("<WKGUID="):                   # Deleted Objects
            return [{"object": f"CN=Deleted Objects,{AD}", "attributes": [
                {"type": "isDeleted", "vals": [b"TRUE"]}]}], _ok()
        request["filter"] = _EXT.sub(self._replace_extensible, request["filter"])
        wanted_range = None
        for attr in list(request["attributes"]):
            if attr.lower().startswith("member;range="):
                wanted_range = int(attr.split("=", 1)[1].split("-")[0])
                request["attributes"].remove(attr)
                request["attributes"].append("member")
        responses, result = original(request)
        for response in responses:
            for attr in response["attributes"]:
                if attr["type"].lower() != "member":
                    continue
                values, low = attr["vals"], wanted_range or 0
                if len(values) > self.MAX_VAL_RANGE or wanted_range is not None:
                    chunk = values[low:low + self.MAX_VAL_RANGE]
                    high = "*" if low + self.MAX_VAL_RANGE >= len(values) else low + len(chunk) - 1
                    attr["type"], attr["vals"] = f"member;range={low}-{high}", chunk
        return responses, result


def _ok():
    return {"resultCode": 0, "matchedDN": "", "diagnosticMessage": "", "referral": None}


@pytest.fixture
def ad():
    fake = FakeAd()
    fake.alice = fake.add_user("Alice Archer", mail="alice@corp.example",
                               upn="alice@corp.example")
    fake.bob = fake.add_user("Bob Baker", upn="bob@corp.example")            # no mail: UPN
    fake.carol = fake.add_user("Carol Chen", mail="carol@corp.example", disabled=True)
    fake.weird = fake.add_user('Ops, Lead (EU) *', mail="ops@corp.example")
    fake.crowd = [fake.add_user(f"Crowd Member{i}", mail=f"c{i}@corp.example") for i in range(10)]
    fake.inner = fake.add_group("Inner (x)", [fake.bob, fake.weird])
    fake.outer = fake.add_group("Outer", [fake.alice, fake.inner])
    fake.big = fake.add_group("Crowd", fake.crowd + [fake.carol])
    return fake


def test_ad_objectguid_disabled_bit_and_upn_fallback(ad):
    source = ad.source()
    directory = source.read()
    assert set(directory.users) == {str(ad.guids[dn]) for dn in
                                    [ad.alice, ad.bob, ad.carol, ad.weird, *ad.crowd]}
    carol = directory.users[str(ad.guids[ad.carol])]
    assert carol.active is False and source.disabled_filter == AD_DISABLED_FILTER
    from agent.core.mapping import MappingRules, map_directory
    desired = map_directory(directory, MappingRules.for_source(LdapSource))
    names = {u.user_name for u in desired.users.values()}
    assert "bob@corp.example" in names and "alice@corp.example" in names


def test_ad_objectguid_is_little_endian():
    raw = bytes.fromhex("78563412341278561234567890abcdef")
    assert decode_id("objectGUID", raw) == "12345678-1234-5678-1234-567890abcdef"


def test_ad_range_retrieval_of_a_large_member_attribute(ad):
    directory = ad.source().read()
    crowd = directory.groups[str(ad.guids[ad.big])]
    assert len(crowd.members) == 11                  # 11 values fetched 4 at a time
    assert str(ad.guids[ad.carol]) in crowd.members



def test_range_retrieval_does_not_end_the_paged_search_early():
    """Range retrieval runs searches of its own on the connection; the paged search must keep
    its own cookie, or every group after the first ranged page would silently go missing."""
    fake = FakeAd()
    crowd = [fake.add_user(f"Crowd Member{i}", mail=f"c{i}@corp.example") for i in range(10)]
    fake.add_group("Crowd", crowd)                    # 10 values: needs ranges of 4
    for i in range(7):
        fake.add_group(f"G{i}", crowd[:1])
    directory = fake.source().read()                  # page_size 3: the groups span 3 pages
    assert len(directory.groups) == 8

def test_ad_scope_group_with_the_in_chain_rule(ad):
    searches = []
    source = ad.source(scope_group=ad.outer,
                       on_search=lambda what, flt: searches.append((what, flt)))
    assert source.in_chain
    directory = source.read()
    assert set(directory.users) == {str(ad.guids[d]) for d in (ad.alice, ad.bob, ad.weird)}
    # the DN went into the filter escaped
    user_filters = [flt for what, flt in searches if what == "users"]
    assert user_filters and all(escape_filter_chars(ad.outer) in flt for flt in user_filters)


def test_ad_change_read_by_usn_and_a_restored_controller(ad):
    source = ad.source()
    full = source.read()
    assert json.loads(full.cursor)["usn"] == 100
    ad.touch(ad.bob, title="Lead")
    ad.touch(ad.inner, member=[ad.bob])               # weird left the group
    changes = source.read_changes(full.cursor, full)
    assert set(changes.users) == {str(ad.guids[ad.bob])}
    assert changes.users[str(ad.guids[ad.bob])].attributes["title"] == "Lead"
    (inner,) = changes.groups.values()
    assert inner.members == {str(ad.guids[ad.bob])}
    assert json.loads(changes.cursor)["usn"] == 102
    assert len(source.read_changes(changes.cursor, changes.apply_to(full))) == 0

    ad.admin.modify(DSA_DN, {"invocationId": [(ldap3.MODIFY_REPLACE, [uuid.uuid4().bytes_le])]})
    with pytest.raises(CursorExpired, match="restored"):
        source.read_changes(changes.cursor, full)


def test_ad_check_counts(ad):
    report = ad.source().check()
    assert report["users"] == 14 and report["disabled"] == 1 and report["groups"] == 3


def test_a_password_is_never_sent_without_tls_off_loopback():
    # the config loader refuses this (test_settings_are_validated); a source built from
    # settings that never went through it still refuses to bind
    settings = LdapSource.Settings(url=("ldap://ldap.example.invalid",), user_base="dc=x",
                                   bind_dn="cn=svc,dc=x", password=Secret("pw"), timeout=1)
    with pytest.raises(SettingError, match="without TLS"):
        settings.validate()
    with pytest.raises(ConnectorError, match="without TLS"):
        LdapSource(settings).read()


def test_the_source_repr_shows_no_password():
    settings = LdapSource.Settings(url=("ldaps://ldap.example.invalid",), user_base="dc=x",
                                   bind_dn="cn=svc,dc=x", password=Secret("hunter2-pw"))
    assert "hunter2-pw" not in repr(LdapSource(settings))


# ---------------------------------------------------------------------------------------------
# Paging and range retrieval end when the server says so, and a server that never does is
# stopped by what it sent (not by its cookies, which are opaque). Scripted servers: an
# ldap3-shaped connection that answers every search from a function of the call number.


class ScriptedServer:
    """Answers search number ``n`` with ``script(n, request)`` -> (entries, cookie), where an
    entry is (dn, {attribute: [values]}). Counts the searches it answered."""

    strategy = None                 # not ldap3's SyncStrategy: the lean decoder stays out

    def __init__(self, script):
        self.script = script
        self.calls = 0
        self.response: list = []
        self.result: dict = {}

    def open(self):
        pass

    def bind(self):
        return True

    def unbind(self):
        pass

    def search(self, base, flt, scope, attributes=None, paged_size=None, paged_cookie=None,
               paged_criticality=False, controls=None):
        entries, cookie = self.script(self.calls, {"base": base, "attributes": attributes,
                                                   "cookie": paged_cookie})
        self.calls += 1
        self.response = [{"type": "searchResEntry", "dn": dn, "raw_dn": dn.encode(),
                          "raw_attributes": {k: [v if isinstance(v, bytes) else v.encode()
                                                 for v in vals] for k, vals in attrs.items()}}
                         for dn, attrs in entries]
        controls_back = {}
        if paged_size:
            controls_back = {"1.2.840.113556.1.4.319": {"value": {"cookie": cookie}}}
        self.result = {"result": 0, "description": "success", "controls": controls_back}
        return True


def scripted_source(server: ScriptedServer, attributes=(), **kw) -> LdapSource:
    settings = LdapSource.Settings(url=("ldap://127.0.0.1:1",), user_base="ou=people,dc=x",
                                   group_base="ou=groups,dc=x", page_size=3, **kw)
    return LdapSource(settings, attributes=attributes, connection_factory=lambda url: server)


def group_entry(i: int, **attrs):
    return (f"cn=g{i},ou=groups,dc=x", {"entryUUID": [str(uuid.UUID(int=i + 1))], "cn": [f"g{i}"],
                                        **attrs})


def test_a_server_that_repeats_its_opaque_cookie_is_read_to_the_end():
    # Samba sends the same cookie on every page; only an empty one ends the search
    def script(n, request):
        if request["base"].startswith("ou=groups"):
            page = [group_entry(3 * n + i) for i in range(3)] if n < 5 else [group_entry(99)]
            return page, b"1\x00" if n < 5 else b""
        return [], b""
    directory = scripted_source(ScriptedServer(script)).read()
    assert len(directory.groups) == 16


def test_a_server_that_sends_the_same_page_forever_is_stopped():
    server = ScriptedServer(lambda n, request: ([group_entry(i) for i in range(3)], b"again"))
    with pytest.raises(SourceError, match=r"did not end the paged search of groups \(it sent "
                                          r"\d+ entries a second time; 3 entries in \d+ pages"):
        scripted_source(server).read()
    assert server.calls <= 4                   # stopped once repeats outnumber the new by a page


def test_a_server_that_sends_empty_pages_forever_is_stopped():
    server = ScriptedServer(lambda n, request: ([group_entry(0)] if n == 0 else [], b"more"))
    with pytest.raises(SourceError, match=r"101 pages in a row brought nothing new; 1 entries"):
        scripted_source(server).read()
    assert server.calls == 102


def test_a_few_entries_sent_twice_do_not_stop_a_read():
    # an entry modified during an indexed paged search may come again; the later copy wins
    def script(n, request):
        if not request["base"].startswith("ou=groups"):
            return [], b""
        if n == 3:
            return [group_entry(1, cn=["renamed"])], b""
        return [group_entry(3 * n + i) for i in range(3)], b"c"
    directory = scripted_source(ScriptedServer(script)).read()
    names = {g.attributes["cn"] for g in directory.groups.values()}
    assert len(directory.groups) == 9 and "renamed" in names and "g1" not in names


def ranged_group(windows):
    """A scripted AD whose group answers member windows from ``windows(first, asked)`` ->
    {"member;range=...": [values]}; ``first``: the group search itself, not a follow-up."""
    def script(n, request):
        base, asked = request["base"], request["attributes"] or []
        if base == "":                               # rootDSE
            return [("", {"highestCommittedUSN": ["5"], "dsServiceName": ["cn=ntds"],
                          "namingContexts": ["dc=x"]})], b""
        if base == "cn=ntds":
            return [("cn=ntds", {"invocationId": [uuid.UUID(int=7).bytes_le]})], b""
        if base.startswith("ou=groups"):
            first = next(a for a in asked if a.startswith("member;range="))
            return [("cn=big,ou=groups,dc=x", {"objectGUID": [uuid.UUID(int=9).bytes_le],
                                               "cn": ["big"], **windows(True, first)})], b""
        if base == "cn=big,ou=groups,dc=x":
            (wanted,) = asked
            return [("cn=big,ou=groups,dc=x", windows(False, wanted))], b""
        return [], b""
    return script


def test_range_retrieval_asks_window_after_window_until_the_last():
    asked = []

    def windows(first, wanted):
        asked.append(wanted)
        low = int(wanted.split("=")[1].split("-")[0])
        values = [f"cn=u{i},ou=people,dc=x" for i in range(low, min(low + 2, 5))]
        high = "*" if low + 2 >= 5 else low + 1
        return {f"member;range={low}-{high}": values}
    server = ScriptedServer(ranged_group(windows))
    source = scripted_source(server, flavor="ad")
    source.range_size = 2
    directory = source.read()
    assert asked == ["member;range=0-1", "member;range=2-3", "member;range=4-5"]
    assert directory.groups                     # no users read here: members resolve to none


@pytest.mark.parametrize("answer, words", [
    (lambda low: {"member;range=0-1": ["cn=a", "cn=b"]}, "sent values 0-1 of member"),
    (lambda low: {f"member;range={low}-{low + 1}": []}, "sent no values of member .* from 2 on"),
    (lambda low: {}, "stopped sending the values of member .* after 2 of them"),
])
def test_a_range_retrieval_that_does_not_move_forward_is_stopped(answer, words):
    def windows(first, wanted):
        low = int(wanted.split("=")[1].split("-")[0])
        return {"member;range=0-1": ["cn=a", "cn=b"]} if first else answer(low)
    server = ScriptedServer(ranged_group(windows))
    source = scripted_source(server, flavor="ad")
    source.range_size = 2
    with pytest.raises(SourceError, match=words):
        source.read()
    assert server.calls < 10


def test_an_unasked_range_of_a_mapped_attribute_is_completed():
    # Windows answers a plain request for an attribute past MaxValRange with its first window
    # (Samba never does): the rest is fetched window by window like member
    user_dn = "cn=u,ou=people,dc=x"

    def script(n, request):
        base, asked = request["base"], request["attributes"] or []
        if base == "":
            return [("", {"highestCommittedUSN": ["5"], "dsServiceName": ["cn=ntds"]})], b""
        if base == "cn=ntds":
            return [("cn=ntds", {"invocationId": [uuid.UUID(int=7).bytes_le]})], b""
        if base == "ou=people,dc=x":
            return [(user_dn, {"objectGUID": [uuid.UUID(int=8).bytes_le], "mail": ["u@x"],
                               "proxyAddresses;range=0-1": ["smtp:a@x", "smtp:b@x"]})], b""
        if base == user_dn:
            assert [a.lower() for a in asked] == ["proxyaddresses;range=2-1501"]
            return [(user_dn, {"proxyAddresses;range=2-*": ["smtp:c@x"]})], b""
        return [], b""
    source = scripted_source(ScriptedServer(script), attributes=["proxyAddresses"], flavor="ad")
    (user,) = source.read().users.values()
    assert user.attributes["proxyAddresses"] == ["smtp:a@x", "smtp:b@x", "smtp:c@x"]


def test_member_dns_that_name_nothing_read_are_counted_in_the_log(tmp_path, caplog):
    """A renamed OU without the refint overlay leaves groups listing DNs that name no entry;
    they are not synced (the directory says so), and the log says how many and which."""
    slapd = fresh_server(tmp_path)
    try:
        conn = slapd.admin_connection()
        ghost = person_dn("ghost", f"ou=gone,{PEOPLE_BASE}")
        conn.modify(team_dn(TEAMS[0]), {"member": [(ldap3.MODIFY_ADD, [ghost])]})
        with caplog.at_level("INFO", logger="connectors.ldap.source"):
            make_source(slapd.url).read()
        assert re.search(r"1 member DN\(s\) of 1 group\(s\) name no user or group read.*"
                         + re.escape(ghost), caplog.text)
    finally:
        slapd.stop()


def test_a_member_looked_up_and_not_synced_is_not_looked_up_again(tmp_path, monkeypatch):
    """A computer or an account outside the filter in a busy group would otherwise cost a
    search at every change read that re-reads the group."""
    from connectors.ldap.session import Session
    slapd = fresh_server(tmp_path)
    try:
        source = make_source(slapd.url)
        conn = slapd.admin_connection()
        ghost = person_dn("ghost")                          # under user_base, no such entry
        conn.modify(team_dn(TEAMS[0]), {"member": [(ldap3.MODIFY_ADD, [ghost])]})
        view = source.read()
        looked_up: list[str] = []
        read_entry = Session.read_entry
        monkeypatch.setattr(Session, "read_entry", lambda self, dn, *a, **kw: (
            looked_up.append(dn), read_entry(self, dn, *a, **kw))[1])
        for title in ("one", "two"):                        # the team changes twice
            conn.modify(team_dn(TEAMS[0]), {"description": [(ldap3.MODIFY_REPLACE, [title])]})
            changes = source.read_changes(view.cursor, view)
            view = changes.apply_to(view)
        assert looked_up.count(ghost) == 1
        source.read()                                       # a full read forgets it
        conn.modify(team_dn(TEAMS[0]), {"description": [(ldap3.MODIFY_REPLACE, ["three"])]})
        source.read_changes(view.cursor, view)
        assert looked_up.count(ghost) == 2
    finally:
        slapd.stop()
