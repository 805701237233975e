"""Delegation traced to the human principal: human -> A -> B -> C over real HTTP.

A delegated token is RFC 8693's (section 4.1): ``sub`` is A, the subject the chain acts
for; ``act`` names the holder (the current actor), then the earlier actors; the human is
the ``principal`` claim. ``/v1/token/validate`` shows the holder as ``sub`` (AgentWrit)."""

from __future__ import annotations

import json

import pytest
from agents_support import CTX, Env

from tasklease.core.delegation import principal_ref, validate_principal
from tasklease.core.errors import InvalidRequest
from tasklease.core.tokens import act_actors, act_claim, claims_from_payload
from tasklease.rules import jws as _jws

ALICE = "user:alice@example.com"


def _delegate(env: Env, token: str, to: str, scope: list[str]) -> str:
    answer = env.http.post(
        "/v1/delegate",
        headers={"Authorization": f"Bearer {token}"},
        json={"delegate_to": to, "scope": scope},
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    # AgentWrit SDK shape is unchanged: records keep agent, scope, delegated_at.
    assert all({"agent", "scope", "delegated_at"} <= set(r) for r in data["delegation_chain"])
    return str(data["access_token"])


def test_three_hop_chain_names_every_actor_and_the_principal(env: Env) -> None:
    a = env.register("task-a", ["read:data:*"], principal=ALICE)
    b = env.register("task-b", ["read:data:*"])
    c = env.register("task-c", ["read:data:*"])
    a_claims = env.validate(a.token)
    assert a_claims is not None and a_claims["principal"] == ALICE
    assert "act" not in a_claims  # a root token: the principal claim says it all
    to_b = _delegate(env, a.token, b.agent_id, ["read:data:*"])
    to_c = _delegate(env, to_b, c.agent_id, ["read:data:x"])
    claims = env.validate(to_c)
    assert claims is not None
    assert claims["principal"] == ALICE
    assert claims["sub"] == c.agent_id  # AgentWrit's validation shape: the holder
    assert act_actors(claims["act"], 16) == [c.agent_id, b.agent_id]
    assert claims["act"] == {"sub": c.agent_id, "act": {"sub": b.agent_id}}
    _, signed = _jws.decode_unverified(to_c)
    assert signed["sub"] == a.agent_id and signed["act"] == claims["act"]
    # B's own token came from a registration without a principal: the admin's default.
    assert env.validate(b.token)["principal"] == "admin"  # type: ignore[index]


@pytest.mark.parametrize("hop", ["a", "b"])
def test_chain_fails_when_any_hop_is_revoked(env: Env, hop: str) -> None:
    a = env.register("task-a", ["read:data:*"], principal=ALICE)
    b = env.register("task-b", ["read:data:*"])
    c = env.register("task-c", ["read:data:*"])
    to_b = _delegate(env, a.token, b.agent_id, ["read:data:*"])
    to_c = _delegate(env, to_b, c.agent_id, ["read:data:*"])
    target = {"a": a, "b": b}[hop].agent_id
    answer = env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": target},
    )
    assert answer.status_code == 200, answer.text
    assert env.validate(to_c) is None


def test_chain_fails_when_the_last_hop_token_is_revoked(env: Env) -> None:
    a = env.register("task-a", ["read:data:*"], principal=ALICE)
    c = env.register("task-c", ["read:data:*"])
    to_c = _delegate(env, a.token, c.agent_id, ["read:data:*"])
    jti = env.validate(to_c)["jti"]  # type: ignore[index]
    env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "token", "target": jti},
    )
    assert env.validate(to_c) is None


def _forge(env: Env, token: str, change: dict[str, object]) -> str:
    """Re-sign a token's payload with the broker's key after a change (an insider's
    forgery: what validation must still refuse because claims disagree)."""
    _, payload = _jws.decode_unverified(token)
    payload.update(change)
    return env.broker.keyring.sign(json.dumps(payload).encode(), "at+jwt")


def test_validation_refuses_an_act_chain_that_disagrees(env: Env) -> None:
    a = env.register("task-a", ["read:data:*"], principal=ALICE)
    b = env.register("task-b", ["read:data:*"])
    to_b = _delegate(env, a.token, b.agent_id, ["read:data:*"])
    assert env.validate(to_b) is not None
    # An added hop, another subject, an act on a root token, an over-deep act.
    extra_hop = {"act": {"sub": b.agent_id, "act": {"sub": a.agent_id}}}
    assert env.validate(_forge(env, to_b, extra_hop)) is None
    assert env.validate(_forge(env, to_b, {"sub": b.agent_id})) is None
    assert env.validate(_forge(env, to_b, {"act": {"sub": a.agent_id}})) is None
    assert env.validate(_forge(env, a.token, {"act": {"sub": a.agent_id}})) is None
    deep: dict[str, object] = {"sub": ALICE}
    for i in range(40):
        deep = {"sub": f"spiffe://x/{i}", "act": deep}
    assert env.validate(_forge(env, to_b, {"act": deep})) is None
    # A delegated token without act.
    _, payload = _jws.decode_unverified(to_b)
    payload.pop("act")
    assert env.validate(env.broker.keyring.sign(json.dumps(payload).encode(), "at+jwt")) is None


def test_act_is_built_from_the_chain_not_from_request_input(env: Env) -> None:
    a = env.register("task-a", ["read:data:*"], principal=ALICE)
    b = env.register("task-b", ["read:data:*"])
    answer = env.http.post(
        "/v1/delegate",
        headers=a.auth(),
        json={
            "delegate_to": b.agent_id,
            "scope": ["read:data:*"],
            "act": {"sub": "user:mallory"},
            "principal": "user:mallory",
        },
    )
    claims = env.validate(answer.json()["access_token"])
    assert claims is not None and claims["principal"] == ALICE
    assert act_actors(claims["act"], 16) == [b.agent_id]
    _, signed = _jws.decode_unverified(answer.json()["access_token"])
    assert signed["sub"] == a.agent_id


def test_principal_is_audited_masked_with_a_pseudonym(env: Env) -> None:
    env.register("task-a", ["read:data:*"], principal=ALICE)
    issued = env.audit("launch_token_issued")[-1].detail
    registered = env.audit("agent_registered")[-1].detail
    ref = principal_ref(ALICE)
    for detail in (issued, registered):
        assert "a***@example.com" in detail and "alice@" not in detail
        assert f"principal_ref={ref}" in detail


def test_principal_grammar() -> None:
    assert validate_principal("user:alice@example.com") == "user:alice@example.com"
    assert validate_principal("svc:billing-7") == "svc:billing-7"
    for bad in ("alice", "User:x", "user:", "user:a b", "user:\n", "u:" + "x" * 260, 7):
        with pytest.raises(InvalidRequest):
            validate_principal(bad)


def test_launch_token_refuses_a_bad_principal(env: Env) -> None:
    with pytest.raises(InvalidRequest):
        env.broker.create_launch_token(
            env.admin_claims(),
            agent_name="x",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=CTX,
            principal="not a principal",
        )


def test_act_claim_known_answer() -> None:
    claims = claims_from_payload(
        "at+jwt",
        {
            "sub": "C",
            "aud": ["x"],
            "exp": 2,
            "nbf": 1,
            "iat": 1,
            "jti": "j",
            "scope": [],
            "client_id": "admin",
            "delegation_chain": [
                {"agent": "A", "scope": [], "delegated_at": "t", "signature": "00"},
                {"agent": "B", "scope": [], "delegated_at": "t", "signature": "00"},
            ],
        },
    )
    assert act_claim("C", claims.delegation_chain) == {"sub": "C", "act": {"sub": "B"}}
