"""The broker and the offline verifier judge a signed token alike.

A corpus of payloads signed with the broker's own key, each judged by the broker's
validation (``Broker.validate``, what ``POST /v1/token/validate`` answers) and by a
:class:`Verifier` for the same audience and clock (what the ASGI middleware and the MCP
verifier call): a token one of them accepts and the other refuses is a hole in one.
In process: the verifier reads the broker's key set through a mock transport.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.validation import TokenRejected
from tasklease.storage import open_store
from tasklease.verify import InvalidToken, Verifier

START = 1_800_000_000
AUDIENCE = "svc-a"


class Judges:
    def __init__(self, *, exp_leeway: float = 0) -> None:
        self.clock = ManualClock(float(START))
        self.keyring = KeyRing.generate()
        self.config = Config(admin_secret_hash=hash_secret("s" * 40), audience=(AUDIENCE,))
        self.broker = Broker(
            self.config,
            open_store("memory://"),
            self.keyring,
            clock=self.clock,
            nonce_secret=b"n" * 32,
        )
        jwks = self.keyring.jwks()

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/.well-known/jwks.json":
                return httpx.Response(200, json=jwks)
            return httpx.Response(404)

        self.verifier = Verifier(
            "http://127.0.0.1:9",
            audience=AUDIENCE,
            issuer=self.config.issuer,
            feed=False,
            transport=httpx.MockTransport(answer),
            clock=self.clock,
            clock_skew=self.config.clock_skew,
            max_token_lifetime=self.config.max_ttl,
            max_delegation_depth=self.config.max_delegation_depth,
            exp_leeway=exp_leeway,
        )

    def sign(self, payload: dict[str, Any]) -> str:
        return self.keyring.sign(json.dumps(payload).encode(), "at+jwt")

    def broker_accepts(self, token: str) -> bool:
        try:
            self.broker.validate(token, audience=AUDIENCE)
        except TokenRejected:
            return False
        return True

    def verifier_accepts(self, token: str) -> bool:
        try:
            self.verifier.verify(token)
        except InvalidToken:
            return False
        return True


@pytest.fixture
def judges() -> Iterator[Judges]:
    made = Judges()
    yield made
    made.verifier.close()


def payload(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "tasklease",
        "sub": "spiffe://tasklease.local/agent/o1/t1/i1",
        "aud": [AUDIENCE],
        "exp": START + 300,
        "nbf": START,
        "iat": START,
        "jti": "j" * 32,
        "scope": "read:data:1",
        "task_id": "t1",
        "orch_id": "o1",
        "client_id": "c1",
        "oiat": START,
        "rnc": 0,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def test_both_accept_a_well_formed_token(judges: Judges) -> None:
    token = judges.sign(payload())
    assert judges.broker_accepts(token)
    assert judges.verifier_accepts(token)


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": AUDIENCE},  # a string, not the list the broker reads
        {"oiat": "1800000000"},
        {"oiat": 1.5},
        {"rnc": "0"},
        {"grant": 5},
        {"max_exp": "soon"},
        {"authorization_details": "all"},
        {"authorization_details": [{"actions": ["pay"]}]},
        {"exp": START},  # dead at its exp
        {"nbf": START + 31},
        {"aud": ["svc-b"]},
        {"aud": None},
        {"exp": float(START + 300)},
        {"cnf": {"jkt": "a" * 43}},  # bound, presented without its proof
        {"cnf": {"x5t#S256": "a" * 43}},
    ],
    ids=repr,
)
def test_a_token_the_broker_refuses_is_refused_by_the_verifier(
    judges: Judges, changes: dict[str, Any]
) -> None:
    token = judges.sign(payload(**changes))
    assert not judges.broker_accepts(token)
    assert not judges.verifier_accepts(token)


@pytest.mark.parametrize("exp", [10**400, -(10**400)], ids=["huge", "huge_negative"])
def test_a_verifier_with_exp_leeway_refuses_an_exp_past_every_float(exp: int) -> None:
    """JSON integers are read exactly; the broker refuses such a token, and so does a
    verifier allowed some leeway on ``exp`` (it must not fail with OverflowError)."""
    judges = Judges(exp_leeway=0.5)
    try:
        token = judges.sign(payload(exp=exp))
        assert not judges.broker_accepts(token)
        assert not judges.verifier_accepts(token)
    finally:
        judges.verifier.close()
