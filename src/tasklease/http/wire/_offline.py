"""Offline work reported late on the wire: derivations by agents and uses by verifiers
(docs/audit.md, "Reported late"; docs/broker-optional.md)."""

from __future__ import annotations

from typing import Annotated

from tasklease.core.offlineaudit import MAX_REPORTS, ReportOutcome
from tasklease.http.wire._base import Auth, Failure, Operation, Request, Response, doc

__all__ = [
    "OPERATIONS",
    "TAGS",
    "OfflineDerivation",
    "OfflineReportRefusal",
    "OfflineReportRequest",
    "OfflineReportResponse",
    "OfflineUse",
    "offline_report_response",
]

TAGS = {
    "offline": "Broker-optional operation: what agents and verifiers did while they worked "
    "from offline attenuation chains, reported when the broker is reachable.",
}

_Chain = Annotated[
    str,
    doc(
        "An offline attenuation chain (`tla1~<root token>~<block>...`, docs/formats.md), "
        "at most 4096 bytes. The broker verifies every signature and attenuation in it."
    ),
]


class OfflineDerivation(Request):
    chain: Annotated[
        _Chain,
        doc(
            "The chain ending with the block derived offline: its signed `iat` is when the "
            "derivation happened, its `jti` the report's idempotency key."
        ),
    ]


class OfflineUse(Request):
    chain: Annotated[_Chain, doc("The chain the verifier accepted (its leaf is what was used).")]
    occurred_at: Annotated[
        int,
        doc(
            "When the first of the uses happened, per the verifier (Unix seconds): the chain "
            "is verified as of then. The uses of one chain by one verifier are counted per "
            "minute of `occurred_at`, and a minute is recorded once."
        ),
    ]
    count: Annotated[int, doc("How many times the chain was accepted in that minute.")] = 1


class OfflineReportRequest(Request):
    derivations: Annotated[
        list[OfflineDerivation],
        doc("Derivations made offline (agents only: an agent of each chain reports it)."),
    ] = []
    uses: Annotated[
        list[OfflineUse],
        doc("Uses of offline chains (resource servers only, with their app token)."),
    ] = []


class OfflineReportRefusal(Response):
    index: Annotated[int, doc("The item's index in its list.")]
    kind: Annotated[str, doc("Which list: `derivation` or `use`.", enum=["derivation", "use"])]
    error: Annotated[
        str,
        doc(
            "`invalid_request` (the chain does not verify, is too old to report or dated "
            "in the future) or `forbidden` (this caller may not report it). Never retry it."
        ),
    ]
    denial_id: Annotated[str, doc("The audited refusal's id (`den_` and 16 hex characters).")]


class OfflineReportResponse(Response):
    accepted: Annotated[int, doc("Items audited now, each as one event marked reported late.")]
    duplicates: Annotated[
        int, doc("Items audited before (a report sent again): nothing new was recorded.")
    ]
    refused: Annotated[list[OfflineReportRefusal], doc("Items refused, each audited.")]


def offline_report_response(outcome: ReportOutcome) -> OfflineReportResponse:
    return OfflineReportResponse(
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        refused=[
            OfflineReportRefusal(index=r.index, kind=r.kind, error=r.error, denial_id=r.denial_id)
            for r in outcome.refused
        ],
    )


OPERATIONS = (
    Operation(
        "POST /v1/audit/offline",
        "reportOfflineWork",
        "offline",
        "Report offline derivations and uses",
        "Late audit of work done from offline attenuation chains. An agent reports the "
        "derivations it made offline (authenticated with its agent token, or with an "
        "offline chain it holds, as `DPoP` with its proof; it must be an agent of each "
        "reported chain); a resource server reports the uses its verifier accepted "
        "(authenticated with its app token, the client credentials it reads the "
        "revocation feed with). The broker verifies each chain with the rules every "
        "verifier applies, as of the moment reported; each accepted item is one audit "
        "event (`offline_derivation_reported`, `offline_use_reported`) marked reported "
        "late, with when it happened and when it was received. Idempotent: an item "
        "reported before (a derivation by its chain; a use by its chain, the verifier and "
        "the minute; a chain named by the SHA-256 of its text) is counted in "
        "`duplicates` and records nothing. An "
        f"item the broker cannot verify is refused with its own `denial_id`. At most "
        f"{MAX_REPORTS} items per request; items are accepted up to a day after their "
        "chain expired.",
        Auth("agent-or-app"),
        OfflineReportResponse,
        request=OfflineReportRequest,
        commits=True,
        errors=(
            Failure("invalid_request", f"no item, or more than {MAX_REPORTS} items"),
            Failure(
                "insufficient_scope",
                "the token is an admin token, or an offline chain where it is not accepted",
            ),
        ),
    ),
)
