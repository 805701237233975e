"""The SQL stores' row conversions: each record to its statement parameters and back."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tasklease.core.auditformat import timestamp_seconds
from tasklease.core.errors import Conflict
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
    CallBudget,
    DiscoveryBinding,
    FederationRecord,
    GrantTypeRecord,
    LaunchTokenRecord,
    OperatorRecord,
    PublishedBundle,
    ReferenceTokenRecord,
    RevocationRecord,
    TenantRecord,
)

__all__ = [
    "Row",
    "RowConversions",
    "attestor_from_row",
    "attestor_params",
    "audit_rows",
    "binding_from_row",
    "budget_from_row",
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

# A fetched row: the drivers type rows as Any; the mappers below convert each column.
Row = tuple[Any, ...]


class RowConversions:
    """The conversions of the records whose scope lists the dialect stores its own way
    (``load_scopes``/``dump_scopes``); :class:`~tasklease.storage._sql.dialect.Dialect`
    inherits them. The rows' columns are in the order of the dialect's column lists."""

    _load_scopes: Callable[[Any], tuple[str, ...]]
    _dump_scopes: Callable[[Sequence[str]], object]

    # Both drivers return text columns as str (on SQLite the tables are STRICT and the
    # columns NOT NULL), so only scope lists, numbers, booleans and blobs are converted.

    def app_from_row(self, row: Row) -> AppRecord:
        (app_id, name, client_id, secret_hash, scopes, ttl, status, created, updated, by, key,
         details, credential_changed) = row  # fmt: skip
        return AppRecord(
            app_id=app_id,
            name=name,
            client_id=client_id,
            secret_hash=secret_hash,
            scopes=self._load_scopes(scopes),
            token_ttl=int(ttl),
            status=status,
            created_at=float(created),
            updated_at=float(updated),
            created_by=by,
            public_key=key,
            authorization_details=load_details(details),
            credential_changed_at=float(credential_changed),
        )

    def app_params(self, app: AppRecord) -> tuple[object, ...]:
        return (
            app.app_id,
            app.name,
            app.client_id,
            app.secret_hash,
            self._dump_scopes(app.scopes),
            app.token_ttl,
            app.status,
            app.created_at,
            app.updated_at,
            app.created_by,
            app.public_key,
            dump_details(app.authorization_details),
            app.credential_changed_at,
        )

    def launch_token_from_row(self, row: Row) -> LaunchTokenRecord:
        (token_hash, agent_name, scope, max_ttl, single_use, created, expires, by, app_id,
         used, audience, principal, max_uses, uses, allow_resume, details,
         agent_key) = row  # fmt: skip
        return LaunchTokenRecord(
            token_hash=token_hash,
            agent_name=agent_name,
            allowed_scope=self._load_scopes(scope),
            max_ttl=int(max_ttl),
            single_use=bool(single_use),
            created_at=float(created),
            expires_at=float(expires),
            created_by=by,
            app_id=app_id,
            consumed_at=None if used is None else float(used),
            audience=self._load_scopes(audience),
            principal=principal,
            max_uses=int(max_uses),
            uses=int(uses),
            allow_resume=bool(allow_resume),
            authorization_details=load_details(details),
            agent_key=agent_key,
        )

    def launch_token_params(self, record: LaunchTokenRecord) -> tuple[object, ...]:
        return (
            record.token_hash,
            record.agent_name,
            self._dump_scopes(record.allowed_scope),
            record.max_ttl,
            record.single_use,
            record.created_at,
            record.expires_at,
            record.created_by,
            record.app_id,
            record.consumed_at,
            self._dump_scopes(record.audience),
            record.principal,
            record.max_uses,
            record.uses,
            record.allow_resume,
            dump_details(record.authorization_details),
            record.agent_key,
        )

    @staticmethod
    def operator_from_row(row: Row) -> OperatorRecord:
        name, role, secret_hash, public_key, status, created, updated, by = row
        return OperatorRecord(
            name=name,
            role=role,
            secret_hash=secret_hash,
            public_key=bytes(public_key),
            status=status,
            created_at=float(created),
            updated_at=float(updated),
            created_by=by,
        )

    @staticmethod
    def operator_params(operator: OperatorRecord) -> tuple[object, ...]:
        return (
            operator.name,
            operator.role,
            operator.secret_hash,
            operator.public_key,
            operator.status,
            operator.created_at,
            operator.updated_at,
            operator.created_by,
        )

    def agent_from_row(self, row: Row) -> AgentRecord:
        (agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered, status,
         cnf, audience, token_ttl, allow_resume, details, attest, ceiling,
         lineage) = row  # fmt: skip
        return AgentRecord(
            agent_id=agent_id,
            public_key=bytes(public_key),
            orch_id=orch_id,
            task_id=task_id,
            scope=self._load_scopes(scope),
            app_id=app_id,
            client_id=client_id,
            registered_at=float(registered),
            status=status,
            cnf=cnf,
            audience=self._load_scopes(audience),
            token_ttl=int(token_ttl),
            allow_resume=bool(allow_resume),
            authorization_details=load_details(details),
            attest=attest,
            ceiling=int(ceiling),
            lineage=self._load_scopes(lineage),
        )

    def agent_params(self, agent: AgentRecord) -> tuple[object, ...]:
        return (
            agent.agent_id,
            agent.public_key,
            agent.orch_id,
            agent.task_id,
            self._dump_scopes(agent.scope),
            agent.app_id,
            agent.client_id,
            agent.registered_at,
            agent.status,
            agent.cnf,
            self._dump_scopes(agent.audience),
            agent.token_ttl,
            agent.allow_resume,
            dump_details(agent.authorization_details),
            agent.attest,
            agent.ceiling,
            self._dump_scopes(agent.lineage),
        )

    def federation_from_row(self, row: Row) -> FederationRecord:
        (trust_domain, url, ca_pem, max_bundle_age, scope_map, ceiling, max_ttl, bundle,
         fetched_at, last_error, created, by, checked_at, feed, feed_credentials) = row  # fmt: skip
        return FederationRecord(
            trust_domain=trust_domain,
            bundle_endpoint_url=url,
            ca_pem=ca_pem,
            max_bundle_age=int(max_bundle_age),
            scope_map=tuple((str(f), str(local)) for f, local in json.loads(scope_map)),
            scope_ceiling=self._load_scopes(ceiling),
            max_ttl=int(max_ttl),
            bundle=bundle,
            fetched_at=None if fetched_at is None else float(fetched_at),
            last_error=last_error,
            created_at=float(created),
            created_by=by,
            checked_at=None if checked_at is None else float(checked_at),
            revocation_feed=feed,
            feed_credentials_file=feed_credentials,
        )

    def federation_params(self, record: FederationRecord) -> tuple[object, ...]:
        return (
            record.trust_domain,
            record.bundle_endpoint_url,
            record.ca_pem,
            record.max_bundle_age,
            json.dumps([list(pair) for pair in record.scope_map], separators=(",", ":")),
            self._dump_scopes(record.scope_ceiling),
            record.max_ttl,
            record.bundle,
            record.fetched_at,
            record.last_error,
            record.created_at,
            record.created_by,
            record.checked_at,
            record.revocation_feed,
            record.feed_credentials_file,
        )


def attestor_from_row(row: Row) -> AttestorRecord:
    name, kind, settings, policy, app_id, created_at, created_by = row
    return AttestorRecord(
        name=name,
        type=kind,
        settings=settings,
        policy=policy,
        app_id=app_id,
        created_at=float(created_at),
        created_by=created_by,
    )


def attestor_params(record: AttestorRecord) -> tuple[object, ...]:
    return (
        record.name,
        record.type,
        record.settings,
        record.policy,
        record.app_id,
        record.created_at,
        record.created_by,
    )


def load_details(text: str) -> tuple[dict[str, Any], ...]:
    """A stored ``authorization_details`` column ("" for none), checked when written."""
    return tuple(json.loads(text)) if text else ()


def dump_details(details: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(details), separators=(",", ":"), ensure_ascii=False) if details else ""


def grant_type_from_row(row: Row) -> GrantTypeRecord:
    name, schema, narrowing, description, created_at, created_by = row
    return GrantTypeRecord(
        name=name,
        schema=schema,
        narrowing=narrowing,
        description=description,
        created_at=float(created_at),
        created_by=created_by,
    )


def grant_type_params(record: GrantTypeRecord) -> tuple[object, ...]:
    return (
        record.name,
        record.schema,
        record.narrowing,
        record.description,
        record.created_at,
        record.created_by,
    )


def budget_from_row(row: Row) -> CallBudget:
    key, parent, max_calls, calls, expires_at = row
    return CallBudget(
        key=key,
        parent=parent,
        max_calls=int(max_calls),
        calls=int(calls),
        expires_at=float(expires_at),
    )


def published_bundle_from_row(row: Row) -> PublishedBundle:
    sequence, kids, bundle, updated_at = row
    return PublishedBundle(
        sequence=int(sequence), kids=kids, bundle=bundle, updated_at=float(updated_at)
    )


def session_from_row(row: Row) -> AgentSession:
    agent_id, principal, required, last_heartbeat, resumes, state, expires_at = row
    return AgentSession(
        agent_id=agent_id,
        principal=principal,
        heartbeat_required=bool(required),
        last_heartbeat=float(last_heartbeat),
        resumes=int(resumes),
        state=state,
        expires_at=float(expires_at),
    )


def binding_from_row(row: Row) -> DiscoveryBinding:
    agent_id, endpoint, issued_at, signature, expires_at = row
    return DiscoveryBinding(
        agent_id=agent_id,
        endpoint=endpoint,
        issued_at=int(issued_at),
        signature=bytes(signature),
        expires_at=float(expires_at),
    )


def reference_from_row(row: Row) -> ReferenceTokenRecord:
    token_hash, kind, claims, jti, expires_at = row
    return ReferenceTokenRecord(
        token_hash=token_hash, kind=kind, claims=claims, jti=jti, expires_at=float(expires_at)
    )


def tenant_from_row(row: Row) -> TenantRecord:
    name, trust_domain, status, created_at, created_by, removed_at = row
    return TenantRecord(
        name=name,
        trust_domain=trust_domain,
        status=status,
        created_at=float(created_at),
        created_by=created_by,
        removed_at=None if removed_at is None else float(removed_at),
    )


def tenant_params(tenant: TenantRecord) -> tuple[object, ...]:
    return (
        tenant.name,
        tenant.trust_domain,
        tenant.status,
        tenant.created_at,
        tenant.created_by,
        tenant.removed_at,
    )


def revocation_from_row(row: Row) -> RevocationRecord:
    seq, level, target, revoked_at, expires_at = row
    return RevocationRecord(
        level=level,
        target=target,
        revoked_at=int(revoked_at),
        expires_at=float(expires_at),
        seq=int(seq),
    )


def audit_rows(events: Sequence[AuditEvent], head_seq: int) -> list[tuple[object, ...]]:
    """The parameters of :attr:`Dialect.insert_audit` for each event.

    Raise ``Conflict`` unless every ``seq`` is greater than the one before it, starting
    from ``head_seq``.
    """
    rows: list[tuple[object, ...]] = []
    stamp: str | None = None  # events of one unit share a timestamp: parse it once
    seconds = 0.0
    for e in events:
        if e.seq <= head_seq:
            raise Conflict(f"audit seq {e.seq} is not after the head ({head_seq})")
        head_seq = e.seq
        if e.timestamp != stamp:
            stamp, seconds = e.timestamp, timestamp_seconds(e.timestamp)
        rows.append(
            (
                e.seq,
                e.timestamp,
                seconds,
                e.event_type,
                e.agent_id,
                e.task_id,
                e.orch_id,
                e.detail,
                e.resource,
                e.outcome,
                e.deleg_depth,
                e.deleg_chain_hash,
                e.request_id,
                e.prev_hash,
                e.hash,
                e.app_id,
                e.principal_ref,
                e.chain_root,
                e.version,
            )
        )
    return rows
