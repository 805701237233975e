"""The handshake vouches for a party's scope only while the token that carried it stands.

The offer names the initiator's scope as its token held it, and the answer the
responder's: a token released, revoked (itself or through its delegator) or expired
before a later step must stop the handshake there, or the broker would sign a receipt
for authority no live token carries any more.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from agents_support import AgentHandle, Env
from test_mutual import NA, NB, _claims, _complete, _failures, _initiate, _respond, _sign


def _delegated(env: Env, scope: list[str]) -> tuple[AgentHandle, AgentHandle, str]:
    """``(delegator, holder, token)``: a token the holder holds with ``scope``, wider
    than the holder's own registration, delegated to it by the delegator."""
    delegator = env.register("task-delegator", ["read:data:*", *scope])
    holder = env.register("task-holder", ["read:data:*"])
    answer = env.http.post(
        "/v1/delegate",
        headers=delegator.auth(),
        json={"delegate_to": holder.agent_id, "scope": scope, "ttl": 120},
    )
    assert answer.status_code == 200, answer.text
    return delegator, holder, str(answer.json()["access_token"])


def _initiate_with(env: Env, a: AgentHandle, token: str, b: AgentHandle) -> str:
    answer = env.http.post(
        "/v1/mutual/initiate",
        headers=a.auth(token),
        json={"responder_id": b.agent_id, "initiator_nonce": NA},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["offer"])


def _release(env: Env, token: str) -> None:
    released = env.http.post("/v1/token/release", headers={"Authorization": f"Bearer {token}"})
    assert released.status_code == 204, released.text
    assert env.validate(token) is None


def _respond_with(env: Env, b: AgentHandle, token: str, offer: str) -> httpx.Response:
    return _respond(env, AgentHandle(b.agent_id, token, b.key), offer)


def _receipt_scope(answer: httpx.Response) -> Any:
    return _claims(answer.json()["receipt"]).get("ini_scope")


def test_an_initiators_token_released_before_the_answer_stops_the_handshake(env: Env) -> None:
    _, a, wide = _delegated(env, ["write:payments:*"])
    b = env.register("task-b")
    offer = _initiate_with(env, a, wide, b)
    _release(env, wide)
    answered = _respond(env, b, offer)
    assert answered.status_code == 401, answered.text
    assert "denial_id" in answered.json()
    assert any("initiator's token" in d for d in _failures(env))


def test_an_initiators_token_released_before_completing_gets_no_receipt(env: Env) -> None:
    # A completes with its own token, narrower than the one it initiated with.
    _, a, wide = _delegated(env, ["write:payments:*"])
    b = env.register("task-b")
    offer = _initiate_with(env, a, wide, b)
    answered = _respond(env, b, offer)
    assert answered.status_code == 200, answered.text
    _release(env, wide)
    completed = _complete(env, a, answered.json()["answer"])
    assert completed.status_code == 401, (completed.text, _receipt_scope(completed))
    assert "denial_id" in completed.json()
    assert any("initiator's token" in d for d in _failures(env))


def test_a_delegator_revoked_mid_handshake_ends_what_it_handed_on(env: Env) -> None:
    delegator, a, wide = _delegated(env, ["write:payments:*"])
    b = env.register("task-b")
    offer = _initiate_with(env, a, wide, b)
    answered = _respond(env, b, offer)
    assert answered.status_code == 200, answered.text
    revoked = env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": delegator.agent_id},
    )
    assert revoked.status_code == 200, revoked.text
    assert env.validate(wide) is None
    completed = _complete(env, a, answered.json()["answer"])
    assert completed.status_code == 401, (completed.text, _receipt_scope(completed))


def test_a_responders_token_released_after_answering_is_not_vouched_for(env: Env) -> None:
    a = env.register("task-a")
    _, b, wide = _delegated(env, ["write:payments:*"])
    offer = _initiate(env, a, b).json()["offer"]
    answered = _respond_with(env, b, wide, offer)
    assert answered.status_code == 200, answered.text
    _release(env, wide)
    completed = _complete(env, a, answered.json()["answer"])
    assert completed.status_code == 401, completed.text
    assert any("responder's token" in d for d in _failures(env))


def test_a_responders_token_expired_before_completing_is_not_vouched_for(env: Env) -> None:
    a = env.register("task-a")
    delegator = env.register("task-delegator", ["read:data:*", "write:payments:*"])
    b = env.register("task-b")
    short = env.http.post(
        "/v1/delegate",
        headers=delegator.auth(),
        json={"delegate_to": b.agent_id, "scope": ["write:payments:*"], "ttl": 10},
    )
    assert short.status_code == 200, short.text
    token = str(short.json()["access_token"])
    offer = _initiate(env, a, b).json()["offer"]
    answered = _respond_with(env, b, token, offer)
    assert answered.status_code == 200, answered.text
    # Dead from the instant of its exp (no leeway), while the handshake still lives.
    env.clock.set(float(_claims(token)["exp"]))
    assert env.validate(token) is None
    completed = _complete(env, a, answered.json()["answer"])
    assert completed.status_code == 401, completed.text
    assert any("responder's token" in d for d in _failures(env))


def test_a_handshake_whose_tokens_stand_completes(env: Env) -> None:
    _, a, wide = _delegated(env, ["write:payments:*"])
    b = env.register("task-b")
    offer = _initiate_with(env, a, wide, b)
    answered = _respond(env, b, offer)
    assert answered.status_code == 200, answered.text
    completed = env.http.post(
        "/v1/mutual/complete",
        headers=a.auth(wide),
        json={
            "answer": answered.json()["answer"],
            "signature": _sign(a, "initiator", _claims(answered.json()["answer"]), NB),
        },
    )
    assert completed.status_code == 200, completed.text
    assert _receipt_scope(completed) == ["write:payments:*"]


def test_the_tickets_show_the_peer_nothing_of_a_token_it_never_saw(env: Env) -> None:
    """The offer goes to the responder through the initiator, the answer back: what they
    carry of each party's token (to check it still stands) is sealed under the broker's
    key, so neither peer reads the other's token id, task, lineage or delegators."""
    delegator, a, wide = _delegated(env, ["write:payments:*"])
    b = env.register("task-b")
    offer = _initiate_with(env, a, wide, b)
    answer = _respond_with(env, b, b.token, offer)
    assert answer.status_code == 200, answer.text
    seen = {
        "offer": _claims(offer),
        "answer": _claims(answer.json()["answer"]),
    }
    held = {
        "offer": env.validate(wide),
        "answer": env.validate(b.token),
    }
    for ticket, claims in seen.items():
        text = json.dumps(claims)
        token = held[ticket]
        assert token is not None
        assert token["jti"] not in text, ticket
        assert "task-delegator" not in text and delegator.agent_id not in text, ticket
        assert all(type(claims[k]) is str for k in ("ini_held", "rsp_held") if k in claims)


def test_a_receipt_lives_no_longer_than_the_tokens_it_vouches_for(env: Env) -> None:
    # A's delegated token dies in 10 s (it can not be renewed past its delegator's grant):
    # a receipt signed now + 30 s would tell B for 20 s more that A holds its scope.
    delegator = env.register("task-delegator", ["read:data:*", "write:payments:*"])
    a, b = env.register("task-a"), env.register("task-b")
    short = env.http.post(
        "/v1/delegate",
        headers=delegator.auth(),
        json={"delegate_to": a.agent_id, "scope": ["write:payments:*"], "ttl": 10},
    )
    assert short.status_code == 200, short.text
    token = str(short.json()["access_token"])
    offer = _initiate_with(env, a, token, b)
    answered = _respond(env, b, offer)
    assert answered.status_code == 200, answered.text
    completed = env.http.post(
        "/v1/mutual/complete",
        headers=a.auth(token),
        json={
            "answer": answered.json()["answer"],
            "signature": _sign(a, "initiator", _claims(answered.json()["answer"]), NB),
        },
    )
    assert completed.status_code == 200, completed.text
    receipt = _claims(completed.json()["receipt"])
    assert receipt["ini_scope"] == ["write:payments:*"]
    assert receipt["exp"] <= _claims(token)["exp"], (receipt["exp"], _claims(token)["exp"])
    assert receipt["exp"] <= _claims(b.token)["exp"]
