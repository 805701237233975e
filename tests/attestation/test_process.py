"""Attestation in a real ``tasklease serve --workers 2`` on its SQLite store: the issuer's
keys fetched over HTTPS by the broker process, and evidence used once across workers
(the replay cache is the store's, migration 0013)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, jwt_parts
from issuers import IssuerCA, OidcIssuer, SigningKey, k8s_claims, make_ca, mint
from nacl.signing import SigningKey as AgentKey

pytestmark = pytest.mark.slow


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[tuple[OidcIssuer, IssuerCA]]:
    ca = make_ca(tmp_path)
    started = OidcIssuer(ca, keys=[SigningKey.generate("ES256")]).start()
    yield started, ca
    started.stop()


def register(url: str, evidence: str, task: str) -> httpx.Response:
    """One registration on a connection of its own (the kernel spreads them over workers)."""
    with httpx.Client(base_url=url, timeout=15) as client:
        key = AgentKey.generate()
        nonce = client.get("/v1/challenge").json()["nonce"]
        return client.post(
            "/v1/register",
            json={
                "attestation": {"type": "k8s_sat", "evidence": evidence},
                "nonce": nonce,
                "public_key": _b64(bytes(key.verify_key)),
                "signature": _b64(key.sign(bytes.fromhex(nonce)).signature),
                "orch_id": "orch",
                "task_id": task,
                "requested_scope": ["read:invoices:1"],
            },
        )


def test_evidence_registers_once_across_workers(
    start_broker: Callable[..., RunningBroker], issuer: tuple[OidcIssuer, IssuerCA]
) -> None:
    oidc, ca = issuer
    broker = start_broker(args=("--workers", "2"))
    audience = jwt_parts(broker.admin_token())[1]["iss"]  # the broker's issuer
    body: dict[str, Any] = {
        "name": "prod",
        "type": "k8s_sat",
        "settings": {"issuer": oidc.url, "ca_pem": ca.pem},
        "policy": [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}],
    }
    added = broker.post("/v1/admin/attestors", json=body, headers=broker.admin_headers())
    assert added.status_code == 201, added.text
    evidence = mint(oidc.keys[0], k8s_claims(oidc.url, audience, time.time()))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: register(broker.url, evidence, f"t{n}"), range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * 7, [a.text for a in answers]
    won = next(a for a in answers if a.status_code == 200).json()
    claims = jwt_parts(won["access_token"])[1]
    assert claims["attest"]["facts"]["namespace"] == "billing"
    for refused in (a for a in answers if a.status_code == 401):
        assert refused.json()["detail"] == "attestation refused"
        assert refused.json()["denial_id"].startswith("den_")
    # A fresh token registers; the evidence was never written down.
    fresh = mint(oidc.keys[0], k8s_claims(oidc.url, audience, time.time()))
    assert register(broker.url, fresh, "t-fresh").status_code == 200
    files = (p for p in Path(broker.data_dir).rglob("*.db*") if p.is_file())
    database = b"".join(p.read_bytes() for p in files)
    assert evidence.encode() not in database and fresh.encode() not in database


def test_a_tenant_has_its_own_attestors_and_accepts_only_evidence_for_its_issuer(
    start_broker: Callable[..., RunningBroker], issuer: tuple[OidcIssuer, IssuerCA]
) -> None:
    oidc, ca = issuer
    broker = start_broker()
    acme = broker.create_tenant("acme")
    home_issuer = jwt_parts(broker.admin_token())[1]["iss"]
    acme_issuer = jwt_parts(acme.admin_token())[1]["iss"]
    assert acme_issuer != home_issuer
    body: dict[str, Any] = {
        "name": "prod",
        "type": "k8s_sat",
        "settings": {"issuer": oidc.url, "ca_pem": ca.pem},
        "policy": [{"match": {}, "scope": ["read:invoices:*"]}],
    }
    added = acme.post("/v1/admin/attestors", json=body, headers=acme.admin_headers())
    assert added.status_code == 201, added.text
    listed = broker.get("/v1/admin/attestors", headers=broker.admin_headers()).json()
    assert listed["attestors"] == []  # the default tenant has none of acme's
    # Evidence made for the default tenant's issuer is refused by acme, and the reverse.
    for_home = mint(oidc.keys[0], k8s_claims(oidc.url, home_issuer, time.time()))
    refused = register(acme.url, for_home, "t1")
    assert refused.status_code == 401 and refused.json()["denial_id"], refused.text
    for_acme = mint(oidc.keys[0], k8s_claims(oidc.url, acme_issuer, time.time()))
    assert register(broker.url, for_acme, "t2").status_code == 401  # no attestor there
    accepted = register(acme.url, for_acme, "t3")
    assert accepted.status_code == 200, accepted.text
    claims = jwt_parts(accepted.json()["access_token"])[1]
    assert claims["iss"] == acme_issuer and claims["attest"]["attestor"] == "prod"
