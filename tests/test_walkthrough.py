"""scripts/walkthrough.py, the README's first hour against the fake Split, reads true at
every step: each command's exit status and the sentence an administrator relies on."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from walkthrough import TOKEN, walk  # noqa: E402

from tests.fakes.split import FakeSplit  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    with FakeSplit(token=TOKEN) as split:
        w = walk(tmp_path_factory.mktemp("walk"), split, out=io.StringIO())
        assert not [g for g in split.groups.values() if "Customer" in g["displayName"]]
    return {step: (code, text) for step, _args, code, text in w.steps}


EXPECTED = [
    ("first plan", 0, ["+ create user alice.archer@example.org", "groups 4 to create"]),
    ("first sync", 0, ["Applied: users 4 created", "members +9 -0"]),
    ("status after the first sync", 0, ["Managed: 4 users (4 active), 4 groups"]),
    ("plan without looking at Split", 0, ["No changes", "plan --refresh and sync --reconcile "
                                          "read Split itself"]),
    ("plan --refresh shows the drift", 0, ["= changed in Split by hand",
                                           'active: "true" pushed, "false" in Split',
                                           "+ reactivate user bob.baker@example.org",
                                           'title: "Contractor" -> "Senior Engineer"']),
    ("reconcile puts it right", 0, ["users 0 created, 0 updated, 1 reactivated"]),
    ("history of bob", 0, ["+ reactivate_user bob.baker@example.org: applied",
                           "+ create_user bob.baker@example.org: applied"]),
    ("plan --out", 0, ["Saved the plan to reviewed.plan"]),
    ("the stale plan is refused", 1, ["the source changed since the plan was made; nothing "
                                      "was applied"]),
    ("applied as reviewed", 0, ["users 0 created, 2 updated"]),
    ("interrupted", 130, ["Interrupted: what is listed above was applied and recorded"]),
    ("status shows the interrupted run", 0, ["sync  interrupted"]),
    ("the next sync finishes the rest", 0, ["0 created, 1 updated"]),
    ("refused in the plan", 0, ["! create group Customer Success Engineering EMEA: refused, "
                                "not sent"]),
    ("refused by the sync: its own exit status", 5, ["refused and not sent", "(exit 5)"]),
    ("status lists it under needs attention", 0, ["Needs attention",
                                                  "group Customer Success Engineering EMEA"]),
    ("a mistyped token", 1, ["[target] token: the value from the config file ends with a "
                             "space"]),
]


@pytest.mark.parametrize("step, code, needles", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_each_step_reads_true(steps, step, code, needles):
    got, text = steps[step]
    assert got == code, text
    assert "Traceback" not in text and "unexpected" not in text, text
    for needle in needles:
        assert needle in text, text


def test_the_interrupted_run_applied_some_and_the_next_finished_the_rest(steps):
    _, text = steps["interrupted"]
    applied = text.count("~ update user")
    assert 1 <= applied < 4, text
    assert steps["the next sync finishes the rest"][1].count("~ update user") == 4 - applied


def test_the_token_is_never_printed(steps):
    assert all(TOKEN not in text for _code, text in steps.values())
