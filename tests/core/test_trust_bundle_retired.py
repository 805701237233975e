"""The trust bundle never vouches again for a key retired in the store (core.trustbundle),
whichever process publishes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasklease.core.keys import load_or_create_keyring
from tasklease.keystore import PlaintextKeyProvider
from tasklease.storage import MemoryStore

PLAIN = PlaintextKeyProvider()


def test_a_process_whose_ring_lags_never_publishes_a_retired_key_again(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """ "Rotate, then retire the old key at once" (docs/operations.md, Compromise) with
    several processes: one that adopted the rotation, and whose next key refresh has not
    come yet when another retires the old key, must not publish the trust bundle with the
    retired key in it (federated peers would trust it again until their next fetch)."""
    from tasklease.rules.bundle import parse_bundle

    keys = tmp_path / "keys"
    store = MemoryStore()
    ring = load_or_create_keyring(keys, PLAIN)
    first = make_broker(store=store, keyring=ring, key_dir=str(keys))
    second = make_broker(store=store, keyring=ring, key_dir=str(keys))
    domain = first.config.trust_domain
    first.publish_trust_bundle()
    new_kid, old_kid = first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    assert second.refresh_keys()  # the rotation reached the second process
    first.retire_signing_key(kit.admin(first).claims, old_kid, kit.ctx)
    assert list(parse_bundle(first.trust_bundle(), domain).keys) == [new_kid]
    # The second process's bundle job runs before its next key refresh.
    second.publish_trust_bundle()
    assert list(parse_bundle(first.trust_bundle(), domain).keys) == [new_kid]
    assert list(parse_bundle(second.trust_bundle(), domain).keys) == [new_kid]
