"""Evidence whose text is not what a compact JWS is made of, sent to the broker: a
refusal with a denial id, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from http_support import ISSUER, Deployment, deploy
from issuers import SigningKey, k8s_claims, mint, spiffe_bundle, svid_claims

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


# Would fail if: the SPIFFE trust domain check's refusal (a ValueError) were not the one
# the jwt_svid attestor catches, so that a trust domain of capitals in its settings made
# the operator's request a 500 rather than a 400 naming the field.
@pytest.mark.parametrize("domain", ["Prod.Example", "prod example", "prod/example"])
def test_a_jwt_svid_attestor_for_a_malformed_trust_domain_is_refused(
    broker: Deployment, domain: str
) -> None:
    settings = {"trust_domain": domain, "bundle": spiffe_bundle(SigningKey.generate("ES256"))}
    answer = broker.client.post(
        "/v1/admin/attestors",
        json={"name": "spire", "type": "jwt_svid", "settings": settings, "policy": POLICY},
        headers=broker.admin_headers(),
    )
    assert answer.status_code == 400, answer.text
    assert "trust_domain" in answer.json()["detail"]


# Would fail if: a JWT-SVID whose subject names a malformed trust domain (signed by the
# configured domain's key) made the registration a 500, unaudited, rather than a refusal.
@pytest.mark.parametrize(
    "subject", ["spiffe://Prod.Example/ns/billing", "spiffe:///ns/billing", "spiffe://a b/x"]
)
def test_a_jwt_svid_naming_a_malformed_trust_domain_is_refused(
    broker: Deployment, subject: str
) -> None:
    key = SigningKey.generate("ES256")
    settings = {"trust_domain": "prod.example", "bundle": spiffe_bundle(key)}
    broker.add_attestor(
        {"name": "spire", "type": "jwt_svid", "settings": settings, "policy": POLICY}
    )
    svid = mint(key, svid_claims(subject, ISSUER, broker.now()))
    answer = broker.register(
        ["read:invoices:1"], {"type": "jwt_svid", "evidence": svid, "attestor": "spire"}
    )
    assert answer.json()["detail"] == "attestation refused", answer.text
    assert "(claims)" in broker.denial(answer)
