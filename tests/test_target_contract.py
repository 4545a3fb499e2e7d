"""The target contract (tests/target_contract.py) against every SCIM server the suite runs, in
every request dialect the server accepts: the project's fake Split in each of its answer
styles (Split accepts Entra and Okta as clients, so every dialect), the independent
scim2-server (strict RFC 7644: Entra's group schema and its value-list member removal are
refused there, so it runs the okta and rfc dialects) and django-scim2 (see
tests/test_django_scim2.py)."""

from __future__ import annotations

import pytest

from tests.conftest import TOKEN
from tests.fakes.split import FakeSplit
from tests.servers.scim2 import Scim2Server
from tests.target_contract import TargetContract


class FakeSplitServer:
    @pytest.fixture
    def server(self):
        with FakeSplit(token=TOKEN) as split:
            yield split


class TestFakeSplitEntra(FakeSplitServer, TargetContract):
    """Split's profile: PATCH answered 204, error ``status`` a string; the default dialect."""

    dialect = "entra"


class TestFakeSplitOkta(FakeSplitServer, TargetContract):
    dialect = "okta"


class TestFakeSplitRfc(FakeSplitServer, TargetContract):
    dialect = "rfc"


class TestFakeSplitWithBodies(TargetContract):
    """The other answer styles servers use: PATCH 200 with the resource, ``status`` a number."""

    @pytest.fixture
    def server(self):
        with FakeSplit(token=TOKEN, patch_returns_body=True, status_as_int=True) as split:
            yield split


class Scim2(TargetContract):
    @pytest.fixture
    def server(self):
        with Scim2Server(token=TOKEN) as server:
            yield server


class TestScim2ServerOkta(Scim2):
    """scim2-server (python-scim), an independent RFC 7644 implementation, strict on paths."""

    dialect = "okta"


class TestScim2ServerRfc(Scim2):
    dialect = "rfc"
