"""A holder's end of its token (release, RFC 7009, heartbeat ``done``) raced by a renewal
of the same token: both checked before either wrote, the renewal committed first. The
holder is answered that its credential is ended, so the successor the renewal minted
(and that successor's own renewals) must be dead too, at the broker and at a verifier
that follows the revocation feed (docs/authority.md, "Ending a credential ends what it
handed on"). A stolen copy renewed at the moment the holder releases must not live on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tasklease.core.broker import Broker, IssuedToken
from tasklease.core.errors import Unauthorized
from tasklease.core.pending import Pending, complete
from tasklease.core.validation import TokenRejected
from tasklease.http import wire
from tasklease.rules.messages import heartbeat_signing_input
from tasklease.storage import MemoryStore, SQLiteStore
from tasklease.verify import InvalidToken, Verifier

from .conftest import Agent, b64

STORES = ["memory", "sqlite"]


def _broker(make_broker: Any, storage: str, tmp_path: Path) -> Broker:
    store = SQLiteStore(tmp_path / "broker.db") if storage == "sqlite" else MemoryStore()
    broker: Broker = make_broker(store=store)
    return broker


def _release(broker: Broker, kit: Any, agent: Agent, claims: Any) -> Pending[Any]:
    return broker.prepare_release(claims, kit.ctx)


def _rfc7009(broker: Broker, kit: Any, agent: Agent, claims: Any) -> Pending[Any]:
    caller = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    return broker.prepare_revoke_token(
        caller, token=agent.token, token_type_hint="access_token", ctx=kit.ctx
    )


def _done(broker: Broker, kit: Any, agent: Agent, claims: Any) -> Pending[Any]:
    now, proof = int(broker.clock.now()), "p" * 20
    message = heartbeat_signing_input(agent.sub, claims.jti, now, proof, True)
    return broker.prepare_heartbeat(
        claims,
        timestamp=now,
        jti=proof,
        signature=b64(agent.key.sign(message).signature),
        done=True,
        ctx=kit.ctx,
    )


ENDINGS: dict[str, Callable[[Broker, Any, Agent, Any], Pending[Any]]] = {
    "release": _release,
    "rfc7009": _rfc7009,
    "heartbeat-done": _done,
}


def _dead(broker: Broker, issued: IssuedToken) -> None:
    with pytest.raises(TokenRejected):
        broker.validate(issued.token)


@pytest.mark.parametrize("storage", STORES)
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_renewal_that_wins_the_race_with_its_tokens_end_dies_with_it(
    make_broker: Any, kit: Any, storage: str, ending: str, tmp_path: Path
) -> None:
    broker = _broker(make_broker, storage, tmp_path)
    agent = kit.register(broker)
    claims = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    ended = ENDINGS[ending](broker, kit, agent, claims)  # checked, not written
    successor = broker.renew(claims, kit.ctx)  # the thief's copy, renewed first
    assert broker.validate(successor.token).jti == successor.claims.jti
    complete(broker.kernel, ended)  # the holder is told its credential is ended
    _dead(broker, agent.issued)
    _dead(broker, successor)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(successor.token), kit.ctx)  # so it renews no more


@pytest.mark.parametrize("storage", STORES)
def test_a_successors_own_renewal_in_the_race_dies_too(
    make_broker: Any, kit: Any, storage: str, tmp_path: Path
) -> None:
    """The thief renews the successor too, checked before the release wrote: that
    renewal's own write reads the release's entry on the grant and is refused
    (decision 371), and every token of the grant is dead."""
    broker = _broker(make_broker, storage, tmp_path)
    agent = kit.register(broker)
    released = broker.prepare_release(agent.claims, kit.ctx)
    successor = broker.renew(agent.claims, kit.ctx)
    broker.clock.advance(1)
    next_pending = broker.prepare_renew(successor.claims, kit.ctx)
    complete(broker.kernel, released)
    with pytest.raises(Unauthorized):
        complete(broker.kernel, next_pending)
    for issued in (agent.issued, successor):
        _dead(broker, issued)


def test_a_release_of_a_later_renewal_ends_the_successor_minted_in_the_race(
    make_broker: Any, kit: Any
) -> None:
    """Not only the grant's first token: the holder of its n-th renewal releases it."""
    broker = make_broker()
    agent = kit.register(broker)
    held = broker.renew(agent.claims, kit.ctx)
    broker.clock.advance(1)
    held = broker.renew(held.claims, kit.ctx)
    released = broker.prepare_release(held.claims, kit.ctx)
    successor = broker.renew(held.claims, kit.ctx)
    complete(broker.kernel, released)
    _dead(broker, successor)


def test_renewals_list_their_grants_renewal_id_once(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    first = agent.claims
    renewal_id = f"renewal:{first.jti}"  # the lineage id, as tokens carry it
    assert renewal_id not in first.lineage  # the first token is no renewal of itself
    second = broker.renew(first, kit.ctx).claims
    third = broker.renew(second, kit.ctx).claims
    assert second.lineage == (*first.lineage, renewal_id)
    assert third.lineage == second.lineage
    assert third.grant_id == first.jti


def test_an_operators_chain_entry_on_a_first_token_leaves_its_renewals(
    broker: Any, kit: Any
) -> None:
    """Unchanged by the renewal id: a ``chain`` entry on a grant's first ``jti`` ends
    what was delegated from the grant, not the token's own renewals."""
    agent = kit.register(broker)
    successor = broker.renew(agent.claims, kit.ctx)
    admin = kit.admin(broker).claims
    broker.revoke(admin, level="chain", target=agent.claims.jti, ctx=kit.ctx)
    assert broker.validate(successor.token).jti == successor.claims.jti
    broker.revoke(admin, level="token", target=agent.claims.jti, ctx=kit.ctx)
    assert broker.validate(successor.token).jti == successor.claims.jti


def _feed(broker: Broker) -> httpx.MockTransport:
    """The broker's JWKS and revocation stream (a snapshot of its feed, then ``sync``)."""
    page = broker.revocation_feed(None)
    events = b"".join(
        b"id: %d\nevent: revocation\ndata: %s\n\n"
        % (r.seq, msgspec.json.encode(wire.revocation_entry(r)))
        for r in page.records
    )
    sync = msgspec.json.encode(
        wire.RevocationSync(
            cursor=page.cursor, next_cursor=page.next_cursor, server_time=broker.clock.now()
        )
    )
    stream = events + b"event: sync\ndata: %s\n\n" % sync
    jwks = broker.keyring.jwks()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/jwks.json":
            return httpx.Response(200, json=jwks)
        if request.url.path == "/v1/revocations/stream":
            return httpx.Response(
                200, content=stream, headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(404)

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_verifier_following_the_feed_refuses_the_successor(
    make_broker: Any, kit: Any, ending: str
) -> None:
    broker = make_broker()
    agent = kit.register(broker)
    bystander = kit.register(broker, task_id="task-2")
    claims = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    ended = ENDINGS[ending](broker, kit, agent, claims)
    successor = broker.renew(claims, kit.ctx)
    complete(broker.kernel, ended)
    verifier = Verifier(
        "https://broker.invalid",
        audience=broker.config.audience[0],
        issuer=broker.config.issuer,
        credentials=lambda: "feed-token",
        clock=broker.clock,
        transport=_feed(broker),
    )
    try:
        assert verifier.start(wait=10)
        assert verifier.verify(bystander.token).sub == bystander.sub
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(successor.token)
        assert refused.value.reason == "token has been revoked (level chain)"
    finally:
        verifier.close()
