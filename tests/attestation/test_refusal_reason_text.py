"""A refusal's reason that quotes a caller's text (an evidence's ``kid``) is one value in
the audit detail: it plants no field before the broker's own, and a part shaped like a
secret erases none of the fields after it (``core.auditformat.reason_text``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from http_support import ISSUER, Deployment, deploy
from issuers import SigningKey, k8s_claims, mint

from tasklease.core import auditformat
from tasklease.core.attestors._jwt import evidence_hash

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]


@pytest.fixture(scope="module")
def broker() -> Iterator[Deployment]:
    deployment = deploy()
    key = SigningKey.generate("RS256")
    settings = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    deployment.add_attestor(
        {"name": "prod", "type": "k8s_sat", "settings": settings, "policy": POLICY}
    )
    yield deployment
    deployment.stop()


# Would fail if: the reason of a refused attestation (which names the evidence's unknown
# kid) were written into the detail as it is, so that an unauthenticated caller's kid
# planted an ``evidence=`` field before the broker's, or (shaped like a quoted secret or a
# PEM block) made the sanitizer redact the broker's ``evidence=`` field with it.
@pytest.mark.parametrize(
    "kid",
    [
        "k evidence=000000000000",
        'k password="',
        "k password='",
        "k -----BEGIN A-----",
        'k" evidence=000000000000 x="',
    ],
)
def test_an_evidence_kid_in_a_refusal_reason_is_one_value(broker: Deployment, kid: str) -> None:
    key = SigningKey.generate("RS256")
    evidence = mint(key, k8s_claims(K8S_ISS, ISSUER, broker.now()), kid=kid)
    answer = broker.register(
        ["read:invoices:1"], {"type": "k8s_sat", "evidence": evidence, "attestor": "prod"}
    )
    detail = broker.denial(answer)
    assert "000000000000" not in auditformat.read_fields(detail).get("evidence", ""), detail
    assert auditformat.read_fields(detail)["evidence"] == evidence_hash(evidence)[:12], detail
    # Outside quoted values, the broker's is the one ``evidence=`` (a reader may take
    # the first of a key written twice).
    assert re.sub(r'"(?:[^"\\]|\\.)*"', "", detail).count("evidence=") == 1, detail
