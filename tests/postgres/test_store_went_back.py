"""A database that goes back in time under running brokers (a failover to a standby that
missed the last commits, a restore) hands revocation numbers out again, and loses the
last revocations and key retirements. A broker that had
read past them reloads its revocations instead of skipping the new ones for good, and the
feed answers a reader past them with a snapshot and a smaller cursor; what it still holds
and the store lost, it writes back (decision 259). Shown on PostgreSQL and SQLite, the
going back done by hand: the last revocations deleted, the tenant's counter set back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing, load_or_create_keyring, rotate_key
from tasklease.core.records import AuditQuery, RevocationRecord
from tasklease.keystore import PlaintextKeyProvider
from tasklease.storage import open_store

START = 1_800_000_000.0


def _rewind(kind: str, url: str, keep: int) -> None:
    """Put the database back to when its last revocation was ``keep``."""
    statements = (
        f"DELETE FROM revocations WHERE seq > {keep}",
        f"UPDATE revocation_seqs SET seq = {keep}",
    )
    if kind == "sqlite":
        with sqlite3.connect(url) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "shared.db")
    return "postgres", str(request.getfixturevalue("pg_url"))


def _revoke(
    broker: Broker, target: str, *, level: str = "token", expires_at: float = START + 3600
) -> None:
    """A revocation, committed as the broker commits one."""
    record = RevocationRecord(level, target, int(START), expires_at)

    def unit(tx: object) -> list[object]:
        tx.insert_revocation(record)  # type: ignore[attr-defined]
        return []

    broker.kernel.commit(unit)  # type: ignore[arg-type]
    broker.kernel.apply_revocations([record])  # enforced here at once, as a service does


def test_a_broker_reloads_when_the_store_went_back(database: tuple[str, str]) -> None:
    kind, url = database
    ring, clock = KeyRing.generate(), ManualClock(START)
    make: Callable[[], Broker] = lambda: Broker(  # noqa: E731
        Config(), open_store(url), ring, clock=clock, nonce_secret=b"n" * 32
    )
    writer, reader = make(), make()
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-2")
    _revoke(writer, "jti-3")
    reader.refresh_revocations()
    assert reader.kernel.revocations.last_seq == 3
    _rewind(kind, url, keep=1)  # jti-2 and jti-3 are lost with the commits
    _revoke(writer, "jti-4-after")  # numbered 2 again
    _revoke(writer, "jti-5-after")  # and 3
    reader.refresh_revocations()
    index = reader.kernel.revocations
    assert index.last_seq == 3
    for jti in ("jti-4-after", "jti-5-after", "jti-2", "jti-3"):  # what it held stays
        assert ("token", jti) in {(lv, t) for lv, t in _held(index)}, jti
    _revoke(writer, "jti-6-after")  # numbered 4: read on as usual
    assert reader.refresh_revocations() == 1
    page = reader.revocation_feed(3)
    assert (page.cursor, [r.target for r in page.records]) == (4, ["jti-6-after"])
    # A feed reader past the store's last number gets a snapshot and a smaller cursor.
    _rewind(kind, url, keep=1)
    page = reader.revocation_feed(4)
    assert (page.cursor, [r.target for r in page.records]) == (1, ["jti-1"])
    assert page.restarted
    for broker in (writer, reader):
        broker.store.close()


def _brokers(url: str) -> tuple[Broker, Broker]:
    ring, clock = KeyRing.generate(), ManualClock(START)
    return tuple(  # type: ignore[return-value]
        Broker(Config(), open_store(url), ring, clock=clock, nonce_secret=b"n" * 32)
        for _ in range(2)
    )


def test_a_feed_reader_renumbered_past_gets_a_snapshot(database: tuple[str, str]) -> None:
    """The store went back, then numbered past the reader's cursor again (every renewal
    writes a revocation: a busy store does so within seconds). The reader's cursor names
    the entry it read last; that entry is not the one at its seq any more, so the answer
    is a snapshot that holds the entries numbered again below the cursor."""
    kind, url = database
    writer, reader = _brokers(url)
    for n in range(1, 11):
        _revoke(writer, f"jti-{n}")
    page = reader.revocation_feed(None)
    assert (page.cursor, len(page.records)) == (10, 10)
    _rewind(kind, url, keep=7)
    _revoke(writer, "spiffe://d/agent/o/t/lost", level="agent")  # 8 again
    for n in (9, 10, 11):
        _revoke(writer, f"after-{n}")
    again = reader.revocation_feed(page.cursor, page.anchor)
    assert again.restarted
    targets = [r.target for r in again.records]
    assert "spiffe://d/agent/o/t/lost" in targets and "after-9" in targets
    assert again.cursor == 11
    # Read on from the new cursor: nothing is new, and nothing is answered twice.
    assert reader.revocation_feed(again.cursor, again.anchor).records == []
    # A cursor that still names its entry reads on as before.
    _revoke(writer, "after-12")
    on = reader.revocation_feed(again.cursor, again.anchor)
    assert (on.restarted, [r.target for r in on.records]) == (False, ["after-12"])
    for broker in (writer, reader):
        broker.store.close()


def test_an_anchor_written_again_above_the_cursor_is_not_taken(
    database: tuple[str, str],
) -> None:
    """After the store went back, the entry a replica read last is written again (an
    operator revoking it once more, a federated feed re-writing it), under a number above
    the replica's: the entries numbered between are not skipped, the index is reloaded."""
    kind, url = database
    writer, reader = _brokers(url)
    for n in range(1, 11):
        _revoke(writer, f"jti-{n}")
    reader.refresh_revocations()
    assert reader.kernel.revocations.last_seq == 10
    _rewind(kind, url, keep=7)
    _revoke(writer, "spiffe://d/agent/o/t/lost", level="agent")  # 8
    _revoke(writer, "after-9")
    _revoke(writer, "after-10")
    _revoke(writer, "jti-10")  # 11: the anchor, written again
    reader.refresh_revocations()
    held = _held(reader.kernel.revocations)
    assert ("agent", "spiffe://d/agent/o/t/lost") in held
    assert {("token", "after-9"), ("token", "after-10")} <= held
    assert reader.revocation_reloads == 1
    for broker in (writer, reader):
        broker.store.close()


def test_the_anchor_holds_after_a_reload_whose_last_entry_expired(
    database: tuple[str, str],
) -> None:
    """A reload continues from the last entry it loaded, and that entry is the anchor: the
    check never lapses to comparing numbers alone (which a store that went back and numbered
    past passes)."""
    kind, url = database
    writer, reader = _brokers(url)
    for n in range(1, 4):
        _revoke(writer, f"jti-{n}")
    reader.refresh_revocations()
    _rewind(kind, url, keep=1)
    _revoke(writer, "after-2")
    _revoke(writer, "expired-3", expires_at=START - 60)  # the store's last: expired
    reader.refresh_revocations()  # reloads
    reader.refresh_revocations()  # reads to 3 again
    _rewind(kind, url, keep=2)  # loses expired-3
    _revoke(writer, "spiffe://d/agent/o/t/lost", level="agent")  # 3 again
    _revoke(writer, "after-4")
    reader.refresh_revocations()
    assert ("agent", "spiffe://d/agent/o/t/lost") in _held(reader.kernel.revocations)
    assert reader.revocation_reloads == 2
    for broker in (writer, reader):
        broker.store.close()


def _restored(broker: Broker) -> list[str]:
    events, _ = broker.store.query_audit(AuditQuery(event_type="revocations_restored"))
    return [event.detail for event in events]


def test_what_the_store_lost_is_written_back_once_by_the_replicas_that_hold_it(
    database: tuple[str, str],
) -> None:
    """The last three revocations are lost with the commits; both replicas had read them.
    The first to notice writes them back, with one event; the other finds them stored
    and writes nothing; a replica started afterwards enforces them."""
    kind, url = database
    writer, reader = _brokers(url)
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-2")
    _revoke(writer, "spiffe://d/agent/o/t/lost", level="agent")
    _revoke(writer, "a-task", level="task", expires_at=START + 7200)
    reader.refresh_revocations()
    writer.refresh_revocations()
    assert reader.write_back_revocations() == 0  # nothing lost: no store access
    _rewind(kind, url, keep=1)  # jti-2, the agent and the task are lost
    _revoke(writer, "after-2")  # numbered 2 again
    reader.refresh_revocations()  # notices, reloads, notes what the store lacks
    assert reader.revocation_reloads == 1
    assert [r.target for r in reader._freshness.lost()] == [  # noqa: SLF001
        "jti-2",
        "spiffe://d/agent/o/t/lost",
        "a-task",
    ]
    assert reader.write_back_revocations() == 3
    assert _restored(reader) == [
        "3 revocation entries the database lost (it went back in time) written again from "
        "this process's index: token 1, agent 1, task 1"
    ]
    stored = {(r.level, r.target): r for r in reader.store.load_revocations(START)}
    assert stored[("task", "a-task")].expires_at == START + 7200
    assert stored[("task", "a-task")].revoked_at == int(START)
    assert {("token", "jti-2"), ("agent", "spiffe://d/agent/o/t/lost")} <= set(stored)
    assert reader.write_back_revocations() == 0  # written: forgotten
    # The other replica held them too: it notices, and finds them stored again.
    writer.refresh_revocations()
    assert writer.write_back_revocations() == 0
    assert len(_restored(writer)) == 1
    # A replica started now loads them from the store.
    late = _brokers(url)[0]
    assert {("token", "jti-2"), ("agent", "spiffe://d/agent/o/t/lost")} <= _held(
        late.kernel.revocations
    )
    for broker in (writer, reader, late):
        broker.store.close()


def test_a_write_back_that_fails_is_made_again(
    database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store cannot be written when the lost entries are written back: they stay
    noted, and the next round writes them."""
    kind, url = database
    writer, reader = _brokers(url)
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-2")
    reader.refresh_revocations()
    _rewind(kind, url, keep=1)
    _revoke(writer, "after-2")
    reader.refresh_revocations()
    _with_storage_down(monkeypatch, reader.kernel, "commit", reader.write_back_revocations)
    assert [r.target for r in reader._freshness.lost()] == ["jti-2"]  # noqa: SLF001
    assert reader.write_back_revocations() == 1
    assert ("token", "jti-2") in {(r.level, r.target) for r in reader.store.load_revocations(START)}
    for broker in (writer, reader):
        broker.store.close()


def test_an_entry_past_its_expiry_is_not_written_back(database: tuple[str, str]) -> None:
    """Lost, but no token it could match is valid any more: nothing to write, no event.
    One within the clock skew of its end is not even noted (another replica, its clock
    ahead, may have pruned it)."""
    kind, url = database
    writer, reader = _brokers(url)
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-2", expires_at=START + 90)
    _revoke(writer, "jti-3", expires_at=START + 20)
    reader.refresh_revocations()
    _rewind(kind, url, keep=1)
    _revoke(writer, "after-2")
    reader.refresh_revocations()
    assert [r.target for r in reader._freshness.lost()] == ["jti-2"]  # noqa: SLF001
    reader.kernel.clock.advance(120)  # type: ignore[attr-defined]
    assert reader.write_back_revocations() == 0
    assert _restored(reader) == []
    assert ("token", "jti-2") not in {
        (r.level, r.target) for r in reader.store.load_revocations(START)
    }
    for broker in (writer, reader):
        broker.store.close()


def test_a_revocation_lost_before_its_replica_read_it_back_is_written_back(
    database: tuple[str, str],
) -> None:
    """The database loses a revocation in the moment between its commit and its replica's
    next refresh: the replica never read it there, so no reload shows the loss, and the
    entries numbered again read on as new. The refresh that follows the commit finds it
    missing, and it is written back."""
    kind, url = database
    writer, other = _brokers(url)
    writer.refresh_revocations()  # following, as the server does from its start
    _revoke(writer, "spiffe://d/agent/o/t/unread", level="agent")
    _rewind(kind, url, keep=0)  # lost before the writer read it back
    _revoke(other, "after-1")  # numbered 1 again
    assert writer.refresh_revocations() == 1  # after-1, read on as new: no reload
    assert writer.revocation_reloads == 0
    assert [r.target for r in writer._freshness.lost()] == [  # noqa: SLF001
        "spiffe://d/agent/o/t/unread"
    ]
    assert writer.write_back_revocations() == 1
    stored = {(r.level, r.target) for r in writer.store.load_revocations(START)}
    assert ("agent", "spiffe://d/agent/o/t/unread") in stored
    for broker in (writer, other):
        broker.store.close()


def test_a_lookup_that_fails_is_made_again_at_the_next_refresh(
    database: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store cannot be read when a refresh asks it about a revocation committed here
    and not read back: the refresh fails, the revocation stays followed, and the next
    refresh asks again and notes it lost."""
    kind, url = database
    writer, other = _brokers(url)
    writer.refresh_revocations()
    _revoke(writer, "spiffe://d/agent/o/t/unread", level="agent")
    _rewind(kind, url, keep=0)
    _revoke(other, "after-1")
    _with_storage_down(monkeypatch, writer.store, "find_revocations", writer.refresh_revocations)
    assert writer._freshness.lost() == []  # noqa: SLF001
    assert writer.refresh_revocations() == 0
    assert [r.target for r in writer._freshness.lost()] == [  # noqa: SLF001
        "spiffe://d/agent/o/t/unread"
    ]
    for broker in (writer, other):
        broker.store.close()


def test_a_revocation_committed_again_unchanged_is_not_taken_for_lost(
    database: tuple[str, str],
) -> None:
    """Revoking what is revoked already writes nothing and gets no new number, so no
    refresh reads it back: the store, asked, holds it, and nothing is noted lost."""
    _kind, url = database
    writer, _other = _brokers(url)
    writer.refresh_revocations()
    _revoke(writer, "jti-1")
    assert writer.refresh_revocations() == 1  # read back
    _revoke(writer, "jti-1")  # the same entry: unchanged in the store
    _revoke(writer, "jti-2")
    assert writer.refresh_revocations() == 1  # jti-2 only
    assert writer._freshness.lost() == []  # noqa: SLF001
    assert writer.write_back_revocations() == 0
    for broker in (writer, _other):
        broker.store.close()


def test_a_key_retirement_the_store_lost_is_recorded_again(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """A key is retired (recorded in the store by the process that retired it), both
    replicas drop it, then the database loses the record. The first replica to refresh
    records it again, with one event; the other finds it recorded; a replica started
    afterwards, its key directory still holding the key, does not trust it."""
    kind, url = database
    plain = PlaintextKeyProvider()
    keys = tmp_path / "keys"
    old_kid = load_or_create_keyring(keys, plain).active_kid
    new_kid = rotate_key(keys, plain)

    def replica() -> Broker:
        config = Config(key_dir=str(keys))
        ring = load_or_create_keyring(keys, plain)
        return Broker(
            config, open_store(url), ring, clock=ManualClock(START), nonce_secret=b"n" * 32
        )

    first, second = replica(), replica()
    assert first.keyring.kids() == [new_kid, old_kid]
    with first.store.write() as tx:  # what the retiring process records
        tx.put_retired_key(old_kid, START)
    assert first.refresh_keys() and second.refresh_keys()
    assert first.keyring.kids() == second.keyring.kids() == [new_kid]
    statement = f"DELETE FROM retired_signing_keys WHERE kid = '{old_kid}'"
    if kind == "sqlite":
        with sqlite3.connect(url) as conn:
            conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)
    assert first.store.retired_keys() == frozenset()
    first.refresh_keys()
    assert first.store.retired_keys() == frozenset({old_kid})
    second.refresh_keys()
    events, _ = first.store.query_audit(AuditQuery(event_type="signing_key_retirements_restored"))
    assert [e.detail for e in events] == [
        "1 signing key retirements the database lost (it went back in time) recorded "
        f"again: kid={old_kid}"
    ]
    late = replica()
    assert late.keyring.kids() == [new_kid]
    for broker in (first, second, late):
        broker.store.close()


def _with_storage_down(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, call: Callable[[], object]
) -> None:
    """``call()`` while ``owner.name`` raises ``Unavailable``, as a storage outage makes
    it; ``call`` must raise it too."""

    def down(*_args: object) -> NoReturn:
        raise Unavailable("storage is down")

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, down)
        with pytest.raises(Unavailable):
            call()


def _held(index: object) -> set[tuple[str, str]]:
    levels: dict[str, dict[str, object]] = index._levels  # type: ignore[attr-defined]
    return {(level, target) for level, entries in levels.items() for target in entries}
