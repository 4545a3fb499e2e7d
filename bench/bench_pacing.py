"""How close adaptive pacing comes to a rate-limited Split, and how many 429s it collects.

    .venv/bin/python bench/bench_pacing.py [--users 2500] [--groups 40] [--rate-limit 50]
                                           [--server 25 50] [--concurrency 4] [--seed 1]

For each server limit, a fresh fake Split (tests/fakes/split.py) admits that many requests
per fixed one-second window, aligned on its own clock, and answers 429 beyond with Split's
headers (reset in whole seconds); ``[target] rate_limit`` stays at ``--rate-limit``. One
``sync`` of a seeded directory (every user a create, groups with 20-250 members) runs with
``--concurrency`` workers. Reported, from the server's own log: the rate admitted during the
apply (first write to last answer) as a share of the server's limit, the share of requests
answered 429, and the requests by kind, which show that a create costs one request and member
changes go in batches of 100. docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.app import build_agent, make_target  # noqa: E402
from agent.config import load  # noqa: E402
from tests.fakes.split import FakeSplit  # noqa: E402

TOKEN = "bench-token"
from connectors.scim.dialects import MEMBERS_PER_PATCH as MEMBER_CHUNK  # noqa: E402


class TimedSplit(FakeSplit):
    """The fake Split, noting when each request was answered and how."""

    def __init__(self, *args, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self.answered: list[tuple[float, str, str, int]] = []   # (moment, method, path, status)
        self._clock = clock
        self._answered_lock = threading.Lock()

    def _respond(self, method, path, query, headers, body, body_error):
        response = super()._respond(method, path, query, headers, body, body_error)
        with self._answered_lock:
            self.answered.append((self._clock(), method, path, response.status))
        return response


def build_directory(users: int, groups: int, seed: int) -> dict:
    rnd = random.Random(seed)
    people = [{"id": f"u{i}", "userName": f"user{i}@example.org",
               "email": f"user{i}@example.org", "givenName": f"Given{i}",
               "familyName": f"Family{i}", "active": True} for i in range(users)]
    teams = [{"id": f"g{j}", "displayName": f"Team {j}",
              "members": [f"u{i}" for i in rnd.sample(range(users), min(users,
                                                                        rnd.randint(20, 250)))]}
             for j in range(groups)]
    return {"users": people, "groups": teams}


def write_workspace(root: Path, url: str, directory: dict, rate_limit: float,
                    concurrency: int) -> Path:
    (root / "directory.json").write_text(json.dumps(directory))
    config = root / "config.toml"
    config.write_text(textwrap.dedent(f"""\
        [state]
        path = "state.db"

        [source]
        type = "file"
        path = "directory.json"

        [target]
        url = "{url}"
        token = "{TOKEN}"
        rate_limit = {rate_limit}
        concurrency = {concurrency}
        timeout = 10
        max_attempts = 8
        """))
    return config


@dataclass
class Result:
    server: float                   # requests per second the server admits
    rate_limit: float
    outcome: str
    requests: int
    throttled: int
    admitted_rate: float            # requests per second admitted during the apply
    seconds: float                  # the apply: first write to last answer
    by_kind: Counter = field(default_factory=Counter)   # (method, resource, status class)
    expected_patches: int = 0
    cuts: int = 0
    final_pace: float = 0.0
    failed: int = 0

    @property
    def share_of_server(self) -> float:
        return self.admitted_rate / self.server

    @property
    def share_throttled(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def run(users: int, groups: int, server: int, rate_limit: float, concurrency: int, seed: int,
        *, window: float = 1.0, latency: float = 0.0, clock=time.monotonic,
        sleep=time.sleep) -> Result:
    """One sync of a fresh seeded directory into a fresh fake Split admitting ``server``
    requests per ``window``. ``clock``/``sleep`` are the time seam (the smoke test in the
    suite runs the fake and the agent on one injected clock)."""
    directory = build_directory(users, groups, seed)
    targets = []

    def target(config):
        made = make_target(config, clock=clock, sleep=sleep)
        targets.append(made)
        return made

    with TimedSplit(token=TOKEN, latency=latency, clock=clock) as split, \
            tempfile.TemporaryDirectory() as tmp:
        split.rate_limit(server, window_seconds=window, clock=clock)
        config = load(write_workspace(Path(tmp), split.base_url, directory, rate_limit,
                                      concurrency))
        result = build_agent(config, target_factory=target, clock=clock, sleep=sleep).sync()
        answered = list(split.answered)
    writes = [moment for moment, method, _, _ in answered if method != "GET"]
    start, end = (min(writes), max(moment for moment, *_ in answered)) if writes else (0, 0)
    during = [a for a in answered if start <= a[0] <= end]
    admitted = sum(1 for a in during if a[3] != 429)
    by_kind = Counter((method, path.split("/")[1] if "/" in path else path,
                       "429" if status == 429 else f"{status // 100}xx")
                      for _, method, path, status in answered)
    limiter = targets[-1].wire.limiter if targets else None
    return Result(server=server / window, rate_limit=rate_limit, outcome=result.outcome.value,
                  requests=len(answered), throttled=sum(1 for a in answered if a[3] == 429),
                  admitted_rate=admitted / (end - start) if end > start else 0.0,
                  seconds=end - start, by_kind=by_kind,
                  expected_patches=sum(math.ceil(len(g["members"]) / MEMBER_CHUNK)
                                       for g in directory["groups"]),
                  cuts=limiter.throttles if limiter else 0,
                  final_pace=limiter.rate if limiter else 0.0,
                  failed=len(result.report.failed) if result.report else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--rate-limit", type=float, default=50.0)
    parser.add_argument("--server", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.02,
                        help="seconds the fake takes per request (default 0.02)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.users} users, {args.groups} groups, rate_limit {args.rate_limit:g}/s, "
          f"concurrency {args.concurrency}, server latency {args.latency * 1000:g} ms")
    print("| server limit | rate_limit | achieved (share of server) | 429s | requests | "
          "apply | cuts | final pace | outcome |")
    print("|---|---|---|---|---|---|---|---|---|")
    for server in args.server:
        r = run(args.users, args.groups, server, args.rate_limit, args.concurrency, args.seed,
                latency=args.latency)
        print(f"| {r.server:g}/s | {r.rate_limit:g}/s | {r.admitted_rate:.1f}/s "
              f"(**{r.share_of_server:.1%}**) | {r.throttled} (**{r.share_throttled:.2%}**) "
              f"| {r.requests} | {r.seconds:.1f} s | {r.cuts} | {r.final_pace:.1f}/s "
              f"| {r.outcome}, {r.failed} failed |", flush=True)
        kinds = ", ".join(f"{m} {res} {s}: {n}" for (m, res, s), n in sorted(r.by_kind.items()))
        print(f"|   requests by kind: {kinds}; member PATCHes expected "
              f"(ceil(members/{MEMBER_CHUNK}) per group): {r.expected_patches} |", flush=True)


if __name__ == "__main__":
    main()
