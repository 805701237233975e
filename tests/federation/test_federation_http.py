"""The federation routes over HTTP: who may manage federated domains, what declaring an
endpoint answers, and each tenant's own bundle and federations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bundle_support import CA, Served, make_broker, make_ca, serve_broker

from tasklease.client import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from tasklease.client._admin import AdminClient
from tasklease.client.testing import BrokerForTests
from tasklease.core.clock import SystemClock
from tasklease.core.store import AuditQuery
from tasklease.rules.bundle import parse_bundle

PEER = "b.example"
OTHER = "c.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def local() -> Iterator[BrokerForTests]:
    with BrokerForTests(trust_domain="a.example") as running:
        yield running


@pytest.fixture(scope="module")
def peer(ca: CA) -> Iterator[Served]:
    broker = make_broker(PEER, clock=SystemClock(), federation_refresh_hint=30)
    with serve_broker(broker, ca.server("127.0.0.1")) as served:
        yield served


def _operator(broker: BrokerForTests, role: str, name: str) -> AdminClient:
    with broker.admin() as admin:
        secret = admin.add_operator(name, role)["secret"]
    return AdminClient(broker.url, None, operator=name, operator_secret=secret)


def test_managing_federations_needs_admin_keys(local: BrokerForTests, ca: CA) -> None:
    """(Another domain than the peer's: a removed domain cannot be declared again while its
    removal stands, and the tests after this one declare the peer.)"""
    static = '{"keys":[]}'
    for role, name in (("operator", "ops-fed"), ("auditor", "aud-fed")):
        with _operator(local, role, name) as client:
            with pytest.raises(Forbidden):
                client.add_federation(OTHER, bundle=static)
            with pytest.raises(Forbidden):
                client.list_federations()
    with _operator(local, "admin", "adm-fed") as client:
        answer = client.add_federation(OTHER, bundle=static)
        assert answer["status"] == "trusted" and answer["kids"] == []
        assert client.remove_federation(OTHER) == {"trust_domain": OTHER, "removed": True}
        with pytest.raises(NotFound):
            client.get_federation(OTHER)
    anonymous = httpx.post(f"{local.url}/v1/admin/federations", json={"trust_domain": OTHER})
    assert anonymous.status_code == 401


def test_declaring_an_endpoint_fetches_before_answering(
    local: BrokerForTests, peer: Served, ca: CA
) -> None:
    url = f"{peer.url}/v1/federation/bundle"
    with local.admin() as admin:
        first = admin.add_federation(PEER, bundle_endpoint_url=url, ca_pem=ca.pem)
        # The first bundle's sequence is the time it was published, in ms (decision 154).
        assert first["status"] == "trusted" and first["sequence"] > 1_700_000_000_000
        assert first["refresh_hint"] == 30 and first["ca"] == "pem" and not first["replaced"]
        assert first["fetched_at"] == first["checked_at"]
        # Declared again with the same endpoint: replaced, the last good bundle kept.
        again = admin.add_federation(PEER, bundle_endpoint_url=url, ca_pem=ca.pem, max_ttl=60)
        assert again["replaced"] and again["max_ttl"] == 60 and again["kids"] == first["kids"]
        # Without the CA: the system's store does not know the test CA; nothing trusted.
        system = admin.add_federation(PEER, bundle_endpoint_url=f"{url}?x=1")
        assert system["status"] == "pending" and system["ca"] == "system"
        assert system["last_error"].startswith("fetch failed: TLS")
        # An endpoint that is down: declared, pending, the error says why.
        down = admin.add_federation(
            PEER, bundle_endpoint_url="https://127.0.0.1:1/v1/federation/bundle"
        )
        assert down["status"] == "pending" and "ConnectError" in down["last_error"]
        [listed] = admin.list_federations()
        assert listed["trust_domain"] == PEER and listed["status"] == "pending"
        admin.remove_federation(PEER)


def test_each_tenant_has_its_own_bundle_and_federations(local: BrokerForTests) -> None:
    with local.admin() as admin:
        created = admin.create_tenant("fedco")
        default_bundle = admin.trust_bundle()
    tenant_url = f"{local.url}/t/fedco"
    tenant_bundle = httpx.get(f"{tenant_url}/v1/federation/bundle").json()
    tenant_jwks = httpx.get(f"{tenant_url}/.well-known/jwks.json").json()
    assert [k["kid"] for k in tenant_bundle["keys"]] == [k["kid"] for k in tenant_jwks["keys"]]
    assert not {k["kid"] for k in tenant_bundle["keys"]} & {
        k["kid"] for k in default_bundle["keys"]
    }
    assert parse_bundle(httpx.get(f"{tenant_url}/v1/federation/bundle").content, "fedco.x")
    with AdminClient(
        tenant_url, None, operator=created["admin_name"], operator_secret=created["admin_secret"]
    ) as tenant_admin:
        # The default tenant's trust domain is another domain for the tenant: it may
        # federate with it, and only the tenant sees the record.
        declared = tenant_admin.add_federation("a.example", bundle='{"keys":[]}')
        assert declared["status"] == "trusted"
        # Its own trust domain it may not.
        with pytest.raises(InvalidRequest, match="own trust domain"):
            tenant_admin.add_federation(created["trust_domain"], bundle='{"keys":[]}')
        with local.admin() as admin:
            assert admin.list_federations() == []
            # The default tenant's admin secret is no credential of the tenant's.
            with (
                AdminClient(tenant_url, local.admin_secret) as stranger,
                pytest.raises(Unauthorized),
            ):
                stranger.list_federations()
        assert [f["trust_domain"] for f in tenant_admin.list_federations()] == ["a.example"]


def test_the_bundle_endpoint_needs_no_credential(local: BrokerForTests, tmp_path: Path) -> None:
    answer = httpx.get(f"{local.url}/v1/federation/bundle")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "public, max-age=60"  # the default hint: 300
    bundle = parse_bundle(answer.content, "a.example")
    assert bundle.refresh_hint == 300 and bundle.sequence is not None
    assert list(bundle.keys) == [
        k["kid"] for k in httpx.get(f"{local.url}/.well-known/jwks.json").json()["keys"]
    ]


_EXCHANGE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    "actor_token_type": "urn:ietf:params:oauth:token-type:access_token",
}


def test_a_bound_token_of_a_federated_domain_is_not_exchanged() -> None:
    """A DPoP-bound token narrowed for B is refused at B's exchange, whoever presents it:
    the request proves the actor's key only, never the subject token's (a stolen bound
    token must not cross as a bearer one). A bearer token of the same domain crosses."""
    with (
        BrokerForTests(trust_domain="a.example") as a,
        BrokerForTests(trust_domain="b.example") as b,
    ):
        bundle = httpx.get(f"{a.url}/v1/federation/bundle").text
        b.admin().add_federation("a.example", bundle=bundle, scope_map=[("read:data:*",) * 2])
        with (
            a.agent(["read:data:*"], dpop=True) as alice,
            a.agent(["read:data:*"], task_id="carol-task") as carol,  # a bearer agent of A
            b.agent(["write:x:1"]) as mallory,  # any agent of B, without alice's key
        ):
            bound = alice.exchange(resource="spiffe://b.example")
            assert bound.token_type == "DPoP"
            bearer = carol.exchange(resource="spiffe://b.example")
            assert bearer.token_type == "Bearer"

            def cross(subject: str) -> httpx.Response:
                form = {**_EXCHANGE, "subject_token": subject, "actor_token": mallory.token}
                return httpx.post(f"{b.url}/v1/oauth/token", data=form)

            refused = cross(bound.token)
            assert refused.status_code == 400, refused.text
            body = refused.json()
            assert body["error"] == "invalid_request" and body["denial_id"].startswith("den_")
            events, _ = b.broker.store.query_audit(AuditQuery(limit=10_000))
            [denied] = [e for e in events if f"denial={body['denial_id']}" in e.detail]
            assert denied.event_type == "token_exchange_denied" and "cnf" in denied.detail
            # The same domain's bearer token crosses: the refusal is the binding's alone.
            crossed = cross(bearer.token)
            assert crossed.status_code == 200, crossed.text
            assert crossed.json()["scope"] == "read:data:*"


def test_removing_a_federation_ends_what_was_derived_from_it() -> None:
    """``federation remove`` ends the tokens exchanged from the domain's credentials:
    the one B issued no longer validates, renews or delegates, through a chain-level
    revocation on ``fed:<domain>`` that every replica and verifier follows."""
    with (
        BrokerForTests(trust_domain="a.example") as a,
        BrokerForTests(trust_domain="b.example") as b,
    ):
        bundle = httpx.get(f"{a.url}/v1/federation/bundle").text
        admin = b.admin()
        admin.add_federation("a.example", bundle=bundle, scope_map=[("read:data:*",) * 2])
        with (
            a.agent(["read:data:*"]) as alice,
            b.agent(["read:data:*"]) as bob,
            b.agent(["read:data:*"], task_id="carol-task") as carol,
        ):
            subject = alice.exchange(resource="spiffe://b.example").token

            def cross() -> httpx.Response:
                form = {**_EXCHANGE, "subject_token": subject, "actor_token": bob.token}
                return httpx.post(f"{b.url}/v1/oauth/token", data=form)

            def delegate(token: str) -> httpx.Response:
                return httpx.post(
                    f"{b.url}/v1/delegate",
                    json={"delegate_to": carol.agent_id, "scope": ["read:data:1"]},
                    headers={"Authorization": f"Bearer {token}"},
                )

            def valid(token: str) -> bool:
                answer = httpx.post(f"{b.url}/v1/token/validate", json={"token": token})
                return bool(answer.json()["valid"])

            held = cross().json()["access_token"]
            handed = delegate(held)
            assert handed.status_code == 200, handed.text
            handed_on = handed.json()["access_token"]
            assert valid(held) and valid(handed_on)

            admin.remove_federation("a.example")
            assert not valid(held) and not valid(handed_on)
            assert delegate(held).status_code == 401
            renewed = httpx.post(
                f"{b.url}/v1/token/renew", headers={"Authorization": f"Bearer {held}"}
            )
            assert renewed.status_code == 401, renewed.text
            listed = admin.list_revocations()["revocations"]
            assert [(e["level"], e["target"]) for e in listed] == [("chain", "fed:a.example")]
            # Declared again at once: what derives from it stays ended until the entry
            # expires (stricter, never looser), so the declaration is refused, saying until
            # when, and the domain's tokens are still refused.
            with pytest.raises(Conflict, match="its removal stands until"):
                admin.add_federation("a.example", bundle=bundle, scope_map=[("read:data:*",) * 2])
            again = cross()
            assert again.status_code == 400 and again.json()["error"] == "invalid_request"
