"""bench/bench_ldap.py at a smoke size against slapd: it runs and reads what it built (never
its time; the ratios it prints are in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.servers.slapd import available

pytestmark = pytest.mark.skipif(not available(), reason="slapd / ldap-utils not installed")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_ldap.py"


def test_bench_ldap_measures_slapd_at_a_smoke_size(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_ldap", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_ldap"] = bench
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "ROUNDS", 1)
    where = bench.SlapdDirectory(tmp_path, 60, 4)
    try:
        result = bench.measure(where, 60, 4)            # asserts the read found them all
    finally:
        where.stop()
    assert set(result) >= {"ldapsearch", "read", "change", "changed_users", "changed_groups"}
    assert result["changed_users"] == 3 and result["changed_groups"] >= 2
