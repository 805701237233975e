"""``Store.live_agents``: the deployment's live agents (``tasklease_active_agents``), the
same count on every backend and whichever tenant's view is asked."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    RevocationRecord,
    Store,
    TenantRecord,
)
from tasklease.storage import SQLiteStore
from tasklease.storage._sql.store import SQLStore

NOW = 1_800_000_000.5
FROM = NOW - 3600  # the earliest registration still within the ceiling


def _agent(n: int, **changes: object) -> AgentRecord:
    agent = AgentRecord(
        agent_id=f"spiffe://example.org/agent/orch-1/task-{n}/inst-{n}",
        public_key=bytes((n + i) % 256 for i in range(32)),
        orch_id="orch-1",
        task_id=f"task-{n}",
        scope=("read:data:*",),
        app_id="app-1",
        client_id="client-1",
        registered_at=NOW - 60,
    )
    return replace(agent, **changes)  # type: ignore[arg-type]


def _app(app_id: str, status: str = "active") -> AppRecord:
    return AppRecord(
        app_id=app_id,
        name=f"name-{app_id}",
        client_id=f"client-{app_id}",
        secret_hash="hash",
        scopes=("read:data:*",),
        token_ttl=300,
        status=status,
        created_at=NOW,
        updated_at=NOW,
        created_by="admin",
    )


def _session(agent: AgentRecord, state: str) -> AgentSession:
    return AgentSession(
        agent_id=agent.agent_id,
        principal="",
        heartbeat_required=False,
        last_heartbeat=NOW,
        resumes=0,
        state=state,
        expires_at=NOW + 3600,
    )


def _entry(
    level: str, target: str, revoked_at: int, expires_at: float = NOW + 3600
) -> RevocationRecord:
    return RevocationRecord(
        level=level, target=target, revoked_at=revoked_at, expires_at=expires_at
    )


def _tenant(name: str) -> TenantRecord:
    return TenantRecord(
        name=name,
        trust_domain=f"{name}.example.org",
        status="active",
        created_at=NOW,
        created_by="admin",
    )


def test_live_agents_counts_what_is_live_in_every_tenant_not_removed(store: Store) -> None:
    live = [
        _agent(1),
        _agent(2, app_id="", client_id=""),  # launched by the admin: no app
        _agent(3, registered_at=FROM),  # the ceiling's first second
        _agent(4, ceiling=int(NOW) + 1),  # its own ceiling, still ahead
        _agent(5, task_id="task-again", registered_at=NOW - 10),  # after the task's entry
        _agent(6, task_id="task-old-entry"),  # the task's entry no longer in force
        _agent(7),  # an active session
    ]
    ended = [
        _agent(20, status="revoked"),  # revoked at level agent (or swept)
        _agent(21),  # released
        _agent(22, registered_at=FROM - 0.001),  # past renewal_ceiling
        _agent(23, ceiling=int(NOW)),  # past its own ceiling
        _agent(24, app_id="app-gone"),  # its app deregistered
        # its task revoked in the second it registered (an entry matches by whole seconds)
        _agent(25, task_id="task-again", registered_at=float(int(NOW) - 31) + 0.9),
        _agent(26, app_id="app-chain"),  # its app revoked at level chain
        _agent(27, lineage=("app:app-1", "fed:partner.example")),  # an ancestor revoked
    ]
    with store.write() as tx:
        tx.insert_app(_app("app-1"))
        tx.insert_app(_app("app-chain"))
        tx.insert_app(_app("app-gone", "inactive"))
        for agent in live + ended:
            tx.insert_agent(agent)
        tx.put_agent_session(_session(live[6], "active"))
        tx.put_agent_session(_session(ended[1], "released"))
        tx.insert_revocation(_entry("task", "task-again", int(NOW) - 31))
        tx.insert_revocation(_entry("task", "task-old-entry", int(NOW), expires_at=NOW))
        tx.insert_revocation(_entry("chain", "app:app-chain", int(NOW)))
        tx.insert_revocation(_entry("chain", "fed:partner.example", int(NOW)))
        tx.insert_tenant(_tenant("blue"))
        tx.insert_tenant(_tenant("gone"))
    assert store.live_agents(NOW, FROM) == len(live)

    # Another tenant's live agents count; a removed tenant's do not.
    blue, gone = store.for_tenant("blue"), store.for_tenant("gone")
    with blue.write() as tx:
        tx.insert_agent(_agent(40, app_id="", client_id=""))
        tx.insert_agent(_agent(41, app_id="", client_id=""))
        # Its entries are its own: the default tenant's task-1 is not blue's.
        tx.insert_revocation(_entry("task", "task-1", int(NOW)))
    with gone.write() as tx:
        tx.insert_agent(_agent(50, app_id="", client_id=""))
    with store.write() as tx:
        tx.update_tenant(replace(_tenant("gone"), status="removed", removed_at=NOW))
    # The same deployment-wide figure, whichever tenant's view is asked.
    assert store.live_agents(NOW, FROM) == blue.live_agents(NOW, FROM) == len(live) + 2


def _steps(path: str, sql: str, params: tuple[object, ...]) -> int:
    """SQLite virtual-machine instructions ``sql`` runs (by the thousand): a count of
    work that does not depend on the host, as time would."""
    conn = sqlite3.connect(path)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    return steps[0]


def test_a_chain_entry_on_an_agent_reads_no_lineage(tmp_path: Path) -> None:
    """A chain-level entry on an agent's SPIFFE ID (its delegations ended, the common
    kind) names no id a registration's lineage lists: the count reads no lineage for it.
    It used to read every agent's lineage within the ceiling once for each such entry
    (6 s at a million agents on SQLite). One on a federated domain still does, and ends
    the agents whose lineage lists it."""
    path = tmp_path / "live.db"
    store = SQLiteStore(path)
    agents = [_agent(n, lineage=("app:app-1", "attest:k8s:a:b")) for n in range(1, 1501)]
    with store.write() as tx:
        tx.insert_app(_app("app-1"))
        for agent in agents:
            tx.insert_agent(agent)
    sqlite_store = cast("SQLStore[Any]", store)
    sql = sqlite_store.dialect.live_agents
    named = {"f": FROM, "n": NOW}
    params = tuple(named[name] for name in sqlite_store.dialect.live_agents_order)
    before = _steps(str(path), sql, params)
    with store.write() as tx:
        for n in range(1, 4):
            tx.insert_revocation(_entry("chain", agents[n].agent_id, int(NOW)))
    assert store.live_agents(NOW, FROM) == len(agents)
    with_agents = _steps(str(path), sql, params)
    assert with_agents < before * 1.2 + 10, (before, with_agents)
    with store.write() as tx:
        tx.insert_revocation(_entry("chain", "attest:k8s:a:b", int(NOW)))
    assert store.live_agents(NOW, FROM) == 0
    store.close()
