"""An entry the index already holds is only ever widened: a later ``revoked_at`` or a
later ``expires_at`` is taken, each apart, and neither is ever narrowed by an entry that
brings the other one wider (entries arrive in any order: the store, the feed, other
replicas)."""

from __future__ import annotations

from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import RevocationRecord
from tasklease.core.tokens import Claims


def _claims(registered: int) -> Claims:
    return Claims(
        kind="at+jwt",
        iss="tasklease",
        sub="spiffe://td/agent/o/t/0123456789abcdef",
        aud=("tasklease",),
        exp=registered + 300,
        nbf=registered,
        iat=registered,
        jti="j",
        scope=(),
        task_id="",
        orch_id="o",
        client_id="c",
        oiat=registered,
        rnc=0,
        delegation_chain=(),
        chain_hash="",
        raw={},
    )


AGENT = "spiffe://td/agent/o/t/0123456789abcdef"


def test_a_later_expiry_alone_widens_the_entry() -> None:
    index = RevocationIndex()
    index.apply([RevocationRecord("agent", AGENT, 100, 1000)])
    index.apply([RevocationRecord("agent", AGENT, 100, 2000)])
    # Kept past the first expiry: it still ends what it matched.
    assert index.prune(1500) == 0
    assert index.match(_claims(90)) == "agent"
    assert index.prune(2000) == 1
    assert index.match(_claims(90)) is None


def test_an_older_entry_with_a_later_expiry_keeps_the_later_revoked_at() -> None:
    index = RevocationIndex()
    index.apply([RevocationRecord("agent", AGENT, 150, 1000)])
    index.apply([RevocationRecord("agent", AGENT, 100, 2000)])
    assert index.revoked_at("agent", AGENT) == 150
    # Registered between the two revocations: the later one ended it.
    assert index.match(_claims(120)) == "agent"
    assert index.prune(1500) == 0
    assert index.match(_claims(120)) == "agent"


def test_a_later_entry_with_an_earlier_expiry_keeps_the_later_expiry() -> None:
    index = RevocationIndex()
    index.apply([RevocationRecord("agent", AGENT, 100, 2000)])
    index.apply([RevocationRecord("agent", AGENT, 150, 1000)])
    assert index.revoked_at("agent", AGENT) == 150
    assert index.prune(1500) == 0
    assert index.match(_claims(120)) == "agent"
    assert index.prune(2000) == 1
