"""A launch token admits no agent once the app or operator that made it no longer stands
behind it, by each of the checks on its own.

A change of credential also writes a revocation entry (level ``agent``) on the creator,
so the checks back each other up while that entry lives. The entry lives as long as the
longest launch token may (``launch_token_max_ttl``), but one written before it did lived
``max(max_ttl, renewal_ceiling)`` only: each test below makes the state one check reads
without the others (such an entry, pruned), and every refusal names its one audit event
by ``denial_id``.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.errors import Unauthorized
from tasklease.core.records import LaunchTokenRecord
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import KIND_ADMIN, ROLE_SCOPES, mint

LONG = 7200  # the launch tokens' validity: past the revocation entries' (600 + 30 + 1)
SHORT = {"max_ttl": 600, "renewal_ceiling": 600, "launch_token_max_ttl": LONG}


def _key() -> str:
    return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode("ascii")


def _launch(broker: Broker, kit: Any, claims: Any) -> tuple[str, LaunchTokenRecord]:
    token, record = broker.create_launch_token(
        claims,
        agent_name="worker",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=LONG,
        ctx=kit.ctx,
    )
    return token, record


def _app(broker: Broker, kit: Any) -> str:
    app, _ = broker.register_app(
        kit.admin(broker).claims,
        name="launcher",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
        public_key=_key(),
    )
    return app.app_id


def _operator(broker: Broker, kit: Any, name: str = "olive") -> Any:
    """Claims of the operator ``name`` (role operator), minted as its sign-in mints them."""
    broker.add_operator(
        kit.admin(broker).claims, name=name, role="operator", public_key=_key(), ctx=kit.ctx
    )
    cfg = broker.config
    _, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub=f"operator:{name}",
        aud=cfg.audience,
        iat=int(broker.clock.now()),
        ttl=cfg.admin_token_ttl,
        scope=ROLE_SCOPES["operator"],
        client_id=f"operator:{name}",
    )
    return claims


def _short_lived_entries(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Have the entries written from now on live as they did before they outlived every
    launch token: ``max(max_ttl, renewal_ceiling) + clock_skew + 1``."""
    cfg = broker.config
    span = max(cfg.max_ttl, cfg.renewal_ceiling) + cfg.clock_skew + 1
    monkeypatch.setattr(broker.kernel, "revocation_expiry", lambda at: at + span)


def _past_the_entries(broker: Broker) -> None:
    """Move past the expiry of every entry :func:`_short_lived_entries` wrote (dated
    ``clock_skew`` ahead) and prune them, as the sweeper does."""
    cfg = broker.config
    broker.clock.advance(max(cfg.max_ttl, cfg.renewal_ceiling) + 2 * cfg.clock_skew + 2)  # type: ignore[attr-defined]
    broker.store.prune(broker.clock.now())


def _refused(broker: Broker, kit: Any, launch_token: str, reason: str) -> None:
    """Registering with ``launch_token`` is refused, audited once with ``reason``."""
    with pytest.raises(Unauthorized) as refused:
        kit.register(broker, launch_token)
    assert refused.value.detail == "launch token: launch token revoked"
    denial_id = refused.value.denial_id
    assert denial_id
    events, _ = broker.store.query_audit(AuditQuery(event_type="registration_failed"))
    (event,) = [e for e in events if f"denial={denial_id}" in e.detail]
    assert event.outcome == "denied"
    assert reason in event.detail


def test_an_apps_rekeying_ends_its_launch_tokens_after_the_entry_is_pruned(
    make_broker: Any, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker(**SHORT)
    _short_lived_entries(broker, monkeypatch)
    app_id = _app(broker, kit)
    token, _ = _launch(broker, kit, kit.app(broker, app_id).claims)
    broker.clock.advance(1)
    broker.update_app(
        kit.admin(broker).claims,
        app_id,
        scopes=["read:data:*"],
        token_ttl=None,
        public_key=_key(),
        ctx=kit.ctx,
    )
    _past_the_entries(broker)
    assert not broker.store.find_revocations([("agent", f"app:{app_id}")])
    _refused(broker, kit, token, f"launch token of app:{app_id}, whose credential changed since")

    # One the app makes with its new key registers.
    fresh, _ = _launch(broker, kit, kit.app(broker, app_id).claims)
    assert kit.register(broker, fresh).sub


def test_an_operators_rotation_ends_its_launch_tokens_after_the_entry_is_pruned(
    make_broker: Any, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker(**SHORT)
    _short_lived_entries(broker, monkeypatch)
    claims = _operator(broker, kit)
    token, _ = _launch(broker, kit, claims)
    broker.clock.advance(1)
    broker.rotate_operator(kit.admin(broker).claims, "olive", public_key=_key(), ctx=kit.ctx)
    _past_the_entries(broker)
    assert not broker.store.find_revocations([("agent", "operator:olive")])
    _refused(broker, kit, token, "launch token of operator:olive, whose credential changed since")


def test_a_removed_operators_launch_token_is_refused_whatever_its_dates(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker(**SHORT)
    # The removal is dated no later than the launch token (the replica that wrote the
    # launch token runs ahead of the one that removed the operator) and its entry is
    # gone: only the operator's status says it no longer stands behind it.
    claims = _operator(broker, kit)
    token, record = _launch(broker, kit, claims)
    operator = broker.store.get_operator("olive")
    assert operator is not None and operator.updated_at <= record.created_at
    with broker.store.write() as tx:
        tx.update_operator(replace(operator, status="removed", secret_hash="", public_key=b""))
    assert not broker.store.find_revocations([("agent", "operator:olive")])
    _refused(broker, kit, token, "launch token of operator:olive, who was removed since")


def _creator(broker: Broker, kit: Any, creator: str) -> tuple[Any, str]:
    """Claims of a launch token's ``creator`` (``admin``, ``app``, ``operator``) and the
    target of its ``agent``-level revocation."""
    if creator == "app":
        app_id = _app(broker, kit)
        return kit.app(broker, app_id).claims, f"app:{app_id}"
    if creator == "operator":
        return _operator(broker, kit), "operator:olive"
    return kit.admin(broker).claims, "admin"


@pytest.mark.parametrize("creator", ["admin", "app", "operator"])
@pytest.mark.parametrize("last_second", [False, True])
def test_revoking_the_creators_tokens_ends_the_launch_tokens_they_made(
    make_broker: Any, kit: Any, creator: str, last_second: bool
) -> None:
    broker = make_broker(**SHORT)
    # No credential changed: only the revocation entry on the creator ends them.
    claims, target = _creator(broker, kit, creator)
    token, record = _launch(broker, kit, claims)
    broker.clock.advance(1)
    broker.revoke(kit.admin(broker).claims, level="agent", target=target, ctx=kit.ctx)
    if last_second:
        # Launch tokens may live longer than any token (launch_token_max_ttl past
        # max_ttl and renewal_ceiling): pruned before them, the entry would let them
        # admit agents again, and an admin's has no other check behind it.
        broker.clock.advance(record.expires_at - 1 - broker.clock.now())  # type: ignore[attr-defined]
        broker.prune()  # the store's entries and this process's index, as the sweeper does
        (entry,) = broker.store.find_revocations([("agent", target)])
        assert entry.expires_at > record.expires_at
    _refused(broker, kit, token, f"launch token of {target}, made by a token ended at")


def test_a_launch_token_made_in_the_revoked_second_is_ended(make_broker: Any, kit: Any) -> None:
    # With no skew the entry is dated this very second: a launch token made in it is
    # at or before the entry, and ended; one made the next second is not.
    broker = make_broker(clock_skew=0, **SHORT)
    app_id = _app(broker, kit)
    broker.clock.advance(5)
    claims = kit.app(broker, app_id).claims
    token, record = _launch(broker, kit, claims)
    admin = kit.admin(broker).claims
    broker.revoke(admin, level="agent", target=f"app:{app_id}", ctx=kit.ctx)
    (entry,) = broker.store.find_revocations([("agent", f"app:{app_id}")])
    assert record.created_at == entry.revoked_at
    _refused(broker, kit, token, f"launch token of app:{app_id}, made by a token ended at")

    broker.clock.advance(1)
    after, _ = _launch(broker, kit, kit.app(broker, app_id).claims)
    assert kit.register(broker, after, task_id="task-after").sub
