"""agent/config.py: the TOML loader, its error messages, secrets and value types."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import pytest

from agent import config as config_module
from agent.config import ConfigError, Threshold, load, parse_duration
from agent.core.expressions import Expression
from connectors.base import USER_ATTRIBUTES, Secret

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-token-value-9f8e7d"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("SCIM_TOKEN", "CREDENTIALS_DIRECTORY", "SCIM_AGENT_CONFIG", "TEST_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def config_text(*, state: str = 'path = "state.db"',
                source: str = 'type = "file"\npath = "directory.json"',
                target: str = 'url = "https://split.example.test/scim/v2"',
                extra: str = "") -> str:
    return f"[state]\n{state}\n\n[source]\n{source}\n\n[target]\n{target}\n\n{extra}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error_at(path: Path, **kwargs) -> str:
    """The message of the ConfigError that loading ``path`` raises; it must name the file."""
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def load_error(tmp_path: Path, text: str, **kwargs) -> str:
    return load_error_at(write(tmp_path, text), **kwargs)


# ------------------------------------------------------------------ the bundled example


def test_example_config_loads_without_target_secrets():
    config = load(REPO / "config.example.toml", resolve_target_secrets=False)
    assert config.source.type == "file"
    assert config.source.settings.path == REPO / "examples" / "directory.json"
    assert config.state.path == REPO / "state" / "scim-agent.db"
    assert config.target.token is not None and not config.target.token.resolved
    assert config.sync.max_deactivations == Threshold(10, True)
    assert config.schedule.interval == dt.timedelta(minutes=5)


def test_example_config_shows_every_kind_of_expression_and_scope_rule():
    from agent.core.expressions import FILTER_NAMES
    from agent.core.scope import OPERATORS

    text = (REPO / "config.example.toml").read_text()
    lines = [line.lstrip("# ") for line in text.splitlines()]
    written = "\n".join(lines)
    for name in FILTER_NAMES:
        assert f"| {name}" in written, name
    for operator in OPERATORS:
        assert any(line.startswith(f"{operator} = ") for line in lines), operator
    for shown in ("[source.attributes]", "[source.group_attributes]", "[[source.scope]]",
                  "= { constant = ", '= ["', "manager = ", 'objects = "groups"'):
        assert shown in written, shown
    # and the commented-out examples are valid as they are written
    import tomllib

    from agent.core.scope import Scope
    mapping = text[text.index("[source.attributes]"):text.index("[target]")]
    parsed = 0
    for line in mapping.splitlines():
        try:
            table = tomllib.loads(line.removeprefix("# "))
        except tomllib.TOMLDecodeError:
            continue
        for key, value in table.items():
            if key in USER_ATTRIBUTES:
                Expression.parse(value)
                parsed += 1
    assert parsed >= 10
    block = mapping[mapping.index("# [[source.scope]]"):]
    rules = tomllib.loads("\n".join(line.removeprefix("# ").removeprefix("#")
                                    for line in block.splitlines()))["source"]["scope"]
    assert len(Scope.parse(rules).rules) == 5


def test_example_config_resolves_the_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", SECRET)
    config = load(REPO / "config.example.toml")
    assert config.target.token.reveal() == SECRET


def test_example_config_without_scim_token_names_the_variable():
    message = load_error_at(REPO / "config.example.toml")
    assert "[target] token" in message
    assert "SCIM_TOKEN" in message


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    config = load(write(tmp_path, config_text()))
    assert config.target.rate_limit == 10.0
    assert config.target.concurrency == 4
    assert config.target.admin_group_name == "Split_Administrators"
    assert config.sync.deactivate is True
    assert config.sync.groups is True
    assert config.sync.max_deactivations == Threshold(10, True)


# ------------------------------------------------------------------ file-level errors


def test_missing_file_is_named(tmp_path):
    message = load_error_at(tmp_path / "nope.toml")
    assert "not found" in message


def test_invalid_toml_is_named(tmp_path):
    message = load_error(tmp_path, config_text(extra="[sync\ndeactivate = true"))
    assert "not valid TOML" in message


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(config_text().encode() + b'# caf\xe9\n')
    assert "UTF-8" in load_error_at(path)


# ------------------------------------------------------------------ unknown and missing keys


def test_unknown_section(tmp_path):
    message = load_error(tmp_path, config_text(extra="[sink]\nx = 1"))
    assert "[sink]" in message and "unknown section" in message


def test_unknown_key_in_a_section(tmp_path):
    message = load_error(tmp_path, config_text(extra="[sync]\ndeactivte = true"))
    assert "[sync] deactivte" in message and "unknown key" in message


def test_unknown_key_in_source(tmp_path):
    source = 'type = "file"\npath = "d.json"\nfilename = "d.json"'
    message = load_error(tmp_path, config_text(source=source))
    assert "[source] filename" in message and "unknown key" in message


def test_unknown_scim_attribute_in_source_attributes(tmp_path):
    source = 'type = "file"\npath = "d.json"\n[source.attributes]\nshoeSize = "shoe"'
    message = load_error(tmp_path, config_text(source=source))
    assert "[source.attributes] shoeSize" in message


def test_mapping_expressions_are_parsed_at_load(tmp_path):
    source = ('type = "file"\npath = "d.json"\n[source.attributes]\n'
              'userName = "{mail | lower}"\ndisplayName = ["displayName", "{givenName} {sn}"]\n'
              'organization = { constant = "Acme" }\ntitle = "jobTitle"\n'
              '[source.group_attributes]\ndisplayName = "{displayName | truncate(24)}"\n'
              '[[source.scope]]\naction = "exclude"\nattribute = "userType"\nequals = "Guest"\n'
              '[[source.scope]]\naction = "include"\nobjects = "groups"\n'
              'attribute = "displayName"\nregex = "^(Eng|Ops)"\n')
    config = load(write(tmp_path, config_text(source=source)), resolve_target_secrets=False)
    attributes = config.source.attributes
    assert attributes["userName"] == Expression.parse("{mail | lower}")
    assert attributes["organization"].evaluate({}) == "Acme"
    assert attributes["displayName"].evaluate({"givenName": "A", "sn": "B"}) == "A B"
    assert config.source.group_attributes["displayName"].evaluate(
        {"displayName": "x" * 30}) == "x" * 24
    assert [r.describe() for r in config.source.scope.rules] == [
        'scope rule 1 (exclude users where userType equals "Guest")',
        'scope rule 2 (include groups where displayName matches "^(Eng|Ops)")']


@pytest.mark.parametrize("line, words", [
    ('displayName = "{givenName | lowr} {sn}"',
     "[source.attributes] displayName: '{givenName | lowr} {sn}' at position 14: unknown "
     "filter 'lowr'"),
    ('displayName = ["cn", "{sn"]',
     "[source.attributes] displayName: item 2 '{sn' at position 1: unterminated placeholder"),
    ('title = { value = "x" }', "[source.attributes] title: '{\"value\": \"x\"}': a table "
                                "here must be { constant = \"...\" }"),
    ('title = 3', "[source.attributes] title: '3': expected an attribute name"),
])
def test_a_bad_expression_names_the_key_the_expression_and_the_position(tmp_path, line, words):
    source = f'type = "file"\npath = "d.json"\n[source.attributes]\n{line}'
    message = load_error(tmp_path, config_text(source=source))
    assert words in message, message


def test_group_attributes_take_display_name_only(tmp_path):
    source = 'type = "file"\npath = "d.json"\n[source.group_attributes]\nname = "cn"'
    message = load_error(tmp_path, config_text(source=source))
    assert "[source.group_attributes] name: not a group attribute" in message


@pytest.mark.parametrize("rule, words", [
    ('action = "exclude"\nattribute = "userType"', "[[source.scope]] #2: needs exactly one of"),
    ('action = "exclude"\nattribute = "uid"\nregex = "(svc"',
     "[[source.scope]] #2 regex: \"(svc\": not a regular expression: missing )"),
    ('action = "skip"\nattribute = "uid"\npresent = true', "[[source.scope]] #2 action: must be"),
    ('action = "exclude"\nattribute = "uid"\nequal = "x"', "[[source.scope]] #2 equal: unknown key"),
])
def test_a_bad_scope_rule_names_its_number_and_key(tmp_path, rule, words):
    source = ('type = "file"\npath = "d.json"\n[[source.scope]]\naction = "include"\n'
              f'attribute = "department"\npresent = true\n[[source.scope]]\n{rule}')
    message = load_error(tmp_path, config_text(source=source))
    assert words in message, message


@pytest.mark.parametrize("text, words", [
    (config_text(extra="[sync]\nmax_deactivation = 5"),
     "[sync] max_deactivation: unknown key; did you mean 'max_deactivations'? (known keys: "),
    (config_text(target='url = "https://h/scim/v2"\ntokn = "x"'),
     "[target] tokn: unknown key; did you mean 'token'?"),
    (config_text(extra="[sinc]\ndeactivate = true"),
     "[sinc]: unknown section; did you mean 'sync'?"),
    (config_text(extra="[attributes]\nuserName = \"mail\""),
     "[attributes]: unknown section; did you mean 'source.attributes'?"),
    (config_text(extra="[[scope]]\naction = \"exclude\""),
     "[scope]: unknown section; did you mean 'source.scope'?"),
    (config_text(source='type = "ldpa"'),
     "[source] type: 'ldpa' is not one of file, ldap, okta, entra; did you mean 'ldap'?"),
    (config_text(source='type = "file"\npath = "d.json"\nattribute = "x"'),
     "[source] attribute: unknown key; did you mean 'attributes'?"),
    (config_text(source='type = "ldap"\nurl = "ldaps://h"\nuser_base = "dc=x"\nbind_nd = "cn=a"'),
     "[source] bind_nd: unknown key; did you mean 'bind_dn'?"),
    (config_text(source='type = "file"\npath = "d.json"\n[source.attributes]\ngivenName = "gn"'),
     "[source.attributes] givenName: not a SCIM user attribute this agent sends; did you mean "
     "'name.givenName'?"),
    (config_text(source='type = "file"\npath = "d.json"\n[source.group_attributes]\n'
                        'displayname = "cn"'),
     "[source.group_attributes] displayname: not a group attribute this agent sends; did you "
     "mean 'displayName'?"),
    (config_text(source='type = "file"\npath = "d.json"\n[[source.scope]]\n'
                        'action = "exclude"\nattribute = "uid"\nequal = "x"'),
     "[[source.scope]] #1 equal: unknown key; did you mean 'equals'?"),
    (config_text(target='url = "https://h/scim/v2"\ntoken = { enw = "SCIM_TOKEN" }'),
     "[target] token: unknown secret source 'enw'; did you mean 'env'?"),
])
def test_an_unknown_key_or_section_suggests_the_nearest_known_one(tmp_path, text, words):
    message = load_error(tmp_path, text)
    assert words in message, message


def test_a_name_like_no_known_one_suggests_nothing(tmp_path):
    message = load_error(tmp_path, config_text(extra="[sync]\nzzz = 1"))
    assert "did you mean" not in message and "known keys: admin_group" in message


def test_unknown_source_type(tmp_path):
    message = load_error(tmp_path, config_text(source='type = "csv"\npath = "d"'))
    assert "[source] type" in message and "'csv'" in message


@pytest.mark.parametrize("section", ["state", "source", "target"])
def test_missing_required_section(tmp_path, section):
    blocks = config_text().split("\n\n")
    text = "\n\n".join(b for b in blocks if not b.startswith(f"[{section}]"))
    message = load_error(tmp_path, text)
    assert f"[{section}]" in message and "missing" in message


@pytest.mark.parametrize("kwargs, where", [
    ({"state": ""}, "[state] path"),
    ({"source": 'path = "d.json"'}, "[source] type"),
    ({"source": 'type = "file"'}, "[source] path"),
    ({"target": 'rate_limit = 5.0'}, "[target] url"),
])
def test_missing_required_key(tmp_path, kwargs, where):
    message = load_error(tmp_path, config_text(**kwargs))
    assert where in message and "required" in message


# ------------------------------------------------------------------ wrong types and bad values


@pytest.mark.parametrize("kwargs, where", [
    ({"target": 'url = "https://h/scim/v2"\nconcurrency = "4"'}, "[target] concurrency"),
    ({"extra": "[sync]\ndeactivate = 1"}, "[sync] deactivate"),
    ({"target": 'url = "https://h/scim/v2"\nmax_attempts = true'}, "[target] max_attempts"),
    ({"target": 'url = "https://h/scim/v2"\nrate_limit = false'}, "[target] rate_limit"),
    ({"target": "url = 42"}, "[target] url"),
    ({"state": "path = 3"}, "[state] path"),
    ({"extra": '[sync]\nadmin_group = ["a"]'}, "[sync] admin_group"),
], ids=["string-for-int", "int-for-bool", "bool-for-int", "bool-for-float", "int-for-url",
        "int-for-path", "list-for-string"])
def test_wrong_type_names_the_key(tmp_path, kwargs, where):
    message = load_error(tmp_path, config_text(**kwargs))
    assert where in message
    assert "expected" in message


@pytest.mark.parametrize("value", ['"5 minutes"', '"0s"', '"-5m"', '"m"', "true", '""',
                                   "5", "2.5", '"100ms"'])
def test_bad_duration_names_the_key(tmp_path, value):
    message = load_error(tmp_path, config_text(extra=f"[schedule]\ninterval = {value}"))
    assert "[schedule] interval" in message


@pytest.mark.parametrize("section, key", [("schedule", "max_backoff"), ("sync", "max_cycle_time"),
                                          ("sync", "reconcile_every"), ("target", "max_wait")])
def test_a_bare_number_is_no_duration_for_any_key(tmp_path, section, key):
    """``interval = 5`` meant five minutes to the one who wrote it and ran a cycle every five
    seconds: every duration is written with its unit."""
    text = config_text(extra=f"[{section}]\n{key} = 5") if section != "target" else \
        config_text(target='url = "https://split.example.test/scim/v2"\nmax_wait = 5')
    message = load_error(tmp_path, text)
    assert f"[{section}] {key}" in message and "has no unit" in message


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("1.5h", 5400), ("250ms", 0.25),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ['"150%"', '"ten"', "-1", "2.5", "true"])
def test_bad_threshold_names_the_key(tmp_path, value):
    message = load_error(tmp_path, config_text(extra=f"[sync]\nmax_deactivations = {value}"))
    assert "[sync] max_deactivations" in message


@pytest.mark.parametrize("value, expected", [
    ('"10%"', Threshold(10, True)), ("25", Threshold(25, False)), ('"25"', Threshold(25, False)),
    ('"100%"', Threshold(100, True)), ("0", Threshold(0, False)),
])
def test_thresholds_parse(tmp_path, value, expected):
    config = load(write(tmp_path, config_text(extra=f"[sync]\nmax_deactivations = {value}")))
    assert config.sync.max_deactivations == expected


def test_interval_and_cron_together_are_refused(tmp_path):
    extra = '[schedule]\ninterval = "5m"\ncron = "*/5 * * * *"'
    message = load_error(tmp_path, config_text(extra=extra))
    assert "[schedule]" in message and "interval" in message and "cron" in message


@pytest.mark.parametrize("cron", ["every five minutes", "61 * * * *", "* * * *"])
def test_bad_cron_names_the_key(tmp_path, cron):
    message = load_error(tmp_path, config_text(extra=f'[schedule]\ncron = "{cron}"'))
    assert "[schedule] cron" in message


def test_good_cron_loads(tmp_path):
    config = load(write(tmp_path, config_text(extra='[schedule]\ncron = "*/5 * * * *"')))
    assert config.schedule.cron == "*/5 * * * *"
    assert config.schedule.interval is None


@pytest.mark.parametrize("url", ["split.example.test/scim", "ftp://h/scim", "https://u:p@h/scim",
                                 "https://h/scim/v2?org=1", "https://h/scim/v2#x",
                                 "https://h/scim/v2?"])
def test_bad_target_url(tmp_path, url):
    message = load_error(tmp_path, config_text(target=f'url = "{url}"'))
    assert "[target] url" in message


# ------------------------------------------------------------------ relative paths


def test_relative_paths_are_relative_to_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = 'url = "https://h/scim/v2"\nca_file = "certs/ca.pem"'
    (folder / "certs").mkdir()                      # read at load: it must be a CA bundle
    import certifi
    (folder / "certs" / "ca.pem").write_text(Path(certifi.where()).read_text())
    config = load(write(folder, config_text(state='path = "var/state.db"', target=target)))
    assert config.state.path == folder / "var" / "state.db"
    assert config.source.settings.path == folder / "directory.json"
    assert config.target.ca_file == folder / "certs" / "ca.pem"


def test_absolute_paths_are_kept(tmp_path):
    config = load(write(tmp_path, config_text(state='path = "/var/lib/scim-agent/state.db"')))
    assert config.state.path == Path("/var/lib/scim-agent/state.db")


def test_relative_config_path_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, config_text())
    monkeypatch.chdir(tmp_path)
    config = load("config.toml")
    assert config.path == tmp_path / "config.toml"
    assert config.state.path == tmp_path / "state.db"


# ------------------------------------------------------------------ secrets


def with_token(token: str) -> str:
    return config_text(target=f'url = "https://h/scim/v2"\ntoken = {token}')


def test_literal_secret(tmp_path):
    config = load(write(tmp_path, with_token(f'"{SECRET}"')))
    assert config.target.token.reveal() == SECRET


def test_env_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    config = load(write(tmp_path, with_token('{ env = "TEST_TOKEN" }')))
    assert config.target.token.reveal() == SECRET


def test_file_secret_strips_the_trailing_newline(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = load(write(tmp_path, with_token('{ file = "token" }')))
    assert config.target.token.reveal() == SECRET


def test_file_secret_is_relative_to_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(SECRET)
    monkeypatch.chdir("/")
    config = load(write(tmp_path, with_token('{ file = "secrets/token" }')))
    assert config.target.token.reveal() == SECRET


def test_credential_secret(tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "scim-token").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load(write(tmp_path, with_token('{ credential = "scim-token" }')))
    assert config.target.token.reveal() == SECRET


def test_unset_env_secret_names_the_variable(tmp_path):
    message = load_error(tmp_path, with_token('{ env = "TEST_TOKEN" }'))
    assert "[target] token" in message and "TEST_TOKEN" in message


def test_missing_secret_file_is_named(tmp_path):
    message = load_error(tmp_path, with_token('{ file = "absent" }'))
    assert "[target] token" in message and str(tmp_path / "absent") in message


def test_world_writable_secret_file_is_refused(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o666)
    message = load_error(tmp_path, with_token('{ file = "token" }'))
    assert "[target] token" in message and "writable by everyone" in message


def test_empty_secret_file_is_refused(tmp_path):
    (tmp_path / "token").write_text("\n")
    message = load_error(tmp_path, with_token('{ file = "token" }'))
    assert "[target] token" in message and "empty" in message


def test_credential_without_credentials_directory(tmp_path):
    message = load_error(tmp_path, with_token('{ credential = "scim-token" }'))
    assert "[target] token" in message and "CREDENTIALS_DIRECTORY" in message


def test_unknown_secret_form(tmp_path):
    message = load_error(tmp_path, with_token('{ vault = "kv/scim" }'))
    assert "[target] token" in message and "vault" in message


@pytest.mark.parametrize("value, words", [
    (SECRET + " ", "ends with a space"),
    (SECRET + "\n", "ends with a line break"),
    (SECRET + " \r\n", "ends with a space and a line break"),
    ("\t" + SECRET, "starts with a tab"),
    (SECRET[:6] + "\u2019" + SECRET[6:], "has a non-ASCII character (U+2019 RIGHT SINGLE "
                                         "QUOTATION MARK) at character 7"),
    (SECRET[:6] + " " + SECRET[6:], "has a space at character 7"),
    (SECRET[:6] + "\x7f" + SECRET[6:], "has a control character (U+007F) at character 7"),
    (SECRET + "\u00a0", "ends with a non-ASCII character (U+00A0 NO-BREAK SPACE)"),
])
def test_a_token_that_cannot_be_sent_is_refused_at_load_saying_what_and_where(
        tmp_path, monkeypatch, value, words):
    """Sent as it is, the HTTP library would refuse it on every attempt (LocalProtocolError,
    UnicodeEncodeError): say so once, at load, naming the key and where the value came from."""
    monkeypatch.setenv("SCIM_TOKEN", value)
    message = load_error(tmp_path, with_token('{ env = "SCIM_TOKEN" }'))
    assert ("[target] token: the value from environment variable SCIM_TOKEN " + words
            + ", which no token contains") in message, message
    assert SECRET not in message and SECRET[6:] not in message
    assert message.count("\n") == 0


def test_the_token_format_is_checked_whatever_form_the_secret_takes(tmp_path, monkeypatch):
    (tmp_path / "token").write_text(SECRET + " \n")
    message = load_error(tmp_path, with_token('{ file = "token" }'))
    assert f"the value from file {tmp_path / 'token'} ends with a space" in message
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "scim_token").write_text("\u201c" + SECRET + "\u201d")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    message = load_error(tmp_path, with_token('{ credential = "scim_token" }'))
    assert "the value from credential scim_token has a non-ASCII character (U+201C LEFT " \
           "DOUBLE QUOTATION MARK) at character 1" in message
    # a literal in the config file is checked even by plan, which resolves no target secret
    message = load_error(tmp_path, with_token(f'"{SECRET} "'), resolve_target_secrets=False)
    assert "the value from the config file ends with a space" in message


@pytest.mark.parametrize("source, key", [
    ('type = "okta"\norg_url = "https://acme.okta.com"\ntoken = { env = "SCIM_TOKEN" }',
     "[source] token"),
    ('type = "entra"\ntenant_id = "contoso.onmicrosoft.com"\n'
     'client_id = "0f8fad5b-d9cb-469f-a165-70867728950e"\n'
     'client_secret = { env = "SCIM_TOKEN" }', "[source] client_secret"),
])
def test_source_tokens_are_checked_the_same_way(tmp_path, monkeypatch, source, key):
    monkeypatch.setenv("SCIM_TOKEN", SECRET + "\n")
    message = load_error(tmp_path, config_text(source=source))
    assert f"{key}: the value from environment variable SCIM_TOKEN ends with a line break" \
           in message


def test_passwords_and_keys_may_hold_any_character(tmp_path, monkeypatch):
    """An LDAP password may have spaces and accents; a PEM key has line breaks: they are
    not tokens, and are not checked as tokens."""
    monkeypatch.setenv("SCIM_TOKEN", "pass wörd ")
    source = ('type = "ldap"\nurl = "ldaps://ldap.example.org"\nuser_base = "dc=example"\n'
              'bind_dn = "cn=agent,dc=example"\npassword = { env = "SCIM_TOKEN" }')
    config = load(write(tmp_path, config_text(source=source)), resolve_target_secrets=False)
    assert config.source.settings.password.reveal() == "pass wörd "


def test_every_secret_field_says_whether_it_is_sent_as_a_token():
    """The class, not one key: a secret that reaches an HTTP header (or a token endpoint as a
    client secret) is declared ``"token": True`` and checked at load. A new secret field
    fails this test until someone decides which it is."""
    import dataclasses
    import typing

    from agent.config import TargetConfig
    from connectors import SOURCES, source_class

    classes = {"target": TargetConfig} | {t: source_class(t).Settings for t in SOURCES}
    found = {}
    for name, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if Secret in typing.get_args(hints[f.name]) or hints[f.name] is Secret:
                found[f"{name}.{f.name}"] = bool(f.metadata.get("token"))
    assert found == {
        "target.token": True,            # Authorization: Bearer
        "okta.token": True,              # Authorization: SSWS
        "entra.client_secret": True,     # client_secret at the token endpoint
        "ldap.password": False,          # an LDAP bind, any characters
        "okta.private_key": False,       # PEM or JWK text, signs; never sent
        "entra.certificate": False,      # PEM text, signs; never sent
    }


def test_target_secrets_are_not_read_when_not_needed(tmp_path):
    config = load(write(tmp_path, with_token('{ env = "TEST_TOKEN" }')),
                  resolve_target_secrets=False)
    assert config.target.token is not None and not config.target.token.resolved
    assert config.target.token.origin == "environment variable TEST_TOKEN"


@pytest.mark.parametrize("token", [
    f'["{SECRET}"]',                                   # a list instead of a string
    f'{{ env = "TEST_TOKEN", literal = "{SECRET}" }}',  # two forms at once
    f'{{ literal = "{SECRET}" }}',                       # an unknown form holding the value
])
def test_secret_errors_never_contain_the_value(tmp_path, token):
    message = load_error(tmp_path, with_token(token))
    assert "[target] token" in message
    assert SECRET not in message


def test_later_errors_never_contain_a_resolved_secret(tmp_path):
    target = f'url = "https://h/scim/v2"\ntoken = "{SECRET}"\nconcurrency = "many"'
    message = load_error(tmp_path, config_text(target=target))
    assert "[target] concurrency" in message
    assert SECRET not in message


def test_secret_file_errors_never_contain_the_value(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o666)
    assert SECRET not in load_error(tmp_path, with_token('{ file = "token" }'))


def test_secret_repr_and_str_hide_the_value():
    secret = Secret(SECRET, "environment variable SCIM_TOKEN")
    for shown in (repr(secret), str(secret), f"{secret}", "%s" % secret, repr([secret])):
        assert SECRET not in shown
    assert "SCIM_TOKEN" in repr(secret)


def test_loaded_config_repr_hides_the_secret(tmp_path):
    config = load(write(tmp_path, with_token(f'"{SECRET}"')))
    assert SECRET not in repr(config)


def test_secret_cannot_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(Secret(SECRET))


def test_config_holding_a_secret_cannot_be_pickled(tmp_path):
    config = load(write(tmp_path, with_token(f'"{SECRET}"')))
    with pytest.raises(TypeError):
        pickle.dumps(config)


# ------------------------------------------------------------------ Threshold


@pytest.mark.parametrize("percent, managed, limit", [
    (10, 5, 1),      # 0.5 rounds up: one leaver still passes in a small organisation
    (10, 10, 1),
    (10, 11, 2),     # 1.1 rounds up
    (10, 0, 0),
    (33, 100, 33),
    (12.5, 9, 2),    # 1.125 rounds up
])
def test_percentage_threshold_rounds_up(percent, managed, limit):
    assert Threshold(percent, True).limit(managed) == limit


def test_count_threshold_ignores_the_number_managed():
    assert Threshold(3, False).limit(1000) == 3
    assert Threshold(3, False).limit(1) == 3


def test_threshold_str_is_what_the_operator_wrote():
    assert str(Threshold(10, True)) == "10%"
    assert str(Threshold(25, False)) == "25"


def test_config_path_prefers_explicit_then_environment(monkeypatch):
    monkeypatch.setenv("SCIM_AGENT_CONFIG", "/srv/agent.toml")
    assert config_module.config_path("/tmp/x.toml") == Path("/tmp/x.toml")
    assert config_module.config_path(None) == Path("/srv/agent.toml")
    monkeypatch.delenv("SCIM_AGENT_CONFIG")
    assert config_module.config_path(None) == Path("/etc/scim-agent/config.toml")


# ------------------------------------------------------------------ under the systemd units


UNIT_NAME = "scim-agent@acme.service"


def test_the_folders_the_units_hide_are_known():
    from agent import sandbox

    unit = {"SCIM_AGENT_UNIT": UNIT_NAME}
    for path, option in (("/tmp/x.json", "PrivateTmp=yes"), ("/var/tmp/x", "PrivateTmp=yes"),
                         ("/home/it/x.json", "ProtectHome=yes"), ("/root/x", "ProtectHome=yes"),
                         ("/run/user/0/x", "ProtectHome=yes")):
        assert f"{UNIT_NAME} runs the agent with {option}" in sandbox.hidden_by_unit(
            Path(path), unit), path
        assert sandbox.hidden_by_unit(Path(path), {}) is None          # outside the units
    assert sandbox.hidden_by_unit(Path("/srv/scim-agent/x.json"), unit) is None
    assert sandbox.hidden_by_unit(Path("/tmpfoo/x"), unit) is None
    # and the units really set what the agent looks for
    for unit_file in ("scim-agent.service", "scim-agent@.service"):
        text = (REPO / "systemd" / unit_file).read_text()
        for line in ("Environment=SCIM_AGENT_UNIT=%n", "PrivateTmp=yes", "ProtectHome=yes",
                     "DynamicUser=yes"):
            assert line in text.splitlines(), (unit_file, line)


@pytest.fixture
def under_the_unit(tmp_path, monkeypatch):
    """The agent under the unit, with the hidden folders stood in for inside tmp_path (which
    itself lies in /tmp, hidden from a real service)."""
    from agent import sandbox

    monkeypatch.setenv("SCIM_AGENT_UNIT", UNIT_NAME)
    monkeypatch.setattr(sandbox, "HIDDEN", {tmp_path / "tmp": sandbox._PRIVATE_TMP,
                                            tmp_path / "home": sandbox._PROTECT_HOME})
    (tmp_path / "directory.json").write_text('{"users": []}')
    return tmp_path


@pytest.mark.parametrize("folder, words", [
    ("tmp", "runs the agent with PrivateTmp=yes, which gives it a /tmp and /var/tmp of its own "
            "(empty)"),
    ("home", "runs the agent with ProtectHome=yes, which hides /home, /root and /run/user from "
             "it"),
])
def test_a_file_export_the_unit_hides_is_named_at_load(under_the_unit, monkeypatch, folder,
                                                       words):
    """From a root shell the export in /tmp or /home is there; the service cannot see it."""
    where = under_the_unit / folder / "export.json"
    text = config_text(source=f'type = "file"\npath = "{where}"')
    message = load_error(under_the_unit, text)
    assert f"[source] path: {where} cannot be seen by the service: {UNIT_NAME} {words}; put " \
           "it in a folder the service can read, such as /srv/scim-agent/" in message
    monkeypatch.delenv("SCIM_AGENT_UNIT")
    load(write(under_the_unit, text))   # outside the unit: read (and reported) when it is read


def test_a_ca_file_the_unit_hides_is_named_at_load(under_the_unit):
    where = under_the_unit / "home" / "ca.pem"
    target = f'url = "https://h/scim/v2"\nca_file = "{where}"'
    message = load_error(under_the_unit, config_text(source='type = "file"\npath = '
                                                           '"directory.json"', target=target))
    assert f"[target] ca_file: {where} cannot be seen by the service" in message
    assert "ProtectHome=yes" in message


def test_a_secret_file_the_service_cannot_read_says_to_use_load_credential(under_the_unit,
                                                                           monkeypatch):
    """The Okta and Entra guides used to say to keep keys in a 0600 file under
    /etc/scim-agent, which the DynamicUser=yes service cannot read."""
    key = under_the_unit / "okta.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    real_read = Path.read_text

    def refuse(self, *args, **kwargs):
        if self == key:
            raise PermissionError(13, "Permission denied")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    source = ('type = "okta"\norg_url = "https://acme.okta.com"\nclient_id = "0oa1"\n'
              f'private_key = {{ file = "{key}" }}')
    message = load_error(under_the_unit, config_text(source=source))
    assert (f"[source] private_key: cannot read secret file {key}: Permission denied; "
            f"{UNIT_NAME} runs the agent as a user of its own (DynamicUser=yes), which cannot "
            f"read a file only root may read: hand it over with LoadCredential=okta.pem:{key} "
            f"in a drop-in (systemctl edit {UNIT_NAME}) and write "
            '{ credential = "okta.pem" }') in message
    monkeypatch.delenv("SCIM_AGENT_UNIT")
    message = load_error(under_the_unit, config_text(source=source))
    assert message.endswith(f"cannot read secret file {key}: Permission denied")


def test_a_secret_file_in_a_hidden_folder_says_to_use_load_credential(under_the_unit):
    where = under_the_unit / "home" / "token"
    message = load_error(under_the_unit, config_text(
        source='type = "file"\npath = "directory.json"',
        target=f'url = "https://h/scim/v2"\ntoken = {{ file = "{where}" }}'))
    assert f"[target] token: secret file {where} cannot be seen by the service" in message
    assert f"LoadCredential=token:{where}" in message


def test_under_a_unit_the_snapshot_must_be_in_its_state_folder(under_the_unit, monkeypatch):
    """An instance of scim-agent@ whose config was copied from another organisation's and
    still names that one's snapshot does not start."""
    mine, theirs = under_the_unit / "scim-agent-globex", under_the_unit / "scim-agent-acme"
    monkeypatch.setenv("STATE_DIRECTORY", str(mine))
    text = config_text(state=f'path = "{theirs}/state.db"')
    message = load_error(under_the_unit, text)
    assert (f"[state] path: {theirs}/state.db is outside the state folder of {UNIT_NAME} "
            f"({mine}), the only place the service may write: use path = "
            f'"{mine}/state.db"') in message
    assert load(write(under_the_unit, config_text(state=f'path = "{mine}/state.db"')))
    monkeypatch.delenv("STATE_DIRECTORY")                     # a unit without a state folder
    assert load(write(under_the_unit, text))


@pytest.mark.parametrize("url, words", [
    ("https://split.example.test/scim/v2 ", "ends with a space"),
    ("https://split.example.test /scim/v2", "has a space at character 27"),
    ("https://split\u2019s.example.test/scim/v2", "has a non-ASCII character (U+2019"),
])
def test_a_target_url_pasted_with_spaces_or_typographic_characters_is_named(tmp_path, url,
                                                                            words):
    """It would reach the request line and the Host header: a 404 on '/scim/v2%20', or an
    'unexpected InvalidURL'."""
    message = load_error(tmp_path, config_text(target=f'url = "{url}"'))
    assert f"[target] url: {url!r} {words}" in message, message

def test_a_secret_file_that_is_a_pipe_or_a_folder_is_refused_not_read_for_ever(tmp_path):
    import os
    os.mkfifo(tmp_path / "token.fifo")
    (tmp_path / "token.dir").mkdir()
    for name in ("token.fifo", "token.dir"):
        path = write(tmp_path, config_text(target=f'url = "https://h/scim/v2"\n'
                                                   f'token = {{ file = "{name}" }}'))
        with pytest.raises(ConfigError, match=rf"\[target\] token: secret file .*{name} is "
                                              r"not a regular file"):
            load(path)


# ------------------------------------------------------------------ a pasted secret is not echoed

PASTED = "Zq8Q~k2LmN4pR7sT9vW1xY3zA5bC6dE8fG0hJ"     # a client secret's shape, nothing real


@pytest.mark.parametrize("source, target", [
    # the URL and the token Split shows, copied together
    ('type = "file"\npath = "directory.json"',
     f'url = "https://split.example.test/scim/v2 {PASTED}"'),
    ('type = "file"\npath = "directory.json"',
     f'url = "https://split.example.test/scim/v2?token={PASTED}"'),
    # the secret in the id field next to it, or after the org URL
    ('type = "entra"\ntenant_id = "contoso.onmicrosoft.com"\n'
     f'client_id = "{PASTED}"\nclient_secret = "s"', None),
    (f'type = "entra"\ntenant_id = "{PASTED}"\n'
     'client_id = "0f8fad5b-d9cb-469f-a165-70867728950e"\nclient_secret = "s"', None),
    (f'type = "okta"\norg_url = "https://acme.okta.com/{PASTED}"\ntoken = "t"', None),
    (f'type = "okta"\norg_url = "https://acme.okta.com {PASTED}"\ntoken = "t"', None),
    (f'type = "ldap"\nurl = "ldaps://dc1.example.test {PASTED}"\nuser_base = "dc=example,dc=test"',
     None),
])
def test_a_secret_pasted_into_a_plain_field_is_not_echoed(tmp_path, source, target):
    """The config is refused before its secrets are known to the redaction, so the message
    itself must not repeat what looks like one (it reaches the terminal and, under systemd,
    the journal at every restart)."""
    text = config_text(source=source, **({"target": target} if target else {}))
    message = load_error(tmp_path, text)
    assert PASTED not in message and PASTED[:12] not in message, message
    assert "] url:" in message or "] client_id:" in message or "] tenant_id:" in message \
        or "] org_url:" in message, message                   # the key is still named


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:0"])
def test_a_metrics_port_out_of_range_is_named_at_load(tmp_path, listen):
    message = load_error(tmp_path, config_text(extra=f'[metrics]\nlisten = "{listen}"'))
    assert "[metrics] listen" in message and "not a TCP port" in message


def test_ordinary_values_in_a_message_are_shown_as_they_are(tmp_path):
    message = load_error(tmp_path, config_text(
        source='type = "entra"\ntenant_id = "organizations"\n'
               'client_id = "0f8fad5b-d9cb-469f-a165-70867728950e"\nclient_secret = "s"'))
    assert "'organizations' is not one tenant" in message
    message = load_error(tmp_path, config_text(source='type = "ldpa"'))
    assert "'ldpa' is not one of" in message and "hidden" not in message
