"""Agents that trust each other, on the wire: the mutual-authentication handshake,
heartbeats, resumption after a crash and signed discovery bindings (docs/agents.md)."""

from __future__ import annotations

from typing import Annotated

from tasklease.http.wire._base import (
    PEER_TOKEN,
    PUBLIC,
    Failure,
    Operation,
    Param,
    Request,
    Response,
    doc,
    required,
)
from tasklease.http.wire._tokens import RegisterResponse

__all__ = [
    "OPERATIONS",
    "TAGS",
    "DiscoveryBindRequest",
    "DiscoveryBinding",
    "HandshakeAnswer",
    "HandshakeOffer",
    "HandshakeReceipt",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "MutualCompleteRequest",
    "MutualInitiateRequest",
    "MutualRespondRequest",
    "Peer",
    "ResolvedEndpoint",
    "ResumeRequest",
    "WorkloadIdentityResponse",
]

TAGS = {
    "agent trust": "Agents that trust each other: mutual authentication, heartbeats that "
    "revoke silent agents, crash resumption, signed discovery bindings and WIMSE workload "
    "identity tokens.",
}

_Text = str | None
_NONCE = "A fresh random nonce, 32 to 128 lowercase hex characters."


# --- requests ------------------------------------------------------------------------------


class MutualInitiateRequest(Request):
    responder_id: Annotated[
        _Text, required("SPIFFE ID of the registered agent to authenticate with.")
    ] = None
    initiator_nonce: Annotated[_Text, required(_NONCE)] = None


class MutualRespondRequest(Request):
    offer: Annotated[_Text, required("The offer ticket the initiator received from step 1.")] = None
    responder_nonce: Annotated[_Text, required(_NONCE)] = None
    signature: Annotated[
        _Text,
        required("Ed25519 signature of the responder-role transcript, standard base64 (64 bytes)."),
    ] = None


class MutualCompleteRequest(Request):
    answer: Annotated[_Text, required("The answer ticket the responder received from step 2.")] = (
        None
    )
    signature: Annotated[
        _Text,
        required("Ed25519 signature of the initiator-role transcript, standard base64 (64 bytes)."),
    ] = None


class HeartbeatRequest(Request):
    timestamp: Annotated[int | None, required("Unix seconds, within the broker's clock skew.")] = (
        None
    )
    jti: Annotated[
        _Text, required("A single-use proof id, 16 to 64 characters of `[A-Za-z0-9_-]`.")
    ] = None
    signature: Annotated[
        _Text, required("Ed25519 signature of the heartbeat statement, standard base64.")
    ] = None
    done: Annotated[
        bool | None, doc("`true`: the agent is finished (release; no further supervision).")
    ] = None


class ResumeRequest(Request):
    agent_id: Annotated[_Text, required("The agent's SPIFFE ID.")] = None
    nonce: Annotated[_Text, required("The nonce from `GET /v1/challenge`.")] = None
    signature: Annotated[
        _Text,
        required(
            "Ed25519 signature of the hex-decoded nonce bytes by the registered key, "
            "standard base64 (64 bytes)."
        ),
    ] = None


class DiscoveryBindRequest(Request):
    endpoint: Annotated[
        _Text,
        required(
            "An absolute https, http, wss, ws, grpcs or grpc URL, without a user name or password."
        ),
    ] = None
    issued_at: Annotated[
        int | None, required("Unix seconds, within the clock skew; signed with the endpoint.")
    ] = None
    signature: Annotated[
        _Text, required("Ed25519 signature of the discovery statement, standard base64.")
    ] = None


# --- responses -----------------------------------------------------------------------------


class Peer(Response):
    agent_id: Annotated[str, doc("The peer's SPIFFE ID, verified by the broker.")]
    scope: Annotated[list[str], doc("The peer's scope, from its validated token.")]


class HandshakeOffer(Response):
    handshake_id: Annotated[str, doc("The handshake's id (32 hex characters).")]
    offer: Annotated[str, doc("Broker-signed offer ticket, for the responder.")]
    expires_in: Annotated[int, doc("Seconds the handshake stays open (30).")]


class HandshakeAnswer(Response):
    handshake_id: Annotated[str, doc("The handshake's id.")]
    answer: Annotated[str, doc("Broker-signed answer ticket, for the initiator.")]
    initiator: Peer


class HandshakeReceipt(Response):
    handshake_id: Annotated[str, doc("The handshake's id.")]
    receipt: Annotated[str, doc("Broker-signed receipt for the responder (`aud`).")]
    responder: Peer


class HeartbeatResponse(Response):
    status: Annotated[str, doc("`released` after `done: true`.", enum=["alive", "released"])]
    interval: Annotated[float, doc("Heartbeat interval, seconds.")]
    misses: Annotated[int, doc("Misses tolerated before the agent is revoked.")]
    deadline: Annotated[float, doc("Unix time after which a silent agent is revoked.")]


class DiscoveryBinding(Response):
    agent_id: Annotated[str, doc("The agent's SPIFFE ID.")]
    endpoint: Annotated[str, doc("The bound endpoint.")]
    issued_at: Annotated[int, doc("The signed statement's time.")]


class ResolvedEndpoint(DiscoveryBinding):
    signature: Annotated[str, doc("Ed25519 signature of the statement, standard base64.")]
    public_key: Annotated[str, doc("The agent's registered Ed25519 key, standard base64.")]


class WorkloadIdentityResponse(Response):
    workload_identity_token: Annotated[
        str,
        doc(
            "The WIT (`typ: wit+jwt`, signed with the broker's token key): `iss`, `sub` "
            "(the agent's SPIFFE ID), `iat`, `exp`, `jti`, `cnf.jwk` (its registered "
            "Ed25519 key, `alg: EdDSA`). Send it in the `Workload-Identity-Token` header "
            "with a Workload Proof Token signed by that key; never as a bearer token."
        ),
    ]
    expires_in: Annotated[int, doc("Seconds until it expires: never after the token's `exp`.")]


# --- operations ----------------------------------------------------------------------------

_MALFORMED = Failure("invalid_request", "a field is missing or malformed")
_GONE = Failure("forbidden", "the agent is revoked, released or was swept")

OPERATIONS = (
    Operation(
        "POST /v1/mutual/initiate",
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
        HandshakeOffer,
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
        "POST /v1/mutual/respond",
        "respondToHandshake",
        "agent trust",
        "Answer a handshake, proving the responder's key",
        "Step 2 of 3. The responder presents the offer, a nonce of its own and its Ed25519 "
        "signature (with the key it registered) over the transcript "
        '`"tasklease-mutual-v1\\n" || JSON ["responder", handshake_id, initiator, '
        "responder, initiator_nonce, responder_nonce]`. The broker checks the bearer is the "
        "offer's responder, the signature verifies with that agent's registered key, both "
        "parties are still in good standing, the token the initiator presented is still "
        "valid (unexpired, not revoked) and the offer was not answered before, then "
        "answers the initiator's verified identity and scope and an `answer` ticket for "
        "the initiator.",
        PEER_TOKEN,
        HandshakeAnswer,
        request=MutualRespondRequest,
        commits=True,
        errors=(
            _MALFORMED,
            Failure(
                "unauthorized",
                "the offer is not the broker's, expired or already answered; the caller is "
                "not its responder; the signature does not verify with the responder's "
                "registered key; or a party, or the token the initiator presented, was "
                "revoked or expired",
            ),
        ),
    ),
    Operation(
        "POST /v1/mutual/complete",
        "completeHandshake",
        "agent trust",
        "Complete a handshake, proving the initiator's key",
        "Step 3 of 3. The initiator presents the answer and its signature over the same "
        'transcript with role `"initiator"`. The tokens both parties presented at their '
        "earlier steps, whose scopes it vouches for, must still be valid (unexpired, not "
        "revoked). The broker answers the responder's verified "
        "identity and scope and a `receipt` (`typ` `tasklease-mutual-receipt+jwt`, `aud` "
        "the responder; it lives 30 s, and never past either token's `exp`) that the "
        "initiator forwards; the responder verifies it offline with the JWKS. Each "
        "handshake completes once.",
        PEER_TOKEN,
        HandshakeReceipt,
        request=MutualCompleteRequest,
        commits=True,
        errors=(
            _MALFORMED,
            Failure(
                "unauthorized",
                "the answer is not the broker's, expired or already completed; the caller "
                "is not its initiator; the signature does not verify with the initiator's "
                "registered key; or a party, or a token presented at an earlier step, was "
                "revoked or expired",
            ),
        ),
    ),
    Operation(
        "POST /v1/heartbeat",
        "heartbeat",
        "agent trust",
        "Prove the agent is alive (or declare it done)",
        "The agent signs, with its registered key, "
        '`"tasklease-heartbeat-v1\\n" || JSON [agent_id, token_jti, timestamp, jti, done]` '
        "(`token_jti` names the presented token: its `jti`, or for a by-reference `tlr_` "
        "token, whose `jti` its holder cannot read, the token's SHA-256 in lowercase hex; "
        "`timestamp` within the clock skew; "
        "`jti` single-use). The first heartbeat puts the agent under supervision: once its "
        "last heartbeat is older than `heartbeat_interval` x `heartbeat_misses` the broker "
        "revokes it at level `agent` (its tokens and every token delegated from it; audit "
        "event `agent_silent_revoked`). `done: true` ends supervision and releases the "
        "presented token instead.",
        PEER_TOKEN,
        HeartbeatResponse,
        request=HeartbeatRequest,
        commits=True,
        errors=(
            _MALFORMED,
            Failure(
                "unauthorized",
                "the signature does not verify with the registered key, the timestamp is "
                "outside the clock skew, or the proof `jti` was used before",
            ),
            _GONE,
        ),
    ),
    Operation(
        "POST /v1/resume",
        "resumeAgent",
        "agent trust",
        "Resume an agent after a crash",
        "An agent that restarted within its task signs a nonce from `GET /v1/challenge` "
        "with its registered key (exactly as for registration) and gets a fresh token for "
        "the same SPIFFE ID, scope and principal, without a launch token. The token keeps "
        "the registration's `oiat`, so the renewal ceiling still bounds the task, and each "
        "resumption counts as a renewal. A different key is refused and audited, and so "
        "is an agent whose launch token was created with `allow_resume: false`.",
        PUBLIC,
        RegisterResponse,
        request=ResumeRequest,
        commits=True,
        errors=(
            _MALFORMED,
            Failure(
                "unauthorized",
                "the nonce is unknown, expired or already presented (by any registration "
                "or resumption, accepted or refused), the agent is unknown, or the "
                "signature does not verify with its registered key",
            ),
            Failure(
                "forbidden",
                "the agent is revoked, released (a heartbeat with `done`) or was swept, or "
                "its launch token switched resumption off (`allow_resume: false`)",
            ),
            Failure("renewal_count_exceeded", "the agent resumed `max_renewals` times"),
            Failure(
                "renewal_ceiling_exceeded",
                "the agent's registration is as old as the renewal ceiling allows",
            ),
        ),
    ),
    Operation(
        "POST /v1/discovery/bind",
        "bindEndpoint",
        "agent trust",
        "Publish the agent's endpoint, signed",
        "The agent signs, with its registered key, "
        '`"tasklease-discovery-v1\\n" || JSON [agent_id, endpoint, issued_at]`; the broker '
        "verifies it against the registration and stores it. `issued_at` must be within the "
        "clock skew and newer than the stored binding (no rollback).",
        PEER_TOKEN,
        DiscoveryBinding,
        request=DiscoveryBindRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "a field is missing, or the endpoint is not a URL or holds a user name or password",
            ),
            Failure(
                "unauthorized",
                "the signature does not verify with the registered key, or `issued_at` is "
                "stale or not newer than the bound statement",
            ),
            _GONE,
        ),
    ),
    Operation(
        "GET /v1/discovery/{agent_id}",
        "resolveEndpoint",
        "agent trust",
        "Resolve an agent's endpoint with its proof",
        "The endpoint an active agent bound, with the signed statement's `issued_at`, the "
        "signature and the agent's registered public key, so a peer verifies it offline "
        "(preferably with the key from the agent's verified access token, `agent_jwk`). A "
        "substituted endpoint fails that verification.",
        PEER_TOKEN,
        ResolvedEndpoint,
        parameters=(
            Param(
                "agent_id",
                "path",
                {"type": "string"},
                "The agent's SPIFFE ID (its slashes may stay as they are).",
                True,
            ),
        ),
        errors=(Failure("not_found", "no active agent with an unexpired binding"),),
    ),
    Operation(
        "POST /v1/workload/identity",
        "issueWorkloadIdentity",
        "agent trust",
        "Get a Workload Identity Token (WIMSE)",
        "A WIMSE Workload Identity Token (draft-ietf-wimse-workload-creds-02) for the agent "
        "holding the presented token: the broker states that this SPIFFE ID holds the key "
        "it registered. With it the agent proves itself to peers on each request with a "
        "Workload Proof Token (draft-ietf-wimse-wpt-02: `aud` the request's target URI, "
        "`wth` the WIT's hash, `ath` its access token's) in the `Workload-Proof-Token` "
        "header, which peers verify offline (`tasklease.rules.wimse`). The WIT carries no "
        "scope and lives no longer than the presented token. Audited "
        "(`workload_identity_issued`). Asked again with the same token, the broker answers "
        "the WIT it issued for it, without a new event: one token, one WIT, until the "
        "broker signs with another key.",
        PEER_TOKEN,
        WorkloadIdentityResponse,
    ),
)
