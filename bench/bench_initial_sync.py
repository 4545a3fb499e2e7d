"""The first sync of a large directory into a fast fake Split at an unlimited rate.

    .venv/bin/python bench/bench_initial_sync.py [--users 100000] [--groups 5000]
                                                 [--memberships 500000] [--concurrency 8]
                                                 [--seed 1] [--profile FILE]

The directory is bench_plan.py's (seeded; users with managers, nested groups). The fake Split
(tests/fakes/split.py with ``fast=True``: names indexed, every behaviour check kept) runs in a
process of its own, so that the agent and the server each have one of the two cores, as a
real deployment would not share one. ``scim-agent sync`` runs as a whole process with
``[target] rate_limit`` far above what either side can do; the figure is the requests the
server answered during that process, per second of its wall time, from the server's own log
(by kind, so that one request per create and members in batches show). Then a second sync
of the unchanged directory: the quiet cycle, which must send no write. ``--profile FILE``
runs the first sync under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_plan import build_directory  # noqa: E402

TOKEN = "bench-token"

SERVE = """
import json, resource, sys
from collections import Counter
sys.path.insert(0, sys.argv[1])
from tests.fakes.split import FakeSplit
fake = FakeSplit(token=sys.argv[2], fast=True, max_page_size=1000).start()
print(fake.base_url, flush=True)
for line in sys.stdin:
    if line.strip() == "log":
        kinds = Counter(f"{r.method} {r.path.split('/')[1] if '/' in r.path else r.path}"
                        + (" (id)" if r.path.count('/') > 1 else "") for r in fake.requests)
        statuses = Counter(str(r.status) for r in fake.requests)
        print(json.dumps({"kinds": kinds, "statuses": statuses, "users": len(fake.users),
                          "groups": len(fake.groups),
                          "members": sum(len(g.get("members", [])) for g in fake.groups.values()),
                          "cpu": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}),
              flush=True)
        fake.reset_log()
fake.stop()
"""


class Server:
    """The fake Split in a child process; ``log()`` returns and clears its request log."""

    def __init__(self):
        self.child = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT), TOKEN],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.child.stdout.readline().strip()

    def log(self) -> dict:
        self.child.stdin.write("log\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=30)


def write_config(work: Path, url: str, concurrency: int) -> Path:
    config = work / "config.toml"
    config.write_text(f'[state]\npath = "state.db"\n\n[source]\ntype = "file"\n'
                      f'path = "directory.json"\n\n[target]\nurl = "{url}"\n'
                      f'token = "{TOKEN}"\nrate_limit = 1000000.0\n'
                      f'concurrency = {concurrency}\n\n[sync]\nmax_deactivations = "100%"\n')
    return config


def sync(config: Path, profile: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one ``scim-agent sync`` process."""
    argv = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []),
            "-m", "agent", "--config", str(config), "sync", "--yes"]
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    return (time.perf_counter() - started, usage.ru_utime + usage.ru_stime,
            os.waitstatus_to_exitcode(status))


def run(users: int, groups: int, memberships: int, concurrency: int, seed: int,
        work: Path, profile: Path | None = None) -> dict:
    """Everything in ``work``; the figures as a dict (the test suite runs it at smoke size)."""
    (work / "directory.json").write_text(json.dumps(build_directory(users, groups, memberships,
                                                                    seed)))
    server = Server()
    try:
        config = write_config(work, server.url, concurrency)
        started = server.log()["cpu"]          # the server's CPU before the sync
        wall, cpu, status = sync(config, profile)
        first = server.log()
        quiet_wall, quiet_cpu, quiet_status = sync(config)
        quiet = server.log()
    finally:
        server.close()
    requests = sum(first["kinds"].values())
    writes = {k: n for k, n in quiet["kinds"].items() if not k.startswith("GET")}
    return {"users": users, "groups": groups, "status": status, "wall": wall, "cpu": cpu,
            "requests": requests, "rate": requests / wall,
            "server_cpu": first["cpu"] - started, "kinds": first["kinds"],
            "statuses": first["statuses"], "pushed": {k: first[k] for k in
                                                      ("users", "groups", "members")},
            "quiet": {"status": quiet_status, "wall": quiet_wall, "cpu": quiet_cpu,
                      "kinds": quiet["kinds"], "writes": writes}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--memberships", type=int, default=500_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="profile the first sync into FILE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    r = run(args.users, args.groups, args.memberships, args.concurrency, args.seed, work,
            args.profile)
    print(f"{r['users']} users, {r['groups']} groups; concurrency {args.concurrency}; "
          f"sync exit {r['status']}")
    print(f"  first sync: {r['requests']} requests in {r['wall']:.1f} s = "
          f"{r['rate']:.0f} requests/s (agent CPU {r['cpu']:.1f} s, server CPU "
          f"{r['server_cpu']:.1f} s)")
    for kind, n in sorted(r["kinds"].items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<24} {n:8d}")
    print(f"  answers: {dict(r['statuses'])}; Split holds {r['pushed']}")
    q = r["quiet"]
    print(f"  quiet sync: exit {q['status']}, {q['wall']:.1f} s (CPU {q['cpu']:.1f} s), "
          f"requests {dict(q['kinds'])}, writes {sum(q['writes'].values())}")
    if args.profile:
        import pstats
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
