"""The LDAP source with ``flavor = "ad"`` against a real Active Directory: Samba's AD DC.

One domain controller per session (the ``samba_dc`` fixture, tests/servers/samba.py), over
LDAPS with a CA generated here, bound as ordinary domain users: ``svc-split``, and
``svc-deleted`` which may also list the Deleted Objects container. This module loads its data
once per session, as two LDIF files (the bulk one only when a test needs it): a few thousand
users across four OUs (some disabled, some with only a userPrincipalName) and a group of more
than 1 500 members; groups nested three deep and a cycle; names with quotes, backslashes,
commas and non-ASCII letters; and the source contract's PEOPLE and TEAMS. Tests that change
the directory work in OUs of their own.

What Samba cannot show about Windows AD is listed in docs/sources/ldap.md ("What is proven").
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import uuid
from dataclasses import dataclass, field

import pytest
from ldap3.utils.dn import escape_rdn

from agent.core.mapping import MappingRules, map_directory
from connectors.base import CursorExpired, Directory, Secret, SourceAuthError, SourceError
from connectors.ldap import LdapSource, normalise_dn
from tests.servers import samba
from tests.servers.relay import Relay
from tests.servers.slapd import free_port, ldif_entry, make_ca
from tests.source_contract import PEOPLE, TEAMS, SourceContract

# The first test to use a fixture waits for it: provisioning (about 10 s of CPU) and loading
# the bulk OUs (about 20 s of CPU: Samba spends some 7 ms on each add) take up to two minutes
# on a busy two-core machine. Every wait inside a test is still bounded by the connector's own
# timeout (20 s per answer here).
pytestmark = pytest.mark.timeout(300)

BASE = samba.BASE
BULK = f"OU=Bulk,{BASE}"
BULK_OUS = ("Staff", "Contractors", "Sales", "Remote")
PER_OU = 700
BULK_USERS = PER_OU * len(BULK_OUS)
BULK_GROUPS = f"OU=BulkGroups,{BASE}"
BIG_MEMBERS = 1600
CONTRACT = f"OU=Contract,{BASE}"
CONTRACT_GROUPS = f"OU=ContractGroups,{BASE}"
SPECIAL = f"OU=Special,{BASE}"
SPECIAL_NAMES = ('O\'Brien, "Ops" \\ Zoë', "a+b=c<d>;#x", "#Ünal (EU) *", "Ω,\\2C",
                 "Åsa \\\\ Öberg")
ACCOUNT_DISABLED, NORMAL_ACCOUNT, PASSWD_NOTREQD = 0x2, 0x200, 0x20


def bulk_dn(i: int) -> str:
    return f"CN=Bulk User {i:05d},OU={BULK_OUS[i % len(BULK_OUS)]},{BULK}"


def is_disabled(i: int) -> bool:
    return i % 20 == 7


def upn_only(i: int) -> bool:
    return i % 25 == 3


def uac(disabled: bool) -> str:
    return str(NORMAL_ACCOUNT | PASSWD_NOTREQD | (ACCOUNT_DISABLED if disabled else 0))


def group_dn(name: str, base: str = BULK_GROUPS) -> str:
    return f"CN={escape_rdn(name)},{base}"


def ou(dn: str) -> str:
    return ldif_entry(dn, {"objectClass": "organizationalUnit"})


def user_entry(dn: str, sam: str, *, given: str, family: str, mail: str | None,
               disabled: bool = False, **extra) -> str:
    attrs = {"objectClass": "user", "sAMAccountName": sam, "givenName": given, "sn": family,
             "displayName": f"{given} {family}", "userPrincipalName": f"{sam}@{samba.UPN_SUFFIX}",
             "userAccountControl": uac(disabled), **extra}
    if mail:
        attrs["mail"] = mail
    return ldif_entry(dn, attrs)


def group_entry(dn: str, members: list[str], **extra) -> str:
    return ldif_entry(dn, {"objectClass": "group", **({"member": members} if members else {}),
                           **extra})


NEST = f"OU=Nesting,{BASE}"           # nested groups and their members (users and groups)
NESTING = {                          # name -> (member numbers, nested group names)
    "Nest 1": ((0, 1), ("Nest 2",)),
    "Nest 2": ((2,), ("Nest 3",)),
    "Nest 3": ((3, 4, 5, 7), ()),
    "Loop A": ((10,), ("Loop B",)),
    "Loop B": ((11, 12), ("Loop A",)),
}


def nest_dn(i: int) -> str:
    return f"CN=Nested {i:02d},{NEST}"


def bulk_ldif() -> str:
    """The bulk OUs and the big group: most of the module's loading time (Samba adds about
    150 users a second on two free cores), so only the tests that need them wait for them."""
    out = [ou(BULK)] + [ou(f"OU={name},{BULK}") for name in BULK_OUS]
    for i in range(BULK_USERS):
        out.append(user_entry(bulk_dn(i), f"b{i:05d}", given="Bulk", family=f"User{i}",
                              mail=None if upn_only(i) else f"bulk{i:05d}@corp.example.test",
                              disabled=is_disabled(i)))
    out.append(ou(BULK_GROUPS))
    out.append(group_entry(group_dn("Big"), [bulk_dn(i) for i in range(BIG_MEMBERS)]))
    return "".join(out)


def small_ldif() -> str:
    out = [ou(NEST)]
    out += [user_entry(nest_dn(i), f"n{i:02d}", given="Nested", family=f"N{i}",
                       mail=f"nested{i:02d}@corp.example.test", disabled=is_disabled(i))
            for i in range(16)]
    # groups without their nested members first, then the members (cycles need both there)
    out += [group_entry(group_dn(name, NEST), [nest_dn(i) for i in people])
            for name, (people, _) in NESTING.items()]
    for name, (_, nested) in NESTING.items():
        if nested:
            out.append(f"dn: {group_dn(name, NEST)}\nchangetype: modify\nadd: member\n"
                       + "".join(f"member: {group_dn(n, NEST)}\n" for n in nested) + "-\n\n")
    out += [ou(SPECIAL)]
    for i, name in enumerate(SPECIAL_NAMES):
        out.append(user_entry(f"CN={escape_rdn(name)},{SPECIAL}", f"special{i}", given=name,
                              family="Special", mail=f"special{i}@corp.example.test"))
    out.append(group_entry(group_dn('Ops, "EU" \\ Zoë', SPECIAL),
                           [f"CN={escape_rdn(n)},{SPECIAL}" for n in SPECIAL_NAMES]))
    out += [ou(CONTRACT), ou(CONTRACT_GROUPS)]
    out += contract_ldif(CONTRACT, CONTRACT_GROUPS, "c")
    return "".join(out)


def contract_ldif(people_base: str, groups_base: str, prefix: str) -> list[str]:
    """PEOPLE and TEAMS the AD way (a disabled person has the ACCOUNTDISABLE bit)."""
    out = []
    person_dn = {p.key: f"CN={escape_rdn(p.display)},{people_base}" for p in PEOPLE}
    for p in PEOPLE:
        out.append(user_entry(person_dn[p.key], f"{prefix}-{p.key}"[:20], given=p.given,
                              family=p.family, mail=p.email, disabled=not p.active,
                              title=p.title, department=p.department))
    team_dn = {t.key: group_dn(t.name, groups_base) for t in TEAMS}
    for t in TEAMS:
        out.append(group_entry(team_dn[t.key], [person_dn[k] for k in t.people]))
    for t in TEAMS:
        if t.teams:
            out.append(f"dn: {team_dn[t.key]}\nchangetype: modify\nadd: member\n"
                       + "".join(f"member: {team_dn[k]}\n" for k in t.teams) + "-\n\n")
    return out


@pytest.fixture(scope="module")
def dc(samba_dc):
    samba_dc.add_ldif(small_ldif())
    return samba_dc


@pytest.fixture(scope="module")
def bulk_dc(dc):
    dc.add_ldif(bulk_ldif())
    return dc


def ad_source(dc, user_base: str, group_base: str | None = None, *,
              account: str = samba.SVC_UPN, password: str = samba.SVC_PASSWORD,
              url: tuple[str, ...] | None = None, ca_file=None, on_page=None,
              on_search=None, **kw) -> LdapSource:
    settings = LdapSource.Settings(url=url or (dc.url,), flavor="ad", bind_dn=account,
                                   password=Secret(password), ca_file=ca_file or dc.ca_file,
                                   user_base=user_base, group_base=group_base, timeout=20, **kw)
    settings.validate()                    # what loading a config file would do
    return LdapSource(settings, on_page=on_page, on_search=on_search)


def deleted_reader(dc, user_base: str, group_base: str | None = None, **kw) -> LdapSource:
    return ad_source(dc, user_base, group_base, account=samba.SVC_DELETED_UPN,
                     password=samba.SVC_DELETED_PASSWORD, **kw)


def guid_of(dc, dn: str) -> str:
    """The objectGUID Samba's own ldbsearch prints for ``dn``."""
    (entry,) = dc.ldbsearch("(objectClass=*)", "objectGUID", base=dn)
    return entry["objectGUID"][0]


def by_dn(directory: Directory) -> dict[str, str]:
    return {normalise_dn(str(r.attributes["dn"])): r.id
            for r in (*directory.users.values(), *directory.groups.values())}


@dataclass
class Reads:
    """The bulk OUs read once at the default page size (500), for the tests that inspect it."""

    directory: Directory
    pages: list[int] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)

    def id_of(self, dn: str) -> str:
        self.index = self.index or by_dn(self.directory)
        return self.index[normalise_dn(dn)]


@pytest.fixture(scope="module")
def bulk(bulk_dc):
    pages: list[int] = []
    source = ad_source(bulk_dc, BULK, BULK_GROUPS,
                       on_page=lambda what, n: pages.append(n) if what == "users" else None)
    assert source.settings.page_size == 500
    return Reads(source.read(), pages)


# ---------------------------------------------------------------------------------------------
# The shared contract, small pages


class TestContract(SourceContract):
    source_cls = LdapSource

    @pytest.fixture
    def seeded_source(self, dc):
        return ad_source(dc, CONTRACT, CONTRACT_GROUPS, page_size=2)

    @pytest.fixture
    def failing_source(self, dc):
        relay = Relay(dc.address, 636)       # the certificate names 127.0.0.1 too
        source = ad_source(dc, CONTRACT, CONTRACT_GROUPS, url=(relay.url(),), page_size=2)
        source.on_page = lambda what, n: relay.cut() if what == "users" else None
        yield source
        relay.close()

    def test_the_failure_names_the_lost_connection(self, failing_source):
        with pytest.raises(SourceError, match=r"connection to ldaps://127\.0\.0\.1:\d+ was lost "
                                              r"during the read; nothing was used from it"):
            failing_source.read()


# ---------------------------------------------------------------------------------------------
# Paging


def test_samba_repeats_its_opaque_paging_cookie(dc):
    """The behaviour that broke the first AD read: the same cookie on every page."""
    conn = dc.admin_connection()
    cookies = []
    for _ in range(3):
        conn.search(NEST, "(objectClass=user)", attributes=["1.1"], paged_size=4,
                    paged_cookie=cookies[-1] if cookies else None)
        cookies.append(conn.result["controls"]["1.2.840.113556.1.4.319"]["value"]["cookie"])
    conn.unbind()
    assert cookies[0] and cookies[0] == cookies[1] == cookies[2]


def test_a_multi_page_read_at_the_default_page_size(bulk):
    assert len(bulk.directory.users) == BULK_USERS
    pages = math.ceil(BULK_USERS / 500)
    assert bulk.pages == [min(500 * n, BULK_USERS) for n in range(1, pages + 1)]
    assert len(bulk.directory.groups) == 1


def test_a_multi_page_read_at_a_small_page_size_and_a_large_one(bulk_dc, bulk):
    pages = []
    small = ad_source(bulk_dc, BULK, BULK_GROUPS, page_size=37,
                      on_page=lambda what, n: pages.append(n) if what == "users" else None).read()
    assert len(pages) == math.ceil(BULK_USERS / 37)
    assert small.users == bulk.directory.users and small.groups == bulk.directory.groups
    # Windows caps a page at MaxPageSize (1000); Samba sends what is asked: both are fine
    large = ad_source(bulk_dc, BULK, BULK_GROUPS, page_size=5000).read()
    assert large.users.keys() == bulk.directory.users.keys()


# ---------------------------------------------------------------------------------------------
# Records


def test_the_id_is_the_object_guid_as_ldbsearch_prints_it(bulk_dc, bulk):
    for dn in (bulk_dn(0), bulk_dn(BULK_USERS - 1), group_dn("Big")):
        assert bulk.id_of(dn) == guid_of(bulk_dc, dn)
        uuid.UUID(bulk.id_of(dn))


def test_disabled_accounts_and_users_with_only_a_user_principal_name(bulk):
    users = bulk.directory.users
    disabled = {bulk.id_of(bulk_dn(i)) for i in range(BULK_USERS) if is_disabled(i)}
    assert {uid for uid, u in users.items() if not u.active} == disabled
    desired = map_directory(bulk.directory, MappingRules.for_source(LdapSource))
    for i in (3, 28, 4, 7):
        user = desired.users[bulk.id_of(bulk_dn(i))]
        expected = (f"b{i:05d}@{samba.UPN_SUFFIX}" if upn_only(i)
                    else f"bulk{i:05d}@corp.example.test")
        assert user.user_name == expected and user.attributes["email"] == expected
        assert user.active is not is_disabled(i)


def test_special_characters_in_common_names(dc):
    directory = ad_source(dc, SPECIAL).read()
    names = {u.attributes["givenName"] for u in directory.users.values()}
    assert names == set(SPECIAL_NAMES)
    (group,) = directory.groups.values()
    assert group.attributes["cn"] == 'Ops, "EU" \\ Zoë'
    assert group.members == set(directory.users)        # member DNs as Samba spells them


# ---------------------------------------------------------------------------------------------
# Groups: nesting, cycles, range retrieval, scope


@pytest.fixture(scope="module")
def nesting(dc):
    return Reads(ad_source(dc, NEST).read())


def test_groups_nested_three_deep_and_a_cycle(nesting):
    groups = nesting.directory.groups
    nest1 = groups[nesting.id_of(group_dn("Nest 1", NEST))]
    assert nest1.members == {nesting.id_of(nest_dn(0)), nesting.id_of(nest_dn(1)),
                             nesting.id_of(group_dn("Nest 2", NEST))}
    desired = map_directory(nesting.directory, MappingRules.for_source(LdapSource))
    flat = {g.display_name: set(g.members) for g in desired.groups.values()}
    assert flat["Nest 1"] == {nesting.id_of(nest_dn(i)) for i in (0, 1, 2, 3, 4, 5)}  # 7 is off
    assert flat["Loop A"] == flat["Loop B"] == {nesting.id_of(nest_dn(i)) for i in (10, 11, 12)}


def test_samba_answers_a_bounded_member_range_as_ad_does(bulk_dc):
    conn = bulk_dc.admin_connection()
    conn.search(group_dn("Big"), "(objectClass=*)", "BASE", attributes=["member;range=0-1499"])
    first = conn.response[0]["raw_attributes"]
    conn.search(group_dn("Big"), "(objectClass=*)", "BASE",
                attributes=["member;range=1500-2999"])
    second = conn.response[0]["raw_attributes"]
    conn.unbind()
    assert {k: len(v) for k, v in first.items()} == {"member;range=0-1499": 1500}
    assert {k: len(v) for k, v in second.items()} == {"member;range=1500-*": 100}


def test_a_group_of_more_than_1500_members_is_read_in_ranges(bulk_dc, bulk, caplog):
    big = bulk.directory.groups[bulk.id_of(group_dn("Big"))]
    assert big.members == {bulk.id_of(bulk_dn(i)) for i in range(BIG_MEMBERS)}

    source = ad_source(bulk_dc, BULK, BULK_GROUPS)
    source.range_size = 500                      # windows of 500: 0-499 ... 1500-*
    with caplog.at_level(logging.DEBUG, logger="connectors.ldap.session"):
        again = source.read()
    assert again.groups[big.id].members == big.members
    assert f"range retrieval: {BIG_MEMBERS} values of member on {group_dn('Big')} in 3 more " \
           f"requests" in caplog.text


@pytest.mark.parametrize("group, people", [("Nest 1", (0, 1, 2, 3, 4, 5, 7)),
                                           ("Loop A", (10, 11, 12))])
def test_scope_group_in_chain_on_the_server_and_walked_in_the_client_agree(dc, nesting, group,
                                                                          people):
    filters = []
    server_side = ad_source(dc, NEST, scope_group=group_dn(group, NEST),
                            on_search=lambda what, flt: filters.append(flt))
    client_side = ad_source(dc, NEST, scope_group=group_dn(group, NEST), in_chain=False)
    assert server_side.in_chain and not client_side.in_chain
    expected = {nesting.id_of(nest_dn(i)) for i in people}
    assert set(server_side.read().users) == set(client_side.read().users) == expected
    assert any(":1.2.840.113556.1.4.1941:=" in flt for flt in filters)
    server_report, client_report = server_side.check(), client_side.check()
    assert server_report["users"] == client_report["users"] == len(expected)
    assert server_report["disabled"] == client_report["disabled"] == (7 in people)


# ---------------------------------------------------------------------------------------------
# Binding, failover and what goes wrong


@pytest.mark.parametrize("account", [samba.SVC_DN, samba.SVC_UPN])
def test_binds_as_a_dn_and_as_user_at_domain(dc, account):
    report = ad_source(dc, CONTRACT, CONTRACT_GROUPS, account=account).check()
    assert report["users"] == len(PEOPLE) and report["groups"] == len(TEAMS)
    assert report["disabled"] == sum(not p.active for p in PEOPLE)


def test_start_tls_on_the_plain_port(dc):
    source = ad_source(dc, CONTRACT, CONTRACT_GROUPS, url=(dc.plain_url,), start_tls=True)
    assert len(source.read().users) == len(PEOPLE)


def test_failover_past_a_dead_url(dc, caplog):
    dead = f"ldaps://127.0.0.1:{free_port()}"
    source = ad_source(dc, CONTRACT, CONTRACT_GROUPS, url=(dead, dc.url))
    with caplog.at_level(logging.WARNING):
        assert len(source.read().users) == len(PEOPLE)
    assert f"cannot reach {dead}: the connection was refused" in caplog.text


def one_sentence(text: str) -> bool:
    return "\n" not in text and "Traceback" not in text and text.count(". ") == 0


@pytest.mark.parametrize("case", ["wrong CA", "wrong password", "wrong base", "no TLS"])
def test_what_goes_wrong_is_one_clear_sentence(dc, tmp_path, case):
    kw, error, words = {}, SourceError, ""
    if case == "wrong CA":
        other = make_ca(tmp_path, "Some Other CA").cert_file
        kw["ca_file"] = other
        words = (rf"the TLS certificate of ldaps://{re.escape(dc.address)} could not be verified "
                 rf"\(unable to get local issuer certificate\); {re.escape(str(other))} "
                 rf"\(source\.ca_file\) is not the CA that signed it$")
    elif case == "wrong password":
        kw["password"], error = "not-the-password", SourceAuthError
        words = (rf"ldaps://{re.escape(dc.address)} rejected the bind as "
                 rf"{re.escape(samba.SVC_UPN)}: the password is wrong \(or the account does not "
                 rf"exist\) \(check source\.bind_dn and source\.password\)$")
    elif case == "wrong base":
        kw["user_base"] = f"OU=Nowhere,{BASE}"
        words = (rf"ldaps://{re.escape(dc.address)} has no entry 'OU=Nowhere,{BASE}', the "
                 rf"search base of the (disabled )?users \(check source\.user_base\)$")
    else:
        # a password to a loopback address may go without TLS, by our rules; AD refuses it
        kw["url"], error = (dc.plain_url,), SourceAuthError
        words = (rf"ldap://{re.escape(dc.address)} refuses a password sent without encryption "
                 rf"\(use an ldaps:// URL or start_tls = true\)$")
    source_kw = {"user_base": CONTRACT, "group_base": CONTRACT_GROUPS, **kw}
    source = ad_source(dc, source_kw.pop("user_base"), source_kw.pop("group_base"), **source_kw)
    with pytest.raises(error) as caught:
        source.read()
    message = str(caught.value)
    assert re.search(words, message), message
    assert one_sentence(message) and "not-the-password" not in message


# ---------------------------------------------------------------------------------------------
# Change reads: deletions, moves, renames, memberships


_ous = itertools.count(1)


@dataclass
class Area:
    """An OU of a test's own, with people and groups in it, and one outside it."""

    dc: samba.SambaDC
    tag: str
    base: str
    outside: str

    def person(self, key: str, base: str | None = None) -> str:
        return f"CN={key},{base or self.base}"

    def group(self, key: str) -> str:
        return f"CN={key},{self.base}"

    def add_people(self, *keys: str, base: str | None = None) -> None:
        self.dc.add_ldif("".join(user_entry(self.person(k, base), f"{self.tag}-{k}",
                                            given=k, family="Area", mail=f"{k}@{self.tag}.test")
                                 for k in keys))

    def add_group(self, key: str, *members: str) -> None:
        self.dc.add_ldif(group_entry(self.group(key), list(members)))

    def change(self, ldif: str) -> None:
        self.dc.modify_ldif(ldif)


@pytest.fixture
def area(dc):
    n = next(_ous)
    base, outside = f"OU=Area{n},{BASE}", f"OU=Elsewhere{n},{BASE}"
    dc.add_ldif(ou(base) + ou(outside))
    return Area(dc, f"a{n}", base, outside)


def ids(directory: Directory, area: Area) -> dict[str, str]:
    return {str(r.attributes["dn"]).split(",")[0][3:]: r.id
            for r in (*directory.users.values(), *directory.groups.values())}


def test_a_change_read_sees_deleted_users_and_groups(area):
    area.add_people("ann", "ben", "cat")
    area.add_group("team", area.person("ann"), area.person("ben"))
    area.add_group("doomed", area.person("cat"))
    source = deleted_reader(area.dc, area.base)
    full = source.read()
    known = ids(full, area)
    area.change(f"dn: {area.person('ben')}\nchangetype: delete\n\n"
                f"dn: {area.group('doomed')}\nchangetype: delete\n\n")

    changes = source.read_changes(full.cursor, full)
    assert changes.removed_users == {known["ben"]}
    assert changes.removed_groups == {known["doomed"]}
    # AD drops a deleted member from its groups without touching the group's uSNChanged: the
    # group stays as it was in the view, and the member that left the view drops out of it
    view = changes.apply_to(full)
    assert set(view.users) == {known["ann"], known["cat"]}
    desired = map_directory(view, MappingRules.for_source(LdapSource))
    assert {g.display_name: set(g.members) for g in desired.groups.values()} == {
        "team": {known["ann"]}}
    assert len(source.read_changes(changes.cursor, view)) == 0


def test_without_the_right_to_list_deleted_objects_every_cycle_reads_in_full(area):
    area.add_people("dan")
    source = ad_source(area.dc, area.base)                  # svc-split: an ordinary user
    full = source.read()
    with pytest.raises(CursorExpired, match="the bind account cannot list deleted objects on "
                                            r"ldaps://[\d.]+, so a change read would miss "
                                            "deletions; reading in full"):
        source.read_changes(full.cursor, full)
    assert source.check()["deletions"].startswith("at a full read every cycle")
    assert deleted_reader(area.dc, area.base).check()["deletions"].startswith(
        "seen by change reads")


def test_moves_in_and_out_of_the_base_and_renames_through_change_reads(area):
    area.add_people("eve", "fay", "gus")
    area.add_people("hal", base=area.outside)
    area.add_group("crew", area.person("eve"), area.person("hal", area.outside),
                   area.person("gus"))
    area.add_group("old name", area.person("gus"))
    source = deleted_reader(area.dc, area.base)
    full = source.read()
    known = ids(full, area)
    assert full.groups[known["crew"]].members == {known["eve"], known["gus"]}

    area.change(f"dn: {area.person('eve')}\nchangetype: modrdn\nnewrdn: CN=eve\n"
                f"deleteoldrdn: 1\nnewsuperior: {area.outside}\n\n"
                f"dn: {area.person('hal', area.outside)}\nchangetype: modrdn\nnewrdn: CN=hal\n"
                f"deleteoldrdn: 1\nnewsuperior: {area.base}\n\n"
                f"dn: {area.person('gus')}\nchangetype: modrdn\nnewrdn: CN=gus renamed\n"
                f"deleteoldrdn: 1\n\n"
                f"dn: {area.group('old name')}\nchangetype: modrdn\nnewrdn: CN=new name\n"
                f"deleteoldrdn: 1\n\n")
    changes = source.read_changes(full.cursor, full)
    hal = next(uid for uid, u in changes.users.items() if u.attributes["givenName"] == "hal")
    assert changes.removed_users == {known["eve"]}                    # moved out
    assert set(changes.users) == {hal, known["gus"]}                  # moved in; renamed
    assert changes.users[known["gus"]].attributes["dn"] == f"CN=gus renamed,{area.base}"
    # the group that lists hal was not modified by the move, and is re-read all the same
    assert changes.groups[known["crew"]].members == {hal, known["gus"]}
    assert changes.groups[known["old name"]].attributes["cn"] == "new name"
    assert not changes.removed_groups

    view = changes.apply_to(full)
    assert view.users.keys() == (source.read().users.keys())


def test_membership_changes_through_change_reads(area):
    area.add_people("ida", "jon")
    area.add_group("pair", area.person("ida"))
    source = deleted_reader(area.dc, area.base)
    full = source.read()
    known = ids(full, area)
    area.change(f"dn: {area.group('pair')}\nchangetype: modify\n"
                f"add: member\nmember: {area.person('jon')}\n-\n"
                f"delete: member\nmember: {area.person('ida')}\n-\n\n")
    changes = source.read_changes(full.cursor, full)
    assert set(changes.groups) == {known["pair"]} and not changes.users
    assert changes.groups[known["pair"]].members == {known["jon"]}
    assert not changes.removed_users and not changes.removed_groups


def test_a_change_read_after_an_ou_rename_agrees_with_a_full_read(area):
    """AD keeps a renamed OU's users' uSNChanged: a change read does not read them again, and
    the first change to a group that holds them (its member values now spelt with the new
    DNs) dropped them all from it, until the next full read put them back."""
    sub = f"OU=Eng,{area.base}"
    area.dc.add_ldif(ou(sub))
    area.add_people("kim", "lou", base=sub)
    area.add_people("max")
    area.add_group("eng", area.person("kim", sub), area.person("lou", sub))
    source = deleted_reader(area.dc, area.base)
    full = source.read()
    known = ids(full, area)
    area.change(f"dn: {sub}\nchangetype: modrdn\nnewrdn: OU=Engineering\ndeleteoldrdn: 1\n\n"
                f"dn: {area.group('eng')}\nchangetype: modify\n"
                f"add: member\nmember: {area.person('max')}\n-\n\n")
    changes = source.read_changes(full.cursor, full)
    assert changes.groups[known["eng"]].members == {known["kim"], known["lou"], known["max"]}
    assert changes.users[known["kim"]].attributes["dn"] == \
        area.person("kim", f"OU=Engineering,{area.base}")
    merged, again = changes.apply_to(full), source.read()
    assert merged.groups == again.groups and merged.users == again.users


def test_check_reports_users_groups_disabled_and_how_deletions_are_seen(bulk_dc):
    report = deleted_reader(bulk_dc, BULK, BULK_GROUPS).check()
    assert report["flavor"] == "ad" and report["server"] == bulk_dc.url
    assert report["users"] == BULK_USERS
    assert report["disabled"] == sum(is_disabled(i) for i in range(BULK_USERS))
    assert report["groups"] == 1
    assert report["deletions"].startswith("seen by change reads")
