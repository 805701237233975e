"""Evidence whose text is not what a compact JWS is made of, sent to the broker: a
refusal with a denial id, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from http_support import ISSUER, Deployment, deploy
from issuers import SigningKey, k8s_claims, mint

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]


@pytest.fixture
def broker() -> Iterator[Deployment]:
    deployment = deploy()
    yield deployment
    deployment.stop()


def _attestor(broker: Deployment, key: SigningKey) -> None:
    settings = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    broker.add_attestor({"name": "prod", "type": "k8s_sat", "settings": settings, "policy": POLICY})


# Would fail if: evidence were not refused for characters outside ASCII before the text
# its issuer signed (header and payload) is encoded as ASCII, so that evidence naming its
# attestor, with the issuer's public kid and a payload of other characters, made an
# unauthenticated registration (and the operator's test) a 500.
@pytest.mark.parametrize("payload", ["é" * 8, "\u2028AAA", "AAAA\uff41"])
def test_evidence_whose_payload_is_not_base64url_is_refused(
    broker: Deployment, payload: str
) -> None:
    key = SigningKey.generate("RS256")
    _attestor(broker, key)
    head, _body, sig = mint(key, k8s_claims(K8S_ISS, ISSUER, broker.now())).split(".")
    forged = f"{head}.{payload}.{sig}"
    answer = broker.register(
        ["read:invoices:1"], {"type": "k8s_sat", "evidence": forged, "attestor": "prod"}
    )
    assert answer.json()["detail"] == "attestation refused", answer.text
    assert "(evidence)" in broker.denial(answer)
    tested = broker.client.post(
        "/v1/admin/attestors/prod/test",
        json={"evidence": forged},
        headers=broker.admin_headers(),
    )
    assert tested.status_code == 400, tested.text
    assert tested.json()["denial_id"]
