"""The revocation index at its edges: an entry matches what was made at its
``revoked_at`` second itself (the entry is dated past every clock within the skew, so
that second is before it), at every place a token can name the revoked subject."""

from __future__ import annotations

from typing import Any

from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import RevocationRecord
from tasklease.core.tokens import Claims, DelegationRecord

from .conftest import plain_claims

ROOT = "spiffe://td/agent/o/t-root/0123456789abcdef"
HOLDER = "spiffe://td/agent/o/t-held/fedcba9876543210"


def _claims(**kw: Any) -> Claims:
    return plain_claims(**{"sub": HOLDER, "exp": 400, "task_id": "t-held", **kw})


def test_an_agent_entry_ends_what_was_delegated_from_it_at_its_second() -> None:
    index = RevocationIndex()
    index.apply([RevocationRecord("agent", ROOT, 100, 1000)])
    hop = DelegationRecord(ROOT, (), "1970-01-01T00:01:40Z", "")
    assert index.match(_claims(delegation_chain=(hop,))) == "agent"
    # One second later was made after the entry: it lives.
    assert index.match(_claims(iat=101, oiat=101, delegation_chain=(hop,))) is None


def test_a_registration_time_later_than_the_token_is_not_believed() -> None:
    # Only a foreign issuer could send an ``oiat`` past the ``iat``: believed, a token
    # registered before the revocation would pass as one registered after it.
    index = RevocationIndex()
    index.apply(
        [
            RevocationRecord("agent", HOLDER, 100, 1000),
            RevocationRecord("task", "t-held", 100, 1000),
        ]
    )
    assert index.match(_claims(iat=100, oiat=500)) == "agent"
    assert index.match(_claims(sub="x", iat=100, oiat=500)) == "task"


def test_a_hop_dated_after_its_token_counts_as_made_by_the_token() -> None:
    # A hop is made before the token that carries it: a ``delegated_at`` later than the
    # ``iat`` (a re-signed foreign record) does not move the hop past the chain entry.
    index = RevocationIndex()
    index.apply([RevocationRecord("chain", ROOT, 100, 1000)])
    late = DelegationRecord(ROOT, (), "1970-01-01T00:10:00Z", "")
    assert index.match(_claims(delegation_chain=(late,))) == "chain"


def test_a_task_entry_does_not_reach_another_trust_domains_agents() -> None:
    # Task ids are per domain: ours on ``t-root`` says nothing of another domain's
    # ``t-root``, whose entries reach us as ``fed:<domain>:...`` chain entries.
    index = RevocationIndex()
    index.apply([RevocationRecord("task", "t-root", 100, 1000)])
    ours = DelegationRecord(ROOT, (), "1970-01-01T00:01:40Z", "")
    theirs = DelegationRecord(
        "spiffe://other/agent/o/t-root/0123456789abcdef", (), "1970-01-01T00:01:40Z", ""
    )
    assert index.match(_claims(delegation_chain=(ours,))) == "task"
    assert index.match(_claims(delegation_chain=(theirs,))) is None
