"""One SQL dialect's spelling of the shared statements, scoped to one tenant."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from tasklease.core.store import AuditQuery
from tasklease.core.tenantids import DEFAULT_TENANT, check_tenant_id
from tasklease.storage._sql.listings import Listings
from tasklease.storage._sql.rows import (
    Row,
    RowConversions,
    attestor_from_row,
    attestor_params,
    audit_rows,
    binding_from_row,
    budget_from_row,
    dump_details,
    grant_type_from_row,
    grant_type_params,
    load_details,
    published_bundle_from_row,
    reference_from_row,
    revocation_from_row,
    session_from_row,
    tenant_from_row,
    tenant_params,
)
from tasklease.storage._sql.schema import Migration, migrations

__all__ = [
    "DEFAULT_TENANT",
    "GENESIS_HASH",
    "SELECT_REVOCATION",
    "Dialect",
    "Row",
    "attestor_from_row",
    "attestor_params",
    "audit_rows",
    "binding_from_row",
    "budget_from_row",
    "check_tenant_id",
    "dump_details",
    "grant_type_from_row",
    "grant_type_params",
    "load_details",
    "published_bundle_from_row",
    "reference_from_row",
    "revocation_from_row",
    "session_from_row",
    "tenant_from_row",
    "tenant_params",
]

GENESIS_HASH = "0" * 64


# -- columns and statements --------------------------------------------------------------
# Each list is in its record's field order: the mappers in ``rows`` unpack rows in that order.

_APP = (
    "app_id, name, client_id, secret_hash, scopes, token_ttl, status, created_at,"
    " updated_at, created_by, public_key, authorization_details, credential_changed_at"
)
_LAUNCH = (
    "token_hash, agent_name, allowed_scope, max_ttl, single_use, created_at, expires_at,"
    " created_by, app_id, consumed_at, audience, principal, max_uses, uses, allow_resume,"
    " authorization_details, agent_key"
)
_AGENT = (
    "agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered_at,"
    " status, cnf, audience, token_ttl, allow_resume, authorization_details, attest,"
    " ceiling, lineage"
)
_OPERATOR = "name, role, secret_hash, public_key, status, created_at, updated_at, created_by"
_SESSION = "agent_id, principal, heartbeat_required, last_heartbeat, resumes, state, expires_at"
_BINDING = "agent_id, endpoint, issued_at, signature, expires_at"
_REFERENCE = "token_hash, kind, claims, jti, expires_at"
_TENANT = "name, trust_domain, status, created_at, created_by, removed_at"
# A parameter named in a statement built with names (``:f``), for one given by position.
_NAMED = re.compile(r":([a-z])\b")
_FEDERATION = (
    "trust_domain, bundle_endpoint_url, ca_pem, max_bundle_age, scope_map, scope_ceiling,"
    " max_ttl, bundle, fetched_at, last_error, created_at, created_by, checked_at,"
    " revocation_feed, feed_credentials_file"
)
_PUBLISHED = "sequence, kids, bundle, updated_at"
_ATTESTOR = "name, type, settings, policy, app_id, created_at, created_by"
_GRANT_TYPE = "name, json_schema, narrowing, description, created_at, created_by"
_BUDGET = "budget_key, parent_key, max_calls, calls, expires_at"
_AUDIT_CHAIN = (
    "seq, timestamp, event_type, agent_id, task_id, orch_id, detail, resource, outcome,"
    " deleg_depth, deleg_chain_hash, request_id, prev_hash, hash"
)
# Lineage and the hash format (migration 0012); the tenant comes before them in AuditEvent.
_AUDIT_LINEAGE = "app_id, principal_ref, chain_root, version"
_AUDIT = f"{_AUDIT_CHAIN}, tenant_id, {_AUDIT_LINEAGE}"
# As stored: ts (the timestamp in Unix seconds, for range filters) follows the timestamp;
# the tenant is named by insert().
_AUDIT_STORED = _AUDIT_CHAIN.replace("timestamp,", "timestamp, ts,", 1) + f", {_AUDIT_LINEAGE}"

SELECT_REVOCATION = "SELECT seq, level, target, revoked_at, expires_at FROM revocations"
# Built from the constant column lists above only, here and below.
_SELECT_APP = f"SELECT {_APP} FROM apps"
_SELECT_LAUNCH = f"SELECT {_LAUNCH} FROM launch_tokens"
_SELECT_AGENT = f"SELECT {_AGENT} FROM agents"
_SELECT_OPERATOR = f"SELECT {_OPERATOR} FROM operators"
_SELECT_SESSION = f"SELECT {_SESSION} FROM agent_sessions"
_SELECT_BINDING = f"SELECT {_BINDING} FROM discovery_bindings"
_SELECT_REFERENCE = f"SELECT {_REFERENCE} FROM reference_tokens"
_SELECT_AUDIT = f"SELECT {_AUDIT} FROM audit_events"

# What prune() empties of rows with expires_at <= now. Audit events are never pruned.
_EXPIRING = (
    "revocations",
    "used_nonces",
    "used_dpop_proofs",
    "launch_tokens",
    "reference_tokens",
    "agent_sessions",
    "discovery_bindings",
    "leases",
    "attestation_evidence",
    "call_budgets",
    "offline_reports",
)


class Dialect(RowConversions):
    """One dialect's spelling of the shared statements for one tenant, and row conversions.

    The statements are written below with ``?`` placeholders and turned into
    ``placeholder`` once. ``is_set`` tests a boolean column (``{}`` is the column):
    spelled as the dialect's partial indexes spell it, which the planners match by its
    text. ``contains`` tests whether a text column (``{}``) holds a parameter's text exactly,
    case and ``_`` and ``%`` included (``LIKE`` would take them as patterns, and SQLite's
    ignores case). ``lineage_ids`` is a table ``j`` of the ids (``j.value``) a lineage
    column (``{}``) lists. ``for_update`` ends a read inside a write transaction that
    locks the row it reads. ``load_scopes`` and ``dump_scopes`` convert a scope list column.

    Every statement reads and writes the rows of one tenant only (``tenant``): each
    carries ``tenant_id = '<tenant>'`` as a literal, so a tenant's statements are fixed
    texts that the drivers prepare once, and no call site can forget the tenant. The id
    is checked against a strict pattern first (lowercase letters, digits, ``-``), so no
    other value can reach the SQL text. :meth:`for_tenant` makes the same dialect for
    another tenant.
    """

    def __init__(
        self,
        *,
        name: str,
        folder: str,
        placeholder: str,
        is_set: str,
        for_update: str,
        contains: str,
        lineage_ids: str,
        load_scopes: Callable[[Any], tuple[str, ...]],
        dump_scopes: Callable[[Sequence[str]], object],
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.name = name
        self.folder = folder
        self.tenant = check_tenant_id(tenant)
        self._fragments = (placeholder, is_set, for_update, contains, lineage_ids)
        self._load_scopes = load_scopes
        self._dump_scopes = dump_scopes
        self._tenants: dict[str, Dialect] = {tenant: self}

        # Every statement is built from constant text, the constructor's fragments, which
        # the store modules pass as literals, and the checked tenant id.
        def q(sql: str) -> str:
            if placeholder == "?":
                return sql
            # A literal % would need doubling for a %s driver; the statements have none.
            if "%" in sql:
                raise ValueError(f"statement holds a literal %: {sql!r}")
            return sql.replace("?", placeholder)

        t = f"tenant_id = '{self.tenant}'"

        def insert(table: str, columns: str) -> str:
            values = ", ".join("?" for _ in columns.split(","))
            return f"INSERT INTO {table} (tenant_id, {columns}) VALUES ('{self.tenant}', {values})"

        def upsert(table: str, columns: str) -> str:
            """An upsert by the first column (the key within the tenant) that replaces every
            other one."""
            key, *rest = (column.strip() for column in columns.split(","))
            updates = ", ".join(f"{column} = excluded.{column}" for column in rest)
            return (
                f"{insert(table, columns)} ON CONFLICT (tenant_id, {key}) DO UPDATE SET {updates}"
            )

        # reads
        self.get_app = q(f"{_SELECT_APP} WHERE {t} AND app_id = ?")
        self.get_app_by_client_id = q(f"{_SELECT_APP} WHERE {t} AND client_id = ?")
        self.list_apps = f"{_SELECT_APP} WHERE {t} ORDER BY created_at DESC, app_id DESC"
        self.get_launch_token = q(f"{_SELECT_LAUNCH} WHERE {t} AND token_hash = ?")
        self.get_agent = q(f"{_SELECT_AGENT} WHERE {t} AND agent_id = ?")
        # the operators' listings (core.inventory)
        self.listings = Listings(
            self.tenant,
            q,
            agent=_AGENT,
            session=_SESSION,
            launch=_LAUNCH,
            audit=_SELECT_AUDIT,
            contains=contains,
            session_from_row=session_from_row,
            revocation_from_row=revocation_from_row,
        )
        self.get_operator = q(f"{_SELECT_OPERATOR} WHERE {t} AND name = ?")
        self.list_operators = f"{_SELECT_OPERATOR} WHERE {t} ORDER BY name"
        self.load_revocations = q(f"{SELECT_REVOCATION} WHERE {t} AND expires_at > ? ORDER BY seq")
        self.revocations_since = q(f"{SELECT_REVOCATION} WHERE {t} AND seq > ? ORDER BY seq")
        self.revocation_high_water = q(f"SELECT seq FROM revocation_seqs WHERE {t}")
        self.find_revocation = q(f"{SELECT_REVOCATION} WHERE {t} AND level = ? AND target = ?")
        # PostgreSQL's (SQLite reads one key at a time with find_revocation).
        self.find_revocations = (
            f"{SELECT_REVOCATION} WHERE {t} AND (level, target) IN"
            f" (SELECT * FROM unnest({placeholder}::text[], {placeholder}::text[]))"
            " ORDER BY seq"
        )
        self.get_session = q(f"{_SELECT_SESSION} WHERE {t} AND agent_id = ?")
        self.silent_agents = q(
            f"{_SELECT_SESSION} WHERE {t} AND {is_set.format('heartbeat_required')}"
            " AND state = 'active' AND last_heartbeat < ? ORDER BY last_heartbeat, agent_id"
            " LIMIT ?"
        )
        self.get_binding = q(f"{_SELECT_BINDING} WHERE {t} AND agent_id = ?")
        self.get_reference = q(f"{_SELECT_REFERENCE} WHERE {t} AND token_hash = ?")
        self.audit_after = q(f"{_SELECT_AUDIT} WHERE {t} AND seq > ? ORDER BY seq LIMIT ?")
        # The same, each event followed by its ts (what verification compares).
        self.audit_after_ts = q(
            f"SELECT {_AUDIT}, ts FROM audit_events WHERE {t} AND seq > ? ORDER BY seq LIMIT ?"
        )
        self.audit_head = f"SELECT seq, hash FROM audit_events WHERE {t} ORDER BY seq DESC LIMIT 1"
        self._audit_where = f" WHERE {t}"
        # The agent and task lookups live behind the log (migration 0018): in their tables
        # up to audit_indexed.seq, in the log's last few thousand events after it. The
        # event's own column is compared too, so an entry left by a log cut back by hand
        # can never bring in another event.
        indexed = f"COALESCE((SELECT seq FROM audit_indexed WHERE {t}), 0)"

        def behind(column: str, table: str) -> str:
            return (
                f"{column} = ? AND seq IN (SELECT seq FROM {table} WHERE {t} AND {column} = ?"
                f" UNION ALL SELECT seq FROM audit_events WHERE {t} AND seq > {indexed}"
                f" AND {column} = ?)"
            )

        self._audit_filters = tuple(
            q(clause)
            for clause in (
                behind("agent_id", "audit_agent_seqs"),
                behind("task_id", "audit_task_seqs"),
                "event_type = ?",
                "outcome = ?",
                "ts >= ?",
                "ts <= ?",
                "principal_ref = ?",
            )
        )
        self._filter_arity = {clause: clause.count(placeholder) for clause in self._audit_filters}
        self._audit_page = q(" ORDER BY seq LIMIT ? OFFSET ?")
        # Partial indexes (migration 0017): only events whose outcome is not 'success', and
        # only events with a principal, are indexed. These constant terms, added when the
        # filter's value is one of those, let the planner use them.
        self._audit_not_success = " AND outcome <> 'success'"
        self._audit_has_principal = " AND principal_ref <> ''"
        # The first event of a time range, found in the ts index: a lower bound on seq that
        # the primary key and the (..., seq) indexes start from, where the planner would
        # otherwise read the log from its first event to reach the recent ones (+seq: from
        # the ts index, not by walking the primary key). NULL (no row) when no event is
        # that recent.
        since_seq = f" AND seq >= (SELECT MIN(+seq) FROM audit_events WHERE {t} AND ts >= ?"
        self._audit_since_seq = (q(f"{since_seq})"), q(f"{since_seq} AND ts <= ?)"))
        # A tenant's chain numbers its events 1..n without gaps: n is the unfiltered count.
        self._audit_length = f"SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE {t}"
        # The Merkle tree over the chain (core.audittree) and its checkpoints (0012).
        self.audit_hashes = q(
            f"SELECT hash FROM audit_events WHERE {t} AND seq > ? ORDER BY seq LIMIT ?"
        )
        self.audit_tree = f"SELECT size, root, edge FROM audit_tree WHERE {t}"
        self.put_audit_tree = q(
            f"{insert('audit_tree', 'size, root, edge')} ON CONFLICT (tenant_id) DO UPDATE SET"
            " size = excluded.size, root = excluded.root, edge = excluded.edge"
        )
        self.insert_tile = q(
            f"{insert('audit_tiles', 'level, idx, hashes')} ON CONFLICT DO NOTHING"
        )
        # SQLite's || makes text of two blobs (byte for byte), which the CAST turns back.
        blob = "BLOB" if placeholder == "?" else "bytea"
        self.extend_tile = q(
            f"UPDATE audit_tiles SET hashes = CAST(hashes || ? AS {blob})"
            f" WHERE {t} AND level = ? AND idx = ? AND length(hashes) = ?"
        )
        # One primary-key lookup per tile (a row-value IN list is a scan of the tenant's
        # tiles on SQLite), joined into one statement.
        self._tile_select = q(f"SELECT level, idx, hashes FROM audit_tiles WHERE {t}") + (
            f" AND level = {placeholder} AND idx = {placeholder}"
        )
        # Filling the lookups behind the log (SQLWriteTx._index_audit).
        self.audit_indexed = f"SELECT seq FROM audit_indexed WHERE {t}"
        self.put_audit_indexed = q(
            f"{insert('audit_indexed', 'seq')} ON CONFLICT (tenant_id) DO UPDATE"
            " SET seq = excluded.seq"
        )
        self.index_audit = tuple(
            q(
                f"INSERT INTO {table} (tenant_id, {column}, seq) SELECT tenant_id, {column},"
                f" seq FROM audit_events WHERE {t} AND seq > ? ORDER BY {column}, seq"
                " ON CONFLICT DO NOTHING"
            )
            for table, column in (("audit_agent_seqs", "agent_id"), ("audit_task_seqs", "task_id"))
        )
        # Reading them back, for `tasklease audit verify` (keyset pages in key order).
        self.audit_lookup_pages = tuple(
            (
                kind,
                q(
                    f"SELECT {column}, seq FROM {table} WHERE {t} AND ({column}, seq) > (?, ?)"
                    f" AND seq <= ? ORDER BY {column}, seq LIMIT ?"
                ),
            )
            for kind, table, column in (
                ("agent", "audit_agent_seqs", "agent_id"),
                ("task", "audit_task_seqs", "task_id"),
            )
        )
        self.unindex_audit = tuple(
            q(f"DELETE FROM {table} WHERE {t} AND seq > ?")
            for table in ("audit_agent_seqs", "audit_task_seqs")
        )
        self.get_checkpoint = q(
            f"SELECT kind, size, note, created_at FROM audit_checkpoints WHERE {t} AND kind = ?"
        )
        self.put_checkpoint = q(
            f"{insert('audit_checkpoints', 'kind, size, note, created_at')}"
            " ON CONFLICT (tenant_id, kind) DO UPDATE SET size = excluded.size,"
            " note = excluded.note, created_at = excluded.created_at"
            " WHERE audit_checkpoints.size <= excluded.size"
        )

        # writes
        self.insert_app = q(f"{insert('apps', _APP)} ON CONFLICT DO NOTHING")
        self.app_id_taken = q(f"SELECT 1 FROM apps WHERE {t} AND app_id = ?")
        self.app_name_taken = q(f"SELECT 1 FROM apps WHERE {t} AND name = ?")
        self.lock_app = q(f"SELECT 1 FROM apps WHERE {t} AND app_id = ?{for_update}")
        self.lock_app_row = q(f"{_SELECT_APP} WHERE {t} AND app_id = ?{for_update}")
        self.other_app_named = q(f"SELECT 1 FROM apps WHERE {t} AND name = ? AND app_id <> ?")
        self.other_app_client_id = q(
            f"SELECT 1 FROM apps WHERE {t} AND client_id = ? AND app_id <> ?"
        )
        self.update_app = q(
            "UPDATE apps SET name = ?, client_id = ?, secret_hash = ?, scopes = ?,"
            " token_ttl = ?, status = ?, created_at = ?, updated_at = ?, created_by = ?,"
            " public_key = ?, authorization_details = ?, credential_changed_at = ?"
            f" WHERE {t} AND app_id = ?"
        )
        self.lock_operator = q(f"{_SELECT_OPERATOR} WHERE {t} AND name = ?{for_update}")
        self.insert_operator = q(f"{insert('operators', _OPERATOR)} ON CONFLICT DO NOTHING")
        self.update_operator = q(
            "UPDATE operators SET role = ?, secret_hash = ?, public_key = ?, status = ?,"
            f" created_at = ?, updated_at = ?, created_by = ? WHERE {t} AND name = ?"
        )
        self.insert_launch_token = q(f"{insert('launch_tokens', _LAUNCH)} ON CONFLICT DO NOTHING")
        # One use taken, and the time of the last one recorded, in one conditional UPDATE.
        # Not for a token whose creator was ended at or after it was made (an entry of
        # level agent on its creator): read in the same statement, so it costs no round
        # trip (WriteTx.consume_launch_token).
        self.consume_launch_token = q(
            "UPDATE launch_tokens SET uses = uses + 1,"
            " consumed_at = CASE WHEN uses + 1 >= max_uses THEN ? ELSE consumed_at END"
            f" WHERE {t} AND token_hash = ? AND uses < max_uses AND expires_at > ?"
            " AND NOT EXISTS (SELECT 1 FROM revocations r"
            " WHERE r.tenant_id = launch_tokens.tenant_id AND r.level = 'agent'"
            " AND r.target = launch_tokens.created_by"
            " AND r.revoked_at >= launch_tokens.created_at)"
        )
        self.consume_nonce = q(
            f"{insert('used_nonces', 'nonce_hash, expires_at')}"
            " ON CONFLICT (tenant_id, nonce_hash) DO NOTHING"
        )
        # The DPoP replay cache (migration 0011).
        self.consume_dpop_proof = q(
            f"{insert('used_dpop_proofs', 'proof_hash, expires_at')}"
            " ON CONFLICT (tenant_id, proof_hash) DO NOTHING"
        )
        self.insert_agent = q(f"{insert('agents', _AGENT)} ON CONFLICT DO NOTHING")
        self.set_agent_status = q(f"UPDATE agents SET status = ? WHERE {t} AND agent_id = ?")
        self.lock_session = q(f"{_SELECT_SESSION} WHERE {t} AND agent_id = ?{for_update}")
        self.put_session = q(upsert("agent_sessions", _SESSION))
        self.raise_resumes = q(
            f"UPDATE agent_sessions SET resumes = ? WHERE {t} AND agent_id = ? AND resumes < ?"
            " AND state = 'active'"
        )
        self.has_session = q(f"SELECT 1 FROM agent_sessions WHERE {t} AND agent_id = ?")
        self.acquire_lease = q(
            f"{insert('leases', 'name, holder, expires_at')}"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at"
            " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?"
        )
        self.release_lease = q(f"DELETE FROM leases WHERE {t} AND name = ? AND holder = ?")
        # Only a newer statement replaces the bound one (``WriteTx.put_discovery_binding``).
        self.put_binding = q(
            upsert("discovery_bindings", _BINDING)
            + " WHERE discovery_bindings.issued_at < excluded.issued_at"
        )
        # federation (core.federation, core.trustbundle)
        select_federation = f"SELECT {_FEDERATION} FROM federations WHERE {t}"
        self.get_federation = q(f"{select_federation} AND trust_domain = ?")
        self.lock_federation = q(f"{select_federation} AND trust_domain = ?{for_update}")
        self.list_federations = f"{select_federation} ORDER BY trust_domain"
        self.put_federation = q(upsert("federations", _FEDERATION))
        self.delete_federation = q(f"DELETE FROM federations WHERE {t} AND trust_domain = ?")
        # When each domain's revocation feed was last heard current (core.peerfeed): only
        # ever moved forward, whichever process writes.
        self.feed_heard = q(f"SELECT heard_at FROM federation_feeds WHERE {t} AND trust_domain = ?")
        self.put_feed_heard = q(
            f"{insert('federation_feeds', 'trust_domain, heard_at')}"
            " ON CONFLICT (tenant_id, trust_domain) DO UPDATE SET heard_at = excluded.heard_at"
            " WHERE federation_feeds.heard_at < excluded.heard_at"
        )
        # The signing keys retired (core.signing), read by every process at each refresh.
        self.retired_keys = f"SELECT kid FROM retired_signing_keys WHERE {t}"
        self.put_retired_key = q(
            f"{insert('retired_signing_keys', 'kid, retired_at')}"
            " ON CONFLICT (tenant_id, kid) DO NOTHING"
        )
        select_published = f"SELECT {_PUBLISHED} FROM published_bundles WHERE {t}"
        self.get_published_bundle = select_published
        self.lock_published_bundle = f"{select_published}{for_update}"
        self.put_published_bundle = q(
            f"{insert('published_bundles', _PUBLISHED)} ON CONFLICT (tenant_id) DO UPDATE SET"
            " sequence = excluded.sequence, kids = excluded.kids, bundle = excluded.bundle,"
            " updated_at = excluded.updated_at"
        )
        self.insert_reference = q(
            f"{insert('reference_tokens', _REFERENCE)} ON CONFLICT DO NOTHING"
        )
        # attestation (core.attestation; migration 0013): attestors, used evidence
        select_attestor = f"SELECT {_ATTESTOR} FROM attestors WHERE {t}"
        self.get_attestor = q(f"{select_attestor} AND name = ?")
        self.list_attestors = f"{select_attestor} ORDER BY name"
        self.put_attestor = q(upsert("attestors", _ATTESTOR))
        self.delete_attestor = q(f"DELETE FROM attestors WHERE {t} AND name = ?")
        self.consume_evidence = q(
            f"{insert('attestation_evidence', 'evidence_key, expires_at')}"
            " ON CONFLICT (tenant_id, evidence_key) DO NOTHING"
        )
        # Offline derivations and uses already audited (migration 0016).
        self.consume_offline_report = q(
            f"{insert('offline_reports', 'report_key, expires_at')}"
            " ON CONFLICT (tenant_id, report_key) DO NOTHING"
        )
        # structured grants (core.granttypes, core.calls; migration 0015)
        select_grant_type = f"SELECT {_GRANT_TYPE} FROM grant_types WHERE {t}"
        self.get_grant_type = q(f"{select_grant_type} AND name = ?")
        self.list_grant_types = f"{select_grant_type} ORDER BY name"
        self.insert_grant_type = q(f"{insert('grant_types', _GRANT_TYPE)} ON CONFLICT DO NOTHING")
        self.delete_grant_type = q(f"DELETE FROM grant_types WHERE {t} AND name = ?")
        self.put_call_budget = q(f"{insert('call_budgets', _BUDGET)} ON CONFLICT DO NOTHING")
        self.lock_call_budget = q(
            f"SELECT {_BUDGET} FROM call_budgets WHERE {t} AND budget_key = ?{for_update}"
        )
        self.count_call = q(
            "UPDATE call_budgets SET calls = calls + 1"
            f" WHERE {t} AND budget_key = ? AND calls < max_calls"
        )
        self.insert_audit = q(insert("audit_events", _AUDIT_STORED))
        # revocations (the dialects' own upserts use these pieces)
        self.lock_revocation = q(
            f"SELECT seq, revoked_at, expires_at FROM revocations WHERE {t}"
            " AND level = ? AND target = ?"
        )
        # Each tenant numbers its own revocations (migration 0020): an entry takes the
        # number after the tenant's last, which its insert's trigger makes the last.
        # Under the write lock, so seqs commit in order. (SQLite's: PostgreSQL has its
        # own upsert, in _pg_tx.)
        next_seq = f"(SELECT COALESCE(MAX(seq), 0) + 1 FROM revocation_seqs WHERE {t})"
        self.insert_revocation = q(
            "INSERT INTO revocations (tenant_id, seq, level, target, revoked_at, expires_at)"
            f" VALUES ('{self.tenant}', {next_seq}, ?, ?, ?, ?)"
        )
        self.insert_new_revocation = (
            f"{self.insert_revocation} ON CONFLICT (tenant_id, level, target) DO NOTHING"
        )
        self.delete_revocation = q(f"DELETE FROM revocations WHERE {t} AND seq = ?")
        # the tenant registry: one table for the whole database, not per tenant
        self.get_tenant = q(f"SELECT {_TENANT} FROM tenants WHERE name = ?")
        self.list_tenants = f"SELECT {_TENANT} FROM tenants ORDER BY name"
        self.insert_tenant = q(
            f"INSERT INTO tenants ({_TENANT}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        self.tenant_name_taken = q("SELECT 1 FROM tenants WHERE name = ?")
        # The agents whose registration is live, in every tenant not removed (the whole
        # deployment: tasklease_active_agents; Store.live_agents says what is counted), as
        # one statement that reads indexes, not every live agent's rows: those registered
        # within renewal_ceiling, active and within their ceiling (counted from the index
        # agents_live alone), less those of them something ends, found from the few rows
        # that end them: a session not active, an app not active, a task-level entry in
        # force on their task made since they registered, a chain-level one on their app
        # or on an id their lineage lists. An agent ended twice is taken off once (UNION).
        # Parameters, by name: f, the earliest registered_at within the ceiling; n, now.
        live = (
            "a.registered_at >= :f AND a.status = 'active' AND (a.ceiling = 0 OR a.ceiling > :n)"
            # the tenants read once, not once an agent; `|| ''` keeps the planner on the
            # registration time's index (an index by tenant reads every agent's row)
            f" AND a.tenant_id || '' IN (SELECT '{DEFAULT_TENANT}' UNION"
            " SELECT n.name FROM tenants n WHERE n.status = 'active')"
        )
        # Each set below is read from the rows that end agents (CROSS JOIN: SQLite keeps
        # them outermost), each agent they name found by an index.
        in_force = "r.tenant_id = a.tenant_id AND r.expires_at > :n AND a.registered_at >= :f"
        ended = (
            "SELECT s.tenant_id, s.agent_id FROM agent_sessions s WHERE s.state <> 'active'"
            " UNION SELECT a.tenant_id, a.agent_id FROM apps p CROSS JOIN agents a"
            " WHERE a.tenant_id = p.tenant_id AND a.app_id = p.app_id AND a.registered_at >= :f"
            " AND p.status <> 'active'"
            # a task entry matches a registration made at or before its second (floor)
            " UNION SELECT a.tenant_id, a.agent_id FROM revocations r CROSS JOIN agents a"
            f" WHERE {in_force} AND a.task_id = r.target"
            " AND r.level = 'task' AND r.revoked_at + 1 > a.registered_at"
            " UNION SELECT a.tenant_id, a.agent_id FROM revocations r CROSS JOIN agents a"
            f" WHERE {in_force} AND a.app_id = substr(r.target, 5)"
            " AND r.level = 'chain' AND substr(r.target, 1, 4) = 'app:' AND a.app_id <> ''"
            # no index finds an id in a lineage: the agents within the ceiling, read once
            # for each chain-level entry in force on an id a lineage can list (an
            # attestation, a federated domain: mostly none). One on an agent's SPIFFE ID
            # (its delegations ended, the common case) names no lineage, so reads none.
            " UNION SELECT a.tenant_id, a.agent_id FROM revocations r CROSS JOIN agents a"
            f" WHERE {in_force} AND r.level = 'chain' AND substr(r.target, 1, 9) <> 'spiffe://'"
            " AND EXISTS"
            f" (SELECT 1 FROM {lineage_ids.format('a.lineage')} WHERE j.value = r.target)"
        )
        counted = (
            f"SELECT (SELECT COUNT(*) FROM agents a WHERE {live}) - (SELECT COUNT(*) FROM"
            f" ({ended}) x CROSS JOIN agents a WHERE a.tenant_id = x.tenant_id"
            f" AND a.agent_id = x.agent_id AND {live})"
        )
        # Store.live_agents passes (registered_from, now) in this order, as the names say.
        self.live_agents_order = tuple(_NAMED.findall(counted))
        self.live_agents = q(_NAMED.sub("?", counted))
        self.update_tenant = q(
            "UPDATE tenants SET trust_domain = ?, status = ?, created_at = ?, created_by = ?,"
            " removed_at = ? WHERE name = ? AND status = 'active'"
        )
        # migrations: the version a migration brought the schema to (not per tenant)
        self.record_migration = q(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"
        )
        self.prune = tuple(
            q(f"DELETE FROM {table} WHERE {t} AND expires_at <= ?") for table in _EXPIRING
        )
        # One row (id 1) for the whole database: the greatest safe horizon any process
        # recorded (core.horizon). Time is not per tenant.
        # One row (id 1) for the whole database too: the built-in admin's credential as
        # the broker last started with it (core.adminsecret). The admin is not per tenant.
        self.admin_credential = "SELECT secret_hash FROM admin_credential WHERE id = 1"
        self.lock_admin_credential = f"{self.admin_credential}{for_update}"
        self.put_admin_credential = q(
            "INSERT INTO admin_credential (id, secret_hash, changed_at) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET secret_hash = excluded.secret_hash,"
            " changed_at = excluded.changed_at"
        )
        self.safe_horizon = "SELECT horizon FROM safe_horizon WHERE id = 1"
        self.raise_safe_horizon = q(
            "INSERT INTO safe_horizon (id, horizon) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET horizon = excluded.horizon"
            " WHERE safe_horizon.horizon < excluded.horizon"
        )

    def for_tenant(self, tenant: str) -> Dialect:
        """This dialect for ``tenant`` (made once per tenant and kept).

        Raise ``ValueError`` if ``tenant`` is not a valid tenant id.
        """
        found = self._tenants.get(tenant)
        if found is None:
            placeholder, is_set, for_update, contains, lineage_ids = self._fragments
            found = Dialect(
                name=self.name,
                folder=self.folder,
                placeholder=placeholder,
                is_set=is_set,
                for_update=for_update,
                contains=contains,
                lineage_ids=lineage_ids,
                load_scopes=self._load_scopes,
                dump_scopes=self._dump_scopes,
                tenant=tenant,
            )
            found._tenants = self._tenants
            self._tenants[tenant] = found
        return found

    def migrations(self) -> tuple[Migration, ...]:
        """The numbered SQL files in ``storage/migrations/<folder>``, in order.

        Raise ``SchemaError`` if they are not numbered 0001, 0002, ... without gaps.
        """
        return migrations(self.folder, self.name)

    def audit_query(self, query: AuditQuery) -> tuple[str, list[object], str, list[object]]:
        """The count statement for ``query`` with its parameters, and the page's.

        Raise ``ValueError`` for a negative limit or offset.
        """
        if query.limit < 0 or query.offset < 0:
            raise ValueError("limit and offset must not be negative")
        # The WHERE clause is assembled from constant fragments only; every value is a
        # bound parameter. Each equality filter has an index (outcome's and principal_ref's
        # are partial: see __init__), but for outcome 'success', the bulk of the log.
        success = query.outcome == "success"
        clauses: list[str] = []
        params: list[object] = []
        values = (
            query.agent_id,
            query.task_id,
            query.event_type,
            None if success else query.outcome,
            query.since,
            query.until,
            query.principal_ref,
        )
        for clause, value in zip(self._audit_filters, values, strict=True):
            if value is not None:
                clauses.append(f" AND {clause}")
                params += [value] * self._filter_arity[clause]
        if query.outcome is not None and not success:
            clauses.append(self._audit_not_success)
        if query.principal_ref:
            clauses.append(self._audit_has_principal)
        if query.since is not None:  # the range's own bounds (until: fewer rows to read)
            bounded = query.until is not None
            clauses.append(self._audit_since_seq[bounded])
            params += (query.since, query.until) if bounded else (query.since,)
        where = self._audit_where + "".join(clauses)
        count_sql = "SELECT COUNT(*) FROM audit_events" + where
        count_params = params
        if not clauses:
            count_sql, count_params = self._audit_length, []
        if success:
            # The events of the other filters less those that are not a success: both
            # counted from indexes, where counting the successes would read them all.
            others = count_sql
            unusual = "SELECT COUNT(*) FROM audit_events" + where + self._audit_not_success
            count_sql = f"SELECT ({others}) - ({unusual})"
            count_params = [*count_params, *params]
            where += f" AND {self._audit_filters[3]}"
            params = [*params, "success"]
        page_sql = _SELECT_AUDIT + where + self._audit_page
        return count_sql, count_params, page_sql, [*params, query.limit, query.offset]

    def audit_tiles(self, count: int) -> str:
        """The read of ``count`` tiles, named by ``(level, idx)`` parameter pairs."""
        return " UNION ALL ".join([self._tile_select] * count)
