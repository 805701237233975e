"""Agent credentials on the wire: registration, the token operations, and token holders'
revocation (RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from tasklease.core.tokens import DelegationRecord as ChainRecord
from tasklease.http.wire._base import (
    ADMIN_OR_APP_TOKEN,
    AGENT_TOKEN,
    ANY_TOKEN,
    PEER_TOKEN,
    PUBLIC,
    AccessToken,
    ExpiresIn,
    Failure,
    OneOf,
    Operation,
    Request,
    Response,
    TokenType,
    constant,
    doc,
    multiline,
    required,
    shaped_as,
)
from tasklease.http.wire._grants import DETAILS_FAILURE, DETAILS_IN, DETAILS_OUT

__all__ = [
    "OPERATIONS",
    "TAGS",
    "ActiveToken",
    "AttestationEvidence",
    "ChallengeResponse",
    "Confirmation",
    "DelegateRequest",
    "DelegateResponse",
    "DelegationRecord",
    "InactiveToken",
    "InvalidToken",
    "RegisterRequest",
    "RegisterResponse",
    "RenewResponse",
    "TokenClaims",
    "TokenRequest",
    "TokenRevocationResponse",
    "ValidToken",
    "ValidateRequest",
    "delegation_record",
]

TAGS = {
    "identity": "Agent identity: a nonce, then registration with a launch token.",
    "tokens": "Agent tokens: validation, renewal, release and delegation.",
    "token holders": "RFC 7009 revocation by token holders and RFC 7662 introspection.",
}

_Text = str | None
_Texts = list[str] | None


# --- requests ------------------------------------------------------------------------------


class AttestationEvidence(Request):
    """Workload evidence for registration (docs/attestation.md); never stored or logged."""

    type: Annotated[_Text, required("The attestor type: `k8s_sat`, `jwt_svid` or `oidc`.")] = None
    evidence: Annotated[
        _Text,
        required(
            "The evidence: a Kubernetes projected service-account token, a JWT-SVID or an "
            "OIDC token whose audience is this broker's issuer. Single use."
        ),
    ] = None
    attestor: Annotated[
        _Text,
        doc(
            "The configured attestor to verify it (at most 63 characters, or 400); absent: "
            "the one of `type` trusting its issuer."
        ),
    ] = None


class RegisterRequest(Request):
    launch_token: Annotated[
        _Text,
        required("The launch token (64 lowercase hex characters); optional with `attestation`."),
    ] = None
    nonce: Annotated[_Text, required("The nonce from `GET /v1/challenge`.")] = None
    public_key: Annotated[
        _Text, required("The agent's Ed25519 public key, standard base64 (32 bytes).")
    ] = None
    signature: Annotated[
        _Text,
        required("Ed25519 signature of the hex-decoded nonce bytes, standard base64 (64 bytes)."),
    ] = None
    orch_id: Annotated[_Text, required("Orchestrator id; becomes a segment of the SPIFFE ID.")] = (
        None
    )
    task_id: Annotated[_Text, required("Task id; becomes a segment of the SPIFFE ID.")] = None
    requested_scope: Annotated[
        _Texts,
        required(
            "Scopes (`action:resource:identifier`) within the launch token's allowed scope; "
            "may be absent with `authorization_details`."
        ),
    ] = None
    authorization_details: Annotated[list[dict[str, Any]] | None, DETAILS_IN] = None
    resource: Annotated[
        _Text,
        doc(
            "RFC 8707: the one resource (an absolute URI without fragment) the token is "
            "for; it then carries it as its only `aud`. Without it, the launch token's one "
            "resource, or the broker's first configured audience."
        ),
    ] = None
    audience: Annotated[
        _Text,
        doc(
            "Alias of `resource` that may also be a logical name (RFC 8693 section 2.1); "
            "if both are sent they must agree."
        ),
    ] = None
    attestation: Annotated[
        AttestationEvidence | None,
        doc(
            "Workload evidence in place of the launch token, or beside it (then both "
            "ceilings bound the registration). The token then carries an `attest` claim."
        ),
    ] = None
    declared: Annotated[
        dict[str, str] | None,
        doc(
            "What the agent says of itself: `model`, `runtime`, `sdk` (short strings). "
            "Carried in `attest.declared`, apart from attested facts; never trusted."
        ),
    ] = None


class ValidateRequest(Request):
    token: Annotated[
        _Text,
        required(
            "The agent access token to check (JWS or `tlr_` by-reference), or an offline "
            "chain (`tla1~...`, with its last delegate's proof in `dpop`)."
        ),
    ] = None
    audience: Annotated[_Text, doc("The calling resource server's identifier (RFC 8707).")] = None
    client_cert: Annotated[
        _Text, multiline("The client certificate (PEM) of the resource server's request.")
    ] = None
    client_cert_thumbprint: Annotated[
        _Text, doc("Its `x5t#S256` instead (RFC 8705 section 3.1).")
    ] = None
    dpop: Annotated[_Text, doc("The DPoP proof (RFC 9449) the resource server received.")] = None
    htm: Annotated[_Text, doc("The HTTP method of the resource server's request (for `dpop`).")] = (
        None
    )
    htu: Annotated[_Text, doc("Its URI, scheme host and path (for `dpop`).")] = None


class DelegateRequest(Request):
    delegate_to: Annotated[_Text, required("SPIFFE ID of the registered agent to delegate to.")] = (
        None
    )
    scope: Annotated[
        _Texts,
        required(
            "Scopes to hand over: a subset of the caller's; may be absent with "
            "`authorization_details`."
        ),
    ] = None
    authorization_details: Annotated[list[dict[str, Any]] | None, DETAILS_IN] = None
    ttl: Annotated[
        int | None,
        doc("Requested lifetime in seconds (default 60), capped by the caller's."),
    ] = None
    resource: Annotated[
        _Text,
        doc(
            "RFC 8707: narrow the audience to this resource, an absolute URI (allowed when "
            "the caller's token has the broker's default audience or already names it)."
        ),
    ] = None
    audience: Annotated[_Text, doc("Alias of `resource`; may be a logical name.")] = None


class TokenRequest(Request):
    """RFC 7009 revocation and RFC 7662 introspection (JSON form; forms also accepted)."""

    token: Annotated[
        _Text, required("The token: a compact JWS or a `tlr_` by-reference token.")
    ] = None
    token_type_hint: Annotated[_Text, doc("RFC 7009 hint (`access_token`); ignored.")] = None
    audience: Annotated[_Text, doc("Introspection only: the caller's resource identifier.")] = None


# --- responses -----------------------------------------------------------------------------


class ChallengeResponse(Response):
    nonce: Annotated[
        str, doc("64 lowercase hex characters; sign their bytes.", pattern="^[0-9a-f]{64}$")
    ]
    expires_in: Annotated[int, doc("Seconds the nonce stays usable.")]


class RegisterResponse(Response):
    agent_id: Annotated[str, doc("The agent's SPIFFE ID.")]
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType
    authorization_details: Annotated[list[dict[str, Any]], DETAILS_OUT] | UnsetType = UNSET


class RenewResponse(Response):
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType


class DelegationRecord(Response):
    agent: Annotated[str, doc("SPIFFE ID of the delegating agent.")]
    scope: Annotated[list[str], doc("The delegator's scope at the time.")]
    delegated_at: Annotated[str, doc("When the hop was made (RFC 3339).", format="date-time")]
    signature: Annotated[str, doc("The broker's Ed25519 signature of the record (hex).")]


def delegation_record(record: ChainRecord) -> DelegationRecord:
    return DelegationRecord(
        agent=record.agent,
        scope=list(record.scope),
        delegated_at=record.delegated_at,
        signature=record.signature,
    )


class DelegateResponse(Response):
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType
    delegation_chain: Annotated[
        list[DelegationRecord], doc("The new token's chain, root first; the last is this hop.")
    ]
    authorization_details: Annotated[list[dict[str, Any]], DETAILS_OUT] | UnsetType = UNSET


class Confirmation(Response):
    """A token's proof-of-possession binding (RFC 7800 `cnf`)."""

    x5t_s256: (
        Annotated[str, doc("The client certificate's SHA-256 thumbprint (RFC 8705).")] | UnsetType
    ) = msgspec.field(default=UNSET, name="x5t#S256")
    jkt: Annotated[str, doc("The DPoP key's JWK thumbprint (RFC 9449).")] | UnsetType = UNSET


class TokenClaims(Response, forbid_unknown_fields=False):
    """The token's claims (RFC 7519, RFC 9068) in AgentWrit's validation shape: as
    signed, except `scope`, an array here (the token carries RFC 9068's space-delimited
    string), and `sub`, the agent holding the token (a delegated token signs RFC 8693's
    subject as `sub` and its holder as the current actor, `act.sub`). Optional claims are
    present only on the tokens they concern."""

    iss: Annotated[str, doc("Issuer.")]
    sub: Annotated[str, doc("The SPIFFE ID of the agent holding the token.")]
    aud: Annotated[list[str], doc("Audiences.")]
    exp: Annotated[int, doc("Expiry, seconds since the epoch.")]
    nbf: Annotated[int, doc("Not before, seconds since the epoch.")]
    iat: Annotated[int, doc("Issued at, seconds since the epoch.")]
    jti: Annotated[str, doc("Token id (32 hex characters).")]
    scope: Annotated[list[str], doc("Granted scopes (in the token: one space-separated string).")]
    client_id: Annotated[str, doc("`admin` or the client id of the app that launched the agent.")]
    task_id: Annotated[str, doc("Task id.")] | UnsetType = UNSET
    orch_id: Annotated[str, doc("Orchestrator id.")] | UnsetType = UNSET
    delegation_chain: (
        Annotated[list[DelegationRecord], doc("One record per delegation hop, root first.")]
        | UnsetType
    ) = UNSET
    chain_hash: Annotated[str, doc("SHA-256 (hex) of the delegation chain.")] | UnsetType = UNSET
    oiat: Annotated[int, doc("Original registration time, bounds renewal.")] | UnsetType = UNSET
    rnc: Annotated[int, doc("How many renewals led to this token.")] | UnsetType = UNSET
    principal: Annotated[str, doc("The human the agent works for, `kind:value`.")] | UnsetType = (
        UNSET
    )
    act: (
        Annotated[
            dict[str, Any],
            doc(
                "RFC 8693 actor chain of a delegated token: the current actor outermost, "
                "the principal innermost."
            ),
        ]
        | UnsetType
    ) = UNSET
    agent_jwk: (
        Annotated[
            dict[str, str], doc("The agent's registered Ed25519 public key as a JWK (RFC 8037).")
        ]
        | UnsetType
    ) = UNSET
    cnf: (
        Annotated[
            Confirmation,
            doc(
                "Proof-of-possession binding: `x5t#S256` (a client certificate), and/or "
                "`jkt` (a DPoP key). Absent for bearer tokens."
            ),
        ]
        | UnsetType
    ) = UNSET
    authorization_details: (
        Annotated[
            list[dict[str, Any]],
            doc("Structured grants besides `scope` (RFC 9396 section 9.1; docs/grants.md)."),
        ]
        | UnsetType
    ) = UNSET


class ValidToken(Response):
    valid: Annotated[bool, constant(True)]
    claims: Annotated[
        dict[str, Any], shaped_as(TokenClaims, "The token's claims, in AgentWrit's shape.")
    ]


class InvalidToken(Response):
    """The one answer for every token that fails a check; the reason is logged inward."""

    valid: Annotated[bool, constant(False)] = False
    error: Annotated[str, constant("token is invalid or expired")] = "token is invalid or expired"


class TokenRevocationResponse(Response):
    """Always empty (RFC 7009 section 2.2)."""


class ActiveToken(Response, forbid_unknown_fields=False):
    """An active token: its claims (see `TokenClaims`), with `scope` as a space-separated
    string (RFC 7662 section 2.2)."""

    active: Annotated[bool, constant(True)]
    scope: Annotated[str, doc("Granted scopes, space-separated.")]
    token_type: Annotated[str, doc("How to present the token.", enum=["Bearer", "DPoP"])]


class InactiveToken(Response):
    """Anything but an active token: unknown, malformed, expired, revoked, or not the
    caller's to see."""

    active: Annotated[bool, constant(False)] = False


# --- operations ----------------------------------------------------------------------------

_REFUSED_FORM = "`token` is missing, or a form parameter is repeated"

OPERATIONS = (
    Operation(
        "GET /v1/challenge",
        "getChallenge",
        "identity",
        "Get a registration nonce",
        "A fresh single-use nonce (64 lowercase hex characters). The agent signs the "
        "nonce's bytes (hex-decoded) with its Ed25519 key and presents the signature to "
        "`POST /v1/register` (or `POST /v1/resume`) before the nonce expires. With "
        '`dpop_nonce = "required"` the answer carries the current DPoP nonce in '
        "`DPoP-Nonce` (RFC 9449 section 8.2), for the proof of the request that follows.",
        PUBLIC,
        ChallengeResponse,
    ),
    Operation(
        "POST /v1/register",
        "registerAgent",
        "identity",
        "Register an agent instance",
        "Proves possession of an Ed25519 key by signing a nonce from `GET /v1/challenge`, "
        "redeems a launch token, and issues the agent's SPIFFE ID and first access token. "
        "Every field is checked before the launch token is consumed, with the registration. "
        "The nonce is spent by the request that presents it, registered or refused (a "
        "malformed one only when its signature verifies; not by a `use_dpop_nonce` or 503 "
        "answer, which asks for the same request again): a signature over it proves nothing "
        "twice, here or at `POST /v1/resume`. `resource` (or `audience`, "
        "RFC 8707) names the one resource the token is for; it must be among the launch "
        "token's resources when that names any (with exactly one, it is the default). "
        "Over mTLS the token is bound to the client certificate (`cnf.x5t#S256`); with a "
        "`DPoP` header (a proof with `htm` POST and this URI, no `ath`) to the proof's "
        "key (`cnf.jkt`, `token_type: DPoP`). With `attestation` (workload evidence: a "
        "Kubernetes service-account token, a JWT-SVID, an OIDC token) the agent registers "
        "without a launch token, within the ceiling its attestor's policy grants; the "
        "token carries the attested facts in its `attest` claim.",
        PUBLIC,
        RegisterResponse,
        request=RegisterRequest,
        commits=True,
        errors=(
            DETAILS_FAILURE,
            Failure(
                "invalid_target",
                "`resource` is malformed, not among the launch token's resources, "
                "missing while the launch token names several, or the broker's default "
                "audience while the launch token names resources",
            ),
            Failure(
                "invalid_request",
                "a field is missing or malformed (`orch_id`/`task_id` not a SPIFFE path "
                "segment, or holding a token or a secret, a scope not "
                "`action:resource:identifier`, a key or signature not padded standard base64 "
                "of the right length, a nonce not 64 hex characters); or `holder_binding` is "
                "`required` and the registration binds to no key (no `DPoP` proof, no client "
                "certificate; the launch token not spent)",
            ),
            Failure(
                "invalid_dpop_proof",
                "the `DPoP` proof is invalid or replayed (RFC 9449 section 5)",
            ),
            Failure(
                "use_dpop_nonce",
                "`dpop_nonce` is `required` and the proof lacks a current nonce: retry with "
                "the `DPoP-Nonce` header's value (RFC 9449 section 8)",
            ),
            Failure(
                "unauthorized",
                "the launch token is unknown, expired or already consumed, or bound to "
                "another agent key (the launch token not spent); the nonce is "
                "unknown, expired or already presented; the signature does not verify; or the "
                "attestation is refused (`detail` `attestation refused`, the reason in the "
                "audit log under `denial_id`)",
            ),
            Failure(
                "scope_violation",
                "`requested_scope` is not covered by the launch token's `allowed_scope`",
            ),
        ),
    ),
    Operation(
        "POST /v1/token/validate",
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
        "with a critical scope are checked against the store and audited. An offline "
        "chain (docs/broker-optional.md) is verified by the rules every verifier applies, "
        "each of its elements against the revocation index, and is valid only with its "
        "last delegate's DPoP proof; the claims answered are its leaf's, with `offline` "
        "(the root's `jti`, the number of blocks, every holder).",
        PUBLIC,
        OneOf("ValidateResponse", (ValidToken, InvalidToken)),
        request=ValidateRequest,
        errors=(
            Failure("invalid_request", "`token` is missing or empty, or `client_cert` is not PEM"),
        ),
    ),
    Operation(
        "POST /v1/token/renew",
        "renewToken",
        "tokens",
        "Renew an agent token",
        "Issues a successor with the same scope and lifetime and revokes the presented "
        "token, atomically: of two concurrent renewals exactly one succeeds. The "
        "successor never outlives the renewal ceiling counted from registration.",
        AGENT_TOKEN,
        RenewResponse,
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
        "POST /v1/token/release",
        "releaseToken",
        "tokens",
        "Give a token up",
        "Revokes the presented token (revocation level `token`). Idempotent.",
        ANY_TOKEN,
        None,
        status=204,
        commits=True,
    ),
    Operation(
        "POST /v1/delegate",
        "delegateToken",
        "tokens",
        "Delegate to another agent",
        "Issues a token for another registered, active agent holding a subset of the "
        "caller's scope, living no longer than the caller's token, and carrying the "
        "delegation chain with a broker-signed record of this hop. Its audience is the "
        "caller's, or narrower (`resource`, RFC 8707). It is bound to the delegate's own "
        "registered certificate or DPoP key, so the delegate must prove possession itself.",
        AGENT_TOKEN,
        DelegateResponse,
        request=DelegateRequest,
        commits=True,
        errors=(
            DETAILS_FAILURE,
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
        "POST /v1/token/revoke",
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
        PEER_TOKEN,
        TokenRevocationResponse,
        request=TokenRequest,
        commits=True,
        errors=(
            Failure("invalid_request", _REFUSED_FORM),
            Failure(
                "forbidden",
                "`token` is a valid token of another agent (`error`: `unauthorized_client`)",
            ),
        ),
    ),
    Operation(
        "POST /v1/introspect",
        "introspectToken",
        "token holders",
        "Introspect a token (RFC 7662)",
        "For resource servers (authenticated with an admin or app token, so tokens cannot "
        "be scanned anonymously; an app sees only its own agents' tokens). "
        "Form or JSON body with `token`, and optionally `audience` (the caller's resource "
        "identifier: a token for another resource is then inactive). Answers the token's "
        "claims with `active: true` (`scope` as a space-separated string, `token_type` "
        "`Bearer` or `DPoP`, `cnf` for the caller to check against its own connection) "
        'or exactly `{"active": false}` for anything else, including another app\'s '
        "agents' tokens when the caller is an app. Critical scopes are checked against "
        "the store (high assurance) and audited.",
        ADMIN_OR_APP_TOKEN,
        OneOf("IntrospectionResponse", (ActiveToken, InactiveToken)),
        request=TokenRequest,
        errors=(
            Failure("invalid_request", _REFUSED_FORM),
            Failure("invalid_target", "`audience` is malformed"),
            Failure(
                "unauthorized",
                "the caller's token is an agent token, or an operator's without "
                '`admin:revoke:*` (an auditor\'s): 401 with `error="insufficient_scope"` '
                "(RFC 7662 section 2.3)",
            ),
        ),
    ),
)
