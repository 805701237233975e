"""An attestor's keys parsed from a JWK Set's text are remembered by how they were read.

The same text can be a pinned JWK Set (``jwks``: every signing key of it) and a federated
domain's SPIFFE bundle (a ``jwt_svid`` attestor with ``"federation": true``: only its
``jwt-svid`` keys). The two readings differ, so one must never answer for the other: a
key the bundle publishes for another use (``"use": "sig"``) does not verify that
domain's JWT-SVIDs, whichever attestor was used first in the process.

Would fail if: the parsed keys were remembered by the text alone (a key of the pinned
set's reading verified a JWT-SVID of the federated domain; or the pinned attestor lost
a key of its own set once the federated reading was remembered).
"""

from __future__ import annotations

import json

import pytest
from core_support import CTX, START, admin, make_broker, register
from issuers import SigningKey, mint, svid_claims

from tasklease.core.broker import Broker
from tasklease.core.errors import TaskleaseError

ISSUER = "https://broker.example"
DOMAIN = "partner.example"
OIDC_ISSUER = "https://ci.partner.example"
POLICY = [{"match": {}, "scope": ["read:shared:*"]}]


def _setup() -> tuple[Broker, SigningKey, SigningKey]:
    """A broker trusting one text twice: as ``DOMAIN``'s bundle (whose JWT-SVID key is
    ``svid``; ``other`` is published for signatures of another kind) and as an ``oidc``
    attestor's pinned JWK Set (which trusts both)."""
    broker = make_broker()
    svid, other = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    entries = [{**svid.jwk(), "use": "jwt-svid"}, other.jwk()]  # other: "use": "sig"
    for entry in entries:
        entry.pop("alg", None)
    text = json.dumps({"keys": entries, "spiffe_sequence": 1})
    broker.federation.add(admin(broker), trust_domain=DOMAIN, bundle=text, ctx=CTX)
    broker.attestation.add(
        admin(broker),
        name="partner",
        type="jwt_svid",
        settings={"trust_domain": DOMAIN, "federation": True},
        policy=POLICY,
        ctx=CTX,
    )
    broker.attestation.add(
        admin(broker),
        name="ci",
        type="oidc",
        settings={"issuer": OIDC_ISSUER, "jwks": text},
        policy=POLICY,
        ctx=CTX,
    )
    return broker, svid, other


def _svid(key: SigningKey) -> dict[str, str]:
    claims = svid_claims(f"spiffe://{DOMAIN}/workload", ISSUER, START)
    return {"type": "jwt_svid", "evidence": mint(key, claims), "attestor": "partner"}


def _oidc(key: SigningKey) -> dict[str, str]:
    iat = int(START)
    claims = {"iss": OIDC_ISSUER, "sub": "job", "aud": ISSUER, "iat": iat, "exp": iat + 300}
    return {"type": "oidc", "evidence": mint(key, claims), "attestor": "ci"}


def test_a_pinned_sets_reading_does_not_verify_a_federated_domains_svids() -> None:
    broker, _svid_key, other = _setup()
    register(broker, ["read:shared:1"], attestation=_oidc(other))  # the pinned reading first
    with pytest.raises(TaskleaseError) as refused:
        register(broker, ["read:shared:1"], attestation=_svid(other), task="t2")
    assert refused.value.denial_id


def test_a_federated_reading_does_not_narrow_a_pinned_set() -> None:
    broker, svid, other = _setup()
    register(broker, ["read:shared:1"], attestation=_svid(svid))  # the bundle's reading first
    issued = register(broker, ["read:shared:1"], attestation=_oidc(other), task="t2")
    assert issued.token
