"""A key directory that still holds the file of a key retired before (a replica's own
copy, or a crash between the durable retirement and the file's removal) must not stop
the next retirement: retiring another key is what a compromise calls for."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tasklease.core.keys import load_or_create_keyring
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected
from tasklease.keystore import PlaintextKeyProvider
from tasklease.storage import MemoryStore

PLAIN = PlaintextKeyProvider()


def _rejected(broker: Any, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return True
    return False


def _retired_events(broker: Any) -> list[Any]:
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    return [e for e in events if e.event_type == "signing_key_retired"]


def test_a_retired_key_s_file_left_in_the_directory_does_not_block_the_next_retirement(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    store = MemoryStore()
    broker = make_broker(
        store=store, keyring=load_or_create_keyring(keys, PLAIN), key_dir=str(keys)
    )
    admin = kit.admin(broker).claims
    first = broker.keyring.active_kid
    second, _ = broker.rotate_signing_key(admin, kit.ctx)
    token = kit.register(broker).token  # signed by ``second``
    third, _ = broker.rotate_signing_key(admin, kit.ctx)
    saved = tmp_path / "saved"
    shutil.copytree(keys, saved)
    broker.retire_signing_key(admin, first, kit.ctx)
    # What a crash after the durable event, before the file's removal, leaves (or a
    # replica's own copy of the directory): the retired key's file is back.
    for path in saved.glob("signing-*.pem"):
        if not (keys / path.name).exists():
            shutil.copy2(path, keys / path.name)
    restarted = make_broker(
        store=store, keyring=load_or_create_keyring(keys, PLAIN), key_dir=str(keys)
    )
    assert restarted.keyring.kids() == [third, second]  # the retired key stays untrusted
    # The key that signed ``token`` is compromised: it must be retirable at once.
    kept = restarted.retire_signing_key(kit.admin(restarted).claims, second, kit.ctx)
    assert kept == (third,) and restarted.keyring.kids() == [third]
    assert _rejected(restarted, token)
    assert len(_retired_events(restarted)) == 2
    # The lingering file of the key retired before went with it.
    assert load_or_create_keyring(keys, PLAIN).kids() == [third]
