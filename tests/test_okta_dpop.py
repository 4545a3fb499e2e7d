"""Okta DPoP (RFC 9449) against the fake Okta, which behaves as a real org does: proofs
required for service apps by default, the nonce round trip, DPoP-bound tokens, every proof
checked per request. Sources: okta/okta-developer-docs guides/dpop; okta-sdk-python
``okta/dpop.py``, ``okta/oauth.py`` and its issue #541; RFC 9449 §4.2, §7, §8, §9."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import Secret, SourceAuthError
from connectors.okta import OktaSource
from connectors.okta.dpop import ProofKey, htu_of
from tests.fakes.okta import FakeClock, FakeOkta
from tests.test_okta import pem_key

START = 1_700_000_000.0
CLIENT = "0oa-dpop-app"


@pytest.fixture
def okta():
    with FakeOkta(clock=FakeClock(START)) as fake:
        fake.add_user("ann@example.org", "Ann", "A")
        fake.add_user("ben@example.org", "Ben", "B")
        fake.add_group("Team", list(fake.users))
        yield fake


def source(okta: FakeOkta, app_dpop: bool = True, clock=None, **settings) -> OktaSource:
    private, public = pem_key()
    okta.add_app(CLIENT, public, dpop=app_dpop)
    return OktaSource(OktaSource.Settings(org_url=okta.url, client_id=CLIENT,
                                          private_key=Secret(private, "test"), **settings),
                      clock=clock or okta.clock.time, sleep=okta.clock.sleep)


def token_answers(okta) -> list[int]:
    return [r.status for r in okta.requests if r.path == "/oauth2/v1/token"]


def test_dpop_sign_in_takes_the_nonce_round_trip_then_binds_every_call(okta):
    src = source(okta)
    directory = src.read()
    assert len(directory.users) == 2 and len(directory.groups) == 1
    assert token_answers(okta) == [400, 200]            # use_dpop_nonce, then the token
    token_proofs = [p for p in okta.proofs if p["htu"].endswith("/oauth2/v1/token")]
    assert [("nonce" in p, "ath" in p) for p in token_proofs] == [(False, False), (True, False)]
    api = [p for p in okta.proofs if "/api/v1/" in p["htu"]]
    api_calls = [r for r in okta.requests if r.path.startswith("/api/v1/")]
    assert len(api) == len(api_calls) and all(r.status == 200 for r in api_calls)
    assert all("ath" in p and p["htm"] == "GET" and "?" not in p["htu"] for p in api)
    assert len({p["jti"] for p in okta.proofs}) == len(okta.proofs)     # fresh each time
    assert src.check()["auth"] == f"OAuth service app {CLIENT} (DPoP-bound token)"


def test_the_nonce_is_kept_for_later_tokens_and_a_new_one_is_taken_when_asked(okta):
    src = source(okta)
    src.read()
    okta.access_tokens.clear()              # the token is revoked: one new token request
    src.read()
    assert token_answers(okta) == [400, 200, 200]       # the stored nonce still works
    okta.expire_nonces()
    okta.access_tokens.clear()
    src.read()
    assert token_answers(okta) == [400, 200, 200, 400, 200]


def test_a_resource_server_asking_for_a_nonce_gets_it_on_the_same_call(okta):
    okta.resource_nonce = True
    src = source(okta)
    assert len(src.read().users) == 2
    refused = [r for r in okta.requests if r.path.startswith("/api/v1/") and r.status == 401]
    assert len(refused) == 1                 # asked once; every later proof carries it
    okta.rotate_nonce()
    okta.expire_nonces()                     # the old nonce is no longer accepted
    assert len(src.read().users) == 2
    refused = [r for r in okta.requests if r.path.startswith("/api/v1/") and r.status == 401]
    assert len(refused) == 2


def test_an_app_requiring_dpop_with_dpop_off_in_the_config_names_the_setting(okta):
    src = source(okta, dpop=False)
    with pytest.raises(SourceAuthError) as caught:
        src.read()
    message = str(caught.value)
    assert "requires DPoP" in message and "invalid_dpop_proof" in message
    assert "[source] dpop = false" in message and "set dpop = true" in message
    assert token_answers(okta) == [400]


@pytest.mark.parametrize("config_dpop", [True, False])
def test_an_app_without_dpop_gets_plain_bearer_calls(okta, config_dpop):
    src = source(okta, app_dpop=False, dpop=config_dpop)
    assert len(src.read().users) == 2
    assert token_answers(okta) == [200]
    assert not [p for p in okta.proofs if "/api/v1/" in p["htu"]]
    assert src.check()["auth"] == f"OAuth service app {CLIENT} (bearer token)"


def test_a_clock_minutes_off_is_a_refused_proof_that_says_check_the_clock(okta):
    src = source(okta, clock=lambda: okta.clock.time() + 120)   # two minutes fast
    with pytest.raises(SourceAuthError, match="'iat' claim.*check this machine's clock"):
        src.read()


def test_proofs_are_percent_decoded_and_carry_no_query():
    assert htu_of("https://acme.okta.com/api/v1/users/a%40b.c?limit=200#x") == \
        "https://acme.okta.com/api/v1/users/a@b.c"
    key = ProofKey()
    proof = key.proof("get", "https://acme.okta.com/api/v1/users?x=1", 1000, nonce="n",
                      access_token="tok")
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "RS256"
    assert set(header["jwk"]) == {"kty", "n", "e"}         # public only
    claims = jwt.decode(proof, jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(header["jwk"])),
                        algorithms=["RS256"])
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"tok").digest()).rstrip(b"=").decode()
    assert claims == {"jti": claims["jti"], "htm": "GET", "htu": "https://acme.okta.com/api/v1/users",
                      "iat": 1000, "nonce": "n", "ath": digest}


# ------------------------------------------------------------------ the fake is as strict as Okta

class Caller:
    """Signs in to the fake by hand, so each rule of the proof check can be broken alone."""

    def __init__(self, okta: FakeOkta):
        private, public = pem_key()
        okta.add_app("0oa-manual", public)
        self.okta, self.key = okta, ProofKey()
        self.http = httpx.Client(base_url=okta.url, trust_env=False, timeout=10)
        self._assertion_key = serialization.load_pem_private_key(private.encode(), None)
        self.token = self._token()

    def _assertion(self) -> str:
        now = int(self.okta.now())
        return jwt.encode({"iss": "0oa-manual", "sub": "0oa-manual", "aud":
                           f"{self.okta.url}/oauth2/v1/token", "iat": now, "exp": now + 300,
                           "jti": f"a{time.monotonic_ns()}"}, self._assertion_key,
                          algorithm="RS256")

    def _token(self) -> str:
        url = f"{self.okta.url}/oauth2/v1/token"
        form = {"grant_type": "client_credentials", "scope": "okta.users.read okta.groups.read",
                "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
        first = self.http.post("/oauth2/v1/token", data={**form, "client_assertion":
                                                         self._assertion()},
                               headers={"DPoP": self.key.proof("POST", url, self.okta.now())})
        assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce"
        nonce = first.headers["DPoP-Nonce"]
        second = self.http.post("/oauth2/v1/token", data={**form, "client_assertion":
                                                          self._assertion()},
                                headers={"DPoP": self.key.proof("POST", url, self.okta.now(),
                                                                nonce=nonce)})
        assert second.status_code == 200 and second.json()["token_type"] == "DPoP"
        return second.json()["access_token"]

    def get(self, path="/api/v1/users", *, scheme="DPoP", proof=None, **proof_args):
        url = self.okta.url + path
        args = {"access_token": self.token, **proof_args}
        headers = {"Authorization": f"{scheme} {self.token}"}
        if proof is None:
            proof = self.key.proof(args.pop("method", "GET"), args.pop("url", url),
                                   args.pop("now", self.okta.now()), **args)
        if proof:
            headers["DPoP"] = proof
        return self.http.get(path, headers=headers)


@pytest.fixture
def caller(okta):
    c = Caller(okta)
    yield c
    c.http.close()


def refusal(response) -> str:
    return response.headers.get("WWW-Authenticate", "")


def test_the_fake_accepts_a_correct_proof(caller):
    assert caller.get().status_code == 200


@pytest.mark.parametrize("broken, claim", [
    ({"method": "POST"}, "htm"),
    ({"url": "https://elsewhere.example/api/v1/users"}, "htu"),
    ({"now": START - 3600}, "iat"),
    ({"access_token": "another-token"}, "ath"),
])
def test_the_fake_checks_each_claim_of_a_resource_proof(caller, broken, claim):
    answer = caller.get(**broken)
    assert answer.status_code == 400
    assert 'error="invalid_dpop_proof"' in refusal(answer) and f"'{claim}'" in refusal(answer)


def test_the_fake_refuses_a_replayed_proof_a_foreign_key_and_a_missing_one(caller):
    proof = caller.key.proof("GET", caller.okta.url + "/api/v1/users", caller.okta.now(),
                             access_token=caller.token)
    assert caller.get(proof=proof).status_code == 200
    replay = caller.get(proof=proof)
    assert replay.status_code == 400 and "'jti'" in refusal(replay)
    other = ProofKey().proof("GET", caller.okta.url + "/api/v1/users", caller.okta.now(),
                             access_token=caller.token)
    foreign = caller.get(proof=other)
    assert foreign.status_code == 400 and "binding" in refusal(foreign)
    assert caller.get(proof="").status_code == 400        # no DPoP header at all


def test_the_fake_refuses_a_forged_signature(caller):
    proof = caller.key.proof("GET", caller.okta.url + "/api/v1/users", caller.okta.now(),
                             access_token=caller.token)
    head, body, _ = proof.split(".")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(json.loads(base64.urlsafe_b64decode(body + "==")), other,
                        algorithm="RS256", headers=jwt.get_unverified_header(proof))
    answer = caller.get(proof=forged)
    assert answer.status_code == 400 and "signature" in refusal(answer)


def test_a_dpop_bound_token_sent_as_bearer_is_refused(caller):
    answer = caller.get(scheme="Bearer", proof="")
    assert answer.status_code == 401
