"""Time claims beyond what a float holds: refused with a denial_id, never an internal error.

JSON numbers have no range, and Python reads an integer of hundreds of digits exactly; a
claim compared as a float (a DPoP proof's ``iat``, a client assertion's ``exp``) must be
refused as out of range, with the audited refusal every other bad value gets.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.errors import TaskleaseError
from tasklease.rules import jws
from tasklease.rules.messages import heartbeat_signing_input

from .conftest import b64

HUGE = 10**400  # an exact JSON integer; float(HUGE) overflows


def _signed(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    signing_input = (
        jws.b64url_encode(json.dumps(header).encode())
        + "."
        + jws.b64url_encode(json.dumps(claims).encode())
    )
    return f"{signing_input}.{jws.b64url_encode(key.sign(signing_input.encode()).signature)}"


def _proof(key: SigningKey, *, htu: str, iat: int) -> str:
    head = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    claims = {"jti": secrets.token_hex(12), "htm": "POST", "htu": htu, "iat": iat}
    return _signed(head, claims, key)


def _refused_once(broker: Any, call: Any) -> str:
    head = len(list(broker.store.iter_audit()))
    with pytest.raises(TaskleaseError) as info:
        call()
    broker.audit.close()
    denial = info.value.denial_id
    assert denial is not None and denial.startswith("den_")
    after = list(broker.store.iter_audit())[head:]
    assert [e for e in after if f"denial={denial}" in e.detail] != []
    assert len([e for e in after if f"denial={denial}" in e.detail]) == 1
    return info.value.code


@pytest.mark.parametrize("iat", [HUGE, -HUGE], ids=["huge", "huge_negative"])
def test_a_dpop_proof_iat_out_of_float_range_is_an_audited_refusal(
    broker: Any, kit: Any, iat: int
) -> None:
    url = "https://broker.example/v1/register"
    args, _ = kit.register_args(broker, kit.launch(broker))
    ctx = replace(
        kit.ctx, dpop=_proof(SigningKey.generate(), htu=url, iat=iat), method="POST", url=url
    )
    _refused_once(broker, lambda: broker.register(**{**args, "ctx": ctx}))


def _assertion(key: SigningKey, client_id: str, audience: str, **times: int) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "jti": secrets.token_hex(8)}
    return _signed({"alg": "EdDSA", "typ": "JWT"}, {**claims, **times}, key)


@pytest.mark.parametrize(
    "times",
    [
        {"exp": HUGE},
        {"exp": 60, "iat": -HUGE},
        {"exp": 60, "nbf": HUGE},
    ],
    ids=["exp", "iat", "nbf"],
)
def test_a_client_assertion_time_out_of_float_range_is_an_audited_refusal(
    broker: Any, kit: Any, times: dict[str, int]
) -> None:
    key = SigningKey.generate()
    app, _ = broker.register_app(
        kit.admin(broker).claims,
        name="signer",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
        public_key=jws.b64url_encode(bytes(key.verify_key)),
    )
    now = int(broker.clock.now())
    relative = {k: v if abs(v) == HUGE else now + v for k, v in times.items()}
    assertion = _assertion(key, app.client_id, broker.config.issuer, **relative)
    _refused_once(
        broker,
        lambda: broker.app_auth_assertion(
            assertion, kit.ctx, client_id=app.client_id, audiences=(broker.config.issuer,)
        ),
    )


@pytest.mark.parametrize("timestamp", [HUGE, -HUGE], ids=["huge", "huge_negative"])
def test_a_heartbeat_timestamp_out_of_float_range_is_an_audited_refusal(
    broker: Any, kit: Any, timestamp: int
) -> None:
    agent = kit.register(broker)
    proof = "p" * 20
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, timestamp, proof, False)
    _refused_once(
        broker,
        lambda: broker.heartbeat(
            agent.claims,
            timestamp=timestamp,
            jti=proof,
            signature=b64(agent.key.sign(message).signature),
            done=False,
            ctx=kit.ctx,
        ),
    )
