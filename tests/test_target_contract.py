"""The target contract (tests/target_contract.py) against every SCIM server the suite runs:
the project's fake Split in each of its answer styles, and the independent scim2-server."""

from __future__ import annotations

import pytest

from tests.conftest import TOKEN
from tests.fakes.split import FakeSplit
from tests.servers.scim2 import Scim2Server
from tests.target_contract import TargetContract


class TestFakeSplit(TargetContract):
    """Split's profile: PATCH answered 204, error ``status`` a string."""

    @pytest.fixture
    def server(self):
        with FakeSplit(token=TOKEN) as split:
            yield split


class TestFakeSplitWithBodies(TargetContract):
    """The other answer styles servers use: PATCH 200 with the resource, ``status`` a number."""

    @pytest.fixture
    def server(self):
        with FakeSplit(token=TOKEN, patch_returns_body=True, status_as_int=True) as split:
            yield split


class TestScim2Server(TargetContract):
    """scim2-server (python-scim), an independent RFC 7644 implementation, strict on paths."""

    @pytest.fixture
    def server(self):
        with Scim2Server(token=TOKEN) as server:
            yield server
