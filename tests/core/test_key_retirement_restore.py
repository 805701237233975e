# Would fail if: a database restored from a backup taken before a key's retirement, under
# stopped processes, had them trust the retired key again (its file still in a replica's
# own copy of the key directory), or if the retirement was not recorded again in the
# database, with its event, so that a process started later trusts it too.
"""A restore onto stopped processes loses the retirement rows of the database (decision
260 covers only processes running while it goes back). Every key directory keeps the
kids retired that its processes learnt, so a process started on a database that lost
them trusts none of them and records them again."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tasklease.core.keys import load_keyring, load_or_create_keyring
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected
from tasklease.keystore import PlaintextKeyProvider
from tasklease.storage import SQLiteStore

PLAIN = PlaintextKeyProvider()


def _rejected(broker: Any, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return True
    return False


def _backup(db: Path, into: Path) -> None:
    """``sqlite3 db ".backup into"``, as docs/operations.md says."""
    with sqlite3.connect(db) as source, sqlite3.connect(into) as target:
        source.backup(target)
    source.close()
    target.close()


def _restore(backup: Path, db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    shutil.copyfile(backup, db)


def _restored_events(broker: Any) -> list[str]:
    events, _ = broker.store.query_audit(
        AuditQuery(event_type="signing_key_retirements_restored", limit=100)
    )
    return [e.detail for e in events]


def test_a_restore_under_stopped_processes_does_not_bring_a_retired_key_back(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    db, backup = tmp_path / "data" / "tasklease.db", tmp_path / "backup.db"
    ours, theirs, late = tmp_path / "keys-a", tmp_path / "keys-b", tmp_path / "keys-c"

    def process(keys: Path) -> Any:
        return make_broker(
            store=SQLiteStore(db), keyring=load_keyring(keys, PLAIN), key_dir=str(keys)
        )

    load_or_create_keyring(ours, PLAIN)
    first = process(ours)
    token = kit.register(first).token  # signed by the key about to be retired
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    shutil.copytree(ours, theirs, symlinks=True)  # a replica's own copy (cp -a)
    shutil.copytree(ours, late, symlinks=True)  # one stopped all along
    second = process(theirs)
    _backup(db, backup)  # taken before the retirement
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    assert second.refresh_keys() and _rejected(second, token)
    for broker in (first, second):
        broker.store.close()

    _restore(backup, db)  # under the stopped processes: nothing running remembers
    again = process(theirs)  # its key directory still holds the retired key's file
    assert again.store.retired_keys() == frozenset()
    assert again.keyring.kids() == [new_kid], "a replica trusts the retired key again"
    assert _rejected(again, token)
    again.refresh_keys()  # its housekeeping round, within a second of the start
    assert again.store.retired_keys() == frozenset({old_kid})
    assert _restored_events(again) == [
        "1 signing key retirements the database lost (it went back in time) recorded "
        f"again: kid={old_kid}"
    ]
    stopped_all_along = process(late)  # never learnt of the retirement: the store says
    assert stopped_all_along.keyring.kids() == [new_kid] and _rejected(stopped_all_along, token)
    for broker in (again, stopped_all_along):
        broker.store.close()


def test_the_process_that_retired_a_key_records_it_again_after_a_restore(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """The retiring process's directory no longer holds the key; it still knows it was
    retired, and records it again for the replicas that hold a copy."""
    db, backup = tmp_path / "data" / "tasklease.db", tmp_path / "backup.db"
    ours, theirs = tmp_path / "keys-a", tmp_path / "keys-b"

    def process(keys: Path) -> Any:
        return make_broker(
            store=SQLiteStore(db), keyring=load_keyring(keys, PLAIN), key_dir=str(keys)
        )

    load_or_create_keyring(ours, PLAIN)
    first = process(ours)
    token = kit.register(first).token
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    shutil.copytree(ours, theirs, symlinks=True)  # a copy of a replica stopped meanwhile
    _backup(db, backup)
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    first.store.close()

    _restore(backup, db)
    again = process(ours)
    again.refresh_keys()
    assert again.store.retired_keys() == frozenset({old_kid})
    assert len(_restored_events(again)) == 1
    replica = process(theirs)
    assert replica.keyring.kids() == [new_kid] and _rejected(replica, token)
    for broker in (again, replica):
        broker.store.close()
