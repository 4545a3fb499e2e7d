"""Benchmark: what a full read and a change read cost in calls, from Entra ID (Microsoft
Graph) and from Okta, against the fakes in tests/fakes/ at a large size, in one run.

    .venv/bin/python bench/bench_reads.py [--users 100000] [--groups 5000]
                                          [--memberships 500000] [--seed 1] [--only graph,okta]

The same seeded directory goes into both fakes: N users, G groups holding M memberships
(five big groups share a tenth of them, the rest are spread evenly; members distinct within a
group). Each fake pages as its service does (Graph: users in pages of $top=999; delta rounds
of at most 200 objects, members@delta in objects of 500 entries, at most 500 entries a page;
Okta: users and groups in pages of 200, group members in pages of the 1 000 asked for). Then
1 % of the users change and a few groups are created and re-membered, and a change read
follows. It prints, per source and read, the calls by endpoint, next to the formula they
should meet; a call is a request, however big its page. Time is not measured: the fakes run
on this machine and say nothing about a tenant's latency. tests/test_bench_reads.py runs it
at a small size.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.base import Secret  # noqa: E402
from connectors.entra import EntraSource  # noqa: E402
from connectors.http import HttpPolicy  # noqa: E402
from connectors.okta import OktaSource  # noqa: E402
from tests.fakes.graph import FakeEntra, FakeEntraServer, make_pki  # noqa: E402
from tests.fakes.okta import FakeClock, FakeOkta  # noqa: E402

CLIENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
SECRET = "bench-secret-value-0123456789"
GRAPH_PAGE = 999                 # $top for /users
OKTA_PAGE, OKTA_MEMBERS_PAGE = 200, 1000


@dataclass(frozen=True)
class Shape:
    """A seeded directory: user indexes per group, and what a change round does."""

    users: int
    groups: list[list[int]]
    changed_users: list[int]
    new_groups: list[list[int]]
    regrouped: list[tuple[int, int, int]]       # (group, user added, user removed)

    @property
    def memberships(self) -> int:
        return sum(map(len, self.groups))


def shape(users: int, groups: int, memberships: int, seed: int = 1) -> Shape:
    rng = random.Random(seed)
    big = min(5, groups)
    sizes = [min(users, memberships // 10 // big)] * big if big else []
    rest = memberships - sum(sizes)
    small = groups - big
    sizes += [min(users, rest // small + (1 if i < rest % small else 0)) for i in range(small)] \
        if small else []
    members = [rng.sample(range(users), size) for size in sizes]
    changed = rng.sample(range(users), max(1, users // 100))
    fresh = [rng.sample(range(users), min(users, 20)) for _ in range(3)]
    regrouped = []
    for g in rng.sample(range(big, groups) if groups > big else range(groups), min(10, groups)):
        inside = set(members[g])
        outside = next(u for u in rng.sample(range(users), min(users, 50)) if u not in inside) \
            if len(inside) < users else None
        if outside is not None and members[g]:
            regrouped.append((g, outside, members[g][0]))
    return Shape(users, members, changed, fresh, regrouped)


def graph_formula(s: Shape, fake: FakeEntra) -> dict[str, str]:
    objects = sum(max(1, math.ceil(len(m) / fake.members_delta_chunk)) for m in s.groups)
    per_page, budget = fake.delta_page_size, fake.delta_page_members
    least = math.ceil(s.memberships / budget)
    most = math.ceil(objects / per_page) + math.ceil(2 * s.memberships / budget) + 1
    return {"/v1.0/users/delta ($deltatoken=latest)": "1",
            "/v1.0/groups/delta ($deltatoken=latest)": "1",
            "/v1.0/users": f"ceil(N/{GRAPH_PAGE}) = {math.ceil(s.users / GRAPH_PAGE)}",
            "/v1.0/groups/delta": (f"between ceil(M/{budget}) = {least} and ceil(objects/"
                                   f"{per_page}) + ceil(2M/{budget}) + 1 = {most}")}


def graph_counts(s: Shape) -> dict[str, Counter]:
    """Calls by endpoint of a full read and then a change read of ``s`` from the fake Graph."""
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        fake = FakeEntra()
        fake.add_app(CLIENT_ID, secret=SECRET)
        ids = [str(uuid.UUID(int=i + 1)) for i in range(s.users)]
        for i, uid in enumerate(ids):
            fake.add_user(uid, mail=f"user{i}@example.org", givenName="Given", surname=str(i),
                          displayName=f"User {i}", department=f"D{i % 40}")
        gids = [str(uuid.UUID(int=(1 << 64) + g)) for g in range(len(s.groups))]
        for g, members in enumerate(s.groups):
            fake.load_group(gids[g], f"Group {g}", [ids[u] for u in members])
        pki = make_pki(Path(tmp) / "pki")
        server = FakeEntraServer(fake, pki).start()
        try:
            source = EntraSource(
                EntraSource.Settings(tenant_id=fake.tenant_id, client_id=CLIENT_ID,
                                     client_secret=Secret(SECRET), authority=server.url,
                                     graph_url=server.url, ca_file=pki.ca_file, timeout=300),
                policy=HttpPolicy(timeout=300, rate_limit=10_000, ca_file=pki.ca_file))
            try:
                full = source.read()
                assert len(full.users) == s.users and len(full.groups) == len(s.groups)
                assert sum(len(g.members) for g in full.groups.values()) == s.memberships
                full_calls = _graph_calls(fake)
                fake.requests.clear()
                for u in s.changed_users:
                    fake.update_user(ids[u], jobTitle="Changed")
                for n, members in enumerate(s.new_groups):
                    fake.add_group(displayName=f"New {n}", members=[ids[u] for u in members])
                for g, added, removed in s.regrouped:
                    fake.add_member(gids[g], ids[added])
                    fake.remove_member(gids[g], ids[removed])
                changes = source.read_changes(full.cursor, full)
                assert len(changes.users) == len(set(s.changed_users))
                change_calls = _graph_calls(fake)
            finally:
                source.close()
        finally:
            server.stop()
        return {"full": full_calls, "change": change_calls,
                "formula": graph_formula(s, fake)}


def _graph_calls(fake: FakeEntra) -> Counter:
    counted: Counter = Counter()
    for _, path, query in fake.requests:
        if not path.startswith("/v1.0/"):
            continue
        if path.startswith("/v1.0/groups/") and path != "/v1.0/groups/delta":
            path = "/v1.0/groups/{id}/..."
        if path == "/v1.0/groups/delta" and "$filter" in query:
            path += " ($filter on ids)"
        if query.get("$deltatoken") == "latest":
            path += " ($deltatoken=latest)"
        counted[path] += 1
    return counted


def okta_formula(s: Shape) -> dict[str, str]:
    per_group = sum(max(1, math.ceil(len(m) / OKTA_MEMBERS_PAGE)) for m in s.groups)
    return {"/api/v1/groups": f"ceil(G/{OKTA_PAGE}) = {math.ceil(len(s.groups) / OKTA_PAGE)}",
            "/api/v1/groups/{id}/users": f"sum over groups of max(1, ceil(m/{OKTA_MEMBERS_PAGE}))"
                                         f" = {per_group}",
            "/api/v1/users": f"ceil(N/{OKTA_PAGE}) = {math.ceil(s.users / OKTA_PAGE)}",
            "/api/v1/users (filter)": "1 (DEPROVISIONED users: none here)"}


def okta_counts(s: Shape) -> dict[str, Counter]:
    """Calls by endpoint of a full read and then a change read of ``s`` from the fake Okta."""
    clock = FakeClock(1_700_000_000)
    with FakeOkta(clock=clock, rate_limit=10**9) as fake:
        ids = [fake.add_user(f"user{i}@example.org", "Given", str(i), uid=f"00u{i:017d}")
               for i in range(s.users)]
        gids = [fake.add_group(f"Group {g}", members=[ids[u] for u in members],
                               gid=f"00g{g:017d}") for g, members in enumerate(s.groups)]
        clock.advance(600)
        source = OktaSource(OktaSource.Settings(org_url=fake.url,
                                                token=Secret(fake.api_token, "bench")),
                            clock=clock.time, sleep=clock.sleep)
        try:
            full = source.read()
            assert len(full.users) == s.users and len(full.groups) == len(s.groups)
            full_calls = _okta_calls(fake)
            fake.requests.clear()
            clock.advance(600)
            for u in s.changed_users:
                fake.update_user(ids[u], title="Changed")
            for n, members in enumerate(s.new_groups):
                fake.add_group(f"New {n}", members=[ids[u] for u in members])
            for g, added, removed in s.regrouped:
                fake.add_member(gids[g], ids[added])
                fake.remove_member(gids[g], ids[removed])
            clock.advance(120)
            changes = source.read_changes(full.cursor, full)
            assert len(changes.groups) == len(s.new_groups) + len(s.regrouped)
            change_calls = _okta_calls(fake)
        finally:
            source.close()
    return {"full": full_calls, "change": change_calls, "formula": okta_formula(s)}


def _okta_calls(fake: FakeOkta) -> Counter:
    counted: Counter = Counter()
    for r in fake.requests:
        path = re.sub(r"/(groups|users)/[^/]+/", r"/\1/{id}/", r.path)
        counted[path + (" (filter)" if r.query.get("filter") else "")] += 1
    return counted


def report(result: dict, before: int | None = None) -> None:
    for read in ("full", "change"):
        calls = result[read]
        print(f"  {read} read: {sum(calls.values())} calls")
        for path, count in sorted(calls.items()):
            formula = result["formula"].get(path, "") if read == "full" else ""
            print(f"    {count:7d}  {path}" + (f"   [{formula}]" if formula else ""))
    if before is not None:
        print(f"  before this change, a full read made {before} calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--memberships", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="graph,okta")
    args = parser.parse_args()
    s = shape(args.users, args.groups, args.memberships, args.seed)
    print(f"{s.users} users, {len(s.groups)} groups, {s.memberships} memberships; change read "
          f"after {len(s.changed_users)} users changed, {len(s.new_groups)} groups created, "
          f"{len(s.regrouped)} re-membered")
    only = {k.strip() for k in args.only.split(",")}
    if "graph" in only:
        print("Entra ID (fake Graph)")
        # before: latest links (2), users pages, groups pages, then each group's members
        before = 2 + math.ceil(s.users / GRAPH_PAGE) + math.ceil(len(s.groups) / GRAPH_PAGE) \
            + sum(max(1, math.ceil(len(m) / GRAPH_PAGE)) for m in s.groups)
        report(graph_counts(s), before)
    if "okta" in only:
        print("Okta (fake org)")
        before = math.ceil(len(s.groups) / OKTA_PAGE) + math.ceil(s.users / OKTA_PAGE) + 1 \
            + sum(max(1, math.ceil(len(m) / OKTA_PAGE)) for m in s.groups)
        report(okta_counts(s), before)


if __name__ == "__main__":
    main()
