"""Operators on the wire: sign-in (the admin secret or a named operator's credential),
operator identities and roles, revocation, the audit log and key rotation."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, UnsetType

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.records import MAX_TARGET, OperatorRecord
from tasklease.core.records import AuditEvent as AuditRecord
from tasklease.core.tokens import OPERATORS_SCOPE, ROLE_SCOPES, ROLES
from tasklease.http.wire._base import (
    PUBLIC,
    AccessToken,
    ExpiresIn,
    Failure,
    Operation,
    Param,
    Request,
    Response,
    Timestamp,
    TokenType,
    admin,
    constant,
    doc,
    required,
)

__all__ = [
    "OPERATIONS",
    "TAGS",
    "AdminAuthRequest",
    "AdminAuthResponse",
    "AuditEvent",
    "AuditEventPage",
    "KeyRetirementResponse",
    "KeyRotationResponse",
    "Operator",
    "OperatorAuthRequest",
    "OperatorAuthResponse",
    "OperatorCreateRequest",
    "OperatorList",
    "OperatorRotateRequest",
    "OperatorWithSecret",
    "RemovedOperator",
    "RevokeRequest",
    "RevokeResponse",
    "audit_event",
    "operator_view",
    "operator_with_secret",
    "removed_operator",
]

TAGS = {
    "operators": "Operators: sign-in, identities and roles, revocation, the audit log and "
    "signing keys.",
}

_Text = str | None
_LEVELS = ["token", "agent", "task", "chain"]
_ROLES = list(ROLES)
_PUBLIC_KEY = (
    "Standard base64 (with padding) of a raw 32-byte Ed25519 public key: the operator "
    "signs in with this key"
)


# --- requests ------------------------------------------------------------------------------


class RevokeRequest(Request):
    level: Annotated[_Text, required("One of `token`, `agent`, `task`, `chain`.")] = None
    target: Annotated[
        _Text,
        required("What to revoke: a `jti`, an agent SPIFFE ID, a `task_id` or a chain root agent."),
    ] = None


class AdminAuthRequest(Request):
    secret: Annotated[_Text, required("The admin secret.")] = None
    client_id: Annotated[_Text, doc("Refused: the AgentWrit v1 form. Send `secret` only.")] = None
    client_secret: Annotated[_Text, doc("Refused: the AgentWrit v1 form. Send `secret` only.")] = (
        None
    )


class OperatorAuthRequest(Request):
    name: Annotated[_Text, required("The operator's name.")] = None
    secret: Annotated[_Text, doc("The operator's secret (an operator with a secret).")] = None
    nonce: Annotated[
        _Text, doc("A nonce from `GET /v1/challenge`, as received (an operator with a key).")
    ] = None
    signature: Annotated[
        _Text,
        doc(
            "Standard base64 Ed25519 signature by the operator's key of `\"tasklease-operator-"
            'v1\\n" || JSON [name, nonce]` (compact JSON, UTF-8; an operator with a key).'
        ),
    ] = None


class OperatorCreateRequest(Request):
    name: Annotated[
        _Text,
        required(
            "1-64 lowercase letters, digits and hyphens, starting with a letter and not "
            "ending with a hyphen. A name is never given to another operator, even after "
            "removal."
        ),
    ] = None
    role: Annotated[_Text, required("`admin`, `operator` or `auditor`.")] = None
    public_key: Annotated[_Text, doc(f"{_PUBLIC_KEY}. Absent: a secret is generated.")] = None


class OperatorRotateRequest(Request):
    public_key: Annotated[
        _Text, doc(f"{_PUBLIC_KEY} from now on. Absent (`{{}}`): a new secret is generated.")
    ] = None


# --- responses -----------------------------------------------------------------------------


class RevokeResponse(Response):
    revoked: Annotated[bool, constant(True)]
    level: Annotated[str, doc("The revocation level.", enum=_LEVELS)]
    target: Annotated[str, doc("What was revoked.")]
    count: Annotated[int, doc("Revocation entries written.")]


class AuditEvent(Response):
    id: Annotated[str, doc("`evt-` and the sequence number, zero-padded.")]
    seq: Annotated[int, doc("Position in the hash chain.")]
    timestamp: Timestamp
    event_type: Annotated[str, doc("What happened, e.g. `agent_registered`.")]
    agent_id: Annotated[str, doc("The agent concerned, or empty.")]
    task_id: Annotated[str, doc("The task concerned, or empty.")]
    orch_id: Annotated[str, doc("The orchestrator concerned, or empty.")]
    detail: Annotated[str, doc("Sanitized detail.")]
    resource: Annotated[str, doc("The path concerned, or empty.")]
    outcome: Annotated[str, doc("Whether the operation was allowed.", enum=["success", "denied"])]
    deleg_depth: Annotated[int, doc("Delegation depth.")]
    deleg_chain_hash: Annotated[str, doc("Delegation chain hash, or empty.")]
    request_id: Annotated[str, doc("The request's `X-Request-ID`.")]
    hash: Annotated[str, doc("SHA-256 (hex) of this event chained to `prev_hash`.")]
    prev_hash: Annotated[str, doc("The previous event's hash.")]
    index: Annotated[
        int,
        doc("Its leaf in the log's Merkle tree (`seq` - 1): what inclusion proofs name."),
    ]
    version: Annotated[
        int,
        doc(
            "The format its `hash` is in: 1 (events before lineage was recorded) or 2 "
            "(the hash also covers `tenant`, `app_id`, `principal_ref` and `chain_root`)."
        ),
    ]
    tenant: Annotated[str, doc("The tenant whose log it is in.")]
    app_id: Annotated[str, doc("The app the credential descends from, or empty.")]
    principal_ref: Annotated[
        str,
        doc(
            "Pseudonym of the human principal it acts for: 16 hex characters of "
            "SHA-256(`tasklease-principal-v1\n` || principal), or empty."
        ),
    ]
    chain_root: Annotated[str, doc("The root agent of its delegation chain, or empty.")]


def audit_event(event: AuditRecord) -> AuditEvent:
    return AuditEvent(
        id=event.id,
        seq=event.seq,
        timestamp=event.timestamp,
        event_type=event.event_type,
        agent_id=event.agent_id,
        task_id=event.task_id,
        orch_id=event.orch_id,
        detail=event.detail,
        resource=event.resource,
        outcome=event.outcome,
        deleg_depth=event.deleg_depth,
        deleg_chain_hash=event.deleg_chain_hash,
        request_id=event.request_id,
        hash=event.hash,
        prev_hash=event.prev_hash,
        index=event.index,
        version=event.version,
        tenant=event.tenant,
        app_id=event.app_id,
        principal_ref=event.principal_ref,
        chain_root=event.chain_root,
    )


class AuditEventPage(Response):
    events: list[AuditEvent]
    total: Annotated[int, doc("Events matching the filters, over all pages.")]
    offset: Annotated[int, doc("Events skipped.")]
    limit: Annotated[int, doc("The page size used.")]


class AdminAuthResponse(Response):
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType


class OperatorAuthResponse(Response):
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType
    role: Annotated[str, doc("The operator's role.", enum=_ROLES)]
    scopes: Annotated[list[str], doc("The token's scopes: its role's.")]


class Operator(Response):
    name: Annotated[str, doc("The operator's name; its tokens' `sub` is `operator:<name>`.")]
    role: Annotated[str, doc("What it may do (see `scopes`).", enum=_ROLES)]
    scopes: Annotated[list[str], doc("The scopes its tokens carry.")]
    credential: Annotated[
        str,
        doc("How it signs in; `none` once removed.", enum=["secret", "key", "none"]),
    ]
    status: Annotated[str, doc("`removed` once removed.", enum=["active", "removed"])]
    created_at: Timestamp
    updated_at: Annotated[
        str, doc("The last change of credential or status, RFC 3339, UTC.", format="date-time")
    ]
    created_by: Annotated[str, doc("Who added it (`admin`, `operator:<name>` or `init`).")]


class OperatorWithSecret(Operator):
    secret: (
        Annotated[str, doc("The operator's secret, shown only this once (not for a key).")]
        | UnsetType
    ) = UNSET


class RemovedOperator(Operator):
    removed_at: Timestamp


class OperatorList(Response):
    operators: list[Operator]
    total: Annotated[int, doc("Number of operators, removed ones included.")]


def _operator_fields(record: OperatorRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": record.role,
        "scopes": list(ROLE_SCOPES.get(record.role, ())),
        "credential": "key" if record.public_key else "secret" if record.secret_hash else "none",
        "status": record.status,
        "created_at": format_rfc3339_seconds(record.created_at),
        "updated_at": format_rfc3339_seconds(record.updated_at),
        "created_by": record.created_by,
    }


def operator_view(record: OperatorRecord) -> Operator:
    return Operator(**_operator_fields(record))


def operator_with_secret(record: OperatorRecord, secret: str) -> OperatorWithSecret:
    return OperatorWithSecret(**_operator_fields(record), secret=secret or UNSET)


def removed_operator(record: OperatorRecord) -> RemovedOperator:
    fields = _operator_fields(record)
    return RemovedOperator(**fields, removed_at=fields["updated_at"])


class KeyRotationResponse(Response):
    kid: Annotated[str, doc("Key id of the new active signing key.")]
    previous_kid: Annotated[str, doc("Key id of the key that signed until now.")]
    kids: Annotated[list[str], doc("Every key id the broker verifies, the active one first.")]


class KeyRetirementResponse(Response):
    kid: Annotated[str, doc("Key id of the key retired: nothing it signed verifies now.")]
    kids: Annotated[list[str], doc("Every key id the broker verifies, the active one first.")]


# --- operations ----------------------------------------------------------------------------


def _text_param(name: str, what: str) -> Param:
    return Param(name, "query", {"type": "string"}, f"Only events with this {what}.")


def _time_param(name: str, bound: str) -> Param:
    return Param(
        name,
        "query",
        {"type": "string", "format": "date-time"},
        f"Only events at or {bound} this RFC 3339 time (with a time zone).",
    )


_OPERATORS = OPERATORS_SCOPE
_KID = Param("kid", "path", {"type": "string"}, "The signing key's `kid` (from the JWKS).", True)
_NAME = Param("name", "path", {"type": "string"}, "The operator's name.", True)
_NO_SUCH_OPERATOR = Failure("not_found", "no operator has this name, or it was removed")

OPERATIONS = (
    Operation(
        "POST /v1/revoke",
        "revoke",
        "operators",
        "Revoke tokens",
        "Revokes at one of four levels: `token` (a `jti`), `agent` (a SPIFFE ID), `task` "
        "(a `task_id`) or `chain` (a delegation root agent). Durable before it answers, "
        "enforced by this broker at once. Idempotent.",
        admin("admin:revoke:*"),
        RevokeResponse,
        request=RevokeRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`level` or `target` is missing, `level` is not one of the four levels, "
                f"`target` is longer than {MAX_TARGET} bytes (UTF-8), or `target` holds a token or "
                "a secret (64 hexadecimal characters: a launch token, a client secret) "
                "instead of an id, or a SPIFFE ID not written as tokens name it (the "
                "scheme and trust domain in lowercase, no empty, `.` or `..` segment)",
            ),
            Failure(
                "forbidden",
                "`target` names an operator (`operator:<name>`) or the built-in `admin` at "
                "level `agent` or `chain`, or an operator's token (its id starts `op-`) at "
                "level `token` or `chain`, and the caller lacks `admin:operators:*`: "
                "remove the operator or rotate its secret instead",
            ),
        ),
    ),
    Operation(
        "GET /v1/audit/events",
        "listAuditEvents",
        "operators",
        "Query the audit log",
        "Audit events in chain order, filtered and paged. Each event carries its hash and "
        "its predecessor's, so a page can be checked against the chain, its `index` in "
        "the log's Merkle tree (`GET /v1/audit/proof/inclusion`), and its lineage.",
        admin("admin:audit:*"),
        AuditEventPage,
        parameters=(
            _text_param("agent_id", "agent SPIFFE ID"),
            _text_param("task_id", "task id"),
            _text_param("event_type", "event type"),
            Param(
                "principal_ref",
                "query",
                {"type": "string"},
                "Only events done for the human principal with this pseudonym (see the "
                "events' `principal_ref`; `tasklease audit events --principal` computes it).",
            ),
            Param(
                "outcome",
                "query",
                {"type": "string", "enum": ["success", "denied"]},
                "Only events with this outcome.",
            ),
            _time_param("since", "after"),
            _time_param("until", "before"),
            Param(
                "limit",
                "query",
                {"type": "integer", "default": 100, "maximum": 1000},
                "Page size; 0 or less means 100, more than 1000 means 1000.",
            ),
            Param(
                "offset",
                "query",
                {"type": "integer", "default": 0, "minimum": 0},
                "Events to skip; negative values count as 0.",
            ),
        ),
        errors=(
            Failure(
                "invalid_request",
                "`limit` or `offset` is not an integer, `outcome` is not `success` or "
                "`denied`, or `since`/`until` is not an "
                "RFC 3339 time with a time zone",
            ),
        ),
    ),
    Operation(
        "POST /v1/admin/auth",
        "adminAuth",
        "operators",
        "Authenticate with the admin secret",
        "Exchanges the admin secret for a short-lived token of the built-in admin (`sub` "
        "`admin`; its `scope` claim is AgentWrit's, and it holds the `admin` role). The "
        "AgentWrit v1 body (`client_id`/`client_secret`) is refused with a message naming "
        "the new one. Named operators sign in at `POST /v1/operator/auth`.",
        PUBLIC,
        AdminAuthResponse,
        request=AdminAuthRequest,
        commits=True,
        sign_in_limit="admin",
        errors=(
            Failure(
                "invalid_request",
                "`secret` is missing, or the old `client_id`/`client_secret` form was sent",
            ),
            Failure("unauthorized", "the secret is wrong"),
        ),
    ),
    Operation(
        "POST /v1/operator/auth",
        "operatorAuth",
        "operators",
        "Authenticate as a named operator",
        "Exchanges a named operator's credential for a short-lived token (`typ` "
        "`tasklease-admin+jwt`, `sub` `operator:<name>`, its role's scopes): `{name, "
        "secret}`, or `{name, nonce, signature}` for an operator with a key. A nonce is "
        "spent whether or not the signature verifies. Unknown name, removed operator, "
        "the other kind of credential and a wrong one answer the same; the audit log "
        "says which. Rate-limited with `POST /v1/admin/auth` (one bucket per client).",
        PUBLIC,
        OperatorAuthResponse,
        request=OperatorAuthRequest,
        commits=True,
        sign_in_limit="admin",
        errors=(
            Failure(
                "invalid_request",
                "`name` is missing or malformed, neither or both of `secret` and "
                "`nonce`/`signature` are given, or the nonce or signature is malformed",
            ),
            Failure("unauthorized", "the credential does not prove the operator"),
        ),
    ),
    Operation(
        "POST /v1/admin/operators",
        "createOperator",
        "operators",
        "Add an operator",
        "Adds a named operator with a role (`admin`: everything; `operator`: apps, launch "
        "tokens, revocation and the audit log; `auditor`: the audit log only) and a "
        "credential of its own: the `public_key` given, or a generated `secret`, shown "
        "once, here.",
        admin(_OPERATORS),
        OperatorWithSecret,
        status=201,
        request=OperatorCreateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`name` or `role` is missing or malformed, or `public_key` is not a "
                "base64 Ed25519 public key",
            ),
            Failure("conflict", "the name is taken, now or by a removed operator"),
        ),
    ),
    Operation(
        "GET /v1/admin/operators",
        "listOperators",
        "operators",
        "List operators",
        "Every operator, active and removed, by name. No credential is ever shown.",
        admin(_OPERATORS),
        OperatorList,
    ),
    Operation(
        "DELETE /v1/admin/operators/{name}",
        "removeOperator",
        "operators",
        "Remove an operator",
        "Its credential stops working and every token it holds is revoked, at once "
        "(level `agent` on `operator:<name>`). The record is kept (status `removed`) for "
        "the audit trail, and the name is never reused. A tenant keeps at least one "
        "active `admin` operator (it has no admin secret to fall back on).",
        admin(_OPERATORS),
        RemovedOperator,
        parameters=(_NAME,),
        commits=True,
        errors=(
            _NO_SUCH_OPERATOR,
            Failure(
                "conflict",
                "it is a tenant's last active `admin` operator: add another admin first",
            ),
        ),
    ),
    Operation(
        "POST /v1/admin/operators/{name}/rotate",
        "rotateOperatorCredential",
        "operators",
        "Rotate an operator's credential",
        "Replaces the credential: with `public_key`, that key from now on; with `{}`, a "
        "new secret, shown once, here. The old credential stops working and every token "
        "the operator holds is revoked, at once.",
        admin(_OPERATORS),
        OperatorWithSecret,
        request=OperatorRotateRequest,
        parameters=(_NAME,),
        commits=True,
        errors=(
            Failure("invalid_request", "`public_key` is not a base64 Ed25519 public key"),
            _NO_SUCH_OPERATOR,
        ),
    ),
    Operation(
        "POST /v1/admin/keys/rotate",
        "rotateSigningKey",
        "operators",
        "Rotate the signing key",
        "Makes a new Ed25519 signing key active. Every older key stays in the JWKS and "
        "keeps verifying the tokens it signed until they expire; new tokens carry the new "
        "`kid`. Needs `admin:keys:*`: the `admin` role and the built-in admin hold it.",
        admin("admin:keys:*"),
        KeyRotationResponse,
        commits=True,
    ),
    Operation(
        "POST /v1/admin/keys/{kid}/retire",
        "retireSigningKey",
        "operators",
        "Retire an older signing key at once",
        "Stops trusting an older signing key: every token it signed is refused from now "
        "on, its holders' and a forger's alike (after a key was read from a disk or a "
        "backup), by every broker process and replica within a second (one with a copy of "
        "the key directory of its own too) and by resource servers at their next JWKS "
        "fetch; the trust bundle is published again without it. The `signing_key_retired` "
        "event and the retirement are durable before the key is removed. The active key "
        "cannot be retired: rotate first. Needs `admin:keys:*`.",
        admin("admin:keys:*"),
        KeyRetirementResponse,
        parameters=(_KID,),
        errors=(
            Failure("not_found", "no signing key has this kid"),
            Failure("conflict", "`kid` is the active key's: rotate first"),
        ),
        commits=True,
    ),
)
