# Would fail if: a key ID stopped covering the name, the type byte or the key; a signature
# line were written or read other than `— name base64(keyID || sig)`; a note verified with
# no signature by a known key, or despite a known key's failing signature; a cosignature
# signed anything but `cosignature/v1`, the time and the whole checkpoint.
"""C2SP signed notes, checkpoints and cosignatures against published examples.

Known answers:

* golang.org/x/mod ``sumdb/note`` (the package documentation's example): the PeterNeumann
  private key, verifier key and signed note; Ed25519 is deterministic (RFC 8032), so the
  note is reproduced byte for byte;
* C2SP ``signed-note``: the verifier key ``example.com/foo+530d903a+...`` reproduces its
  key ID;
* a checkpoint of the ``arche2025h1.staging.ct.transparency.dev`` log with its Ed25519
  log signature and the type 0x04 cosignatures of four public witnesses (as published
  in a public test suite of the C2SP formats), with their verifier keys.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import nacl.signing
import pytest

from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Note,
    NoteError,
    VerifierKey,
    checkpoint_note,
    cosign,
    parse_checkpoint,
    parse_note,
    parse_private_key,
    private_key_text,
    sign_note,
    verify_cosignature,
    verify_note,
)

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"

ARCHE = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n"
    "— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGR"
    "EPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    "— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzb"
    "C3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTz"
    "wZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iE"
    "cxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobW"
    "X9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
    "— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+A"
    "JmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n"
)
ARCHE_LOG = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
ARCHE_WITNESSES = (
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
)


def test_the_go_example_note_is_reproduced_byte_for_byte() -> None:
    key, signing = parse_private_key(PETER_SKEY)
    assert key.vkey == PETER_VKEY
    text = parse_note(PETER_NOTE).text
    signature = sign_note(text, key.name, key.public_key, lambda m: signing.sign(m).signature)
    assert str(Note(text, (signature,))) == PETER_NOTE
    assert verify_note(parse_note(PETER_NOTE), [VerifierKey.parse(PETER_VKEY)]) == [key]
    assert private_key_text("PeterNeumann", ED25519, bytes(signing)) == PETER_SKEY


def test_the_spec_example_key_reproduces_its_id() -> None:
    key = VerifierKey.parse(EXAMPLE_VKEY)
    assert key.name == "example.com/foo"
    assert key.vkey == EXAMPLE_VKEY
    with pytest.raises(NoteError, match="ID"):
        VerifierKey.parse(EXAMPLE_VKEY.replace("530d903a", "530d903b"))


def test_a_public_checkpoint_and_its_witnesses_cosignatures_verify() -> None:
    note = parse_note(ARCHE)
    assert verify_note(note, [VerifierKey.parse(ARCHE_LOG)])  # the ECDSA line is ignored
    checkpoint = parse_checkpoint(note.text)
    assert (checkpoint.origin, checkpoint.size) == (
        "arche2025h1.staging.ct.transparency.dev",
        1432088532,
    )
    assert checkpoint.text == note.text
    for vkey in ARCHE_WITNESSES:
        assert verify_cosignature(note, VerifierKey.parse(vkey)) == 1779573024
    # The cosignatures cover the checkpoint: another size fails every one of them.
    forged = Note(note.text.replace("1432088532", "1432088533"), note.signatures)
    with pytest.raises(NoteError):
        verify_note(forged, [VerifierKey.parse(ARCHE_LOG)])
    for vkey in ARCHE_WITNESSES:
        with pytest.raises(NoteError):
            verify_cosignature(forged, VerifierKey.parse(vkey))


def _signer(name: str, sig_type: int = ED25519) -> tuple[VerifierKey, nacl.signing.SigningKey]:
    signing = nacl.signing.SigningKey.generate()
    return VerifierKey(name, sig_type, bytes(signing.verify_key)), signing


def test_checkpoints_are_signed_and_cosigned_round_trip() -> None:
    log, log_key = _signer("broker.example/audit")
    witness, witness_key = _signer("witness.example", COSIGNATURE)
    checkpoint = Checkpoint("broker.example/audit", 42, bytes(range(32)))
    note = checkpoint_note(checkpoint, log.public_key, lambda m: log_key.sign(m).signature)
    assert note.text == "broker.example/audit\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    assert parse_note(str(note)) == note
    assert verify_note(note, [log]) == [log]
    cosig = cosign(note.text, witness.name, witness.public_key, 1_700_000_000, _sign(witness_key))
    cosigned = note.with_signatures([cosig])
    assert parse_note(str(cosigned)) == cosigned
    assert verify_cosignature(cosigned, witness) == 1_700_000_000
    assert verify_cosignature(note, witness) is None  # not cosigned: no timestamp, no error
    assert verify_note(cosigned, [log, witness]) == [log]  # a cosignature is no log signature
    assert parse_checkpoint(note.text) == checkpoint


def test_unknown_keys_are_ignored_and_a_failing_known_key_refuses() -> None:
    log, log_key = _signer("log")
    other, _ = _signer("other")
    note = checkpoint_note(Checkpoint("log", 1, bytes(32)), log.public_key, _sign(log_key))
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_note(note, [other])
    # An impostor's line under the log's name and key ID, beside the log's own: refused.
    blob = bytes(64)
    bad = note.with_signatures([type(note.signatures[0])("log", log.key_id, blob)])
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(bad, [log])


@pytest.mark.parametrize(
    "raw",
    [
        "no empty line\n— log AAAAAAA=\n",
        "text\n\n",  # no signature
        "text\n\n— log AAAA\n",  # shorter than a key ID and a byte
        "text\n\n- log AAAAAAA=\n",  # a hyphen, not an em dash
        "text\n\n— log AAAAAAA\n",  # unpadded base64
        "text\n\n— lo+g AAAAAAA=\n",  # '+' in a name
        "te\txt\n\n— log AAAAAAA=\n",  # a control character
        "text\n\n— log AAAAAAA=",  # no final newline
        b"\xff\xfe\n\n\xe2\x80\x94 log AAAAAAA=\n",  # not UTF-8
    ],
)
def test_malformed_notes_are_refused(raw: str | bytes) -> None:
    with pytest.raises(NoteError):
        parse_note(raw)


@pytest.mark.parametrize(
    "text",
    [
        "origin\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",  # a leading zero
        "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",  # a short root
        "origin\n1\n",  # no root
        "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n",  # an empty line
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_a_cosignature_needs_a_real_time_and_a_checkpoint() -> None:
    witness, key = _signer("w", COSIGNATURE)
    text = Checkpoint("log", 0, bytes(32)).text
    with pytest.raises(NoteError):
        cosign(text, "w", witness.public_key, 0, _sign(key))
    with pytest.raises(NoteError):
        cosign("not a checkpoint\n", "w", witness.public_key, 1, _sign(key))


def _sign(key: nacl.signing.SigningKey) -> Callable[[bytes], bytes]:
    return lambda message: bytes(key.sign(message).signature)
