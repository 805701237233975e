"""The one issuance check (rules.issuance), called directly: the bounds it enforces itself,
whatever its callers pass it. The broker's paths hand it arguments that already keep most
of these bounds (a renewal passes its parent's own grants); the SDK and the offline
verifier call the same function, so each bound is held here, not only by its callers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tasklease.rules.claims import MAX_LINEAGE
from tasklease.rules.issuance import (
    IssuanceLimits,
    Parent,
    Refusal,
    check_issuance,
    joint_parent,
)

HOLDER = "spiffe://tasklease.local/agent/o/t/1"
DELEGATE = "spiffe://tasklease.local/agent/o/t/2"
LIMITS = IssuanceLimits(audience=("tasklease",))
GRANT = {"type": "resource_access", "actions": ["read"], "locations": ["https://rs.example/"]}
NARROWER = {
    "type": "resource_access",
    "actions": ["read"],
    "locations": ["https://rs.example/a"],
}
PARENT = Parent(
    holder=HOLDER,
    scope=("read:data:*",),
    audience=("tasklease",),
    principal="alice",
    lineage=("app:app-1",),
    ceiling=5_000,
    ttl=300,
    renewals=0,
    chain_agents=(HOLDER,),
    grant="g-1",
    jti="j-1",
    token_exp=1_300,
    attest={"type": "k8s", "attestor": "a", "subject": "s"},
    details=(GRANT,),
)


def issue(operation: str, parent: Parent = PARENT, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "holder": HOLDER,
        "scope": parent.scope,
        "iat": 1_000,
        "requested_ttl": 300,
        "limits": LIMITS,
        "details": parent.details,
    }
    args.update(kw)
    return check_issuance(operation, parent, **args)


@pytest.mark.parametrize("operation", ["renew", "resume"])
def test_renewal_and_resumption_keep_the_parents_grants_exactly(operation: str) -> None:
    # Even a narrower grant is a change: a renewal continues the same authority.
    for details in ((NARROWER,), (), (GRANT, NARROWER)):
        with pytest.raises(Refusal) as refused:
            issue(operation, details=details)
        assert refused.value.reason.code == "scope_violation"
        assert refused.value.event_type == "attenuation"
    assert issue(operation).details == (GRANT,)


def test_a_child_carries_its_parents_attestation() -> None:
    for operation in ("renew", "resume", "narrow"):
        assert issue(operation).attest == PARENT.attest
    delegated = issue("delegate", holder=DELEGATE)
    assert delegated.attest == PARENT.attest


def test_a_lineage_too_long_to_sign_is_refused() -> None:
    # A delegation appends the parent's grant and jti: two more ancestors.
    full = replace(PARENT, lineage=tuple(f"a{i}" for i in range(MAX_LINEAGE - 2)))
    assert len(issue("delegate", full, holder=DELEGATE).lineage) == MAX_LINEAGE
    over = replace(full, lineage=(*full.lineage, "one-more"))
    with pytest.raises(Refusal) as refused:
        issue("delegate", over, holder=DELEGATE)
    assert refused.value.event_type == "depth"


def test_a_registration_names_only_a_resource_its_launch_token_allows() -> None:
    launch = replace(
        PARENT,
        audience=("https://rs.example", "https://other.example"),
        grant="",
        jti="",
        token_exp=0,
    )
    assert issue("register", launch, resource="https://other.example").audience == (
        "https://other.example",
    )
    with pytest.raises(Refusal) as refused:
        issue("register", launch, resource="https://elsewhere.example")
    assert refused.value.reason.code == "invalid_target"
    assert refused.value.event_type == "audience"


def test_joint_parent_without_a_common_resource_is_refused() -> None:
    # An empty audience would allow any resource: no common one must refuse instead.
    launch = replace(PARENT, audience=("https://rs.example",))
    attested = replace(PARENT, audience=("https://other.example",))
    with pytest.raises(Refusal) as refused:
        joint_parent(launch, attested)
    assert refused.value.reason.code == "invalid_target"


def test_joint_parent_takes_the_narrower_of_every_bound() -> None:
    wide = replace(PARENT, ceiling=9_000, ttl=900, renewals=1, resumable=True)
    narrow = replace(PARENT, ceiling=4_000, ttl=120, renewals=3, resumable=False)
    for first, second in ((wide, narrow), (narrow, wide)):
        joint = joint_parent(first, second)
        assert joint.ceiling == 4_000
        assert joint.ttl == 120
        assert joint.renewals == 3
        assert joint.resumable is False


def test_a_child_never_lives_longer_than_its_parents_ttl() -> None:
    # The broker's limit allows an hour; the parent's own lifetime bound is shorter.
    short = replace(PARENT, ttl=60, token_exp=0)
    assert issue("renew", short, requested_ttl=3_600).exp == 1_060
    assert issue("renew", PARENT, requested_ttl=3_600, limits=replace(LIMITS, max_ttl=30)).exp == (
        1_030
    )


def test_joint_parent_holds_only_the_scopes_and_grants_both_ancestors_cover() -> None:
    # A launch token for everything readable, an attestation policy (or the app's current
    # ceiling) for one item: the registration may ask only for what both allow.
    launch = replace(PARENT, scope=("read:data:*",), details=(GRANT,))
    policy = replace(PARENT, scope=("read:data:1", "write:data:1"), details=(NARROWER,))
    joint = joint_parent(launch, policy)
    assert joint.scope == ("read:data:1",)
    assert joint.details == (NARROWER,)
    bare = joint_parent(launch, replace(PARENT, scope=("read:data:1",), details=()))
    assert bare.details == ()
    for scope, details in ((("read:data:*",), ()), (("read:data:1",), (GRANT,))):
        with pytest.raises(Refusal) as refused:
            issue("register", joint, scope=scope, details=details)
        assert refused.value.reason.code == "scope_violation"


def test_a_registration_under_several_resources_must_name_one() -> None:
    # A token is for one resource: the check never picks one of several for the caller.
    launch = replace(PARENT, audience=("https://a.example", "https://b.example"))
    with pytest.raises(Refusal) as refused:
        issue("register", launch)
    assert refused.value.reason.code == "invalid_target"
    assert "several resources" in refused.value.reason.message
    assert issue("register", launch, resource="https://b.example").audience == (
        "https://b.example",
    )
    only = replace(PARENT, audience=("https://a.example",))
    assert issue("register", only).audience == ("https://a.example",)


def test_joint_parent_descends_from_both_ancestors() -> None:
    # A registration through a launch token and an attestation lists the attestation too:
    # ending it (a chain entry on its id) ends the tokens registered through it.
    launch = replace(PARENT, lineage=("app:app-1",))
    attested = replace(PARENT, lineage=("app:app-1", "attest:k8s:a:s"))
    joint = joint_parent(launch, attested)
    assert joint.lineage == ("app:app-1", "attest:k8s:a:s")
    child = issue("register", replace(joint, audience=()), resource="https://rs.example")
    assert "attest:k8s:a:s" in child.lineage


def test_joint_parent_names_the_first_ancestors_principal() -> None:
    # The launch token's principal is the human behind the registration; the second
    # ancestor's stands in only where the first names none.
    launch = replace(PARENT, principal="user:alice")
    attested = replace(PARENT, principal="user:mallory")
    assert joint_parent(launch, attested).principal == "user:alice"
    assert joint_parent(replace(launch, principal=""), attested).principal == "user:mallory"
