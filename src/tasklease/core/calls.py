"""Call budgets: ``max_calls`` of a grant, counted by the broker when a resource server
asks it to.

A grant with ``limits.max_calls`` gets a budget when its token is issued (in the
issuance's own transaction): keyed by the credential's grant thread and the grant's
digest (:func:`budget_key`), with the budget of the parent grant it was narrowed from
(a delegator's, or the subject token's in an RFC 8693 narrowing) as its ``parent``. A
counted call takes one call from the budget and from every budget above it, all or none
(``WriteTx.count_call``), so delegating never multiplies calls: the children of a grant
with ten calls make at most ten calls between them and it.

An agent's own tokens (registration, renewals, resumption) share one thread (the agent
instance); a delegated or narrowed token and its renewals another. Registrations from one
multi-use launch token each get their own budget: a launch token bounds each
registration, not their sum. An offline chain's leaf has a thread of its own under its
root token and no budget in it: the broker saw none of its blocks issued, so it refuses
to count their calls rather than count them against a thread the deriver named.

A resource server asks for a count (``POST /v1/token/calls``) on the broker's
high-assurance path: the token's live revocation state and agent record are read from
the store, never a cache (``core.assurance``), and the count is written and audited in
one transaction (:class:`CallCounting`).

The route is public, like validation: the resource server forwards what its request
presented, and the broker checks it. A DPoP proof it checks itself (a signature by the
holder's key, single use); a client certificate it never sees, only a thumbprint the
caller says it saw, and a certificate-bound token carries that thumbprint in its own
``cnf``. So a call of a token bound only by a certificate is counted only when the caller
is an authenticated resource server (:func:`vouching_refusal`): an app, for its own
agents' tokens, or an operator with ``admin:revoke:*`` (the credentials a verifier holds
for the feed and introspection), named in the count's audit event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tasklease.core.assurance import live_denial
from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.callers import about
from tasklease.core.errors import (
    Forbidden,
    InsufficientScope,
    InvalidRequest,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.kernel import RequestContext, Service
from tasklease.core.offlinechain import offline_root
from tasklease.core.pending import Lost, Pending
from tasklease.core.records import CallBudget
from tasklease.core.store import WriteTx
from tasklease.core.tokens import KIND_APP, Claims
from tasklease.rules import grants as grant_rules
from tasklease.rules import grantuse as grant_use
from tasklease.rules.grants import TypeRule

__all__ = [
    "OFFLINE_HOLDER",
    "REGISTRATION_HOLDER",
    "CallCount",
    "CallCounting",
    "budget_holder",
    "budget_key",
    "budgets_for",
    "counted_grant",
    "registration_budgets",
    "vouching_refusal",
]


OFFLINE_HOLDER = "offline:"
"""The prefix of an offline chain leaf's budget thread (:func:`budget_holder`)."""


def budget_holder(claims: Claims) -> str:
    """The thread a token's budgets belong to: its agent instance for an agent's own
    tokens, else its grant (a delegated or narrowed token and its renewals).

    An offline chain's leaf gets a thread of its own under its root token,
    ``offline:<root jti>:<leaf jti>``: its ``jti`` is chosen by whoever derived the chain,
    so alone it could name another token's thread and spend its budget. The broker never
    issued the leaf, so no budget is ever kept under it (:meth:`CallCounting.prepare_count`
    refuses to count its calls)."""
    root = offline_root(claims)
    if root:
        return f"{OFFLINE_HOLDER}{root}:{claims.jti}"
    if not claims.delegation_chain:
        return f"agent:{claims.sub}"
    return f"grant:{claims.grant_id}"


def budget_key(holder: str, grant: Mapping[str, Any]) -> str:
    return f"{holder}:{grant_rules.digest(grant)}"


def _calls(grant: Mapping[str, Any]) -> int:
    limits = grant.get("limits") or {}
    return int(limits.get("max_calls", 0))


def budgets_for(
    holder: str,
    details: Iterable[Mapping[str, Any]],
    *,
    expires_at: float,
    parent_holder: str = "",
    parent_grants: Sequence[Mapping[str, Any]] = (),
    rules: Mapping[str, TypeRule] | None = None,
) -> list[CallBudget]:
    """The budgets of a new credential's grants with ``max_calls``: each under the first
    parent grant with ``max_calls`` that covers it (a registration's parent is its
    ceiling, :func:`registration_budgets`)."""
    out = []
    for grant in details:
        calls = _calls(grant)
        if not calls:
            continue
        parent = ""
        if parent_holder:
            for candidate in parent_grants:
                if _calls(candidate) and grant_rules.covers(candidate, grant, rules):
                    parent = budget_key(parent_holder, candidate)
                    break
        out.append(CallBudget(budget_key(holder, grant), parent, calls, 0, expires_at))
    return out


REGISTRATION_HOLDER = "registration:"
"""The prefix of the thread that holds a registration's ceiling budgets
(:func:`registration_budgets`)."""


def registration_budgets(
    agent_id: str,
    details: Iterable[Mapping[str, Any]],
    ceiling: Sequence[Mapping[str, Any]],
    *,
    expires_at: float,
    rules: Mapping[str, TypeRule] | None = None,
) -> list[CallBudget]:
    """The budgets of a registration: its ceiling's grants with ``max_calls`` (the launch
    token's or the attestor's, ``ceiling``), in a thread of that registration's own
    (``registration:<agent id>``), and the agent's grants (``details``, thread
    ``agent:<agent id>``) each under the first of them that covers it.

    A registration may ask for grants narrower than its ceiling's; each within it, their
    calls together are bounded by the ceiling grant's ``max_calls`` all the same, as a
    delegate's are by its delegator's. Each registration has its own ceiling budgets
    (decision 97): the thread is the new agent's."""
    parent_holder = f"{REGISTRATION_HOLDER}{agent_id}"
    above = [
        CallBudget(budget_key(parent_holder, grant), "", _calls(grant), 0, expires_at)
        for grant in ceiling
        if _calls(grant)
    ]
    return [
        *above,
        *budgets_for(
            f"agent:{agent_id}",
            details,
            expires_at=expires_at,
            parent_holder=parent_holder if above else "",
            parent_grants=ceiling,
            rules=rules,
        ),
    ]


def counted_grant(
    claims: Claims, kind: str, *, now: float, **call: Any
) -> tuple[Mapping[str, Any] | None, bool]:
    """``(grant, allowed)``: whether the token's grants allow the call at all, and the
    grant whose budget counts it (None when a grant without ``max_calls`` allows it: it
    is not counted)."""
    grants = grant_rules.grants_of(claims.scope, claims.details)
    allowing = [g for g in grants if grant_use.allows([g], kind, now=now, **call) is not None]
    if not allowing:
        return None, False
    if any(not _calls(g) for g in allowing):
        return None, True
    return allowing[0], True


def certificate_only(claims: Claims) -> bool:
    """True when the token is bound to a client certificate and to nothing the broker can
    check itself (no DPoP key: ``cnf`` has ``x5t#S256`` and no ``jkt``)."""
    cnf = claims.raw.get("cnf")
    return isinstance(cnf, Mapping) and "x5t#S256" in cnf and "jkt" not in cnf


def vouching_refusal(claims: Claims, caller: Claims | None) -> tuple[str, str]:
    """``("", "")`` when a call of ``claims`` may be counted for ``caller`` (the resource
    server's authenticated credential, or None), else the refusal's kind
    (``"unauthenticated"`` or ``"another_app"``) and the audit detail's reason.

    A certificate-bound token's binding is proven only to the resource server holding the
    connection; the thumbprint it forwards is its word, and it is in the token itself. So
    whoever holds a stolen certificate-bound token could say it, spend the grant's
    ``max_calls`` and write counts of calls never made. Such a count is taken only from an
    authenticated resource server: an operator (``admin:revoke:*``), or the app whose
    agent holds the token (an app sees no other app's agents' tokens at introspection
    either). A bearer token's thief can use the token itself, and a DPoP-bound token's
    proof is checked here: neither needs a voucher."""
    if not certificate_only(claims):
        return "", ""
    if caller is None:
        return "unauthenticated", "certificate-bound token counted without a resource server"
    if caller.kind == KIND_APP and caller.client_id != claims.client_id:
        return "another_app", "certificate-bound token of another app's agent"
    return "", ""


def counter_of(caller: Claims | None) -> str:
    """The audit detail's name of who asked for a count: ``app:<client_id>``,
    ``operator:<sub>``, or ``anonymous``."""
    if caller is None:
        return "anonymous"
    if caller.kind == KIND_APP:
        return f"app:{caller.client_id}"
    return f"operator:{caller.sub}"


@dataclass(frozen=True, slots=True)
class CallCount:
    """What counting a call did: ``counted`` (False when a grant without ``max_calls``
    allows the call), the budget's ``remaining`` calls and its ``max_calls`` (0, 0 when
    not counted), and the grant that allowed it."""

    counted: bool
    remaining: int
    max_calls: int
    grant: Mapping[str, Any] | None


class CallCounting(Service):
    """Counting calls against grants' budgets, for resource servers. Thread-safe."""

    def prepare_count(
        self,
        claims: Claims,
        kind: object,
        call: Mapping[str, Any],
        ctx: RequestContext,
        *,
        caller: Claims | None = None,
    ) -> Pending[CallCount]:
        """Check one call of ``kind`` (``call``: the arguments of ``rules.grantuse.allows``)
        against the token's grant that allows it, after reading the token's live state
        (``core.assurance``: never a cache); the count is written by whoever completes it
        (``core.pending``), and a budget found spent then is a refusal. ``caller``: the
        resource server's authenticated credential, if it sent one; a certificate-bound
        token's calls are counted only for one (:func:`vouching_refusal`), and the count's
        event names it.

        Raises (audited, with a ``denial_id``):
            InvalidRequest: ``kind`` or ``call`` malformed (not audited).
            Unauthorized: a certificate-bound token, and no resource server credential.
            Forbidden: a certificate-bound token of another app's agent, for an app.
            InsufficientScope: no grant of the token allows the call.
            Forbidden: the budget, or one above it, is spent (or gone: fail closed); or
                the live state refuses the token.
        """
        kernel = self._kernel
        if not isinstance(kind, str) or not kind:
            raise InvalidRequest("type is required")
        unknown = set(call).difference(grant_use.CALL_MEMBERS)
        if unknown:
            raise InvalidRequest(f"unknown call members: {', '.join(sorted(unknown))}")
        base = replace(
            about(claims), request_id=ctx.request_id, resource=ctx.path, outcome="denied"
        )
        counter = detail_field("counter", counter_of(caller))
        refusal, why = vouching_refusal(claims, caller)
        if refusal:
            error: TaskleaseError = (
                Unauthorized(
                    "a certificate-bound token's calls are counted only for an "
                    "authenticated resource server",
                    hint="send the resource server's app or operator token in Authorization",
                )
                if refusal == "unauthenticated"
                else Forbidden("an app counts calls only of its own agents' tokens")
            )
            raise kernel.deny(
                error,
                replace(
                    base,
                    event_type="grant_call_denied",
                    detail=f"{why} {counter} jti={claims.jti}",
                ),
            )
        live = live_denial(self._store, claims)
        if live is not None:
            raise kernel.deny(
                Forbidden("the token is no longer valid"),
                replace(base, event_type="grant_call_denied", detail=f"{live} jti={claims.jti}"),
            )
        now = kernel.now()
        try:
            grant, allowed = counted_grant(claims, kind, now=now, **call)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(clipped(f"malformed call: {exc}", 200)) from None
        action = clipped(str(call.get("action")), 64)
        what = (
            f"{detail_field('type', clipped(kind, 64))} {detail_field('action', action)} "
            f"jti={claims.jti}"
        )
        if not allowed:
            raise kernel.deny(
                InsufficientScope("no grant of the token allows this call"),
                replace(base, event_type="grant_call_denied", detail=f"not allowed {what}"),
            )
        if grant is None:
            return Pending(None, lambda: CallCount(False, 0, 0, None))
        holder = budget_holder(claims)
        if holder.startswith(OFFLINE_HOLDER):
            # The broker never saw the chain's blocks issued, so it keeps no budget for
            # them (docs/broker-optional.md): a counted grant is handed on online.
            raise kernel.deny(
                Forbidden(
                    "an offline chain's calls are not counted",
                    hint="hand a grant with max_calls on online (POST /v1/delegate)",
                ),
                replace(
                    base,
                    event_type="grant_call_denied",
                    detail="offline chain's grant has max_calls "
                    f"(chain {holder.removeprefix(OFFLINE_HOLDER)}) {what}",
                ),
            )
        key = budget_key(holder, grant)
        left: list[CallBudget] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            spent = tx.count_call(key)
            if spent:
                raise Forbidden(
                    "the grant's calls are used up",
                    reason=spent,
                    hint="max_calls of the grant (or of one it was narrowed from) is reached",
                )
            budget = tx.get_call_budget(key)
            if budget is not None:
                left.append(budget)
            return [
                replace(
                    base,
                    event_type="grant_call_counted",
                    outcome="success",
                    detail=f"call counted {what} {counter} budget={key[-32:]} "
                    f"calls={budget.calls if budget else '?'}/{_calls(grant)}",
                )
            ]

        def exhausted(exc: Lost) -> AuditEntry:
            spent = exc.reason  # the key of the budget found spent
            which = "its own" if spent == key else "a delegator's"
            return replace(
                base,
                event_type="grant_calls_exhausted",
                detail=f"max_calls reached ({which} budget {spent[-32:]}) {what}",
            )

        def done() -> CallCount:
            budget = left[0] if left else None
            if budget is None:  # pragma: no cover - count_call found it a moment ago
                return CallCount(True, 0, _calls(grant), grant)
            return CallCount(True, budget.max_calls - budget.calls, budget.max_calls, grant)

        return Pending(unit, done, exhausted)
