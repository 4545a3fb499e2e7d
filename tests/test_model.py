"""The desired state's values and digests (agent/core/model.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.core.model import digest_of, group_digest


@given(st.text())
def test_a_groups_digest_is_the_digest_of_its_name_as_json(name):
    try:
        expected = digest_of({"displayName": name})
    except UnicodeEncodeError:              # a lone surrogate is no name: refused either way
        try:
            group_digest(name)
        except UnicodeEncodeError:
            return
        raise AssertionError("a lone surrogate made a digest")
    assert group_digest(name) == expected
