"""The initiator signs only an answer to its own offer: the same handshake, the same two
agents and its own nonce. An answer naming anything else (a handshake a peer opened in
this agent's name with a third agent) is refused before anything is signed or sent."""

from __future__ import annotations

import json

import httpx
import nacl.signing
import pytest

from tasklease.client import Unauthorized, _trust
from tasklease.rules import jws

NONCE = "1" * 32
OFFER = {"hid": "hs-1", "ini": "spiffe://a/agent/1", "rsp": "spiffe://a/agent/2", "na": NONCE}


def _ticket(claims: dict[str, str]) -> str:
    key = nacl.signing.SigningKey.generate()
    return jws.encode(json.dumps(claims).encode(), typ="JWT", kid="broker", key=key)


def _complete(answer: dict[str, str]) -> httpx.Request:
    flow = _trust.complete_flow(
        "https://broker.example",
        "a.b.c",
        nacl.signing.SigningKey.generate(),
        _ticket(answer),
        offer=_ticket(OFFER),
        initiator_nonce=NONCE,
    )
    return next(flow)  # the request it would send


def test_an_answer_to_the_offer_is_signed_and_sent() -> None:
    request = _complete({**OFFER, "nb": "2" * 32})
    assert request.url.path == "/v1/mutual/complete"


@pytest.mark.parametrize("name", ["hid", "ini", "rsp", "na"])
def test_an_answer_naming_another_handshake_or_party_is_refused(name: str) -> None:
    with pytest.raises(Unauthorized):
        _complete({**OFFER, name: "other", "nb": "2" * 32})
