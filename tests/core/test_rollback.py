# Would fail if: the last checkpoint the log key signed were not kept beside it (or were
# kept only after its commit, so that a checkpoint could be served that no anchor covers,
# or signed when it could not be kept, or lowered by a process signing an older tree), a database
# behind it or beside it (a restore, lost commits, a restore that grew again) were
# judged current, the log key signed a checkpoint that does not extend it, a database
# (or a tenant) whose name in the database was edited, or another database on the same
# log key, were taken for a new log rather than judged against the anchor the key keeps,
# or accepting a restore left the old log key signing the new branch or no trace of it in
# the log.
"""A database that went back in time (core.rollback) in process: brokers on SQLite files
with their keys in a directory (the plaintext provider), their log's anchor kept there by
the key store (``keystore.CheckpointFiles``). A restore is SQLite's online backup of the
file, copied back over it. tests/cli/test_restore.py runs the same with real broker
processes and the documented commands."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.auditformat import AuditEntry
from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import load_or_create_keyring
from tasklease.core.records import AuditQuery
from tasklease.core.rollback import DatabaseWentBack, WentBack, log_id, read_anchor
from tasklease.core.transparency import logs_went_back
from tasklease.keystore import CheckpointFiles, KeyStoreError
from tasklease.keystore.plaintext import PlaintextKeyProvider
from tasklease.rules.note import VerifierKey, parse_checkpoint, parse_note, verify_note
from tasklease.storage import open_store
from tasklease.tenancy import Tenancy

from .conftest import CTX, NONCE_SECRET, START, Kit

Factory = Callable[..., Broker]


@pytest.fixture
def open_broker(tmp_path: Path, admin_secret_hash: str) -> Iterator[Factory]:
    """``open_broker(database=..., key_dir=...)``: a broker on that SQLite file and key
    directory (by default the test's own), as the server builds one (without its start-up
    check: these tests make it)."""
    opened: list[Broker] = []

    def factory(database: Path | None = None, key_dir: Path | None = None) -> Broker:
        keys = key_dir or tmp_path / "keys"
        config = Config(
            admin_secret_hash=admin_secret_hash,
            data_dir=str(tmp_path),
            key_dir=str(keys),
            database=str(database or tmp_path / "broker.db"),
        )
        store = open_store(config.database, migrate=True)
        broker = Broker(
            config,
            store,
            load_or_create_keyring(keys, PlaintextKeyProvider()),
            # Each start a minute after the last: the checkpoint lease of the one before
            # (restored with the database) has run out.
            clock=ManualClock(START + 60 * len(opened)),
            nonce_secret=NONCE_SECRET,
            anchors=CheckpointFiles(),
        )
        opened.append(broker)
        return broker

    yield factory
    for broker in opened:
        broker.audit.close()
        broker.store.close()


def _grow(broker: Broker, n: int, what: str = "event") -> None:
    for i in range(n):
        broker.kernel.record(AuditEntry("test_event", detail=f"{what} {i}"))


def _backup(database: Path, into: Path) -> Path:
    """A consistent copy of a live SQLite database (what docs/operations.md asks for)."""
    source, copy = sqlite3.connect(database), sqlite3.connect(into)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return into


def _restore(backup: Path, database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(backup.read_bytes())


def _signed_then_restored(
    open_broker: Factory, tmp_path: Path, kept: int, lost: int, what: str = "after the backup"
) -> Any:
    """A broker's log of ``kept`` events signed and backed up, then ``lost`` more signed,
    the broker closed and the backup put back: the last checkpoint signed."""
    database = tmp_path / "broker.db"
    broker = open_broker()
    _grow(broker, kept)
    broker.transparency.sign_if_due(force=True)
    backup = _backup(database, tmp_path / "backup.db")
    _grow(broker, lost, what)
    signed = broker.transparency.sign_if_due(force=True)
    broker.audit.close()
    broker.store.close()
    _restore(backup, database)
    return signed


def _tenant_signed_then_restored(
    open_broker: Factory, tmp_path: Path, what: str = "revocations made after the backup"
) -> None:
    """Tenant acme's log signed empty and backed up, then three events signed in it, the
    brokers closed and the backup put back."""
    database = tmp_path / "broker.db"
    broker = open_broker()
    tenancy = Tenancy(broker)
    tenancy.create(Kit.admin(broker).claims, name="acme", trust_domain="acme.example", ctx=CTX)
    acme = tenancy.broker("acme")
    assert acme is not None
    acme.transparency.sign_if_due(force=True)
    backup = _backup(database, tmp_path / "backup.db")
    _grow(acme, 3, what)  # only the tenant's log grows
    acme.transparency.sign_if_due(force=True)
    tenancy.close()
    broker.audit.close()
    broker.store.close()
    _restore(backup, database)


def _edit(database: Path, statement: str) -> None:
    """What whoever can write the database file (and nothing else) may do."""
    conn = sqlite3.connect(database)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _root(note: str) -> bytes:
    return parse_checkpoint(parse_note(note).text).root


def _anchors(key_dir: Path) -> list[Path]:
    return sorted((key_dir / "log").glob("checkpoint-*"))


def _went_back(broker: Broker) -> list[WentBack]:
    return logs_went_back(broker.store, CheckpointFiles(), broker.config.key_dir)


def test_the_last_checkpoint_signed_is_kept_beside_the_log_key(
    open_broker: Factory, tmp_path: Path
) -> None:
    broker = open_broker()
    _grow(broker, 3)
    signed = broker.transparency.sign_if_due(force=True)
    assert signed is not None and signed.size == 3
    [anchor] = _anchors(tmp_path / "keys")
    assert anchor.stat().st_mode & 0o777 == 0o600
    assert anchor.parent.stat().st_mode & 0o777 == 0o700
    assert anchor.read_text() == signed.note  # the signed note, as the database holds it
    keys = [VerifierKey.parse(k.vkey) for k in broker.transparency.log_keys()]
    assert verify_note(parse_note(anchor.read_text()), keys)
    _grow(broker, 2)
    assert broker.transparency.sign_if_due(force=True) is not None
    assert read_anchor(anchor.read_text()).size == 5
    assert _went_back(broker) == []


def test_a_restored_database_is_behind_its_anchor(open_broker: Factory, tmp_path: Path) -> None:
    _signed_then_restored(open_broker, tmp_path, 4, 3)
    restored = open_broker()
    [found] = _went_back(restored)
    assert (found.tenant, found.size, found.anchor.size, found.forked) == ("default", 4, 7, False)
    error = DatabaseWentBack([found])
    text = str(error)
    assert "the audit log of tenant default is behind the last checkpoint" in text
    assert "4 events" in text and "7 events" in text and found.where in text
    assert "tasklease db accept-restore" in text and "docs/operations.md" in text


def test_a_restore_that_grew_again_is_a_fork_and_its_key_never_signs_it(
    open_broker: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _signed_then_restored(open_broker, tmp_path, 2, 3, "lost")
    # A process that took the restored database without the start-up check: it appends
    # other events as far as, and past, the size its key signed.
    restored = open_broker()
    _grow(restored, 5, "other")
    [found] = _went_back(restored)
    assert found.forked and (found.size, found.anchor.size) == (7, 5)
    before = restored.store.get_checkpoint("signed")
    with caplog.at_level(logging.ERROR, logger="tasklease.audit"):
        assert restored.transparency.sign_if_due(force=True) is None
    assert restored.store.get_checkpoint("signed") == before  # nothing signed
    assert restored.transparency.went_back == found
    assert "the database went back in time" in caplog.text
    assert "holds other events than the last checkpoint" in caplog.text
    assert read_anchor(_anchors(tmp_path / "keys")[0].read_text()).size == 5  # kept


def test_accepting_records_the_rollback_and_a_new_log_key_signs_from_there(
    open_broker: Factory, tmp_path: Path
) -> None:
    database = tmp_path / "broker.db"
    broker = open_broker()
    _grow(broker, 2)
    broker.transparency.sign_if_due(force=True)
    backup = _backup(database, tmp_path / "backup.db")
    _grow(broker, 3)
    signed = broker.transparency.sign_if_due(force=True)
    assert signed is not None
    old_vkey = broker.transparency.log_keys()[0].vkey
    broker.audit.close()
    broker.store.close()
    _restore(backup, database)
    restored = open_broker()
    accepted = restored.accept_restore("the test", CTX)
    assert accepted is not None and accepted.event is not None
    event = accepted.event
    assert event.event_type == "audit_rollback_accepted"
    found = accepted.found
    for fact in ("2 events", "5 events", "accepted by the test", old_vkey, accepted.new_vkey):
        assert fact in event.detail
    assert found.anchor.root.hex() != found.root.hex()
    assert accepted.previous_vkey == old_vkey != accepted.new_vkey
    # The new key signs; the old one stays published (its checkpoints still verify).
    vkeys = [k.vkey for k in restored.transparency.log_keys()]
    assert vkeys == [accepted.new_vkey, old_vkey]
    # The anchor is now the log as it is, the event included, signed by the new key.
    [anchor] = _anchors(tmp_path / "keys")
    kept = read_anchor(anchor.read_text())
    tree = restored.store.audit_tree()
    assert tree is not None and (kept.size, kept.root) == (tree.size, tree.root) == (3, tree.root)
    assert verify_note(parse_note(anchor.read_text()), [VerifierKey.parse(accepted.new_vkey)])
    assert _went_back(restored) == []
    assert restored.accept_restore("again", CTX) is None  # nothing left to accept
    _grow(restored, 2)
    next_one = restored.transparency.sign_if_due(force=True)
    assert next_one is not None and next_one.size == 5
    assert verify_note(parse_note(next_one.note), [VerifierKey.parse(accepted.new_vkey)])


def test_another_database_on_the_same_log_key_is_refused_until_accepted(
    open_broker: Factory, tmp_path: Path
) -> None:
    # From the key directory, another database and this one restored and renamed look
    # the same: the log key anchors one log, and signs another only once accepted.
    first = open_broker()
    _grow(first, 5)
    assert first.transparency.sign_if_due(force=True) is not None
    second = open_broker(database=tmp_path / "other.db")  # a new database, same keys
    [found] = _went_back(second)
    assert found.other_log and (found.size, found.anchor.size) == (0, 5)
    assert "is not the one its log key signs" in DatabaseWentBack([found]).args[0]
    _grow(second, 1)
    assert second.transparency.sign_if_due(force=True) is None
    [kept] = _anchors(tmp_path / "keys")  # the first database's, untouched
    assert read_anchor(kept.read_text()).size == 5
    accepted = second.accept_restore("the test", CTX)
    assert accepted is not None and accepted.found.other_log
    assert _went_back(second) == []
    _grow(second, 1)
    assert second.transparency.sign_if_due(force=True) is not None
    # The first database's anchor is set aside, not lost; the key now anchors the second,
    # so the first is the one refused.
    [retired] = sorted((tmp_path / "keys" / "log").glob("retired-checkpoint-*"))
    assert retired.name == f"retired-{kept.name}"
    [now] = _anchors(tmp_path / "keys")
    assert now.name != kept.name
    [back] = _went_back(first)
    assert back.other_log and back.anchor.size == 3


def test_a_restore_renamed_in_the_database_is_still_refused_and_never_signed(
    open_broker: Factory, tmp_path: Path
) -> None:
    # Whoever can write the database restores an old copy and edits the one value the
    # anchor's name was read from (schema_version): still a database that went back.
    database = tmp_path / "broker.db"
    seven = _signed_then_restored(open_broker, tmp_path, 4, 3)
    assert seven is not None and seven.size == 7
    _edit(database, "UPDATE schema_version SET applied_at = applied_at + 1 WHERE version = 1")
    restored = open_broker()
    [found] = _went_back(restored)
    assert found.other_log and (found.tenant, found.size, found.anchor.size) == ("default", 4, 7)
    assert found.anchor.root == _root(seven.note)
    _grow(restored, 5, "another history")  # as far as, and past, what the key signed
    assert restored.transparency.sign_if_due(force=True) is None
    assert restored.transparency.went_back == _went_back(restored)[0]
    [anchor] = _anchors(tmp_path / "keys")
    assert anchor.read_text() == seven.note  # the key signed nothing since
    # Accepting it is the way on, as for any restore: a new key signs from there.
    accepted = restored.accept_restore("the test", CTX)
    assert accepted is not None and accepted.previous_vkey != accepted.new_vkey
    assert _went_back(restored) == []
    signed = restored.transparency.sign_if_due(force=True)
    assert signed is not None
    assert verify_note(parse_note(signed.note), [VerifierKey.parse(accepted.new_vkey)])


def test_a_database_that_lost_its_name_is_judged_against_the_anchor(
    open_broker: Factory, tmp_path: Path
) -> None:
    database = tmp_path / "broker.db"
    _signed_then_restored(open_broker, tmp_path, 3, 2)
    _edit(database, "DELETE FROM schema_version WHERE version = 1")
    restored = open_broker()
    [found] = _went_back(restored)
    assert found.other_log and (found.size, found.anchor.size) == (3, 5)
    _grow(restored, 1)
    assert restored.transparency.sign_if_due(force=True) is None


def test_a_tenant_log_renamed_in_the_database_is_still_refused(
    open_broker: Factory, tmp_path: Path
) -> None:
    # A tenant's log is named by when the tenant was made, also read from the database.
    database = tmp_path / "broker.db"
    _tenant_signed_then_restored(open_broker, tmp_path)
    _edit(database, "UPDATE tenants SET created_at = created_at + 1 WHERE name = 'acme'")
    restored = open_broker()
    [found] = _went_back(restored)
    assert found.tenant == "acme" and found.other_log
    later = Tenancy(restored)
    with pytest.raises(Unavailable):
        later.broker("acme", request_id="req-renamed")
    later.close()


def test_a_backup_taken_before_the_first_event_is_known_for_what_it_is(
    open_broker: Factory, tmp_path: Path
) -> None:
    database = tmp_path / "broker.db"
    broker = open_broker()
    backup = _backup(database, tmp_path / "backup.db")  # an empty log
    _grow(broker, 2)
    broker.transparency.sign_if_due(force=True)
    broker.audit.close()
    broker.store.close()
    _restore(backup, database)
    [found] = _went_back(open_broker())
    assert (found.size, found.anchor.size) == (0, 2)


def test_a_process_signing_an_older_tree_never_lowers_the_anchor(
    open_broker: Factory, tmp_path: Path
) -> None:
    broker = open_broker()
    _grow(broker, 2)
    older = broker.transparency.sign_if_due(force=True)
    _grow(broker, 2)
    newer = broker.transparency.sign_if_due(force=True)
    assert older is not None and newer is not None
    files = CheckpointFiles()
    log = log_id(broker.store.database_id(), "default", None)
    # Another process sharing the directory keeps its older checkpoint late.
    files.advance(tmp_path / "keys" / "log", log, older.note)
    assert files.read(tmp_path / "keys" / "log", log) == newer.note


class _Watched(CheckpointFiles):
    """The key store's anchors, noting what the database served when each was kept, or
    failing to keep any (``broken``)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.served_when_kept: list[tuple[int, int]] = []  # (anchor size, served size)
        self.broken = False

    def advance(self, directory: Path, log_id: bytes, note: str) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        served = self.broker.store.get_checkpoint("signed")
        self.served_when_kept.append((read_anchor(note).size, served.size if served else 0))
        super().advance(directory, log_id, note)


def test_a_checkpoint_is_anchored_before_it_is_served(open_broker: Factory) -> None:
    broker = open_broker()
    watched = broker.transparency.anchors = _Watched(broker)
    for grown in (3, 2):
        _grow(broker, grown)
        assert broker.transparency.sign_if_due(force=True) is not None
    # Each anchor was kept while the database still served the checkpoint before it: a
    # broker killed between the two leaves an anchor ahead of what was served.
    assert watched.served_when_kept == [(3, 0), (5, 3)]
    assert broker.transparency.checkpoint("signed").size == 5


def test_nothing_is_signed_when_the_anchor_cannot_be_kept(
    open_broker: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = open_broker()
    watched = broker.transparency.anchors = _Watched(broker)
    _grow(broker, 2)
    assert broker.transparency.sign_if_due(force=True) is not None
    watched.broken = True
    _grow(broker, 2)
    with caplog.at_level(logging.ERROR, logger="tasklease.audit"):
        assert broker.transparency.sign_if_due(force=True) is None
    assert "their anchor could not be kept" in caplog.text
    assert broker.transparency.checkpoint("signed").size == 2  # nothing served past it
    assert read_anchor(_anchors(tmp_path / "keys")[0].read_text()).size == 2
    watched.broken = False  # the disk has room again
    signed = broker.transparency.sign_if_due(force=True)
    assert signed is not None and signed.size == 4
    assert read_anchor(_anchors(tmp_path / "keys")[0].read_text()).size == 4


def test_each_tenant_is_judged_against_its_own_anchor(open_broker: Factory, tmp_path: Path) -> None:
    _tenant_signed_then_restored(open_broker, tmp_path, "the tenant's own")
    assert (tmp_path / "keys" / "tenants" / "acme" / "log").is_dir()
    [found] = _went_back(open_broker())
    assert found.tenant == "acme" and str(tmp_path / "keys" / "tenants" / "acme") in found.where


def test_an_anchor_others_can_write_is_refused_not_trusted(
    open_broker: Factory, tmp_path: Path
) -> None:
    broker = open_broker()
    _grow(broker, 1)
    broker.transparency.sign_if_due(force=True)
    [anchor] = _anchors(tmp_path / "keys")
    anchor.chmod(0o666)
    with pytest.raises(KeyStoreError, match="accessible by group or others"):
        _went_back(broker)
    # ...and the signer signs nothing meanwhile.
    _grow(broker, 1)
    assert broker.transparency.sign_if_due(force=True) is None


def test_a_tenant_whose_anchor_arrives_after_start_is_not_served_on_a_restore(
    open_broker: Factory, tmp_path: Path
) -> None:
    # The tenant's key directory was left out of the restore (decision 152: copying it in
    # serves the tenant without a restart): the start-up check finds no anchor for it, so
    # the tenant's log must be judged when its broker is opened, not only at start.
    _tenant_signed_then_restored(open_broker, tmp_path)
    keys = tmp_path / "keys" / "tenants" / "acme"
    aside = tmp_path / "acme-keys"
    keys.rename(aside)
    restored = open_broker()
    assert _went_back(restored) == []  # what the server checks at start finds nothing
    aside.rename(keys)  # ...and the tenant's keys are copied in afterwards
    later = Tenancy(restored)
    with pytest.raises(Unavailable) as refused:
        later.broker("acme", request_id="req-late")
    denial_id = refused.value.denial_id
    assert denial_id
    [event] = restored.store.query_audit(AuditQuery(event_type="tenant_unavailable"))[0]
    assert f"denial={denial_id}" in event.detail and "went back" in event.detail
    later.close()
    # The operator's explicit acceptance opens it (and records it in the tenant's log).
    accepting = Tenancy(restored, refuse_went_back=False)
    opened = accepting.broker("acme")
    assert opened is not None
    accepted = opened.accept_restore("the test", CTX)
    assert accepted is not None and accepted.found.tenant == "acme"
    accepting.close()
    assert Tenancy(restored).broker("acme") is not None


def test_a_tenant_made_again_over_its_old_log_key_is_refused_until_accepted(
    open_broker: Factory, tmp_path: Path
) -> None:
    # A restore to before the tenant was made, then the tenant made again: its key
    # directory (kept) holds the log key and the anchor of the tenant's first log, and
    # that key must not sign the new log from scratch.
    database = tmp_path / "broker.db"
    broker = open_broker()
    backup = _backup(database, tmp_path / "backup.db")
    tenancy = Tenancy(broker)
    tenancy.create(Kit.admin(broker).claims, name="acme", trust_domain="acme.example", ctx=CTX)
    acme = tenancy.broker("acme")
    assert acme is not None
    _grow(acme, 2)
    acme.transparency.sign_if_due(force=True)
    tenancy.close()
    broker.audit.close()
    broker.store.close()
    _restore(backup, database)
    restored = open_broker()
    assert _went_back(restored) == []  # no tenant acme in the database
    again = Tenancy(restored)
    with pytest.raises(Unavailable):
        again.create(Kit.admin(restored).claims, name="acme", trust_domain="acme.example", ctx=CTX)
    again.close()
    [found] = _went_back(restored)
    assert found.tenant == "acme" and found.other_log
    accepting = Tenancy(restored, refuse_went_back=False)
    opened = accepting.broker("acme")
    assert opened is not None and opened.accept_restore("the test", CTX) is not None
    accepting.close()
    assert _went_back(restored) == []
    assert Tenancy(restored).broker("acme") is not None
