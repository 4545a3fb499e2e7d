"""agent/core/expressions.py: the forms of a mapping expression, its filters, its errors."""

from __future__ import annotations

import pytest

from agent.core.expressions import (MAX_VALUE, BadValue, Expression, ExpressionError, lookup,
                                    text_of)

ALICE = {"givenName": "Alice", "sn": "Archer", "mail": "  Alice.Archer@EXAMPLE.org ",
         "uid": "aarcher", "cn": ["", "Engineering and Operations Department", "second"],
         "empty": "", "flag": True, "number": 42, "profile": {"email": "nested@example.org"}}


def value(expression, attributes=ALICE) -> str:
    return Expression.parse(expression).evaluate(attributes)


# ------------------------------------------------------------------ the forms


def test_a_plain_string_is_an_attribute_name():
    assert value("givenName") == "Alice"
    assert value("mail") == "Alice.Archer@EXAMPLE.org"          # trimmed
    assert value("missing") == ""


def test_a_plain_string_is_never_a_constant():
    # "Engineer" is read as an attribute name (check names it if no record has it)
    assert value("Engineer") == ""


def test_a_constant_is_written_as_a_table():
    assert value({"constant": "Acme Corp"}) == "Acme Corp"
    assert value({"constant": "{not a template}"}) == "{not a template}"


def test_a_list_takes_the_first_non_empty_alternative():
    assert value(["empty", "missing", "uid", "mail"]) == "aarcher"
    assert value(["missing", {"constant": "fallback"}]) == "fallback"
    assert value(["missing", "empty"]) == ""


def test_a_template_fills_placeholders():
    assert value("{givenName} {sn}") == "Alice Archer"
    assert value("{uid}@corp.example") == "aarcher@corp.example"


def test_a_template_whose_placeholders_are_all_empty_is_empty_so_a_list_falls_back():
    assert value("{missing} {empty}") == ""
    assert value("{missing}.{empty}@corp.example") == ""
    assert value(["{missing} {empty}", "uid"]) == "aarcher"
    assert value("{givenName} {missing}") == "Alice"                 # one is enough


def test_double_braces_are_literal_braces():
    assert value("{{{uid}}}") == "{aarcher}"
    assert value("{{literal}}") == "{literal}"


def test_multi_valued_attributes_give_their_first_non_empty_value():
    assert value("cn") == "Engineering and Operations Department"
    assert value("{cn | upper}") == "ENGINEERING AND OPERATIONS DEPARTMENT"


def test_scalars_are_rendered_as_text_and_nested_objects_reached_by_dotted_names():
    assert value("flag") == "true"
    assert value("number") == "42"
    assert value("profile.email") == "nested@example.org"
    assert value("profile") == ""                                    # an object gives nothing


# ------------------------------------------------------------------ filters


@pytest.mark.parametrize("expression, expected", [
    ("{mail | lower}", "alice.archer@example.org"),
    ("{mail|upper}", "ALICE.ARCHER@EXAMPLE.ORG"),
    ("{mail | replace('EXAMPLE.org', 'example.com')}", "Alice.Archer@example.com"),
    ('{mail | regex("^([^@]+)@", 1)}', "Alice.Archer"),
    ('{mail | regex("@(?P<domain>.+)$", "domain") | lower}', "example.org"),
    ('{mail | regex("^nomatch")}', ""),
    ('{mail | regex("[a-z]+")}', "lice"),                           # group 0: the whole match
    ('{mail | split("@")}', "Alice.Archer"),
    ('{mail | split("@", 1)}', "EXAMPLE.org"),
    ('{mail | split(".", -1)}', "org"),
    ('{mail | split("@", 5)}', ""),
    ("{cn | truncate(24) | trim}", "Engineering and Operatio"),
    ("{missing | default('n/a')}", "n/a"),
    ("{givenName | default('n/a')}", "Alice"),
    ("{ givenName | lower | replace('a', 'A') }", "Alice"),
    ("{mail | split('@') | split('.', 1) | lower}", "archer"),
    ("{missing | trim | upper}", ""),
])
def test_filters(expression, expected):
    assert value(expression) == expected


def test_a_backslash_in_an_argument_escapes_only_quotes_and_itself():
    assert value(r'{mail | regex("^(\w+)\.", 1)}') == "Alice"
    assert value(r"{givenName | replace('Alice', '\'')}") == "'"
    assert value(r'{uid | default("x") | replace("aarcher", "a\\b")}') == "a\\b"


def test_regex_filters_respect_case_unless_told():
    assert value('{mail | regex("example")}') == ""
    assert value('{mail | regex("(?i)example")}') == "EXAMPLE"


# ------------------------------------------------------------------ what an expression reads


def test_attributes_lists_every_source_name_read():
    expression = Expression.parse(["mail", "{givenName} {sn | lower}", {"constant": "x"}])
    assert expression.attributes() == {"mail", "givenName", "sn"}


def test_written_shows_the_expression_as_the_config_writes_it():
    assert Expression.parse("mail").written == "'mail'"
    assert Expression.parse({"constant": "Acme"}).written == "{ constant = 'Acme' }"
    assert Expression.parse(["mail", '{uid | regex("x")}']).written == \
        "['mail', '{uid | regex(\"x\")}']"


def test_trace_says_which_alternative_gave_the_value():
    trace = Expression.parse(["missing", "{uid}@corp", "mail"]).trace(ALICE)
    assert (trace.value, trace.alternative, trace.error) == ("aarcher@corp", 1, "")
    assert Expression.parse(["missing"]).trace(ALICE).alternative is None


# ------------------------------------------------------------------ errors at load


@pytest.mark.parametrize("expression, position, words", [
    ("{givenName", 1, "unterminated placeholder (missing })"),
    ("{givenName} }", 13, "a lone }"),
    ("{givenName | lowr}", 14, "unknown filter 'lowr'"),
    ("{givenName | lower(1)}", 14, "lower takes no arguments"),
    ("{mail | replace('a')}", 9, 'replace needs 2 arguments: replace("old", "new")'),
    ("{mail | regex('(')}", 15, "regex: not a regular expression: missing )"),
    ("{mail | regex('(a)', 2)}", 22, "regex: group 2 does not exist"),
    ("{mail | regex('(a)', 'nope')}", 22, "no group named 'nope'"),
    ("{mail | regex('(a)\\1')}", 15, "not a regular expression"),     # RE2: no backreferences
    ("{mail | split('')}", 15, "split: the first argument cannot be empty"),
    ("{mail | split('@', 'x')}", 20, "split: expected a whole number"),
    ("{mail | truncate(0)}", 18, "truncate: n must be at least 1"),
    ("{mail | default('x}", 17, "unterminated string"),
    ("{mail | default(x)}", 17, "expected a quoted string or a whole number"),
    ("{given name}", 8, "expected | or } after given"),
    ("{ }", 3, "expected a source attribute name"),
    ("{mail |}", 8, "expected a filter name"),
])
def test_a_bad_template_names_the_position(expression, position, words):
    with pytest.raises(ExpressionError) as caught:
        Expression.parse(expression)
    assert caught.value.position == position, str(caught.value)
    assert words in caught.value.message
    assert str(caught.value).startswith(f"'{expression}' at position {position}: ") or \
        f"at position {position}: " in str(caught.value)


@pytest.mark.parametrize("bad, words", [
    ("", "an empty string names no attribute"),
    (" mail", "cannot start or end with spaces"),
    ({"const": "x"}, "must be { constant = \"...\" }"),
    ({"constant": 3}, "a constant must be a string"),
    (3, "expected an attribute name, a template, a list"),
    ([], "an empty list"),
])
def test_other_bad_forms_are_refused(bad, words):
    with pytest.raises(ExpressionError) as caught:
        Expression.parse(bad)
    assert words in caught.value.message


def test_an_error_in_a_list_names_the_item():
    with pytest.raises(ExpressionError) as caught:
        Expression.parse(["mail", "{uid | nope}"])
    assert caught.value.item == 2
    assert str(caught.value).startswith("item 2 '{uid | nope}' at position 8: unknown filter")
    with pytest.raises(ExpressionError) as nested:
        Expression.parse(["mail", ["uid"]])
    assert nested.value.item == 2 and "a list inside a list" in str(nested.value)


# ------------------------------------------------------------------ bad data


@pytest.mark.parametrize("raw, words", [
    ("J\ud800se", "not valid Unicode"),
    ("x" * (MAX_VALUE + 1), f"{MAX_VALUE + 1} characters long"),
    (10 ** 5000, "a number too large"),
    (b"\xff\xfe", "binary data"),
    (object(), "a object value"),
], ids=["surrogate", "huge-text", "huge-int", "binary", "object"])
def test_bad_source_data_raises_bad_value_naming_the_attribute(raw, words):
    with pytest.raises(BadValue) as caught:
        Expression.parse("{title | lower}").evaluate({"title": raw})
    assert str(caught.value).startswith("title is ") and words in str(caught.value)
    trace = Expression.parse("title").trace({"title": raw})
    assert trace.value == "" and words in trace.error


def test_a_template_that_grows_past_the_limit_is_bad_data():
    half = "x" * (MAX_VALUE // 2 + 1)
    with pytest.raises(BadValue):
        Expression.parse("{a}{b}").evaluate({"a": half, "b": half})


def test_lookup_stays_lenient():
    assert lookup({"x": "J\ud800se"}, "x") == ""
    assert text_of(["", None, ["nested", "x"]]) == "nested"
