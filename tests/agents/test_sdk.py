"""The SDK's handshake, background heartbeats and resumption, against a real broker."""

from __future__ import annotations

import asyncio

import pytest
from agents_support import Env
from nacl.signing import SigningKey, VerifyKey

from tasklease.client import Agent, AsyncAgent, Forbidden, Unauthorized, _trust
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.mutual import transcript, verify_receipt
from tasklease.rules import jws as _jws


def test_sdk_byte_formats_are_the_brokers() -> None:
    assert _trust.transcript("responder", "h", "a", "b", "1" * 32, "2" * 32) == transcript(
        "responder", "h", "a", "b", "1" * 32, "2" * 32
    )
    assert _trust.heartbeat_message("a", "j", 7, "p" * 16, True) == heartbeat_signing_input(
        "a", "j", 7, "p" * 16, True
    )


def _agent(env: Env, task: str, scope: list[str]) -> Agent:
    return Agent.register(
        env.url, env.launch(scope), "orch-1", task, scope, clock=env.clock, renew_margin=0
    )


def test_sync_agents_handshake(env: Env) -> None:
    with _agent(env, "task-a", ["read:data:*"]) as a, _agent(env, "task-b", ["write:x:*"]) as b:
        mine: dict[str, str] = {}

        def exchange(offer: str) -> str:  # the agents' own channel, here a function call
            answer, initiator, hid, nonce = b.respond_to_handshake(offer)
            assert initiator.agent_id == a.agent_id and initiator.scope == ("read:data:*",)
            mine.update(hid=hid, nonce=nonce)
            return answer

        done = a.handshake(b.agent_id, exchange)
        assert done.peer.agent_id == b.agent_id and done.peer.scope == ("write:x:*",)
        keys = env.http.get("/.well-known/jwks.json").json()["keys"]
        by_kid = {k["kid"]: VerifyKey(_jws.b64url_decode(k["x"])) for k in keys}
        seen = verify_receipt(
            done.receipt,
            resolve_key=by_kid.get,
            issuer=env.broker.config.issuer,
            me=b.agent_id,
            handshake_id=mine["hid"],
            responder_nonce=mine["nonce"],
            now=env.clock.now(),
        )
        assert seen.peer_id == a.agent_id


def test_a_handshake_starts_with_tokens_that_outlive_its_steps(env: Env) -> None:
    """The broker checks at each step that the token a party presented at its own step
    still stands (decision 271), and a renewal ends it. So both parties renew first when
    their token would not outlive the steps' 30 s, even when no renewal is due yet."""
    with _agent(env, "task-a", ["read:data:*"]) as a, _agent(env, "task-b", ["write:x:*"]) as b:
        env.clock.advance(290)  # 10 s left: at renew_margin 0, no renewal is due
        before = (a.token, b.token)

        def exchange(offer: str) -> str:
            answer, _, _, _ = b.respond_to_handshake(offer)
            env.clock.advance(15)  # the answer took its time: past both tokens' old exp
            return answer

        done = a.handshake(b.agent_id, exchange)
        assert done.peer.agent_id == b.agent_id
        assert a.token != before[0] and b.token != before[1]


def test_background_heartbeats_stop_on_release(env: Env) -> None:
    agent = _agent(env, "task-a", ["read:data:*"])
    agent.start_heartbeats(interval=3600)  # the first beat is sent now; no sleeping here
    session = env.broker.store.get_agent_session(agent.agent_id)
    assert session is not None and session.heartbeat_required
    token = agent.token
    agent.release()
    agent.close()
    session = env.broker.store.get_agent_session(agent.agent_id)
    assert session is not None and session.state == "released"
    assert env.validate(token) is None
    env.clock.advance(10_000)
    assert env.broker.sweep_silent_agents() == []


def test_resume_and_impostor(env: Env) -> None:
    key = SigningKey.generate()
    first = Agent.register(
        env.url, env.launch(["read:data:*"]), "orch-1", "task-r", ["read:data:*"], key=key
    )
    agent_id = first.agent_id
    first.close()  # "crashes" without releasing
    resumed = Agent.resume(env.url, agent_id, key, ["read:data:*"])
    assert resumed.agent_id == agent_id
    assert env.validate(resumed.token)["sub"] == agent_id  # type: ignore[index]
    resumed.close()
    with pytest.raises(Unauthorized):
        Agent.resume(env.url, agent_id, SigningKey.generate())
    env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": agent_id},
    )
    with pytest.raises(Forbidden):
        Agent.resume(env.url, agent_id, key)


def test_async_agent_handshake_heartbeats_and_resume(env: Env) -> None:
    async def main() -> None:
        key = SigningKey.generate()
        a = await AsyncAgent.register(
            env.url,
            env.launch(["read:a:*"]),
            "orch-1",
            "task-a",
            ["read:a:*"],
            key=key,
            clock=env.clock,
        )
        b = await AsyncAgent.register(
            env.url, env.launch(["read:b:*"]), "orch-1", "task-b", ["read:b:*"]
        )
        answers: dict[str, str] = {}

        async def respond(offer: str) -> None:
            answers["answer"] = (await b.respond_to_handshake(offer))[0]

        from tasklease.client import _async  # noqa: PLC0415

        offer, nonce = await _async.arun_flow(
            a._client, _trust.initiate_flow(env.url, a.token, b.agent_id)
        )
        await respond(offer)
        done = await _async.arun_flow(
            a._client,
            _trust.complete_flow(
                env.url, a.token, key, answers["answer"], offer=offer, initiator_nonce=nonce
            ),
        )
        assert done.peer.agent_id == b.agent_id
        await a.start_heartbeats(interval=3600)
        await a.release()
        session = env.broker.store.get_agent_session(a.agent_id)
        assert session is not None and session.state == "released"
        await a.aclose()
        resumed_b = await AsyncAgent.resume(env.url, b.agent_id, b._signing_key())
        assert resumed_b.agent_id == b.agent_id
        await resumed_b.aclose()
        await b.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("how", ["stolen", "delegated"])
def test_an_initiator_signs_only_the_answer_to_its_own_offer(env: Env, how: str) -> None:
    # C holds a token naming A as its holder (a stolen copy, or one C itself delegated
    # to A: the delegator receives it), not A's key. It opens a handshake as A with V and
    # hands V's answer to A in place of the answer to A's own offer to C. A must not sign
    # it: its signature would complete C's handshake, and V would take C for A.
    with _agent(env, "task-a", ["read:data:*"]) as a, _agent(env, "task-v", ["write:x:*"]) as v:
        c = env.register("task-c")
        as_a = a.token
        if how == "delegated":
            as_a = env.http.post(
                "/v1/delegate",
                headers=c.auth(),
                json={"delegate_to": a.agent_id, "scope": ["read:data:*"], "ttl": 60},
            ).json()["access_token"]
        offer_as_a = env.http.post(
            "/v1/mutual/initiate",
            headers={"Authorization": f"Bearer {as_a}"},
            json={"responder_id": v.agent_id, "initiator_nonce": env.nonce_hex()},
        ).json()["offer"]
        answer_from_v, initiator, _, _ = v.respond_to_handshake(offer_as_a)
        assert initiator.agent_id == a.agent_id
        with pytest.raises(Unauthorized):
            a.handshake(c.agent_id, lambda _offer: answer_from_v)
        assert env.audit("mutual_auth_completed") == []
