"""DPoP proofs recorded as used with a request's deferred audit events (``core.audit.Guard``).

On the event loop a request's first half runs under ``deferring`` and writes nothing; a
DPoP proof it checks is then recorded as used in the transaction of its audit events,
before anything is answered, whether the request succeeded or was refused. These tests
hold that path to what the blocking path always did: a proof is single use, a replay is
refused with a ``denial_id`` and one audit event, and a refused request spends its proof.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from nacl.signing import SigningKey
from security_support import CTX, HTU, START, b64, dpop_proof, launch, make_broker, register
from test_enforcement import audited_denial, events

from tasklease.core.broker import Broker, RequestContext, deferring
from tasklease.core.errors import InsufficientScope, Unauthorized
from tasklease.core.validation import TokenRejected
from tasklease.rules.binding import PROOF_REPLAYED, DPoPVerifier, Presentation

RESOURCE = "https://files.example/reports/7"


def _bound_agent(broker: Broker) -> tuple[Any, SigningKey]:
    key = SigningKey.generate()
    url = "https://broker.example/v1/register"
    ctx = dataclasses.replace(CTX, dpop=dpop_proof(key, htu=url), method="POST", url=url)
    return register(broker, ctx=ctx), key


def _ctx(key: SigningKey, token: str) -> RequestContext:
    return dataclasses.replace(CTX, dpop=dpop_proof(key, token=token), method="POST", url=HTU)


async def _authenticate(
    broker: Broker, token: str, ctx: RequestContext, scope: str | None = None
) -> Any:
    """What the HTTP adapter does on the loop: the first half deferred, then settled."""
    deferred = deferring(lambda: broker.authenticate(f"DPoP {token}", ctx, scope=scope))
    return await broker.settle(deferred)


def test_the_first_half_writes_nothing_and_the_settle_records_the_proof() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    ctx = _ctx(key, agent.token)
    head = broker.store.audit_head()
    deferred = deferring(lambda: broker.authenticate(f"DPoP {agent.token}", ctx))
    assert deferred.error is None and len(deferred.guards) == 1
    assert broker.store.audit_head() == head  # nothing committed by the first half
    assert asyncio.run(broker.settle(deferred)).sub == agent.claims.sub
    # Recorded: the same proof again is a replay, refused and audited once.
    with pytest.raises(Unauthorized) as info:
        asyncio.run(_authenticate(broker, agent.token, ctx))
    event = audited_denial(broker, info.value.denial_id)
    assert PROOF_REPLAYED in event.detail and event.event_type == "token_auth_failed"


def test_one_proof_presented_concurrently_is_accepted_once() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    ctx = _ctx(key, agent.token)

    async def race() -> list[Any]:
        # Every first half passes before any settles: only the store can tell them apart.
        deferred = [
            deferring(lambda: broker.authenticate(f"DPoP {agent.token}", ctx)) for _ in range(5)
        ]
        assert all(d.error is None for d in deferred)
        return await asyncio.gather(*(broker.settle(d) for d in deferred), return_exceptions=True)

    outcomes = asyncio.run(race())
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, Unauthorized)]
    assert len(accepted) == 1 and len(refused) == 4, outcomes
    for error in refused:
        assert PROOF_REPLAYED in audited_denial(broker, error.denial_id).detail


def test_a_refused_request_spends_its_proof() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    ctx = _ctx(key, agent.token)
    with pytest.raises(InsufficientScope) as info:
        asyncio.run(_authenticate(broker, agent.token, ctx, scope="admin:launch-tokens:*"))
    assert audited_denial(broker, info.value.denial_id).event_type == "scope_violation"
    # The refusal was answered only once the proof was recorded: it cannot be used again.
    with pytest.raises(Unauthorized) as again:
        asyncio.run(_authenticate(broker, agent.token, ctx))
    assert PROOF_REPLAYED in audited_denial(broker, again.value.denial_id).detail


def test_outside_deferring_the_proof_is_recorded_at_once() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    ctx = _ctx(key, agent.token)
    before = len(events(broker))
    assert broker.authenticate(f"DPoP {agent.token}", ctx).sub == agent.claims.sub
    with pytest.raises(Unauthorized) as info:  # a thread's caller: no deferring
        broker.authenticate(f"DPoP {agent.token}", ctx)
    assert PROOF_REPLAYED in audited_denial(broker, info.value.denial_id).detail
    assert len(events(broker)) == before + 1


def _prepared_renewal(broker: Broker, token: str, ctx: RequestContext) -> Any:
    """A renewal's first half as the HTTP adapter runs it on the loop: deferred."""
    return deferring(lambda: broker.prepare_renew(broker.authenticate(f"DPoP {token}", ctx), ctx))


def _answer_together(broker: Broker, *deferred: Any) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(broker.answer(d) for d in deferred), return_exceptions=True)

    return asyncio.run(main())


def test_a_delegation_whose_proof_was_spent_meanwhile_does_not_happen() -> None:
    # Two delegations do not race on any state: only the proof's record stops the second.
    broker = make_broker()
    agent, key = _bound_agent(broker)
    target = register(broker, task_id="task-target")
    ctx = _ctx(key, agent.token)

    def delegation() -> Any:
        return deferring(
            lambda: broker.prepare_delegate(
                broker.authenticate(f"DPoP {agent.token}", ctx),
                delegate_to=target.claims.sub,
                scope=["read:data:x"],
                ttl=60,
                ctx=ctx,
            )
        )

    outcomes = _answer_together(broker, delegation(), delegation())
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], Unauthorized)
    assert PROOF_REPLAYED in audited_denial(broker, lost[0].denial_id).detail
    assert len(events(broker, "delegation_created")) == 1  # the replay delegated nothing


def test_a_renewal_that_loses_its_race_still_spends_its_proof() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    first, second = _ctx(key, agent.token), _ctx(key, agent.token)  # two fresh proofs
    outcomes = _answer_together(
        broker,
        _prepared_renewal(broker, agent.token, first),
        _prepared_renewal(broker, agent.token, second),
    )
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(lost) == 1 and isinstance(lost[0], Unauthorized), outcomes
    assert audited_denial(broker, lost[0].denial_id).event_type == "token_renewal_failed"
    assert len(events(broker, "token_renewed")) == 1
    # Both proofs are spent: the loser's renewal was undone, its proof's record was not.
    verifier = DPoPVerifier(60)
    for ctx in (first, second):
        proof = verifier.check(ctx.dpop, htm="POST", htu=HTU, now=START, access_token=agent.token)
        with broker.store.write() as tx:
            assert not tx.consume_dpop_proof(proof.key, proof.expires_at)


def test_a_proof_by_another_key_is_refused_and_audited_but_not_recorded() -> None:
    # Its ath names this token, whose key it is not: no request can ever be accepted with
    # it, and a proof not recorded costs a flood of fresh keys no place in any replay
    # ledger (docs/decisions.md 141). A refusal after the binding is checked still spends
    # the proof (test_a_refused_request_spends_its_proof).
    broker = make_broker()
    agent, _ = _bound_agent(broker)
    thief = SigningKey.generate()
    ctx = _ctx(thief, agent.token)  # a well-formed proof, by a key the token does not name
    with pytest.raises(Unauthorized) as info:
        asyncio.run(_authenticate(broker, agent.token, ctx))
    assert "another key" in audited_denial(broker, info.value.denial_id).detail
    proof = DPoPVerifier(60).check(
        ctx.dpop, htm="POST", htu=HTU, now=START, access_token=agent.token
    )
    with broker.store.write() as tx:
        assert tx.consume_dpop_proof(proof.key, proof.expires_at)


def _forwarded(key: SigningKey, token: str) -> Presentation:
    """What a resource server forwards to the validate endpoint: the proof made for it."""
    proof = dpop_proof(key, htm="GET", htu=RESOURCE, token=token)
    return Presentation(scheme="DPoP", dpop_proof=proof, htm="GET", htu=RESOURCE)


def test_a_forwarded_proof_is_recorded_with_the_validation_and_valid_once() -> None:
    broker = make_broker()
    agent, key = _bound_agent(broker)
    presented = _forwarded(key, agent.token)

    def validation() -> Any:
        return deferring(lambda: broker.validate(agent.token, presented=presented))

    head = broker.store.audit_head()
    first = validation()
    assert first.error is None and len(first.guards) == 1
    assert broker.store.audit_head() == head  # the check committed nothing

    async def race() -> list[Any]:
        # Every check passes before any settles: only the store can tell them apart.
        rest = [validation() for _ in range(3)]
        return await asyncio.gather(
            *(broker.settle(d) for d in (first, *rest)), return_exceptions=True
        )

    outcomes = asyncio.run(race())
    valid = [o for o in outcomes if not isinstance(o, BaseException)]
    replayed = [o for o in outcomes if isinstance(o, TokenRejected)]
    assert len(valid) == 1 and valid[0].sub == agent.claims.sub, outcomes
    assert len(replayed) == 3 and all(PROOF_REPLAYED in r.reason for r in replayed)
    # A validation's answer refuses nothing of the resource server's: no event, as
    # before the proof's record was deferred.
    assert broker.store.audit_head() == head
    with pytest.raises(TokenRejected):  # and the blocking path finds it spent too
        broker.validate(agent.token, presented=presented)


def test_a_forwarded_proof_of_an_invalid_validation_is_spent() -> None:
    # The proof is the token's key's; the validation is refused after it (high assurance:
    # the agent's record, read live, is no longer active).
    broker = make_broker(critical_scopes=("write:payments:*",))
    key = SigningKey.generate()
    url = "https://broker.example/v1/register"
    ctx = dataclasses.replace(CTX, dpop=dpop_proof(key, htu=url), method="POST", url=url)
    agent = register(broker, ("write:payments:acct-1",), ctx=ctx)
    with broker.store.write() as tx:
        tx.set_agent_status(agent.claims.sub, "revoked")
    presented = _forwarded(key, agent.token)
    deferred = deferring(lambda: broker.validate(agent.token, presented=presented))
    assert isinstance(deferred.error, TokenRejected) and len(deferred.guards) == 1
    assert "agent record is revoked" in deferred.error.reason
    with pytest.raises(TokenRejected):
        asyncio.run(broker.settle(deferred))
    proof = DPoPVerifier(60).check(
        presented.dpop_proof, htm="GET", htu=RESOURCE, now=START, access_token=agent.token
    )
    with broker.store.write() as tx:
        assert not tx.consume_dpop_proof(proof.key, proof.expires_at)


def test_a_forwarded_proof_by_another_key_is_refused_before_it_is_collected() -> None:
    broker = make_broker()
    agent, _ = _bound_agent(broker)
    thief = SigningKey.generate()
    presented = _forwarded(thief, agent.token)  # well formed, by a key the token does not name
    deferred = deferring(lambda: broker.validate(agent.token, presented=presented))
    assert isinstance(deferred.error, TokenRejected) and not deferred.guards
    assert "another key" in deferred.error.reason


def test_a_replayed_proof_forwarded_to_count_a_call_is_an_audited_refusal() -> None:
    # Counting a call turns a rejected token into a 401 with its denial; a forwarded
    # proof found used at the commit must be refused the same way, not escape as a
    # validation's answer.
    broker = make_broker()
    grant = {
        "type": "resource_access",
        "actions": ["read"],
        "locations": [RESOURCE],
        "limits": {"max_calls": 5},
    }
    lt = launch(broker, (), authorization_details=[grant], single_use=False)
    key = SigningKey.generate()
    url = "https://broker.example/v1/register"
    ctx = dataclasses.replace(CTX, dpop=dpop_proof(key, htu=url), method="POST", url=url)
    agent = register(broker, (), launch_token=lt, ctx=ctx, authorization_details=[grant])
    presented = _forwarded(key, agent.token)

    def counting() -> Any:
        return deferring(
            lambda: broker.prepare_count_call(
                agent.token,
                kind="resource_access",
                call={"action": "read", "location": RESOURCE},
                audience=None,
                presented=presented,
                ctx=CTX,
            )
        )

    first, second = counting(), counting()
    assert first.error is None and second.error is None
    outcomes = _answer_together(broker, first, second)
    counted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(counted) == 1 and counted[0][1].counted, outcomes
    assert len(refused) == 1 and isinstance(refused[0], Unauthorized), outcomes
    event = audited_denial(broker, refused[0].denial_id)
    assert event.event_type == "grant_call_denied" and PROOF_REPLAYED in event.detail
    assert len(events(broker, "grant_call_counted")) == 1  # the replay counted nothing


# --- resumption (POST /v1/resume) ----------------------------------------------------------

RESUME_URL = "https://broker.example/v1/resume"


def _resumable(broker: Broker) -> tuple[str, SigningKey, SigningKey]:
    """A DPoP-bound agent: its id, its registered key and its DPoP key."""
    agent_key, dpop_key = SigningKey.generate(), SigningKey.generate()
    url = "https://broker.example/v1/register"
    nonce, _ = broker.challenge()
    issued = broker.register(
        launch_token=launch(broker, ("read:data:*",)),
        nonce=nonce,
        public_key=b64(bytes(agent_key.verify_key)),
        signature=b64(agent_key.sign(bytes.fromhex(nonce)).signature),
        orch_id="orch-sec",
        task_id="task-resume",
        requested_scope=["read:data:*"],
        ctx=dataclasses.replace(CTX, dpop=dpop_proof(dpop_key, htu=url), method="POST", url=url),
    )
    return issued.claims.sub, agent_key, dpop_key


def _deferred_resume(
    broker: Broker, agent_id: str, key: SigningKey, proof: str, nonce: str | None = None
) -> Any:
    """The first half of a resumption as the HTTP adapter runs it on the loop."""
    nonce = nonce or broker.challenge()[0]
    ctx = dataclasses.replace(CTX, dpop=proof, method="POST", url=RESUME_URL, path="/v1/resume")
    return deferring(
        lambda: broker.prepare_resume(
            agent_id=agent_id,
            nonce=nonce,
            signature=b64(key.sign(bytes.fromhex(nonce)).signature),
            ctx=ctx,
        )
    )


def test_a_resumption_on_the_loop_records_its_proof_with_its_unit_once() -> None:
    broker = make_broker()
    agent_id, key, dpop_key = _resumable(broker)
    proof = dpop_proof(dpop_key, htu=RESUME_URL)
    head = broker.store.audit_head()
    deferred = _deferred_resume(broker, agent_id, key, proof)
    assert deferred.error is None and len(deferred.guards) == 1
    assert broker.store.audit_head() == head  # the first half wrote nothing
    resumed = asyncio.run(broker.answer(deferred))
    assert resumed.claims.sub == agent_id and "jkt" in resumed.claims.raw["cnf"]
    # The same proof with a fresh nonce: refused at the commit, audited once.
    again = _deferred_resume(broker, agent_id, key, proof)
    assert again.error is None  # the first half cannot know
    with pytest.raises(Unauthorized) as info:
        asyncio.run(broker.answer(again))
    event = audited_denial(broker, info.value.denial_id)
    assert event.event_type == "agent_resume_denied" and PROOF_REPLAYED in event.detail


def test_an_impostor_resumption_on_the_loop_spends_its_nonce_and_its_proof() -> None:
    broker = make_broker()
    agent_id, key, dpop_key = _resumable(broker)
    proof = dpop_proof(dpop_key, htu=RESUME_URL)
    nonce = broker.challenge()[0]
    impostor = _deferred_resume(broker, agent_id, SigningKey.generate(), proof, nonce)
    with pytest.raises(Unauthorized) as info:
        asyncio.run(broker.answer(impostor))
    event = audited_denial(broker, info.value.denial_id)
    assert event.event_type == "agent_resume_denied" and "impostor" in event.detail
    # Its nonce is spent: the true key cannot use it either.
    with pytest.raises(Unauthorized):
        asyncio.run(
            broker.answer(
                _deferred_resume(broker, agent_id, key, dpop_proof(dpop_key, htu=RESUME_URL), nonce)
            )
        )
    # And so is its proof.
    with pytest.raises(Unauthorized) as replay:
        asyncio.run(broker.answer(_deferred_resume(broker, agent_id, key, proof)))
    assert PROOF_REPLAYED in audited_denial(broker, replay.value.denial_id).detail
    # A fresh nonce and proof resume it.
    fresh = _deferred_resume(broker, agent_id, key, dpop_proof(dpop_key, htu=RESUME_URL))
    assert asyncio.run(broker.answer(fresh)).claims.sub == agent_id


# Would fail if: a resumption's DPoP proof were spent only when the request named a bound
# agent (or only once its key was proven): what became of the proof would then tell a
# bound agent's id from one no agent has.
def test_a_proof_presented_for_an_id_no_agent_has_is_spent_as_well() -> None:
    broker = make_broker()
    agent_id, key, dpop_key = _resumable(broker)
    proof = dpop_proof(dpop_key, htu=RESUME_URL)
    nobody = agent_id.rsplit("/", 1)[0] + "/" + "0" * 32
    with pytest.raises(Unauthorized):
        asyncio.run(broker.answer(_deferred_resume(broker, nobody, SigningKey.generate(), proof)))
    with pytest.raises(Unauthorized) as replay:
        asyncio.run(broker.answer(_deferred_resume(broker, agent_id, key, proof)))
    assert PROOF_REPLAYED in audited_denial(broker, replay.value.denial_id).detail
