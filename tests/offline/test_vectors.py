"""Known-answer vectors of the offline chain format (tests/vectors/offline-chain-v1.json).

The file is the reference: fixed seeds, fixed times, every block's payload, signing input
hash and text, the chain after each hop, what verification yields at a fixed time, and
chains that must be refused. These tests rebuild it byte for byte, and verify the file's
chains from the file's own keys and texts alone. Regenerate (only for a deliberate format
change, which is a new version) with ``python tests/offline/test_vectors.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules.attenuation import PREFIX, canonical_json, decode, sign_block, signing_input
from tasklease.rules.binding import DPoPVerifier, Presentation, access_token_hash
from tasklease.rules.chainverify import ChainRejected, derive, offline_limits, verify_chain

FILE = Path(__file__).resolve().parents[1] / "vectors" / "offline-chain-v1.json"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TRUST = "spiffe://example.org/agent/orch-1/task-42"
AUDIENCE = "https://orders.example"
HTU = "https://orders.example/v1/orders"
PAY = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "limits": {"max_amount": "500", "currency": "EUR"},
}


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"tasklease offline vector {name}".encode()).digest()


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(_seed(name))


def _public(name: str) -> str:
    return jws.b64url_encode(bytes(_key(name).verify_key))


def _root(*, bound: bool = True) -> tuple[dict[str, Any], str]:
    holder = bytes(_key("alice").verify_key)
    payload = {
        "iss": "tasklease",
        "sub": f"{TRUST}/alice",
        "aud": [AUDIENCE, "https://billing.example"],
        "exp": NOW + 900,
        "nbf": NOW,
        "iat": NOW,
        "jti": "0f" * 16,
        "scope": "read:orders:* write:orders:42",
        "authorization_details": [PAY],
        "task_id": "task-42",
        "orch_id": "orch-1",
        "client_id": f"{TRUST}/alice",
        "oiat": NOW,
        "rnc": 0,
        "principal": "user:alice@example.org",
        "agent_jwk": {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": jws.b64url_encode(holder),
            "kid": jws.jwk_thumbprint(holder),
        },
        "lineage": ["app:app-1"],
        "max_exp": NOW + 3600,
        "cnf": {"jkt": jws.jwk_thumbprint(holder)},  # a chain starts from a bound token
    }
    if not bound:
        del payload["cnf"]
    broker = _key("broker")
    kid = jws.jwk_thumbprint(bytes(broker.verify_key))
    data = json.dumps(payload, separators=(",", ":")).encode()
    return payload, jws.encode(data, typ="at+jwt", kid=kid, key=broker)


# Each hop: who signs, who receives, what it asks; the first narrows scope, audience and
# the grant, the second the scope again, the third hands on unchanged.
HOPS: list[dict[str, Any]] = [
    {"signer": "alice", "delegate": "bob", "iat": NOW + 10, "ttl": 600,
     "scope": ["read:orders:*"], "grants": [dict(PAY, limits={"max_amount": "100",
                                                               "currency": "EUR"})],
     "aud": AUDIENCE},
    {"signer": "bob", "delegate": "carol", "iat": NOW + 20, "ttl": 300,
     "scope": ["read:orders:42"]},
    {"signer": "carol", "delegate": "dave", "iat": NOW + 30, "ttl": 3600},
]  # fmt: skip


# Each holder's name: alice's is her registered id; each delegate's is nested under its
# delegator's (docs/formats.md, ``sub``).
SPIFFE_IDS = {
    "broker": f"{TRUST}/broker",
    "alice": f"{TRUST}/alice",
    "bob": f"{TRUST}/alice/bob",
    "carol": f"{TRUST}/alice/bob/carol",
    "dave": f"{TRUST}/alice/bob/carol/dave",
}


def build() -> dict[str, Any]:
    """The vector document, from the seeds and the hops above."""
    root_claims, root = _root()
    names = ("broker", "alice", "bob", "carol", "dave")
    doc: dict[str, Any] = {
        "format": PREFIX,
        "note": "Ed25519 seeds are SHA-256 of 'tasklease offline vector <name>'; times are "
        "Unix seconds; base64url without padding.",
        "keys": {
            n: {"seed": _seed(n).hex(), "public": _public(n), "spiffe_id": SPIFFE_IDS[n]}
            for n in names
        },
        "broker_kid": jws.jwk_thumbprint(bytes(_key("broker").verify_key)),
        "root": {"claims": root_claims, "token": root},
        "hops": [],
    }
    chain = root
    for index, hop in enumerate(HOPS):
        previous = chain if index == 0 else chain.rsplit("~", 1)[1]
        chain = derive(
            chain,
            _key(hop["signer"]),
            delegate=SPIFFE_IDS[hop["delegate"]],
            delegate_key=bytes(_key(hop["delegate"]).verify_key),
            now=hop["iat"],
            ttl=hop["ttl"],
            scope=hop.get("scope"),
            grants=hop.get("grants"),
            audience=hop.get("aud"),
            jti=f"{index + 1:02x}" * 16,
        )
        block = decode(chain).blocks[-1]
        doc["hops"].append(
            {
                "asked": hop,
                "payload": json.loads(block.payload),
                "payload_json": block.payload.decode(),
                "previous_sha256": hashlib.sha256(previous.encode()).hexdigest(),
                "signing_input_sha256": hashlib.sha256(
                    signing_input(previous, block.payload)
                ).hexdigest(),
                "block": block.text,
                "chain": chain,
                "chain_bytes": len(chain),
            }
        )
    proof_at = NOW + 40
    doc["verify"] = {
        "now": proof_at,
        "audience": AUDIENCE,
        "proof": _proof("dave", chain, proof_at),
        "htm": "GET",
        "htu": HTU,
        "holder": SPIFFE_IDS["dave"],
        "scope": ["read:orders:42"],
        "authorization_details": doc["hops"][0]["payload"]["grants"],
        "aud": [AUDIENCE],
        "exp": NOW + 320,
        "jtis": ["0f" * 16, "01" * 16, "02" * 16, "03" * 16],
        "agents": [SPIFFE_IDS[n] for n in ("alice", "bob", "carol", "dave")],
    }
    parts = chain.split("~")
    doc["invalid"] = [
        {"name": "second block removed", "category": "signature",
         "chain": "~".join([*parts[:2], *parts[3:]])},
        {"name": "blocks two and three swapped", "category": "signature",
         "chain": "~".join([*parts[:2], parts[3], parts[2], parts[4]])},
        {"name": "last block signed by the root holder", "category": "signature",
         "chain": _resigned(chain, "alice")},
        {"name": "verified after the last block's exp", "category": "expired",
         "chain": chain, "now": NOW + 320},
        {"name": "last block naming a delegate outside its signer's name", "category":
         "attenuation", "chain": _renamed(chain, "carol", f"{TRUST}/dave")},
        {"name": "a bearer root (no cnf): it could be cut out and presented alone",
         "category": "binding", "chain": "~".join([parts[0], _root(bound=False)[1], *parts[2:]])},
    ]  # fmt: skip
    return doc


def _resigned(chain: str, signer: str) -> str:
    head, last = chain.rsplit("~", 1)
    payload_text = last.split(".")[0]
    previous = head.rsplit("~", 1)[1]
    message = signing_input(previous, jws.b64url_decode(payload_text))
    signature = _key(signer).sign(message).signature
    return f"{head}~{payload_text}.{jws.b64url_encode(signature)}"


def _renamed(chain: str, signer: str, sub: str) -> str:
    """``chain`` with its last block's ``sub`` replaced, signed again by ``signer``."""
    head, last = chain.rsplit("~", 1)
    fields = json.loads(jws.b64url_decode(last.split(".")[0]))
    payload = canonical_json({**fields, "sub": sub})
    return f"{head}~{sign_block(head.rsplit('~', 1)[1], payload, _key(signer))}"


def _proof(holder: str, chain: str, iat: int) -> str:
    header = {"typ": "dpop+jwt", "alg": "EdDSA",
              "jwk": {"kty": "OKP", "crv": "Ed25519", "x": _public(holder)}}  # fmt: skip
    claims = {"jti": "vector-proof-1", "htm": "GET", "htu": HTU, "iat": iat,
              "ath": access_token_hash(chain)}  # fmt: skip
    text = ".".join(
        jws.b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    return f"{text}.{jws.b64url_encode(_key(holder).sign(text.encode()).signature)}"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return dict(json.loads(FILE.read_text(encoding="utf-8")))


def test_the_vectors_are_rebuilt_byte_for_byte(vectors: dict[str, Any]) -> None:
    assert build() == vectors


def _verify(doc: dict[str, Any], chain: str, now: int) -> Any:
    broker = nacl.signing.VerifyKey(jws.b64url_decode(doc["keys"]["broker"]["public"]))
    check = doc["verify"]
    return verify_chain(
        chain,
        resolve_key=lambda kid: broker if kid == doc["broker_kid"] else None,
        issuer="tasklease",
        audiences=(check["audience"],),
        now=now,
        limits=offline_limits(max_ttl=3600, max_delegation_depth=5),
        max_lifetime=3600,
        presented=Presentation(
            scheme="DPoP", dpop_proof=check["proof"], htm=check["htm"], htu=check["htu"]
        ),
        dpop=DPoPVerifier(60),
        revoked=None,
    )


def test_each_block_is_what_its_payload_and_signer_say(vectors: dict[str, Any]) -> None:
    keys = vectors["keys"]
    chain = vectors["root"]["token"]
    for hop in vectors["hops"]:
        previous = chain if chain == vectors["root"]["token"] else chain.rsplit("~", 1)[1]
        payload = hop["payload_json"].encode()
        assert json.loads(payload) == hop["payload"]
        assert hashlib.sha256(previous.encode()).hexdigest() == hop["previous_sha256"]
        message = signing_input(previous, payload)
        assert hashlib.sha256(message).hexdigest() == hop["signing_input_sha256"]
        payload_text, signature_text = hop["block"].split(".")
        assert jws.b64url_decode(payload_text) == payload
        signer = nacl.signing.VerifyKey(jws.b64url_decode(keys[hop["asked"]["signer"]]["public"]))
        assert jws.verify_detached(message, jws.b64url_decode(signature_text), signer)
        chain = (chain if "~" in chain else PREFIX + chain) + "~" + hop["block"]
        assert chain == hop["chain"] and len(chain) == hop["chain_bytes"]


def test_the_last_chain_verifies_to_the_recorded_authority(vectors: dict[str, Any]) -> None:
    check = vectors["verify"]
    verified = _verify(vectors, vectors["hops"][-1]["chain"], check["now"])
    assert verified.holder == check["holder"]
    assert list(verified.scope) == check["scope"]
    assert [dict(g) for g in verified.grants] == check["authorization_details"]
    assert list(verified.audience) == check["aud"]
    assert verified.exp == check["exp"]
    assert list(verified.jtis) == check["jtis"] and list(verified.agents) == check["agents"]


def test_the_invalid_vectors_are_refused_for_their_reason(vectors: dict[str, Any]) -> None:
    for case in vectors["invalid"]:
        with pytest.raises(ChainRejected) as refused:
            _verify(vectors, case["chain"], case.get("now", vectors["verify"]["now"]))
        assert refused.value.category == case["category"], (case["name"], refused.value.reason)


if __name__ == "__main__":
    FILE.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
