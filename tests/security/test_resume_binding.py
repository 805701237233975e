"""Session resumption keeps the registration's holder binding (``cnf``) and audience, and
a resumption of a bound agent must prove the binding again (certificate, DPoP proof)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from nacl.signing import SigningKey
from security_support import CTX, b64, dpop_proof, launch, make_broker

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import jwk_thumbprint
from tasklease.core.store import AuditQuery

REGISTER_URL = "https://broker.example/v1/register"
RESUME_URL = "https://broker.example/v1/resume"
THUMB_A = "a" * 43
THUMB_B = "b" * 43


def _register(
    broker: Broker, ctx: RequestContext = CTX, **extra: Any
) -> tuple[IssuedToken, SigningKey]:
    key = SigningKey.generate()
    lt = launch(broker, ("read:data:*",), **extra.pop("launch", {}))
    nonce, _ = broker.challenge()
    issued = broker.register(
        launch_token=lt,
        nonce=nonce,
        public_key=b64(bytes(key.verify_key)),
        signature=b64(key.sign(bytes.fromhex(nonce)).signature),
        orch_id="orch-sec",
        task_id=f"task-{secrets.token_hex(4)}",
        requested_scope=["read:data:*"],
        ctx=ctx,
        **extra,
    )
    return issued, key


def _resume(broker: Broker, agent_id: str, key: SigningKey, ctx: RequestContext) -> IssuedToken:
    nonce, _ = broker.challenge()
    return broker.resume(
        agent_id=agent_id,
        nonce=nonce,
        signature=b64(key.sign(bytes.fromhex(nonce)).signature),
        ctx=ctx,
    )


def _resume_ctx(**fields: Any) -> RequestContext:
    return dataclasses.replace(CTX, method="POST", url=RESUME_URL, path="/v1/resume", **fields)


def _denials(broker: Broker) -> list[str]:
    events, _ = broker.store.query_audit(
        AuditQuery(event_type="agent_resume_denied", outcome="denied")
    )
    return [e.detail for e in events]


def test_resumed_token_keeps_the_registration_audience() -> None:
    broker = make_broker()
    agent, key = _register(broker, launch={"resource": ["mcp-files"]}, resource="mcp-files")
    assert agent.claims.aud == ("mcp-files",)
    resumed = _resume(broker, agent.claims.sub, key, _resume_ctx())
    assert resumed.claims.aud == ("mcp-files",)
    assert "cnf" not in resumed.claims.raw
    assert broker.validate(resumed.token, audience="mcp-files").sub == agent.claims.sub


def test_unbound_agent_resumes_as_before() -> None:
    broker = make_broker()
    agent, key = _register(broker)
    resumed = _resume(broker, agent.claims.sub, key, _resume_ctx())
    assert resumed.claims.aud == agent.claims.aud
    assert "cnf" not in resumed.claims.raw
    assert resumed.claims.rnc == 1


def test_certificate_bound_agent_resumes_only_with_its_certificate() -> None:
    broker = make_broker()
    agent, key = _register(broker, dataclasses.replace(CTX, cert_thumbprint=THUMB_A))
    assert agent.claims.raw["cnf"] == {"x5t#S256": THUMB_A}
    for ctx in (_resume_ctx(), _resume_ctx(cert_thumbprint=THUMB_B)):
        with pytest.raises(Unauthorized):
            _resume(broker, agent.claims.sub, key, ctx)
    assert any("client certificate" in d for d in _denials(broker))
    resumed = _resume(broker, agent.claims.sub, key, _resume_ctx(cert_thumbprint=THUMB_A))
    assert resumed.claims.raw["cnf"] == {"x5t#S256": THUMB_A}
    assert resumed.claims.sub == agent.claims.sub
    # The resumed token is bound: a bearer presentation without the certificate fails.
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {resumed.token}", CTX)
    holder = dataclasses.replace(CTX, cert_thumbprint=THUMB_A)
    assert broker.authenticate(f"Bearer {resumed.token}", holder).sub == agent.claims.sub


def test_dpop_bound_agent_resumes_only_with_a_proof_of_its_dpop_key() -> None:
    broker = make_broker()
    dpop_key = SigningKey.generate()
    reg_ctx = dataclasses.replace(
        CTX, dpop=dpop_proof(dpop_key, htu=REGISTER_URL), method="POST", url=REGISTER_URL
    )
    agent, key = _register(broker, reg_ctx)
    jkt = jwk_thumbprint(bytes(dpop_key.verify_key))
    assert agent.claims.raw["cnf"] == {"jkt": jkt}
    refused = {
        "no proof": _resume_ctx(),
        "other key": _resume_ctx(dpop=dpop_proof(SigningKey.generate(), htu=RESUME_URL)),
        "wrong htu": _resume_ctx(dpop=dpop_proof(dpop_key, htu=REGISTER_URL)),
        "with ath": _resume_ctx(dpop=dpop_proof(dpop_key, htu=RESUME_URL, token=agent.token)),
    }
    for why, ctx in refused.items():
        with pytest.raises(Unauthorized):
            _resume(broker, agent.claims.sub, key, ctx)
        assert len(_denials(broker)) >= 1, why
    proof = dpop_proof(dpop_key, htu=RESUME_URL)
    resumed = _resume(broker, agent.claims.sub, key, _resume_ctx(dpop=proof))
    assert resumed.claims.raw["cnf"] == {"jkt": jkt}
    with pytest.raises(Unauthorized):  # the proof is single use
        _resume(broker, agent.claims.sub, key, _resume_ctx(dpop=proof))
    # The resumed token needs DPoP proofs like the registered one.
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {resumed.token}", CTX)
    ctx = dataclasses.replace(
        CTX,
        dpop=dpop_proof(dpop_key, token=resumed.token),
        method="POST",
        url="https://broker.example/v1/token/renew",
    )
    assert broker.authenticate(f"DPoP {resumed.token}", ctx).sub == agent.claims.sub


def test_the_binding_does_not_replace_the_key_proof() -> None:
    broker = make_broker()
    agent, _ = _register(broker, dataclasses.replace(CTX, cert_thumbprint=THUMB_A))
    with pytest.raises(Unauthorized):
        _resume(
            broker, agent.claims.sub, SigningKey.generate(), _resume_ctx(cert_thumbprint=THUMB_A)
        )
