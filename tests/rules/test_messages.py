"""The messages agents sign: known answers, and the broker's builders give the same bytes."""

from __future__ import annotations

import pytest

from tasklease.rules.messages import (
    CHALLENGE_NONCE_BYTES,
    challenge_nonce_bytes,
    heartbeat_signing_input,
    heartbeat_token_id,
    transcript,
)

NA, NB = "a" * 32, "b" * 32


def test_transcript_known_answer() -> None:
    assert transcript("initiator", "h1", "spiffe://td/a", "spiffe://td/b", NA, NB) == (
        b"tasklease-mutual-v1\n"
        b'["initiator","h1","spiffe://td/a","spiffe://td/b",'
        b'"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]'
    )
    with pytest.raises(ValueError, match="role"):
        transcript("both", "h1", "a", "b", NA, NB)


def test_heartbeat_known_answer() -> None:
    assert heartbeat_signing_input("spiffe://td/a", "j1", 1800000000, "p" * 16, False) == (
        b'tasklease-heartbeat-v1\n["spiffe://td/a","j1",1800000000,"pppppppppppppppp",false]'
    )


def test_heartbeat_token_id_known_answer() -> None:
    # A by-reference token: its SHA-256 in hex (its holder cannot read its jti).
    reference = "tlr_" + "A" * 43
    assert heartbeat_token_id(reference) == (
        "76723953834f91e2cf843f976db70ada26f0ac5ccf01370d9dd29c36d833a569"
    )
    # A JWS: its jti, read without verification; anything else names no token.
    jws = "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJqMSJ9.c2ln"  # {"alg":"EdDSA"}.{"jti":"j1"}
    assert heartbeat_token_id(jws) == "j1"
    assert heartbeat_token_id("tlr_short") == heartbeat_token_id("not a token") == ""


def test_challenge_nonce_known_answer() -> None:
    nonce = "00ff" * 16
    assert challenge_nonce_bytes(nonce) == b"\x00\xff" * 16
    assert len(challenge_nonce_bytes(nonce)) == CHALLENGE_NONCE_BYTES
    for other in ("", "00ff" * 15, "00ff" * 17, "00FF" * 16, " " + "00ff" * 16, b"\x00" * 32):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            challenge_nonce_bytes(other)


def test_the_broker_checks_the_same_bytes() -> None:
    from tasklease.core.liveness import heartbeat_signing_input as brokers_heartbeat
    from tasklease.core.mutual import transcript as brokers_transcript

    for role in ("initiator", "responder"):
        args = (role, "h", "spiffe://td/é", "spiffe://td/b", NA, NB)
        assert transcript(*args) == brokers_transcript(*args)
    assert heartbeat_signing_input("a", "j", 7, "p", True) == brokers_heartbeat(
        "a", "j", 7, "p", True
    )
