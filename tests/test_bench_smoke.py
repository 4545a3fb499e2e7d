"""The benchmarks keep working: each runs at smoke size and its output has the right shape.
No wall-clock figure is asserted (the machine may be busy); only what the runs produced."""

from __future__ import annotations

from bench import bench_initial_sync, bench_plan


def test_bench_plan_measures_a_whole_plan_process_against_the_floor(tmp_path):
    r = bench_plan.run(users=300, groups=15, memberships=1500, changed=0.05, seed=1,
                       work=tmp_path)
    assert r["changed"] == 15
    assert r["summary"]["update_user"] == 15                  # exactly the changes made
    assert sum(r["summary"].values()) == 15
    for wall, rss in (r["floor"], r["plan"]):
        assert wall > 0 and rss > 0
    assert r["memberships"] >= 1500


def test_bench_initial_sync_pushes_everything_then_a_quiet_cycle_writes_nothing(tmp_path):
    r = bench_initial_sync.run(users=120, groups=6, memberships=300, concurrency=4, seed=1,
                               work=tmp_path)
    assert r["status"] == 0
    kinds = r["kinds"]
    active = r["pushed"]["users"]
    assert kinds["POST Users"] == active                      # one request per create
    assert kinds["POST Groups"] == r["groups"] == r["pushed"]["groups"]
    assert r["requests"] == sum(kinds.values()) and r["rate"] > 0
    assert set(r["statuses"]) <= {"200", "201", "204"}
    quiet = r["quiet"]
    assert quiet["status"] == 0 and quiet["writes"] == {}
    assert sum(quiet["kinds"].values()) == 1                  # the token probe
