"""rules.peerauth: the exact bytes an agent signs in offline peer authentication (known
answers), and the strict reading of the three messages."""

from __future__ import annotations

import hashlib
import json

import nacl.secret
import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules import peerauth as rules
from tasklease.rules.messages import MUTUAL_CONTEXT, transcript

A = "spiffe://tasklease.local/agent/orch/task/a"
B = "spiffe://tasklease.local/agent/orch/task/b"
NA = jws.b64url_encode(bytes(range(32)))
NB = jws.b64url_encode(bytes(range(32, 64)))


def test_the_responder_transcript_known_answer() -> None:
    signed = rules.peer_transcript(
        "responder",
        initiator=A,
        responder=B,
        initiator_nonce=NA,
        responder_nonce=NB,
        iat=1_700_000_000,
        channel="https://b.example:8443/peer",
        responder_token="token-b",
    )
    ath_b = jws.b64url_encode(hashlib.sha256(b"token-b").digest())
    assert signed == (
        b"tasklease-peer-v1\n"
        b'["responder","spiffe://tasklease.local/agent/orch/task/a",'
        b'"spiffe://tasklease.local/agent/orch/task/b",'
        b'"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",'
        b'"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8",'
        b'1700000000,"https://b.example:8443/peer","' + ath_b.encode() + b'",""]'
    )
    key = nacl.signing.SigningKey(b"\x07" * 32)
    signature = rules.sign_transcript(signed, key)
    # Ed25519 is deterministic: the signature is a known answer too.
    assert signature == key.sign(signed).signature
    rules.verify_transcript(signed, signature, bytes(key.verify_key))


def test_the_initiator_transcript_covers_both_tokens_and_differs_by_role() -> None:
    fields = {
        "initiator": A,
        "responder": B,
        "initiator_nonce": NA,
        "responder_nonce": NB,
        "iat": 1,
        "channel": "c",
        "responder_token": "tb",
    }
    initiator = rules.peer_transcript("initiator", **fields, initiator_token="ta")  # type: ignore[arg-type]
    body = json.loads(initiator.removeprefix(rules.PEER_CONTEXT))
    assert body[0] == "initiator" and body[-1] == jws.b64url_encode(hashlib.sha256(b"ta").digest())
    responder = rules.peer_transcript("responder", **fields)  # type: ignore[arg-type]
    key = nacl.signing.SigningKey(b"\x01" * 32)
    with pytest.raises(rules.PeerRejected):  # a signature in one role is useless in the other
        rules.verify_transcript(
            initiator, rules.sign_transcript(responder, key), bytes(key.verify_key)
        )
    with pytest.raises(ValueError, match="initiator's transcript"):
        rules.peer_transcript("initiator", **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="initiator's transcript"):
        rules.peer_transcript("responder", **fields, initiator_token="ta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        rules.peer_transcript("witness", **fields)  # type: ignore[arg-type]


def test_the_online_handshake_and_the_offline_one_never_share_a_signature() -> None:
    online = transcript("responder", "hid", A, B, "a" * 32, "b" * 32)
    assert online.startswith(MUTUAL_CONTEXT)
    assert rules.PEER_CONTEXT != MUTUAL_CONTEXT
    assert not online.startswith(rules.PEER_CONTEXT)


def test_messages_round_trip_and_are_read_strictly() -> None:
    hello = rules.Hello(A, B, NA, 5)
    assert rules.parse_hello(rules.hello_message(hello)) == hello
    answer = rules.Answer(NA, NB, "tok", b"\x02" * 64)
    assert rules.parse_answer(rules.answer_message(answer)) == answer
    finish = rules.Finish(NB, "tok", b"\x03" * 64)
    assert rules.parse_finish(rules.finish_message(finish)) == finish

    good = json.loads(rules.hello_message(hello))
    bad_hellos = [
        None,
        "not json",
        "[]",
        json.dumps({**good, "typ": "tasklease-peer-answer"}),
        json.dumps({**good, "nonce": "short"}),
        json.dumps({**good, "nonce": NA + "="}),
        json.dumps({**good, "iat": "5"}),
        json.dumps({**good, "iat": True}),
        json.dumps({**good, "initiator": ""}),
        json.dumps({**good, "responder": "x" * 3000}),
        "x" * (rules.MAX_MESSAGE_BYTES + 1),
    ]
    for text in bad_hellos:
        with pytest.raises(rules.PeerRejected):
            rules.parse_hello(text)
    good_answer = json.loads(rules.answer_message(answer))
    for bad in ({"sig": jws.b64url_encode(b"\x00" * 63)}, {"sig": "!!"}, {"token": ""}):
        with pytest.raises(rules.PeerRejected):
            rules.parse_answer(json.dumps({**good_answer, **bad}))


def test_the_holder_key_is_the_registered_one() -> None:
    key = bytes(nacl.signing.SigningKey(b"\x05" * 32).verify_key)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(key)}
    assert rules.holder_key({"agent_jwk": jwk}) == key
    for claims in (
        {},
        {"agent_jwk": "x"},
        {"agent_jwk": {**jwk, "crv": "X25519"}},
        {"agent_jwk": {**jwk, "kty": "EC"}},
        {"agent_jwk": {k: v for k, v in jwk.items() if k != "kty"}},
        {"agent_jwk": {**jwk, "x": jws.b64url_encode(key[:31])}},
        {"agent_jwk": {**jwk, "x": "!!"}},
    ):
        with pytest.raises(rules.PeerRejected):
            rules.holder_key(claims)


CHALLENGE = rules.Challenge(
    responder=B,
    initiator=A,
    initiator_nonce=NA,
    responder_nonce=NB,
    iat=1_700_000_000,
    channel="https://b.example:8443/peer",
    responder_token_hash=jws.b64url_encode(hashlib.sha256(b"token-b").digest()),
    answered_at=1_700_000_001.25,
)


def test_the_cookie_seals_the_challenge_and_only_its_key_opens_it() -> None:
    key = b"\x09" * rules.CHALLENGE_KEY_BYTES
    cookie = rules.seal_challenge(CHALLENGE, key)
    assert rules.open_challenge(cookie, key) == CHALLENGE
    assert rules.seal_challenge(CHALLENGE, key) != cookie  # a fresh nonce each time
    for part in (A, B, "b.example", NA, NB):  # sealed, not only authenticated
        assert part.encode() not in jws.b64url_decode(cookie)
    raw = jws.b64url_decode(cookie)
    forged = [
        rules.seal_challenge(CHALLENGE, b"\x0a" * 32),  # another responder's key
        *(
            jws.b64url_encode(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :])
            for i in (0, 23, 24, 40, len(raw) - 1)  # nonce, tag, ciphertext
        ),
        jws.b64url_encode(raw[:39]),
        "",
        "!!",
        "A" * (rules.MAX_MESSAGE_BYTES + 1),
    ]
    for bad in forged:
        with pytest.raises(rules.PeerRejected):
            rules.open_challenge(bad, key)
    # Something else sealed under the same key is not a challenge.
    box = nacl.secret.SecretBox(key)
    c = CHALLENGE
    fields = json.dumps(
        [c.responder, c.initiator, c.initiator_nonce, c.responder_nonce, c.iat, c.channel,
         c.responder_token_hash, c.answered_at],
        separators=(",", ":"),
    ).encode()  # fmt: skip
    assert (
        rules.open_challenge(
            jws.b64url_encode(bytes(box.encrypt(rules.COOKIE_CONTEXT + fields))), key
        )
        == CHALLENGE
    )
    for plain in (
        b"tasklease-peer-cookie-v0\n[]",
        rules.COOKIE_CONTEXT + b'["x"]',
        b"tasklease-peer-cookie-v0\n" + fields,  # a whole challenge, under another context
    ):
        with pytest.raises(rules.PeerRejected):
            rules.open_challenge(jws.b64url_encode(bytes(box.encrypt(plain))), key)
    with pytest.raises(ValueError, match="challenge key"):
        rules.seal_challenge(CHALLENGE, b"short")


def test_the_challenge_transcript_is_the_initiators() -> None:
    """What the responder rebuilds from its cookie is byte for byte what the initiator
    signed (the transcript and its context are unchanged: tasklease-peer-v1)."""
    signed = rules.peer_transcript(
        "initiator",
        initiator=A,
        responder=B,
        initiator_nonce=NA,
        responder_nonce=NB,
        iat=1_700_000_000,
        channel="https://b.example:8443/peer",
        responder_token="token-b",
        initiator_token="token-a",
    )
    assert rules.challenge_transcript(CHALLENGE, "token-a") == signed
    with pytest.raises(ValueError, match="initiator's token"):
        rules.challenge_transcript(CHALLENGE, "")


def test_the_answer_and_the_finish_are_versioned() -> None:
    """Version 2 carries the cookie (``"v": 2``); version 1 (no ``v``, no cookie) is still
    read, so a new initiator finishes an older responder's answer."""
    v2 = rules.Answer(NA, NB, "tok", b"\x02" * 64, "c00kie")
    body = json.loads(rules.answer_message(v2))
    assert (body["v"], body["cookie"]) == (2, "c00kie")
    assert rules.parse_answer(rules.answer_message(v2)) == v2
    finish = rules.Finish(NB, "tok", b"\x03" * 64, "c00kie")
    assert rules.parse_finish(rules.finish_message(finish)) == finish
    v1 = json.loads(rules.finish_message(rules.Finish(NB, "tok", b"\x03" * 64)))
    assert "v" not in v1 and "cookie" not in v1
    assert rules.parse_finish(json.dumps(v1)).cookie == ""
    for bad in (
        {"v": 3},
        {"v": "2"},
        {"v": True},
        {"v": 1, "cookie": "c"},
        {"cookie": ""},
        {"cookie": "c00kie", "v": None},
    ):
        with pytest.raises(rules.PeerRejected):
            rules.parse_finish(json.dumps({**v1, **bad}))
    no_cookie = {k: v for k, v in body.items() if k != "cookie"}
    with pytest.raises(rules.PeerRejected):
        rules.parse_answer(json.dumps(no_cookie))
    with pytest.raises(rules.PeerRejected):  # a cookie without a version
        rules.parse_answer(json.dumps({k: v for k, v in body.items() if k != "v"}))


def test_identities_and_nonces_are_compared_whole() -> None:
    assert rules.same(A, A) and rules.same(NA, NA)
    for first, second in ((A, A + "x"), (A + "x", A), (A, A[:-1]), (A, ""), (NA, NB)):
        assert not rules.same(first, second)
