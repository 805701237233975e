"""A start with another admin secret ends the admin's tokens and the launch tokens it
made before (``Broker.started_with_admin_secret``, ``core.adminsecret``).

Each broker here is a start over one store and one clock, as a restart (or another
replica) of the same broker is.
"""

from __future__ import annotations

import pytest
from tests.core.conftest import ADMIN_SECRET, CTX, NONCE_SECRET, START, Kit

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unauthorized, Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.store import AuditQuery, Store
from tasklease.storage import MemoryStore

OTHER_SECRET = "another correct horse battery staple admin secret"


class _Starts:
    """Starts of one broker: one store, one clock, one key ring."""

    def __init__(self) -> None:
        self.store: Store = MemoryStore()
        self.clock = ManualClock(START)
        self.keyring = KeyRing.generate()

    def start(self, secret_hash: str, secret: str | None = None) -> tuple[Broker, bool]:
        broker = Broker(
            Config(admin_secret_hash=secret_hash),
            self.store,
            self.keyring,
            clock=self.clock,
            nonce_secret=NONCE_SECRET,
        )
        return broker, broker.started_with_admin_secret(secret)

    def changes(self) -> int:
        events, _ = self.store.query_audit(AuditQuery(event_type="admin_secret_changed"))
        return len(events)


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {
        "first": hash_secret(ADMIN_SECRET),
        "again": hash_secret(ADMIN_SECRET),  # the same secret, another salt
        "other": hash_secret(OTHER_SECRET),
    }


def _refused(broker: Broker, launch_token: str) -> None:
    """Registering with ``launch_token`` is refused, its one audit event naming the admin."""
    with pytest.raises(Unauthorized) as refused:
        Kit.register(broker, launch_token)
    assert refused.value.detail == "launch token: launch token revoked"
    events, _ = broker.store.query_audit(AuditQuery(event_type="registration_failed"))
    (event,) = [e for e in events if f"denial={refused.value.denial_id}" in e.detail]
    assert "launch token of admin, made by a token ended at" in event.detail


def test_the_first_start_records_the_secret_and_ends_nothing(hashes: dict[str, str]) -> None:
    starts = _Starts()
    broker, changed = starts.start(hashes["first"])
    assert not changed
    assert not starts.store.find_revocations([("agent", "admin")])
    assert starts.changes() == 0
    assert Kit.register(broker).sub  # a launch token of the admin admits an agent

    again, changed = starts.start(hashes["first"])
    assert not changed
    assert starts.changes() == 0


def test_another_secret_ends_the_admins_tokens_and_launch_tokens(
    hashes: dict[str, str],
) -> None:
    starts = _Starts()
    before, _ = starts.start(hashes["first"])
    admin = before.admin_auth(ADMIN_SECRET, CTX)
    launch_token = Kit.launch(before)
    starts.clock.advance(5)

    after, changed = starts.start(hashes["other"], OTHER_SECRET)
    assert changed
    assert starts.changes() == 1
    (entry,) = starts.store.find_revocations([("agent", "admin")])
    assert entry.revoked_at == START + 5 + after.config.clock_skew
    _refused(after, launch_token)
    with pytest.raises(Unauthorized):
        after.authenticate(Kit.bearer(admin.token), CTX)
    # The old secret signs in no more; the new one does once past the entry.
    with pytest.raises(Unauthorized):
        after.admin_auth(ADMIN_SECRET, CTX)
    with pytest.raises(Unavailable):
        after.admin_auth(OTHER_SECRET, CTX)
    starts.clock.advance(after.config.clock_skew + 1)
    fresh = after.admin_auth(OTHER_SECRET, CTX)
    assert after.authenticate(Kit.bearer(fresh.token), CTX).sub == "admin"
    assert Kit.register(after, Kit.launch(after), task_id="task-after").sub

    # Started again with it: nothing more is ended.
    _, changed = starts.start(hashes["other"])
    assert not changed
    assert starts.changes() == 1


def test_the_same_secret_hashed_again_is_not_a_change(hashes: dict[str, str]) -> None:
    starts = _Starts()
    before, _ = starts.start(hashes["first"])
    launch_token = Kit.launch(before)
    # TASKLEASE_ADMIN_SECRET is hashed afresh at each start: its plain text tells.
    after, changed = starts.start(hashes["again"], ADMIN_SECRET)
    assert not changed
    assert starts.changes() == 0
    assert Kit.register(after, launch_token).sub
    # Without the plain text only the hash can tell: another hash is another secret.
    _, changed = starts.start(hashes["again"])
    assert changed
    assert starts.changes() == 1


def test_replicas_starting_with_the_new_secret_end_the_old_one_once(
    hashes: dict[str, str],
) -> None:
    starts = _Starts()
    starts.start(hashes["first"])
    _, first = starts.start(hashes["other"])
    _, second = starts.start(hashes["other"], OTHER_SECRET)
    assert (first, second) == (True, False)
    assert starts.changes() == 1
    assert len(starts.store.find_revocations([("agent", "admin")])) == 1


def test_a_broker_without_an_admin_secret_records_nothing() -> None:
    starts = _Starts()
    _, changed = starts.start("")
    assert not changed
    with starts.store.write() as tx:
        assert tx.get_admin_credential() is None


def test_a_process_not_yet_restarted_refuses_the_old_secret(hashes: dict[str, str]) -> None:
    """A rolling restart: once one process has started with the new secret, another still
    running with the old one refuses it too (it is no longer the one on record), audited
    with the reason; it signs in nobody until restarted with the new one."""
    starts = _Starts()
    old, _ = starts.start(hashes["first"])
    assert old.admin_auth(ADMIN_SECRET, CTX).token  # before the restart: as ever
    new, changed = starts.start(hashes["other"])
    assert changed
    with pytest.raises(Unauthorized) as refused:
        old.admin_auth(ADMIN_SECRET, CTX)
    events, _ = starts.store.query_audit(AuditQuery(event_type="admin_auth_failed"))
    (event,) = [e for e in events if f"denial={refused.value.denial_id}" in e.detail]
    assert "changed by another broker process's start" in event.detail
    with pytest.raises(Unauthorized):  # the new secret is not this process's either
        old.admin_auth(OTHER_SECRET, CTX)
    starts.clock.advance(new.config.clock_skew + 1)  # past the change's entry
    assert new.admin_auth(OTHER_SECRET, CTX).token
    with pytest.raises(Unauthorized):
        old.admin_auth(ADMIN_SECRET, CTX)  # still refused, however late
    again, changed = starts.start(hashes["other"])  # the old process restarted
    assert not changed and again.admin_auth(OTHER_SECRET, CTX).token


def test_the_same_secret_under_another_salt_still_signs_in(hashes: dict[str, str]) -> None:
    """Processes started from the plain secret each hash it with a salt of their own; the
    record keeps the first hash, and the secret matches it everywhere."""
    starts = _Starts()
    first, _ = starts.start(hashes["first"], ADMIN_SECRET)
    second, changed = starts.start(hashes["again"], ADMIN_SECRET)
    assert not changed
    assert first.admin_auth(ADMIN_SECRET, CTX).token
    assert second.admin_auth(ADMIN_SECRET, CTX).token
    assert second.admin_auth(ADMIN_SECRET, CTX).token  # the record's match remembered
