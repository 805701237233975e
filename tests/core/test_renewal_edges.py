"""Renewal's end of the predecessor reaches every verifier for as long as it needs to."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.errors import RenewalCountExceeded, Unauthorized


def test_a_renewed_tokens_entry_outlives_its_exp_by_the_skew(
    broker: Any, kit: Any, clock: Any
) -> None:
    # A verifier whose clock runs up to ``clock_skew`` behind still takes the predecessor
    # until its own clock reaches ``exp``: the feed must still carry the entry then.
    old = kit.register(broker, kit.launch(broker, max_ttl=120)).claims
    broker.renew(old, kit.ctx)
    skew = broker.config.clock_skew
    assert skew > 0
    clock.set(old.exp + skew)
    assert old.jti in {r.target for r in broker.revocation_feed(None).records}
    broker.prune()
    assert broker.revocations.revoked_at("token", old.jti) is not None


def test_a_renewal_continues_the_count_its_registrations_resumptions_left(
    make_broker: Any, kit: Any
) -> None:
    # Renewals and resumptions share one budget: a token minted before a resumption
    # renews from the session's count, not from the count its own claims carry.
    broker = make_broker(max_renewals=2)
    agent = kit.register(broker)
    nonce, _ = broker.challenge()
    resumed = broker.resume(
        agent_id=agent.sub,
        nonce=nonce,
        signature=base64.b64encode(agent.key.sign(bytes.fromhex(nonce)).signature).decode(),
        ctx=kit.ctx,
    )
    assert resumed.claims.rnc == 1
    assert agent.claims.rnc == 0
    renewed = broker.renew(agent.claims, kit.ctx)
    assert renewed.claims.rnc == 2
    with pytest.raises(RenewalCountExceeded):
        broker.renew(renewed.claims, kit.ctx)


def _resume(broker: Any, kit: Any, agent: Any, nonce: str | None = None) -> Any:
    nonce = nonce or broker.challenge()[0]
    signature = agent.key.sign(bytes.fromhex(nonce)).signature
    return broker.resume(
        agent_id=agent.sub,
        nonce=nonce,
        signature=base64.b64encode(signature).decode(),
        ctx=kit.ctx,
    )


def test_a_renewed_token_keeps_its_holder_binding(broker: Any, kit: Any) -> None:
    args, _ = kit.register_args(broker, kit.launch(broker))
    args["ctx"] = replace(kit.ctx, cert_thumbprint="a" * 43)
    bound = broker.register(**args)
    assert bound.claims.raw["cnf"] == {"x5t#S256": "a" * 43}
    renewed = broker.renew(bound.claims, kit.ctx)
    # A successor without ``cnf`` would be a bearer token anyone holding it could use.
    assert renewed.claims.raw.get("cnf") == {"x5t#S256": "a" * 43}


def test_a_resumption_keeps_the_registration_time(broker: Any, kit: Any, clock: Any) -> None:
    agent = kit.register(broker)
    clock.advance(120)
    resumed = _resume(broker, kit, agent)
    # Revocations and the ceiling match a lineage by when it was registered.
    assert resumed.claims.oiat == agent.claims.oiat == agent.claims.iat
    assert resumed.claims.iat == agent.claims.iat + 120


def test_a_resume_nonce_is_used_once(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    nonce, _ = broker.challenge()
    _resume(broker, kit, agent, nonce)
    with pytest.raises(Unauthorized):
        _resume(broker, kit, agent, nonce)
