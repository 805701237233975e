# Would fail if: a sign-in with an app's or operator's new secret, on a replica that had
# not applied the rotation's revocation entry yet, were answered with a token (born
# revoked) and audited as authenticated, instead of "sign in again in N s".
"""A credential rotated on one replica: its new secret signs in on another as on the
first, once ``clock_skew`` has passed and not before (503 "sign in again in N s" with a
``retry_after``, audited as a refusal with its ``denial_id``), whether or not that replica
has applied the rotation's revocation entry yet (decisions 142, 287, 296). Two brokers on
one PostgreSQL database, neither following the other's notifications: the widest form of
the moment between a commit on one replica and its notification on the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, Claims, mint
from tasklease.storage.postgres import PostgresStore

CTX = RequestContext(request_id="req-pg", remote="127.0.0.1", path="/v1/test")
ADMIN_SECRET = "an admin secret long enough to pass"


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[Broker, Broker, ManualClock]]:
    clock = ManualClock(1_800_000_000.0)
    keys = KeyRing.generate()
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET))
    made = []
    for _ in range(2):
        made.append(
            Broker(
                config, PostgresStore(pg_url, pool_max=2), keys, clock=clock, nonce_secret=b"p" * 32
            )
        )
    try:
        yield made[0], made[1], clock
    finally:
        for broker in made:
            broker.store.close()


def _admin(broker: Broker, clock: ManualClock) -> Claims:
    cfg = broker.config
    _, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="admin",
        aud=cfg.audience,
        iat=int(clock.now()),
        ttl=300,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    return claims


def _refused_once(broker: Broker, caught: Unavailable, event_type: str) -> None:
    assert "moments ago: sign in again in" in caught.detail
    assert caught.retry_after and caught.retry_after > 1
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    named = [e for e in events if e.detail.endswith(f"denial={caught.denial_id}")]
    assert [(e.event_type, e.outcome) for e in named] == [(event_type, "denied")]


def test_a_new_app_secret_waits_out_the_rotation_on_the_other_replica(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    app, first = a.register_app(
        admin, name="rotated", scopes=["read:data:*"], token_ttl=None, ctx=CTX
    )
    b.app_auth(app.client_id, first, CTX)  # B knows the app and has signed it in
    clock.advance(5)
    _, secret = a.rotate_app_secret(admin, app.app_id, CTX)
    with pytest.raises(Unavailable) as caught:
        b.app_auth(app.client_id, secret, CTX)
    _refused_once(b, caught.value, "app_auth_failed")
    # Once the entry is past, the new secret signs in on either replica.
    clock.advance(caught.value.retry_after or 0)
    assert b.app_auth(app.client_id, secret, CTX).claims.sub == f"app:{app.app_id}"


def test_a_new_operator_secret_waits_out_the_rotation_on_the_other_replica(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    operator, first = a.add_operator(admin, name="ops", role="auditor", public_key=None, ctx=CTX)
    b.operator_auth(name="ops", secret=first, nonce=None, signature=None, ctx=CTX)
    clock.advance(5)
    _, secret = a.rotate_operator(admin, "ops", public_key=None, ctx=CTX)
    with pytest.raises(Unavailable) as caught:
        b.operator_auth(name="ops", secret=secret, nonce=None, signature=None, ctx=CTX)
    _refused_once(b, caught.value, "operator_auth_failed")
    clock.advance(caught.value.retry_after or 0)
    issued, _ = b.operator_auth(name="ops", secret=secret, nonce=None, signature=None, ctx=CTX)
    assert issued.claims.sub == "operator:ops"


def test_an_operators_tokens_revoked_on_one_replica_wait_out_the_entry_on_the_other(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    """Not a rotation: an ``agent``-level revocation of the operator's tokens, which leaves
    its record as it was. The unchanged secret signs in again once the entry is past, on
    the replica that has not applied it yet as on the one that wrote it."""
    a, b, clock = pair
    admin = _admin(a, clock)
    a.add_operator(admin, name="held", role="auditor", public_key=None, ctx=CTX)
    _, secret = a.rotate_operator(admin, "held", public_key=None, ctx=CTX)
    clock.advance(a.config.clock_skew + 5)
    b.operator_auth(name="held", secret=secret, nonce=None, signature=None, ctx=CTX)
    a.revoke(admin, level="agent", target="operator:held", ctx=CTX)
    with pytest.raises(Unavailable) as caught:
        b.operator_auth(name="held", secret=secret, nonce=None, signature=None, ctx=CTX)
    _refused_once(b, caught.value, "operator_auth_failed")


def test_the_admins_tokens_revoked_on_one_replica_wait_out_the_entry_on_the_other(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    b.admin_auth(ADMIN_SECRET, CTX)
    a.revoke(admin, level="agent", target="admin", ctx=CTX)
    with pytest.raises(Unavailable) as caught:
        b.admin_auth(ADMIN_SECRET, CTX)
    _refused_once(b, caught.value, "admin_auth_failed")
    clock.advance(caught.value.retry_after or 0)
    assert b.admin_auth(ADMIN_SECRET, CTX).claims.sub == "admin"
