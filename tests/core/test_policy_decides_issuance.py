"""Issuance policy decides every issuance made from an agent's token: delegation, and token
exchange both within the domain (``narrow``) and from a federated one (``exchange``). A
tenant's ``forbid`` on any of them refuses it in the kernel's one check, with event type
``policy``, even when the request stays within its parent (registration: test_grants_issuance)."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import Forbidden
from tasklease.core.kernel import Parent, Refusal
from tasklease.core.policy import DEFAULT_POLICY, compile_policies
from tasklease.core.store import AuditQuery

HOLDER = "spiffe://tasklease.local/agent/o/t/1"
DELEGATE = "spiffe://tasklease.local/agent/o/t/2"
OPERATIONS = ("delegate", "narrow", "exchange")


def parent(broker: Any) -> Parent:
    return Parent(
        holder=HOLDER,
        scope=("read:data:*",),
        audience=tuple(broker.config.audience),
        principal="alice",
        lineage=(),
        ceiling=int(broker.clock.now()) + 3_000,
        ttl=300,
        renewals=0,
        chain_agents=(HOLDER,),
        grant="g-1",
        jti="j-1",
        token_exp=int(broker.clock.now()) + 300,
    )


def issue(broker: Any, operation: str) -> Any:
    return broker.kernel.check_issuance(
        operation,
        parent(broker),
        holder=HOLDER if operation == "narrow" else DELEGATE,
        scope=("read:data:1",),
        iat=int(broker.clock.now()),
        requested_ttl=60,
    )


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_forbid_policy_refuses_each_issuance_it_names(broker: Any, operation: str) -> None:
    assert issue(broker, operation).scope == ("read:data:1",)  # the default allows it
    forbid = (
        f'@id("no-{operation}")\nforbid (principal, action == Action::"{operation}", resource);'
    )
    broker.policy.use(
        compile_policies([("default.cedar", DEFAULT_POLICY), ("f.cedar", forbid)], "test")
    )
    with pytest.raises(Refusal) as refused:
        issue(broker, operation)
    assert refused.value.event_type == "policy"
    assert f"no-{operation}" in refused.value.detail
    # The other operations are not named by the policy and still issue.
    for other in OPERATIONS:
        if other != operation:
            assert issue(broker, other).scope == ("read:data:1",)


def test_a_forbid_policy_refuses_a_launch_token_within_its_ceiling(broker: Any, kit: Any) -> None:
    assert kit.launch(broker)  # the default allows an operator's launch token
    forbid = '@id("no-launch")\nforbid (principal, action == Action::"launch", resource);'
    broker.policy.use(
        compile_policies([("default.cedar", DEFAULT_POLICY), ("f.cedar", forbid)], "test")
    )
    with pytest.raises(Forbidden) as refused:
        kit.launch(broker)
    assert (refused.value.denial_id or "").startswith("den_")
    events, _ = broker.store.query_audit(AuditQuery(limit=1_000))
    (denied,) = [e for e in events if f"denial={refused.value.denial_id}" in e.detail]
    assert "no-launch" in denied.detail
