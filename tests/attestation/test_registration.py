"""Registration with workload evidence, in process: the kernel's ceiling, the lineage,
the attest claim, replay, and every refusal audited once with its denial id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, ISSUER, START, admin, audit_detail, make_broker, register
from issuers import SigningKey, github_claims, k8s_claims, mint

from tasklease.core.errors import InvalidRequest, ScopeViolation, TaskleaseError, Unauthorized
from tasklease.core.validation import TokenRejected
from tasklease.verify import InsufficientScope, VerifiedToken, require_attested

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
POLICY = [
    {
        "match": {"namespace": "billing", "service_account": "agent-runner"},
        "scope": ["read:invoices:*"],
        "ttl": 120,
        "lifetime": 900,
    },
    {"match": {"namespace": "ops"}, "scope": ["read:metrics:*"]},
]


def configured(**settings: Any) -> tuple[Any, SigningKey]:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    raw = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]}), **settings}
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=raw, policy=POLICY, ctx=CTX
    )
    return broker, key


def evidence(key: SigningKey, **claims: Any) -> dict[str, str]:
    now = claims.pop("now", START)
    token = mint(key, {**k8s_claims(K8S_ISS, ISSUER, now, **claims)})
    return {"type": "k8s_sat", "evidence": token}


def refusal(call: Any) -> TaskleaseError:
    with pytest.raises(TaskleaseError) as info:
        call()
    return info.value


def test_an_agent_registers_with_evidence_and_no_launch_token() -> None:
    broker, key = configured()
    issued = register(
        broker,
        ["read:invoices:42"],
        attestation=evidence(key),
        declared={"model": "acme/gpt/7", "sdk": "tasklease-python/0.1"},
    )
    claims = issued.claims
    assert claims.scope == ("read:invoices:42",)
    assert claims.exp - claims.iat == 120  # the rule's ttl, not the broker's default
    assert claims.max_exp == int(START) + 900  # the rule's lifetime ceiling
    attest = claims.raw["attest"]
    assert attest["type"] == "k8s_sat" and attest["attestor"] == "prod"
    assert attest["sub"] == "system:serviceaccount:billing:agent-runner"
    assert attest["facts"]["namespace"] == "billing"
    assert attest["declared"] == {"model": "acme/gpt/7", "sdk": "tasklease-python/0.1"}
    assert "model" not in attest["facts"]
    assert claims.lineage == ("attest:k8s_sat:prod:system:serviceaccount:billing:agent-runner",)
    assert claims.principal == "attestor:prod"
    # Renewal and delegation keep the attestation.
    renewed = broker.renew(claims, CTX)
    assert renewed.claims.raw["attest"] == attest
    assert renewed.claims.max_exp == claims.max_exp


def test_the_policy_ceiling_holds_in_the_issuance_check() -> None:
    broker, key = configured()
    error = refusal(lambda: register(broker, ["write:invoices:42"], attestation=evidence(key)))
    assert isinstance(error, ScopeViolation) and error.denial_id
    assert len(audit_detail(broker, error.denial_id)) == 1
    # Another namespace earns the other rule; a namespace no rule names earns nothing.
    ops = register(broker, ["read:metrics:cpu"], attestation=evidence(key, namespace="ops"))
    assert ops.claims.scope == ("read:metrics:cpu",)
    error = refusal(
        lambda: register(broker, ["read:metrics:cpu"], attestation=evidence(key, namespace="dev"))
    )
    assert isinstance(error, Unauthorized) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    assert "(policy)" in detail and "evidence=" in detail


def test_evidence_is_single_use_and_never_stored_in_clear() -> None:
    broker, key = configured()
    used = evidence(key)
    register(broker, ["read:invoices:1"], attestation=used)
    error = refusal(lambda: register(broker, ["read:invoices:1"], attestation=used, task="t2"))
    assert isinstance(error, Unauthorized) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    assert "evidence already used" in detail
    store = broker.store
    assert used["evidence"] not in repr(vars(store))
    events, _ = broker.audit_events(
        __import__("tasklease.core.store", fromlist=["x"]).AuditQuery(limit=1000)
    )
    assert all(used["evidence"] not in e.detail for e in events)


def test_refusals_each_carry_a_denial_id_and_one_audit_event() -> None:
    broker, key = configured()
    other = SigningKey.generate("RS256")
    cases = {
        "audience": evidence(key)
        | {"evidence": mint(key, k8s_claims(K8S_ISS, "https://other", START))},
        "expired": evidence(key, now=START - 601),
        "key": {"type": "k8s_sat", "evidence": mint(other, k8s_claims(K8S_ISS, ISSUER, START))},
        "not_configured": {
            "type": "k8s_sat",
            "evidence": mint(key, k8s_claims("https://elsewhere", ISSUER, START)),
        },
        "not_configured ": {
            "type": "oidc",
            "evidence": mint(key, k8s_claims(K8S_ISS, ISSUER, START)),
        },
    }
    for category, attestation in cases.items():
        error = refusal(lambda a=attestation: register(broker, ["read:invoices:1"], attestation=a))
        assert isinstance(error, Unauthorized), category
        assert error.detail == "attestation refused"
        [detail] = audit_detail(broker, error.denial_id or "?")
        assert f"({category.strip()})" in detail, detail


def test_a_malformed_attestation_is_a_bad_request() -> None:
    broker, _key = configured()
    for bad in ({"type": "k8s_sat"}, {"type": "magic", "evidence": "x"}, "text"):
        with pytest.raises(InvalidRequest):
            register(broker, ["read:invoices:1"], attestation=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        register(broker, ["read:invoices:1"], attestation=evidence(_key), declared={"ceo": "yes"})


def test_launch_token_and_evidence_together_are_bounded_by_both() -> None:
    broker, key = configured()
    claims = admin(broker)
    token = broker.create_launch_token(
        claims,
        agent_name="a",
        allowed_scope=["read:invoices:7", "read:users:1"],
        max_ttl=300,
        single_use=True,
        ttl=300,
        ctx=CTX,
    )[0]
    issued = register(broker, ["read:invoices:7"], launch_token=token, attestation=evidence(key))
    assert issued.claims.raw["attest"]["type"] == "k8s_sat"
    assert issued.claims.exp - issued.claims.iat == 120
    token = broker.create_launch_token(
        claims,
        agent_name="b",
        allowed_scope=["read:users:1"],
        max_ttl=300,
        single_use=True,
        ttl=300,
        ctx=CTX,
    )[0]
    error = refusal(
        lambda: register(broker, ["read:users:1"], launch_token=token, attestation=evidence(key))
    )
    assert isinstance(error, ScopeViolation)  # the launch token allows it; the policy does not


def test_a_delegated_token_keeps_the_delegators_attestation() -> None:
    broker, key = configured()
    runner = register(broker, ["read:invoices:*"], attestation=evidence(key))
    helper = register(
        broker, ["read:metrics:cpu"], attestation=evidence(key, namespace="ops"), task="t-ops"
    )
    delegated = broker.delegate(
        runner.claims,
        delegate_to=helper.claims.sub,
        scope=["read:invoices:42"],
        ttl=60,
        ctx=CTX,
    )
    # The delegate acts under the delegator's attestation, not its own.
    assert delegated.claims.raw["attest"] == runner.claims.raw["attest"]
    assert delegated.claims.raw["attest"]["facts"]["namespace"] == "billing"
    ancestor = "attest:k8s_sat:prod:system:serviceaccount:billing:agent-runner"
    assert ancestor in delegated.claims.lineage
    # Revoking the attestation's ancestor (level chain) ends both, and refuses new
    # registrations through that subject while the entry lives.
    broker.revoke(admin(broker), level="chain", target=ancestor, ctx=CTX)
    with pytest.raises(TokenRejected):
        broker.validate(runner.token, ctx=CTX)
    with pytest.raises(TokenRejected):
        broker.validate(delegated.token, ctx=CTX)
    error = refusal(lambda: register(broker, ["read:invoices:1"], attestation=evidence(key)))
    assert error.denial_id and len(audit_detail(broker, error.denial_id)) == 1


def test_an_apps_attestor_grants_within_the_app_and_lists_it_in_the_lineage() -> None:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    claims = admin(broker)
    app, _secret = broker.register_app(
        claims, name="billing", scopes=["read:invoices:*"], token_ttl=300, ctx=CTX
    )
    settings = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    wider = [{"match": {}, "scope": ["write:invoices:*"]}]
    with pytest.raises(InvalidRequest):
        broker.attestation.add(
            claims,
            name="p",
            type="k8s_sat",
            settings=settings,
            policy=wider,
            app_id=app.app_id,
            ctx=CTX,
        )
    broker.attestation.add(
        claims,
        name="p",
        type="k8s_sat",
        settings=settings,
        policy=POLICY[:1],
        app_id=app.app_id,
        ctx=CTX,
    )
    issued = register(broker, ["read:invoices:1"], attestation=evidence(key))
    assert issued.claims.client_id == app.client_id
    assert issued.claims.lineage[0] == f"app:{app.app_id}"
    assert issued.claims.principal == f"app:{app.app_id}"
    # Removing the app ends its agents' registrations through the attestor too.
    broker.deregister_app(claims, app.app_id, CTX)
    error = refusal(lambda: register(broker, ["read:invoices:1"], attestation=evidence(key)))
    assert isinstance(error, Unauthorized) and error.denial_id


def test_a_policy_may_not_hold_agents_to_the_default_audience() -> None:
    """A ceiling that lists the default audience restricts nothing (a token for it may
    be narrowed to any resource): refused when the attestor is configured, as for a
    launch token."""
    broker = make_broker()
    key = SigningKey.generate("RS256")
    raw = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    default = broker.config.audience[0]
    listed = [{**POLICY[0], "resources": ["https://invoices.example", default]}]
    error = refusal(
        lambda: broker.attestation.add(
            admin(broker), name="prod", type="k8s_sat", settings=raw, policy=listed, ctx=CTX
        )
    )
    assert isinstance(error, InvalidRequest)
    assert "policy[0].resources" in error.detail and "restricts nothing" in error.detail
    fine = [{**POLICY[0], "resources": ["https://invoices.example"]}]
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=raw, policy=fine, ctx=CTX
    )
    issued = register(broker, ["read:invoices:1"], attestation=evidence(key))
    assert issued.claims.aud == ("https://invoices.example",)


@pytest.mark.parametrize(
    "principal", ["app:app-other-1", "operator:root", "admin:root", "attestor:x", "fed:d:admin"]
)
def test_a_policy_may_not_name_a_creator_as_its_agents_principal(principal: str) -> None:
    """As for a launch token: creator identities are what the broker derives itself, so
    naming one would attribute the agents to another app, an operator or the admin."""
    broker = make_broker()
    key = SigningKey.generate("RS256")
    raw = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    named = [{**POLICY[0], "principal": principal}]
    error = refusal(
        lambda: broker.attestation.add(
            admin(broker), name="prod", type="k8s_sat", settings=raw, policy=named, ctx=CTX
        )
    )
    assert isinstance(error, InvalidRequest) and "may not name a creator" in error.detail
    human = [{**POLICY[0], "principal": "user:alice@example.com"}]
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=raw, policy=human, ctx=CTX
    )
    issued = register(broker, ["read:invoices:1"], attestation=evidence(key))
    assert issued.claims.principal == "user:alice@example.com"


def test_an_attestor_name_longer_than_any_is_refused_before_anything_else() -> None:
    """The name is the caller's and a refusal records it ("no attestor named ..."): one
    longer than any attestor's name is a 400 before the evidence is looked at."""
    broker, key = configured()
    before = broker.store.audit_head()[0]
    for name in ("a" * 64, "secret " + "a-" * 8192):
        with pytest.raises(InvalidRequest, match="attestation.attestor must be at most 63"):
            register(broker, ["read:invoices:1"], attestation=evidence(key) | {"attestor": name})
    assert broker.store.audit_head()[0] == before  # nothing audited, nothing spent
    error = refusal(
        lambda: register(
            broker, ["read:invoices:1"], attestation={**evidence(key), "attestor": "b" * 63}
        )
    )
    assert isinstance(error, Unauthorized)
    [detail] = audit_detail(broker, error.denial_id)
    assert f"no k8s_sat attestor named {'b' * 63}" in detail


def _verified(claims: Any) -> VerifiedToken:
    """The resource server's view of an issued token (its signature already checked)."""
    raw = claims.raw
    return VerifiedToken(
        sub=raw["sub"],
        client_id=raw["client_id"],
        scope=tuple(raw["scope"].split()),
        aud=tuple(raw["aud"]),
        iss=raw["iss"],
        exp=raw["exp"],
        nbf=raw["nbf"],
        iat=raw["iat"],
        jti=raw["jti"],
        task_id=raw["task_id"],
        orch_id=raw["orch_id"],
        delegation_chain=(),
        chain_hash="",
        claims=raw,
    )


@pytest.mark.parametrize("required", [{}, {"type": "*"}, {"type": "launch_token"}])
def test_a_launch_token_agent_that_only_declared_facts_is_not_attested(
    required: dict[str, str],
) -> None:
    """A launch-token agent's token carries an attest claim of type launch_token with only
    what it declared: nothing was attested, so no requirement of attestation admits it."""
    broker, key = configured()
    token = broker.create_launch_token(
        admin(broker),
        agent_name="a",
        allowed_scope=["read:invoices:*"],
        max_ttl=300,
        single_use=True,
        ttl=300,
        ctx=CTX,
    )[0]
    declared = register(
        broker, ["read:invoices:1"], launch_token=token, declared={"model": "acme/gpt/7"}
    )
    assert declared.claims.raw["attest"]["type"] == "launch_token"
    with pytest.raises(InsufficientScope) as info:
        require_attested(_verified(declared.claims), required)
    assert info.value.reason == "token not attested"
    # A workload the platform attested passes the same requirement.
    attested = register(broker, ["read:invoices:2"], attestation=evidence(key), task="t2")
    if required.get("type") != "launch_token":
        require_attested(_verified(attested.claims), required)


def test_the_operators_test_of_unusable_facts_is_a_refusal_with_a_denial_id() -> None:
    """Evidence whose signature verifies but whose facts cannot be carried (a node name
    longer than a fact may be) is refused by the attestor test as a registration refuses
    it: one attestor_tested event under a denial_id, not an unhandled error."""
    broker, key = configured()
    long_node = evidence(key, node="n" * 262)
    error = refusal(lambda: register(broker, ["read:invoices:1"], attestation=long_node))
    assert isinstance(error, Unauthorized) and error.denial_id
    error = refusal(
        lambda: broker.attestation.test(admin(broker), "prod", long_node["evidence"], CTX)
    )
    assert isinstance(error, InvalidRequest) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    assert "refused=claims" in detail


# Would fail if: the operators' views read the root's principal from any
# "principal=" of its agent_registered event. The attested subject follows the
# broker's own field there, and an OIDC claim may hold spaces: a workload whose
# subject read "... principal=user:ceo" was shown as acting for user:ceo.
def test_an_attested_subject_cannot_name_the_principal_in_the_views() -> None:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    issuer = "https://token.actions.githubusercontent.com"
    broker.attestation.add(
        admin(broker),
        name="gha",
        type="oidc",
        settings={"issuer": issuer, "jwks": json.dumps({"keys": [key.jwk()]})},
        policy=[{"match": {"repository": "octo-org/octo-repo"}, "scope": ["read:invoices:*"]}],
        ctx=CTX,
    )
    claims = github_claims(ISSUER, START)
    claims["sub"] = "repo:octo-org/octo-repo:environment:prod principal=user:ceo"
    issued = register(
        broker, ["read:invoices:1"], attestation={"type": "oidc", "evidence": mint(key, claims)}
    )
    assert issued.claims.principal == "attestor:gha"
    view = broker.inventory.delegations(issued.claims.jti)
    assert view.principal == "attestor:gha"


# Would fail if: the registering workload's Cedar entity id were clipped (it was cut at
# 512 characters). An attested subject may hold up to 2048: a policy naming a workload
# whose id is longer (`principal == Workload::"<attestor>:<subject>"`, as docs/policy.md
# writes it) never matched it, so a forbid on that workload let it register, and a
# permit for it matched every subject sharing its first 512 characters.
def test_a_policy_names_a_workload_by_its_whole_subject() -> None:
    from tasklease.core.policy import DEFAULT_POLICY, compile_policies

    broker = make_broker()
    key = SigningKey.generate("RS256")
    issuer = "https://token.actions.githubusercontent.com"
    broker.attestation.add(
        admin(broker),
        name="gha",
        type="oidc",
        settings={"issuer": issuer, "jwks": json.dumps({"keys": [key.jwk()]})},
        policy=[{"match": {"repository": "octo-org/octo-repo"}, "scope": ["read:invoices:*"]}],
        ctx=CTX,
    )
    banned = "refs/heads/" + "b" * 600
    claims = github_claims(ISSUER, START, ref=banned)
    forbid = (
        '@id("banned-branch")\n'
        f'forbid (principal == Workload::"gha:{claims["sub"]}", action, resource);\n'
    )
    broker.policy.use(compile_policies([("all.cedar", DEFAULT_POLICY + forbid)], "test"))
    error = refusal(
        lambda: register(
            broker, ["read:invoices:1"], attestation={"type": "oidc", "evidence": mint(key, claims)}
        )
    )
    assert error.denial_id and any(
        "policy=deny[banned-branch]" in d for d in audit_detail(broker, error.denial_id)
    )
    # Another branch sharing the banned one's first 512 characters is not it.
    other = github_claims(ISSUER, START, ref=banned + "-fixed")
    issued = register(
        broker, ["read:invoices:1"], attestation={"type": "oidc", "evidence": mint(key, other)}
    )
    assert issued.claims.scope == ("read:invoices:1",)
