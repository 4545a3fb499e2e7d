"""Benchmark: the LDAP source reading 50 000 users and 1 000 groups from a local slapd.

    .venv/bin/python bench/bench_ldap.py [--users 50000] [--groups 1000]

Bulk-loads the directory offline with slapadd (entries dated over the past year, as in a
directory edited over time), starts slapd on a loopback port, then times:

1. ``ldapsearch -E pr=500/noprompt`` (OpenLDAP's C client) dumping the same searches the
   connector makes (users with the mapped attributes, groups with members, the DNs matching
   the disabled filter) to /dev/null;
2. the connector's ``read()``;
3. a change read after a handful of changes (3 users modified, 2 memberships changed).

Prints the ratio of 2 to 1 and the peak RSS of this process (resource.getrusage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
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
from tests.servers.slapd import (BASE_LDIF, READER_DN, READER_PASSWORD, SUFFIX,  # noqa: E402
                                 Slapd)

PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"
DISABLED = "(employeeType=disabled)"


def generate(path: Path, users: int, groups: int) -> None:
    start = dt.datetime.now() - dt.timedelta(days=365)
    step = dt.timedelta(days=365) / (users + groups + 1)

    def stamp(i: int) -> str:
        t = (start + step * i).strftime("%Y%m%d%H%M%SZ")
        return f"modifyTimestamp: {t}\ncreateTimestamp: {t}\n"

    with path.open("w") as out:
        out.write(BASE_LDIF + "\n")
        for i in range(users):
            out.write(f"dn: uid=user{i:05d},{PEOPLE}\nobjectClass: inetOrgPerson\n"
                      f"uid: user{i:05d}\ncn: User {i}\nsn: Number{i}\ngivenName: User\n"
                      f"displayName: User Number {i}\nmail: user{i:05d}@example.org\n"
                      f"title: Engineer\ndepartmentNumber: D{i % 40}\nemployeeNumber: {i}\n"
                      + ("employeeType: disabled\n" if i % 50 == 0 else "") + stamp(i) + "\n")
        for g in range(groups):
            members = "".join(f"member: uid=user{j:05d},{PEOPLE}\n"
                              for j in range(g, users, groups))
            if g:                                       # some nesting
                members += f"member: cn=group{(g - 1) // 10:04d},{GROUPS}\n"
            out.write(f"dn: cn=group{g:04d},{GROUPS}\nobjectClass: groupOfNames\n"
                      f"cn: group{g:04d}\n{members}{stamp(users + g)}\n")


def ldapsearch(url: str, base: str, flt: str, attributes: list[str]) -> None:
    subprocess.run(["ldapsearch", "-x", "-LLL", "-H", url, "-D", READER_DN, "-w", READER_PASSWORD,
                    "-b", base, "-E", "pr=500/noprompt", flt, *attributes],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=1_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp:
        server = Slapd(Path(tmp))
        ldif = Path(tmp) / "bulk.ldif"
        generate(ldif, args.users, args.groups)
        t = time.perf_counter()
        server.slapadd(ldif)
        print(f"slapadd of {args.users} users + {args.groups} groups: "
              f"{time.perf_counter() - t:.1f}s")
        server.start()
        try:
            settings = LdapSource.Settings(
                url=(server.url,), user_base=PEOPLE, group_base=GROUPS, bind_dn=READER_DN,
                password=Secret(READER_PASSWORD), disabled_filter=DISABLED)
            settings.validate()                         # what loading a config would do
            source = LdapSource(settings)
            source.read()                               # warm the server's caches

            t = time.perf_counter()
            ldapsearch(server.url, GROUPS, source.group_filter, [*source.group_record_attributes, "member"])
            ldapsearch(server.url, PEOPLE, f"(&{source.user_filter}{DISABLED})", ["1.1"])
            ldapsearch(server.url, PEOPLE, source.user_filter, source.user_attributes)
            c_time = time.perf_counter() - t

            t = time.perf_counter()
            directory = source.read()
            py_time = time.perf_counter() - t
            assert len(directory.users) == args.users and len(directory.groups) == args.groups

            admin = server.admin_connection()
            for i in (1, 2, 3):
                admin.modify(f"uid=user{i:05d},{PEOPLE}",
                             {"title": [(ldap3.MODIFY_REPLACE, ["Staff Engineer"])]})
            admin.modify(f"cn=group0001,{GROUPS}",
                         {"member": [(ldap3.MODIFY_ADD, [f"uid=user00007,{PEOPLE}"])]})
            admin.modify(f"cn=group0002,{GROUPS}",
                         {"member": [(ldap3.MODIFY_DELETE, [f"uid=user00002,{PEOPLE}"])]})
            t = time.perf_counter()
            changes = source.read_changes(directory.cursor, directory)
            change_time = time.perf_counter() - t
        finally:
            server.stop()

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ldapsearch -E pr=500 (users, groups, disabled): {c_time:.2f}s")
    print(f"LdapSource.read():                             {py_time:.2f}s "
          f"({py_time / c_time:.1f}x ldapsearch)")
    print(f"change read after 5 changes:                   {change_time * 1000:.0f} ms, "
          f"{len(changes.users)} users + {len(changes.groups)} groups read")
    print(f"peak RSS of this process:                      {rss:.0f} MiB")


if __name__ == "__main__":
    main()
