"""The OpenAPI 3.1 description of the HTTP API, served at ``/v1/openapi.json``.

One table, :data:`OPERATIONS`, holds every route's metadata: who may call it, what it
takes, what it answers and which error codes it can return, and why. Request body
schemas are generated from the msgspec structs in :mod:`tasklease.http.wire`; success
response schemas are written out here, with field names exactly as the handlers in
:mod:`tasklease.http.app` emit them; every error response is an RFC 9457 problem
(``Problem``), whose statuses come from :data:`tasklease.http.problems.STATUS_BY_CODE`.

``tests/http/test_openapi.py`` holds this table to the running application (every route
documented, nothing documented that is not routed) and ``docs/api.md`` is rendered from
the document by ``scripts/gen_api_docs.py``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import msgspec

from tasklease.core.broker import VERSION
from tasklease.http import wire
from tasklease.http.problems import STATUS_BY_CODE, TYPE_PREFIX

__all__ = [
    "ERROR_CODES",
    "OPERATIONS",
    "REQUEST_FIELDS",
    "TAGS",
    "Auth",
    "Failure",
    "Operation",
    "Parameter",
    "openapi_document",
    "openapi_json",
]

Schema = dict[str, Any]
_REF = "#/components/schemas/{name}"
_PROBLEM_MEDIA = "application/problem+json"


def _ref(name: str) -> Schema:
    return {"$ref": _REF.format(name=name)}


# --- auth ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    """Who may call a route: the kind of bearer token and its scope; ``kind`` is ``""``
    for public routes."""

    kind: str  # "", "any", "agent", "admin" or "app"
    scope: str | None = None

    @property
    def description(self) -> str:
        if not self.kind:
            return "None (public)."
        if self.kind == "any":
            return "Bearer token: any token the broker issued (agent, admin or app)."
        if self.kind == "agent":
            return "Bearer agent token (admin and app tokens are refused with `forbidden`)."
        return f"Bearer {self.kind} token with scope `{self.scope}`."


PUBLIC = Auth("")
ANY_TOKEN = Auth("any")
AGENT_TOKEN = Auth("agent")


def _admin(scope: str) -> Auth:
    return Auth("admin", scope)


def _app(scope: str) -> Auth:
    return Auth("app", scope)


# --- route table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One way a route can fail: an error code and when it happens."""

    code: str
    when: str


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str  # "path" or "query"
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    description: str
    auth: Auth
    status: int  # the success status
    response: str | None  # a component schema name; None for an empty body
    request: type[msgspec.Struct] | None = None
    parameters: tuple[Parameter, ...] = ()
    errors: tuple[Failure, ...] = ()
    response_media: str = "application/json"
    commits: bool = False  # writes state and an audit event: can fail closed with 503
    rate_limited: bool = False


_MALFORMED = Failure(
    "invalid_request", "the body is empty, not JSON, or a field has the wrong JSON type"
)
_APP_ID = Parameter(
    "app_id", "path", {"type": "string"}, "The app's `app_id` (`app-<name>-<6 hex>`).", True
)
_APPS_SCOPE = "admin:launch-tokens:*"


def _time_param(name: str, bound: str) -> Parameter:
    return Parameter(
        name,
        "query",
        {"type": "string", "format": "date-time"},
        f"Only events at or {bound} this RFC 3339 time (with a time zone).",
    )


def _text_param(name: str, what: str) -> Parameter:
    return Parameter(name, "query", {"type": "string"}, f"Only events with this {what}.")


TAGS: Final[Mapping[str, str]] = {
    "identity": "Agent identity: a nonce, then registration with a launch token.",
    "tokens": "Agent tokens: validation, renewal, release and delegation.",
    "launch tokens": "Launch tokens, which let an agent register.",
    "operators": "Operator authentication, revocation and the audit log.",
    "apps": "Apps: registered clients that launch agents within a scope ceiling.",
    "operations": "Health, metrics, verification keys and this description.",
}

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "GET",
        "/v1/challenge",
        "getChallenge",
        "identity",
        "Get a registration nonce",
        "A fresh single-use nonce (64 lowercase hex characters). The agent signs the "
        "nonce's bytes (hex-decoded) with its Ed25519 key and presents the signature to "
        "`POST /v1/register` before the nonce expires.",
        PUBLIC,
        200,
        "ChallengeResponse",
    ),
    Operation(
        "GET",
        "/v1/health",
        "getHealth",
        "operations",
        "Health and version",
        "Liveness, storage connectivity and a few counters. Always 200: a storage "
        "failure shows as `status: degraded` and `db_connected: false`.",
        PUBLIC,
        200,
        "HealthResponse",
    ),
    Operation(
        "GET",
        "/v1/metrics",
        "getMetrics",
        "operations",
        "Prometheus metrics",
        "The broker's metrics in the Prometheus text exposition format (version 0.0.4).",
        PUBLIC,
        200,
        "MetricsText",
        response_media="text/plain",
    ),
    Operation(
        "GET",
        "/.well-known/jwks.json",
        "getJwks",
        "operations",
        "Token verification keys (JWKS)",
        "The public Ed25519 keys (RFC 7517 JWK Set, RFC 8037 OKP keys) that verify "
        "broker-issued tokens; the active signing key comes first. Cacheable for 60 s.",
        PUBLIC,
        200,
        "JWKS",
    ),
    Operation(
        "GET",
        "/v1/openapi.json",
        "getOpenApi",
        "operations",
        "This API description",
        "The OpenAPI 3.1 document describing every route of this broker.",
        PUBLIC,
        200,
        "OpenAPIDocument",
    ),
    Operation(
        "POST",
        "/v1/token/validate",
        "validateToken",
        "tokens",
        "Validate an agent token",
        "Checks signature, issuer, audience, lifetime (with the configured clock skew), "
        "delegation depth and revocation. A token that fails any check answers 200 with "
        "`valid: false` and one generic message; the precise reason goes to the audit "
        "and debug logs only.",
        PUBLIC,
        200,
        "ValidateResponse",
        request=wire.ValidateRequest,
        errors=(Failure("invalid_request", "`token` is missing or empty"),),
    ),
    Operation(
        "POST",
        "/v1/register",
        "registerAgent",
        "identity",
        "Register an agent instance",
        "Proves possession of an Ed25519 key by signing a nonce from `GET /v1/challenge`, "
        "redeems a launch token, and issues the agent's SPIFFE ID and first access token. "
        "Every field is checked before anything is consumed; the nonce and the launch "
        "token are consumed together with the registration.",
        PUBLIC,
        200,
        "RegisterResponse",
        request=wire.RegisterRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "a field is missing or malformed (`orch_id`/`task_id` not a SPIFFE path "
                "segment, a scope not `action:resource:identifier`, a key or signature not "
                "padded standard base64 of the right length, a nonce not 64 hex characters)",
            ),
            Failure(
                "unauthorized",
                "the launch token is unknown, expired or already consumed; the nonce is "
                "unknown, expired or already used; or the signature does not verify",
            ),
            Failure(
                "scope_violation",
                "`requested_scope` is not covered by the launch token's `allowed_scope`",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/token/renew",
        "renewToken",
        "tokens",
        "Renew an agent token",
        "Issues a successor with the same scope and lifetime and revokes the presented "
        "token, atomically: of two concurrent renewals exactly one succeeds. The "
        "successor never outlives the renewal ceiling counted from registration.",
        AGENT_TOKEN,
        200,
        "RenewResponse",
        commits=True,
        errors=(
            Failure("unauthorized", "the token was already renewed or revoked"),
            Failure("renewal_count_exceeded", "the token has been renewed the maximum times"),
            Failure(
                "renewal_ceiling_exceeded",
                "the agent's registration is as old as the renewal ceiling allows",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/token/release",
        "releaseToken",
        "tokens",
        "Give a token up",
        "Revokes the presented token (revocation level `token`). Idempotent.",
        ANY_TOKEN,
        204,
        None,
        commits=True,
    ),
    Operation(
        "POST",
        "/v1/delegate",
        "delegateToken",
        "tokens",
        "Delegate to another agent",
        "Issues a token for another registered, active agent holding a subset of the "
        "caller's scope, living no longer than the caller's token, and carrying the "
        "delegation chain with a broker-signed record of this hop.",
        AGENT_TOKEN,
        200,
        "DelegateResponse",
        request=wire.DelegateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`delegate_to` or `scope` is missing, a scope is malformed, or `ttl` is "
                "not an integer",
            ),
            Failure(
                "unauthorized",
                "the caller's delegation chain carries a record the broker did not sign, "
                "or the caller's token has no lifetime left",
            ),
            Failure(
                "scope_violation",
                "`scope` exceeds the caller's scope, or the chain is at the maximum depth",
            ),
            Failure("not_found", "`delegate_to` is not a registered, active agent"),
        ),
    ),
    Operation(
        "POST",
        "/v1/revoke",
        "revoke",
        "operators",
        "Revoke tokens",
        "Revokes at one of four levels: `token` (a `jti`), `agent` (a SPIFFE ID), `task` "
        "(a `task_id`) or `chain` (a delegation root agent). Durable before it answers, "
        "enforced by this broker at once. Idempotent.",
        _admin("admin:revoke:*"),
        200,
        "RevokeResponse",
        request=wire.RevokeRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`level` or `target` is missing, `level` is not one of the four levels, "
                "or `target` is longer than 2048 characters",
            ),
        ),
    ),
    Operation(
        "GET",
        "/v1/audit/events",
        "listAuditEvents",
        "operators",
        "Query the audit log",
        "Audit events in chain order, filtered and paged. Each event carries its hash and "
        "its predecessor's, so a page can be checked against the chain.",
        _admin("admin:audit:*"),
        200,
        "AuditEventPage",
        parameters=(
            _text_param("agent_id", "agent SPIFFE ID"),
            _text_param("task_id", "task id"),
            _text_param("event_type", "event type"),
            Parameter(
                "outcome",
                "query",
                {"type": "string", "enum": ["success", "denied"]},
                "Only events with this outcome.",
            ),
            _time_param("since", "after"),
            _time_param("until", "before"),
            Parameter(
                "limit",
                "query",
                {"type": "integer", "default": 100, "maximum": 1000},
                "Page size; 0 or less means 100, more than 1000 means 1000.",
            ),
            Parameter(
                "offset",
                "query",
                {"type": "integer", "default": 0, "minimum": 0},
                "Events to skip; negative values count as 0.",
            ),
        ),
        errors=(
            Failure(
                "invalid_request",
                "`limit` or `offset` is not an integer, or `since`/`until` is not an "
                "RFC 3339 time with a time zone",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/admin/auth",
        "adminAuth",
        "operators",
        "Authenticate as the operator",
        "Exchanges the admin secret for a short-lived admin token. The AgentWrit v1 body "
        "(`client_id`/`client_secret`) is refused with a message naming the new one.",
        PUBLIC,
        200,
        "AdminAuthResponse",
        request=wire.AdminAuthRequest,
        commits=True,
        rate_limited=True,
        errors=(
            Failure(
                "invalid_request",
                "`secret` is missing, or the old `client_id`/`client_secret` form was sent",
            ),
            Failure("unauthorized", "the secret is wrong"),
        ),
    ),
    Operation(
        "POST",
        "/v1/admin/launch-tokens",
        "createLaunchTokenAsAdmin",
        "launch tokens",
        "Create a launch token (operator)",
        "A launch token lets one agent (or, with `single_use: false`, several) register "
        "with at most `allowed_scope`. The token is shown once.",
        _admin("admin:launch-tokens:*"),
        201,
        "LaunchTokenResponse",
        request=wire.LaunchTokenRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`agent_name` is missing or longer than 256 characters, `allowed_scope` is "
                "empty or malformed, or a TTL or `single_use` has the wrong type",
            ),
            Failure("invalid_ttl", "`ttl` exceeds the broker's launch token maximum"),
        ),
    ),
    Operation(
        "POST",
        "/v1/app/launch-tokens",
        "createLaunchTokenAsApp",
        "launch tokens",
        "Create a launch token (app)",
        "As the operator route, but the scope is held to the calling app's ceiling.",
        _app("app:launch-tokens:*"),
        201,
        "LaunchTokenResponse",
        request=wire.LaunchTokenRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`agent_name` is missing or longer than 256 characters, `allowed_scope` is "
                "empty or malformed, or a TTL or `single_use` has the wrong type",
            ),
            Failure("invalid_ttl", "`ttl` exceeds the broker's launch token maximum"),
            Failure(
                "forbidden",
                "the app is no longer active, or `allowed_scope` exceeds the app's ceiling",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/admin/apps",
        "createApp",
        "apps",
        "Register an app",
        "Creates an app with a scope ceiling. The `client_secret` is shown once, here.",
        _admin(_APPS_SCOPE),
        201,
        "AppWithSecret",
        request=wire.AppCreateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "`name` is missing or not 2-64 lowercase letters, digits and single "
                "hyphens, or `scopes` is empty or malformed",
            ),
            Failure("invalid_ttl", "`token_ttl` is not an integer from 60 to 86400"),
            Failure("conflict", "an app with this name already exists"),
        ),
    ),
    Operation(
        "GET",
        "/v1/admin/apps",
        "listApps",
        "apps",
        "List apps",
        "Every app, active and deregistered.",
        _admin(_APPS_SCOPE),
        200,
        "AppList",
    ),
    Operation(
        "GET",
        "/v1/admin/apps/{app_id}",
        "getApp",
        "apps",
        "Get an app",
        "One app by its `app_id`.",
        _admin(_APPS_SCOPE),
        200,
        "App",
        parameters=(_APP_ID,),
        errors=(Failure("not_found", "no app has this `app_id`"),),
    ),
    Operation(
        "PUT",
        "/v1/admin/apps/{app_id}",
        "updateApp",
        "apps",
        "Update an app",
        "Changes the scope ceiling and/or the token TTL, both or neither. Give at least "
        "one of them.",
        _admin(_APPS_SCOPE),
        200,
        "App",
        request=wire.AppUpdateRequest,
        parameters=(_APP_ID,),
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "neither `scopes` nor `token_ttl` is given, or a scope is malformed",
            ),
            Failure("invalid_ttl", "`token_ttl` is not an integer from 60 to 86400"),
            Failure("not_found", "no app has this `app_id`"),
        ),
    ),
    Operation(
        "DELETE",
        "/v1/admin/apps/{app_id}",
        "deregisterApp",
        "apps",
        "Deregister an app",
        "Deactivates the app: its secret stops working and its live app tokens are "
        "revoked. The record is kept (status `inactive`) for the audit trail.",
        _admin(_APPS_SCOPE),
        200,
        "DeregisteredApp",
        parameters=(_APP_ID,),
        commits=True,
        errors=(Failure("not_found", "no app has this `app_id`"),),
    ),
    Operation(
        "POST",
        "/v1/app/auth",
        "appAuth",
        "apps",
        "Authenticate as an app",
        "Exchanges an app's `client_id` and `client_secret` for an app token. Unknown "
        "client, wrong secret and deregistered app look the same to the caller.",
        PUBLIC,
        200,
        "AppAuthResponse",
        request=wire.AppAuthRequest,
        commits=True,
        rate_limited=True,
        errors=(
            Failure("invalid_request", "`client_id` or `client_secret` is missing"),
            Failure("unauthorized", "the credentials are wrong or the app is deregistered"),
        ),
    ),
)


# --- request bodies: which fields the core requires, and what each one means ------------

# (required, description) per field of every request struct. The structs decode every
# field as optional so that the core can name a missing one; "required" here is the
# contract the core enforces (400 when absent).
REQUEST_FIELDS: Final[Mapping[type[msgspec.Struct], Mapping[str, tuple[bool, str]]]] = {
    wire.ValidateRequest: {"token": (True, "The agent access token to check.")},
    wire.RegisterRequest: {
        "launch_token": (True, "The launch token (64 lowercase hex characters)."),
        "nonce": (True, "The nonce from `GET /v1/challenge`."),
        "public_key": (True, "The agent's Ed25519 public key, standard base64 (32 bytes)."),
        "signature": (
            True,
            "Ed25519 signature of the hex-decoded nonce bytes, standard base64 (64 bytes).",
        ),
        "orch_id": (True, "Orchestrator id; becomes a segment of the SPIFFE ID."),
        "task_id": (True, "Task id; becomes a segment of the SPIFFE ID."),
        "requested_scope": (
            True,
            "Scopes (`action:resource:identifier`) within the launch token's allowed scope.",
        ),
    },
    wire.DelegateRequest: {
        "delegate_to": (True, "SPIFFE ID of the registered agent to delegate to."),
        "scope": (True, "Scopes to hand over: a subset of the caller's."),
        "ttl": (False, "Requested lifetime in seconds (default 60), capped by the caller's."),
    },
    wire.RevokeRequest: {
        "level": (True, "One of `token`, `agent`, `task`, `chain`."),
        "target": (
            True,
            "What to revoke: a `jti`, an agent SPIFFE ID, a `task_id` or a chain root agent.",
        ),
    },
    wire.AdminAuthRequest: {
        "secret": (True, "The admin secret."),
        "client_id": (False, "Refused: the AgentWrit v1 form. Send `secret` only."),
        "client_secret": (False, "Refused: the AgentWrit v1 form. Send `secret` only."),
    },
    wire.AppAuthRequest: {
        "client_id": (True, "The app's client id."),
        "client_secret": (True, "The app's client secret."),
    },
    wire.AppCreateRequest: {
        "name": (
            True,
            "2-64 lowercase letters, digits and single hyphens, starting with a letter.",
        ),
        "scopes": (True, "The app's scope ceiling."),
        "token_ttl": (False, "App token lifetime in seconds, 60 to 86400 (default 1800)."),
    },
    wire.AppUpdateRequest: {
        "scopes": (False, "A new scope ceiling."),
        "token_ttl": (False, "A new app token lifetime in seconds, 60 to 86400."),
    },
    wire.LaunchTokenRequest: {
        "agent_name": (True, "A label for the agent(s) it launches, at most 256 characters."),
        "allowed_scope": (True, "The most an agent registered with it may request."),
        "max_ttl": (False, "Lifetime of the agent's tokens in seconds (capped by the broker)."),
        "single_use": (False, "Whether one registration consumes it (default true)."),
        "ttl": (False, "How long the launch token itself stays valid, in seconds (default 30)."),
    },
}


# --- error codes -------------------------------------------------------------------------

ERROR_CODES: Final[Mapping[str, str]] = {
    "invalid_request": "The request is malformed or a required field is missing.",
    "invalid_ttl": "A TTL is outside its allowed range.",
    "unauthorized": "No valid credential: missing, malformed, invalid, expired or revoked.",
    "forbidden": "Authenticated, but this caller may not do this.",
    "insufficient_scope": "The token is of the wrong kind or lacks the route's scope.",
    "scope_violation": "The request would widen authority beyond what is allowed.",
    "renewal_count_exceeded": "The token has been renewed the maximum number of times.",
    "renewal_ceiling_exceeded": "The token has reached its maximum lifetime since registration.",
    "not_found": "No such resource; also the answer for any path that is not an endpoint.",
    "method_not_allowed": "The path exists but does not take this HTTP method (any route).",
    "conflict": "The resource already exists.",
    "payload_too_large": "The request body exceeds the broker's limit (1 MiB by default).",
    "unsupported_media_type": "Reserved for a refused body media type; not returned today.",
    "rate_limited": "Too many attempts from this client; retry after `Retry-After` seconds.",
    "internal_error": "An unexpected failure; details are in the broker's logs.",
    "service_unavailable": "State could not be made durable (fail-closed); retry later.",
}


def _failures(op: Operation) -> list[Failure]:
    """The route's own failures plus those every route of its kind shares, in code order."""
    found: list[Failure] = []
    if op.rate_limited:
        found.append(Failure("rate_limited", "too many attempts from this client address"))
    if op.request is not None:
        found.append(_MALFORMED)
        found.append(Failure("payload_too_large", "the body exceeds the broker's body limit"))
    if op.auth.kind:
        found.append(
            Failure(
                "unauthorized",
                "the bearer token is missing, malformed, invalid, expired or revoked",
            )
        )
    if op.auth.scope is not None:
        found.append(
            Failure(
                "insufficient_scope",
                f"the token is not an {op.auth.kind} token, or lacks `{op.auth.scope}`",
            )
        )
    if op.auth.kind == "agent":
        found.append(Failure("forbidden", "the token is an admin or app token"))
    found.extend(op.errors)
    if op.commits or op.auth.kind:
        found.append(
            Failure("service_unavailable", "the audit event or state change could not be stored")
        )
    found.append(Failure("internal_error", "an unexpected failure"))
    # One entry per code: a route's own reasons join the shared one.
    merged: dict[str, str] = {}
    for failure in found:
        merged[failure.code] = (
            f"{merged[failure.code]}; or {failure.when}" if failure.code in merged else failure.when
        )
    order = list(STATUS_BY_CODE)
    return [
        Failure(code, merged[code])
        for code in sorted(merged, key=lambda c: (STATUS_BY_CODE[c], order.index(c)))
    ]


# --- response schemas ----------------------------------------------------------------------


def _obj(properties: Mapping[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _str(description: str) -> Schema:
    return {"type": "string", "description": description}


def _int(description: str) -> Schema:
    return {"type": "integer", "description": description}


def _strings(description: str) -> Schema:
    return {"type": "array", "items": {"type": "string"}, "description": description}


_ACCESS_TOKEN = _str("The access token (compact EdDSA JWS).")
_EXPIRES_IN = _int("Seconds until the token expires.")
_TOKEN_TYPE = {"type": "string", "const": "Bearer", "description": "Always `Bearer`."}
_TIMESTAMP = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}

_APP_FIELDS: dict[str, Schema] = {
    "app_id": _str("The app's id (`app-<name>-<6 hex>`)."),
    "name": _str("The app's name."),
    "client_id": _str("The client id to authenticate with."),
    "scopes": _strings("The app's scope ceiling."),
    "token_ttl": _int("Lifetime of the app's tokens, in seconds."),
    "status": {
        "type": "string",
        "enum": ["active", "inactive"],
        "description": "`inactive` once deregistered.",
    },
    "created_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
}


def _response_schemas() -> dict[str, Schema]:
    delegation_record = _obj(
        {
            "agent": _str("SPIFFE ID of the delegating agent."),
            "scope": _strings("The delegator's scope at the time."),
            "delegated_at": {
                "type": "string",
                "format": "date-time",
                "description": "When the hop was made (RFC 3339).",
            },
            "signature": _str("The broker's Ed25519 signature of the record (hex)."),
        }
    )
    claims: Schema = {
        "type": "object",
        "description": "The token's claims as signed (RFC 7519, RFC 9068).",
        "properties": {
            "iss": _str("Issuer."),
            "sub": _str("The agent's SPIFFE ID."),
            "aud": _strings("Audiences."),
            "exp": _int("Expiry, seconds since the epoch."),
            "nbf": _int("Not before, seconds since the epoch."),
            "iat": _int("Issued at, seconds since the epoch."),
            "jti": _str("Token id (32 hex characters)."),
            "scope": _strings("Granted scopes."),
            "task_id": _str("Task id."),
            "orch_id": _str("Orchestrator id."),
            "client_id": _str("`admin` or the client id of the app that launched the agent."),
            "delegation_chain": {
                "type": "array",
                "items": _ref("DelegationRecord"),
                "description": "One record per delegation hop, root first.",
            },
            "chain_hash": _str("SHA-256 (hex) of the delegation chain."),
            "oiat": _int("Original registration time, bounds renewal."),
            "rnc": _int("How many renewals led to this token."),
        },
        "required": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "client_id"],
    }
    audit_event = _obj(
        {
            "id": _str("`evt-` and the sequence number, zero-padded."),
            "seq": _int("Position in the hash chain."),
            "timestamp": _TIMESTAMP,
            "event_type": _str("What happened, e.g. `agent_registered`."),
            "agent_id": _str("The agent concerned, or empty."),
            "task_id": _str("The task concerned, or empty."),
            "orch_id": _str("The orchestrator concerned, or empty."),
            "detail": _str("Sanitized detail."),
            "resource": _str("The path concerned, or empty."),
            "outcome": {
                "type": "string",
                "enum": ["success", "denied"],
                "description": "Whether the operation was allowed.",
            },
            "deleg_depth": _int("Delegation depth."),
            "deleg_chain_hash": _str("Delegation chain hash, or empty."),
            "request_id": _str("The request's `X-Request-ID`."),
            "hash": _str("SHA-256 (hex) of this event chained to `prev_hash`."),
            "prev_hash": _str("The previous event's hash."),
        }
    )
    jwk = _obj(
        {
            "kty": {"type": "string", "const": "OKP"},
            "crv": {"type": "string", "const": "Ed25519"},
            "x": _str("The public key, base64url without padding."),
            "kid": _str("Key id."),
            "use": {"type": "string", "const": "sig"},
            "alg": {"type": "string", "const": "EdDSA"},
        }
    )
    return {
        "ChallengeResponse": _obj(
            {
                "nonce": {
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}$",
                    "description": "64 lowercase hex characters; sign their bytes.",
                },
                "expires_in": _int("Seconds the nonce stays usable."),
            }
        ),
        "HealthResponse": _obj(
            {
                "status": {
                    "type": "string",
                    "enum": ["ok", "degraded"],
                    "description": "`degraded` when storage is unreachable.",
                },
                "version": _str("The broker's version."),
                "uptime": _int("Seconds since the broker started."),
                "db_connected": {"type": "boolean", "description": "Whether storage answered."},
                "audit_events_count": _int("Events in the audit log."),
                "revocation_entries": _int("Entries in the in-memory revocation index."),
                "signing_kid": _str("Key id of the active signing key."),
            }
        ),
        "MetricsText": {"type": "string", "description": "Prometheus text format."},
        "JWK": jwk,
        "JWKS": _obj({"keys": {"type": "array", "items": _ref("JWK")}}),
        "OpenAPIDocument": {"type": "object", "description": "An OpenAPI 3.1 document."},
        "DelegationRecord": delegation_record,
        "TokenClaims": claims,
        "ValidateResponse": {
            "oneOf": [
                _obj({"valid": {"type": "boolean", "const": True}, "claims": _ref("TokenClaims")}),
                _obj(
                    {
                        "valid": {"type": "boolean", "const": False},
                        "error": {"type": "string", "const": "token is invalid or expired"},
                    }
                ),
            ]
        },
        "RegisterResponse": _obj(
            {
                "agent_id": _str("The agent's SPIFFE ID."),
                "access_token": _ACCESS_TOKEN,
                "expires_in": _EXPIRES_IN,
                "token_type": _TOKEN_TYPE,
            }
        ),
        "RenewResponse": _obj({"access_token": _ACCESS_TOKEN, "expires_in": _EXPIRES_IN}),
        "DelegateResponse": _obj(
            {
                "access_token": _ACCESS_TOKEN,
                "expires_in": _EXPIRES_IN,
                "delegation_chain": {
                    "type": "array",
                    "items": _ref("DelegationRecord"),
                    "description": "The new token's chain, root first; the last is this hop.",
                },
            }
        ),
        "RevokeResponse": _obj(
            {
                "revoked": {"type": "boolean", "const": True},
                "level": {"type": "string", "enum": ["token", "agent", "task", "chain"]},
                "target": _str("What was revoked."),
                "count": _int("Revocation entries written."),
            }
        ),
        "AuditEvent": audit_event,
        "AuditEventPage": _obj(
            {
                "events": {"type": "array", "items": _ref("AuditEvent")},
                "total": _int("Events matching the filters, over all pages."),
                "offset": _int("Events skipped."),
                "limit": _int("The page size used."),
            }
        ),
        "AdminAuthResponse": _obj(
            {"access_token": _ACCESS_TOKEN, "expires_in": _EXPIRES_IN, "token_type": _TOKEN_TYPE}
        ),
        "AppAuthResponse": _obj(
            {
                "access_token": _ACCESS_TOKEN,
                "expires_in": _EXPIRES_IN,
                "token_type": _TOKEN_TYPE,
                "scopes": _strings("The app token's scopes."),
            }
        ),
        "LaunchTokenResponse": _obj(
            {
                "launch_token": _str("The launch token (64 hex characters), shown once."),
                "expires_at": _TIMESTAMP,
                "policy": _obj(
                    {
                        "allowed_scope": _strings("The most an agent may request."),
                        "max_ttl": _int("Lifetime of the agent's tokens, in seconds."),
                        "single_use": {
                            "type": "boolean",
                            "description": "Whether one registration consumes it.",
                        },
                    }
                ),
            }
        ),
        "App": _obj(_APP_FIELDS),
        "AppWithSecret": _obj(
            {**_APP_FIELDS, "client_secret": _str("The app's secret, shown only once.")}
        ),
        "DeregisteredApp": _obj({**_APP_FIELDS, "deregistered_at": _TIMESTAMP}),
        "AppList": _obj(
            {"apps": {"type": "array", "items": _ref("App")}, "total": _int("Number of apps.")}
        ),
    }


def _problem_schema() -> Schema:
    problem = _obj(
        {
            "type": {
                "type": "string",
                "format": "uri-reference",
                "description": f"`{TYPE_PREFIX}` followed by the error code.",
            },
            "title": _str("The HTTP status phrase."),
            "status": _int("The HTTP status code."),
            "detail": _str("What went wrong, safe to show; never the internal reason."),
            "instance": _str("The request path."),
            "error_code": {
                "type": "string",
                "description": "The stable machine code.",
                "oneOf": [
                    {"const": code, "description": ERROR_CODES[code]} for code in STATUS_BY_CODE
                ],
            },
            "request_id": _str("The request's `X-Request-ID`."),
            "hint": _str("How to fix the request, when there is advice to give."),
        },
        optional=("hint",),
    )
    problem["description"] = "An RFC 9457 problem details object."
    return problem


# --- assembly ------------------------------------------------------------------------------


def _request_components() -> dict[str, Schema]:
    structs = list(REQUEST_FIELDS)
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    for struct, fields in REQUEST_FIELDS.items():
        schema = components[struct.__name__]
        schema["required"] = [name for name, (required, _) in fields.items() if required]
        for name, (_, description) in fields.items():
            schema["properties"][name]["description"] = description
    return components


def _error_responses(op: Operation) -> dict[str, Any]:
    by_status: dict[int, list[Failure]] = {}
    for failure in _failures(op):
        by_status.setdefault(STATUS_BY_CODE[failure.code], []).append(failure)
    responses: dict[str, Any] = {}
    for status, failures in by_status.items():
        response: dict[str, Any] = {
            "description": "; ".join(f"`{f.code}`: {f.when}" for f in failures),
            "content": {_PROBLEM_MEDIA: {"schema": _ref("Problem")}},
            "x-error-codes": [{"error_code": f.code, "when": f.when} for f in failures],
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}
            }
        if status == 429:
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        responses[str(status)] = response
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": HTTPStatus(op.status).phrase}
    if op.response is not None:
        success["content"] = {op.response_media: {"schema": _ref(op.response)}}
    body: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": f"{op.description}\n\n**Authentication:** {op.auth.description}",
        "security": [{"bearerAuth": [op.auth.scope] if op.auth.scope else []}]
        if op.auth.kind
        else [],
        "x-token-kind": op.auth.kind or "none",
    }
    if op.parameters:
        body["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required,
                "description": p.description,
                "schema": dict(p.schema),
            }
            for p in op.parameters
        ]
    if op.request is not None:
        body["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request.__name__)}},
        }
    body["responses"] = {str(op.status): success, **_error_responses(op)}
    return body


def _build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tasklease",
            "version": VERSION,
            "summary": "A credential broker for AI agents, wire-compatible with AgentWrit v2.",
            "description": "Every agent instance gets its own identity at spawn, carries only a "
            "minute-scale token scoped to its task, is re-validated on every request, can be "
            "revoked at four levels, and every credential operation is audited. Errors are "
            "RFC 9457 problem details (`application/problem+json`) with a stable "
            "`error_code`. Every response carries an `X-Request-ID` header.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A broker-issued EdDSA JWT: an agent token from "
                    "`/v1/register`, an admin token from `/v1/admin/auth` or an app token "
                    "from `/v1/app/auth`. Requirements list the scope a route needs.",
                }
            },
            "headers": {
                "WWWAuthenticate": {
                    "description": "The authentication scheme (RFC 6750 section 3).",
                    "schema": {"type": "string", "const": 'Bearer realm="tasklease"'},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                },
            },
            "schemas": {
                **_request_components(),
                **_response_schemas(),
                "Problem": _problem_schema(),
            },
        },
    }


@functools.cache
def _cached() -> dict[str, Any]:
    return _build()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API, as a fresh JSON-ready dict."""
    return copy.deepcopy(_cached())


@functools.cache
def openapi_json() -> bytes:
    """The document encoded once, as ``/v1/openapi.json`` serves it."""
    return msgspec.json.encode(_cached()) + b"\n"
