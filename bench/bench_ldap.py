"""Benchmark: the LDAP source's full read against OpenLDAP slapd and Samba AD, each next to
``ldapsearch -E pr=500`` on the same data, in one run.

    .venv/bin/python bench/bench_ldap.py [--users 5000] [--groups 100] [--servers slapd,samba]

Both servers get the same directory (users with the mapped attributes, every 50th disabled,
groups with round-robin members and some nesting): slapd bulk-loaded offline with slapadd,
Samba provisioned into a temporary directory (tests/servers/samba.py, needs root) and loaded
as one LDIF through ``ldapmodify -a``. Both are read over LDAPS with a generated CA. Per
server it times, after one warm-up read, the best of three runs of each (taking turns):

1. ``ldapsearch -E pr=500/noprompt`` (OpenLDAP's C client) making the searches the connector
   makes (groups with their members, the DNs matching the disabled filter, users with the
   mapped attributes), output to /dev/null, process start-up included;
2. the connector's ``read()``;
3. a change read after a handful of changes (3 users modified, 2 memberships changed).

It prints the ratio of 2 to 1 per server (the figure to compare: both sides share the same
machine, server and network, so load moves them together), and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ldap3  # noqa: E402

from connectors.base import Secret  # noqa: E402
from connectors.ldap import LdapSource  # noqa: E402
from tests.servers import samba  # noqa: E402
from tests.servers.slapd import (BASE_LDIF, READER_DN, READER_PASSWORD, SUFFIX,  # noqa: E402
                                 Slapd, ldif_entry)

PAGE = 500
ROUNDS = 3


class Directory:
    """Where the generated directory lives on one server, and how to change it."""

    kind: str
    people: str
    groups: str
    bind_dn: str
    password: str
    url: str
    ca_file: Path

    def settings(self) -> LdapSource.Settings:
        raise NotImplementedError

    def ldapsearch_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSL_CERT", "LDAPTLS"))}
        return {**env, "LDAPTLS_CACERT": str(self.ca_file), "LDAPTLS_REQCERT": "demand"}

    def change(self, users: list[int], add: tuple[int, int], remove: tuple[int, int]) -> None:
        raise NotImplementedError


class SlapdDirectory(Directory):
    kind = "slapd"

    def __init__(self, tmp: Path, users: int, groups: int):
        self.people, self.groups = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"
        self.bind_dn, self.password = READER_DN, READER_PASSWORD
        self.server = Slapd(tmp / "slapd", tls=True)
        self.server.configure()
        ldif = tmp / "slapd.ldif"
        with ldif.open("w") as out:
            out.write(BASE_LDIF + "\n")
            # dated over the past year, as in a directory edited over time: a change read
            # then finds only what changed (and the newest entry, in the cursor's overlap)
            start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=365)
            step = dt.timedelta(days=365) / (users + groups + 1)
            for i in range(users):
                stamp = (start + step * i).strftime("%Y%m%d%H%M%SZ")
                out.write(ldif_entry(self.user_dn(i), {
                    "objectClass": "inetOrgPerson", "uid": f"user{i:05d}", "cn": f"User {i}",
                    **person(i, "departmentNumber"), "modifyTimestamp": stamp,
                    "createTimestamp": stamp,
                    **({"employeeType": "disabled"} if disabled(i) else {})}))
            for g in range(groups):
                stamp = (start + step * (users + g)).strftime("%Y%m%d%H%M%SZ")
                out.write(ldif_entry(self.group_dn(g), {
                    "objectClass": "groupOfNames", "cn": f"group{g:04d}",
                    "member": members(g, users, groups, self.user_dn, self.group_dn),
                    "modifyTimestamp": stamp, "createTimestamp": stamp}))
        started = time.perf_counter()
        self.server.slapadd(ldif)
        self.load_time = time.perf_counter() - started
        self.server.start()
        self.url, self.ca_file = self.server.ldaps_url, self.server.ca_file

    def user_dn(self, i: int) -> str:
        return f"uid=user{i:05d},{self.people}"

    def group_dn(self, g: int) -> str:
        return f"cn=group{g:04d},{self.groups}"

    def settings(self) -> LdapSource.Settings:
        return LdapSource.Settings(url=(self.url,), user_base=self.people, group_base=self.groups,
                                   bind_dn=self.bind_dn, password=Secret(self.password),
                                   ca_file=self.ca_file, disabled_filter="(employeeType=disabled)",
                                   page_size=PAGE)

    def change(self, users, add, remove) -> None:
        conn = self.server.admin_connection()
        apply_changes(conn, self, users, add, remove)

    def stop(self) -> None:
        self.server.stop()


class SambaDirectory(Directory):
    kind = "samba"

    def __init__(self, tmp: Path, users: int, groups: int):
        self.people, self.groups = f"OU=People,{samba.BASE}", f"OU=Groups,{samba.BASE}"
        self.bind_dn, self.password = samba.SVC_DELETED_UPN, samba.SVC_DELETED_PASSWORD
        self.server = samba.SambaDC(tmp / "samba")
        started = time.perf_counter()
        self.server.start()
        self.provision_time = time.perf_counter() - started
        self.server.add_ldif(samba.service_accounts_ldif())
        self.server.grant_deleted_objects_read(samba.SVC_DELETED)
        parts = [ldif_entry(self.people, {"objectClass": "organizationalUnit"}),
                 ldif_entry(self.groups, {"objectClass": "organizationalUnit"})]
        for i in range(users):
            parts.append(ldif_entry(self.user_dn(i), {
                "objectClass": "user", "sAMAccountName": f"user{i:05d}",
                "userPrincipalName": f"user{i:05d}@{samba.UPN_SUFFIX}", **person(i, "department"),
                "userAccountControl": "546" if disabled(i) else "544"}))
        for g in range(groups):            # nested groups come later in the file: add first
            parts.append(ldif_entry(self.group_dn(g), {"objectClass": "group"}))
        for g in range(groups):
            parts.append(f"dn: {self.group_dn(g)}\nchangetype: modify\nadd: member\n"
                         + "".join(f"member: {m}\n"
                                   for m in members(g, users, groups, self.user_dn,
                                                    self.group_dn)) + "-\n\n")
        started = time.perf_counter()
        self.server.add_ldif("".join(parts))
        self.load_time = time.perf_counter() - started
        self.url, self.ca_file = self.server.url, self.server.ca_file

    def user_dn(self, i: int) -> str:
        return f"CN=User {i:05d},{self.people}"

    def group_dn(self, g: int) -> str:
        return f"CN=group{g:04d},{self.groups}"

    def settings(self) -> LdapSource.Settings:
        return LdapSource.Settings(url=(self.url,), flavor="ad", user_base=self.people,
                                   group_base=self.groups, bind_dn=self.bind_dn,
                                   password=Secret(self.password), ca_file=self.ca_file,
                                   page_size=PAGE)

    def change(self, users, add, remove) -> None:
        apply_changes(self.server.admin_connection(), self, users, add, remove)

    def stop(self) -> None:
        self.server.stop()


def person(i: int, department: str) -> dict[str, str]:
    """The mapped attributes; ``department`` is the attribute's name on this server
    (inetOrgPerson has departmentNumber, AD department)."""
    return {"sn": f"Number{i}", "givenName": "User", "displayName": f"User Number {i}",
            "mail": f"user{i:05d}@example.org", "title": "Engineer", department: f"D{i % 40}",
            "employeeNumber": str(i)}


def disabled(i: int) -> bool:
    return i % 50 == 0


def members(g: int, users: int, groups: int, user_dn, group_dn) -> list[str]:
    found = [user_dn(j) for j in range(g, users, groups)]
    if g:                                              # some nesting
        found.append(group_dn((g - 1) // 10))
    return found


def apply_changes(conn: ldap3.Connection, where: Directory, users, add, remove) -> None:
    for i in users:
        conn.modify(where.user_dn(i), {"title": [(ldap3.MODIFY_REPLACE, ["Staff Engineer"])]})
    conn.modify(where.group_dn(add[0]), {"member": [(ldap3.MODIFY_ADD, [where.user_dn(add[1])])]})
    conn.modify(where.group_dn(remove[0]),
                {"member": [(ldap3.MODIFY_DELETE, [where.user_dn(remove[1])])]})
    conn.unbind()


def ldapsearch(where: Directory, base: str, flt: str, attributes: list[str]) -> None:
    url = where.url.replace("localhost", "127.0.0.1")   # libldap canonicalises "localhost"
    subprocess.run(["ldapsearch", "-x", "-LLL", "-H", url, "-D", where.bind_dn,
                    "-w", where.password, "-b", base, "-E", f"pr={PAGE}/noprompt", flt,
                    *attributes], check=True, stdout=subprocess.DEVNULL, timeout=600,
                   env=where.ldapsearch_env())


def measure(where: Directory, users: int, groups: int) -> dict[str, float]:
    settings = where.settings()
    settings.validate()                                 # what loading a config would do
    source = LdapSource(settings)
    source.read()                                       # warm the server's caches
    group_attributes = [*source.group_record_attributes,
                        "member;range=0-1499" if settings.flavor == "ad" else "member"]

    def reference() -> None:
        ldapsearch(where, where.groups, source.group_filter, group_attributes)
        ldapsearch(where, where.people, f"(&{source.user_filter}{source.disabled_filter})",
                   ["1.1"])
        ldapsearch(where, where.people, source.user_filter, source.user_attributes)

    # best of ROUNDS, the two taking turns: on a shared machine the fastest run of each is
    # the one least disturbed by other work
    c_time = py_time = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        reference()
        c_time = min(c_time, time.perf_counter() - started)
        started = time.perf_counter()
        directory = source.read()
        py_time = min(py_time, time.perf_counter() - started)
    assert len(directory.users) == users and len(directory.groups) == groups, \
        (len(directory.users), len(directory.groups))

    where.change([1, 2, 3], add=(1, 7), remove=(2, 2))
    if where.kind == "slapd":
        time.sleep(1.1)                                 # modifyTimestamp has 1 s resolution
    started = time.perf_counter()
    changes = source.read_changes(directory.cursor, directory)
    change_time = time.perf_counter() - started
    return {"ldapsearch": c_time, "read": py_time, "change": change_time,
            "changed_users": len(changes.users), "changed_groups": len(changes.groups),
            "load": where.load_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--servers", default="slapd,samba",
                        help="comma-separated: slapd, samba (samba needs root)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if "samba" in kinds and samba.unavailable_reason():
        sys.exit(f"cannot run Samba here: {samba.unavailable_reason()}")

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp:
        for kind in kinds:
            cls = {"slapd": SlapdDirectory, "samba": SambaDirectory}[kind]
            where = cls(Path(tmp), args.users, args.groups)
            try:
                results[kind] = measure(where, args.users, args.groups)
            finally:
                where.stop()

    print(f"{args.users} users, {args.groups} groups, pages of {PAGE}, over LDAPS on loopback")
    for kind, r in results.items():
        print(f"{kind:6} load {r['load']:6.1f}s | ldapsearch {r['ldapsearch']:5.2f}s | "
              f"read() {r['read']:5.2f}s = {r['read'] / r['ldapsearch']:.1f}x ldapsearch | "
              f"change read {r['change'] * 1000:4.0f} ms ({r['changed_users']} users, "
              f"{r['changed_groups']} groups)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
