"""Revoking a level of an offline chain on the broker ends it and what was derived from it
at every verifier that follows the revocation feed, and the broker and the verifier agree
on every level, before and after (a real broker process, real HTTP)."""

from __future__ import annotations

import json
import time
from typing import Any

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from e2e_support import Agent, RunningBroker
from verify_support import app_credentials, dpop_proof, poll

from tasklease.rules import jws
from tasklease.rules.chainverify import derive
from tasklease.verify import InvalidToken, Verifier

URL = "https://svc-a.example/data"


def _nacl(agent: Agent) -> nacl.signing.SigningKey:
    seed = agent.key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return nacl.signing.SigningKey(seed)


def _levels(agent: Agent, count: int) -> tuple[list[str], list[nacl.signing.SigningKey]]:
    levels: list[str] = []
    keys: list[nacl.signing.SigningKey] = []
    parent, signer, name = agent.access_token, _nacl(agent), agent.agent_id
    for i in range(count):
        key = nacl.signing.SigningKey.generate()
        name = f"{name}/l{i}"  # each named under its delegator
        parent = derive(
            parent,
            signer,
            delegate=name,
            delegate_key=bytes(key.verify_key),
            now=int(time.time()),
            ttl=300 - 30 * i,
        )
        levels.append(parent)
        keys.append(key)
        signer = key
    return levels, keys


def _jti(chain: str) -> str:
    payload = jws.b64url_decode(chain.rsplit("~", 1)[1].split(".", maxsplit=1)[0])
    return str(json.loads(payload)["jti"])


def _accepts(verifier: Verifier, chain: str, key: nacl.signing.SigningKey) -> bool:
    proof = dpop_proof(key, htm="GET", htu=URL, token=chain)
    try:
        verifier.verify(chain, scheme="DPoP", dpop_proof=proof, htm="GET", htu=URL)
    except InvalidToken:
        return False
    return True


def _broker_accepts(broker: RunningBroker, chain: str, key: nacl.signing.SigningKey) -> bool:
    body: dict[str, Any] = {
        "token": chain,
        "dpop": dpop_proof(key, htm="GET", htu=URL, token=chain),
        "htm": "GET",
        "htu": URL,
        "audience": "svc-a",
    }
    answer = broker.post("/v1/token/validate", json=body)
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["valid"])


@pytest.mark.parametrize("level", ["token", "chain"])
def test_revoking_level_two_on_the_broker_ends_levels_two_and_three_at_the_verifier(
    broker: RunningBroker, level: str
) -> None:
    agent = broker.register(["read:data:*"], dpop=True)
    levels, keys = _levels(agent, 3)
    with Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)) as verifier:
        assert all(_accepts(verifier, c, k) for c, k in zip(levels, keys, strict=True))
        assert all(_broker_accepts(broker, c, k) for c, k in zip(levels, keys, strict=True))
        # Level 2's block was never reported to the broker: revocation is by value.
        answer = broker.post(
            "/v1/revoke",
            json={"level": level, "target": _jti(levels[1])},
            headers=broker.admin_headers(),
        )
        assert answer.status_code == 200, answer.text
        poll(lambda: not _accepts(verifier, levels[2], keys[2]), timeout=5)
        assert _accepts(verifier, levels[0], keys[0])
        assert not _broker_accepts(broker, levels[2], keys[2])
        assert _broker_accepts(broker, levels[0], keys[0])
        # "token" ends the block and its descendants; "chain" its descendants only.
        assert _accepts(verifier, levels[1], keys[1]) is (level == "chain")
        assert _broker_accepts(broker, levels[1], keys[1]) is (level == "chain")


def test_revoking_the_root_agent_ends_every_offline_level_at_the_verifier(
    broker: RunningBroker,
) -> None:
    agent = broker.register(["read:data:*"], dpop=True)
    levels, keys = _levels(agent, 3)
    with Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)) as verifier:
        assert _accepts(verifier, levels[2], keys[2])
        answer = broker.post(
            "/v1/revoke",
            json={"level": "agent", "target": agent.agent_id},
            headers=broker.admin_headers(),
        )
        assert answer.status_code == 200, answer.text
        poll(
            lambda: not any(_accepts(verifier, c, k) for c, k in zip(levels, keys, strict=True)), 5
        )
        assert not any(_broker_accepts(broker, c, k) for c, k in zip(levels, keys, strict=True))


def test_revoking_a_task_ends_what_its_agents_were_handed_at_the_verifier(
    broker: RunningBroker,
) -> None:
    """A token delegated by the broker to an agent of the task, and an offline block that
    agent hands on from it (named under it), carry another task's ``task_id``: the task
    revocation ends them all the same, at the broker and at a verifier following the
    feed."""
    a = broker.register(["read:data:*"], task_id="hand-a", dpop=True)
    b = broker.register(["read:data:*"], task_id="hand-b", dpop=True)
    answer = broker.post(
        "/v1/delegate",
        json={"delegate_to": b.agent_id, "scope": ["read:data:*"]},
        headers=a.auth("POST", broker.url + "/v1/delegate"),
    )
    assert answer.status_code == 200, answer.text
    to_b = str(answer.json()["access_token"])  # bound to b's key, as b's own tokens
    key = nacl.signing.SigningKey.generate()
    block = derive(
        to_b,
        _nacl(b),
        delegate=f"{b.agent_id}/offline0",
        delegate_key=bytes(key.verify_key),
        now=int(time.time()),
        ttl=120,
    )
    with Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)) as verifier:
        assert _accepts(verifier, to_b, _nacl(b)) and _accepts(verifier, block, key)
        assert _broker_accepts(broker, to_b, _nacl(b)) and _broker_accepts(broker, block, key)
        answer = broker.revoke("task", "hand-b")
        assert answer.status_code == 200, answer.text
        poll(
            lambda: not _accepts(verifier, to_b, _nacl(b)) and not _accepts(verifier, block, key), 5
        )
        assert not _broker_accepts(broker, to_b, _nacl(b))
        assert not _broker_accepts(broker, b.access_token, _nacl(b))
        assert not _broker_accepts(broker, block, key)
        assert _accepts(verifier, a.access_token, _nacl(a))
        assert _broker_accepts(broker, a.access_token, _nacl(a))
