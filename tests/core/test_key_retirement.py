"""Retiring an older signing key at once (core.signing): nothing it signed verifies any
more, here, in every process sharing the key directory, and in the trust bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasklease.core.errors import Conflict, NotFound, TaskleaseError, Unavailable
from tasklease.core.keys import load_or_create_keyring
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected
from tasklease.keystore import PlaintextKeyProvider
from tasklease.rules.bundle import parse_bundle
from tasklease.storage import MemoryStore

PLAIN = PlaintextKeyProvider()


def _events(broker: Any, kind: str) -> list[Any]:
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    return [e for e in events if e.event_type == kind]


def _one_denial(broker: Any, exc: TaskleaseError) -> Any:
    assert exc.denial_id and exc.denial_id.startswith("den_")
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={exc.denial_id}" in e.detail]
    assert event.event_type == "signing_key_retire_denied" and event.outcome == "denied"
    return event


def _rejected(broker: Any, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return True
    return False


@pytest.mark.parametrize("on_disk", [False, True], ids=["in_memory", "key_dir"])
def test_a_retired_key_verifies_nothing_it_signed(
    make_broker: Any, kit: Any, tmp_path: Path, on_disk: bool
) -> None:
    keys = tmp_path / "keys"
    extra: dict[str, Any] = {}
    if on_disk:
        extra = {"keyring": load_or_create_keyring(keys, PLAIN), "key_dir": str(keys)}
    broker = make_broker(**extra)
    old_kid = broker.keyring.active_kid
    agent = kit.register(broker)  # signed by the key about to be retired
    broker.validate(agent.token)  # and remembered by the token cache
    new_kid, _ = broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    assert not _rejected(broker, agent.token)  # rotation alone keeps it verifying
    kept = broker.retire_signing_key(kit.admin(broker).claims, old_kid, kit.ctx)
    assert kept == (new_kid,) and broker.keyring.kids() == [new_kid]
    assert _rejected(broker, agent.token)
    assert [k["kid"] for k in broker.keyring.jwks()["keys"]] == [new_kid]
    [event] = _events(broker, "signing_key_retired")
    assert f"kid={old_kid} keys=1 by=admin" in event.detail
    if on_disk:
        assert load_or_create_keyring(keys, PLAIN).kids() == [new_kid]  # a restart too
    # What the new key signs verifies as before.
    assert not _rejected(broker, kit.register(broker).token)


def test_the_active_key_and_an_unknown_kid_are_refused_audited(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    active = broker.keyring.active_kid
    with pytest.raises(Conflict) as conflict:
        broker.retire_signing_key(kit.admin(broker).claims, active, kit.ctx)
    assert "rotate first" in (conflict.value.hint or "")
    assert f"kid={active} not retired" in _one_denial(broker, conflict.value).detail
    with pytest.raises(NotFound) as missing:
        broker.retire_signing_key(kit.admin(broker).claims, "no-such-kid", kit.ctx)
    _one_denial(broker, missing.value)
    assert broker.keyring.kids() == [active] and not _events(broker, "signing_key_retired")


def test_every_process_sharing_the_directory_drops_the_key(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    store = MemoryStore()
    ring = load_or_create_keyring(keys, PLAIN)
    first = make_broker(store=store, keyring=ring, key_dir=str(keys))
    second = make_broker(store=store, keyring=ring, key_dir=str(keys))
    token = kit.register(first).token
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    assert second.refresh_keys() and not _rejected(second, token)
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    # The second process's next key refresh (every second in the server) drops it.
    assert second.refresh_keys() and second.keyring.kids() == [new_kid]
    assert _rejected(second, token)
    # The second, not knowing yet, retiring it again is told it is gone, audited.
    with pytest.raises(NotFound) as gone:
        second.retire_signing_key(kit.admin(second).claims, old_kid, kit.ctx)
    _one_denial(second, gone.value)


def test_a_process_whose_ring_lags_is_told_the_key_is_gone(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """Between two refreshes a process's ring may still list a key another process has
    retired: the check under the directory's lock finds it gone, and nothing changes."""
    keys = tmp_path / "keys"
    store = MemoryStore()
    ring = load_or_create_keyring(keys, PLAIN)
    first = make_broker(store=store, keyring=ring, key_dir=str(keys))
    second = make_broker(store=store, keyring=ring, key_dir=str(keys))
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    second.refresh_keys()
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    assert old_kid in second.keyring.kids()  # no refresh yet
    with pytest.raises(NotFound) as gone:
        second.retire_signing_key(kit.admin(second).claims, old_kid, kit.ctx)
    _one_denial(second, gone.value)
    assert len(_events(second, "signing_key_retired")) == 1
    assert load_or_create_keyring(keys, PLAIN).kids() == [new_kid]


def test_a_retirement_that_cannot_be_audited_changes_nothing(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    from tests.core.test_audit import FlakyStore

    keys = tmp_path / "keys"
    store = FlakyStore()
    broker = make_broker(
        store=store, keyring=load_or_create_keyring(keys, PLAIN), key_dir=str(keys)
    )
    token = kit.register(broker).token
    new_kid, old_kid = broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    store.failing = True
    with pytest.raises(Unavailable):
        broker.retire_signing_key(kit.admin(broker).claims, old_kid, kit.ctx)
    store.failing = False
    assert broker.keyring.kids() == [new_kid, old_kid] and not _rejected(broker, token)
    assert load_or_create_keyring(keys, PLAIN).kids() == [new_kid, old_kid]
    assert not _events(broker, "signing_key_retired")


def test_the_trust_bundle_is_published_again_without_the_key(make_broker: Any, kit: Any) -> None:
    """Federated peers drop the key at their next bundle fetch: the bundle is published
    again, with the next sequence, holding the keys the JWKS holds."""
    broker = make_broker()
    domain = broker.config.trust_domain
    broker.publish_trust_bundle()
    new_kid, old_kid = broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    rotated = parse_bundle(broker.trust_bundle(), domain)
    assert list(rotated.keys) == [new_kid, old_kid]
    broker.retire_signing_key(kit.admin(broker).claims, old_kid, kit.ctx)
    retired = parse_bundle(broker.trust_bundle(), domain)
    assert list(retired.keys) == [new_kid] and retired.sequence > rotated.sequence


def _copy_keys(source: Path, target: Path) -> None:
    """A replica's own copy of the key directory (``cp -a``), replacing what it held."""
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True)


def test_a_process_with_its_own_copy_of_the_keys_drops_a_key_retired_elsewhere(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """Decision 252: the retirement is recorded in the store with its event, and every
    process drops the key at its next refresh, one whose key directory still holds the
    key's file too, and from its start after a restart; it never publishes the key in
    the trust bundle again."""
    ours, theirs = tmp_path / "keys-a", tmp_path / "keys-b"
    store = MemoryStore()
    first = make_broker(store=store, keyring=load_or_create_keyring(ours, PLAIN), key_dir=str(ours))
    token = kit.register(first).token
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    _copy_keys(ours, theirs)  # distributed after the rotation
    ring = load_or_create_keyring(theirs, PLAIN)
    second = make_broker(store=store, keyring=ring, key_dir=str(theirs))
    domain = first.config.trust_domain
    first.publish_trust_bundle()
    assert not _rejected(second, token) and not second.refresh_keys()
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    assert store.retired_keys() == frozenset({old_kid})
    assert second.refresh_keys() and second.keyring.kids() == [new_kid]
    assert _rejected(second, token)
    assert load_or_create_keyring(theirs, PLAIN).kids() == [new_kid, old_kid]  # file kept
    second.publish_trust_bundle()
    assert list(parse_bundle(second.trust_bundle(), domain).keys) == [new_kid]
    restarted = make_broker(
        store=store, keyring=load_or_create_keyring(theirs, PLAIN), key_dir=str(theirs)
    )
    assert restarted.keyring.kids() == [new_kid] and _rejected(restarted, token)
    assert kit.register(restarted).token  # signs with the key that replaced it


def test_a_process_whose_active_key_was_retired_elsewhere_signs_nothing(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """A replica whose copy of the key directory predates the rotation has the retired
    key as its active one: it signs nothing (503) and trusts nothing that key signed
    until its directory holds the key that replaced it, then signs with that."""
    ours, theirs = tmp_path / "keys-a", tmp_path / "keys-b"
    store = MemoryStore()
    first = make_broker(store=store, keyring=load_or_create_keyring(ours, PLAIN), key_dir=str(ours))
    _copy_keys(ours, theirs)  # before the rotation
    second = make_broker(
        store=store, keyring=load_or_create_keyring(theirs, PLAIN), key_dir=str(theirs)
    )
    token = kit.register(second).token
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    first.publish_trust_bundle()
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    published = first.trust_bundle()
    assert second.refresh_keys() and second.keyring.kids() == []
    assert not second.keyring.signs and _rejected(second, token)
    with pytest.raises(Unavailable) as stopped:
        kit.register(second)
    assert "key directory" in stopped.value.detail
    # Not ready either: a load balancer sends it nothing that would be refused.
    second.readiness.refresh().result(timeout=10)
    verdict = second.readiness.ready()
    assert not verdict.ready and "signing fails:" in verdict.reason, verdict
    assert "key directory" in verdict.reason, verdict
    assert not second.publish_trust_bundle()  # never over the newer set
    assert first.trust_bundle() == published
    _copy_keys(ours, theirs)  # the operator copies the rotated directory over
    assert second.refresh_keys() and second.keyring.kids() == [new_kid]
    assert second.keyring.signs and not _rejected(first, kit.register(second).token)
    assert second.readiness.ready().ready
