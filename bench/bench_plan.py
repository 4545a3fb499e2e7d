"""`scim-agent plan` on a large directory against a full snapshot, as whole processes.

    .venv/bin/python bench/bench_plan.py [--users 100000] [--groups 5000]
                                         [--memberships 500000] [--changed 0.01] [--seed 1]
                                         [--profile FILE]

Builds a seeded directory (users with managers, groups of ~memberships/groups members, a
tenth nested in another), writes it as a file-source export, and a snapshot that matches it
as a completed sync leaves it (a real SQLite file, bound to the target); then changes the
title of a fraction of the users and runs, each as its own process, measured with
``os.wait4`` (wall time and peak RSS of that child alone):

- the floor: ``json.load`` of the export, and every row of the snapshot's users, groups and
  memberships read with ``sqlite3``;
- ``scim-agent --config ... plan --output json``, checked to plan exactly the changes made.

The agent's modules are compiled to bytecode first (``compileall``), as an installed agent's
are. Prints one table and the ratio; docs/benchmarks.md records a run. ``--profile FILE`` runs
the plan process once more under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import load as load_config  # noqa: E402
from agent.core.mapping import MappingRules, map_directory  # noqa: E402
from agent.engine.binding import bind  # noqa: E402
from agent.store.state import State  # noqa: E402
from connectors.files import FileSource  # noqa: E402

TARGET = "https://split.example/scim/v2"

FLOOR = """
import json, sqlite3, sys
with open(sys.argv[1], "rb") as f:
    json.load(f)
db = sqlite3.connect(sys.argv[2])
for table in ("users", "groups", "memberships"):
    for row in db.execute(f"SELECT * FROM {table}"):
        pass
"""


def build_directory(users: int, groups: int, memberships: int, seed: int = 1) -> dict:
    """A seeded directory: every user but the first has a manager (a source id), a few are
    disabled; groups hold ~memberships/groups direct members, every tenth one nests the
    group before it."""
    rnd = random.Random(seed)
    people = []
    for i in range(users):
        person = {"id": f"u{i}", "userName": f"user{i}@example.org",
                  "email": f"user{i}@example.org", "givenName": f"Given{i}",
                  "familyName": f"Family{i}", "displayName": f"Given{i} Family{i}",
                  "title": rnd.choice(["Engineer", "Manager", "Analyst", "Designer"]),
                  "department": f"Dept {i % 40}", "active": rnd.random() > 0.02}
        if i:
            person["manager"] = f"u{rnd.randrange(max(1, i // 10))}"
        people.append(person)
    per_group = max(1, memberships // max(1, groups))
    teams = []
    for j in range(groups):
        members = [f"u{m}" for m in rnd.sample(range(users), min(users, per_group))]
        if j % 10 == 0 and j:
            members.append(f"g{j - 1}")
        teams.append({"id": f"g{j}", "displayName": f"Group {j}", "members": members})
    return {"users": people, "groups": teams}


def write_config(work: Path, source: Path) -> Path:
    config = work / "config.toml"
    config.write_text(f'[state]\npath = "state.db"\n\n[source]\ntype = "file"\n'
                      f'path = "{source.name}"\n\n[target]\nurl = "{TARGET}"\n'
                      'token = "bench-token"\n')
    return config


def build_snapshot(config_file: Path, directory: dict) -> int:
    """The snapshot a completed sync of ``directory`` leaves; returns the memberships."""
    config = load_config(config_file)
    source = FileSource(FileSource.Settings(path=config.source.settings.path))
    rules = MappingRules.for_source(FileSource, config.source.attributes,
                                    config.source.group_attributes, scope=config.source.scope)
    desired = map_directory(source.read(), rules)
    state = State.open(config.state.path)
    try:
        bind(state, TARGET)
        with state.db.atomic():
            for n, user in enumerate(desired.users.values()):
                state._put_user(user, f"scim-{n}", user.active)
            conn = state.db.conn
            conn.executemany("INSERT INTO groups (source_id, scim_id, display_name, digest, "
                             "updated) VALUES (?, ?, ?, ?, '')",
                             [(g.source_id, f"scim-g{n}", g.display_name, g.digest)
                              for n, g in enumerate(desired.groups.values())])
            conn.executemany("INSERT INTO memberships VALUES (?, ?)",
                             [(g.source_id, m) for g in desired.groups.values()
                              for m in g.members])
        state.meta.record_target_read(_now())
        # the stamps the sync's end records (agent/core/stamps.py): planned again from the
        # snapshot as it is now, as the next cycle (or this one, had it changed nothing) does
        snapshot = state.snapshot()
        again = map_directory(source.read(), rules, snapshot.users, stamps=snapshot)
        stamped = state.record_group_stamps(again, snapshot)
        assert stamped == len(desired.groups), (stamped, len(desired.groups))
    finally:
        state.close()
    return sum(len(g.members) for g in desired.groups.values())


def _now():
    import datetime as dt
    return dt.datetime.now(dt.timezone.utc)


def measure(argv: list[str], cwd: Path | None = None) -> tuple[float, float, bytes, float]:
    """(wall seconds, peak RSS MiB, stdout, CPU seconds) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE)
    out = child.stdout.read()
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 2):
        raise SystemExit(f"{argv[:3]}... exited {child.returncode}")
    return wall, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def agent_argv(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--config", str(config), "plan", "--output", "json",
            *extra]


def prepare(users: int, groups: int, memberships: int, changed: float, seed: int,
            work: Path) -> dict:
    """The export, the config and the matching snapshot in ``work``, then the changes."""
    data = build_directory(users, groups, memberships, seed)
    source = work / "directory.json"
    source.write_text(json.dumps(data))
    config = write_config(work, source)
    pushed = build_snapshot(config, data)
    rnd = random.Random(seed + 1)
    picked = rnd.sample(range(users), int(users * changed))
    for i in picked:
        data["users"][i]["title"] = "Changed"
    source.write_text(json.dumps(data))
    return {"memberships": pushed, "changed": len(picked)}


def run(users: int, groups: int, memberships: int, changed: float, seed: int,
        work: Path, repeat: int = 1) -> dict:
    """Build everything in ``work`` (in a child process, so that this one stays small and
    its children's peak RSS is their own), measure, and return the figures (the test suite
    runs it at smoke size)."""
    built = subprocess.run([sys.executable, __file__, "--prepare", str(work), "--users",
                            str(users), "--groups", str(groups), "--memberships",
                            str(memberships), "--changed", str(changed), "--seed", str(seed)],
                           check=True, stdout=subprocess.PIPE)
    prepared = json.loads(built.stdout)
    source, config = work / "directory.json", work / "config.toml"

    floor = min(measure([sys.executable, "-c", FLOOR, str(source), str(work / "state.db")])
                for _ in range(repeat))
    plan = min(measure(agent_argv(config), cwd=ROOT) for _ in range(repeat))
    document = json.loads(plan[2])
    return {"users": users, "groups": groups, **prepared,
            "summary": document["summary"], "floor": floor[:2], "plan": plan[:2],
            "cpu": (floor[3], plan[3]),
            "source_mb": source.stat().st_size / 2**20,
            "snapshot_mb": (work / "state.db").stat().st_size / 2**20}


def profile(config: Path, out: Path, top: int = 25) -> None:
    import pstats
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "agent",
                    "--config", str(config), "plan", "--output", "json"],
                   cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(top)
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--memberships", type=int, default=500_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of users")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs of each")
    parser.add_argument("--profile", type=Path, help="also profile the plan process")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(args.users, args.groups, args.memberships, args.changed,
                                 args.seed, args.prepare)))
        return

    # The agent's modules compiled to bytecode first, as pip does when it installs them: a
    # machine that sets PYTHONDONTWRITEBYTECODE (this one does) would otherwise compile every
    # module from source in each plan process, which no installed agent does (the floor's
    # standard library is compiled already)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "agent"),
                    str(ROOT / "connectors")], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    r = run(args.users, args.groups, args.memberships, args.changed, args.seed, work,
            args.repeat)
    print(f"{r['users']} users, {r['groups']} groups, {r['memberships']} memberships pushed, "
          f"{r['changed']} users changed; export {r['source_mb']:.1f} MiB, "
          f"snapshot {r['snapshot_mb']:.1f} MiB (best of {args.repeat})")
    (fw, fm), (pw, pm) = r["floor"], r["plan"]
    print(f"  {'floor (json.load + sqlite3 rows)':<36} {fw:7.2f} s  {fm:6.0f} MiB")
    print(f"  {'scim-agent plan':<36} {pw:7.2f} s  {pm:6.0f} MiB")
    fc, pc = r["cpu"]
    print(f"  ratio to the floor: {pw / fw:.2f}x wall, {pc / fc:.2f}x CPU "
          f"({fc:.2f} s and {pc:.2f} s)")
    print(f"plan: {r['summary']['update_user']} updates (expected {r['changed']}); "
          f"other changes: {sum(r['summary'].values()) - r['summary']['update_user']}")
    if args.profile:
        profile(work / "config.toml", args.profile)


if __name__ == "__main__":
    main()
