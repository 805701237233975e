"""What may be used once is used once across replicas whose clocks differ within the skew.

The product tolerates a replica's clock up to ``clock_skew`` ahead of another's (docs/
decisions.md 142). A single-use record (a spent client assertion ``jti``, a DPoP proof)
is pruned by each replica against its own clock; another replica sharing the store, whose
clock is behind, still takes the credential as live until it reads past its end.
Kept ``clock_skew`` past that end, as challenge nonces are, no replica within the skew
accepts it again.

Two brokers on one SQLite file stand for two replicas, ``FAST`` seconds apart.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.rules import jws
from tasklease.rules.binding import access_token_hash
from tasklease.storage import SQLiteStore

from .conftest import START, b64

FAST = 10  # how far the pruning replica's clock runs ahead (clock_skew is 30)


def _replicas(make_broker: Any, tmp_path: Path) -> tuple[Broker, Broker]:
    path, ring = tmp_path / "broker.db", KeyRing.generate()
    fast = make_broker(store=SQLiteStore(path), keyring=ring, clock=ManualClock(START + FAST))
    slow = make_broker(store=SQLiteStore(path), keyring=ring, clock=ManualClock(START))
    return fast, slow


def _advance(seconds: float, *brokers: Broker) -> None:
    for broker in brokers:
        broker.clock.advance(seconds)  # type: ignore[attr-defined]


def _assertion(key: SigningKey, client_id: str, audience: str, now: int) -> str:
    header = jws.b64url_encode(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + 60,
        "iat": now,
        "jti": secrets.token_hex(8),
    }
    body = jws.b64url_encode(json.dumps(claims).encode())
    signature = jws.b64url_encode(key.sign(f"{header}.{body}".encode()).signature)
    return f"{header}.{body}.{signature}"


def test_a_client_assertion_signs_in_once_across_replicas(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    fast, slow = _replicas(make_broker, tmp_path)
    key = SigningKey.generate()
    app, _ = slow.register_app(
        kit.admin(slow).claims,
        name="signer",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
        public_key=b64(bytes(key.verify_key)),
    )
    audiences = (slow.config.issuer,)
    assertion = _assertion(key, app.client_id, slow.config.issuer, int(slow.clock.now()))

    def sign_in() -> Any:
        return slow.app_auth_assertion(
            assertion, kit.ctx, client_id=app.client_id, audiences=audiences
        )

    assert sign_in().claims.sub == f"app:{app.app_id}"
    with pytest.raises(Unauthorized):
        sign_in()  # spent
    # The assertion's exp passed by the fast replica's clock, not by the slow one's.
    _advance(60 - FAST // 2, fast, slow)
    fast.prune()
    with pytest.raises(Unauthorized):
        sign_in()


def _proof(key: SigningKey, *, htu: str, iat: float, token: str | None = None) -> str:
    head = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    claims: dict[str, Any] = {"jti": secrets.token_hex(12), "htm": "POST", "htu": htu}
    claims["iat"] = int(iat)
    if token is not None:
        claims["ath"] = access_token_hash(token)
    signing_input = (
        jws.b64url_encode(json.dumps(head).encode())
        + "."
        + jws.b64url_encode(json.dumps(claims).encode())
    )
    return f"{signing_input}.{jws.b64url_encode(key.sign(signing_input.encode()).signature)}"


def test_a_dpop_proof_is_accepted_once_across_replicas(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    fast, slow = _replicas(make_broker, tmp_path)
    key = SigningKey.generate()
    url = "https://broker.example/v1/register"
    args, _ = kit.register_args(slow, kit.launch(slow))
    ctx = replace(kit.ctx, dpop=_proof(key, htu=url, iat=slow.clock.now()), method="POST", url=url)
    token = slow.register(**{**args, "ctx": ctx}).token
    htu = "https://broker.example/v1/token/renew"
    proof = _proof(key, htu=htu, iat=slow.clock.now(), token=token)
    presented = replace(kit.ctx, dpop=proof, method="POST", url=htu)
    assert slow.authenticate(f"DPoP {token}", presented).jti
    with pytest.raises(Unauthorized):
        slow.authenticate(f"DPoP {token}", presented)  # replayed
    # The proof's window closed by the fast replica's clock, not by the slow one's.
    _advance(slow.config.dpop_proof_window - FAST // 2, fast, slow)
    fast.prune()
    with pytest.raises(Unauthorized):
        slow.authenticate(f"DPoP {token}", presented)
