"""examples/onboarding/: the worked example of the docs plans, explains and syncs as shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.app import build_agent
from agent.cli.main import main
from agent.config import load
from agent.core.outcome import Outcome
from tests.conftest import TOKEN

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onboarding"
EMPLOYEES = {"ann.lee@acme.example", "ben.ode@acme.example", "cara.diaz@acme.example"}
GROUPS = {"Engineering": {"ann.lee@acme.example", "ben.ode@acme.example"},
          "Research and Development": {"ann.lee@acme.example", "ben.ode@acme.example"},
          "Customer Success Manager": {"cara.diaz@acme.example"},
          "Finance": {"cara.diaz@acme.example"},
          "Split_Administrators": {"ann.lee@acme.example"}}


def test_the_onboarding_example_plans_employees_only(capsys, monkeypatch):
    monkeypatch.delenv("SCIM_TOKEN", raising=False)
    assert main(["--config", str(EXAMPLE / "config.toml"), "plan", "--output", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {c["key"] for c in plan["changes"] if c["op"] == "create_user"} == EMPLOYEES
    assert {c["key"] for c in plan["changes"] if c["op"] == "create_group"} == set(GROUPS)
    assert not any(c.get("refused") for c in plan["changes"])
    assert "problems" not in plan
    assert not (EXAMPLE / "state").exists()

    assert main(["--config", str(EXAMPLE / "config.toml"), "plan", "--explain",
                 "gus@partner.example"]) == 0
    assert ('verdict: excluded by scope rule 1 (exclude users where userType equals "Guest")'
            in capsys.readouterr().out)


def test_the_onboarding_example_syncs_to_split(tmp_path, fake_split):
    shutil.copy(EXAMPLE / "directory.json", tmp_path)
    text = (EXAMPLE / "config.toml").read_text()
    text = text.replace("https://split.example.invalid/scim/v2", fake_split.base_url)
    text = text.replace('token = { env = "SCIM_TOKEN" }', f'token = "{TOKEN}"')
    (tmp_path / "config.toml").write_text(text)
    result = build_agent(load(tmp_path / "config.toml")).sync()
    assert result.outcome is Outcome.OK, result.message
    names = {sid: u["userName"] for sid, u in fake_split.users.items()}
    assert set(names.values()) == EMPLOYEES
    assert {g["displayName"]: {names[m["value"]] for m in g.get("members", [])}
            for g in fake_split.groups.values()} == GROUPS
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    managers = {u["userName"]: names.get((u.get(enterprise) or {}).get("manager", {}).get("value"))
                for u in fake_split.users.values()}
    assert managers == {"ann.lee@acme.example": None, "ben.ode@acme.example": "ann.lee@acme.example",
                        "cara.diaz@acme.example": "ann.lee@acme.example"}
