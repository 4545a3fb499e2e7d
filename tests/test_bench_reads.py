"""bench/bench_reads.py at a smoke size: its shape and its call counts (never its time)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_reads.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reads", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_reads"] = module
    spec.loader.exec_module(module)
    return module


def test_the_shape_is_seeded_and_adds_up(bench):
    one, two = bench.shape(500, 40, 3000, seed=3), bench.shape(500, 40, 3000, seed=3)
    assert one == two and one.memberships == 3000 and len(one.groups) == 40
    assert all(len(set(m)) == len(m) for m in one.groups)            # distinct in a group


def test_graph_reads_cost_pages(bench):
    s = bench.shape(1500, 120, 6000, seed=1)
    result = bench.graph_counts(s)
    full, change = result["full"], result["change"]
    assert "/v1.0/groups/{id}/..." not in full and "/v1.0/groups/{id}/..." not in change
    assert full["/v1.0/users"] == math.ceil(1500 / 999)
    assert full["/v1.0/users/delta ($deltatoken=latest)"] == 1
    assert full["/v1.0/groups/delta ($deltatoken=latest)"] == 1
    # 6 000 members at most 500 a page: at least 12 pages, at most twice that and the objects
    assert 12 <= full["/v1.0/groups/delta"] <= 12 * 2 + 1 + 1
    assert sum(full.values()) < len(s.groups)                          # not a call per group
    # the change read: one page of users, one of groups, one filtered round for 3 new groups
    assert change == {"/v1.0/users/delta": 1, "/v1.0/groups/delta": 1,
                      "/v1.0/groups/delta ($filter on ids)": 1}


def test_okta_reads_meet_their_formula(bench):
    s = bench.shape(1500, 120, 6000, seed=1)
    result = bench.okta_counts(s)
    full, change = result["full"], result["change"]
    assert full == {"/api/v1/groups": 1, "/api/v1/users": math.ceil(1500 / 200),
                    "/api/v1/users (filter)": 1,
                    "/api/v1/groups/{id}/users": sum(max(1, math.ceil(len(m) / 1000))
                                                     for m in s.groups)}
    changed_groups = len(s.new_groups) + len(s.regrouped)
    assert change == {"/api/v1/groups (filter)": 1, "/api/v1/users (filter)": 1,
                      "/api/v1/groups/{id}/users": changed_groups}
