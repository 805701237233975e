"""An agent registered with a federated domain's evidence stands on that domain as a
holder too, not only as a presenter.

Removing the domain (or revoking ``fed:<domain>`` at level ``chain``) ends the agents
registered with its SVIDs (docs/attestation.md): their own tokens list ``fed:<domain>``.
What another agent of ours delegated to such an agent must end with them, and such an
agent must not be handed anything more afterwards, as for an agent whose app was removed
or whose attestation was revoked.

Would fail if: the agent's standing, and the lineage a token handed to it lists, left out
the federated domain its registration descends from (``lineage.agent_lineage``).
"""

from __future__ import annotations

from typing import Any

import pytest
from core_support import CTX, START, admin, make_broker, register, valid
from issuers import SigningKey, mint, spiffe_bundle, svid_claims

from tasklease.core.broker import Broker
from tasklease.core.errors import NotFound
from tasklease.core.foreign import domain_entry
from tasklease.core.lineage import agent_lineage

ISSUER = "https://broker.example"
DOMAIN = "partner.example"
POLICY = [{"match": {}, "scope": ["read:shared:*"]}]


def federated_broker() -> tuple[Broker, SigningKey]:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    broker.federation.add(admin(broker), trust_domain=DOMAIN, bundle=spiffe_bundle(key), ctx=CTX)
    settings = {"trust_domain": DOMAIN, "federation": True}
    broker.attestation.add(
        admin(broker), name="partner", type="jwt_svid", settings=settings, policy=POLICY, ctx=CTX
    )
    return broker, key


def federated_agent(broker: Broker, key: SigningKey) -> str:
    claims = svid_claims(f"spiffe://{DOMAIN}/helper", ISSUER, START)
    issued = register(
        broker, ["read:shared:1"], attestation={"type": "jwt_svid", "evidence": mint(key, claims)}
    )
    assert domain_entry(DOMAIN) in issued.claims.lineage
    return str(issued.claims.sub)


def local_agent(broker: Broker) -> Any:
    launch, _ = broker.create_launch_token(
        admin(broker),
        agent_name="local",
        allowed_scope=["read:shared:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=CTX,
    )
    return register(broker, ["read:shared:*"], launch_token=launch, task="t-local")


def test_the_federated_domain_is_an_ancestor_of_the_registration() -> None:
    broker, key = federated_broker()
    agent = broker.store.get_agent(federated_agent(broker, key))
    assert agent is not None
    assert domain_entry(DOMAIN) in (agent_lineage(agent) or ())


def _end(broker: Broker, how: str) -> None:
    if how == "remove":
        broker.federation.remove(admin(broker), DOMAIN, CTX)
    else:
        broker.revoke(admin(broker), level="chain", target=domain_entry(DOMAIN), ctx=CTX)


@pytest.mark.parametrize("how", ["remove", "revoke"])
def test_what_was_handed_to_it_ends_with_the_domain(how: str) -> None:
    broker, key = federated_broker()
    helper = federated_agent(broker, key)
    giver = local_agent(broker)
    handed = broker.delegate(
        giver.claims, delegate_to=helper, scope=["read:shared:1"], ttl=60, ctx=CTX
    )
    assert domain_entry(DOMAIN) in handed.claims.lineage
    assert valid(broker, handed.token)
    _end(broker, how)
    assert not valid(broker, handed.token)
    assert valid(broker, giver.token)  # the giver is no descendant of the domain


@pytest.mark.parametrize("how", ["remove", "revoke"])
def test_it_is_handed_nothing_once_the_domain_has_ended(how: str) -> None:
    broker, key = federated_broker()
    helper = federated_agent(broker, key)
    giver = local_agent(broker)
    _end(broker, how)
    broker.clock.advance(broker.config.clock_skew + 1)
    with pytest.raises(NotFound) as refused:
        broker.delegate(giver.claims, delegate_to=helper, scope=["read:shared:1"], ttl=60, ctx=CTX)
    assert refused.value.denial_id


def test_over_http_the_domains_removal_ends_what_its_agent_was_handed() -> None:
    from http_support import deploy

    deployment = deploy()
    try:
        client, admin_headers = deployment.client, deployment.admin_headers()
        key = SigningKey.generate("RS256")
        added = client.post(
            "/v1/admin/federations",
            json={"trust_domain": DOMAIN, "bundle": spiffe_bundle(key)},
            headers=admin_headers,
        )
        assert added.status_code == 201, added.text
        deployment.add_attestor(
            {
                "name": "partner",
                "type": "jwt_svid",
                "settings": {"trust_domain": DOMAIN, "federation": True},
                "policy": POLICY,
            }
        )
        svid = mint(key, svid_claims(f"spiffe://{DOMAIN}/helper", ISSUER, deployment.now()))
        helper = deployment.register(["read:shared:1"], {"type": "jwt_svid", "evidence": svid})
        assert helper.status_code == 200, helper.text
        launch = client.post(
            "/v1/admin/launch-tokens",
            json={"agent_name": "local", "allowed_scope": ["read:shared:*"]},
            headers=admin_headers,
        )
        assert launch.status_code == 201, launch.text
        giver = deployment.register(
            ["read:shared:*"], None, launch_token=launch.json()["launch_token"], task="t-local"
        )
        assert giver.status_code == 200, giver.text
        bearer = {"Authorization": f"Bearer {giver.json()['access_token']}"}
        body = {"delegate_to": helper.json()["agent_id"], "scope": ["read:shared:1"]}
        handed = client.post("/v1/delegate", json=body, headers=bearer)
        assert handed.status_code == 200, handed.text

        removed = client.delete(f"/v1/admin/federations/{DOMAIN}", headers=admin_headers)
        assert removed.status_code == 200, removed.text
        check = {"token": handed.json()["access_token"]}
        assert client.post("/v1/token/validate", json=check).json()["valid"] is False
        deployment.clock.advance(deployment.broker.config.clock_skew + 1)
        again = client.post("/v1/delegate", json=body, headers=bearer)
        assert again.status_code == 404, again.text
        assert again.json()["denial_id"].startswith("den_")
    finally:
        deployment.stop()
