"""The operator docs match the shipped units: secrets through LoadCredential=, exports where
the sandbox can read them, and a first sync that comes after a look at the plan."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from agent.config import TargetConfig
from connectors import SOURCES, source_class
from connectors.base import Secret

ROOT = Path(__file__).resolve().parent.parent
GUIDES = {t: ROOT / "docs" / "sources" / f"{t}.md" for t in ("ldap", "okta", "entra")}
INSTALL = ROOT / "docs" / "install.md"


def secret_keys(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls)
            if hints[f.name] is Secret or Secret in typing.get_args(hints[f.name])]


def assignments(text: str, keys) -> list[tuple[str, str]]:
    """Every ``key = value`` of a secret key in TOML text, commented-out ones included."""
    pattern = re.compile(rf"\b({'|'.join(keys)})\s*=\s*(\{{[^}}]*\}}|\"[^\"]*\")")
    return pattern.findall(text)


def toml_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```toml\n(.*?)```", markdown, re.S))


def credential_table() -> dict[str, str]:
    """install.md's table: config key -> credential name."""
    rows = re.findall(r"^\| [^|]+ \| `(\[\w+\] \w+)`[^|]* \| `(\w+)`", INSTALL.read_text(), re.M)
    return dict(rows)


def test_install_names_a_credential_for_every_secret_of_every_source():
    table = credential_table()
    keys = {"[target] token"} | {f"[source] {k}" for t in SOURCES
                                 for k in secret_keys(source_class(t).Settings)}
    assert keys <= set(table), keys - set(table)


@pytest.mark.parametrize("source", sorted(GUIDES))
def test_every_secret_in_a_source_guide_is_a_credential(source):
    """The Okta and Entra guides used to keep keys in a 0600 file under /etc/scim-agent,
    which the DynamicUser=yes service cannot read."""
    guide = GUIDES[source].read_text()
    keys = secret_keys(source_class(source).Settings)
    found = assignments(toml_blocks(guide), keys)
    assert {k for k, _ in found} == set(keys), found          # each one is shown
    names = set(credential_table().values())
    for key, value in found:
        match = re.fullmatch(r'\{ credential = "(\w+)" \}', value)
        assert match, f"{source}.md: {key} = {value}"
        assert match.group(1) in names, (key, value)
        assert f"LoadCredential={match.group(1)}:" in guide, (source, match.group(1))
    assert "chmod 600" not in guide and not re.search(r"/etc/scim-agent/\w+\.pem", guide)


def test_the_example_config_gives_every_source_secret_as_a_credential():
    text = ROOT.joinpath("config.example.toml").read_text()
    names = set(credential_table().values())
    keys = {k for t in SOURCES for k in secret_keys(source_class(t).Settings)}
    found = assignments("\n".join(line for line in text.splitlines() if line.startswith("#")),
                        keys)
    assert {k for k, _ in found} == keys
    for key, value in found:
        match = re.fullmatch(r'\{ credential = "(\w+)" \}', value)
        assert match and match.group(1) in names, (key, value)
    # the runnable example takes the token from the environment, and says what systemd uses
    assert 'under systemd: { credential = "scim_token" }' in text
    assert secret_keys(TargetConfig) == ["token"]


def test_the_file_source_guide_and_install_say_where_an_export_can_live():
    for doc in (ROOT / "docs" / "sources" / "file.md", INSTALL):
        text = " ".join(doc.read_text().split())
        for words in ("PrivateTmp=yes", "ProtectHome=yes", "/srv/scim-agent/", "/home"):
            assert words in text, (doc.name, words)


def test_the_five_minute_flow_plans_against_the_real_config_before_the_first_sync():
    readme = ROOT.joinpath("README.md").read_text()
    flow = readme.split("## Five minutes with it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in flow.splitlines() if line.strip()]
    real = [c for c in commands if "--config" in c]
    verbs = [c.split("--config", 1)[1].split()[1] for c in real]
    assert "plan" in verbs and "sync" in verbs
    assert verbs.index("plan") < verbs.index("sync"), verbs
    assert verbs.index("check") < verbs.index("sync"), verbs


def test_the_template_unit_is_documented_with_its_paths():
    text = INSTALL.read_text()
    for words in ("systemd/scim-agent@.service", "/etc/scim-agent/acme.toml",
                  "/etc/scim-agent/credentials/acme/", "/var/lib/scim-agent-acme/state.db",
                  "[metrics]", "scim-agent@acme.service.d", "systemctl enable --now scim-agent@acme"):
        assert words in text, words
    unit = (ROOT / "systemd" / "scim-agent@.service").read_text()
    for line in ("Environment=SCIM_AGENT_CONFIG=/etc/scim-agent/%i.toml",
                 "StateDirectory=scim-agent-%i",
                 "LoadCredential=scim_token:/etc/scim-agent/credentials/%i/scim_token"):
        assert line in unit.splitlines(), line
