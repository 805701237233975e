"""Checking presented tokens: validation, request authentication and introspection.

Every path here verifies the same way (:meth:`TokenCheck.verify`: a signed JWT through the
current validator, or a by-reference token through the store), then checks the holder
binding and, for critical scopes, the live state (``core.assurance``). One precise reason
goes inward (audit log, debug log); outward a caller sees one generic failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tasklease.core.assurance import assure
from tasklease.core.audience import validate_resource
from tasklease.core.auditformat import AuditEntry, detail_field, reason_text
from tasklease.core.binding import recording
from tasklease.core.callers import about
from tasklease.core.errors import (
    INVALID_REQUEST,
    InsufficientScope,
    InvalidRequest,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.freshness import Freshness
from tasklease.core.introspection import (
    INACTIVE,
    claims_from_reference,
    introspection_response,
    is_reference_token,
    reference_hash,
)
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.offlinechain import KIND_OFFLINE, OfflineChains, is_chain, live_denial
from tasklease.core.readahead import count
from tasklease.core.signing import SigningKeys
from tasklease.core.tokens import (
    BUILTIN_ADMIN,
    KIND_ADMIN,
    KIND_AGENT,
    KIND_APP,
    ROLE_SCOPES,
    Claims,
    ClaimsError,
)
from tasklease.core.validation import TokenRejected
from tasklease.rules import scopes as scope_rules
from tasklease.rules.binding import (
    PROOF_REPLAYED,
    BindingError,
    DPoPNonceRequired,
    DPoPProofError,
    DPoPVerifier,
    MalformedAuthorization,
    Presentation,
    authorization_credentials,
    check_binding,
)
from tasklease.rules.grants import holds_critical_scope

__all__ = ["ALL_KINDS", "OPERATOR_KINDS", "TokenCheck", "held_scopes"]

ALL_KINDS = frozenset({KIND_AGENT, KIND_ADMIN, KIND_APP})
# Who reads the revocation feed and introspects: app tokens, and operators' tokens with
# the scope the route names (an auditor's token is refused).
OPERATOR_KINDS = frozenset({KIND_ADMIN, KIND_APP})


def held_scopes(claims: Claims) -> tuple[str, ...]:
    """The scopes a token holds for a route's gate: its ``scope`` claim, except that the
    built-in admin's token (the admin secret's; its claim is AgentWrit's fixed set) holds
    the ``admin`` role's."""
    if claims.kind == KIND_ADMIN and claims.sub == BUILTIN_ADMIN:
        return ROLE_SCOPES["admin"]
    return claims.scope


def _challenge(scheme: str, rejected: TokenRejected) -> tuple[str, str]:
    """The ``WWW-Authenticate`` error for a presented token that failed: a DPoP proof
    that failed is ``invalid_dpop_proof`` (RFC 9449 section 7.1), anything else about
    the token ``invalid_token`` (RFC 6750 section 3.1), in the scheme it came with."""
    if scheme == "DPoP" and rejected.dpop_nonce:
        return scheme, "use_dpop_nonce"  # RFC 9449 section 9
    if scheme == "DPoP" and rejected.dpop_proof:
        return scheme, "invalid_dpop_proof"
    return scheme, "invalid_token"


class TokenCheck(Service):
    """Validates and authenticates presented tokens. Thread-safe; one per broker."""

    def __init__(
        self,
        kernel: Kernel,
        keys: SigningKeys,
        dpop: DPoPVerifier,
        freshness: Freshness,
        *,
        forwarded: DPoPVerifier | None = None,
    ) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._dpop = dpop
        # Proofs a resource server forwards to validate were made for its own URI: the
        # broker's nonces (if required) are not asked of them.
        self._forwarded = dpop if forwarded is None else forwarded
        self._fresh = freshness
        # Offline attenuation chains (docs/broker-optional.md): the shared rules with this
        # broker's keys (the current ring's, read at each call), limits and index.
        self.offline = OfflineChains(
            kernel.config, self._verify_key, kernel.now, kernel.revocations
        )

    def _verify_key(self, kid: str) -> Any:
        return self._keys.ring.verify_key(kid)

    def _offline_leaf(
        self,
        token: str,
        presented: Presentation | None,
        dpop: DPoPVerifier | None,
        *,
        audience: str | None = None,
        any_audience: bool = False,
    ) -> Claims:
        """The leaf of an offline chain presented to the broker, verified now (every
        element, the presenter's proof, the revocation index); a chain whose leaf holds a
        critical scope (in its scope or a ``scope`` grant) is also checked against the
        store (high assurance). Raises TokenRejected."""
        claims, chain = self.offline.verify(
            token, presented=presented, dpop=dpop, audience=audience, any_audience=any_audience
        )
        if holds_critical_scope(claims.scope, claims.details, self._config.critical_scopes):
            reason = live_denial(self._store, chain)
            if reason is not None:
                raise TokenRejected(f"{reason} high_assurance=true", "revoked")
        return claims

    def validate(
        self,
        token: str,
        *,
        audience: str | None = None,
        presented: Presentation | None = None,
        ctx: RequestContext | None = None,
        refusal: Callable[[TokenRejected], tuple[TaskleaseError, AuditEntry]] | None = None,
    ) -> Claims:
        """Validate an agent access token (``/v1/token/validate``); raises TokenRejected.

        ``audience`` is the resource server's own identifier (RFC 8707): a token minted
        for another resource is refused; without it the token must carry the broker's
        default audience. ``presented`` is what the resource server saw on its request
        (client certificate thumbprint, DPoP proof, method and URI): a bound token is
        refused without the matching proof. By-reference tokens are resolved here, and
        tokens with a critical scope are checked against the store (high assurance).
        Raises :class:`Unavailable` while the revocation index is not confirmed current.

        Under ``core.audit.deferring`` a forwarded DPoP proof is recorded when the caller
        settles, and a proof found used then raises :class:`TokenRejected` from the
        settle; or, for a caller that turns a rejection into an audited refusal, what its
        ``refusal`` makes of it (the error and its denial entry).
        """
        fresh = self._fresh
        if fresh.monotonic() > fresh.until:
            raise fresh.stale()
        started = time.perf_counter()
        presented = presented or Presentation()
        dpop, deferred = recording(self._forwarded, presented.dpop_proof)
        try:
            if is_chain(token):
                return self._offline_leaf(token, presented, dpop, audience=audience)
            claims = self.verify(token, (KIND_AGENT,), audience=audience)
            self._check_binding(claims, token, presented, dpop)
            assure(self._kernel, claims, ctx or RequestContext(), audit_denial=True)
            return claims
        except TokenRejected as exc:
            self._metrics.validation_failures.labels(exc.category).inc()
            raise
        finally:
            self._observe(started)
            if deferred is not None:
                deferred.defer(lambda: self._replayed_forward(refusal))

    def _observe(self, started: float) -> None:
        """The validation's time, observed once per request (``core.readahead.count``:
        a first half run again after a read passes here each time)."""
        elapsed = time.perf_counter() - started
        count(lambda: self._metrics.validation_seconds.observe(elapsed))

    def _replayed_forward(
        self, refusal: Callable[[TokenRejected], tuple[TaskleaseError, AuditEntry]] | None
    ) -> tuple[TaskleaseError, AuditEntry] | Exception:
        """A forwarded proof found used when it was recorded: the token is not valid for
        the request. Without ``refusal`` an answer, not a refusal of the resource server
        (not audited)."""
        self._metrics.validation_failures.labels("binding").inc()
        rejected = TokenRejected(PROOF_REPLAYED, "binding", dpop_proof=True)
        return rejected if refusal is None else refusal(rejected)

    def verify(
        self,
        token: str,
        kinds: frozenset[str] | tuple[str, ...],
        *,
        audience: str | None = None,
        any_audience: bool = False,
    ) -> Claims:
        """A signed JWT or a by-reference token, verified and its claims checked.

        Binding and high assurance are the caller's to check. Raises TokenRejected.
        """
        if not is_reference_token(token):
            return self._keys.validator.validate(
                token, kinds, audience=audience, any_audience=any_audience
            )
        record = self._store.get_reference_token(reference_hash(token))
        if record is None:
            raise TokenRejected("unknown by-reference token", "signature")
        if record.kind not in kinds:
            raise TokenRejected("typ not allowed", "signature")
        try:
            claims = claims_from_reference(record)
        except ClaimsError as exc:
            raise TokenRejected(f"by-reference token: {exc}", "claims") from None
        return self._keys.validator.check_claims(
            claims, audience=audience, any_audience=any_audience
        )

    def _check_binding(
        self,
        claims: Claims,
        token: str,
        presented: Presentation,
        dpop: DPoPVerifier | None = None,
    ) -> None:
        try:
            check_binding(
                claims.raw.get("cnf"),
                token,
                presented,
                dpop=self._dpop if dpop is None else dpop,
                now=self._kernel.now(),
            )
        except BindingError as exc:
            raise TokenRejected(
                exc.reason,
                "binding",
                dpop_proof=isinstance(exc, DPoPProofError),
                dpop_nonce=exc.nonce if isinstance(exc, DPoPNonceRequired) else "",
            ) from None

    def authenticate(
        self,
        authorization: str | None,
        ctx: RequestContext,
        *,
        kinds: frozenset[str] = ALL_KINDS,
        scope: str | None = None,
        admin_scope: str | None = None,
    ) -> Claims:
        """Check a request's bearer credential; audit and raise on any failure.

        401 ``unauthorized`` for a missing, malformed, invalid, expired or revoked token
        (one generic detail outward, the reason in the audit log); 403
        ``insufficient_scope`` for a valid token of the wrong kind or without ``scope``
        (``admin_scope``: required of operators' tokens only); 503
        ``service_unavailable`` while the revocation index is not confirmed current.
        """
        fresh = self._fresh
        if fresh.monotonic() > fresh.until:
            raise fresh.stale()
        kernel = self._kernel
        base = AuditEntry(
            "token_auth_failed", outcome="denied", resource=ctx.path, request_id=ctx.request_id
        )
        if not authorization:
            raise kernel.deny(
                Unauthorized("missing authorization header"),
                replace(
                    base, detail=f"missing authorization header | {detail_field('path', ctx.path)}"
                ),
            )
        try:
            credentials = authorization_credentials(authorization)
        except MalformedAuthorization as exc:
            raise kernel.deny(
                InvalidRequest("malformed authorization header", challenge=INVALID_REQUEST),
                replace(
                    base,
                    detail=f"malformed authorization header: {reason_text(exc)} | "
                    f"{detail_field('path', ctx.path)}",
                ),
            ) from None
        if credentials is None:
            raise kernel.deny(
                Unauthorized("invalid authorization scheme"),
                replace(
                    base, detail=f"invalid authorization scheme | {detail_field('path', ctx.path)}"
                ),
            )
        scheme, token = credentials
        started = time.perf_counter()
        offline = is_chain(token)
        presented = Presentation(
            scheme=scheme,
            cert_thumbprint=ctx.cert_thumbprint,
            dpop_proof=ctx.dpop,
            htm=ctx.method,
            htu=ctx.url,
        )
        dpop, deferred = recording(self._dpop, ctx.dpop)
        try:
            if offline:
                # An offline chain is presented as DPoP with the leaf key's proof, on the
                # few routes that accept one (docs/broker-optional.md).
                claims = self._offline_leaf(token, presented, dpop, any_audience=True)
            else:
                # Agent tokens may be audience-bound to a resource and still manage
                # themselves here (renew, release, delegate): docs/decisions.md,
                # "Audience-bound tokens".
                claims = self.verify(token, ALL_KINDS, any_audience=True)
                if claims.kind != KIND_AGENT and not any(
                    a in claims.aud for a in self._config.audience
                ):
                    raise TokenRejected("audience mismatch", "audience")
                self._check_binding(claims, token, presented, dpop)
                assure(kernel, claims, ctx, audit_denial=False)
        except TokenRejected as exc:
            # A proof checked before the refusal is spent by it too (deferred: below).
            raise kernel.deny(*self._rejected(exc, base, scheme, ctx)) from None
        finally:
            self._observe(started)
            if deferred is not None:
                replayed = TokenRejected(PROOF_REPLAYED, "binding", dpop_proof=True)
                deferred.defer(lambda: self._rejected(replayed, base, scheme, ctx))
        if offline and KIND_OFFLINE not in kinds:
            # Renewing, delegating, releasing... are a registered holder's: an offline
            # leaf derives further offline, or its holder registers (docs/decisions.md).
            raise self._scope_violation(
                claims,
                ctx,
                "an offline-derived credential is not accepted here",
                "offline chain not accepted on this route",
                scheme,
            )
        if claims.kind not in kinds:
            raise self._scope_violation(
                claims,
                ctx,
                "this kind of token is not accepted here",
                f"token kind {claims.kind} not accepted",
                scheme,
            )
        if claims.kind == KIND_ADMIN and admin_scope is not None:
            scope = admin_scope
        if scope is not None and not scope_rules.is_subset([scope], held_scopes(claims)):
            raise self._scope_violation(
                claims,
                ctx,
                f"token lacks required scope: {scope}",
                f"required={scope} | actual={','.join(claims.scope)}",
                scheme,
                scope,
            )
        return claims

    def _rejected(
        self, exc: TokenRejected, base: AuditEntry, scheme: str, ctx: RequestContext
    ) -> tuple[TaskleaseError, AuditEntry]:
        """A presented token refused (``exc``): the error (401) and the entry to audit it."""
        self._metrics.validation_failures.labels(exc.category).inc()
        error = Unauthorized(
            "token verification failed",
            reason=exc.reason,
            challenge=_challenge(scheme, exc),
            dpop_nonce=exc.dpop_nonce or None,
        )
        detail = (
            f"token verification failed: {reason_text(exc.reason)} | "
            f"{detail_field('path', ctx.path)}"
        )
        return error, replace(base, detail=detail)

    def _scope_violation(
        self,
        claims: Claims,
        ctx: RequestContext,
        outward: str,
        why: str,
        scheme: str,
        required: str | None = None,
    ) -> TaskleaseError:
        """Audit a valid token that may not do this here; the error to raise (403)."""
        self._metrics.scope_rejections.labels(ctx.route or "unmatched").inc()
        entry = replace(
            about(claims),
            event_type="scope_violation",
            outcome="denied",
            resource=ctx.path,
            request_id=ctx.request_id,
            detail=f"scope_violation | {why} | {detail_field('path', ctx.path)} by={claims.sub}",
        )
        error = InsufficientScope(
            outward, challenge=(scheme, "insufficient_scope"), required_scope=required
        )
        return self._kernel.deny(error, entry)

    def introspect(
        self, caller: Claims, *, token: object, audience: object = None, ctx: RequestContext
    ) -> dict[str, Any]:
        """RFC 7662 introspection of an agent access token (JWT or by-reference).

        Returns the claims with ``active: true``, or exactly :data:`INACTIVE` for anything
        else: unknown, malformed, expired, revoked, another kind of token, for another
        ``audience`` when one is given, or (for an app caller) a token of another app's
        agents. The binding (``cnf``) is reported, not checked: the resource server holds
        the connection and the proof. Critical scopes are checked against the store.

        Raises:
            InvalidRequest: ``token`` missing or not a string.
        """
        if not isinstance(token, str) or not token:
            raise InvalidRequest("missing required field: token")
        wanted = validate_resource(audience, field="audience")
        try:
            offline = is_chain(token)
            if offline:
                # The binding is reported (cnf: the leaf key's thumbprint), not checked;
                # a critical scope is checked against the store in _offline_leaf.
                claims = self._offline_leaf(
                    token, None, None, audience=wanted, any_audience=wanted is None
                )
            else:
                claims = self.verify(
                    token, (KIND_AGENT,), audience=wanted, any_audience=wanted is None
                )
            if caller.kind == KIND_APP and claims.client_id != caller.client_id:
                return dict(INACTIVE)
            if not offline:
                assure(self._kernel, claims, ctx, audit_denial=True)
        except TokenRejected as exc:
            self._metrics.validation_failures.labels(exc.category).inc()
            return dict(INACTIVE)
        return introspection_response(claims)
