"""An agent or task revocation ends what another worker minted from the registration in
the moments before the revocation reached it: renewals and delegations carry the
registration's time (``oiat``), and the shared index matches agent and task entries by it,
chain entries by the hop's own time. Two brokers on one SQLite file stand for two workers;
the second renews or delegates just before the first revokes, and once the entry is
written, before it has read it (refused then: the issuance reads it in its own write)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.clock import ManualClock, format_rfc3339
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.records import RevocationRecord
from tasklease.core.revocation import RevocationIndex
from tasklease.core.validation import TokenRejected
from tasklease.rules.chainverify import Hop, RevocationProbe
from tasklease.storage import open_store
from tasklease.verify._claims import parse_claims

START = 1_800_000_000.0


def _workers(tmp_path: Path, make_broker: Any) -> tuple[Any, Any, ManualClock]:
    clock, ring = ManualClock(START), KeyRing.generate()
    url = f"sqlite://{tmp_path / 'shared.db'}"
    first = make_broker(store=open_store(url), clock=clock, keyring=ring)
    second = make_broker(store=open_store(url), clock=clock, keyring=ring)
    return first, second, clock


def _revoked(broker: Any, token: str) -> str:
    with pytest.raises(TokenRejected) as refused:
        broker.validate(token)
    return str(refused.value)


@pytest.mark.parametrize("level", ["agent", "task"])
def test_a_renewal_during_the_lag_is_ended_once_the_revocation_arrives(
    tmp_path: Path, make_broker: Any, kit: Any, level: str
) -> None:
    first, second, clock = _workers(tmp_path, make_broker)
    agent = kit.register(first)
    second.refresh_revocations()
    clock.advance(10.4)
    # A renewal the second worker makes just before the entry is written.
    successor = second.renew(second.validate(agent.token), kit.ctx)
    assert successor.claims.iat > agent.claims.iat and successor.claims.oiat == agent.claims.oiat
    clock.advance(0.7)  # the next second
    target = agent.sub if level == "agent" else agent.claims.task_id
    first.revoke(kit.admin(first).claims, level=level, target=target, ctx=kit.ctx)
    # One it tries once the entry is written, before it has read it, reads the entry in
    # its own write and is refused (docs/decisions.md 367).
    with pytest.raises(Unauthorized) as refused:
        second.renew(second.validate(successor.token), kit.ctx)
    assert refused.value.denial_id
    second.refresh_revocations()
    for worker in (first, second):
        assert f"(level {level})" in _revoked(worker, successor.token)
    # A verifier's index, fed the revocation feed, decides the same.
    index = RevocationIndex()
    index.apply(first.revocation_feed(None).records)
    payload = json.loads(base64.urlsafe_b64decode(successor.token.split(".")[1] + "=="))
    assert index.match(parse_claims(payload)) == level
    if level == "task":  # a registration made after it, in the same task, is not revoked
        clock.advance(first.config.clock_skew + 1)  # once past the entry (decision 142)
        later = kit.register(first)
        assert first.validate(later.token).task_id == target


def test_a_delegation_during_the_lag_is_ended_once_the_revocation_arrives(
    tmp_path: Path, make_broker: Any, kit: Any
) -> None:
    first, second, clock = _workers(tmp_path, make_broker)
    delegator, delegate = kit.register(first), kit.register(first, task_id="task-2")
    second.refresh_revocations()
    clock.advance(10.4)

    def delegated() -> Any:
        return second.delegate(
            second.validate(delegator.token),
            delegate_to=delegate.sub,
            scope=["read:data:*"],
            ttl=300,
            ctx=kit.ctx,
        )

    child = delegated()  # just before the entry is written
    clock.advance(0.7)
    first.revoke(kit.admin(first).claims, level="agent", target=delegator.sub, ctx=kit.ctx)
    # Once it is written, the second worker reads it in the delegation's own write.
    with pytest.raises(Unauthorized) as refused:
        delegated()
    assert refused.value.denial_id
    second.refresh_revocations()
    assert "(level agent)" in _revoked(second, child.token)
    assert "(level agent)" in _revoked(first, child.token)
    assert first.validate(delegate.token)  # the delegate itself was not revoked


@dataclass(frozen=True)
class _Record:
    agent: str
    delegated_at: str


@dataclass(frozen=True)
class _Token:
    jti: str
    sub: str
    iat: int
    oiat: int
    task_id: str
    delegation_chain: tuple[Any, ...]
    lineage: tuple[str, ...] = ()


def test_a_chain_entry_ends_delegations_made_before_it_whenever_their_tokens_were_minted() -> None:
    """Chain level: the target's delegations made at or before the entry end, renewed
    or not; those it makes later live, though their registration is older."""
    revoked_at = int(START)
    index = RevocationIndex()
    index.apply([RevocationRecord("chain", "spiffe://td/agent/o/t/x", revoked_at, START + 3600)])
    before = _Record("spiffe://td/agent/o/t/x", format_rfc3339(START - 5))
    after = _Record("spiffe://td/agent/o/t/x", format_rfc3339(START + 5))
    renewed = _Token(
        "j1", "spiffe://td/agent/o/t/y", revoked_at + 60, revoked_at - 100, "t", (before,)
    )
    fresh = _Token(
        "j2", "spiffe://td/agent/o/t/y", revoked_at + 60, revoked_at - 100, "t", (after,)
    )
    assert index.match(renewed) == "chain"
    assert index.match(fresh) is None
    # An offline block's holders say no time: the element's own iat decides, as before.
    probe = RevocationProbe("j3", "s", revoked_at + 1, "t", (Hop("spiffe://td/agent/o/t/x"),), ())
    assert index.match(probe) is None
    assert (
        index.match(RevocationProbe("j4", "s", revoked_at, "t", (Hop(after.agent),), ())) == "chain"
    )


def test_an_agent_or_task_entry_matches_by_the_registration_time() -> None:
    revoked_at = int(START)
    index = RevocationIndex()
    index.apply(
        [
            RevocationRecord("agent", "spiffe://td/agent/o/t/a", revoked_at, START + 3600),
            RevocationRecord("task", "t-1", revoked_at, START + 3600),
        ]
    )
    sub = "spiffe://td/agent/o/t/a"
    assert index.match(_Token("1", sub, revoked_at + 9, revoked_at - 1, "", ())) == "agent"
    assert index.match(_Token("2", "other", revoked_at + 9, revoked_at - 1, "t-1", ())) == "task"
    # Registered after the entry: not revoked (a task's new agents, tomorrow's admins).
    assert index.match(_Token("3", "other", revoked_at + 9, revoked_at + 1, "t-1", ())) is None
    # An oiat later than the iat (only a foreign issuer could send one) is not believed.
    assert index.match(_Token("4", sub, revoked_at, revoked_at + 50, "", ())) == "agent"
    # An offline chain's probes carry their root's registration time.
    late = RevocationProbe("5", "other", revoked_at + 30, "t-1", (), (), revoked_at - 3)
    assert index.match(late) == "task"
