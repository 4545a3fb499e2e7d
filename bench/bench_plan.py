"""How long planning takes for a large directory against a full snapshot, and its memory.

    .venv/bin/python bench/bench_plan.py [--users 100000] [--groups 1000] [--changes 100]

Builds a directory of N users and G groups (each group ~N/G*3 members, a tenth nested), a
snapshot that already matches it (stored in a real SQLite file, as after a sync), changes a
few users, then times each stage of a cycle that does not touch the network: reading the
file source, mapping, loading the snapshot from SQLite, planning. Prints one table and the
peak RSS; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.core.mapping import MappingRules, map_directory  # noqa: E402
from agent.core.plan import make_plan  # noqa: E402
from agent.store.state import State  # noqa: E402
from connectors.files import FileSource  # noqa: E402


def build_directory(users: int, groups: int, seed: int = 1) -> dict:
    rnd = random.Random(seed)
    people = [{"id": f"u{i}", "userName": f"user{i}@example.org", "email": f"user{i}@example.org",
               "givenName": f"Given{i}", "familyName": f"Family{i}", "displayName": f"Given{i} Family{i}",
               "title": rnd.choice(["Engineer", "Manager", "Analyst", "Designer"]),
               "department": f"Dept {i % 40}", "active": rnd.random() > 0.02}
              for i in range(users)]
    per_group = max(1, users * 3 // groups)
    teams = []
    for j in range(groups):
        members = [f"u{rnd.randrange(users)}" for _ in range(per_group)]
        if j % 10 == 0 and j:
            members.append(f"g{j - 1}")
        teams.append({"id": f"g{j}", "displayName": f"Group {j}", "members": members})
    return {"users": people, "groups": teams}


def timed(label: str, results: list, fn):
    started = time.perf_counter()
    value = fn()
    results.append((label, time.perf_counter() - started))
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    data = build_directory(args.users, args.groups)
    source_file = work / "directory.json"
    source_file.write_text(json.dumps(data))
    source = FileSource(FileSource.Settings(path=source_file))
    rules = MappingRules.for_source(FileSource)

    # A snapshot that matches the directory, as a completed sync leaves it.
    desired = map_directory(source.read(), rules)
    state = State.open(work / "state.db")
    with state.db.atomic():
        for n, user in enumerate(desired.users.values()):
            state._put_user(user, f"scim-{n}", user.active)
        for n, group in enumerate(desired.groups.values()):
            state.db.execute("INSERT INTO groups VALUES (?, ?, ?, ?, '')",
                             [group.source_id, f"scim-g{n}", group.display_name, group.digest])
            state.db.conn.executemany("INSERT INTO memberships VALUES (?, ?)",
                                      [(group.source_id, m) for m in group.members])
    memberships = sum(len(g.members) for g in desired.groups.values())

    rnd = random.Random(2)
    for user in rnd.sample(data["users"], args.changes):
        user["title"] = "Changed"
    source_file.write_text(json.dumps(data))

    results: list[tuple[str, float]] = []
    directory = timed("read file source", results, source.read)
    desired = timed("map + flatten groups", results, lambda: map_directory(directory, rules))
    snapshot = timed("load snapshot from SQLite", results, state.snapshot)
    plan = timed("plan (diff)", results, lambda: make_plan(desired, snapshot))
    state.close()

    print(f"{args.users} users, {args.groups} groups, {memberships} memberships, "
          f"{args.changes} changed users")
    total = sum(t for _, t in results)
    for label, seconds in results:
        print(f"  {label:<28} {seconds:8.3f} s  {seconds / total:6.1%}")
    print(f"  {'total':<28} {total:8.3f} s")
    print(f"plan: {plan.summary()['update_user']} updates, {len(plan.ops)} ops")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    # What the plan costs next to pushing it: at Split's default 10 requests/s the
    # changes alone take changes/10 seconds.
    push = args.changes / 10
    print(f"pushing {args.changes} changes at 10 req/s: {push:.0f} s; "
          f"planning is {results[3][1] / push:.2f}x that, the whole local cycle {total / push:.2f}x")


if __name__ == "__main__":
    main()
