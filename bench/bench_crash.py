"""The SIGKILL campaign: a large sync killed again and again converges, nothing sent twice.

    .venv/bin/python bench/bench_crash.py [--users 2000] [--groups 60] [--kills 50] [--seed 7]

Runs ``scim-agent sync`` as a subprocess against the fake Split (which carries each write out
15 ms before answering, so kills fall between a write that landed and its record), SIGKILLs
it after a random number of writes (1-80), ``--kills`` times, then lets one run finish. It
checks what ``tests/test_crash.py`` checks (the target equals the source, no POST answered
409, ``PRAGMA integrity_check`` ok, no intent left) and prints the figures that
docs/reliability.md records.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import TOKEN  # noqa: E402
from tests.fakes.split import FakeSplit  # noqa: E402
from tests.test_crash import run_campaign  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=60)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.monotonic()
    with FakeSplit(token=TOKEN, answer_latency=0.015) as split, \
            tempfile.TemporaryDirectory() as tmp:
        report = run_campaign(split, Path(tmp), args.users, args.groups, args.kills,
                              args.seed, (1, 80))
        methods = collections.Counter((r.method, r.status) for r in split.requests)
    print(f"users {args.users}, groups {args.groups}, seed {args.seed}")
    print(f"kills: {report['killed']}; runs that ended on their own: {len(report['finished'])}")
    posts = sum(n for (m, _), n in methods.items() if m == "POST")
    print(f"POST requests: {posts} (answered 409: {methods[('POST', 409)]})")
    print(f"requests by method and status: {dict(sorted(methods.items()))}")
    print("converged: target equals source, integrity_check ok, no intent left")
    print(f"wall time: {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
