"""Agents holding by-reference (``tlr_``) tokens: heartbeats and resumption, over HTTP."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator

import httpx
import pytest
from agents_support import Env, b64, make_env
from nacl.signing import SigningKey

from tasklease.client import Agent, AsyncAgent
from tasklease.rules.messages import heartbeat_signing_input, heartbeat_token_id

SCOPE = ["read:data:*"]
INTERVAL = 30
MISSES = 3


@pytest.fixture
def env() -> Iterator[Env]:
    # Every agent token is over 512 bytes: each is issued by reference.
    running, served = make_env(
        heartbeat_interval=INTERVAL,
        heartbeat_misses=MISSES,
        heartbeat_required=True,
        reference_token_threshold=512,
    )
    yield running
    running.http.close()
    served.stop()


def _stays_supervised(env: Env, agent_id: str, beat: Callable[[], object]) -> None:
    """Two beats, each within the allowance: never swept; then silence is swept."""
    for _ in range(2):
        env.clock.advance(INTERVAL * MISSES - 10)
        beat()
        assert env.broker.sweep_silent_agents() == []
    session = env.broker.store.get_agent_session(agent_id)
    assert session is not None and session.state == "active" and session.heartbeat_required
    assert session.last_heartbeat == env.clock.now()
    env.clock.advance(INTERVAL * MISSES + 1)
    assert env.broker.sweep_silent_agents() == [agent_id]


def test_an_opaque_token_agent_heartbeats_and_stays_supervised(env: Env) -> None:
    agent = Agent.register(env.url, env.launch(SCOPE), "orch-1", "task-h", SCOPE, clock=env.clock)
    try:
        assert agent.token.startswith("tlr_")
        status = agent.heartbeat()
        assert status.status == "alive"
        _stays_supervised(env, agent.agent_id, agent.heartbeat)
    finally:
        agent.close()


def test_an_async_opaque_token_agent_heartbeats(env: Env) -> None:
    async def main() -> None:
        agent = await AsyncAgent.register(
            env.url, env.launch(SCOPE), "orch-1", "task-ah", SCOPE, clock=env.clock
        )
        try:
            assert agent.token.startswith("tlr_")
            assert (await agent.heartbeat()).status == "alive"
            env.clock.advance(INTERVAL * MISSES - 10)
            assert (await agent.heartbeat()).status == "alive"
            assert env.broker.sweep_silent_agents() == []
        finally:
            await agent.aclose()

    asyncio.run(main())


def _signed_beat(
    env: Env, token: str, key: SigningKey, agent_id: str, token_id: str
) -> httpx.Response:
    ts = int(env.clock.now())
    proof = secrets.token_urlsafe(16)
    message = heartbeat_signing_input(agent_id, token_id, ts, proof, False)
    body = {"timestamp": ts, "jti": proof, "signature": b64(key.sign(message).signature)}
    return env.http.post("/v1/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"})


def test_a_heartbeat_signed_for_another_token_is_refused(env: Env) -> None:
    handle = env.register("task-x")
    other = env.register("task-y")
    assert handle.token.startswith("tlr_") and other.token.startswith("tlr_")
    stored = env.broker.store.get_reference_token(heartbeat_token_id(handle.token))
    assert stored is not None
    # The agent's own key, but the message names another token (or the stored jti, which
    # the holder cannot read and is not what binds an opaque token): refused, audited.
    for wrong in (heartbeat_token_id(other.token), stored.jti, ""):
        answer = _signed_beat(env, handle.token, handle.key, handle.agent_id, wrong)
        assert answer.status_code == 401, answer.text
        denial = answer.json()["denial_id"]
        denied = [e for e in env.audit("heartbeat_denied") if e.detail.endswith(denial)]
        assert len(denied) == 1
    # Signed for its own token, it is accepted.
    right = heartbeat_token_id(handle.token)
    answer = _signed_beat(env, handle.token, handle.key, handle.agent_id, right)
    assert answer.status_code == 200, answer.text


def test_a_jws_heartbeat_message_is_unchanged() -> None:
    assert heartbeat_signing_input("spiffe://td/a", "j1", 1800000000, "p" * 16, False) == (
        b'tasklease-heartbeat-v1\n["spiffe://td/a","j1",1800000000,"pppppppppppppppp",false]'
    )


def test_a_resumed_agent_gets_a_reference_token_as_its_registration_did(env: Env) -> None:
    key = SigningKey.generate()
    first = Agent.register(
        env.url, env.launch(SCOPE), "orch-1", "task-r", SCOPE, key=key, clock=env.clock
    )
    assert first.token.startswith("tlr_")
    agent_id = first.agent_id
    first.close()  # "crashes" without releasing
    resumed = Agent.resume(env.url, agent_id, key, SCOPE, clock=env.clock)
    try:
        assert resumed.token.startswith("tlr_")
        assert env.validate(resumed.token)["sub"] == agent_id  # type: ignore[index]
        issued = [e for e in env.audit("token_issued") if e.agent_id == agent_id]
        assert "(resume)" in issued[-1].detail and "by_reference=true" in issued[-1].detail
        assert resumed.heartbeat().status == "alive"
    finally:
        resumed.close()
