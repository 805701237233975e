# Would fail if: a log signature were matched to a key by key ID alone (not also by name);
# a type 0x01 (note) key were taken as a cosigning key; a cosignature dated 0 counted; a
# verifier or private key whose ID does not match, or whose public key is not 32 bytes,
# were read; a checkpoint's size of 2**64 or more, a non-canonical base64 root or an
# origin with a control character were accepted; or a note could carry any number of
# signature lines.
"""The edges of the C2SP note, checkpoint and cosignature checks (``rules.note``) that
the published examples in test_note.py do not reach."""

from __future__ import annotations

import base64
import struct

import nacl.signing
import pytest

from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    MAX_SIGNATURES,
    Checkpoint,
    NoteError,
    Signature,
    VerifierKey,
    checkpoint_note,
    cosignature_message,
    parse_checkpoint,
    parse_note,
    parse_private_key,
    private_key_text,
    verify_cosignature,
    verify_note,
)

LOG = nacl.signing.SigningKey(b"\x11" * 32)
LOG_KEY = VerifierKey("log.example", ED25519, bytes(LOG.verify_key))
WITNESS = nacl.signing.SigningKey(b"\x22" * 32)
WITNESS_KEY = VerifierKey("witness.example", COSIGNATURE, bytes(WITNESS.verify_key))
ROOT = base64.b64encode(bytes(range(32))).decode()


def _note() -> str:
    checkpoint = Checkpoint("log.example", 3, bytes(range(32)))
    return str(checkpoint_note(checkpoint, LOG_KEY.public_key, lambda m: LOG.sign(m).signature))


def test_a_log_signature_under_another_name_is_no_signature_by_the_log() -> None:
    """The log's valid signature, its line renamed: the key ID still matches, the name
    does not, so no known key signed the note."""
    note = parse_note(_note())
    assert verify_note(note, [LOG_KEY]) == [LOG_KEY]
    own = note.signatures[0]
    renamed = type(note)(note.text, (Signature("impostor.example", own.key_id, own.blob),))
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_note(parse_note(str(renamed)), [LOG_KEY])


def test_a_note_signing_key_is_not_a_cosigning_key() -> None:
    note = parse_note(_note())
    with pytest.raises(NoteError, match="type 0x04"):
        verify_cosignature(note, LOG_KEY)


def test_a_cosignature_dated_zero_is_refused() -> None:
    """Signed by the witness's own key, correctly, over time 0: still refused."""
    note = parse_note(_note())
    signature = WITNESS.sign(cosignature_message(note.text, 0)).signature
    line = Signature(WITNESS_KEY.name, WITNESS_KEY.key_id, struct.pack(">Q", 0) + signature)
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(note.with_signatures([line]), WITNESS_KEY)
    dated = WITNESS.sign(cosignature_message(note.text, 7)).signature
    line = Signature(WITNESS_KEY.name, WITNESS_KEY.key_id, struct.pack(">Q", 7) + dated)
    assert verify_cosignature(note.with_signatures([line]), WITNESS_KEY) == 7


def test_a_verifier_key_whose_id_or_length_is_wrong_is_refused() -> None:
    assert VerifierKey.parse(LOG_KEY.vkey) == LOG_KEY
    wrong_id = f"log.example+{'00' * 4}+{LOG_KEY.vkey.rsplit('+', 1)[1]}"
    with pytest.raises(NoteError, match="ID does not match"):
        VerifierKey.parse(wrong_id)
    with pytest.raises(NoteError, match="32 bytes"):
        VerifierKey("log.example", ED25519, bytes(LOG.verify_key) + b"\x00")
    with pytest.raises(NoteError, match="32 bytes"):
        VerifierKey("log.example", ED25519, bytes(LOG.verify_key)[:31])


def test_a_private_key_whose_id_does_not_match_is_refused() -> None:
    text = private_key_text("log.example", ED25519, b"\x11" * 32)
    assert parse_private_key(text)[0] == LOG_KEY
    head, _, blob = text.rpartition("+")
    wrong = f"{head.rsplit('+', 1)[0]}+{'00' * 4}+{blob}"
    with pytest.raises(NoteError, match="ID does not match"):
        parse_private_key(wrong)


@pytest.mark.parametrize("size", [str(1 << 64), str((1 << 64) + 5), "9" * 20])
def test_a_checkpoint_size_of_64_bits_or_more_is_refused(size: str) -> None:
    assert parse_checkpoint(f"log\n{(1 << 64) - 1}\n{ROOT}\n").size == (1 << 64) - 1
    with pytest.raises(NoteError, match="size"):
        parse_checkpoint(f"log\n{size}\n{ROOT}\n")


def test_a_root_in_non_canonical_base64_is_refused() -> None:
    """The same 32 bytes, written with nonzero padding bits: another checkpoint text for
    the same tree head."""
    canonical = base64.b64encode(bytes(32)).decode()
    assert canonical.endswith("A=")
    malleated = canonical[:-2] + "B="
    assert base64.b64decode(malleated) == bytes(32)
    with pytest.raises(NoteError, match="canonical"):
        parse_checkpoint(f"log\n1\n{malleated}\n")


@pytest.mark.parametrize("origin", ["", "log\x01", "log\nx", "log\x7f"])
def test_a_checkpoint_origin_is_one_line_without_control_characters(origin: str) -> None:
    with pytest.raises(NoteError, match="origin"):
        Checkpoint(origin, 1, bytes(32))


def test_a_note_carries_at_most_max_signatures() -> None:
    line = "\u2014 log AAAAAAA=\n"
    assert len(parse_note("text\n\n" + line * MAX_SIGNATURES).signatures) == MAX_SIGNATURES
    with pytest.raises(NoteError, match="too many"):
        parse_note("text\n\n" + line * (MAX_SIGNATURES + 1))
