"""Property: mapping is total and deterministic, for any expression and any source record.

Records hold anything a source could hand over and worse (lone surrogates, values far over
the limit, numbers too large to print, floats that are not numbers, lists, nested objects,
None, bytes); expressions and scope rules are drawn from the whole grammar. Mapping must never
raise, must give the same desired state for the same records in any order, must report bad
data as exactly one problem for that object, and must only ever produce values that can be
sent (text, non-empty, valid Unicode, within the limit).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.expressions import MAX_VALUE, Expression
from agent.core.mapping import MappingRules, in_scope, map_directory
from agent.core.scope import Scope
from connectors.base import USER_ATTRIBUTES, Directory, GroupRecord, UserRecord

NAMES = ["mail", "uid", "cn", "title", "profile.email", "profile", "dn", "manager", "x"]
IDS = [f"u{i}" for i in range(6)]
GIDS = [f"g{i}" for i in range(4)]

class HugeInt(int):
    """10**5000: str() refuses it, as for any int of more than 4300 digits; repr() does not,
    so hypothesis can still print a failing example."""

    def __repr__(self) -> str:
        return "HugeInt(10 ** 5000)"

    def __str__(self) -> str:
        return int.__repr__(self)


text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)   # surrogates too
nasty = st.sampled_from(["J\ud800se", "\udfff", "x" * (MAX_VALUE + 5), HugeInt(10 ** 5000),
                         b"\xff", float("nan"), float("inf"), -0.0])
plain = st.sampled_from(["a@example.org", "B@EXAMPLE.ORG", "  padded  ", "", "u2",
                         "uid=u1,ou=people,dc=example", "aab", "1,2"])
scalars = st.one_of(nasty, plain, st.none(), st.booleans(), st.integers(), st.floats(), text,
                    st.binary(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["email", "x", "login"]), inner,
                                                 max_size=2)), max_leaves=6)
attributes = st.dictionaries(st.sampled_from(NAMES), values, min_size=2, max_size=6)

FILTERS = ["lower", "upper", "trim", "default('dflt')", "replace('a', 'bb')", "replace('@', '')",
           "regex('(a+)(b)?', 2)", "regex('^.', 0)", "regex('(?P<d>[0-9]+)', 'd')",
           "split('@', 1)", "split(',', -1)", "split('.')", "truncate(3)"]
placeholder = st.builds(lambda name, fs: "{" + " | ".join([name, *fs]) + "}",
                        st.sampled_from(NAMES), st.lists(st.sampled_from(FILTERS), max_size=3))
literal = st.text(alphabet="ab .@-_", max_size=4) | st.just("{{") | st.just("}}")
template = st.lists(placeholder | literal, min_size=1, max_size=4).map("".join).filter(
    lambda t: "{" in t or "}" in t)
term = st.one_of(st.sampled_from(NAMES), template,
                 st.builds(lambda t: {"constant": t}, st.text(max_size=6)))
expression = st.one_of(term, st.lists(term, min_size=1, max_size=3))

condition = st.one_of(
    st.builds(lambda v: {"equals": v}, st.sampled_from(["a@example.org", "u2", "true", "1"])),
    st.builds(lambda v: {"in": v}, st.lists(st.sampled_from(["x", "a@example.org", "Guest"]),
                                            min_size=1, max_size=2)),
    st.builds(lambda v: {"regex": v}, st.sampled_from(["^a", "(x+)+$", "@", "(?-i)B"])),
    st.just({"present": True}), st.just({"absent": True}))
rule = st.builds(lambda action, objects, name, cond: {"action": action, "objects": objects,
                                                      "attribute": name, **cond},
                 st.sampled_from(["include", "exclude"]), st.sampled_from(["users", "groups"]),
                 st.sampled_from(NAMES + ["displayName"]), condition)

user_records = st.lists(st.builds(UserRecord, st.sampled_from(IDS), attributes, st.booleans()),
                        max_size=6)
group_records = st.lists(st.builds(
    GroupRecord, st.sampled_from(GIDS),
    st.dictionaries(st.sampled_from(["displayName", "cn", "x"]), values, max_size=3),
    st.frozensets(st.sampled_from(IDS + GIDS + ["ghost"]), max_size=4)), max_size=4)
rules = st.builds(
    lambda user_name, mapping, group_name, scope, admin: MappingRules(
        {"userName": user_name, **mapping}, Expression.parse(group_name),
        scope=Scope.parse(scope), admin_group=admin),
    expression.map(Expression.parse),
    st.dictionaries(st.sampled_from(sorted(USER_ATTRIBUTES)), expression.map(Expression.parse),
                    max_size=6),
    st.one_of(st.just("displayName"), st.just(["cn", "displayName"]), template),
    st.lists(rule, max_size=4),
    st.sampled_from(["", "g1", "Admins"]))


def key(desired):
    return (desired.users, desired.groups, frozenset(desired.problems))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_records, group_records, rules)
def test_mapping_is_total_and_deterministic(users, groups, rules):
    directory = Directory.of(users, groups)
    desired = map_directory(directory, rules)                       # never raises

    shuffled = Directory(dict(reversed(list(directory.users.items()))),
                         dict(reversed(list(directory.groups.items()))))
    assert key(map_directory(directory, rules)) == key(desired)
    assert key(map_directory(shuffled, rules)) == key(desired)

    # each object is reported once at most
    reported = Counter((p.kind, p.source_id) for p in desired.problems if p.source_id)
    assert all(n == 1 for n in reported.values()), reported

    # an in-scope user is either desired or a problem, never both; out of scope, neither
    admitted, _groups = in_scope(directory, rules.scope)
    problem_users = {sid for kind, sid in reported if kind == "user"}
    for sid in directory.users:
        if sid in admitted:
            assert (sid in desired.users) != (sid in problem_users), sid
        else:
            assert sid not in desired.users and sid not in problem_users, sid

    # only sendable values come out
    for user in desired.users.values():
        assert user.user_name and user.digest
        for name, value in user.attributes.items():
            assert isinstance(value, str) and value and value == value.strip(), (name, value)
            assert len(value) <= MAX_VALUE
            value.encode("utf-8")                                  # valid Unicode
        if "manager" in user.attributes:
            assert user.attributes["manager"] in admitted
            assert user.attributes["manager"] != user.source_id
    for group in desired.groups.values():
        group.display_name.encode("utf-8")
        assert group.members <= set(desired.users)
