"""A change to an app or an operator is decided on the row as its write transaction finds
it, never on a read made before: a deregistration, a removal or another change that
commits in between is neither undone nor written over (decision 136), on every backend.

Each test forces the interleaving: the store hands the operation its record, and the
concurrent request (as another worker or replica would make it) commits right after that
read, before the operation's write unit runs.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Conflict, NotFound, TaskleaseError, Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.store import AppRecord, AuditQuery, OperatorRecord, Store
from tasklease.core.tokens import Claims

_SECURITY = str(Path(__file__).resolve().parents[1] / "security")
if _SECURITY not in sys.path:
    sys.path.insert(0, _SECURITY)

from security_support import admin  # noqa: E402

CTX = RequestContext(request_id="req-stale", remote="127.0.0.1", path="/v1/test")
START = 1_800_000_000.0
_ADMIN_HASH = hash_secret("an admin secret long enough to pass")


class Interleaved:
    """``store``, except that the next read of one app or operator runs ``between`` once,
    right after the read: what a concurrent request commits meanwhile."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._armed: tuple[str, str, Callable[[], None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def after_read(self, method: str, key: str, between: Callable[[], None]) -> None:
        self._armed = (method, key, between)

    @property
    def fired(self) -> bool:
        return self._armed is None

    def _read(self, method: str, key: str) -> Any:
        record = getattr(self._store, method)(key)
        armed = self._armed
        if armed is not None and armed[:2] == (method, key):
            self._armed = None
            armed[2]()
        return record

    def get_app(self, app_id: str) -> AppRecord | None:
        record: AppRecord | None = self._read("get_app", app_id)
        return record

    def get_operator(self, name: str) -> OperatorRecord | None:
        record: OperatorRecord | None = self._read("get_operator", name)
        return record


@pytest.fixture
def interleaved(store: Store) -> Interleaved:
    return Interleaved(store)


@pytest.fixture
def broker(interleaved: Interleaved) -> Broker:
    return Broker(
        Config(admin_secret_hash=_ADMIN_HASH),
        interleaved,  # type: ignore[arg-type]
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"s" * 32,
    )


def _admin(broker: Broker) -> Claims:
    return admin(broker).claims


def _refused(broker: Broker, error: TaskleaseError) -> str:
    """The one audit event that carries ``error``'s denial id: its event type."""
    assert error.denial_id
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={error.denial_id}" in e.detail]
    return event.event_type


def _app(broker: Broker, **extra: Any) -> tuple[AppRecord, str]:
    return broker.register_app(
        _admin(broker),
        name="bot",
        scopes=["read:data:*", "write:data:*"],
        token_ttl=None,
        ctx=CTX,
        **extra,
    )


def test_an_update_does_not_bring_back_an_app_deregistered_after_it_read(
    broker: Broker, interleaved: Interleaved
) -> None:
    admin = _admin(broker)
    app, secret = _app(broker)
    interleaved.after_read(
        "get_app", app.app_id, lambda: broker.deregister_app(admin, app.app_id, CTX)
    )

    with pytest.raises(Conflict) as info:
        broker.update_app(admin, app.app_id, scopes=None, token_ttl=120, ctx=CTX)

    assert interleaved.fired
    assert _refused(broker, info.value) == "app_update_denied"
    stored = broker.store.get_app(app.app_id)
    assert stored is not None
    assert (stored.status, stored.token_ttl) == ("inactive", app.token_ttl)
    broker.clock.advance(2)
    with pytest.raises(Unauthorized):
        broker.app_auth(app.client_id, secret, CTX)


def test_an_update_does_not_write_back_a_ceiling_narrowed_after_it_read(
    broker: Broker, interleaved: Interleaved
) -> None:
    admin = _admin(broker)
    key = SigningKey.generate()
    app, _ = _app(broker, public_key=base64.b64encode(bytes(key.verify_key)).decode())
    interleaved.after_read(
        "get_app",
        app.app_id,
        # Another operator narrows the ceiling and removes the (leaked) key meanwhile.
        lambda: broker.update_app(
            admin, app.app_id, scopes=["read:data:*"], token_ttl=None, ctx=CTX, public_key=""
        ),
    )

    updated = broker.update_app(admin, app.app_id, scopes=None, token_ttl=120, ctx=CTX)

    assert interleaved.fired
    stored = broker.store.get_app(app.app_id)
    assert stored == updated
    assert (stored.scopes, stored.public_key, stored.token_ttl) == (("read:data:*",), "", 120)


def test_of_two_deregistrations_of_one_app_one_is_refused(
    broker: Broker, interleaved: Interleaved
) -> None:
    admin = _admin(broker)
    app, _ = _app(broker)
    interleaved.after_read(
        "get_app", app.app_id, lambda: broker.deregister_app(admin, app.app_id, CTX)
    )

    with pytest.raises(Conflict) as info:
        broker.deregister_app(admin, app.app_id, CTX)

    assert _refused(broker, info.value) == "app_deregistration_denied"
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert [e.event_type for e in events].count("app_deregistered") == 1


def test_a_secret_rotation_racing_a_deregistration_is_refused(
    broker: Broker, interleaved: Interleaved
) -> None:
    """A deregistration committed between a rotation's first look and its write: the
    rotation is refused (409, audited), writes nothing, and hands out no secret."""
    admin = _admin(broker)
    app, _ = _app(broker)
    interleaved.after_read(
        "get_app", app.app_id, lambda: broker.deregister_app(admin, app.app_id, CTX)
    )

    with pytest.raises(Conflict) as info:
        broker.rotate_app_secret(admin, app.app_id, CTX)

    assert interleaved.fired
    assert _refused(broker, info.value) == "app_secret_rotation_denied"
    stored = broker.store.get_app(app.app_id)
    assert stored is not None and stored.status == "inactive"
    assert stored.secret_hash == app.secret_hash
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert "app_secret_rotated" not in [e.event_type for e in events]


def _operator(broker: Broker) -> str:
    _, secret = broker.add_operator(
        _admin(broker), name="alice", role="admin", public_key=None, ctx=CTX
    )
    return secret


def test_a_rotation_does_not_bring_back_an_operator_removed_after_it_read(
    broker: Broker, interleaved: Interleaved
) -> None:
    admin = _admin(broker)
    secret = _operator(broker)
    interleaved.after_read(
        "get_operator", "alice", lambda: broker.remove_operator(admin, "alice", CTX)
    )

    with pytest.raises(NotFound) as info:
        broker.rotate_operator(admin, "alice", public_key=None, ctx=CTX)

    assert interleaved.fired
    assert _refused(broker, info.value) == "operator_denied"
    stored = broker.store.get_operator("alice")
    assert stored is not None
    assert (stored.status, stored.secret_hash, stored.public_key) == ("removed", "", b"")
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert "operator_credential_rotated" not in [e.event_type for e in events]
    broker.clock.advance(2)
    with pytest.raises(Unauthorized):
        broker.operator_auth(name="alice", secret=secret, nonce=None, signature=None, ctx=CTX)


def test_of_two_removals_of_one_operator_one_is_refused(
    broker: Broker, interleaved: Interleaved
) -> None:
    admin = _admin(broker)
    _operator(broker)
    interleaved.after_read(
        "get_operator", "alice", lambda: broker.remove_operator(admin, "alice", CTX)
    )

    with pytest.raises(NotFound) as info:
        broker.remove_operator(admin, "alice", CTX)

    assert _refused(broker, info.value) == "operator_denied"
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert [e.event_type for e in events].count("operator_removed") == 1


def test_a_write_transaction_reads_apps_and_operators_as_it_changed_them(store: Store) -> None:
    app = AppRecord("app-a-1", "a", "a-1", "h", ("read:data:*",), 600, "active", 1.0, 1.0, "x")
    operator = OperatorRecord("bob", "admin", "h", b"", "active", 1.0, 1.0, "x")
    with store.write() as tx:
        assert tx.get_app(app.app_id) is None
        assert tx.get_operator(operator.name) is None
        tx.insert_app(app)
        tx.insert_operator(operator)
        tx.update_app(replace(app, status="inactive"))
        assert tx.get_app(app.app_id) == replace(app, status="inactive")
        assert tx.get_operator(operator.name) == operator
