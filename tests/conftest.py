"""Shared fixtures: real and fake SCIM targets on loopback, and config/directory writers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.fakes.split import FakeSplit
from tests.servers.scim2 import Scim2Server

TOKEN = "tok-3c0b6a5e-secret"


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory):
    """One Samba AD domain controller for the whole session (tests/servers/samba.py): a
    dozen seconds to provision, so every AD test shares it and works in its own OU."""
    from tests.servers.samba import session_dc
    yield from session_dc(tmp_path_factory.mktemp("samba"))


@pytest.fixture
def fake_split():
    with FakeSplit(token=TOKEN) as split:
        yield split


@pytest.fixture
def scim2():
    with Scim2Server(token=TOKEN) as server:
        yield server


class FakeTime:
    """A clock that sleeping advances, so waits are recorded instead of spent (the time seam
    that ``make_target(config, clock=..., sleep=...)`` takes)."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    @property
    def waits(self) -> list[float]:
        """Sleeps of a second or more: retry and rate-limit waits, not pacing's small gaps."""
        return [s for s in self.sleeps if s >= 1.0]


def user(uid: str, email: str, given: str = "Given", family: str = "Family", active: bool = True,
         **extra) -> dict:
    return {"id": uid, "userName": email, "email": email, "givenName": given,
            "familyName": family, "active": active, **extra}


def group(gid: str, name: str, members=()) -> dict:
    return {"id": gid, "displayName": name, "members": list(members)}


class Workspace:
    """A temporary folder with a directory file and a config pointing at a target."""

    def __init__(self, root: Path, url: str, token: str = TOKEN, dialect: str | None = None):
        self.root = root
        self.url = url
        self.token = token
        self.dialect = dialect        # None: the default ([target] dialect left out)
        self.source = root / "directory.json"
        self.config = root / "config.toml"
        self.state = root / "state" / "agent.db"
        self.write_directory([], [])
        self.write_config()

    def write_directory(self, users, groups) -> None:
        self.source.write_text(json.dumps({"users": users, "groups": groups}, ensure_ascii=False))

    def write_config(self, extra: str = "", target_extra: str = "") -> None:
        self.config.write_text(textwrap.dedent(f"""\
            [state]
            path = "state/agent.db"

            [source]
            type = "file"
            path = "directory.json"

            [target]
            url = "{self.url}"
            token = "{self.token}"
            rate_limit = 1000.0
            concurrency = 4
            timeout = 5
            max_attempts = 4
            """) + (f'dialect = "{self.dialect}"\n' if self.dialect else "")
            + textwrap.dedent(target_extra) + "\n" + textwrap.dedent(extra))

    def agent(self, **kwargs):
        from agent.app import build_agent
        from agent.config import load
        return build_agent(load(self.config), **kwargs)


@pytest.fixture
def split_ws(tmp_path, fake_split):
    return Workspace(tmp_path, fake_split.base_url)


@pytest.fixture
def scim2_ws(tmp_path, scim2):
    # scim2-server refuses Entra's group schema and value-list member removal (RFC 7644 read
    # literally), so the end-to-end runs there speak Okta's dialect
    return Workspace(tmp_path, scim2.base_url, dialect="okta")
