"""Conformance of the operators' listings (core.inventory) on every backend: newest
first, keyset pages that neither repeat nor skip, filters, tenant views kept apart."""

from __future__ import annotations

import importlib.util
import pathlib
from dataclasses import replace

import pytest

from tasklease.core.store import (
    AgentSession,
    ListQuery,
    RevocationRecord,
    Store,
)

_spec = importlib.util.spec_from_file_location(
    "conformance", pathlib.Path(__file__).with_name("test_conformance.py")
)
assert _spec is not None and _spec.loader is not None
conformance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance)
NOW = conformance.NOW
make_agent = conformance.make_agent
make_launch_token = conformance.make_launch_token
chain = conformance.chain


def _session(agent_id: str, principal: str) -> AgentSession:
    return AgentSession(agent_id, principal, False, NOW, 2, "active", NOW + 3600)


def _pages(fetch, size: int) -> list[list[object]]:  # type: ignore[no-untyped-def]
    pages, after = [], None
    while True:
        rows = fetch(after, size)
        if not rows:
            return pages
        pages.append(rows)
        after = rows[-1]


def test_agents_newest_first_in_pages_with_sessions(store: Store) -> None:
    with store.write() as tx:
        for n in range(1, 8):
            agent = make_agent(n, registered_at=NOW + (n // 2), app_id=f"app-{n % 2}")
            tx.insert_agent(agent)
            if n % 3:
                tx.put_agent_session(_session(agent.agent_id, f"user:{n % 2}"))
    everything = store.list_agents(ListQuery(limit=100))
    keys = [(a.registered_at, a.agent_id) for a, _ in everything]
    assert keys == sorted(keys, reverse=True) and len(keys) == 7
    sessions = {a.agent_id: s for a, s in everything}
    assert sessions[make_agent(3).agent_id] is None
    assert sessions[make_agent(1).agent_id] == _session(make_agent(1).agent_id, "user:1")

    seen: list[str] = []
    after = None
    while True:
        page = store.list_agents(ListQuery(after=after, limit=3))
        if not page:
            break
        seen += [a.agent_id for a, _ in page]
        last = page[-1][0]
        after = (last.registered_at, last.agent_id)
    assert seen == [a.agent_id for a, _ in everything]

    odd = store.list_agents(ListQuery(app_id="app-1", limit=100))
    assert {a.agent_id for a, _ in odd} == {make_agent(n).agent_id for n in (1, 3, 5, 7)}
    task = store.list_agents(ListQuery(task_id="task-4", limit=100))
    assert [a.agent_id for a, _ in task] == [make_agent(4).agent_id]
    principal = store.list_agents(ListQuery(principal="user:0", limit=100))
    assert {a.agent_id for a, _ in principal} == {make_agent(n).agent_id for n in (2, 4)}


def test_launch_tokens_outstanding_only(store: Store) -> None:
    with store.write() as tx:
        tx.insert_launch_token(make_launch_token(1, created_at=NOW))
        tx.insert_launch_token(make_launch_token(2, created_at=NOW + 1, app_id="app-9"))
        tx.insert_launch_token(make_launch_token(3, created_at=NOW + 2, expires_at=NOW + 5))
        tx.insert_launch_token(make_launch_token(4, created_at=NOW + 3, principal="user:a"))
        used = make_launch_token(5, created_at=NOW + 4)
        tx.insert_launch_token(used)
    with store.write() as tx:
        assert tx.consume_launch_token(used.token_hash, NOW + 4)
    now = NOW + 10  # token 3 has expired
    names = [r.agent_name for r in store.list_launch_tokens(ListQuery(limit=100), now)]
    assert names == ["agent-4", "agent-2", "agent-1"]
    first = store.list_launch_tokens(ListQuery(limit=2), now)
    last = first[-1]
    rest = store.list_launch_tokens(
        ListQuery(after=(last.created_at, last.token_hash), limit=2), now
    )
    assert [r.agent_name for r in first + rest] == names
    by_app = store.list_launch_tokens(ListQuery(app_id="app-9", limit=10), now)
    assert [r.agent_name for r in by_app] == ["agent-2"]
    by_principal = store.list_launch_tokens(ListQuery(principal="user:a", limit=10), now)
    assert [r.agent_name for r in by_principal] == ["agent-4"]


def test_revocations_newest_first_by_level(store: Store) -> None:
    with store.write() as tx:
        for n, level in enumerate(("agent", "task", "token", "task", "chain")):
            tx.insert_revocation(RevocationRecord(level, f"target-{n}", int(NOW), NOW + 60))
    everything = store.list_revocations(ListQuery(limit=100))
    assert [r.target for r in everything] == [f"target-{n}" for n in (4, 3, 2, 1, 0)]
    tasks = store.list_revocations(ListQuery(level="task", limit=100))
    assert [r.target for r in tasks] == ["target-3", "target-1"]
    after = store.list_revocations(ListQuery(after=(float(everything[1].seq), ""), limit=2))
    assert [r.target for r in after] == ["target-2", "target-1"]


def test_audit_mentioning_finds_a_token_among_its_types(store: Store) -> None:
    events = chain(6)
    events[2] = replace(
        events[2], event_type="token_issued", detail="Token issued, jti=ab12, ttl=5"
    )
    events[4] = replace(events[4], event_type="other", detail="jti=ab12")
    with store.write() as tx:
        tx.append_audit(events)
    found = store.audit_mentioning("jti=ab12", ("token_issued", "token_renewed"), 10)
    assert [e.seq for e in found] == [events[2].seq]
    assert [e.seq for e in store.audit_mentioning("jti=ab12", (), 10)] == [3, 5]
    with pytest.raises(ValueError):
        store.audit_mentioning("jti=%", (), 10)


def test_audit_mentioning_matches_the_text_exactly(store: Store) -> None:
    """``_`` is a character to find, never a wildcard, and case counts, on every store
    alike: the memory store's substring search is the contract."""
    events = chain(4)
    events[1] = replace(events[1], detail="task=a_b done")
    events[2] = replace(events[2], detail="task=axb done")
    events[3] = replace(events[3], detail="TASK=A_B done")
    with store.write() as tx:
        tx.append_audit(events)
    assert [e.seq for e in store.audit_mentioning("task=a_b", (), 10)] == [events[1].seq]


def test_listings_stay_in_their_tenant(store: Store) -> None:
    other = store.for_tenant("acme")
    with store.write() as tx:
        tx.insert_agent(make_agent(1))
        tx.insert_launch_token(make_launch_token(1))
        tx.insert_revocation(RevocationRecord("task", "task-1", int(NOW), NOW + 60))
    assert other.list_agents(ListQuery(limit=10)) == []
    assert other.list_launch_tokens(ListQuery(limit=10), NOW) == []
    assert other.list_revocations(ListQuery(limit=10)) == []
    assert len(store.list_agents(ListQuery(limit=10))) == 1
