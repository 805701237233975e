"""An agent registered through an app's attestor belongs to that app, whatever launch
token came with the evidence.

An attestor configured for an app (`app_id`) lists the app in its registrations'
lineage, so removing the app ends its agents (docs/attestation.md), and the registering
`Workload` is in the attestor's `App` for the issuance policy (docs/policy.md).

Would fail if: a registration with an app-less launch token (an admin's or an
operator's) and evidence from app B's attestor were recorded under no app (a policy on
`principal in App::"B"` did not see the registration, and the agent, as a holder of
delegated tokens, outlived app B's removal), or a registration with app A's launch token
and app B's attestor were admitted (it could belong to only one of them, and escaped the
other's policies and removal).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, ISSUER, START, admin, audit_detail, make_broker, register, valid
from issuers import SigningKey, k8s_claims, mint

from tasklease.core.broker import Broker
from tasklease.core.errors import Forbidden, NotFound, TaskleaseError
from tasklease.core.policy import DEFAULT_POLICY, compile_policies

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*", "write:invoices:*"]}]


def _broker() -> tuple[Broker, SigningKey, Any]:
    """A broker with app B and its attestor ``b-cluster``; returns the app too."""
    broker = make_broker()
    key = SigningKey.generate("RS256")
    app, _secret = broker.register_app(
        admin(broker),
        name="billing",
        scopes=["read:invoices:*", "write:invoices:*"],
        token_ttl=300,
        ctx=CTX,
    )
    broker.attestation.add(
        admin(broker),
        name="b-cluster",
        type="k8s_sat",
        settings={"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})},
        policy=POLICY,
        app_id=app.app_id,
        ctx=CTX,
    )
    return broker, key, app


def _evidence(key: SigningKey) -> dict[str, str]:
    claims = k8s_claims(K8S_ISS, ISSUER, START, namespace="billing")
    return {"type": "k8s_sat", "evidence": mint(key, claims)}


def _admin_launch_token(broker: Broker) -> str:
    token, _record = broker.create_launch_token(
        admin(broker),
        agent_name="runner",
        allowed_scope=["read:invoices:*", "write:invoices:*"],
        max_ttl=300,
        single_use=True,
        ttl=600,
        ctx=CTX,
    )
    return token


def test_an_app_less_launch_token_with_an_apps_attestor_registers_under_the_app() -> None:
    broker, key, app = _broker()
    issued = register(
        broker,
        ["read:invoices:1"],
        attestation=_evidence(key),
        launch_token=_admin_launch_token(broker),
    )
    assert f"app:{app.app_id}" in issued.claims.lineage  # held to app B's ceiling
    agent = broker.store.get_agent(issued.claims.sub)
    assert agent is not None and agent.app_id == app.app_id
    assert issued.claims.client_id == app.client_id

    # A token another agent delegates to it lists app B: removing the app ends it, and
    # the agent is handed nothing more.
    lead = register(
        broker,
        ["read:invoices:1"],
        launch_token=_admin_launch_token(broker),
        task="task-lead",
    )
    handed = broker.delegate(
        lead.claims, delegate_to=issued.claims.sub, scope=["read:invoices:1"], ttl=60, ctx=CTX
    )
    assert f"app:{app.app_id}" in handed.claims.lineage
    broker.deregister_app(admin(broker), app.app_id, CTX)
    assert not valid(broker, issued.token)
    assert not valid(broker, handed.token)
    assert valid(broker, lead.token)  # an agent of no app is untouched
    with pytest.raises(NotFound):
        broker.delegate(
            lead.claims, delegate_to=issued.claims.sub, scope=["read:invoices:1"], ttl=60, ctx=CTX
        )


def test_a_policy_on_the_app_decides_a_registration_through_its_attestor() -> None:
    broker, key, app = _broker()
    forbid = (
        '@id("billing-closed")\n'
        f'forbid (principal in App::"{app.app_id}", action == Action::"register", resource);\n'
    )
    broker.policy.use(compile_policies([("all.cedar", DEFAULT_POLICY + forbid)], "test"))
    for launch_token in (None, _admin_launch_token(broker)):
        with pytest.raises(TaskleaseError) as info:
            register(
                broker,
                ["read:invoices:1"],
                attestation=_evidence(key),
                launch_token=launch_token,
            )
        error = info.value
        assert isinstance(error, Forbidden) and error.denial_id
        assert any("deny[billing-closed]" in d for d in audit_detail(broker, error.denial_id))
    # The launch token alone is of no app: the policy does not concern it.
    issued = register(broker, ["read:invoices:1"], launch_token=_admin_launch_token(broker))
    assert issued.claims.scope == ("read:invoices:1",)


def test_a_launch_token_of_another_app_with_an_apps_attestor_is_refused() -> None:
    broker, key, app = _broker()
    other, _secret = broker.register_app(
        admin(broker), name="ops", scopes=["read:invoices:*"], token_ttl=300, ctx=CTX
    )
    # An app's own launch token, as the app makes it.
    made = broker.app_auth(other.client_id, _secret, CTX)
    token, record = broker.create_launch_token(
        made.claims,
        agent_name="runner",
        allowed_scope=["read:invoices:*"],
        max_ttl=300,
        single_use=True,
        ttl=600,
        ctx=CTX,
    )
    assert record.app_id == other.app_id
    with pytest.raises(TaskleaseError) as info:
        register(broker, ["read:invoices:1"], attestation=_evidence(key), launch_token=token)
    error = info.value
    assert isinstance(error, Forbidden) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    assert f"app:{other.app_id}" in detail and f"app:{app.app_id}" in detail
    # The launch token is not spent: with no evidence it registers under its own app.
    issued = register(broker, ["read:invoices:1"], launch_token=token)
    assert issued.claims.client_id == other.client_id
