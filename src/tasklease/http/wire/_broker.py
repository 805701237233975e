"""The broker's own resources on the wire: health, metrics, verification keys, this API's
description, and the revocation feed for resource servers that verify offline."""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, UnsetType

from tasklease.core.records import RevocationRecord
from tasklease.http.wire._base import (
    ADMIN_OR_APP_TOKEN,
    PUBLIC,
    REF,
    Body,
    Failure,
    Operation,
    Param,
    Response,
    admin,
    constant,
    doc,
)

__all__ = [
    "JWK",
    "JWKS",
    "OPERATIONS",
    "TAGS",
    "HealthResponse",
    "LiveResponse",
    "ReadyResponse",
    "RevocationEntry",
    "RevocationList",
    "RevocationSync",
    "revocation_entry",
]

TAGS = {
    "operations": "Health, metrics, verification keys and this description.",
    "revocation feed": "Revocations for resource servers that verify tokens offline.",
}


class HealthResponse(Response):
    """The broker's health as its last check found it (at most a second or two old):
    answering it never waits on storage. Anonymous callers get AgentWrit's fields with
    `version` `""` and `uptime` and `audit_events_count` 0, and neither
    `revocation_entries` nor `signing_kid`: those only with an operator's token holding
    `admin:audit:*`."""

    status: Annotated[
        str,
        doc(
            "`degraded` when storage did not answer, writes fail (a full disk, a lost "
            "database) or the revocation index is not confirmed current (see `reason`).",
            enum=["ok", "degraded"],
        ),
    ]
    revocations_current: Annotated[
        bool,
        doc(
            "False once the revocation index could not be confirmed current within "
            "`revocation_staleness_bound` (replicas on PostgreSQL): protected requests and "
            "validation then fail closed with 503."
        ),
    ]
    version: Annotated[str, doc('The broker\'s version (`""` to anonymous callers).')]
    uptime: Annotated[int, doc("Seconds since the broker started (0 to anonymous callers).")]
    db_connected: Annotated[bool, doc("Whether storage answered the last check.")]
    audit_events_count: Annotated[
        int, doc("Events in the audit log at the last check (0 to anonymous callers).")
    ]
    revocation_entries: (
        Annotated[int, doc("Entries in the in-memory revocation index (operators only).")]
        | UnsetType
    ) = UNSET
    signing_kid: (
        Annotated[str, doc("Key id of the active signing key (operators only).")] | UnsetType
    ) = UNSET
    reason: Annotated[str, doc("Why the broker is degraded (only when it is).")] | UnsetType = UNSET


class LiveResponse(Response):
    """The process answers (liveness)."""

    status: Annotated[str, constant("ok")]


class ReadyResponse(Response):
    """Storage answers and takes writes, and the revocation index is current."""

    status: Annotated[str, constant("ready")]


class JWK(Response):
    kty: Annotated[str, constant("OKP")]
    crv: Annotated[str, constant("Ed25519")]
    x: Annotated[str, doc("The public key, base64url without padding.")]
    kid: Annotated[str, doc("Key id.")]
    use: Annotated[str, constant("sig")]
    alg: Annotated[str, constant("EdDSA")]


class JWKS(Response):
    keys: list[JWK]


_LEVEL = doc("The revocation level.", enum=["token", "agent", "task", "chain"])


class RevocationEntry(Response):
    level: Annotated[str, _LEVEL]
    target: Annotated[str, doc("A `jti`, an agent SPIFFE ID, a `task_id` or a chain root.")]
    revoked_at: Annotated[
        int,
        doc(
            "Unix seconds; matches what was registered or delegated at or before it. An "
            "`agent` or `task` entry, and a `chain` entry on an agent, is dated `clock_skew` "
            "past the second it was made (so that it covers every clock within the skew), "
            "and may be ahead of the broker's clock."
        ),
    ]
    expires_at: Annotated[float, doc("Unix seconds after which nothing it matches is valid.")]
    seq: Annotated[int, doc("Position in the feed; greater means later.")]
    sent_at: (
        Annotated[
            float,
            doc(
                "The stream only, for entries sent as they happen (not the backlog): the "
                "broker's Unix time when it sent the entry, for readers that measure how "
                "long a revocation takes to reach them."
            ),
        ]
        | UnsetType
    ) = UNSET


def revocation_entry(record: RevocationRecord, sent_at: float | None = None) -> RevocationEntry:
    return RevocationEntry(
        level=record.level,
        target=record.target,
        revoked_at=record.revoked_at,
        expires_at=record.expires_at,
        seq=record.seq,
        sent_at=UNSET if sent_at is None else sent_at,
    )


_NEXT_CURSOR = doc(
    "Pass as `cursor` to get only later entries: `cursor` and a fingerprint of the entry "
    "at it (`<seq>.<16 hex digits>`; the bare `seq` when no entry is known there). The "
    "broker continues from it only while its database holds that same entry at that "
    "`seq`; after the database went back in time (a failover to a standby that missed "
    "the last commits, a restore) it answers a snapshot of every unexpired entry instead, "
    "and the cursor to take from there."
)


class RevocationList(Response):
    revocations: list[RevocationEntry]
    cursor: Annotated[
        int,
        doc(
            "The `seq` of the last entry answered (the cursor given when nothing is new). "
            "Sent back bare, it is checked only against the database's last `seq`: prefer "
            "`next_cursor`."
        ),
    ]
    next_cursor: Annotated[str, _NEXT_CURSOR]
    server_time: Annotated[float, doc("The broker's Unix time.")]


class RevocationSync(Response):
    """The data of the stream's `sync` event: the backlog is out, the reader is current."""

    cursor: Annotated[int, doc("The `seq` of the last entry sent (or of the reader's cursor).")]
    next_cursor: Annotated[str, _NEXT_CURSOR]
    server_time: Annotated[float, doc("The broker's Unix time.")]


# --- operations ----------------------------------------------------------------------------

_CURSOR = Param(
    "cursor",
    "query",
    {"type": "string", "pattern": "^[0-9]{1,19}([.][0-9a-f]{16})?$"},
    "Only entries with a greater `seq`: the `next_cursor` of an earlier answer (or the "
    "`id:` of the last stream event read). Without it: every unexpired entry. When the "
    "entry it names is no longer the database's entry at that `seq` (the database went "
    "back in time, or the entry was widened or pruned since), the answer is a snapshot "
    "of every unexpired entry and a `cursor` the reader must take, smaller or not. A "
    "bare `seq` (from readers before `next_cursor`) gets the snapshot only when it is "
    "past the database's last `seq`.",
)
_FEED_READER_FAILURES = (
    Failure("invalid_request", "`cursor` is neither a cursor the feed gave nor a `seq`"),
    Failure(
        "insufficient_scope",
        "the token is an agent token, or an operator's without `admin:revoke:*` (an auditor's)",
    ),
)

OPERATIONS = (
    Operation(
        "GET /v1/health",
        "getHealth",
        "operations",
        "Health and version",
        "Liveness, storage connectivity and a few counters (AgentWrit's shape). Always "
        "200, and never waits on storage: the storage fields are from the last check, "
        "made every second on a thread of its own; storage that did not answer it within "
        "2 s, failing writes or a revocation index not confirmed current show as "
        "`status: degraded` with a `reason`. Anonymous callers learn only whether the "
        "broker is alive and serving: the version, uptime, counts and signing key id come "
        "with an operator's bearer token holding `admin:audit:*` (an auditor's, or the "
        "admin's). While the revocation index is not confirmed current no token can be "
        "checked, and the anonymous answer is given.",
        PUBLIC,
        HealthResponse,
        errors=(
            Failure(
                "unauthorized",
                "an `Authorization` header was sent, and its token is malformed, invalid, "
                "expired or revoked",
            ),
            Failure(
                "insufficient_scope",
                "an `Authorization` header was sent with a token that is not an operator's, "
                "or lacks `admin:audit:*`",
            ),
        ),
    ),
    Operation(
        "GET /v1/health/live",
        "getLiveness",
        "operations",
        "Liveness",
        "The process answers. Never touches storage: restart the broker when this fails, "
        "not when storage does.",
        PUBLIC,
        LiveResponse,
    ),
    Operation(
        "GET /v1/health/ready",
        "getReadiness",
        "operations",
        "Readiness",
        "Whether to send this broker traffic: storage answers and takes writes (a check "
        "bounded to 2 s: free disk space and the write lock on SQLite; a live, writable "
        "server on PostgreSQL), no write failed in the last seconds, the revocation "
        "index is current, and the signing key signs (a PKCS#11 token that failed a "
        "signature is looked for again about once a second). A 503 says why in `detail`.",
        PUBLIC,
        ReadyResponse,
        errors=(
            Failure(
                "service_unavailable",
                "storage did not answer or does not take writes (the disk is full, the "
                "database is read-only or unreachable), the revocation index is not "
                "confirmed current, or the signing key does not sign (its PKCS#11 token "
                "failed a signature, or it was retired elsewhere)",
            ),
        ),
    ),
    Operation(
        "GET /v1/metrics",
        "getMetrics",
        "operations",
        "Prometheus metrics",
        "The broker's metrics in the Prometheus text exposition format (version 0.0.4), "
        "summed over every worker process. By default they are served only on the metrics "
        "listener (`metrics_listen`, 127.0.0.1:9464), and this route answers 404 as for "
        'any unknown path; with `metrics_public = "token"` it serves them here to an '
        "operator's token holding `admin:audit:*` (an auditor's, or the admin's).",
        admin("admin:audit:*"),
        Body(
            "MetricsText",
            "text/plain",
            {"type": "string", "description": "Prometheus text format."},
        ),
        errors=(
            Failure(
                "not_found",
                '`metrics_public` is `"off"` (the default): the metrics are on the metrics '
                "listener only",
            ),
        ),
    ),
    Operation(
        "GET /.well-known/jwks.json",
        "getJwks",
        "operations",
        "Token verification keys (JWKS)",
        "The public Ed25519 keys (RFC 7517 JWK Set, RFC 8037 OKP keys) that verify "
        "broker-issued tokens; the active signing key comes first. Cacheable for 60 s.",
        PUBLIC,
        JWKS,
    ),
    Operation(
        "GET /v1/openapi.json",
        "getOpenApi",
        "operations",
        "This API description",
        "The OpenAPI 3.1 document describing every route of this broker.",
        PUBLIC,
        Body(
            "OpenAPIDocument",
            "application/json",
            {"type": "object", "description": "An OpenAPI 3.1 document."},
        ),
    ),
    Operation(
        "GET /v1/revocations",
        "listRevocations",
        "revocation feed",
        "Revocation entries, with a cursor",
        "The unexpired revocation entries (all of them, or those after `cursor`), in `seq` "
        "order, and the `cursor` to ask from next time. Resource servers that verify tokens "
        "offline apply them with the matching rules of the four levels: `token` matches the "
        "`jti`; `agent` the `sub` and every delegation chain naming it; `task` the "
        "`task_id`, and the task segment of the holder's and each hop's SPIFFE ID; `chain` "
        "chains naming the target. `agent` and `task` only match tokens "
        "of a registration made at or before `revoked_at` (the earlier of `oiat` and "
        "`iat`; for a holder or hop named by its SPIFFE ID, the token's `iat` or the "
        "hop's `delegated_at`), `chain` only delegations made at or before it (the hop's "
        "`delegated_at`, else `iat`). An entry that is widened comes again with a new `seq`.",
        ADMIN_OR_APP_TOKEN,
        RevocationList,
        parameters=(_CURSOR,),
        errors=_FEED_READER_FAILURES,
    ),
    Operation(
        "GET /v1/revocations/stream",
        "streamRevocations",
        "revocation feed",
        "Revocation entries as server-sent events",
        "First the entries `GET /v1/revocations` would answer (`cursor`, or the "
        "`Last-Event-ID` header, picks up where a reader left off), then `event: sync` "
        '(`data: {"cursor": N, "next_cursor": C, "server_time": T}`, `id:` C), then each '
        "new revocation as this broker learns it (`event: revocation`, `id:` the cursor "
        "that continues after it, `<seq>.<fingerprint>`, `data:` the entry), and a "
        "`: keepalive` comment every 2 seconds: a reader that hears nothing for longer than "
        "its staleness bound must fail closed. A reader reconnects with the `id:` of the "
        "last event it read. The stream ends when the reader's token expires (at its "
        "`exp`, or once the life it had left when the stream opened has elapsed, "
        "whichever comes first: a broker clock stepped back does not lengthen it) or is "
        "revoked, when the reader falls behind, or when the broker finds that its "
        "database went back in time (the reader reconnects with its cursor, and gets a "
        "snapshot if the entry it names is no longer there), or when its tenant is "
        "removed (on every broker process within about a second: reconnecting, the reader "
        "is answered 404; docs/tenants.md), or when the broker cannot read the "
        "revocations it enforces back from its database to send them (instead of a "
        "keepalive: the reader reconnects and fails closed past its bound while the "
        "reads fail). A reader (an app, an "
        "operator) holds at most `feed_streams_per_reader` streams at once on one broker "
        "process, and a process serves at most `feed_streams_per_process`: one more is "
        "refused (429, with `Retry-After`) until a stream ends.",
        ADMIN_OR_APP_TOKEN,
        Body(
            "RevocationStream",
            "text/event-stream",
            {
                "type": "string",
                "description": "Server-sent events: `revocation` (data: a `RevocationEntry`), "
                "`sync` (data: a `RevocationSync`) and `: keepalive` comments.",
                "x-events": {
                    "revocation": {"$ref": REF.format(name="RevocationEntry")},
                    "sync": {"$ref": REF.format(name="RevocationSync")},
                },
            },
        ),
        parameters=(_CURSOR,),
        errors=(
            *_FEED_READER_FAILURES,
            Failure(
                "rate_limited",
                "the reader holds `feed_streams_per_reader` streams on this broker process, "
                "or the process `feed_streams_per_process`; the `denial_id` names its one "
                "`feed_stream_denied` audit event",
            ),
        ),
    ),
)
