"""A snapshot is bound to its target (agent/engine/binding.py): another [target] url is
refused by plan, sync and the daemon's reload, until --rebind-target or a fresh snapshot."""

from __future__ import annotations

import pytest

from agent.cli.main import main
from agent.config import load
from agent.core.outcome import HoldKind, Outcome
from agent.engine.binding import target_identity
from agent.service.daemon import Daemon
from agent.store.state import Meta, State
from tests.conftest import TOKEN, user
from tests.fakes.split import FakeSplit


@pytest.fixture
def other_org():
    with FakeSplit(token=TOKEN) as split:
        yield split


PEOPLE = [user("u1", "ann@example.org"), user("u2", "ben@example.org")]


def test_the_url_is_one_target_however_it_is_spelled():
    assert target_identity("HTTPS://Split.Example.org:443/scim/v2/") == \
        "https://split.example.org/scim/v2"
    assert target_identity("https://h:8443/a") != target_identity("https://h/a")
    assert target_identity("https://h/org-1") != target_identity("https://h/org-2")


def test_another_target_is_refused_by_sync_and_plan_and_nothing_is_sent(fake_split, split_ws,
                                                                         other_org, capsys):
    split_ws.write_directory(PEOPLE, [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    split_ws.url = other_org.base_url
    split_ws.write_config()
    result = split_ws.agent().sync()
    assert result.outcome is Outcome.ERROR and result.hold.kind is HoldKind.TARGET_CHANGED
    assert fake_split.base_url.split("//")[1].split("/")[0] in result.message
    assert "--rebind-target" in result.message and "mv " in result.message
    assert other_org.requests == []                        # not even the probe
    assert main(["--config", str(split_ws.config), "plan"]) == 1
    assert "made for the Split organisation at" in capsys.readouterr().err
    assert main(["--config", str(split_ws.config), "status"]) == 0     # status still reads it


def test_rebind_forgets_the_old_ids_and_adopts_what_the_new_target_holds(fake_split, split_ws,
                                                                        other_org):
    split_ws.write_directory(PEOPLE, [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    ann_there = other_org.seed_user("ann@example.org")
    split_ws.url = other_org.base_url
    split_ws.write_config()
    result = split_ws.agent().sync(rebind_target=True)
    assert result.outcome is Outcome.OK, result.message
    with State.open(split_ws.state, lock=False) as state:
        snapshot = state.snapshot()
        assert state.meta.target() == target_identity(other_org.base_url)
    assert snapshot.users["u1"].scim_id == ann_there                  # adopted, not duplicated
    assert set(u["userName"] for u in other_org.users.values()) == {"ann@example.org",
                                                                      "ben@example.org"}
    assert [r.body["userName"] for r in other_org.requests if r.method == "POST"] == \
        ["ben@example.org"]
    assert split_ws.agent().sync().outcome is Outcome.OK               # bound to the new one


def test_a_snapshot_from_before_binding_is_bound_at_its_next_sync(fake_split, split_ws):
    split_ws.write_directory(PEOPLE, [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    with State.open(split_ws.state) as state:
        state.meta.set(Meta.TARGET, None)         # as a file written by an older version
        assert state.meta.target() is None
    assert split_ws.agent().sync().outcome is Outcome.OK
    with State.open(split_ws.state, lock=False) as state:
        assert state.meta.target() == target_identity(fake_split.base_url)


def test_a_reload_that_points_the_daemon_at_another_target_keeps_the_old_config(
        fake_split, split_ws, other_org):
    split_ws.write_directory(PEOPLE, [])
    assert split_ws.agent().sync().outcome is Outcome.OK
    daemon = Daemon(load(split_ws.config), split_ws.config, environ={})
    split_ws.url = other_org.base_url
    split_ws.write_config()
    assert daemon.reload() is False
    assert daemon.config.target.url == fake_split.base_url


def test_a_snapshot_that_holds_no_ids_yet_follows_a_corrected_url(fake_split, split_ws):
    split_ws.write_directory(PEOPLE, [])
    split_ws.url = "http://127.0.0.1:9/scim/v2"             # a typo: nothing listens there
    split_ws.write_config()
    assert split_ws.agent().sync().outcome is Outcome.ERROR
    split_ws.url = fake_split.base_url
    split_ws.write_config()
    assert split_ws.agent().sync().outcome is Outcome.OK
