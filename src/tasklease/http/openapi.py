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
from tasklease.http.agent_routes import (
    DiscoveryBindRequest,
    HeartbeatRequest,
    MutualCompleteRequest,
    MutualInitiateRequest,
    MutualRespondRequest,
    ResumeRequest,
)
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
    # The error code an agent-only route answers an admin or app token with.
    refusal: str = "forbidden"

    @property
    def description(self) -> str:
        if not self.kind:
            return "None (public)."
        if self.kind == "any":
            return "Bearer token: any token the broker issued (agent, admin or app)."
        if self.kind == "agent":
            return f"Bearer agent token (admin and app tokens are refused with `{self.refusal}`)."
        if self.kind == "admin-or-app":
            return "Bearer admin or app token, any scope (agent tokens are refused)."
        return f"Bearer {self.kind} token with scope `{self.scope}`."


PUBLIC = Auth("")
ANY_TOKEN = Auth("any")
AGENT_TOKEN = Auth("agent")
# The agent-trust routes (http/agent_routes.py) admit only agent tokens when they
# authenticate, so another kind is refused as any wrong-kind token is.
PEER_TOKEN = Auth("agent", refusal="insufficient_scope")
ADMIN_OR_APP_TOKEN = Auth("admin-or-app")


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
    "revocation feed": "Revocations for resource servers that verify tokens offline.",
    "token holders": "RFC 7009 revocation by token holders and RFC 7662 introspection.",
    "agent trust": "Agents that trust each other: mutual authentication, heartbeats that "
    "revoke silent agents, crash resumption and signed discovery bindings.",
}
_CURSOR = Parameter(
    "cursor",
    "query",
    {"type": "integer", "minimum": 0},
    "Only entries with a greater `seq` (the `cursor` of an earlier answer). Without it: "
    "every unexpired entry.",
)
_FEED_READER_FAILURES = (
    Failure("invalid_request", "`cursor` is not a non-negative integer"),
    Failure("insufficient_scope", "the token is an agent token"),
)

_HOLDER_TOKEN = Auth("agent")
_INTROSPECTOR = Auth("admin-or-app")

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "POST",
        "/v1/token/revoke",
        "revokeTokenAsHolder",
        "token holders",
        "Revoke a token (RFC 7009)",
        "A token holder revokes one of its own tokens: the caller authenticates with an "
        "agent token (with its DPoP proof or client certificate if bound) and `token` "
        "names the same token or another token of the same agent. The body is a form "
        "(`application/x-www-form-urlencoded`, RFC 7009 section 2.1) or JSON with `token` "
        "and an optional `token_type_hint` (only a hint). Idempotent; answers 200 `{}` "
        "also for unknown, malformed, expired or already revoked tokens, so the answer "
        "never reveals whether a token existed. Every attempt is audited.",
        _HOLDER_TOKEN,
        200,
        "TokenRevocationResponse",
        request=wire.TokenRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "`token` is missing, or a form parameter is repeated"),
            Failure("forbidden", "`token` is a valid token of another agent"),
        ),
    ),
    Operation(
        "POST",
        "/v1/introspect",
        "introspectToken",
        "token holders",
        "Introspect a token (RFC 7662)",
        "For resource servers (authenticated with an admin or app token, so tokens cannot "
        "be scanned anonymously), and the only way to read a by-reference (`tlr_`) token. "
        "Form or JSON body with `token`, and optionally `audience` (the caller's resource "
        "identifier: a token for another resource is then inactive). Answers the token's "
        "claims with `active: true` (`scope` as a space-separated string, `token_type` "
        "`Bearer` or `DPoP`, `cnf` for the caller to check against its own connection) "
        'or exactly `{"active": false}` for anything else, including another app\'s '
        "agents' tokens when the caller is an app. Critical scopes are checked against "
        "the store (high assurance) and audited.",
        _INTROSPECTOR,
        200,
        "IntrospectionResponse",
        request=wire.TokenRequest,
        errors=(
            Failure("invalid_request", "`token` is missing, or a form parameter is repeated"),
            Failure("invalid_target", "`audience` is malformed"),
            Failure("insufficient_scope", "the caller's token is an agent token"),
        ),
    ),
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
        "delegation depth, revocation and binding. A token that fails any check answers "
        "200 with `valid: false` and one generic message; the precise reason goes to the "
        "audit and debug logs only. `audience` is the calling resource server's own "
        "identifier (RFC 8707): a token minted for another resource is invalid; without "
        "it the token must carry the broker's default audience. A certificate-bound token "
        "is valid only with the certificate the resource server saw (`client_cert` PEM or "
        "`client_cert_thumbprint`), a DPoP-bound one only with the proof it received "
        "(`dpop`, `htm`, `htu`; single use). By-reference tokens are resolved; tokens "
        "with a critical scope are checked against the store and audited.",
        PUBLIC,
        200,
        "ValidateResponse",
        request=wire.ValidateRequest,
        errors=(
            Failure("invalid_request", "`token` is missing or empty, or `client_cert` is not PEM"),
        ),
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
        "token are consumed together with the registration. `resource` (or `audience`, "
        "RFC 8707) names the one resource the token is for; it must be among the launch "
        "token's resources when that names any (with exactly one, it is the default). "
        "Over mTLS the token is bound to the client certificate (`cnf.x5t#S256`); with a "
        "`DPoP` header (a proof with `htm` POST and this URI, no `ath`) to the proof's "
        "key (`cnf.jkt`, `token_type: DPoP`).",
        PUBLIC,
        200,
        "RegisterResponse",
        request=wire.RegisterRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_target",
                "`resource` is malformed, not among the launch token's resources, or "
                "missing while the launch token names several",
            ),
            Failure(
                "invalid_request",
                "a field is missing or malformed (`orch_id`/`task_id` not a SPIFFE path "
                "segment, a scope not `action:resource:identifier`, a key or signature not "
                "padded standard base64 of the right length, a nonce not 64 hex characters)",
            ),
            Failure(
                "unauthorized",
                "the launch token is unknown, expired or already consumed; the nonce is "
                "unknown, expired or already used; the signature does not verify; or the "
                "DPoP proof is invalid or replayed",
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
        "delegation chain with a broker-signed record of this hop. Its audience is the "
        "caller's, or narrower (`resource`, RFC 8707). It is bound to the delegate's own "
        "registered certificate or DPoP key, so the delegate must prove possession itself.",
        AGENT_TOKEN,
        200,
        "DelegateResponse",
        request=wire.DelegateRequest,
        commits=True,
        errors=(
            Failure("invalid_target", "`resource` is malformed or would widen the audience"),
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
        "with at most `allowed_scope`. The token is shown once. `resource` (or "
        "`audience`; a string or a list, RFC 8707) names the resources its agents' tokens "
        "may be for.",
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
            Failure("invalid_target", "a `resource` is malformed or there are more than 16"),
        ),
    ),
    Operation(
        "POST",
        "/v1/app/launch-tokens",
        "createLaunchTokenAsApp",
        "launch tokens",
        "Create a launch token (app)",
        "As the operator route, but the scope is held to the calling app's ceiling. "
        "`resource` as on the operator route.",
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
            Failure("invalid_target", "a `resource` is malformed or there are more than 16"),
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
    Operation(
        "POST",
        "/v1/admin/keys/rotate",
        "rotateSigningKey",
        "operators",
        "Rotate the signing key",
        "Makes a new Ed25519 signing key active. Every older key stays in the JWKS and "
        "keeps verifying the tokens it signed until they expire; new tokens carry the new "
        "`kid`. Gated on `admin:revoke:*`: rotating is incident response, like revoking.",
        _admin("admin:revoke:*"),
        200,
        "KeyRotationResponse",
        commits=True,
    ),
    Operation(
        "GET",
        "/v1/revocations",
        "listRevocations",
        "revocation feed",
        "Revocation entries, with a cursor",
        "The unexpired revocation entries (all of them, or those after `cursor`), in `seq` "
        "order, and the `cursor` to ask from next time. Resource servers that verify tokens "
        "offline apply them with the matching rules of the four levels: `token` matches the "
        "`jti`; `agent` the `sub` and every delegation chain naming it; `task` the "
        "`task_id`; `chain` chains naming the target; all but `token` only match tokens "
        "with `iat` at or before `revoked_at`. An entry that is widened comes again with a "
        "new `seq`.",
        ADMIN_OR_APP_TOKEN,
        200,
        "RevocationList",
        parameters=(_CURSOR,),
        errors=_FEED_READER_FAILURES,
    ),
    Operation(
        "GET",
        "/v1/revocations/stream",
        "streamRevocations",
        "revocation feed",
        "Revocation entries as server-sent events",
        "First the entries `GET /v1/revocations` would answer (`cursor`, or the "
        "`Last-Event-ID` header, picks up where a reader left off), then `event: sync` "
        '(`data: {"cursor": N, "server_time": T}`), then each new revocation as this broker '
        "learns it (`event: revocation`, `id:` its `seq`, `data:` the entry), and a "
        "`: keepalive` comment every 2 seconds: a reader that hears nothing for longer than "
        "its staleness bound must fail closed. The stream ends when the reader's token "
        "expires, or when the reader falls behind (it reconnects with its cursor).",
        ADMIN_OR_APP_TOKEN,
        200,
        "RevocationStream",
        parameters=(_CURSOR,),
        errors=_FEED_READER_FAILURES,
        response_media="text/event-stream",
    ),
    Operation(
        "POST",
        "/v1/mutual/initiate",
        "initiateHandshake",
        "agent trust",
        "Start a mutual-authentication handshake",
        "Step 1 of 3. The caller (the initiator) names the responder's SPIFFE ID and a fresh "
        "nonce of its own; the broker checks both agents are registered and in good "
        "standing and answers a broker-signed `offer` ticket (`typ` "
        "`tasklease-mutual-offer+jwt`, valid 30 s) that the initiator hands to the "
        "responder. Nothing is stored: the handshake's state travels in its tickets. "
        "Refusals are audited as `mutual_auth_failed`.",
        PEER_TOKEN,
        200,
        "HandshakeOffer",
        request=MutualInitiateRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "`responder_id` is missing or the nonce is not hex"),
            Failure(
                "unauthorized",
                "the responder is unknown, revoked or the caller itself (reflection), or "
                "the caller is not in good standing",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/mutual/respond",
        "respondToHandshake",
        "agent trust",
        "Answer a handshake, proving the responder's key",
        "Step 2 of 3. The responder presents the offer, a nonce of its own and its Ed25519 "
        "signature (with the key it registered) over the transcript "
        '`"tasklease-mutual-v1\\n" || JSON ["responder", handshake_id, initiator, '
        "responder, initiator_nonce, responder_nonce]`. The broker checks the bearer is the "
        "offer's responder, the signature verifies with that agent's registered key, both "
        "parties are still in good standing and the offer was not answered before, then "
        "answers the initiator's verified identity and scope and an `answer` ticket for "
        "the initiator.",
        PEER_TOKEN,
        200,
        "HandshakeAnswer",
        request=MutualRespondRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a field is missing or malformed"),
            Failure(
                "unauthorized",
                "the offer is not the broker's, expired or already answered; the caller is "
                "not its responder; the signature does not verify with the responder's "
                "registered key; or a party was revoked",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/mutual/complete",
        "completeHandshake",
        "agent trust",
        "Complete a handshake, proving the initiator's key",
        "Step 3 of 3. The initiator presents the answer and its signature over the same "
        'transcript with role `"initiator"`. The broker answers the responder\'s verified '
        "identity and scope and a `receipt` (`typ` `tasklease-mutual-receipt+jwt`, `aud` "
        "the responder) that the initiator forwards; the responder verifies it offline "
        "with the JWKS. Each handshake completes once.",
        PEER_TOKEN,
        200,
        "HandshakeReceipt",
        request=MutualCompleteRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a field is missing or malformed"),
            Failure(
                "unauthorized",
                "the answer is not the broker's, expired or already completed; the caller "
                "is not its initiator; the signature does not verify with the initiator's "
                "registered key; or a party was revoked",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/heartbeat",
        "heartbeat",
        "agent trust",
        "Prove the agent is alive (or declare it done)",
        "The agent signs, with its registered key, "
        '`"tasklease-heartbeat-v1\\n" || JSON [agent_id, token_jti, timestamp, jti, done]` '
        "(`token_jti` is the presented token's `jti`; `timestamp` within the clock skew; "
        "`jti` single-use). The first heartbeat puts the agent under supervision: once its "
        "last heartbeat is older than `heartbeat_interval` x `heartbeat_misses` the broker "
        "revokes it at level `agent` (its tokens and every token delegated from it; audit "
        "event `agent_silent_revoked`). `done: true` ends supervision and releases the "
        "presented token instead.",
        PEER_TOKEN,
        200,
        "HeartbeatResponse",
        request=HeartbeatRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a field is missing or malformed"),
            Failure(
                "unauthorized",
                "the signature does not verify with the registered key, the timestamp is "
                "outside the clock skew, or the proof `jti` was used before",
            ),
            Failure("forbidden", "the agent is revoked, released or was swept"),
        ),
    ),
    Operation(
        "POST",
        "/v1/resume",
        "resumeAgent",
        "agent trust",
        "Resume an agent after a crash",
        "An agent that restarted within its task signs a nonce from `GET /v1/challenge` "
        "with its registered key (exactly as for registration) and gets a fresh token for "
        "the same SPIFFE ID, scope and principal, without a launch token. The token keeps "
        "the registration's `oiat`, so the renewal ceiling still bounds the task, and each "
        "resumption counts as a renewal. A different key is refused and audited.",
        PUBLIC,
        200,
        "RegisterResponse",
        request=ResumeRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a field is missing or malformed"),
            Failure(
                "unauthorized",
                "the nonce is unknown, expired or used, the agent is unknown, or the "
                "signature does not verify with its registered key",
            ),
            Failure("forbidden", "the agent is revoked, released or was swept"),
            Failure("renewal_count_exceeded", "the agent resumed `max_renewals` times"),
            Failure(
                "renewal_ceiling_exceeded",
                "the agent's registration is as old as the renewal ceiling allows",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/discovery/bind",
        "bindEndpoint",
        "agent trust",
        "Publish the agent's endpoint, signed",
        "The agent signs, with its registered key, "
        '`"tasklease-discovery-v1\\n" || JSON [agent_id, endpoint, issued_at]`; the broker '
        "verifies it against the registration and stores it. `issued_at` must be within the "
        "clock skew and newer than the stored binding (no rollback).",
        PEER_TOKEN,
        200,
        "DiscoveryBinding",
        request=DiscoveryBindRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a field is missing, or the endpoint is not a URL"),
            Failure(
                "unauthorized",
                "the signature does not verify with the registered key, or `issued_at` is "
                "stale or not newer than the bound statement",
            ),
            Failure("forbidden", "the agent is revoked, released or was swept"),
        ),
    ),
    Operation(
        "GET",
        "/v1/discovery/{agent_id}",
        "resolveEndpoint",
        "agent trust",
        "Resolve an agent's endpoint with its proof",
        "The endpoint an active agent bound, with the signed statement's `issued_at`, the "
        "signature and the agent's registered public key, so a peer verifies it offline "
        "(preferably with the key from the agent's verified access token, `agent_jwk`). A "
        "substituted endpoint fails that verification.",
        PEER_TOKEN,
        200,
        "ResolvedEndpoint",
        parameters=(
            Parameter(
                "agent_id",
                "path",
                {"type": "string"},
                "The agent's SPIFFE ID (its slashes may stay as they are).",
                True,
            ),
        ),
        errors=(Failure("not_found", "no active agent with an unexpired binding"),),
    ),
)


# --- request bodies: which fields the core requires, and what each one means ------------

# (required, description) per field of every request struct. The structs decode every
# field as optional so that the core can name a missing one; "required" here is the
# contract the core enforces (400 when absent).
REQUEST_FIELDS: Final[Mapping[type[msgspec.Struct], Mapping[str, tuple[bool, str]]]] = {
    wire.ValidateRequest: {
        "token": (True, "The agent access token to check (JWS or `tlr_` by-reference)."),
        "audience": (False, "The calling resource server's identifier (RFC 8707)."),
        "client_cert": (False, "The client certificate (PEM) of the resource server's request."),
        "client_cert_thumbprint": (False, "Its `x5t#S256` instead (RFC 8705 section 3.1)."),
        "dpop": (False, "The DPoP proof (RFC 9449) the resource server received."),
        "htm": (False, "The HTTP method of the resource server's request (for `dpop`)."),
        "htu": (False, "Its URI, scheme host and path (for `dpop`)."),
    },
    wire.TokenRequest: {
        "token": (True, "The token: a compact JWS or a `tlr_` by-reference token."),
        "token_type_hint": (False, "RFC 7009 hint (`access_token`); ignored."),
        "audience": (False, "Introspection only: the caller's resource identifier."),
    },
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
        "resource": (
            False,
            "RFC 8707: the one resource (absolute URI without fragment, or identifier) the "
            "token is for; it then carries it as its only `aud`.",
        ),
        "audience": (False, "Alias of `resource`; if both are sent they must agree."),
    },
    wire.DelegateRequest: {
        "delegate_to": (True, "SPIFFE ID of the registered agent to delegate to."),
        "scope": (True, "Scopes to hand over: a subset of the caller's."),
        "ttl": (False, "Requested lifetime in seconds (default 60), capped by the caller's."),
        "resource": (
            False,
            "RFC 8707: narrow the audience to this resource (allowed when the caller's token "
            "has the broker's default audience or already names it).",
        ),
        "audience": (False, "Alias of `resource`."),
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
        "resource": (
            False,
            "RFC 8707: the resources (a string or a list of at most 16) its agents' tokens "
            "may be for; a registration names one of them. Absent: the default audience.",
        ),
        "audience": (False, "Alias of `resource`."),
    },
    MutualInitiateRequest: {
        "responder_id": (True, "SPIFFE ID of the registered agent to authenticate with."),
        "initiator_nonce": (True, "A fresh random nonce, 32 to 128 lowercase hex characters."),
    },
    MutualRespondRequest: {
        "offer": (True, "The offer ticket the initiator received from step 1."),
        "responder_nonce": (True, "A fresh random nonce, 32 to 128 lowercase hex characters."),
        "signature": (
            True,
            "Ed25519 signature of the responder-role transcript, standard base64 (64 bytes).",
        ),
    },
    MutualCompleteRequest: {
        "answer": (True, "The answer ticket the responder received from step 2."),
        "signature": (
            True,
            "Ed25519 signature of the initiator-role transcript, standard base64 (64 bytes).",
        ),
    },
    HeartbeatRequest: {
        "timestamp": (True, "Unix seconds, within the broker's clock skew."),
        "jti": (True, "A single-use proof id, 16 to 64 characters of `[A-Za-z0-9_-]`."),
        "signature": (True, "Ed25519 signature of the heartbeat statement, standard base64."),
        "done": (False, "`true`: the agent is finished (release; no further supervision)."),
    },
    ResumeRequest: {
        "agent_id": (True, "The agent's SPIFFE ID."),
        "nonce": (True, "The nonce from `GET /v1/challenge`."),
        "signature": (
            True,
            "Ed25519 signature of the hex-decoded nonce bytes by the registered key, "
            "standard base64 (64 bytes).",
        ),
    },
    DiscoveryBindRequest: {
        "endpoint": (True, "An absolute https, http, wss, ws, grpcs or grpc URL."),
        "issued_at": (True, "Unix seconds, within the clock skew; signed with the endpoint."),
        "signature": (True, "Ed25519 signature of the discovery statement, standard base64."),
    },
}


# --- error codes -------------------------------------------------------------------------

ERROR_CODES: Final[Mapping[str, str]] = {
    "invalid_request": "The request is malformed or a required field is missing.",
    "invalid_ttl": "A TTL is outside its allowed range.",
    "invalid_target": "A resource/audience is malformed, not allowed, or would widen the "
    "audience (RFC 8707).",
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
        found.append(Failure(op.auth.refusal, "the token is an admin or app token"))
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


_ACCESS_TOKEN = _str(
    "The access token: a compact EdDSA JWS, or an opaque by-reference token (`tlr_` and 43 "
    "base64url characters) when the JWS would exceed 4 KB; send either the same way."
)
_EXPIRES_IN = _int("Seconds until the token expires.")
_TOKEN_TYPE = {
    "type": "string",
    "enum": ["Bearer", "DPoP"],
    "description": "`DPoP` when the registration carried a DPoP proof (send the token as "
    "`Authorization: DPoP <token>` with a fresh proof); otherwise `Bearer`.",
}
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
            "cnf": {
                "type": "object",
                "description": "Proof-of-possession binding (RFC 7800): `x5t#S256`, the "
                "client certificate's SHA-256 thumbprint (RFC 8705), and/or `jkt`, the "
                "DPoP key's JWK thumbprint (RFC 9449). Absent for bearer tokens.",
                "properties": {"x5t#S256": {"type": "string"}, "jkt": {"type": "string"}},
                "additionalProperties": False,
            },
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
                    "description": "`degraded` when storage is unreachable or the "
                    "revocation index is not confirmed current (see `reason`).",
                },
                "reason": _str("Why the broker is degraded (only when it is)."),
                "revocations_current": {
                    "type": "boolean",
                    "description": "False once the revocation index could not be confirmed "
                    "current within `revocation_staleness_bound` (replicas on PostgreSQL): "
                    "protected requests and validation then fail closed with 503.",
                },
                "version": _str("The broker's version."),
                "uptime": _int("Seconds since the broker started."),
                "db_connected": {"type": "boolean", "description": "Whether storage answered."},
                "audit_events_count": _int("Events in the audit log."),
                "revocation_entries": _int("Entries in the in-memory revocation index."),
                "signing_kid": _str("Key id of the active signing key."),
            },
            optional=("reason",),
        ),
        "MetricsText": {"type": "string", "description": "Prometheus text format."},
        "JWK": jwk,
        "JWKS": _obj({"keys": {"type": "array", "items": _ref("JWK")}}),
        "RevocationEntry": _obj(
            {
                "level": {
                    "type": "string",
                    "enum": ["token", "agent", "task", "chain"],
                    "description": "The revocation level.",
                },
                "target": _str("A `jti`, an agent SPIFFE ID, a `task_id` or a chain root."),
                "revoked_at": _int("Unix seconds; matches tokens issued at or before it."),
                "expires_at": {
                    "type": "number",
                    "description": "Unix seconds after which nothing it matches is valid.",
                },
                "seq": _int("Position in the feed; greater means later."),
            }
        ),
        "RevocationList": _obj(
            {
                "revocations": {"type": "array", "items": _ref("RevocationEntry")},
                "cursor": _int("Pass as `cursor` to get only later entries."),
                "server_time": {"type": "number", "description": "The broker's Unix time."},
            }
        ),
        "RevocationStream": {
            "type": "string",
            "description": "Server-sent events: `revocation` (a `RevocationEntry`), `sync` "
            "and `: keepalive` comments.",
        },
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
        "TokenRevocationResponse": {
            "type": "object",
            "description": "Always empty (RFC 7009 section 2.2).",
            "additionalProperties": False,
        },
        "IntrospectionResponse": {
            "oneOf": [
                {
                    "type": "object",
                    "description": "An active token: its claims (see `TokenClaims`), with "
                    "`scope` as a space-separated string (RFC 7662 section 2.2).",
                    "properties": {
                        "active": {"type": "boolean", "const": True},
                        "scope": _str("Granted scopes, space-separated."),
                        "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
                    },
                    "required": ["active", "scope", "token_type"],
                },
                _obj({"active": {"type": "boolean", "const": False}}),
            ]
        },
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
        "Peer": _obj(
            {
                "agent_id": _str("The peer's SPIFFE ID, verified by the broker."),
                "scope": _strings("The peer's scope, from its validated token."),
            }
        ),
        "HandshakeOffer": _obj(
            {
                "handshake_id": _str("The handshake's id (32 hex characters)."),
                "offer": _str("Broker-signed offer ticket, for the responder."),
                "expires_in": _int("Seconds the handshake stays open (30)."),
            }
        ),
        "HandshakeAnswer": _obj(
            {
                "handshake_id": _str("The handshake's id."),
                "answer": _str("Broker-signed answer ticket, for the initiator."),
                "initiator": _ref("Peer"),
            }
        ),
        "HandshakeReceipt": _obj(
            {
                "handshake_id": _str("The handshake's id."),
                "receipt": _str("Broker-signed receipt for the responder (`aud`)."),
                "responder": _ref("Peer"),
            }
        ),
        "HeartbeatResponse": _obj(
            {
                "status": {"type": "string", "enum": ["alive", "released"]},
                "interval": {"type": "number", "description": "Heartbeat interval, seconds."},
                "misses": _int("Misses tolerated before the agent is revoked."),
                "deadline": {
                    "type": "number",
                    "description": "Unix time after which a silent agent is revoked.",
                },
            }
        ),
        "DiscoveryBinding": _obj(
            {
                "agent_id": _str("The agent's SPIFFE ID."),
                "endpoint": _str("The bound endpoint."),
                "issued_at": _int("The signed statement's time."),
            }
        ),
        "ResolvedEndpoint": _obj(
            {
                "agent_id": _str("The agent's SPIFFE ID."),
                "endpoint": _str("The bound endpoint."),
                "issued_at": _int("The signed statement's time."),
                "signature": _str("Ed25519 signature of the statement, standard base64."),
                "public_key": _str("The agent's registered Ed25519 key, standard base64."),
            }
        ),
        "KeyRotationResponse": _obj(
            {
                "kid": _str("Key id of the new active signing key."),
                "previous_kid": _str("Key id of the key that signed until now."),
                "kids": _strings("Every key id the broker verifies, the active one first."),
            }
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
            "denial_id": _str(
                "On refusals the broker audited (every 401 and 403 it raises): `den_` and 16 "
                "hex characters, also at the end of the audit event's detail "
                "(`denial=<id>`), which holds the precise reason."
            ),
        },
        optional=("hint", "denial_id"),
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
