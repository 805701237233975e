"""A caller without a credential learns nothing of what exists from how it is refused.

An anonymous caller, or one with a credential of narrow reach, must not tell an agent, an
operator or an app it may not see from one that does not exist: the status, the error
code, the detail and what the refusal spends are the same for both, and so is the work
the broker does for each (the same checks run, so the time taken says nothing either).
Against a real broker process on SQLite, over loopback HTTP, where the outward answers
are compared; at the core where the code path is.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, b64, dpop_proof

pytestmark = pytest.mark.slow


def _outward(answer: httpx.Response) -> tuple[int, str, str, bool]:
    """What a caller sees of a refusal, but for its ids."""
    body = answer.json()
    return (
        answer.status_code,
        body.get("error_code", ""),
        body.get("detail", ""),
        ("denial_id" in body),
    )


def _audited(broker: RunningBroker, answer: httpx.Response) -> str:
    denial = answer.json()["denial_id"]
    found = broker.get(
        "/v1/audit/events?outcome=denied&limit=1000", headers=broker.admin_headers()
    ).json()["events"]
    hits = [e["detail"] for e in found if e["detail"].endswith(f"denial={denial}")]
    assert len(hits) == 1, answer.text
    return str(hits[0])


def _unknown_like(agent_id: str) -> str:
    """An agent id of the same shape (trust domain, orch, task), with an instance no
    agent has."""
    head, _, _ = agent_id.rpartition("/")
    return f"{head}/{secrets.token_hex(8)}"


def test_a_resumption_does_not_tell_a_bound_agent_from_an_unknown_one(
    broker: RunningBroker,
) -> None:
    """A DPoP-bound agent's id, asked to resume by someone without its key, is answered
    as an id no agent has: a body without a nonce is 400 for both, and a signature by
    another key is the same 401 for both, with the nonce spent. (The binding used to be
    checked first, before the body was read: a bound agent answered 401 where an unknown
    one answered 400, and its nonce stayed unspent.)"""
    bound = broker.register(["read:data:*"], dpop=True)
    unknown = _unknown_like(bound.agent_id)

    def probe(agent_id: str, **body: Any) -> httpx.Response:
        return broker.post("/v1/resume", json={"agent_id": agent_id, **body})

    # No nonce, no signature.
    assert _outward(probe(bound.agent_id)) == _outward(probe(unknown))
    assert probe(unknown).status_code == 400

    # A fresh nonce signed by a key that is not the agent's: the same 401 for both, and
    # the nonce is spent (the agent's own signature over it no longer resumes it).
    url = f"{broker.url}/v1/resume"
    stranger = Ed25519PrivateKey.generate()
    answers = {}
    for agent_id in (bound.agent_id, unknown):
        nonce = broker.nonce()
        first = probe(agent_id, nonce=nonce, signature=b64(stranger.sign(bytes.fromhex(nonce))))
        assert first.status_code == 401, first.text
        answers[agent_id] = _outward(first)
        if agent_id == bound.agent_id:
            late = broker.post(
                "/v1/resume",
                json={
                    "agent_id": agent_id,
                    "nonce": nonce,
                    "signature": b64(bound.key.sign(bytes.fromhex(nonce))),
                },
                headers={"DPoP": dpop_proof(bound.key, "POST", url)},
            )
            assert late.status_code == 401, late.text
    assert answers[bound.agent_id] == answers[unknown]

    # The agent itself still resumes, with its key and a proof of its DPoP key; and a
    # holder of its key without that proof is refused.
    nonce = broker.nonce()
    own = {"nonce": nonce, "signature": b64(bound.key.sign(bytes.fromhex(nonce)))}
    refused = probe(bound.agent_id, **own)
    assert refused.status_code == 401, refused.text
    assert "DPoP" in _audited(broker, refused)
    nonce = broker.nonce()
    own = {"nonce": nonce, "signature": b64(bound.key.sign(bytes.fromhex(nonce)))}
    resumed = broker.post(
        "/v1/resume",
        json={"agent_id": bound.agent_id, **own},
        headers={"DPoP": dpop_proof(bound.key, "POST", url)},
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["token_type"] == "DPoP"
