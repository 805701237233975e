"""Heartbeats that revoke silent agents, crash resumption, and signed discovery bindings."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from agents_support import AgentHandle, Env, b64, make_env
from nacl.signing import SigningKey

from tasklease.core.discovery import statement, verify_binding
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.validation import TokenRejected
from tasklease.rules import jws as _jws
from tasklease.storage import MemoryStore


def _beat(env: Env, agent: AgentHandle, *, done: bool = False, key: SigningKey | None = None,
          jti: str | None = None, ts: int | None = None) -> Any:  # fmt: skip
    claims = _jws.decode_unverified(agent.token)[1]
    ts = int(env.clock.now()) if ts is None else ts
    jti = jti or secrets.token_urlsafe(16)
    message = heartbeat_signing_input(agent.agent_id, claims["jti"], ts, jti, done)
    signature = b64((key or agent.key).sign(message).signature)
    return env.http.post(
        "/v1/heartbeat",
        headers=agent.auth(),
        json={"timestamp": ts, "jti": jti, "signature": signature, "done": done},
    )


def _delegate(env: Env, src: AgentHandle, dst: AgentHandle) -> str:
    answer = env.http.post(
        "/v1/delegate",
        headers=src.auth(),
        json={"delegate_to": dst.agent_id, "scope": ["read:data:*"], "ttl": 300},
    )
    return str(answer.json()["access_token"])


def test_heartbeat_signing_input_known_answer() -> None:
    assert heartbeat_signing_input("spiffe://td/a", "j1", 1800000000, "p" * 16, False) == (
        b'tasklease-heartbeat-v1\n["spiffe://td/a","j1",1800000000,"pppppppppppppppp",false]'
    )


def test_silent_agent_loses_its_tokens_and_its_delegates_tokens(env: Env) -> None:
    silent = env.register("task-silent")
    alive = env.register("task-alive")
    helper = env.register("task-helper")
    assert _beat(env, silent).status_code == 200  # opts in
    assert _beat(env, alive).status_code == 200
    delegated = _delegate(env, silent, helper)
    alive_delegated = _delegate(env, alive, helper)
    for _ in range(4):  # 4 x 25 s: alive keeps beating, silent says nothing
        env.clock.advance(25)
        assert _beat(env, alive).status_code == 200
        env.broker.sweep_silent_agents()
    assert env.validate(silent.token) is None
    assert env.validate(delegated) is None
    assert env.validate(alive.token) is not None
    assert env.validate(alive_delegated) is not None
    assert env.validate(helper.token) is not None  # the delegate's own identity lives on
    events = env.audit("agent_silent_revoked")
    assert [e.agent_id for e in events] == [silent.agent_id]
    assert "no heartbeat since" in events[0].detail and "3 misses x 30s" in events[0].detail
    swept = env.broker.store.get_agent(silent.agent_id)
    assert swept is not None and swept.status == "revoked"  # as operators see it
    # A swept agent cannot heartbeat its way back, and is swept only once.
    assert _beat(env, silent).status_code in (401, 403)
    assert env.broker.sweep_silent_agents() == []
    assert len(env.audit("agent_silent_revoked")) == 1


def test_a_token_renewed_while_the_sweep_runs_is_ended_with_the_agent(env: Env) -> None:
    """The sweep reads the clock, then revokes agent by agent. A bearer of a silent
    agent's token that renews (and delegates) in between gets tokens issued after the
    sweep began: the revocation, dated when it is written, ends them too."""
    silent = env.register("task-silent")
    helper = env.register("task-helper")
    assert _beat(env, silent).status_code == 200  # opts in
    env.clock.advance(91.2)  # silent past 3 x 30 s
    liveness = env.broker._liveness
    sweep_one = liveness._sweep_one
    issued: list[str] = []

    def renewing_first(agent_id: str, now: float, bound: float) -> bool:
        env.clock.advance(1.0)
        renewed = env.http.post("/v1/token/renew", headers=silent.auth())
        assert renewed.status_code == 200, renewed.text
        issued.append(renewed.json()["access_token"])
        delegated = env.http.post(
            "/v1/delegate",
            headers={"Authorization": f"Bearer {issued[0]}"},
            json={"delegate_to": helper.agent_id, "scope": ["read:data:*"], "ttl": 300},
        )
        assert delegated.status_code == 200, delegated.text
        issued.append(delegated.json()["access_token"])
        return sweep_one(agent_id, now, bound)

    liveness._sweep_one = renewing_first  # type: ignore[method-assign]
    assert env.broker.sweep_silent_agents() == [silent.agent_id]
    assert len(issued) == 2
    for token in issued:
        assert env.validate(token) is None
    assert env.validate(helper.token) is not None


def test_not_swept_before_the_configured_misses(env: Env) -> None:
    agent = env.register("task-a")
    _beat(env, agent)
    env.clock.advance(89)
    assert env.broker.sweep_silent_agents() == []
    env.clock.advance(2)
    assert env.broker.sweep_silent_agents() == [agent.agent_id]


def test_never_heartbeating_agents_are_not_swept_unless_required() -> None:
    running, served = make_env(heartbeat_required=True)
    try:
        optional_env, optional_served = make_env()
        try:
            quiet = optional_env.register("task-q")
            optional_env.clock.advance(1000)
            assert optional_env.broker.sweep_silent_agents() == []
            assert optional_env.validate(quiet.token) is None  # expired, but not revoked
            assert optional_env.audit("agent_silent_revoked") == []
        finally:
            optional_env.http.close()
            optional_served.stop()
        required = running.register("task-r")
        running.clock.advance(91)
        assert running.broker.sweep_silent_agents() == [required.agent_id]
    finally:
        running.http.close()
        served.stop()


def test_heartbeat_needs_the_registered_key_and_is_single_use(env: Env) -> None:
    agent = env.register("task-a")
    assert _beat(env, agent, key=SigningKey.generate()).status_code == 401
    assert _beat(env, agent, jti="x" * 16).status_code == 200
    assert _beat(env, agent, jti="x" * 16).status_code == 401  # replay
    assert _beat(env, agent, ts=int(env.clock.now()) - 120).status_code == 401  # stale
    details = [e.detail for e in env.audit("heartbeat_denied", "denied")]
    assert any("registered key" in d for d in details)
    assert any("replayed" in d for d in details)
    assert any("clock skew" in d for d in details)


def test_done_releases_instead_of_being_swept(env: Env) -> None:
    agent = env.register("task-a")
    helper = env.register("task-a")
    delegated = _delegate(env, agent, helper)
    _beat(env, agent)
    answer = _beat(env, agent, done=True)
    assert answer.status_code == 200 and answer.json()["status"] == "released"
    assert env.validate(agent.token) is None  # the presented token was given up
    assert env.validate(delegated) is None  # with what was delegated from it
    assert env.validate(helper.token) is not None  # the delegate's own identity lives on
    env.clock.advance(1000)
    assert env.broker.sweep_silent_agents() == []
    assert env.audit("agent_released")


def test_one_sweeper_at_a_time_across_replicas() -> None:
    from tasklease.core.broker import Broker
    from tasklease.core.clock import ManualClock
    from tasklease.core.config import Config
    from tasklease.core.keys import KeyRing
    from tasklease.core.store import AgentSession

    store = MemoryStore()
    clock = ManualClock(1_800_000_000.0)
    ring = KeyRing.generate()
    one, two = (Broker(Config(), store, ring, clock=clock) for _ in range(2))
    with store.write() as tx:
        tx.put_agent_session(
            AgentSession(
                "spiffe://tasklease.local/agent/o/t/x",
                "admin",
                True,
                clock.now(),
                0,
                "active",
                clock.now() + 9999,
            )  # fmt: skip
        )
    clock.advance(100)
    assert one.sweep_silent_agents() == ["spiffe://tasklease.local/agent/o/t/x"]
    assert two.sweep_silent_agents() == []  # the lease is held by one
    clock.advance(61)  # the lease expired: two may sweep, and finds nothing to redo
    assert two.sweep_silent_agents() == []


# --- resume -----------------------------------------------------------------------------


def _resume(env: Env, agent_id: str, key: SigningKey) -> Any:
    nonce = env.http.get("/v1/challenge").json()["nonce"]
    signature = b64(key.sign(bytes.fromhex(nonce)).signature)
    return env.http.post(
        "/v1/resume", json={"agent_id": agent_id, "nonce": nonce, "signature": signature}
    )


def test_resumed_agent_keeps_its_identity_and_an_impostor_is_refused(env: Env) -> None:
    agent = env.register("task-a", ["read:data:*"], principal="user:bob@example.com")
    first = env.validate(agent.token)
    assert first is not None
    env.clock.advance(400)  # it crashed; its token expired meanwhile
    assert env.validate(agent.token) is None
    answer = _resume(env, agent.agent_id, agent.key)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    claims = env.validate(data["access_token"])
    assert claims is not None and data["agent_id"] == agent.agent_id
    assert claims["sub"] == agent.agent_id and claims["scope"] == ["read:data:*"]
    assert claims["oiat"] == first["oiat"] and claims["rnc"] == 1
    assert claims["principal"] == "user:bob@example.com"
    assert _resume(env, agent.agent_id, SigningKey.generate()).status_code == 401
    details = [e.detail for e in env.audit("agent_resume_denied", "denied")]
    assert any("impostor" in d for d in details)
    assert env.audit("agent_resumed")


def test_resume_is_bounded_by_the_ceiling_and_revocation(env: Env) -> None:
    agent = env.register("task-a")
    env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": agent.agent_id},
    )
    assert _resume(env, agent.agent_id, agent.key).status_code == 403
    other = env.register("task-b")
    env.clock.advance(env.broker.config.renewal_ceiling)
    refused = _resume(env, other.agent_id, other.key)
    assert refused.status_code == 403
    assert refused.json()["error_code"] == "renewal_ceiling_exceeded"


def test_a_released_token_leaves_the_agent_resumable_and_done_does_not(env: Env) -> None:
    """Releasing a token ends that token, not the agent; a ``done`` heartbeat ends the
    agent's supervision and its resumption (docs/agents.md, section 5)."""
    agent = env.register("task-a")
    released = env.http.post(
        "/v1/token/release", headers={"Authorization": f"Bearer {agent.token}"}
    )
    assert released.status_code == 204, released.text
    again = _resume(env, agent.agent_id, agent.key)
    assert again.status_code == 200, again.text
    finished = AgentHandle(agent.agent_id, again.json()["access_token"], agent.key)
    assert _beat(env, finished, done=True).json()["status"] == "released"
    refused = _resume(env, agent.agent_id, agent.key)
    assert refused.status_code == 403 and refused.json()["error_code"] == "forbidden"


def test_resume_nonce_is_single_use(env: Env) -> None:
    agent = env.register("task-a")
    nonce = env.http.get("/v1/challenge").json()["nonce"]
    body = {
        "agent_id": agent.agent_id,
        "nonce": nonce,
        "signature": b64(agent.key.sign(bytes.fromhex(nonce)).signature),
    }
    assert env.http.post("/v1/resume", json=body).status_code == 200
    assert env.http.post("/v1/resume", json=body).status_code == 401


# --- discovery --------------------------------------------------------------------------


def _bind(env: Env, agent: AgentHandle, endpoint: str, key: SigningKey | None = None,
          issued_at: int | None = None) -> Any:  # fmt: skip
    ts = int(env.clock.now()) if issued_at is None else issued_at
    signature = (key or agent.key).sign(statement(agent.agent_id, endpoint, ts)).signature
    return env.http.post(
        "/v1/discovery/bind",
        headers=agent.auth(),
        json={"endpoint": endpoint, "issued_at": ts, "signature": b64(signature)},
    )


def test_discovery_statement_known_answer() -> None:
    assert statement("spiffe://td/a", "https://a.example:8443/x", 1800000000) == (
        b'tasklease-discovery-v1\n["spiffe://td/a","https://a.example:8443/x",1800000000]'
    )


def test_peer_verifies_a_bound_endpoint_and_a_substitution_fails(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    assert _bind(env, a, "https://a.internal:8443/agent").status_code == 200
    answer = env.http.get(f"/v1/discovery/{a.agent_id}", headers=b.auth())
    assert answer.status_code == 200, answer.text
    found = answer.json()
    signature = base64.b64decode(found["signature"])
    # B takes A's key from A's verified access token (agent_jwk), not from the answer.
    a_key = _jws.b64url_decode(env.validate(a.token)["agent_jwk"]["x"])  # type: ignore[index]
    assert base64.b64decode(found["public_key"]) == a_key
    assert verify_binding(a.agent_id, found["endpoint"], found["issued_at"], signature, a_key)
    assert not verify_binding(
        a.agent_id, "https://evil.example/agent", found["issued_at"], signature, a_key
    )
    assert not verify_binding(b.agent_id, found["endpoint"], found["issued_at"], signature, a_key)


def test_bind_refuses_a_foreign_key_a_stale_or_rolled_back_statement(env: Env) -> None:
    a = env.register("task-a")
    assert _bind(env, a, "https://a/x", key=SigningKey.generate()).status_code == 401
    assert _bind(env, a, "https://a/x", issued_at=int(env.clock.now()) - 600).status_code == 401
    assert _bind(env, a, "https://a/new").status_code == 200
    assert _bind(env, a, "https://a/old", issued_at=int(env.clock.now()) - 1).status_code == 401
    assert _bind(env, a, "javascript:alert(1)").status_code == 400
    assert len(env.audit("discovery_bind_denied", "denied")) == 3


def test_an_endpoint_with_credentials_is_refused(env: Env) -> None:
    """Every agent of the tenant may resolve an endpoint, and its event records it: a
    user name or password in it would be handed to all of them and kept in the log."""
    a = env.register("task-a")
    b = env.register("task-b")
    for endpoint in (
        "https://svc:hunter2-pass@a.internal:8443/agent",
        "https://token@a.internal/agent",
        "grpc://:pw@a.internal:50051",
    ):
        answer = _bind(env, a, endpoint)
        assert answer.status_code == 400, answer.text
        assert "hunter2" not in answer.text
    assert env.audit("discovery_bound", "success") == []
    assert env.http.get(f"/v1/discovery/{a.agent_id}", headers=b.auth()).status_code == 404
    # An "@" past the host is no credential: a path or query may hold one.
    assert _bind(env, a, "https://a.internal/team@x?owner=a@example.com").status_code == 200


def test_revoked_agent_has_no_endpoint(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    _bind(env, a, "https://a/x")
    env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": a.agent_id},
    )
    assert env.http.get(f"/v1/discovery/{a.agent_id}", headers=b.auth()).status_code == 404


def test_a_long_endpoint_is_audited_by_its_head(env: Env) -> None:
    """An endpoint may be 2048 characters: its event keeps the head, then issued_at."""
    a = env.register("task-a")
    endpoint = "https://a.internal/secret-" + "a-" * 1005
    assert _bind(env, a, endpoint).status_code == 200
    [event] = env.audit("discovery_bound", "success")
    # The word the cut went through holds "secret": dropped back to the last "/".
    assert event.detail.startswith("endpoint bound: https://a.internal/[truncated] ")
    assert event.detail.endswith(f" issued_at={int(env.clock.now())}")
    plain = "https://a.internal/" + "x" * 2000
    env.clock.advance(1)
    assert _bind(env, a, plain).status_code == 200
    last = env.audit("discovery_bound", "success")[-1]
    assert last.detail.startswith(f"endpoint bound: {plain[:400]}")
    assert last.detail.endswith(f"[truncated] issued_at={int(env.clock.now())}")
    assert len(last.detail) < 560


def test_a_heartbeat_is_accepted_only_within_the_clock_skew_either_way(env: Env) -> None:
    # A heartbeat proves the key holder is alive now: one signed for later (which would
    # keep a dead agent supervised-alive) or earlier is refused, exactly at the edges.
    agent = env.register("task-a")
    now, skew = int(env.clock.now()), env.broker.config.clock_skew
    assert _beat(env, agent, ts=now + skew + 1).status_code == 401
    assert _beat(env, agent, ts=now - skew - 1).status_code == 401
    assert _beat(env, agent, ts=now + skew).status_code == 200
    assert _beat(env, agent, ts=now - skew).status_code == 200
    details = [e.detail.split(" | ")[0] for e in env.audit("heartbeat_denied", "denied")]
    assert details == [
        f"heartbeat timestamp {now + skew + 1} outside the clock skew",
        f"heartbeat timestamp {now - skew - 1} outside the clock skew",
    ]


def test_a_heartbeat_proof_stays_spent_while_its_timestamp_is_accepted(env: Env) -> None:
    agent = env.register("task-a")
    now, skew = int(env.clock.now()), env.broker.config.clock_skew
    assert _beat(env, agent, jti="r" * 16, ts=now).status_code == 200
    env.clock.set(float(now + skew))  # the last instant that timestamp is accepted
    env.broker.store.prune(env.clock.now())
    assert _beat(env, agent, jti="r" * 16, ts=now).status_code == 401
    assert any("replayed" in e.detail for e in env.audit("heartbeat_denied", "denied"))


def test_heartbeat_proof_ids_are_per_agent_and_whole(env: Env) -> None:
    # One agent's proof id spends nothing of another's; an id is its characters, all.
    one, two = env.register("task-one"), env.register("task-two")
    assert _beat(env, one, jti="s" * 16).status_code == 200
    assert _beat(env, two, jti="s" * 16).status_code == 200
    assert _beat(env, one, jti="t" * 16 + "!").status_code == 400


def test_done_is_written_down_for_every_replica(env: Env) -> None:
    # The release ends the token in the store, not only in this broker's cache: another
    # broker on the same store (a replica, or this one restarted) refuses it too.
    from tasklease.core.broker import Broker

    agent = env.register("task-a")
    held = _delegate(env, env.register("task-c"), agent)  # outlives the release
    assert _beat(env, agent, done=True).json()["status"] == "released"
    b = env.broker
    replica = Broker(b.config, b.store, b.keyring, clock=env.clock)
    with pytest.raises(TokenRejected) as refused:
        replica.validate(agent.token)
    assert "revoked" in refused.value.reason
    assert replica.validate(held).sub == agent.agent_id
