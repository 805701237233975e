# Would fail if: a tenant could be created with the default tenant's trust domain (its
# agents' SPIFFE ids the same as the default tenant's), a malformed trust domain were
# recorded in the tenant registry, a name taken were answered with its tenant when asked
# with another trust domain, a removed tenant were served again by creating it again, one
# tenant's registration nonce were accepted by another, or a tenant's broker served the
# process's metrics (every tenant's) to its own operators.
"""The tenant registry's refusals, and what a tenant's broker does not inherit from the
default tenant's configuration, in process (tenants: docs/tenants.md)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from tasklease.core.records import AuditQuery
from tasklease.core.tenants import check_tenant_id
from tasklease.http.app import create_app
from tasklease.tenancy import Tenancy

from .conftest import BrokerFactory, Kit


def _refusals(broker: Broker) -> list[str]:
    found, _ = broker.store.query_audit(AuditQuery(event_type="tenant_refused", limit=100))
    return [event.detail for event in found if event.outcome == "denied"]


def test_a_tenant_cannot_take_the_default_tenants_trust_domain(
    broker: Broker, kit: type[Kit]
) -> None:
    admin = kit.admin(broker).claims
    own = broker.config.trust_domain
    with pytest.raises(Conflict, match="trust domain"):
        broker.create_tenant(admin, name="acme", trust_domain=own, ctx=kit.ctx)
    assert broker.get_tenant("acme") is None and broker.list_tenants() == []
    [refusal] = _refusals(broker)
    assert "tenant=acme" in refusal
    # Another trust domain is fine: the refusal was for the default tenant's only.
    record = broker.create_tenant(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
    assert record.trust_domain == "acme.example" != own


def test_a_name_taken_with_another_trust_domain_is_refused(broker: Broker, kit: type[Kit]) -> None:
    """Asking again for a tenant with its own trust domain returns it (a creation that
    stopped half-way is finished so); with another trust domain it is refused, never
    answered with the tenant of the other trust domain."""
    admin = kit.admin(broker).claims
    first = broker.create_tenant(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
    again = broker.create_tenant(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
    assert again == first
    with pytest.raises(Conflict, match="name already exists"):
        broker.create_tenant(admin, name="acme", trust_domain="globex.example", ctx=kit.ctx)
    [refusal] = _refusals(broker)
    assert "tenant=acme" in refusal
    assert broker.list_tenants() == [first]


@pytest.mark.parametrize(
    "trust_domain",
    ["Acme.Example", "acme.example/agent", "spiffe://acme.example", "acme example", "a" * 256],
)
def test_a_malformed_trust_domain_is_refused_before_it_is_recorded(
    broker: Broker, kit: type[Kit], trust_domain: str
) -> None:
    admin = kit.admin(broker).claims
    with pytest.raises(InvalidRequest, match="trust domain"):
        broker.create_tenant(admin, name="acme", trust_domain=trust_domain, ctx=kit.ctx)
    assert broker.get_tenant("acme") is None and broker.list_tenants() == []


def test_a_tenant_does_not_serve_the_process_metrics(
    make_broker: BrokerFactory, kit: type[Kit]
) -> None:
    """``metrics_public = "token"`` serves the process's metrics (every tenant's) to the
    default tenant's operators; a tenant's operators are answered as for any unknown path."""
    broker = make_broker(metrics_public="token")
    tenancy = Tenancy(broker)
    tenancy.create(kit.admin(broker).claims, name="acme", trust_domain=None, ctx=kit.ctx)
    acme = tenancy.broker("acme")
    assert acme is not None
    app = create_app(broker, background=False, tenancy=tenancy, metrics_render=lambda: b"m 1\n")
    try:
        with TestClient(app) as client:
            own = client.get(
                "/v1/metrics", headers={"Authorization": kit.bearer(kit.admin(broker).token)}
            )
            assert own.status_code == 200, own.text
            theirs = client.get(
                "/t/acme/v1/metrics", headers={"Authorization": kit.bearer(kit.admin(acme).token)}
            )
            assert theirs.status_code == 404, theirs.text
            assert theirs.json()["error_code"] == "not_found"
            # The tenant's admin token is good there: the 404 is the route, not the token.
            audit = client.get(
                "/t/acme/v1/audit/events",
                headers={"Authorization": kit.bearer(kit.admin(acme).token)},
            )
            assert audit.status_code == 200, audit.text
    finally:
        tenancy.close()
        broker.audit.close()


def test_a_nonce_one_tenant_issued_is_refused_by_another(broker: Broker, kit: type[Kit]) -> None:
    """Each tenant's nonces are its own (their key derived for the tenant): a registration
    challenge answered at the default tenant cannot be spent at a tenant's, nor back."""
    tenancy = Tenancy(broker)
    try:
        tenancy.create(kit.admin(broker).claims, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        for issuer, spender in ((broker, acme), (acme, broker)):
            nonce, _ = issuer.challenge()
            launch = kit.launch(spender)
            args, _ = kit.register_args(spender, launch, nonce=nonce)
            with pytest.raises(Unauthorized, match="nonce"):
                spender.register(**args)
            # The same launch token, with the spender's own nonce: registered.
            agent = kit.register(spender, launch)
            assert agent.sub.startswith(f"spiffe://{spender.config.trust_domain}/")
    finally:
        tenancy.close()


def test_a_removed_tenant_is_not_brought_back_by_creating_it_again(
    broker: Broker, kit: type[Kit]
) -> None:
    """Names are never reused: asking for a removed tenant again is refused before its
    broker is opened, so the removed tenant is not served here even until the next
    registry read."""
    tenancy = Tenancy(broker)
    admin = kit.admin(broker).claims
    try:
        tenancy.create(admin, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        tenancy.remove(admin, "acme", kit.ctx)
        with pytest.raises(Conflict, match="removed"):
            tenancy.create(admin, name="acme", trust_domain=None, ctx=kit.ctx)
        # Not served again, not even for a moment.
        assert tenancy.broker("acme") is None
        assert [t.status for t in broker.list_tenants()] == ["removed"]
        assert not acme.serving
        assert "removed" in _refusals(broker)[-1]
    finally:
        tenancy.close()


# Would fail if: creating a tenant that exists and is complete were answered with its
# first operator's refusal ("operator name already exists"), written into that tenant's
# own audit log, rather than refused as the tenant registry's: "tenant already exists",
# in the default tenant's log, under the denial_id the caller is given.
def test_creating_a_complete_tenant_again_says_the_tenant_exists(
    broker: Broker, kit: type[Kit]
) -> None:
    tenancy = Tenancy(broker)
    admin = kit.admin(broker).claims
    try:
        tenancy.create(admin, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        head_before = acme.store.audit_head()
        with pytest.raises(Conflict, match="tenant acme already exists") as again:
            tenancy.create(admin, name="acme", trust_domain=None, ctx=kit.ctx)
        assert again.value.denial_id
        assert f"denial={again.value.denial_id}" in _refusals(broker)[-1]
        # Nothing of the refusal in acme's own log: its admins did nothing.
        assert acme.store.audit_head() == head_before
    finally:
        tenancy.close()


def test_a_removal_that_lost_a_race_with_another_is_refused(
    broker: Broker, kit: type[Kit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two removals of one tenant at once (two replicas): the one that looked before the
    other committed is refused in its write (404, audited), never a second removal
    answered 200 and audited as done, its time written over the first's."""
    admin = kit.admin(broker).claims
    active = broker.create_tenant(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
    first = broker.remove_tenant(admin, "acme", kit.ctx)
    monkeypatch.setattr(broker.store, "get_tenant", lambda name: active)  # looked before
    with pytest.raises(NotFound) as lost:
        broker.remove_tenant(admin, "acme", kit.ctx)
    monkeypatch.undo()
    assert lost.value.denial_id
    assert f"denial={lost.value.denial_id}" in _refusals(broker)[-1]
    removed, _ = broker.store.query_audit(AuditQuery(event_type="tenant_removed", limit=10))
    assert len(removed) == 1
    assert broker.list_tenants() == [first]


@pytest.mark.parametrize(
    "name",
    ["a/b", "a/../../x", "a.b", "a_b", "a%2fb", "Acme", "a-", "-a", "a" * 64, "a\nb", "default"],
)
def test_a_tenant_name_is_a_dns_label_and_not_the_default_tenants(
    broker: Broker, kit: type[Kit], name: str
) -> None:
    """The name becomes a URL path segment, a directory under the key directory and an
    SQL literal: nothing but a DNS label gets through, so no name reaches out of
    ``<key_dir>/tenants``."""
    admin = kit.admin(broker).claims
    with pytest.raises(InvalidRequest, match="tenant"):  # a good trust domain given
        broker.create_tenant(admin, name=name, trust_domain="x.example", ctx=kit.ctx)
    assert broker.list_tenants() == []
    if name != "default":
        with pytest.raises(ValueError, match="not a tenant id"):
            check_tenant_id(name)


@pytest.mark.parametrize("name", ["a", "0", "a-b", "a--b", "a" * 63])
def test_every_dns_label_is_a_tenant_name(broker: Broker, kit: type[Kit], name: str) -> None:
    record = broker.create_tenant(
        kit.admin(broker).claims, name=name, trust_domain=None, ctx=kit.ctx
    )
    assert record.name == check_tenant_id(name) == name


def test_a_tenant_holds_its_own_signing_key_without_a_key_directory(
    broker: Broker, kit: type[Kit]
) -> None:
    """Keys held in memory (no key directory) are made for each tenant, never shared with
    the default tenant: its kid is not in the tenant's JWKS, so a token it signed is not
    the tenant's by its key either (only the issuer would tell them apart)."""
    tenancy = Tenancy(broker)
    try:
        tenancy.create(kit.admin(broker).claims, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        assert acme.keyring.active_kid != broker.keyring.active_kid
        assert acme.keyring.jwks()["keys"][0]["kid"] == acme.keyring.active_kid
        assert broker.keyring.active_kid not in {k["kid"] for k in acme.keyring.jwks()["keys"]}
    finally:
        tenancy.close()
