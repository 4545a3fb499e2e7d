"""Expressions and scope rules on every source, end to end: one organisation (employees, a
guest, a contractor, a service account, someone with no given name, someone with no
department, an over-long group name, a temporary group), held the vendor's way by the file
source, a real slapd, the fake Okta and the fake Graph (the servers of
tests/test_sources_end_to_end.py), synced to the fake Split through a real config.toml.

Each source writes the same rules in its own attribute names, and Split must end up holding
exactly the same thing: every expression kind (attribute, list, constant, template, every
filter, manager reference) and every scope operator (equals, in, regex, present, absent, and
a group rule) shows in what was pushed. A second sync sends nothing; a user who then leaves
the scope is deactivated.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest

from agent.app import build_agent
from agent.config import load
from agent.core.outcome import Outcome
from tests.conftest import TOKEN
from tests.fakes.graph import FakeEntra, FakeEntraServer, make_pki
from tests.fakes.okta import FakeClock, FakeOkta
from tests.servers import slapd as slapd_server

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@dataclass(frozen=True)
class Person:
    key: str                      # the local part of the e-mail, lower-cased: uid / login
    given: str
    family: str
    mail: str
    title: str = ""
    department: str = ""
    kind: str = "employee"        # employee | guest | contractor
    manager: str | None = None    # key of the manager
    display: str = ""             # a displayName of its own (else the template makes one)


PEOPLE = (
    Person("ann.lee", "Ann", "Lee", "Ann.Lee@ACME.example", "Engineer", "Engineering",
           display="Ann L."),
    Person("ben.ode", "Ben", "Ode", "ben.ode@acme.example", "", "Engineering", manager="ann.lee"),
    Person("gus", "Gus", "Tan", "gus@partner.example", "Consultant", "Sales", kind="guest"),
    Person("cody", "Cody", "Fry", "cody@acme.example", "Developer", "Engineering",
           kind="contractor", manager="ann.lee"),
    Person("svc-backup", "Backup", "Service", "svc-backup@acme.example", "", "IT"),
    Person("robot", "", "Robot", "robot@acme.example", "", "IT"),     # no given name
    Person("nia", "Nia", "Obi", "nia@acme.example"),                  # no department
)
BY_KEY = {p.key: p for p in PEOPLE}
GROUPS = (
    ("eng", "Engineering", ("ann.lee", "ben.ode", "cody", "svc-backup")),
    ("rnd", "Department of Research and Development", ("ann.lee",)),
    ("tmp", "tmp-migration-2024", ("ben.ode",)),
)

# What Split must hold, whatever the source
EXPECTED_USERS = {
    "ann.lee@acme.example": {
        "displayName": "Ann L.", "title": "Engineer", "department": "Engineering",
        "organization": "Acme", "division": "ACME", "nickName": "ann.lee", "manager": None},
    "ben.ode@acme.example": {
        "displayName": "Ben Ode", "title": "Staff", "department": "Engineering",
        "organization": "Acme", "division": "ACME", "nickName": "ben.ode",
        "manager": "ann.lee@acme.example"},
}
EXPECTED_GROUPS = {
    "Engineering": {"ann.lee@acme.example", "ben.ode@acme.example"},
    "Research and Development": {"ann.lee@acme.example"},
}


def oid(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value) if isinstance(value, Path) else value)


# ---------------------------------------------------------------------------------------------
# One organisation per source: the same people, in the vendor's own attributes


@dataclass
class Names:
    """The vendor's attribute names for what the rules and expressions read."""
    mail: str
    given: str
    family: str
    display: str
    title: str
    department: str
    guest: str                    # attribute marking guests (value "Guest")
    contractor: str               # attribute marking contractors (value "Contractor")
    account: str                  # the account name service accounts are recognised by
    manager: str
    group_name: str


class Org:
    kind: str
    names: Names

    def settings(self) -> dict:
        raise NotImplementedError

    def make_contractor(self, key: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class FileOrg(Org):
    kind = "file"
    names = Names("email", "givenName", "familyName", "displayName", "title", "department",
                  "userType", "employeeType", "userName", "manager", "displayName")

    def __init__(self, root: Path, pki):
        self.path = root / "directory.json"
        self.people = {p.key: p for p in PEOPLE}
        self.write()

    def write(self) -> None:
        users = []
        for p in self.people.values():
            record = {"id": p.key, "userName": p.mail, "email": p.mail, "givenName": p.given,
                      "familyName": p.family, "title": p.title, "department": p.department,
                      "displayName": p.display, "manager": p.manager or ""}
            if p.kind == "guest":
                record["userType"] = "Guest"
            if p.kind == "contractor":
                record["employeeType"] = "Contractor"
            users.append(record)
        groups = [{"id": gid, "displayName": name, "members": list(members)}
                  for gid, name, members in GROUPS]
        self.path.write_text(json.dumps({"users": users, "groups": groups}))

    def settings(self):
        return {"path": self.path}

    def make_contractor(self, key):
        person = self.people[key]
        self.people[key] = Person(**{**person.__dict__, "kind": "contractor"})
        self.write()


PEOPLE_BASE = f"ou=people,{slapd_server.SUFFIX}"
GROUPS_BASE = f"ou=groups,{slapd_server.SUFFIX}"


def person_dn(key: str) -> str:
    return f"uid={key},{PEOPLE_BASE}"


class LdapOrg(Org):
    kind = "ldap"
    names = Names("mail", "givenName", "sn", "displayName", "title", "departmentNumber",
                  "employeeType", "employeeType", "uid", "manager", "cn")

    def __init__(self, root: Path, pki):
        entries = []
        for p in PEOPLE:
            attrs = {"objectClass": "inetOrgPerson", "uid": p.key, "sn": p.family,
                     "cn": f"{p.given} {p.family}".strip(), "mail": p.mail}
            for name, value in (("givenName", p.given), ("title", p.title),
                                ("departmentNumber", p.department), ("displayName", p.display),
                                ("manager", person_dn(p.manager) if p.manager else "")):
                if value:
                    attrs[name] = value
            if p.kind != "employee":
                attrs["employeeType"] = p.kind.capitalize()
            entries.append(slapd_server.ldif_entry(person_dn(p.key), attrs))
        for gid, name, members in GROUPS:
            entries.append(slapd_server.ldif_entry(f"cn={name},{GROUPS_BASE}", {
                "objectClass": "groupOfNames", "cn": name,
                "member": [person_dn(k) for k in members]}))
        self.slapd = slapd_server.Slapd(root / "slapd", tls=True)
        self.slapd.slapadd(slapd_server.BASE_LDIF + "\n" + "".join(entries))
        self.slapd.start()
        (root / "ldap.password").write_text(slapd_server.READER_PASSWORD + "\n")

    def settings(self):
        return {"url": self.slapd.ldaps_url, "ca_file": self.slapd.ca_file,
                "bind_dn": slapd_server.READER_DN, "password": {"file": "ldap.password"},
                "user_base": PEOPLE_BASE, "group_base": GROUPS_BASE, "timeout": 5}

    def make_contractor(self, key):
        conn = self.slapd.admin_connection()
        try:
            conn.modify(person_dn(key), {"employeeType": [(ldap3.MODIFY_REPLACE, ["Contractor"])]})
        finally:
            conn.unbind()

    def stop(self):
        self.slapd.stop()


class OktaOrg(Org):
    kind = "okta"
    names = Names("profile.email", "profile.firstName", "profile.lastName",
                  "profile.displayName", "profile.title", "profile.department",
                  "profile.userType", "profile.employeeType", "profile.login",
                  "profile.managerId", "profile.name")

    def __init__(self, root: Path, pki):
        self.clock = FakeClock()
        self.okta = FakeOkta(clock=self.clock).start()
        self.ids: dict[str, str] = {}
        for p in sorted(PEOPLE, key=lambda p: p.manager is not None):   # managers first
            profile = {"title": p.title or None, "department": p.department or None,
                       "displayName": p.display or None}
            if p.kind == "guest":
                profile["userType"] = "Guest"
            if p.kind == "contractor":
                profile["employeeType"] = "Contractor"
            if p.manager:
                profile["managerId"] = self.ids[p.manager]
            self.ids[p.key] = self.okta.add_user(p.mail, p.given, p.family, **profile)
        for gid, name, members in GROUPS:
            self.okta.add_group(name, [self.ids[k] for k in members])
        self.okta.add_group("Everyone", list(self.ids.values()), type="BUILT_IN")
        self.clock.advance(3600)

    def settings(self):
        return {"org_url": self.okta.url, "token": self.okta.api_token, "timeout": 5}

    def make_contractor(self, key):
        self.clock.advance(120)               # past the change cursor's overlap
        self.okta.update_user(self.ids[key], employeeType="Contractor")

    def stop(self):
        self.okta.stop()


ENTRA_CLIENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
ENTRA_SECRET = "s3cr3t~value.that-is-long"


class EntraOrg(Org):
    kind = "entra"
    names = Names("mail", "givenName", "surname", "displayName", "jobTitle", "department",
                  "userType", "employeeType", "userPrincipalName",
                  "onPremisesExtensionAttributes.extensionAttribute1", "displayName")

    def __init__(self, root: Path, pki):
        self.fake = FakeEntra()
        self.fake.add_app(ENTRA_CLIENT, secret=ENTRA_SECRET)
        for p in PEOPLE:
            props = {"mail": p.mail, "userPrincipalName": f"{p.key}@acme.example",
                     "surname": p.family, "userType": "Guest" if p.kind == "guest" else "Member",
                     "onPremisesExtensionAttributes": {
                         "extensionAttribute1": oid(p.manager) if p.manager else None}}
            for name, value in (("givenName", p.given), ("jobTitle", p.title),
                                ("department", p.department), ("displayName", p.display)):
                if value:
                    props[name] = value
            if p.kind == "contractor":
                props["employeeType"] = "Contractor"
            self.fake.add_user(oid(p.key), **props)
        for gid, name, members in GROUPS:
            self.fake.add_group(oid("g-" + gid), displayName=name)
            for key in members:
                self.fake.add_member(oid("g-" + gid), oid(key))
        self.server = FakeEntraServer(self.fake, pki).start()
        (root / "entra.secret").write_text(ENTRA_SECRET)
        self.pki = pki

    def settings(self):
        return {"tenant_id": self.fake.tenant_id, "client_id": ENTRA_CLIENT,
                "client_secret": {"file": "entra.secret"}, "authority": self.server.url,
                "graph_url": self.server.url, "ca_file": self.pki.ca_file, "timeout": 5}

    def make_contractor(self, key):
        self.fake.update_user(oid(key), employeeType="Contractor")

    def stop(self):
        self.server.stop()


ORGS = {"file": FileOrg, "ldap": LdapOrg, "okta": OktaOrg, "entra": EntraOrg}


def mapping_config(n: Names) -> str:
    """[source.attributes], [source.group_attributes] and [[source.scope]] in ``n``'s names:
    every expression kind and every scope operator."""
    attributes = {
        "userName": f"{{{n.mail} | lower}}",                               # lower
        "email": f"{{{n.mail} | lower}}",
        "displayName": [n.display, f"{{{n.given}}} {{{n.family}}}"],      # list, template
        "title": f"{{{n.title} | trim | default('Staff')}}",               # trim, default
        "department": n.department,                                         # an attribute
        "organization": {"constant": "Acme"},                               # a constant
        "nickName": f"{{{n.mail} | lower | split('@')}}",                   # split
        "division": f"{{{n.mail} | regex('@([^.]+)[.]', 1) | upper}}",     # regex, upper
        "manager": n.manager,                                               # a reference
    }
    group_name = (f"{{{n.group_name} | replace('Department of ', '') | truncate(24) | trim}}")
    rules = [
        {"action": "include", "attribute": n.department, "present": True},
        {"action": "exclude", "attribute": n.guest, "equals": "Guest"},
        {"action": "exclude", "attribute": n.contractor, "in": ["Contractor", "Intern"]},
        {"action": "exclude", "attribute": n.account, "regex": "^svc-"},
        {"action": "exclude", "attribute": n.given, "absent": True},
        {"action": "exclude", "objects": "groups", "attribute": n.group_name, "regex": "^tmp-"},
    ]
    lines = ["[source.attributes]"] + [f"{k} = {toml(v)}" for k, v in attributes.items()]
    lines += ["", "[source.group_attributes]", f"displayName = {toml(group_name)}"]
    for rule in rules:
        lines += ["", "[[source.scope]]"] + [f"{k} = {toml(v)}" for k, v in rule.items()]
    return "\n".join(lines)


@dataclass
class Setup:
    root: Path
    split: object
    org: Org
    config: Path = field(init=False)

    def __post_init__(self):
        self.config = self.root / "config.toml"
        (self.root / "split.token").write_text(TOKEN + "\n")
        source = {"type": self.org.kind, **self.org.settings()}
        if self.org.kind != "file":
            source["full_read_every"] = "1h"
        target = {"url": self.split.base_url, "token": {"file": "split.token"},
                  "rate_limit": 1000.0, "timeout": 5, "max_attempts": 4}
        lines = ["[state]", 'path = "state/agent.db"', "", "[source]"]
        lines += [f"{k} = {toml(v)}" for k, v in source.items()]
        lines += ["", mapping_config(self.org.names), "", "[target]"]
        lines += [f"{k} = {toml(v)}" for k, v in target.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def sync(self):
        self.split.reset_log()
        return build_agent(load(self.config)).sync()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=sorted(ORGS))
def setup(request, tmp_path, fake_split, pki):
    if request.param == "ldap" and not slapd_server.available():
        pytest.skip("slapd / ldap-utils not installed")
    org = ORGS[request.param](tmp_path, pki)
    try:
        yield Setup(tmp_path, fake_split, org)
    finally:
        org.stop()


def split_users(split) -> dict[str, dict]:
    """userName -> the attributes this test checks, manager as the manager's userName."""
    names = {sid: u["userName"] for sid, u in split.users.items()}
    out = {}
    for u in split.users.values():
        enterprise = u.get(ENTERPRISE) or {}
        manager = (enterprise.get("manager") or {}).get("value")
        out[u["userName"]] = {
            "active": u["active"], "email": u["emails"][0]["value"],
            "displayName": u.get("displayName"), "title": u.get("title"),
            "nickName": u.get("nickName"), "department": enterprise.get("department"),
            "organization": enterprise.get("organization"),
            "division": enterprise.get("division"),
            "manager": names.get(manager) if manager else None}
    return out


def split_groups(split) -> dict[str, set[str]]:
    names = {sid: u["userName"] for sid, u in split.users.items()}
    return {g["displayName"]: {names[m["value"]] for m in g.get("members", [])}
            for g in split.groups.values()}


# ---------------------------------------------------------------------------------------------


def test_every_expression_kind_and_scope_rule_gives_the_same_split_on_every_source(setup):
    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    assert not result.plan.problems, result.plan.problems
    users = split_users(setup.split)
    assert set(users) == set(EXPECTED_USERS)          # guest, contractor, svc, robot, nia: out
    for user_name, expected in EXPECTED_USERS.items():
        assert users[user_name] == {"active": True, "email": user_name, **expected}, user_name
    assert split_groups(setup.split) == EXPECTED_GROUPS    # tmp- left out, long name shortened

    again = setup.sync()
    assert again.outcome is Outcome.OK, again.message
    assert again.plan.is_empty, again.plan.to_dict()
    assert setup.split.writes() == []


def test_a_user_who_leaves_the_scope_is_deactivated(setup):
    assert setup.sync().outcome is Outcome.OK
    setup.org.make_contractor("ben.ode")
    result = setup.sync()
    assert result.outcome is Outcome.OK, result.message
    deactivated = [op for op in result.plan.ops if op.kind.value == "deactivate_user"]
    assert [(op.key, op.reason) for op in deactivated] == [
        ("ben.ode@acme.example", "no longer in the source or its scope")]
    users = split_users(setup.split)
    assert users["ben.ode@acme.example"]["active"] is False
    assert users["ann.lee@acme.example"]["active"] is True
    assert split_groups(setup.split)["Engineering"] == {"ann.lee@acme.example"}


def test_plan_explain_answers_for_users_and_groups_on_every_source(setup, capsys):
    from agent.cli.main import main

    def explained(key):
        assert main(["--config", str(setup.config), "plan", "--explain", key,
                     "--output", "json"]) == 0
        [found] = json.loads(capsys.readouterr().out)["objects"]
        return found

    guest = explained("gus@partner.example")
    assert guest["scope"]["in_scope"] is False and guest["scope"]["rule"] == 2
    assert guest["plan"] == []
    contractor = explained("cody@acme.example")
    assert contractor["scope"]["rule"] == 3
    service = explained("svc-backup@acme.example")
    assert service["scope"]["rule"] == 4
    robot = explained("robot@acme.example")
    assert robot["scope"]["rule"] == 5
    nia = explained("nia@acme.example")
    assert nia["scope"]["reason"] == ("out of scope: matches no include rule for users "
                                      "(scope rule 1)")
    ben = explained("ben.ode@acme.example")
    attributes = {a["name"]: a for a in ben["attributes"]}
    assert attributes["title"]["value"] == "Staff"
    assert attributes["manager"]["note"].startswith("refers to ann.lee@acme.example")
    assert [p["op"] for p in ben["plan"]] == ["create_user", "add_members"]

    long_name = explained("Department of Research and Development")
    assert long_name["key"] == "Research and Development"
    assert long_name["members"] == ["ann.lee@acme.example"]
    temporary = explained("tmp-migration-2024")
    assert temporary["scope"]["rule"] == 6 and temporary["plan"] == []
