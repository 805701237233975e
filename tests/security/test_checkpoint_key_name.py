"""A checkpoint verifies only under a log key named as its origin (C2SP tlog-checkpoint).

The log's key vouches for its own log: a checkpoint of origin B signed by a key named A
(another log's, or one named otherwise) is not B's checkpoint, in ``tasklease.verify``
and in the CLI's audit commands that use it, as witnesses already refuse it.
"""

from __future__ import annotations

import nacl.signing
import pytest

from tasklease.rules.note import (
    ED25519,
    Checkpoint,
    Note,
    VerifierKey,
    sign_note,
)
from tasklease.verify import AuditProofError, verify_checkpoint, verify_proof_bundle

LOG = nacl.signing.SigningKey(b"\x05" * 32)
ROOT = bytes(32)


def _signed(origin: str, key_name: str) -> Note:
    text = Checkpoint(origin, 3, ROOT).text
    line = sign_note(text, key_name, bytes(LOG.verify_key), lambda m: LOG.sign(m).signature)
    return Note(text, (line,))


def test_a_checkpoint_signed_under_another_name_than_its_origin_is_refused() -> None:
    note = str(_signed("victim.example/audit", "other.example/audit"))
    key = VerifierKey("other.example/audit", ED25519, bytes(LOG.verify_key))
    with pytest.raises(AuditProofError) as caught:
        verify_checkpoint(note, [key])
    assert "is not the log key's name" in caught.value.reason
    with pytest.raises(AuditProofError):
        verify_checkpoint(note, [key], origin="victim.example/audit")
    bundle = {"checkpoint": note, "event": {}, "proof": []}
    with pytest.raises(AuditProofError):
        verify_proof_bundle(bundle, [key])


def test_a_checkpoint_signed_under_its_origin_verifies() -> None:
    key = VerifierKey("log.example/audit", ED25519, bytes(LOG.verify_key))
    checkpoint = verify_checkpoint(str(_signed("log.example/audit", key.name)), [key.vkey])
    assert (checkpoint.origin, checkpoint.size) == ("log.example/audit", 3)
    # Keys of other logs given beside it are ignored, as before.
    other = VerifierKey("other.example/audit", ED25519, bytes(LOG.verify_key))
    assert verify_checkpoint(str(_signed("log.example/audit", key.name)), [other, key]).size == 3
