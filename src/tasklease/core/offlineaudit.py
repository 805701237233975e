"""Audit without the broker: offline derivations and verifiers' uses of offline chains,
reported late, verified, and audited once each with both times (docs/audit.md).

An agent that derives a credential offline reports the chain that ends with the derived
block; a resource server whose verifier accepted an offline chain reports its uses per
minute. Each reported chain is verified by the shared rules as of the moment it reports
(:meth:`~tasklease.core.offlinechain.OfflineChains.verify_record`): a chain the broker
cannot verify is refused with a ``denial_id``. An accepted report becomes one audit event
marked ``reported late``, whose detail holds when it happened (per the signed block, or
per the verifier) and when it was received; the event's own timestamp is the time it
was appended, like every event's. A report sent again is a no-op: its key
(``d:<chain>``; ``u:<chain>:<verifier>:<minute>``, ``<chain>`` the SHA-256 of the reported
chain) is recorded in the same transaction as its event. Not a block's ``jti``: whoever
derives a block chooses it, and could have another chain's report taken for a replay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tasklease.core.auditformat import AuditEntry, detail_field, reason_text
from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.errors import Forbidden, InvalidRequest, TaskleaseError
from tasklease.core.kernel import Kernel, RequestContext, Service, with_denial
from tasklease.core.offlinechain import OfflineChains, chain_lineage
from tasklease.core.store import WriteTx
from tasklease.core.tokens import KIND_AGENT, KIND_APP, Claims
from tasklease.core.validation import TokenRejected
from tasklease.rules import attenuation
from tasklease.rules.chainverify import VerifiedChain
from tasklease.rules.offlinereports import chain_digest

__all__ = [
    "DERIVATION_EVENT",
    "MAX_REPORTS",
    "REPORT_WINDOW",
    "USE_BUCKET",
    "USE_EVENT",
    "DerivationReport",
    "OfflineAudit",
    "ReportOutcome",
    "ReportRefusal",
    "UseReport",
]

DERIVATION_EVENT = "offline_derivation_reported"
USE_EVENT = "offline_use_reported"
DENIED_EVENT = "offline_report_denied"
MAX_REPORTS = 100
"""Items one request may carry (derivations and uses together)."""
REPORT_WINDOW = 86_400
"""Seconds after a reported block's expiry during which it may still be reported; its
report key is kept until then, so a replay within the window is recognized."""
USE_BUCKET = 60
"""A verifier's uses of one chain are reported per minute (the bucket of ``occurred_at``)."""
MAX_USE_COUNT = 1_000_000


@dataclass(frozen=True, slots=True)
class DerivationReport:
    """A chain whose last block an agent derived offline."""

    chain: str


@dataclass(frozen=True, slots=True)
class UseReport:
    """``count`` acceptances of ``chain`` by the reporting verifier in the minute of
    ``occurred_at`` (Unix seconds)."""

    chain: str
    occurred_at: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class ReportRefusal:
    """A reported item the broker refused (never to be sent again): its index in its list,
    ``derivation`` or ``use``, the error code and the denial's id."""

    index: int
    kind: str
    error: str
    denial_id: str


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    accepted: int
    duplicates: int
    refused: tuple[ReportRefusal, ...]


@dataclass(frozen=True, slots=True)
class _Accepted:
    kind: str
    key: str
    keep_until: float
    entry: AuditEntry
    occurred_at: int


class _Refused(Exception):
    def __init__(self, error: TaskleaseError, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class OfflineAudit(Service):
    """``POST /v1/audit/offline``: late reports of offline work. Thread-safe."""

    def __init__(self, kernel: Kernel, chains: OfflineChains) -> None:
        super().__init__(kernel)
        self._chains = chains

    def report(
        self,
        caller: Claims,
        *,
        derivations: Sequence[DerivationReport],
        uses: Sequence[UseReport],
        ctx: RequestContext,
    ) -> ReportOutcome:
        """Verify and audit a batch of reports; one transaction for the whole batch.

        Derivations are reported by an agent of the chain: one it names (by its token, or
        the offline chain it holds), or the registered agent whose key a block names (a
        delegate is named under its delegator, never by its own id); uses by a resource
        server's app token (the verifier's client credentials). Each item is accepted, a
        duplicate (already audited: nothing new), or refused with its own audited denial.

        Raises:
            InvalidRequest: no item, or more than :data:`MAX_REPORTS`.
        """
        total = len(derivations) + len(uses)
        if total == 0:
            raise InvalidRequest("nothing to report", hint="send derivations or uses")
        if total > MAX_REPORTS:
            raise InvalidRequest(f"at most {MAX_REPORTS} reports per request")
        now = self._kernel.now()
        accepted: list[_Accepted] = []
        denials: list[AuditEntry] = []
        refused: list[ReportRefusal] = []
        items: list[tuple[str, int, DerivationReport | UseReport]] = [
            *(("derivation", i, d) for i, d in enumerate(derivations)),
            *(("use", i, u) for i, u in enumerate(uses)),
        ]
        for kind, index, item in items:
            try:
                if isinstance(item, DerivationReport):
                    accepted.append(self._derivation(caller, item, now, ctx))
                else:
                    accepted.append(self._use(caller, item, now, ctx))
            except _Refused as exc:
                entry = with_denial(
                    exc.error,
                    AuditEntry(
                        DENIED_EVENT,
                        outcome="denied",
                        agent_id=caller.sub,
                        resource=ctx.path,
                        request_id=ctx.request_id,
                        detail=f"offline {kind} report {index} refused: {reason_text(exc.detail)} "
                        f"| by={caller.sub}",
                    ),
                )
                denials.append(entry)
                refused.append(
                    ReportRefusal(index, kind, exc.error.code, exc.error.denial_id or "")
                )
        recorded: list[_Accepted] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            recorded.clear()  # the unit runs once; a retried batch would start afresh
            for item in accepted:
                if tx.consume_offline_report(item.key, item.keep_until):
                    recorded.append(item)
            return [*denials, *(item.entry for item in recorded)]

        self._kernel.commit(unit)
        self._count(accepted, recorded, refused, now)
        duplicates = len(accepted) - len(recorded)
        return ReportOutcome(len(recorded), duplicates, tuple(refused))

    def _count(
        self,
        accepted: Sequence[_Accepted],
        recorded: Sequence[_Accepted],
        refused: Sequence[ReportRefusal],
        now: float,
    ) -> None:
        reports = self._metrics.offline_reports
        for item in recorded:
            reports.labels(item.kind, "accepted").inc()
            self._metrics.offline_report_lateness.observe(max(0.0, now - item.occurred_at))
        kept = {id(item) for item in recorded}
        for item in accepted:
            if id(item) not in kept:
                reports.labels(item.kind, "duplicate").inc()
        for refusal in refused:
            reports.labels(refusal.kind, "refused").inc()

    # --- one item -----------------------------------------------------------------------

    def _verified(self, text: object, as_of: float) -> VerifiedChain:
        if not isinstance(text, str) or not attenuation.is_chain(text):
            raise _Refused(InvalidRequest("not an offline chain"), "not an offline chain")
        try:
            return self._chains.verify_record(text, as_of=as_of)
        except TokenRejected as exc:
            raise _Refused(
                InvalidRequest("the chain does not verify"), f"chain rejected: {exc.reason}"
            ) from None

    def _window(self, exp: int, now: float, what: str) -> float:
        """When the report key of a block expiring at ``exp`` may be forgotten; refuses a
        report past the window."""
        keep_until = float(exp + REPORT_WINDOW)
        if keep_until <= now:
            raise _Refused(
                InvalidRequest(f"the {what} is too old to report"),
                f"{what} expired at {exp}, more than {REPORT_WINDOW}s ago",
            )
        return keep_until

    def _derivation(
        self, caller: Claims, item: DerivationReport, now: float, ctx: RequestContext
    ) -> _Accepted:
        if caller.kind != KIND_AGENT:
            raise _Refused(
                Forbidden("derivations are reported by an agent of the chain"),
                f"a {caller.kind} token reported a derivation",
            )
        try:
            decoded = attenuation.decode(item.chain)
        except attenuation.ChainError as exc:
            raise _Refused(
                InvalidRequest("the chain does not verify"), f"chain malformed: {exc.reason}"
            ) from None
        if not decoded.blocks:
            raise _Refused(InvalidRequest("not an offline chain"), "a chain without a block")
        block = decoded.blocks[-1]
        skew = self._config.clock_skew
        if block.iat > now + skew:
            raise _Refused(
                InvalidRequest("the derivation is dated in the future"),
                f"block iat {block.iat} after the broker's clock {math.floor(now)}",
            )
        keep_until = self._window(block.exp, now, "derivation")
        chain = self._verified(item.chain, block.iat)
        if caller.sub not in chain.agents and not _holds_a_block_key(caller, chain):
            raise _Refused(
                Forbidden("the reporter is not an agent of the chain"),
                f"reporter {caller.sub} is not in the chain of block {block.jti}",
            )
        parent = chain.jtis[-2] if len(chain.jtis) >= 2 else ""
        delegator = chain.agents[-2] if len(chain.agents) >= 2 else ""
        revoked = self._chains.revoked_level(chain)
        detail = (
            f"reported late | occurred_at={format_rfc3339_seconds(block.iat)} "
            f"received_at={format_rfc3339_seconds(now)} | jti={block.jti} parent={parent} "
            f"root={chain.root_jti} {detail_field('delegator', delegator)} "
            f"{detail_field('delegate', block.sub)} "
            f"depth={block.depth} exp={format_rfc3339_seconds(block.exp)} "
            f"scope={','.join(chain.scope)} | reported_by={caller.sub}"
            + (f" | revoked_now={revoked}" if revoked else "")
        )
        entry = AuditEntry(
            DERIVATION_EVENT,
            agent_id=block.sub,
            task_id=str(chain.task_id),
            orch_id=_root_str(chain, "orch_id"),
            resource=",".join(chain.audience),
            deleg_depth=block.depth,
            request_id=ctx.request_id,
            detail=detail,
            **chain_lineage(chain),
        )
        key = f"d:{chain_digest(item.chain)}"
        return _Accepted("derivation", key, keep_until, entry, block.iat)

    def _use(self, caller: Claims, item: UseReport, now: float, ctx: RequestContext) -> _Accepted:
        if caller.kind != KIND_APP:
            raise _Refused(
                Forbidden("uses are reported by a resource server's app token"),
                f"a {caller.kind} token reported a use",
            )
        if type(item.count) is not int or not 1 <= item.count <= MAX_USE_COUNT:
            raise _Refused(InvalidRequest("count out of range"), f"count {item.count!r}")
        occurred = item.occurred_at
        if type(occurred) is not int or occurred > now + self._config.clock_skew:
            raise _Refused(
                InvalidRequest("the use is dated in the future"),
                f"occurred_at {occurred!r} after the broker's clock {math.floor(now)}",
            )
        chain = self._verified(item.chain, occurred)
        keep_until = self._window(chain.exp, now, "use")
        verifier = caller.client_id or caller.sub
        minute = occurred - occurred % USE_BUCKET
        revoked = self._chains.revoked_level(chain)
        detail = (
            f"reported late | occurred_at={format_rfc3339_seconds(occurred)} "
            f"received_at={format_rfc3339_seconds(now)} | jti={chain.jti} "
            f"root={chain.root_jti} {detail_field('holder', chain.holder)} depth={chain.depth} "
            f"{detail_field('verifier', verifier)} count={item.count} "
            f"minute={format_rfc3339_seconds(minute)}"
            + (f" | revoked_now={revoked}" if revoked else "")
        )
        entry = AuditEntry(
            USE_EVENT,
            agent_id=chain.holder,
            task_id=str(chain.task_id),
            orch_id=_root_str(chain, "orch_id"),
            resource=",".join(chain.audience),
            deleg_depth=chain.depth,
            request_id=ctx.request_id,
            detail=detail,
            **chain_lineage(chain),
        )
        key = f"u:{chain_digest(item.chain)}:{verifier}:{minute // USE_BUCKET}"
        return _Accepted("use", key, keep_until, entry, occurred)


def _holds_a_block_key(caller: Claims, chain: VerifiedChain) -> bool:
    """Whether ``caller``'s registered key (its token's ``agent_jwk``, which the broker
    signed) is a key one of ``chain``'s blocks handed the authority to: that delegate,
    named under its delegator in the chain, reporting with its own token."""
    key = attenuation.holder_key_of(caller.raw)
    return key is not None and any(step.block.key == key for step in chain.steps)


def _root_str(chain: VerifiedChain, name: str) -> str:
    value = chain.root_claims.get(name)
    return value if isinstance(value, str) else ""
