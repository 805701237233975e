"""Properties: a verified chain never grants more than its root, and what the SDK derives
is what verifiers accept (the same issuance check on both sides)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from offline_support import NOW, agent_id, key, public, raw_block, root_token, verify

from tasklease.rules import scopes as scope_rules
from tasklease.rules.attenuation import ChainError
from tasklease.rules.chainverify import ChainRejected, derive
from tasklease.rules.grants import parse_details
from tasklease.rules.issuance import within_ceiling

ROOT_SCOPE = ("read:orders:*", "write:orders:42")
SCOPES = ("read:orders:*", "read:orders:42", "read:orders:43", "write:orders:42",
          "write:orders:*", "delete:orders:42", "read:billing:1")  # fmt: skip
AUDIENCES = ("https://orders.example", "https://billing.example", "https://payments.example")
ROOT_AUD = AUDIENCES[:2]


def _pay(amount: int, payee: str = "P") -> dict[str, Any]:
    return {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": [f"https://pay.example/payees/{payee}"],
        "limits": {"max_amount": str(amount), "currency": "EUR"},
    }


ROOT_GRANTS = (_pay(500),)
ROOT = root_token(holder="h0", scope=ROOT_SCOPE, aud=ROOT_AUD, details=ROOT_GRANTS)
ROOT_EXP = NOW + 900

# Mostly narrowings (so that deep chains verify), sometimes a widening of each kind.
NARROW = ("read:orders:*", "read:orders:42", "read:orders:43", "write:orders:42")
asks = st.fixed_dictionaries(
    {},
    optional={
        "scope": st.one_of(
            st.lists(st.sampled_from(NARROW), unique=True, max_size=2),
            st.lists(st.sampled_from(SCOPES), unique=True, max_size=3),
        ).map(tuple),
        "grants": st.lists(
            st.builds(
                _pay,
                st.one_of(st.integers(1, 500), st.integers(1, 700)),
                st.sampled_from(["P", "P", "P", "Q"]),
            ),
            max_size=1,
        ).map(tuple),
        "aud": st.sampled_from(AUDIENCES),
    },
)
steps = st.lists(
    st.tuples(
        asks,
        st.one_of(st.integers(60, 900), st.integers(-30, 1200)),
        st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2]),
    ),
    min_size=1,
    max_size=5,
)


def _chain(plan: list[tuple[dict[str, Any], int, int]]) -> tuple[str, list[str]]:
    """The chain of ``plan``'s blocks, each honestly signed by the previous holder whatever
    it asks, as far as the size cap allows; and its holders, the root's first."""
    chain, holders = ROOT, ["h0"]
    for index, (ask, ttl, back) in enumerate(plan):
        # back > 0 now and then names an earlier holder again (a cycle to refuse).
        taker = f"h{index + 1}" if back == 0 or index < back else f"h{index - back}"
        try:
            chain = raw_block(
                chain,
                holders[-1],
                sub=agent_id(taker),
                key=public(taker),
                exp=NOW + ttl,
                iat=NOW,
                jti=f"{index + 1:032x}",
                depth=index + 1,
                **ask,
            )
        except ChainError:
            break
        holders.append(taker)
    return chain, holders


@settings(max_examples=200, deadline=None)
@given(steps)
def test_a_verified_chain_never_grants_more_than_its_root(
    plan: list[tuple[dict[str, Any], int, int]],
) -> None:
    chain, holders = _chain(plan)
    made = len(holders) - 1
    try:
        verified = verify(chain, holder=holders[-1], now=NOW, audiences=None)
    except ChainRejected:
        return
    assert scope_rules.is_subset(verified.scope, ROOT_SCOPE)
    assert within_ceiling(
        verified.scope, verified.grants, ROOT_SCOPE, parse_details(list(ROOT_GRANTS))
    )
    assert set(verified.audience) <= set(ROOT_AUD)
    assert verified.exp <= ROOT_EXP
    assert len(set(verified.agents)) == len(verified.agents)
    # Every block within its parent, not only the last within the root.
    for earlier in range(1, made):
        prefix = "~".join(chain.split("~")[: earlier + 2])
        parent = verify(prefix, holder=holders[earlier], now=NOW, audiences=None)
        assert scope_rules.is_subset(verified.scope, parent.scope)
        assert within_ceiling(verified.scope, verified.grants, parent.scope, parent.grants)
        assert set(verified.audience) <= set(parent.audience) and verified.exp <= parent.exp


@settings(max_examples=100, deadline=None)
@given(steps)
def test_what_derive_makes_verifies_and_what_it_refuses_never_widens(
    plan: list[tuple[dict[str, Any], int, int]],
) -> None:
    chain, holders = ROOT, 0
    for index, (ask, ttl, _) in enumerate(plan):
        try:
            chain = derive(
                chain,
                key(f"h{index}"),
                delegate=agent_id(f"h{index + 1}"),
                delegate_key=public(f"h{index + 1}"),
                now=NOW,
                ttl=ttl,
                scope=ask.get("scope"),
                grants=ask.get("grants"),
                audience=ask.get("aud"),
            )
        except ChainError:
            break
        holders += 1
    if holders:
        verified = verify(chain, holder=f"h{holders}", now=NOW, audiences=None)
        assert verified.exp <= ROOT_EXP and verified.depth == holders
        assert within_ceiling(
            verified.scope, verified.grants, ROOT_SCOPE, parse_details(list(ROOT_GRANTS))
        )
