"""A sign-in whose write shares its transaction with the removal of who signs in, after it.

Writes are group-committed: the units queued while one batch is written are run in the
next one, in order, in one transaction. An operator's or an app's sign-in checks its
credential against the row it read before the (slow) check, then its write unit looks
again (``core.operators._still_standing``, ``AppSignIn._app_token``). That second look
must read through the unit's own transaction, as decision 276's re-checks do: a removal
earlier in the same batch is not committed yet, so the store's read connection (SQLite's,
PostgreSQL's) still shows the operator or the app as it was.

Would fail if: a re-check read the row through the store rather than the write
transaction: the sign-in was answered with a token, and its ``operator_authenticated`` or
``app_authenticated`` event recorded after the removal's, for an operator or an app
removed before that sign-in's write (its token is dead, by the removal's entry; the
console would have set a session for it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.store import AuditQuery
from tasklease.storage import open_store

CTX = RequestContext(request_id="req-1", remote="127.0.0.1")
ADMIN_SECRET = "a" * 40


def _queued(broker: Broker, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(broker.audit._queue) < n and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(broker.audit._queue) == n


def _broker(kind: str, tmp_path: Path) -> Broker:
    url = "memory://" if kind == "memory" else str(tmp_path / "broker.db")
    return Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        open_store(url),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.5),
        nonce_secret=b"n" * 32,
    )


def _batched(broker: Broker, removal: Any, sign_in: Any) -> tuple[Any, Any]:
    """Run ``removal`` and then ``sign_in`` (each in a thread) so that their write units
    are one batch, the removal's first; return what each returned or raised. The sign-in
    checks its credential against the row as committed (still standing) before it
    queues."""
    outcomes: dict[str, Any] = {}

    def call(name: str, fn: Any) -> None:
        try:
            outcomes[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - sorted out by the caller
            outcomes[name] = exc

    log = broker.audit
    with log._lock:  # take the leader's seat while both queue
        log._leading = True
    threads = []
    for name, fn in (("removal", removal), ("sign_in", sign_in)):
        thread = threading.Thread(target=call, args=(name, fn))
        thread.start()
        threads.append(thread)
        _queued(broker, len(threads))
    with log._lock:  # hand the seat to the removal: it leads both, in one transaction
        log._queue[0].wake.set()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes["removal"], outcomes["sign_in"]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_operator_sign_in_batched_after_its_removal_is_refused(
    tmp_path: Path, kind: str
) -> None:
    broker = _broker(kind, tmp_path)
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="alice", role="operator", public_key=None, ctx=CTX)
    broker.clock.advance(5)
    removed, refused = _batched(
        broker,
        lambda: broker.remove_operator(admin, "alice", CTX),
        lambda: broker.operator_auth(
            name="alice", secret=secret, nonce=None, signature=None, ctx=CTX
        ),
    )
    assert not isinstance(removed, BaseException), removed
    assert isinstance(refused, Unauthorized), refused
    assert refused.detail == "invalid credentials" and refused.denial_id
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    assert not [e for e in events if e.event_type == "operator_authenticated"]
    (hit,) = [e.detail for e in events if e.detail.endswith(f"denial={refused.denial_id}")]
    assert "operator was removed during sign-in" in hit


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_app_sign_in_batched_after_its_deregistration_is_refused(
    tmp_path: Path, kind: str
) -> None:
    broker = _broker(kind, tmp_path)
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    app, secret = broker.register_app(
        admin, name="billing", scopes=["read:invoices:*"], token_ttl=300, ctx=CTX
    )
    broker.clock.advance(5)
    removed, refused = _batched(
        broker,
        lambda: broker.deregister_app(admin, app.app_id, CTX),
        lambda: broker.app_auth(app.client_id, secret, CTX),
    )
    assert not isinstance(removed, BaseException), removed
    assert isinstance(refused, Unauthorized), refused
    assert refused.denial_id
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    assert not [e for e in events if e.event_type == "app_authenticated"]
    (hit,) = [e.detail for e in events if e.detail.endswith(f"denial={refused.denial_id}")]
    assert "app_changed_during_sign_in" in hit


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_app_sign_in_with_the_old_secret_batched_after_its_rotation_is_refused(
    tmp_path: Path, kind: str
) -> None:
    """A sign-in with the secret a rotation replaces, its credential checked against the
    row as it was, and its write in the rotation's batch, after it: refused (401, with a
    denial), never answered with a token once the rotation has answered."""
    broker = _broker(kind, tmp_path)
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    app, secret = broker.register_app(
        admin, name="billing", scopes=["read:invoices:*"], token_ttl=300, ctx=CTX
    )
    broker.clock.advance(5)
    rotated, refused = _batched(
        broker,
        lambda: broker.rotate_app_secret(admin, app.app_id, CTX),
        lambda: broker.app_auth(app.client_id, secret, CTX),
    )
    assert not isinstance(rotated, BaseException), rotated
    assert rotated[1] and rotated[1] != secret
    assert isinstance(refused, Unauthorized), refused
    assert refused.denial_id
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    assert not [e for e in events if e.event_type == "app_authenticated"]
    (hit,) = [e.detail for e in events if e.detail.endswith(f"denial={refused.denial_id}")]
    assert "app_changed_during_sign_in" in hit
