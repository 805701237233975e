"""The storage conformance suite: every test runs unchanged against every backend.

Each test takes the ``store`` fixture (see ``conftest.py``), so a new backend is covered
by adding it there. Tests speak only the ``core.store`` Protocols.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace

import pytest

from tasklease.core.auditformat import timestamp_seconds
from tasklease.core.clock import format_rfc3339
from tasklease.core.errors import Conflict, InvalidRequest, NotFound
from tasklease.core.records import MAX_TARGET
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
    AuditQuery,
    DiscoveryBinding,
    LaunchTokenRecord,
    OperatorRecord,
    ReferenceTokenRecord,
    RevocationRecord,
    RevocationWrite,
    Store,
)

NOW = 1_800_000_000.0
GENESIS = (0, "0" * 64)


def make_app(n: int = 1, **changes: object) -> AppRecord:
    app = AppRecord(
        app_id=f"app-{n}",
        name=f"name-{n}",
        client_id=f"client-{n}",
        secret_hash=f"$argon2id$v=19$m=65536,t=3,p=4$salt{n}$hash{n}",
        scopes=("read:data:*", f"write:data:{n}"),
        token_ttl=300,
        status="active",
        created_at=NOW + n,
        updated_at=NOW + n,
        created_by="admin",
    )
    return replace(app, **changes)  # type: ignore[arg-type]


def make_launch_token(n: int = 1, **changes: object) -> LaunchTokenRecord:
    record = LaunchTokenRecord(
        token_hash=hashlib.sha256(f"launch-{n}".encode()).hexdigest(),
        agent_name=f"agent-{n}",
        allowed_scope=("read:data:*",),
        max_ttl=300,
        single_use=True,
        created_at=NOW,
        expires_at=NOW + 30,
        created_by="admin",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def make_agent(n: int = 1, **changes: object) -> AgentRecord:
    agent = AgentRecord(
        agent_id=f"spiffe://example.org/agent/orch-1/task-{n}/inst-{n}",
        public_key=bytes(range(n, n + 32)),
        orch_id="orch-1",
        task_id=f"task-{n}",
        scope=("read:data:*",),
        app_id="app-1",
        client_id="client-1",
        registered_at=NOW,
    )
    return replace(agent, **changes)  # type: ignore[arg-type]


def chain(
    count: int, *, start: tuple[int, str] = GENESIS, ts0: float = NOW, **fields: str
) -> list[AuditEvent]:
    """``count`` events continuing ``start``, one second apart from ``ts0``.

    Event i (0-based) has agent ``agent-{i % 3}``, task ``task-{i % 2}``, event type
    ``type-{i % 4}`` and outcome ``denied`` for every fifth event, else ``success``.
    """
    seq, prev = start
    events = []
    for i in range(count):
        seq += 1
        digest = hashlib.sha256(f"{prev}|{seq}".encode()).hexdigest()
        values = {
            "agent_id": f"agent-{i % 3}",
            "task_id": f"task-{i % 2}",
            "event_type": f"type-{i % 4}",
            "outcome": "denied" if i % 5 == 0 else "success",
        }
        values.update(fields)
        events.append(
            AuditEvent(
                seq=seq,
                timestamp=format_rfc3339(ts0 + i),
                orch_id="orch-1",
                detail=f"detail {seq}",
                resource="/v1/resource",
                deleg_depth=i % 3,
                deleg_chain_hash="ab" * 32 if i % 3 else "",
                request_id=f"req-{seq}",
                prev_hash=prev,
                hash=digest,
                **values,
            )
        )
        prev = digest
    return events


def append(store: Store, events: list[AuditEvent]) -> None:
    with store.write() as tx:
        tx.append_audit(events)


# -- apps ---------------------------------------------------------------------------------


def test_app_round_trip(store: Store) -> None:
    app = make_app()
    with store.write() as tx:
        tx.insert_app(app)
    assert store.get_app(app.app_id) == app
    assert store.get_app_by_client_id(app.client_id) == app
    assert store.get_app("app-missing") is None
    assert store.get_app_by_client_id("client-missing") is None


def test_app_public_key_is_kept_changed_and_removed(store: Store) -> None:
    key = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # base64url of 32 bytes
    with store.write() as tx:
        tx.insert_app(make_app(1, public_key=key))
        tx.insert_app(make_app(2))
    assert store.get_app_by_client_id("client-1") == make_app(1, public_key=key)
    assert store.get_app("app-2") == make_app(2)  # none: ""
    with store.write() as tx:
        tx.update_app(make_app(2, public_key=key))
        tx.update_app(make_app(1, public_key=""))
    assert [a.public_key for a in store.list_apps()] == [key, ""]


def test_app_credential_change_is_kept(store: Store) -> None:
    """When an app's key last changed: its launch tokens made before then end."""
    with store.write() as tx:
        tx.insert_app(make_app(1, credential_changed_at=NOW + 1))
    assert store.get_app("app-1") == make_app(1, credential_changed_at=NOW + 1)
    with store.write() as tx:
        tx.update_app(make_app(1, credential_changed_at=NOW + 7.5))
    stored = store.get_app("app-1")
    assert stored is not None and stored.credential_changed_at == NOW + 7.5


def test_app_duplicate_name_conflicts(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
    with pytest.raises(Conflict, match="app name already exists"), store.write() as tx:
        tx.insert_app(make_app(2, name="name-1"))
    assert store.get_app("app-2") is None


def test_app_duplicate_client_id_conflicts(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
    with pytest.raises(Conflict, match="client_id"), store.write() as tx:
        tx.insert_app(make_app(2, client_id="client-1"))
    assert store.get_app("app-2") is None


def test_app_duplicate_id_conflicts(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_app(make_app(1, name="other", client_id="other"))
    assert store.get_app("app-1") == make_app(1)


def test_update_app(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
        tx.insert_app(make_app(2))
    updated = make_app(
        1,
        name="renamed",
        client_id="client-new",
        scopes=("read:other:*",),
        status="inactive",
        token_ttl=60,
        updated_at=NOW + 100,
    )
    with store.write() as tx:
        tx.update_app(updated)
    assert store.get_app("app-1") == updated
    assert store.get_app_by_client_id("client-new") == updated
    assert store.get_app_by_client_id("client-1") is None


def test_update_app_conflicts_and_missing(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
        tx.insert_app(make_app(2))
    with pytest.raises(Conflict, match="app name already exists"), store.write() as tx:
        tx.update_app(make_app(2, name="name-1"))
    with pytest.raises(Conflict, match="client_id"), store.write() as tx:
        tx.update_app(make_app(2, client_id="client-1"))
    with pytest.raises(NotFound), store.write() as tx:
        tx.update_app(make_app(3))
    assert store.get_app("app-2") == make_app(2)
    # Keeping its own name and client_id is not a conflict.
    with store.write() as tx:
        tx.update_app(make_app(2, status="inactive"))
    assert store.get_app("app-2") == make_app(2, status="inactive")


def test_list_apps_newest_first(store: Store) -> None:
    assert store.list_apps() == []
    apps = [make_app(2), make_app(3), make_app(1), make_app(4, created_at=NOW + 3)]
    with store.write() as tx:
        for app in apps:
            tx.insert_app(app)
    listed = store.list_apps()
    # created_at NOW+4 (app-4's tie at NOW+3 with app-3 breaks by app_id descending).
    assert [a.app_id for a in listed] == ["app-4", "app-3", "app-2", "app-1"]
    assert listed[0] == apps[3]


# -- launch tokens --------------------------------------------------------------------------


def test_launch_token_round_trip(store: Store) -> None:
    admin = make_launch_token(1)
    by_app = make_launch_token(
        2,
        app_id="app-1",
        single_use=False,
        allowed_scope=(),
        max_uses=7,
        allow_resume=False,
        agent_key="11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",  # bound to one agent's key
    )
    with store.write() as tx:
        tx.insert_launch_token(admin)
        tx.insert_launch_token(by_app)
    assert store.get_launch_token(admin.token_hash) == admin
    assert store.get_launch_token(by_app.token_hash) == by_app
    assert store.get_launch_token("0" * 64) is None


def test_launch_token_duplicate_conflicts(store: Store) -> None:
    with store.write() as tx:
        tx.insert_launch_token(make_launch_token(1))
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_launch_token(make_launch_token(1, agent_name="other"))
    assert store.get_launch_token(make_launch_token(1).token_hash) == make_launch_token(1)


def test_single_use_launch_token_is_consumed_once(store: Store) -> None:
    token = make_launch_token()
    with store.write() as tx:
        tx.insert_launch_token(token)
    with store.write() as tx:
        assert tx.consume_launch_token(token.token_hash, NOW + 1) is True
        assert tx.consume_launch_token(token.token_hash, NOW + 1) is False
    with store.write() as tx:
        assert tx.consume_launch_token(token.token_hash, NOW + 2) is False
    used = replace(token, consumed_at=NOW + 1, uses=1)
    assert store.get_launch_token(token.token_hash) == used
    assert used.uses_left == 0


def test_a_launch_token_whose_creator_was_ended_is_not_consumable(store: Store) -> None:
    """An entry of level agent on the creator, at or after the token was made, ends it
    (the registration's write reads it so); one made after the entry is not ended, nor is
    another creator's."""
    before = make_launch_token(1, created_by="operator:alice", single_use=False, max_uses=5)
    after = make_launch_token(2, created_by="operator:alice", created_at=NOW + 20)
    other = make_launch_token(3, created_by="operator:bob")
    with store.write() as tx:
        for token in (before, after, other):
            tx.insert_launch_token(token)
        assert tx.consume_launch_token(before.token_hash, NOW + 1) is True
        tx.insert_revocation(RevocationRecord("agent", "operator:alice", int(NOW) + 10, NOW + 99))
        # Its own batch's entry counts too.
        assert tx.consume_launch_token(before.token_hash, NOW + 11) is False
    with store.write() as tx:
        assert tx.consume_launch_token(before.token_hash, NOW + 12) is False
        assert tx.consume_launch_token(after.token_hash, NOW + 21) is True
        assert tx.consume_launch_token(other.token_hash, NOW + 12) is True
    assert store.get_launch_token(before.token_hash).uses == 1  # type: ignore[union-attr]


def test_expired_launch_token_is_never_consumable(store: Store) -> None:
    single = make_launch_token(1)
    multi = make_launch_token(2, single_use=False)
    with store.write() as tx:
        tx.insert_launch_token(single)
        tx.insert_launch_token(multi)
    with store.write() as tx:
        for token in (single, multi):
            # Expiry is exclusive: at expires_at the token is already dead.
            assert tx.consume_launch_token(token.token_hash, token.expires_at) is False
            assert tx.consume_launch_token(token.token_hash, token.expires_at + 1) is False
        assert tx.consume_launch_token("f" * 64, NOW) is False
    assert store.get_launch_token(single.token_hash) == single


def test_multi_use_launch_token_counts_its_uses(store: Store) -> None:
    token = make_launch_token(single_use=False, max_uses=3)
    with store.write() as tx:
        tx.insert_launch_token(token)
    for i in range(3):
        with store.write() as tx:
            assert tx.consume_launch_token(token.token_hash, NOW + i) is True
        # consumed_at is set by the last use only.
        stored = store.get_launch_token(token.token_hash)
        assert stored == replace(token, uses=i + 1, consumed_at=NOW + 2 if i == 2 else None)
    with store.write() as tx:
        assert tx.consume_launch_token(token.token_hash, NOW + 3) is False
    assert store.get_launch_token(token.token_hash) == replace(token, uses=3, consumed_at=NOW + 2)


def test_a_use_undone_by_a_rollback_is_not_counted(store: Store) -> None:
    token = make_launch_token(single_use=False, max_uses=2)
    with store.write() as tx:
        tx.insert_launch_token(token)
    with pytest.raises(RuntimeError), store.write() as tx:
        assert tx.consume_launch_token(token.token_hash, NOW) is True
        raise RuntimeError
    with store.write() as tx:
        with pytest.raises(RuntimeError), tx.savepoint():
            assert tx.consume_launch_token(token.token_hash, NOW) is True
            raise RuntimeError
        assert tx.consume_launch_token(token.token_hash, NOW) is True
    assert store.get_launch_token(token.token_hash) == replace(token, uses=1)


def test_concurrent_consumers_take_exactly_the_uses_left(store: Store) -> None:
    """20 transactions race for a token with 5 uses: exactly 5 win, on every backend."""
    token = make_launch_token(single_use=False, max_uses=5)
    with store.write() as tx:
        tx.insert_launch_token(token)
    contenders = 20
    barrier = threading.Barrier(contenders)
    results: list[bool] = []
    lock = threading.Lock()

    def consume() -> None:
        barrier.wait(timeout=30)
        with store.write() as tx:
            won = tx.consume_launch_token(token.token_hash, NOW)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=consume) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False] * 15 + [True] * 5
    assert store.get_launch_token(token.token_hash) == replace(token, uses=5, consumed_at=NOW)


def test_agent_allow_resume_round_trip(store: Store) -> None:
    """Resume reads whether it is allowed from the agent: the store must keep it."""
    agent = replace(make_agent(9), allow_resume=False)
    with store.write() as tx:
        tx.insert_agent(agent)
        tx.insert_agent(make_agent(10))
    assert store.get_agent(agent.agent_id) == agent
    stored = store.get_agent(make_agent(10).agent_id)
    assert stored is not None
    assert stored.allow_resume is True


def test_agent_attest_round_trip(store: Store) -> None:
    """Resume hands on the registration's ``attest`` claim from the agent record."""
    claim = '{"declared":{"model":"acme/m/1"},"type":"launch_token"}'
    agent = replace(make_agent(11), attest=claim)
    with store.write() as tx:
        tx.insert_agent(agent)
        tx.insert_agent(make_agent(12))
    assert store.get_agent(agent.agent_id) == agent
    stored = store.get_agent(make_agent(12).agent_id)
    assert stored is not None and stored.attest == ""


def test_agent_ceiling_round_trip(store: Store) -> None:
    """An agent's standing ends at its registration's own ceiling, kept with it."""
    agent = replace(make_agent(13), ceiling=int(NOW) + 300)
    with store.write() as tx:
        tx.insert_agent(agent)
        tx.insert_agent(make_agent(14))
    assert store.get_agent(agent.agent_id) == agent
    stored = store.get_agent(make_agent(14).agent_id)
    assert stored is not None and stored.ceiling == 0  # registration time + renewal_ceiling


def test_agent_lineage_round_trip(store: Store) -> None:
    """What an agent's registration descends from is kept with it (its standing, and what
    is handed to it, end with each ancestor)."""
    lineage = ("app:app-a-0123ab", "fed:partner.example", "attest:jwt_svid:p:spiffe://x/y")
    agent = replace(make_agent(15), lineage=lineage)
    with store.write() as tx:
        tx.insert_agent(agent)
        tx.insert_agent(make_agent(16))
    assert store.get_agent(agent.agent_id) == agent
    stored = store.get_agent(make_agent(16).agent_id)
    assert stored is not None and stored.lineage == ()  # its app and attestation alone


def test_nonce_is_consumed_once(store: Store) -> None:
    with store.write() as tx:
        assert tx.consume_nonce("n1", NOW + 30) is True
        assert tx.consume_nonce("n1", NOW + 30) is False
        assert tx.consume_nonce("n2", NOW + 30) is True
    with store.write() as tx:
        assert tx.consume_nonce("n1", NOW + 60) is False


def test_dpop_proof_is_consumed_once_pruned_at_expiry_and_per_tenant(store: Store) -> None:
    # The DPoP replay cache (RFC 9449 section 11.1): one row per proof, shared by every
    # process on the store; a rolled-back use is no use; expired rows are pruned.
    with store.write() as tx:
        assert tx.consume_dpop_proof("p1", NOW + 30) is True
        assert tx.consume_dpop_proof("p1", NOW + 30) is False
        assert tx.consume_dpop_proof("p2", NOW + 600) is True
        assert tx.consume_nonce("p1", NOW + 30) is True  # another table than nonces
    with pytest.raises(Boom), store.write() as tx:
        assert tx.consume_dpop_proof("p3", NOW + 30) is True
        raise Boom
    with store.write() as tx:
        assert tx.consume_dpop_proof("p1", NOW + 60) is False
        assert tx.consume_dpop_proof("p3", NOW + 30) is True
    other = store.for_tenant("acme")
    with other.write() as tx:
        assert tx.consume_dpop_proof("p1", NOW + 30) is True  # each tenant its own
    assert store.prune(NOW + 30) == 3  # p1, p3 and the nonce; p2 lives on
    with store.write() as tx:
        assert tx.consume_dpop_proof("p1", NOW + 60) is True
        assert tx.consume_dpop_proof("p2", NOW + 600) is False


def test_attestors_round_trip_replace_and_delete_per_tenant(store: Store) -> None:
    record = AttestorRecord(
        name="prod",
        type="k8s_sat",
        settings='{"issuer":"https://k8s.example"}',
        policy='[{"match":{},"scope":["read:x:*"]}]',
        app_id="",
        created_at=NOW,
        created_by="admin",
    )
    other = replace(record, name="ci", type="oidc", app_id="app-1")
    with store.write() as tx:
        tx.put_attestor(record)
        tx.put_attestor(other)
    assert store.get_attestor("prod") == record
    assert store.list_attestors() == [other, record]  # by name
    replaced = replace(record, policy="[]", created_at=NOW + 1)
    with store.write() as tx:
        tx.put_attestor(replaced)
    assert store.get_attestor("prod") == replaced
    assert store.for_tenant("acme").get_attestor("prod") is None  # each tenant its own
    with pytest.raises(Boom), store.write() as tx:
        assert tx.delete_attestor("prod") is True
        raise Boom
    assert store.get_attestor("prod") == replaced
    with store.write() as tx:
        assert tx.delete_attestor("prod") is True
        assert tx.delete_attestor("prod") is False
    assert store.list_attestors() == [other]


def test_attestation_evidence_is_used_once_per_tenant_and_pruned_at_expiry(store: Store) -> None:
    with store.write() as tx:
        assert tx.consume_evidence("e1", NOW + 30) is True
        assert tx.consume_evidence("e1", NOW + 30) is False
        assert tx.consume_evidence("e2", NOW + 600) is True
    with pytest.raises(Boom), store.write() as tx:
        assert tx.consume_evidence("e3", NOW + 30) is True
        raise Boom
    with store.write() as tx:
        assert tx.consume_evidence("e3", NOW + 30) is True  # the rolled-back use was none
    with store.for_tenant("acme").write() as tx:
        assert tx.consume_evidence("e1", NOW + 30) is True
    assert store.prune(NOW + 30) == 2  # e1 and e3 of this tenant; e2 lives on
    with store.write() as tx:
        assert tx.consume_evidence("e1", NOW + 60) is True
        assert tx.consume_evidence("e2", NOW + 600) is False


def test_offline_reports_are_audited_once_per_tenant_and_pruned_at_expiry(store: Store) -> None:
    # A report sent again (a retry after a lost answer, a replay) finds its key and is
    # audited once; a rolled-back report was not recorded; each tenant keeps its own.
    with store.write() as tx:
        assert tx.consume_offline_report("d:j1", NOW + 30) is True
        assert tx.consume_offline_report("d:j1", NOW + 30) is False
        assert tx.consume_offline_report("u:j1:app:c1:100", NOW + 600) is True
        assert tx.consume_evidence("d:j1", NOW + 30) is True  # another table
    with pytest.raises(Boom), store.write() as tx:
        assert tx.consume_offline_report("d:j2", NOW + 30) is True
        raise Boom
    with store.write() as tx:
        assert tx.consume_offline_report("d:j2", NOW + 30) is True
        assert tx.consume_offline_report("u:j1:app:c1:100", NOW + 600) is False
    with store.for_tenant("acme").write() as tx:
        assert tx.consume_offline_report("d:j1", NOW + 30) is True
    assert store.prune(NOW + 30) == 3  # d:j1, d:j2 and the evidence of this tenant
    with store.write() as tx:
        assert tx.consume_offline_report("d:j1", NOW + 60) is True
        assert tx.consume_offline_report("u:j1:app:c1:100", NOW + 600) is False


# -- agents ---------------------------------------------------------------------------------


def test_agent_round_trip_and_status(store: Store) -> None:
    agent = make_agent()
    with store.write() as tx:
        tx.insert_agent(agent)
    assert store.get_agent(agent.agent_id) == agent
    assert store.get_agent("spiffe://example.org/agent/none") is None
    with store.write() as tx:
        tx.set_agent_status(agent.agent_id, "revoked")
    assert store.get_agent(agent.agent_id) == replace(agent, status="revoked")


def test_agent_binding_and_audience_round_trip(store: Store) -> None:
    agent = replace(
        make_agent(7),
        cnf='{"jkt":"abc"}',
        audience=("https://api.example.com", "mcp://tickets"),
    )
    with store.write() as tx:
        tx.insert_agent(agent)
    assert store.get_agent(agent.agent_id) == agent


def test_agent_token_ttl_round_trip(store: Store) -> None:
    """A resumed agent is held to its launch token's max_ttl: the store must keep it."""
    agent = replace(make_agent(8), token_ttl=45)
    with store.write() as tx:
        tx.insert_agent(agent)
    stored = store.get_agent(agent.agent_id)
    assert stored is not None
    assert stored.token_ttl == 45


def test_agent_duplicate_and_missing(store: Store) -> None:
    with store.write() as tx:
        tx.insert_agent(make_agent(1))
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_agent(make_agent(1, task_id="other"))
    with store.write() as tx:
        # Revoking an agent the store never saw is allowed: nothing to mark.
        tx.set_agent_status("spiffe://example.org/agent/none", "revoked")
    assert store.get_agent("spiffe://example.org/agent/none") is None
    assert store.get_agent(make_agent(1).agent_id) == make_agent(1)


# -- revocations ----------------------------------------------------------------------------


def revoke(
    store: Store, level: str, target: str, revoked_at: int, expires_at: float
) -> RevocationWrite:
    with store.write() as tx:
        return tx.insert_revocation(RevocationRecord(level, target, revoked_at, expires_at))


def test_revocation_insert_and_load(store: Store) -> None:
    assert store.load_revocations(NOW) == []
    assert revoke(store, "agent", "spiffe://x/a", 100, NOW + 60) is RevocationWrite.INSERTED
    (entry,) = store.load_revocations(NOW)
    assert (entry.level, entry.target, entry.revoked_at, entry.expires_at) == (
        "agent",
        "spiffe://x/a",
        100,
        NOW + 60,
    )
    assert entry.seq > 0


def test_revocation_seq_is_assigned_not_taken(store: Store) -> None:
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("token", "jti-1", 1, NOW + 60, seq=999))
        tx.insert_revocation(RevocationRecord("token", "jti-2", 1, NOW + 60, seq=5))
    first, second = store.load_revocations(NOW)
    assert 0 < first.seq < second.seq
    assert first.target == "jti-1"


def test_revocation_duplicate_is_unchanged_and_writes_nothing(store: Store) -> None:
    revoke(store, "task", "task-1", 100, NOW + 60)
    (before,) = store.load_revocations(NOW)
    assert revoke(store, "task", "task-1", 100, NOW + 60) is RevocationWrite.UNCHANGED
    # Earlier, or earlier in one value and equal in the other: nothing to widen.
    assert revoke(store, "task", "task-1", 50, NOW + 10) is RevocationWrite.UNCHANGED
    assert revoke(store, "task", "task-1", 100, NOW + 10) is RevocationWrite.UNCHANGED
    assert store.load_revocations(NOW) == [before]
    assert store.revocations_since(before.seq) == []
    # Same target at another level is a separate entry.
    assert revoke(store, "agent", "task-1", 100, NOW + 60) is RevocationWrite.INSERTED


def test_revocation_target_longer_than_the_limit_is_refused(store: Store) -> None:
    assert revoke(store, "chain", "c" * MAX_TARGET, 1, NOW + 60) is RevocationWrite.INSERTED
    with pytest.raises(InvalidRequest):
        revoke(store, "chain", "c" * (MAX_TARGET + 1), 1, NOW + 60)
    assert [len(r.target) for r in store.load_revocations(NOW)] == [MAX_TARGET]


def test_revocation_extension_gets_a_new_seq(store: Store) -> None:
    revoke(store, "agent", "a", 100, NOW + 60)
    revoke(store, "agent", "b", 100, NOW + 60)
    a, b = store.load_revocations(NOW)
    assert revoke(store, "agent", "a", 100, NOW + 120) is RevocationWrite.WIDENED
    extended = store.revocations_since(b.seq)
    assert [(e.target, e.revoked_at, e.expires_at) for e in extended] == [("a", 100, NOW + 120)]
    assert extended[0].seq > b.seq
    assert [e.target for e in store.load_revocations(NOW)] == ["b", "a"]
    # A later revoked_at alone also extends; each value keeps its maximum.
    assert revoke(store, "agent", "a", 200, NOW + 30) is RevocationWrite.WIDENED
    (again,) = store.revocations_since(extended[0].seq)
    assert (again.revoked_at, again.expires_at) == (200, NOW + 120)
    assert again.seq > extended[0].seq


def test_revocation_seq_is_never_reused_after_prune(store: Store) -> None:
    revoke(store, "token", "long", 1, NOW + 100)
    revoke(store, "token", "short", 1, NOW + 10)
    highest = max(r.seq for r in store.revocations_since(0))
    assert store.prune(NOW + 50) == 1
    revoke(store, "token", "new", 1, NOW + 100)
    (new,) = store.revocations_since(highest)
    assert new.target == "new"
    assert new.seq > highest


def test_each_tenant_numbers_its_own_revocations(store: Store) -> None:
    """Another tenant's revocations leave no gap in a tenant's seqs (its feed's numbers),
    and a duplicate or an entry that does not widen uses no number."""
    other = store.for_tenant("other")
    revoke(store, "token", "a", 1, NOW + 60)
    revoke(other, "token", "x", 1, NOW + 60)
    revoke(other, "token", "y", 1, NOW + 60)
    assert revoke(store, "token", "a", 1, NOW + 60) is RevocationWrite.UNCHANGED
    revoke(store, "token", "b", 1, NOW + 60)
    assert revoke(store, "token", "a", 2, NOW + 60) is RevocationWrite.WIDENED  # next number
    mine = [(r.target, r.seq) for r in store.revocations_since(0)]
    theirs = [(r.target, r.seq) for r in other.revocations_since(0)]
    assert mine == [("b", 2), ("a", 3)]
    assert theirs == [("x", 1), ("y", 2)]


def test_load_revocations_filters_expired_in_seq_order(store: Store) -> None:
    revoke(store, "token", "t1", 1, NOW + 10)
    revoke(store, "token", "t2", 1, NOW)  # expires_at == now: no longer loaded
    revoke(store, "chain", "c1", 1, NOW + 5)
    revoke(store, "token", "t3", 1, NOW - 5)
    live = store.load_revocations(NOW)
    assert [r.target for r in live] == ["t1", "c1"]
    assert [r.seq for r in live] == sorted(r.seq for r in live)


def test_revocations_since(store: Store) -> None:
    for i in range(5):
        revoke(store, "token", f"t{i}", 1, NOW - 1 if i == 2 else NOW + 10)
    everything = store.revocations_since(0)
    assert [r.target for r in everything] == [f"t{i}" for i in range(5)]  # expired included
    seqs = [r.seq for r in everything]
    assert seqs == sorted(set(seqs))
    assert [r.target for r in store.revocations_since(seqs[2])] == ["t3", "t4"]
    assert store.revocations_since(seqs[-1]) == []


# -- audit ----------------------------------------------------------------------------------


def test_audit_head_genesis(store: Store) -> None:
    assert store.audit_head() == GENESIS
    with store.write() as tx:
        assert tx.audit_head() == GENESIS


def test_append_audit_and_head(store: Store) -> None:
    events = chain(3)
    with store.write() as tx:
        tx.append_audit(events[:2])
        assert tx.audit_head() == (2, events[1].hash)  # sees its own writes
        tx.append_audit(events[2:])
        tx.append_audit([])
    assert store.audit_head() == (3, events[2].hash)
    assert list(store.iter_audit()) == events


def test_append_audit_refuses_seq_not_after_head(store: Store) -> None:
    events = chain(2)
    append(store, events)
    with pytest.raises(Conflict), store.write() as tx:
        tx.append_audit(chain(1, start=(1, events[0].hash)))
    with pytest.raises(Conflict), store.write() as tx:
        tx.append_audit([*chain(2, start=(2, events[1].hash))[::-1]])
    assert store.audit_head() == (2, events[1].hash)


def test_an_append_undone_by_a_savepoint_leaves_the_head_where_it_was(store: Store) -> None:
    events = chain(2)
    with store.write() as tx:
        assert tx.audit_head() == GENESIS
        with pytest.raises(Conflict), tx.savepoint():
            tx.append_audit(events[:1])
            raise Conflict("undo")
        tx.append_audit(events[:1])  # seq 1 again: it was undone
        tx.append_audit(events[1:])
        with pytest.raises(Conflict):
            tx.append_audit(events[1:])  # seq 2 is now taken
        assert tx.audit_head() == (2, events[1].hash)
    assert store.audit_head() == (2, events[1].hash)


def test_audit_event_fields_round_trip(store: Store) -> None:
    event = AuditEvent(
        seq=1,
        timestamp="2027-01-15T08:00:00.123456Z",
        event_type="token_issued",
        agent_id="spiffe://example.org/agent/o/t/i",
        task_id="task-ü",
        orch_id="orch",
        detail='scope=["read:data:*"] \n newline and "quotes"',
        resource="/v1/token/renew",
        outcome="success",
        deleg_depth=2,
        deleg_chain_hash="cd" * 32,
        request_id="req-1",
        prev_hash="0" * 64,
        hash="ef" * 32,
    )
    append(store, [event])
    assert list(store.iter_audit()) == [event]
    assert store.query_audit(AuditQuery()) == ([event], 1)
    assert event.id == "evt-000001"


def test_query_audit_exact_filters(store: Store) -> None:
    events = chain(20)
    append(store, events)

    def expect(query: AuditQuery, keep: list[AuditEvent]) -> None:
        got, total = store.query_audit(query)
        assert got == keep[: query.limit]
        assert total == len(keep)

    expect(AuditQuery(), events)
    expect(AuditQuery(agent_id="agent-1"), [e for e in events if e.agent_id == "agent-1"])
    expect(AuditQuery(task_id="task-0"), [e for e in events if e.task_id == "task-0"])
    expect(AuditQuery(event_type="type-3"), [e for e in events if e.event_type == "type-3"])
    expect(AuditQuery(outcome="denied"), [e for e in events if e.outcome == "denied"])
    expect(
        AuditQuery(agent_id="agent-0", task_id="task-0", outcome="denied"),
        [
            e
            for e in events
            if (e.agent_id, e.task_id, e.outcome) == ("agent-0", "task-0", "denied")
        ],
    )
    expect(AuditQuery(agent_id="nobody"), [])
    expect(AuditQuery(agent_id="agent"), [])  # exact match, not a prefix


def test_query_audit_success_and_other_outcomes(store: Store) -> None:
    # Only outcomes other than success are indexed (migration 0017); success is counted as
    # the rest: the answers must be the same.
    events = chain(20)
    append(store, events)
    ok = [e for e in events if e.outcome == "success"]
    got, total = store.query_audit(AuditQuery(outcome="success", limit=5, offset=2))
    assert (got, total) == (ok[2:7], len(ok))
    typed = [e for e in ok if e.event_type == "type-1" and e.agent_id == "agent-2"]
    got, total = store.query_audit(
        AuditQuery(outcome="success", event_type="type-1", agent_id="agent-2")
    )
    assert (got, total) == (typed, len(typed))
    denied = [e for e in events if e.event_type == "type-0" and e.outcome == "denied"]
    assert store.query_audit(AuditQuery(outcome="denied", event_type="type-0")) == (
        denied,
        len(denied),
    )
    assert store.query_audit(AuditQuery(outcome="failure")) == ([], 0)
    got, total = store.query_audit(AuditQuery(outcome="success", since=NOW + 10))
    assert (got, total) == (ok[-len(got) :], len([e for e in ok if e.seq > 10]))


def test_query_audit_time_range_with_a_clock_stepped_back(store: Store) -> None:
    # Timestamps need not grow with seq (a clock stepped back, another worker's clock):
    # a time range still finds every event in it, in seq order.
    offsets = [0, 5, 9, 2, 3, 8, 1, 7]
    events = [
        replace(e, timestamp=format_rfc3339(NOW + offset))
        for e, offset in zip(chain(len(offsets)), offsets, strict=True)
    ]
    append(store, events)
    got, total = store.query_audit(AuditQuery(since=NOW + 2))
    assert [e.seq for e in got] == [2, 3, 4, 5, 6, 8] and total == 6
    got, total = store.query_audit(AuditQuery(since=NOW + 2, until=NOW + 5))
    assert [e.seq for e in got] == [2, 4, 5] and total == 3
    got, total = store.query_audit(AuditQuery(since=NOW + 1, until=NOW + 1))
    assert [e.seq for e in got] == [7] and total == 1
    got, total = store.query_audit(AuditQuery(since=NOW + 1, outcome="denied"))
    assert [e.seq for e in got] == [6] and total == 1  # seq 1 (denied) is at NOW + 0
    assert store.query_audit(AuditQuery(since=NOW + 10)) == ([], 0)


def test_query_audit_time_range_is_inclusive(store: Store) -> None:
    events = chain(10, ts0=NOW)  # event i at NOW + i
    append(store, events)
    got, total = store.query_audit(AuditQuery(since=NOW + 3, until=NOW + 6))
    assert [e.seq for e in got] == [4, 5, 6, 7]
    assert total == 4
    assert store.query_audit(AuditQuery(since=NOW + 8.5))[1] == 1
    assert store.query_audit(AuditQuery(until=NOW + 0.5))[1] == 1
    assert store.query_audit(AuditQuery(since=NOW + 20))[1] == 0


def test_query_audit_reads_timestamp_offsets(store: Store) -> None:
    event = replace(chain(1)[0], timestamp="2027-01-01T02:00:00+02:00")  # 00:00 UTC
    append(store, [event])
    midnight = 1798761600.0  # 2027-01-01T00:00:00Z
    assert store.query_audit(AuditQuery(since=midnight, until=midnight))[1] == 1
    assert store.query_audit(AuditQuery(since=midnight + 0.001))[1] == 0


def test_query_audit_limit_offset_total(store: Store) -> None:
    events = chain(30)
    append(store, events)
    denied = [e for e in events if e.outcome == "denied"]  # seq 1, 6, 11, 16, 21, 26
    got, total = store.query_audit(AuditQuery(outcome="denied", limit=2, offset=1))
    assert got == denied[1:3]
    assert total == 6
    got, total = store.query_audit(AuditQuery(limit=10, offset=25))
    assert got == events[25:]
    assert total == 30
    assert store.query_audit(AuditQuery(limit=0)) == ([], 30)
    assert store.query_audit(AuditQuery(offset=100)) == ([], 30)
    with pytest.raises(ValueError):
        store.query_audit(AuditQuery(limit=-1))
    with pytest.raises(ValueError):
        store.query_audit(AuditQuery(offset=-1))


@pytest.mark.parametrize("batch", [1, 3, 5, 7, 5000])
def test_iter_audit_order_and_batching(store: Store, batch: int) -> None:
    events = chain(15)
    append(store, events[:10])
    append(store, events[10:])
    assert list(store.iter_audit(batch=batch)) == events
    assert list(store.iter_audit(after_seq=9, batch=batch)) == events[9:]
    assert list(store.iter_audit(after_seq=15, batch=batch)) == []


def test_iter_audit_on_empty_log_and_bad_batch(store: Store) -> None:
    assert list(store.iter_audit()) == []
    with pytest.raises(ValueError):
        list(store.iter_audit(batch=0))


@pytest.mark.parametrize("batch", [1, 4, 5000])
def test_iter_audit_ts_gives_each_event_the_ts_derived_from_its_timestamp(
    store: Store, batch: int
) -> None:
    # What `audit verify --database` compares: the ts a time filter reads, stored beside
    # each event, is timestamp_seconds of its timestamp, whatever offset it was written in.
    events = [*chain(5), *chain(1, start=(5, "p"), ts0=NOW + 0.123456)]
    events.append(replace(chain(1, start=(6, "q"))[0], timestamp="2027-01-01T02:00:00+02:00"))
    append(store, events)
    pairs = list(store.iter_audit_ts(batch=batch))
    assert [event for event, _ in pairs] == events
    assert [ts for _, ts in pairs] == [timestamp_seconds(e.timestamp) for e in events]
    assert pairs[-1][1] == 1798761600.0  # 2027-01-01T00:00:00Z
    assert list(store.iter_audit_ts(after_seq=5, batch=batch)) == pairs[5:]
    with pytest.raises(ValueError):
        list(store.iter_audit_ts(batch=0))


# -- transactions ---------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_in_write_rolls_back_everything(store: Store) -> None:
    token = make_launch_token()
    agent = make_agent()
    with store.write() as tx:
        tx.insert_launch_token(token)
        tx.insert_agent(agent)
        tx.insert_revocation(RevocationRecord("task", "t", 1, NOW + 60))
    (revocation,) = store.load_revocations(NOW)
    with pytest.raises(Boom), store.write() as tx:
        tx.insert_app(make_app())
        assert tx.consume_launch_token(token.token_hash, NOW) is True
        assert tx.consume_nonce("n", NOW + 30) is True
        tx.insert_agent(make_agent(2))
        tx.set_agent_status(agent.agent_id, "revoked")
        tx.insert_revocation(RevocationRecord("task", "t", 5, NOW + 600))
        tx.insert_revocation(RevocationRecord("agent", "a", 5, NOW + 600))
        tx.append_audit(chain(2))
        raise Boom
    assert store.list_apps() == []
    assert store.get_launch_token(token.token_hash) == token
    assert store.get_agent(agent.agent_id) == agent
    assert store.get_agent(make_agent(2).agent_id) is None
    assert store.load_revocations(NOW) == [revocation]
    assert store.revocations_since(revocation.seq) == []
    assert store.audit_head() == GENESIS
    with store.write() as tx:
        assert tx.consume_nonce("n", NOW + 30) is True
        assert tx.consume_launch_token(token.token_hash, NOW) is True


def test_savepoint_rollback_undoes_only_its_block(store: Store) -> None:
    token = make_launch_token()
    with store.write() as tx:
        tx.insert_launch_token(token)
    events = chain(2)
    with store.write() as tx:
        with tx.savepoint():
            tx.insert_app(make_app(1))
            tx.append_audit(events[:1])
        with pytest.raises(Boom), tx.savepoint():
            tx.insert_app(make_app(2))
            assert tx.consume_launch_token(token.token_hash, NOW) is True
            assert tx.consume_nonce("n", NOW + 30) is True
            tx.insert_revocation(RevocationRecord("agent", "a", 1, NOW + 60))
            tx.append_audit(events[1:])
            raise Boom
        assert tx.audit_head() == (1, events[0].hash)
        with tx.savepoint():
            tx.insert_agent(make_agent())
    assert [a.app_id for a in store.list_apps()] == ["app-1"]
    assert store.get_launch_token(token.token_hash) == token
    assert store.load_revocations(NOW) == []
    assert store.get_agent(make_agent().agent_id) == make_agent()
    assert list(store.iter_audit()) == events[:1]
    with store.write() as tx:
        assert tx.consume_nonce("n", NOW + 30) is True


def test_nested_savepoints(store: Store) -> None:
    with store.write() as tx:
        with tx.savepoint():
            tx.insert_app(make_app(1))
            with pytest.raises(Boom), tx.savepoint():
                tx.insert_app(make_app(2))
                raise Boom
            tx.insert_app(make_app(3))
        with pytest.raises(Boom), tx.savepoint():
            tx.insert_app(make_app(4))
            with tx.savepoint():
                tx.insert_app(make_app(5))
            raise Boom
    assert sorted(a.app_id for a in store.list_apps()) == ["app-1", "app-3"]


def test_failed_operation_in_savepoint_keeps_the_batch(store: Store) -> None:
    """The group committer's pattern: one operation's Conflict does not sink the others."""
    with store.write() as tx:
        tx.insert_app(make_app(1))
    with store.write() as tx:
        for n in (2, 1, 3):
            try:
                with tx.savepoint():
                    tx.insert_agent(make_agent(n))
                    tx.insert_app(make_app(n))
            except Conflict:
                pass
    assert sorted(a.app_id for a in store.list_apps()) == ["app-1", "app-2", "app-3"]
    assert store.get_agent(make_agent(1).agent_id) is None
    assert store.get_agent(make_agent(3).agent_id) == make_agent(3)


def test_write_is_not_reentrant(store: Store) -> None:
    with store.write() as tx:
        tx.insert_app(make_app(1))
        with pytest.raises(RuntimeError), store.write():
            pass
        with pytest.raises(RuntimeError):
            store.prune(NOW)  # prune writes too
    assert store.get_app("app-1") == make_app(1)


def test_transaction_is_dead_after_write(store: Store) -> None:
    with store.write() as tx:
        pass
    with pytest.raises(RuntimeError):
        tx.insert_app(make_app())
    assert store.list_apps() == []


def test_other_threads_never_see_uncommitted_writes(store: Store) -> None:
    seen: list[tuple[AppRecord | None, bool]] = []
    committed = threading.Event()

    def read() -> None:
        app = store.get_app("app-1")
        seen.append((app, committed.is_set()))

    with store.write() as tx:
        tx.insert_app(make_app(1))
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=0.5)  # a backend may block readers until the commit
        committed.set()
    reader.join()
    ((app, after_commit),) = seen
    assert app is None or after_commit


def test_closed_store_refuses_work(store: Store) -> None:
    store.close()
    with pytest.raises(RuntimeError), store.write():
        pass
    with pytest.raises(RuntimeError):
        store.get_app("app-1")
    store.close()  # twice is harmless


# -- prune ----------------------------------------------------------------------------------


def test_prune(store: Store) -> None:
    single = make_launch_token(1)  # expires NOW + 30
    multi = make_launch_token(2, single_use=False)
    live = make_launch_token(3, expires_at=NOW + 600)
    consumed_live = make_launch_token(4, expires_at=NOW + 600)
    events = chain(5)
    with store.write() as tx:
        for token in (single, multi, live, consumed_live):
            tx.insert_launch_token(token)
        assert tx.consume_launch_token(single.token_hash, NOW)
        assert tx.consume_launch_token(consumed_live.token_hash, NOW)
        tx.consume_nonce("old", NOW + 30)
        tx.consume_nonce("edge", NOW + 100)
        tx.consume_nonce("new", NOW + 600)
        tx.insert_revocation(RevocationRecord("token", "old", 1, NOW + 30))
        tx.insert_revocation(RevocationRecord("token", "edge", 1, NOW + 100))
        tx.insert_revocation(RevocationRecord("token", "new", 1, NOW + 600))
        tx.insert_app(make_app())
        tx.insert_agent(make_agent())
        tx.append_audit(events)

    # 2 launch tokens + 2 nonces + 2 revocations; expires_at == now counts as expired.
    assert store.prune(NOW + 100) == 6
    assert store.get_launch_token(single.token_hash) is None
    assert store.get_launch_token(multi.token_hash) is None
    assert store.get_launch_token(live.token_hash) == live
    assert store.get_launch_token(consumed_live.token_hash) == replace(
        consumed_live, consumed_at=NOW, uses=1
    )
    assert [r.target for r in store.revocations_since(0)] == ["new"]
    with store.write() as tx:
        assert tx.consume_nonce("old", NOW + 200) is True  # pruned, so new again
        assert tx.consume_nonce("new", NOW + 600) is False  # still remembered
    assert list(store.iter_audit()) == events
    assert store.get_app("app-1") == make_app()
    assert store.get_agent(make_agent().agent_id) == make_agent()
    assert store.prune(NOW + 100) == 0
    assert store.prune(NOW + 600) == 5  # 2 live tokens, "new" revocation, 2 nonces
    assert store.prune(NOW + 600) == 0


# --- agent sessions, leases, discovery bindings, launch-token principal ---------


def _session(n: int = 1, **changes: object) -> AgentSession:
    session = AgentSession(
        agent_id=f"spiffe://example.org/agent/orch-1/task-{n}/inst-{n}",
        principal="user:alice@example.com",
        heartbeat_required=True,
        last_heartbeat=NOW + n,
        resumes=0,
        state="active",
        expires_at=NOW + 1000,
    )
    return replace(session, **changes)  # type: ignore[arg-type]


def test_launch_token_principal_round_trips(store: Store) -> None:
    record = make_launch_token(principal="user:alice@example.com")
    with store.write() as tx:
        tx.insert_launch_token(record)
        tx.insert_launch_token(make_launch_token(2))
    assert store.get_launch_token(record.token_hash) == record
    assert store.get_launch_token(make_launch_token(2).token_hash).principal == ""  # type: ignore[union-attr]


def test_agent_sessions_put_get_and_silent_query(store: Store) -> None:
    assert store.get_agent_session(_session().agent_id) is None
    with store.write() as tx:
        tx.put_agent_session(_session(1))
        tx.put_agent_session(_session(2, heartbeat_required=False))
        tx.put_agent_session(_session(3, state="released"))
        tx.put_agent_session(_session(4))
        assert tx.get_agent_session(_session(1).agent_id) == _session(1)
    assert store.get_agent_session(_session(2).agent_id) == _session(2, heartbeat_required=False)
    # Only required, active sessions older than the bound; oldest first; limited.
    assert store.silent_agents(NOW + 10, 10) == [_session(1), _session(4)]
    assert store.silent_agents(NOW + 10, 1) == [_session(1)]
    assert store.silent_agents(NOW + 1, 10) == []
    with store.write() as tx:
        tx.put_agent_session(_session(1, last_heartbeat=NOW + 50, resumes=2))
    assert store.get_agent_session(_session(1).agent_id) == _session(
        1, last_heartbeat=NOW + 50, resumes=2
    )
    assert store.silent_agents(NOW + 10, 10) == [_session(4)]


def test_raise_resumes_only_raises(store: Store) -> None:
    agent = _session(1).agent_id
    with store.write() as tx:
        assert tx.raise_resumes(agent, 3) is None  # no session: nothing written
        tx.put_agent_session(_session(1, resumes=2))
        tx.put_agent_session(_session(2, resumes=2))
        assert tx.raise_resumes(agent, 3) is True
        assert tx.raise_resumes(agent, 3) is False  # already there
        assert tx.raise_resumes(agent, 1) is False  # never lowered
    assert store.get_agent_session(agent) == _session(1, resumes=3)
    assert store.get_agent_session(_session(2).agent_id) == _session(2, resumes=2)
    with pytest.raises(Boom), store.write() as tx:
        assert tx.raise_resumes(agent, 9) is True
        raise Boom
    assert store.get_agent_session(agent) == _session(1, resumes=3)


def test_session_write_rolls_back(store: Store) -> None:
    with pytest.raises(Boom), store.write() as tx:
        tx.put_agent_session(_session())
        raise Boom
    assert store.get_agent_session(_session().agent_id) is None


def test_lease_has_one_holder_until_it_expires(store: Store) -> None:
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "a", NOW, NOW + 60)
        assert not tx.acquire_lease("sweeper", "b", NOW + 10, NOW + 70)
        assert tx.acquire_lease("sweeper", "a", NOW + 10, NOW + 70)  # renewed by its holder
        assert tx.acquire_lease("other", "b", NOW, NOW + 60)
    with store.write() as tx:
        assert not tx.acquire_lease("sweeper", "b", NOW + 69, NOW + 129)
        assert tx.acquire_lease("sweeper", "b", NOW + 70, NOW + 130)  # expired: taken over
        assert not tx.acquire_lease("sweeper", "a", NOW + 71, NOW + 131)


def test_lease_released_by_its_holder_is_free_at_once(store: Store) -> None:
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "a", NOW, NOW + 60)
        assert tx.acquire_lease("other", "a", NOW, NOW + 60)
    with store.write() as tx:
        assert tx.release_lease("sweeper", "a")
        assert not tx.release_lease("sweeper", "a")  # given up already
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "b", NOW + 1, NOW + 61)  # long before NOW + 60
        assert not tx.acquire_lease("other", "b", NOW + 1, NOW + 61)  # only the one named


def test_lease_release_by_another_holder_changes_nothing(store: Store) -> None:
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "a", NOW, NOW + 60)
    with store.write() as tx:
        assert not tx.release_lease("sweeper", "b")
        assert not tx.release_lease("nothing", "a")
    with store.write() as tx:
        assert not tx.acquire_lease("sweeper", "b", NOW + 1, NOW + 61)
        assert tx.acquire_lease("sweeper", "a", NOW + 1, NOW + 61)  # still a's to extend
    # An expired lease taken over is the new holder's: the old one cannot give it up.
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "b", NOW + 61, NOW + 121)
        assert not tx.release_lease("sweeper", "a")
        assert not tx.acquire_lease("sweeper", "c", NOW + 62, NOW + 122)


def test_lease_release_rolls_back(store: Store) -> None:
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "a", NOW, NOW + 60)
    with pytest.raises(Boom), store.write() as tx:
        assert tx.release_lease("sweeper", "a")
        raise Boom
    with store.write() as tx:
        assert not tx.acquire_lease("sweeper", "b", NOW + 1, NOW + 61)


def test_discovery_bindings_put_get(store: Store) -> None:
    binding = DiscoveryBinding(
        agent_id=make_agent().agent_id,
        endpoint="https://a.example/x",
        issued_at=int(NOW),
        signature=bytes(range(64)),
        expires_at=NOW + 100,
    )
    assert store.get_discovery_binding(binding.agent_id) is None
    with store.write() as tx:
        assert tx.put_discovery_binding(binding) is True
    assert store.get_discovery_binding(binding.agent_id) == binding
    newer = replace(binding, endpoint="https://b.example/y", issued_at=int(NOW) + 5)
    with store.write() as tx:
        assert tx.put_discovery_binding(newer) is True
    assert store.get_discovery_binding(binding.agent_id) == newer
    # Only a newer statement replaces it, decided by the write itself.
    for stale in (binding, replace(newer, endpoint="https://c.example/z")):
        with store.write() as tx:
            assert tx.put_discovery_binding(stale) is False
    assert store.get_discovery_binding(binding.agent_id) == newer


def test_prune_removes_expired_sessions_bindings_and_leases(store: Store) -> None:
    with store.write() as tx:
        tx.put_agent_session(_session(1, expires_at=NOW + 10))
        tx.put_agent_session(_session(2, expires_at=NOW + 1000))
        tx.put_discovery_binding(
            DiscoveryBinding(_session(1).agent_id, "https://a/x", int(NOW), bytes(64), NOW + 10)
        )
        tx.acquire_lease("sweeper", "a", NOW, NOW + 10)
    assert store.prune(NOW + 10) == 3
    assert store.get_agent_session(_session(1).agent_id) is None
    assert store.get_agent_session(_session(2).agent_id) == _session(2, expires_at=NOW + 1000)
    assert store.get_discovery_binding(_session(1).agent_id) is None
    with store.write() as tx:
        assert tx.acquire_lease("sweeper", "b", NOW + 10, NOW + 20)


# -- zero-trust enforcement: audience, binding, by-reference tokens ----------------


def test_launch_token_audience_and_agent_binding_round_trip(store: Store) -> None:
    record = make_launch_token(41, audience=("https://mcp.example/files", "mcp-mail"))
    agent = make_agent(41, cnf='{"x5t#S256":"abc","jkt":"def"}')
    with store.write() as tx:
        tx.insert_launch_token(record)
        tx.insert_launch_token(make_launch_token(42))
        tx.insert_agent(agent)
        tx.insert_agent(make_agent(42))
    assert store.get_launch_token(record.token_hash) == record
    assert store.get_launch_token(make_launch_token(42).token_hash) == make_launch_token(42)
    assert store.get_agent(agent.agent_id) == agent
    assert store.get_agent(make_agent(42).agent_id) == make_agent(42)  # cnf "" by default


def _reference(n: int, expires_at: float = NOW + 60) -> ReferenceTokenRecord:
    return ReferenceTokenRecord(
        token_hash=hashlib.sha256(f"tlr-{n}".encode()).hexdigest(),
        kind="at+jwt",
        claims='{"sub":"spiffe://example.org/agent/o/t/i","scope":["read:data:*"]}',
        jti=f"{n:032x}",
        expires_at=expires_at,
    )


def test_reference_token_round_trip_conflict_and_prune(store: Store) -> None:
    live, old = _reference(1), _reference(2, expires_at=NOW - 1)
    with store.write() as tx:
        tx.insert_reference_token(live)
        tx.insert_reference_token(old)
    assert store.get_reference_token(live.token_hash) == live
    assert store.get_reference_token("0" * 64) is None
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_reference_token(live)
    with pytest.raises(RuntimeError), store.write() as tx:  # rolled back with its unit
        tx.insert_reference_token(_reference(3))
        raise RuntimeError
    assert store.get_reference_token(_reference(3).token_hash) is None
    assert store.prune(NOW) >= 1
    assert store.get_reference_token(old.token_hash) is None
    assert store.get_reference_token(live.token_hash) == live


def test_find_revocations_is_a_point_read(store: Store) -> None:
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("agent", "a-1", 10, NOW + 5))
        tx.insert_revocation(RevocationRecord("token", "j-1", 10, NOW - 5))
        tx.insert_revocation(RevocationRecord("chain", "a-1", 10, NOW + 5))
    found = store.find_revocations([("agent", "a-1"), ("token", "j-1"), ("task", "a-1")])
    assert [(r.level, r.target) for r in found] == [("agent", "a-1"), ("token", "j-1")]
    assert all(r.seq > 0 for r in found)
    assert found[0].seq < found[1].seq
    assert store.find_revocations([]) == []
    assert store.find_revocations([("agent", "nobody")]) == []


def test_a_write_finds_a_revocation_committed_before_it_and_its_own(store: Store) -> None:
    """``WriteTx.find_revocation``: what a write unit reads to decide on an entry another
    unit (of its batch, or another process) committed before it."""
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("agent", "operator:alice", 10, NOW + 5))
    with store.write() as tx:
        found = tx.find_revocation("agent", "operator:alice")
        assert found is not None and (found.revoked_at, found.seq) == (10, 1)
        assert tx.find_revocation("chain", "operator:alice") is None
        assert tx.find_revocation("agent", "operator:bob") is None
        tx.insert_revocation(RevocationRecord("agent", "operator:bob", 20, NOW + 5))
        own = tx.find_revocation("agent", "operator:bob")
        assert own is not None and own.revoked_at == 20


def test_a_write_finds_many_revocations_committed_before_it_and_its_own(store: Store) -> None:
    """``WriteTx.find_revocations``: what an issuance reads of the entries that would end
    it (one statement on PostgreSQL), each found as ``find_revocation`` finds it."""
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("agent", "a-1", 10, NOW + 5))
        tx.insert_revocation(RevocationRecord("chain", "j-1", 11, NOW + 5))
    with store.write() as tx:
        assert tx.find_revocations([]) == []
        tx.insert_revocation(RevocationRecord("task", "t-1", 12, NOW + 5))
        found = tx.find_revocations(
            [("agent", "a-1"), ("chain", "a-1"), ("chain", "j-1"), ("task", "t-1")]
        )
        assert sorted((r.level, r.target, r.revoked_at) for r in found) == [
            ("agent", "a-1", 10),
            ("chain", "j-1", 11),
            ("task", "t-1", 12),
        ]
        assert tx.find_revocations([("agent", "nobody")]) == []


# -- operators ------------------------------------------------------------------------------


def make_operator(name: str = "alice", **changes: object) -> OperatorRecord:
    operator = OperatorRecord(
        name=name,
        role="operator",
        secret_hash=f"$argon2id$v=19$m=65536,t=3,p=4$salt$hash-{name}",
        public_key=b"",
        status="active",
        created_at=NOW,
        updated_at=NOW,
        created_by="admin",
    )
    return replace(operator, **changes)  # type: ignore[arg-type]


def test_operator_round_trip_with_a_secret_or_a_key(store: Store) -> None:
    with_secret = make_operator("alice")
    with_key = make_operator(
        "bob", role="auditor", secret_hash="", public_key=bytes(range(32)), created_at=NOW + 1
    )
    with store.write() as tx:
        tx.insert_operator(with_secret)
        tx.insert_operator(with_key)
    assert store.get_operator("alice") == with_secret
    assert store.get_operator("bob") == with_key
    assert store.get_operator("carol") is None
    assert store.get_operator("ALICE") is None  # names are exact


def test_operator_name_is_taken_once(store: Store) -> None:
    with store.write() as tx:
        tx.insert_operator(make_operator("alice"))
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_operator(make_operator("alice", role="admin"))
    assert store.get_operator("alice") == make_operator("alice")
    removed = make_operator("alice", status="removed", secret_hash="", updated_at=NOW + 5)
    with store.write() as tx:
        tx.update_operator(removed)
    with pytest.raises(Conflict), store.write() as tx:  # a removed name stays taken
        tx.insert_operator(make_operator("alice"))
    assert store.get_operator("alice") == removed


def test_update_operator_replaces_and_refuses_the_unknown(store: Store) -> None:
    with store.write() as tx:
        tx.insert_operator(make_operator("alice"))
    rotated = make_operator(
        "alice", secret_hash="", public_key=b"k" * 32, role="admin", updated_at=NOW + 9
    )
    with store.write() as tx:
        tx.update_operator(rotated)
    assert store.get_operator("alice") == rotated
    with pytest.raises(NotFound), store.write() as tx:
        tx.update_operator(make_operator("nobody"))
    assert store.get_operator("nobody") is None
    with pytest.raises(RuntimeError), store.write() as tx:  # rolled back with the unit
        tx.update_operator(make_operator("alice"))
        raise RuntimeError
    assert store.get_operator("alice") == rotated


def test_list_operators_by_name_removed_ones_too(store: Store) -> None:
    assert store.list_operators() == []
    with store.write() as tx:
        for n, name in enumerate(("carol", "alice", "bob-2")):
            tx.insert_operator(make_operator(name, created_at=NOW + n))
        tx.update_operator(make_operator("carol", status="removed", secret_hash=""))
    listed = store.list_operators()
    assert [o.name for o in listed] == ["alice", "bob-2", "carol"]
    assert [o.status for o in listed] == ["active", "active", "removed"]
