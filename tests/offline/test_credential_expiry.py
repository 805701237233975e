"""An offline credential is expired from its leaf's ``exp`` second on, by the clock it
was given: the same edge a verifier holds it to."""

from __future__ import annotations

from offline_support import hops, key

from tasklease.client import OfflineCredential


def test_an_offline_credential_is_expired_at_its_exp_second() -> None:
    now = [0.0]
    credential = OfflineCredential(hops(("a", "b")), key("b"), clock=lambda: now[0])
    now[0] = credential.exp - 1
    assert not credential.expired
    now[0] = credential.exp - 0.001
    assert not credential.expired
    now[0] = credential.exp
    assert credential.expired
