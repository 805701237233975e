"""Renew, release, delegate and revoke in two halves (core.pending): the first half writes
nothing, refusals are deferred and written before they are answered, and nothing is
answered before the group commit made it durable; a failed commit fails closed."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.audit import deferring
from tasklease.core.auditformat import AuditEntry, verify_chain
from tasklease.core.errors import Forbidden, Unauthorized, Unavailable
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.validation import TokenRejected
from tasklease.storage import MemoryStore, open_store


class _FailingStore(MemoryStore):
    """A memory store whose transactions fail once ``failing`` is set (a lost disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def write(self) -> Any:
        if self.failing:
            raise OSError("disk full")
        return super().write()


def _events(broker: Any) -> list[Any]:
    return list(broker.store.iter_audit())


def _answer(broker: Any, fn: Any) -> Any:
    """What the HTTP adapter does: the first half under deferring, then answer."""

    async def main() -> Any:
        return await broker.answer(deferring(fn))

    return asyncio.run(main())


def test_prepare_renew_writes_nothing_and_answer_commits(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    head = broker.store.audit_head()
    pending = broker.prepare_renew(agent.claims, kit.ctx)
    assert broker.store.audit_head() == head  # nothing written by the first half
    assert broker.validate(agent.token).jti == agent.claims.jti  # still live
    issued = _answer(broker, lambda: pending)
    broker.audit.close()
    assert broker.validate(issued.token).sub == agent.sub
    with pytest.raises(TokenRejected):
        broker.validate(agent.token)  # the predecessor is revoked once durable
    assert [e.event_type for e in _events(broker)][-1] == "token_renewed"
    assert verify_chain(broker.store.iter_audit()).ok


def _two_renewals_of_one_token(broker: Any, kit: Any) -> tuple[Any, Any]:
    """Two renewals of one agent's token, both decided and signed, neither written."""
    agent = kit.register(broker)
    return broker.prepare_renew(agent.claims, kit.ctx), broker.prepare_renew(agent.claims, kit.ctx)


def test_two_prepared_renewals_of_one_token_one_wins_the_other_is_one_denial(
    broker: Any, kit: Any
) -> None:
    first, second = _two_renewals_of_one_token(broker, kit)

    async def main() -> list[Any]:
        return await asyncio.gather(
            broker.answer(deferring(lambda: first)),
            broker.answer(deferring(lambda: second)),
            return_exceptions=True,
        )

    outcome = asyncio.run(main())
    broker.audit.close()
    won = [o for o in outcome if not isinstance(o, BaseException)]
    lost = [o for o in outcome if isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], Unauthorized) and lost[0].denial_id.startswith("den_")
    denials = [e for e in _events(broker) if f"denial={lost[0].denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["token_renewal_failed"]


def test_a_refusal_of_the_first_half_is_written_before_it_is_raised(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker)  # only agents renew: an audited refusal
    head = broker.store.audit_head()
    deferred = deferring(lambda: broker.prepare_renew(admin.claims, kit.ctx))
    assert isinstance(deferred.error, Forbidden)
    assert broker.store.audit_head() == head  # deferred, not written
    assert len(deferred.entries) == 1
    with pytest.raises(Forbidden) as info:
        asyncio.run(broker.answer(deferred))
    broker.audit.close()
    denials = [e for e in _events(broker) if f"denial={info.value.denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["renew_denied"]


def _launch(broker: Any, kit: Any, claims: Any, scope: str = "read:data:*") -> Any:
    return broker.prepare_launch_token(
        claims,
        agent_name="worker",
        allowed_scope=[scope],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )


def test_a_prepared_launch_token_is_usable_only_once_committed(broker: Any, kit: Any) -> None:
    head = broker.store.audit_head()
    deferred = deferring(lambda: _launch(broker, kit, kit.admin(broker).claims))
    assert deferred.error is None and broker.store.audit_head() == head  # nothing written
    token, record = asyncio.run(broker.answer(deferred))
    broker.audit.close()
    assert broker.store.get_launch_token(record.token_hash) is not None
    assert [e.event_type for e in _events(broker)][-1] == "launch_token_issued"
    kit.register(broker, launch_token=token)  # a registration finds it


def test_a_launch_token_beyond_the_app_ceiling_is_refused_once_audited(
    broker: Any, kit: Any
) -> None:
    admin = kit.admin(broker).claims
    app, _ = broker.register_app(
        admin, name="narrow", scopes=["read:data:1"], token_ttl=None, ctx=kit.ctx
    )
    claims = kit.app(broker, app.app_id).claims
    head = broker.store.audit_head()
    deferred = deferring(lambda: _launch(broker, kit, claims, "read:data:*"))
    assert isinstance(deferred.error, Forbidden) and len(deferred.entries) == 1
    assert broker.store.audit_head() == head  # deferred, not written
    with pytest.raises(Forbidden) as info:
        asyncio.run(broker.answer(deferred))
    broker.audit.close()
    denials = [e for e in _events(broker) if f"denial={info.value.denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["scope_ceiling_exceeded"]


def test_a_refused_bearer_is_audited_once_when_authenticated_in_the_first_half(
    broker: Any, kit: Any
) -> None:
    with pytest.raises(Unauthorized) as info:
        _answer(
            broker,
            lambda: broker.prepare_renew(
                broker.authenticate("Bearer not.a.token", kit.ctx), kit.ctx
            ),
        )
    broker.audit.close()
    denials = [e for e in _events(broker) if f"denial={info.value.denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["token_auth_failed"]


def test_a_failed_group_commit_answers_unavailable_and_changes_nothing(
    make_broker: Any, kit: Any
) -> None:
    store = _FailingStore()
    broker = make_broker(store=store)
    agent = kit.register(broker)
    target = kit.register(broker, task_id="task-2")
    admin = kit.admin(broker)
    head = store.audit_head()
    prepared = [
        broker.prepare_renew(agent.claims, kit.ctx),
        broker.prepare_release(agent.claims, kit.ctx),
        broker.prepare_delegate(
            agent.claims, delegate_to=target.sub, scope=["read:data:x"], ttl=60, ctx=kit.ctx
        ),
        broker.prepare_revoke(admin.claims, level="token", target=agent.claims.jti, ctx=kit.ctx),
    ]
    store.failing = True  # the disk goes away between the two halves
    for pending in prepared:
        with pytest.raises(Unavailable):
            _answer(broker, lambda pending=pending: pending)
    store.failing = False
    broker.audit.close()
    assert store.audit_head() == head  # nothing durable, nothing answered
    assert store.revocations_since(0) == []
    assert broker.validate(agent.token).jti == agent.claims.jti  # nothing enforced either
    assert broker.audit.failure() is not None  # readiness sees it


def test_a_refusal_whose_event_cannot_be_written_answers_unavailable(
    make_broker: Any, kit: Any
) -> None:
    store = _FailingStore()
    broker = make_broker(store=store)
    admin = kit.admin(broker)
    deferred = deferring(lambda: broker.prepare_renew(admin.claims, kit.ctx))
    assert isinstance(deferred.error, Forbidden)
    store.failing = True
    with pytest.raises(Unavailable):
        asyncio.run(broker.answer(deferred))  # never the refusal without its event
    broker.audit.close()


def test_a_deferred_refusal_is_written_even_if_the_request_is_cancelled(
    broker: Any, kit: Any
) -> None:
    admin = kit.admin(broker)
    deferred = deferring(lambda: broker.prepare_renew(admin.claims, kit.ctx))
    denial_id = deferred.error.denial_id  # type: ignore[union-attr]
    log = broker.audit

    async def main() -> None:
        with log._lock:  # someone else holds the leader's seat: the denial stays queued
            log._leading = True
        task = asyncio.create_task(broker.answer(deferred))
        for _ in range(200):
            if log._queue:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with log._lock:
            log._leading = False
        await log.arecord(AuditEntry("next"))

    asyncio.run(main())
    log.close()
    assert any(f"denial={denial_id}" in e.detail for e in _events(broker))


def test_prepared_writes_on_sqlite_share_one_chain(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "t.db"), migrate=True)
    broker = make_broker(store=store)
    agents = [kit.register(broker, task_id=f"task-{i}") for i in range(6)]
    admin = kit.admin(broker)

    async def main() -> list[Any]:
        jobs = [
            broker.answer(deferring(lambda a=a: broker.prepare_renew(a.claims, kit.ctx)))
            for a in agents[:3]
        ]
        jobs.append(
            broker.answer(
                deferring(
                    lambda: broker.prepare_delegate(
                        agents[3].claims,
                        delegate_to=agents[4].sub,
                        scope=["read:data:x"],
                        ttl=60,
                        ctx=kit.ctx,
                    )
                )
            )
        )
        jobs.append(
            broker.answer(deferring(lambda: broker.prepare_release(agents[5].claims, kit.ctx)))
        )
        jobs.append(
            broker.answer(
                deferring(
                    lambda: broker.prepare_revoke(
                        admin.claims, level="token", target="f" * 32, ctx=kit.ctx
                    )
                )
            )
        )
        return await asyncio.gather(*jobs)

    outcome = asyncio.run(main())
    broker.audit.close()
    assert outcome[-1] == 1 and outcome[-2] is None
    with pytest.raises(TokenRejected):
        broker.validate(agents[5].token)  # released, enforced once durable
    types = [e.event_type for e in store.iter_audit()]
    assert types.count("token_renewed") == 3
    assert {"delegation_created", "token_released", "token_revoked"} <= set(types)
    assert verify_chain(store.iter_audit()).ok
    store.close()


def test_a_cancelled_request_still_commits_and_enforces_its_revocation(
    broker: Any, kit: Any
) -> None:
    agent = kit.register(broker)
    admin = kit.admin(broker)
    log = broker.audit
    first = deferring(
        lambda: broker.prepare_revoke(
            admin.claims, level="token", target=agent.claims.jti, ctx=kit.ctx
        )
    )

    async def main() -> None:
        with log._lock:  # someone else holds the leader's seat: the unit stays queued
            log._leading = True
        task = asyncio.create_task(broker.answer(first))
        for _ in range(200):
            if log._queue:
                break
            await asyncio.sleep(0.005)
        task.cancel()  # the operator's client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        with log._lock:
            log._leading = False
        await log.arecord(AuditEntry("next"))  # the queue is written, the revocation too
        for _ in range(200):
            if len(broker.revocations):
                break
            await asyncio.sleep(0.005)

    asyncio.run(main())
    log.close()
    with pytest.raises(TokenRejected):
        broker.validate(agent.token)  # enforced here, without waiting for a poll
    assert [r.target for r in broker.store.revocations_since(0)][:1] == [agent.claims.jti]


def test_a_race_lost_by_a_cancelled_request_is_still_audited_as_one_denial(
    broker: Any, kit: Any
) -> None:
    first, second = _two_renewals_of_one_token(broker, kit)
    log = broker.audit

    async def main() -> None:
        with log._lock:  # someone else holds the leader's seat: both units stay queued
            log._leading = True
        won = asyncio.create_task(broker.answer(deferring(lambda: first)))
        gone = asyncio.create_task(broker.answer(deferring(lambda: second)))
        for _ in range(200):
            if len(log._queue) == 2:
                break
            await asyncio.sleep(0.005)
        gone.cancel()  # its client went away before the batch ran
        with pytest.raises(asyncio.CancelledError):
            await gone
        with log._lock:
            log._leading = False
        await log.arecord(AuditEntry("next"))  # the batch runs: the second unit loses
        await won
        for _ in range(200):
            if any(e.event_type == "token_renewal_failed" for e in _events(broker)):
                break
            await asyncio.sleep(0.005)

    asyncio.run(main())
    log.close()
    failed = [e for e in _events(broker) if e.event_type == "token_renewal_failed"]
    assert len(failed) == 1
    assert "token already renewed or revoked" in failed[0].detail
    assert "denial=den_" in failed[0].detail
    renewed = [e for e in _events(broker) if e.event_type == "token_renewed"]
    assert len(renewed) == 1


def _heartbeat(broker: Any, kit: Any, agent: Any, proof: str, *, done: bool = False) -> Any:
    """A heartbeat's first half, deferred as the HTTP adapter runs it."""
    ts = int(broker.clock.now())
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, ts, proof, done)
    signature = base64.b64encode(agent.key.sign(message).signature).decode()
    return deferring(
        lambda: broker.prepare_heartbeat(
            agent.claims, timestamp=ts, jti=proof, signature=signature, done=done, ctx=kit.ctx
        )
    )


def _together(broker: Any, *deferred: Any) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(broker.answer(d) for d in deferred), return_exceptions=True)

    return asyncio.run(main())


def test_one_heartbeat_proof_answered_twice_at_once_counts_once(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    head = broker.store.audit_head()
    first, second = (_heartbeat(broker, kit, agent, "p" * 16) for _ in range(2))
    assert broker.store.audit_head() == head  # both first halves passed, writing nothing
    outcomes = _together(broker, first, second)
    broker.audit.close()
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(lost) == 1 and isinstance(lost[0], Unauthorized), outcomes
    denials = [e for e in _events(broker) if f"denial={lost[0].denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["heartbeat_denied"]
    assert "replayed" in denials[0].detail


def test_a_heartbeat_raced_by_the_agents_release_is_one_audited_refusal(
    broker: Any, kit: Any
) -> None:
    # The unit finds the session released meanwhile: Forbidden, audited like any refusal.
    agent = kit.register(broker)
    beat = _heartbeat(broker, kit, agent, "b" * 16)
    release = _heartbeat(broker, kit, agent, "d" * 16, done=True)
    assert _together(broker, release)[0].state == "released"
    (outcome,) = _together(broker, beat)
    broker.audit.close()
    assert isinstance(outcome, Forbidden), outcome
    denials = [e for e in _events(broker) if f"denial={outcome.denial_id}" in e.detail]
    assert [e.event_type for e in denials] == ["heartbeat_denied"]
