"""An agent registered through workload evidence resumes with fresh evidence, never by
its registered key alone."""

from __future__ import annotations

import json

from core_support import CTX, ISSUER, START, admin, b64, make_broker
from issuers import SigningKey, k8s_claims, mint
from nacl.signing import SigningKey as AgentKey

from tasklease.core.errors import Forbidden

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]


# Would fail if: a registration through evidence were resumable, so that whoever holds the
# agent's key could keep getting tokens after the evidence and its platform are gone.
def test_an_attested_agent_cannot_resume_by_its_key() -> None:
    broker = make_broker()
    issuer_key = SigningKey.generate("RS256")
    settings = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [issuer_key.jwk()]})}
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=settings, policy=POLICY, ctx=CTX
    )
    agent_key = AgentKey.generate()
    nonce, _ = broker.challenge()
    issued = broker.register(
        launch_token=None,
        nonce=nonce,
        public_key=b64(bytes(agent_key.verify_key)),
        signature=b64(agent_key.sign(bytes.fromhex(nonce)).signature),
        orch_id="orch-1",
        task_id="task-1",
        requested_scope=["read:invoices:1"],
        ctx=CTX,
        attestation={
            "type": "k8s_sat",
            "evidence": mint(issuer_key, k8s_claims(K8S_ISS, ISSUER, START)),
        },
    )
    nonce, _ = broker.challenge()
    try:
        broker.resume(
            agent_id=issued.claims.sub,
            nonce=nonce,
            signature=b64(agent_key.sign(bytes.fromhex(nonce)).signature),
            ctx=CTX,
        )
    except Forbidden as error:
        assert error.denial_id
    else:
        raise AssertionError("an attested agent resumed by its key alone")
