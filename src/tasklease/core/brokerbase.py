"""The Broker's wiring and what agents, apps and resource servers call through it.

:class:`BrokerBase` builds the authority kernel and every service (registration, renewal,
delegating, revoking, tokencheck, liveness, handshake, discovery, ...) and delegates the
agent-side operations to them; :class:`tasklease.core.broker.Broker` adds the operators'.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from tasklease.core.activeagents import ACTIVE_AGENTS_DUTY, ACTIVE_AGENTS_SLOW, live_agents
from tasklease.core.apps import Apps
from tasklease.core.attestation import AttestationService
from tasklease.core.audit import Deferred
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.binding import DPoPNonces, StoreProofLedger
from tasklease.core.calls import CallCount, CallCounting
from tasklease.core.clientlimits import ADMIN_SIGN_IN, APP_SIGN_IN, ClientLimit, Limit
from tasklease.core.clock import Clock, SystemClock
from tasklease.core.config import Config
from tasklease.core.delegating import Delegating
from tasklease.core.discovery import Discovery
from tasklease.core.errors import (
    Forbidden,
    InsufficientScope,
    InvalidRequest,
    RateLimited,
    TaskleaseError,
    Unauthorized,
    Unavailable,
)
from tasklease.core.exchange import Exchange, Exchanged, ExchangeRequest
from tasklease.core.federation import Federation
from tasklease.core.feedcursor import FeedPage
from tasklease.core.feedstreams import FeedStreams, Slot, StreamSlots
from tasklease.core.freshness import Freshness
from tasklease.core.grantadmin import GrantTypes
from tasklease.core.handshake import Handshakes
from tasklease.core.horizon import SafeHorizon
from tasklease.core.identity import NonceIssuer
from tasklease.core.inventory import Inventory
from tasklease.core.kernel import IssuedToken, Kernel, RequestContext, new_denial_id
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import Liveness
from tasklease.core.metrics import Metrics
from tasklease.core.mutual import HandshakeResult
from tasklease.core.offlineaudit import OfflineAudit
from tasklease.core.operators import UNKNOWN_OPERATOR, Operators, operator_subject
from tasklease.core.peerfeed import PeerFeeds
from tasklease.core.pending import Pending, aanswer, asettle, complete
from tasklease.core.readiness import Readiness
from tasklease.core.records import (
    AgentRecord,
    AgentSession,
    AuditEvent,
    AuditQuery,
    DiscoveryBinding,
    RevocationRecord,
)
from tasklease.core.refusalbudget import RefusalBudget
from tasklease.core.registration import PendingRegistration, Registration
from tasklease.core.renewal import Renewal
from tasklease.core.revocation import RevocationIndex
from tasklease.core.revoking import Revoking
from tasklease.core.rollback import CheckpointAnchors
from tasklease.core.signing import SigningKeys
from tasklease.core.status import VERSION, health
from tasklease.core.store import Store
from tasklease.core.tenantids import DEFAULT_TENANT
from tasklease.core.tenants import Tenants
from tasklease.core.tokencheck import ALL_KINDS, OPERATOR_KINDS, TokenCheck
from tasklease.core.tokenids import TokenIds, token_id_label
from tasklease.core.tokens import Claims
from tasklease.core.transparency import AuditTransparency
from tasklease.core.trustbundle import TrustBundles
from tasklease.core.validation import TokenRejected, Validator
from tasklease.core.workload import WorkloadIdentities
from tasklease.rules.binding import DPoPVerifier, Presentation

__all__ = ["FEED_SCOPE", "BrokerBase", "ConsoleFormRefusal", "SignIn"]

_log = logging.getLogger("tasklease.broker")

T = TypeVar("T")

SignIn = Literal["admin", "app"]
"""Which sign-in limit an attempt spends (:meth:`BrokerBase.admit_sign_in`)."""

ConsoleFormRefusal = Literal["cross_origin", "stale_form", "plain_http"]
"""Why a console form was refused (:meth:`BrokerBase.refuse_console_form`)."""
_FORM_REFUSED = "this form is stale or came from another site"
_PLAIN_HTTP_REFUSED = "the console needs TLS beyond this machine"
_SIGN_IN_UNAVAILABLE = "signing in is unavailable just now: try again shortly"

# What an operator's token needs to read the revocation feed or introspect: the
# revocation power (the admin and operator roles hold it; the auditor role does not).
FEED_SCOPE = "admin:revoke:*"


class BrokerBase:
    """The Broker's services and the operations of agents, apps and resource servers:
    registration, presented tokens, renewal, delegation, exchange, revocation, call
    budgets, peers. Use :class:`tasklease.core.broker.Broker`, which adds the operators'.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        nonce_secret: bytes | None = None,
        nonce_issuer: NonceIssuer | None = None,
        monotonic: Callable[[], float] | None = None,
        stream_slots: StreamSlots | None = None,
        anchors: CheckpointAnchors | None = None,
        log_keyring: KeyRing | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.revocations = RevocationIndex()
        # What pruning takes as passed (core.horizon) and leases are dated by
        # (Kernel.lease_now): elapsed time is read from ``monotonic``, by default the
        # system's monotonic clock, or an injected clock itself.
        elapsed = monotonic or (time.monotonic if clock is None else self.clock.now)
        # Replicas that share a database must share this secret (server.build_broker
        # keeps it beside the signing keys); a lone in-process broker may use a random one.
        self.nonces = nonce_issuer or NonceIssuer(nonce_secret or os.urandom(32), config.nonce_ttl)
        # Token ids carry a MAC under a key derived from it (core.tokenids): every replica
        # mints and recognises the same ids, and a federated peer cannot make one up.
        token_ids = TokenIds(self.nonces.derived_key(token_id_label(config.trust_domain)))
        self.kernel = kernel = Kernel(
            config,
            store,
            self.clock,
            self.metrics,
            self.revocations,
            monotonic=elapsed,
            token_ids=token_ids,
        )
        # Shared with the brokers made beside this one (tenancy), which are handed its
        # clock: their elapsed time is this one's, not that clock's.
        self.elapsed = elapsed
        self.horizon = horizon = SafeHorizon(self.clock, store, self.metrics, monotonic=elapsed)
        # Each client's budget of audited refusals (admit_client; docs/decisions.md 138),
        # and its sign-in limits (admit_sign_in; 148): refused by runs, one event each.
        self.refusals = RefusalBudget(
            config.refusal_rate,
            config.refusal_burst,
            monotonic=elapsed,
            deny=kernel.arecord_denial,
            new_denial_id=new_denial_id,
        )
        sign_in_limits: tuple[tuple[SignIn, float, int, Limit], ...] = (
            ("admin", config.admin_auth_rate, config.admin_auth_burst, ADMIN_SIGN_IN),
            ("app", config.app_auth_rate, config.app_auth_burst, APP_SIGN_IN),
        )
        self.sign_in_limits: dict[SignIn, ClientLimit] = {
            kind: ClientLimit(
                rate,
                burst,
                limit,
                monotonic=elapsed,
                deny=kernel.arecord_denial,
                new_denial_id=new_denial_id,
            )
            for kind, rate, burst, limit in sign_in_limits
        }
        # The revocation streams open in this process, by reader and in all: one table
        # for every tenant's broker (``stream_slots``, the default tenant's), whose caps
        # are the process's (docs/decisions.md 140).
        if stream_slots is None:
            stream_slots = StreamSlots(
                config.feed_streams_per_reader,
                config.feed_streams_per_process,
                observe=self.metrics.feed_streams.set,
            )
        self.stream_slots = stream_slots
        self._feed_streams = FeedStreams(kernel, self.stream_slots)
        self.audit = kernel.audit
        self.started_at = kernel.started_at
        # Cleared once, for good, when the process stops serving this broker's tenant
        # (stop_serving: the tenant was removed, or the process is stopping).
        self._serving = True
        # When tasklease_active_agents may be counted again (time.monotonic()).
        self._active_due = 0.0
        # Names this process as the holder of store leases (the liveness sweeper's).
        self.instance_id = secrets.token_hex(8)
        # DPoP proofs are single use across workers and replicas: the store remembers them.
        # Proofs made for the broker carry its nonce when dpop_nonce = "required" (RFC 9449
        # sections 8 and 9); proofs a resource server forwards to validate never do.
        ledger = StoreProofLedger(kernel)
        self.dpop_nonces = DPoPNonces(
            self.nonces.derived_key(b"dpop-nonce"), config.dpop_proof_window
        )
        required = self.dpop_nonces if config.dpop_nonce == "required" else None
        # Kept clock_skew past their window: each replica prunes the store by its own clock.
        window, skew = config.dpop_proof_window, config.clock_skew
        self.dpop = DPoPVerifier(window, ledger=ledger, nonces=required, retain=skew)
        forwarded = DPoPVerifier(window, ledger=ledger, retain=skew)
        self._keys = keys = SigningKeys(kernel, keyring)
        self._freshness = freshness = Freshness(kernel, horizon)
        self._tokens = tokens = TokenCheck(kernel, keys, self.dpop, freshness, forwarded=forwarded)
        # Workload attestors (core.attestation): evidence in place of a launch token.
        self.attestation = AttestationService(kernel)
        self._registration = Registration(kernel, keys, self.nonces, self.dpop, self.attestation)
        self._renewal = Renewal(kernel, keys, self.nonces, self.dpop)
        self._delegating = Delegating(kernel, keys)
        self._revoking = Revoking(kernel, tokens, horizon)
        self._apps = Apps(kernel, keys, self.dpop)
        # Structured grants: operators' grant types, and call budgets (max_calls).
        self.grant_types = GrantTypes(kernel)
        self._calls = CallCounting(kernel)
        # Late reports of offline derivations and uses (docs/audit.md, "Reported late").
        self.offline_audit = OfflineAudit(kernel, tokens.offline)
        self._operators = Operators(kernel, keys, self.nonces)
        self._tenants = Tenants(kernel)
        self._liveness = Liveness(kernel)
        self._handshakes = Handshakes(kernel, keys, self.nonces.derived_key(b"handshake-held"))
        self._discovery = Discovery(kernel)
        self._workload = WorkloadIdentities(kernel, keys)
        # Federated trust domains (core.federation): records, bundles, trusted keys.
        self.federation = Federation(kernel)
        # What operators see (core.inventory): listings, trees, tasks; read-only.
        self.inventory = Inventory(kernel)
        self._peer_feeds = PeerFeeds(kernel)
        self._exchange = Exchange(kernel, keys, tokens, self.federation, self._peer_feeds)
        self._trust_bundles = TrustBundles(kernel, keys, monotonic=elapsed)
        # The transparent audit log (core.transparency): log key, checkpoints, proofs,
        # witnesses, on the Broker as broker.transparency. ``anchors`` keep the last
        # checkpoint signed beside the log key (core.rollback; the server gives them).
        # ``log_keyring`` is the log key as opened by whoever opened the signing keys
        # (loaded, never made, in a serving process); without one it is made in
        # ``<key_dir>/log`` where missing (brokers built in process).
        self.transparency = AuditTransparency(
            kernel, keyring, self.instance_id, anchors=anchors, ring=log_keyring
        )
        # Health and readiness from checks on threads of their own (core.readiness): the
        # answers never wait on storage longer than the checks' bound.
        self.readiness = Readiness(
            kernel,
            self.health,
            skeleton=lambda: {"version": VERSION, "signing_kid": keys.ring.active_kid},
            revocations_current=freshness.current,
            keyring=lambda: keys.ring,
        )
        freshness.load()

    # --- what rotation and the store watch replace ---------------------------------------

    @property
    def keyring(self) -> KeyRing:
        """The current key ring (one signing key, verify keys by ``kid``)."""
        return self._keys.ring

    @property
    def validator(self) -> Validator:
        """The validator over the current key ring."""
        return self._keys.validator

    @property
    def _monotonic(self) -> Callable[[], float]:
        """The clock the revocation index's freshness bound is read against."""
        return self._freshness.monotonic

    @_monotonic.setter
    def _monotonic(self, monotonic: Callable[[], float]) -> None:
        self._freshness.monotonic = monotonic

    @property
    def _current_until(self) -> float:
        """The monotonic time after which the revocation index is not trusted current."""
        return self._freshness.until

    @_current_until.setter
    def _current_until(self, until: float) -> None:
        self._freshness.until = until

    # --- identity: challenge and registration (core.registration) ------------------------

    def challenge(self) -> tuple[str, int]:
        """A fresh nonce and its lifetime in seconds."""
        return self._registration.challenge()

    def offered_dpop_nonce(self) -> str:
        """The DPoP nonce a proof sent to this broker must carry now (RFC 9449 sections 8
        and 9), for an answer to offer in ``DPoP-Nonce``; "" unless ``dpop_nonce`` is
        ``required``. The challenge's answer offers it, so that a resumption's proof, whose
        refusal is the one generic 401 and spends the challenge, can carry it from the
        start."""
        if self.config.dpop_nonce != "required":
            return ""
        return self.dpop_nonces.issue(self.clock.now())

    def register(
        self,
        *,
        launch_token: object,
        nonce: object,
        public_key: object,
        signature: object,
        orch_id: object,
        task_id: object,
        requested_scope: object,
        ctx: RequestContext,
        resource: object = None,
        attestation: object = None,
        declared: object = None,
        authorization_details: object = None,
    ) -> IssuedToken:
        """Register an agent instance and issue its first token (:class:`Registration`):
        with a launch token, workload evidence (``attestation``), or both."""
        return self._registration.register(
            launch_token=launch_token,
            nonce=nonce,
            public_key=public_key,
            signature=signature,
            orch_id=orch_id,
            task_id=task_id,
            requested_scope=requested_scope,
            ctx=ctx,
            resource=resource,
            attestation=attestation,
            declared=declared,
            authorization_details=authorization_details,
        )

    def prepare_register(
        self,
        *,
        launch_token: object,
        nonce: object,
        public_key: object,
        signature: object,
        orch_id: object,
        task_id: object,
        requested_scope: object,
        ctx: RequestContext,
        resource: object = None,
        attestation: object = None,
        declared: object = None,
        authorization_details: object = None,
    ) -> PendingRegistration:
        """The first half of :meth:`register` for an event loop: checks and signing only."""
        return self._registration.prepare_register(
            launch_token=launch_token,
            nonce=nonce,
            public_key=public_key,
            signature=signature,
            orch_id=orch_id,
            task_id=task_id,
            requested_scope=requested_scope,
            ctx=ctx,
            resource=resource,
            attestation=attestation,
            declared=declared,
            authorization_details=authorization_details,
        )

    async def complete_register(self, pending: PendingRegistration) -> IssuedToken:
        """Write what :meth:`prepare_register` decided (group-committed), then answer."""
        return await self._registration.complete_register(pending)

    # --- presented tokens (core.tokencheck) ----------------------------------------------

    # --- the write paths in two halves (core.pending), for an event loop ------------------

    def prepare_renew(self, claims: Claims, ctx: RequestContext) -> Pending[IssuedToken]:
        """:meth:`renew` checked and signed, not written; :meth:`answer` commits it."""
        return self._renewal.prepare_renew(claims, ctx)

    def prepare_release(self, claims: Claims, ctx: RequestContext) -> Pending[None]:
        """:meth:`release`, not written; :meth:`answer` commits it."""
        return self._renewal.prepare_release(claims, ctx)

    def prepare_delegate(self, claims: Claims, **request: Any) -> Pending[IssuedToken]:
        """:meth:`delegate` checked and signed, not written; :meth:`answer` commits it."""
        return self._delegating.prepare_delegate(claims, **request)

    def prepare_revoke(
        self, claims: Claims, *, level: object, target: object, ctx: RequestContext
    ) -> Pending[int]:
        """:meth:`revoke` checked, not written; :meth:`answer` commits it."""
        return self._revoking.prepare_revoke(claims, level=level, target=target, ctx=ctx)

    def prepare_revoke_token(
        self, caller: Claims, *, token: object, token_type_hint: object, ctx: RequestContext
    ) -> Pending[bool]:
        """:meth:`revoke_token` checked, not written; :meth:`answer` commits it."""
        return self._revoking.prepare_revoke_token(
            caller, token=token, token_type_hint=token_type_hint, ctx=ctx
        )

    async def answer(self, deferred: Deferred[Pending[T]]) -> T:
        """Write what a ``prepare_*`` run under :func:`deferring` decided: its deferred
        audit events, then its unit (group-committed, awaited without a thread)."""
        return await aanswer(self.kernel, deferred)

    async def settle(self, deferred: Deferred[T]) -> T:
        """The value of a read run under :func:`deferring`, once its deferred audit
        events (a refused authentication's, say) are durable."""
        return await asettle(self.kernel, deferred)

    # --- each client's budget of refusals (core.refusalbudget) ---------------------------

    async def admit_client(self, client: str, *, request_id: str = "") -> RateLimited | None:
        """``None`` when ``client`` (an address; IPv6 folded to its /64) may be served,
        else the ``rate_limited`` refusal to answer before any work: it has spent its
        budget of audited refusals (:meth:`RefusalBudget.admit`). Serve an admitted
        request inside ``self.refusals.charging(client)``."""
        return await self.refusals.admit(client, request_id=request_id)

    async def admit_sign_in(
        self, kind: SignIn, client: str, *, request_id: str = ""
    ) -> RateLimited | None:
        """``None`` when ``client`` may make one more sign-in attempt of ``kind`` (an
        attempt taken), else the ``rate_limited`` refusal to answer before any work:

        - ``"admin"``: the admin secret's and named operators' sign-ins, through the API
          and the console (``admin_auth_rate``, ``admin_auth_burst``);
        - ``"app"``: app sign-ins, and client credentials at the token endpoint
          (``app_auth_rate``, ``app_auth_burst``).

        Refused by runs (:meth:`ClientLimit.admit`): the first refusal of a run writes one
        ``admin_auth_rate_limited`` or ``app_auth_rate_limited`` event naming the client,
        and every refusal of the run carries its ``denial_id``."""
        return await self.sign_in_limits[kind].admit(client, request_id=request_id)

    def validate(
        self,
        token: str,
        *,
        audience: str | None = None,
        presented: Presentation | None = None,
        ctx: RequestContext | None = None,
    ) -> Claims:
        """Validate an agent access token; raises TokenRejected (:class:`TokenCheck`)."""
        return self._tokens.validate(token, audience=audience, presented=presented, ctx=ctx)

    def authenticate(
        self,
        authorization: str | None,
        ctx: RequestContext,
        *,
        kinds: frozenset[str] = ALL_KINDS,
        scope: str | None = None,
    ) -> Claims:
        """Check a request's bearer credential; audit and raise on any failure."""
        return self._tokens.authenticate(authorization, ctx, kinds=kinds, scope=scope)

    def authenticate_feed_reader(self, authorization: str | None, ctx: RequestContext) -> Claims:
        """Authenticate a revocation-feed reader: an app token, or an operator's token
        with ``admin:revoke:*`` (an auditor's is refused)."""
        return self._tokens.authenticate(
            authorization, ctx, kinds=OPERATOR_KINDS, admin_scope=FEED_SCOPE
        )

    def authenticate_introspector(self, authorization: str | None, ctx: RequestContext) -> Claims:
        """Authenticate an introspection caller: an app token, or an operator's token with
        ``admin:revoke:*`` (an auditor's is refused).

        A caller without that privilege is refused with 401, not 403 (RFC 7662 section
        2.3); the refusal keeps its audit event and ``denial_id``.
        """
        try:
            return self._tokens.authenticate(
                authorization, ctx, kinds=OPERATOR_KINDS, admin_scope=FEED_SCOPE
            )
        except InsufficientScope as exc:
            refused = Unauthorized(exc.detail, reason=exc.reason, challenge=exc.challenge)
            refused.denial_id = exc.denial_id
            raise refused from None

    def introspect(
        self, caller: Claims, *, token: object, audience: object = None, ctx: RequestContext
    ) -> dict[str, Any]:
        """RFC 7662 introspection of an agent access token (JWT or by-reference)."""
        return self._tokens.introspect(caller, token=token, audience=audience, ctx=ctx)

    # --- the console's forms (http.console) ---------------------------------------------

    async def refuse_console_form(
        self, reason: ConsoleFormRefusal, ctx: RequestContext, *, operator: str, origin: str
    ) -> TaskleaseError:
        """Audit a console form refused before it did anything: ``reason`` says whether it
        came from another origin (``cross_origin``) or lacked its page's CSRF value
        (``stale_form``), a forgery's two marks, or came over plain HTTP from beyond
        loopback (``plain_http``: a sign-in's secret, a session's cookie crossed the
        network in clear; any console request so sent is refused so). One
        ``console_form_refused`` event names
        the form's path, the ``Origin`` sent (``-`` for none), the client's address and
        the operator whose session the request carried (``operator``, "" when none was
        authenticated); the generic ``Forbidden`` with its ``denial_id`` is returned for
        the console to answer. Its ``denial_id`` spends one of the client's refusal
        budget, as every audited refusal does."""
        sent = clipped(origin, 256) if origin else "-"
        return await self.kernel.adeny(
            Forbidden(_PLAIN_HTTP_REFUSED if reason == "plain_http" else _FORM_REFUSED),
            AuditEntry(
                "console_form_refused",
                outcome="denied",
                agent_id=operator,
                resource=ctx.path,
                request_id=ctx.request_id,
                detail=f"console form refused: {reason_text(reason)} | "
                f"{detail_field('origin', sent)} "
                f"from {ctx.remote}",
            ),
        )

    async def refuse_console_sign_in(
        self, cause: TaskleaseError, ctx: RequestContext, *, operator: str
    ) -> TaskleaseError:
        """Audit a console sign-in that failed before the broker audited it (``cause``,
        with no ``denial_id``): a form no operator could sign in with (a malformed name,
        no secret), refused as a wrong secret is (``Unauthorized``); or the store was
        unavailable while it ran, answered ``Unavailable`` (come back after the cause's
        ``retry_after``). One ``operator_auth_failed`` event (``admin_auth_failed`` for
        the admin secret, an empty ``operator``) holds the cause's safe description; the
        returned error carries its ``denial_id`` and no cause. Raises ``Unavailable``
        when the event cannot be written (no refusal can then be named)."""
        # The name as typed is kept only when an operator has it (``Operators.shown_name``).
        shown = await asyncio.to_thread(self._operators.shown_name, operator) if operator else ""
        subject = operator_subject(shown) if shown and shown != UNKNOWN_OPERATOR else ""
        who = detail_field("operator", shown if operator else "admin")
        error: TaskleaseError = Unauthorized("invalid credentials")
        why = clipped(cause.detail, 200)
        if isinstance(cause, Unavailable):
            error = Unavailable(_SIGN_IN_UNAVAILABLE, retry_after=cause.retry_after or 1)
            why = f"the store was unavailable ({why})"
        return await self.kernel.adeny(
            error,
            AuditEntry(
                "operator_auth_failed" if operator else "admin_auth_failed",
                outcome="denied",
                agent_id=subject,
                request_id=ctx.request_id,
                detail=f"console sign-in failed: {reason_text(why)} | {who} from {ctx.remote}",
            ),
        )

    # --- app clients that do not authenticate (core.appauth) ----------------------------

    def refuse_app_client(self, reason: str, ctx: RequestContext) -> TaskleaseError:
        """Audit an app client refused before any app could be named: no client
        credentials, a malformed or non-Basic ``Authorization`` header, an assertion type
        other than RFC 7523's (``reason`` says which, for the audit log only).

        It is the refusal every failed app sign-in gets (:class:`AppSignIn`): one
        ``app_auth_failed`` event, and the generic ``Unauthorized`` with its
        ``denial_id``, returned for the caller to raise.
        """
        return self._apps.refuse_app_client(reason, ctx)

    # --- renewal, release, resume, delegation (core.renewal, core.delegating) ------------

    def renew(self, claims: Claims, ctx: RequestContext) -> IssuedToken:
        """Issue a successor and revoke the predecessor, atomically (:class:`Renewal`)."""
        return self._renewal.renew(claims, ctx)

    def release(self, claims: Claims, ctx: RequestContext) -> None:
        """The holder gives its token up (revoked at level ``token``)."""
        return self._renewal.release(claims, ctx)

    def resume(
        self, *, agent_id: object, nonce: object, signature: object, ctx: RequestContext
    ) -> IssuedToken:
        """A fresh token for a restarted agent that proves its registered key."""
        return self._renewal.resume(agent_id=agent_id, nonce=nonce, signature=signature, ctx=ctx)

    def prepare_resume(
        self, *, agent_id: object, nonce: object, signature: object, ctx: RequestContext
    ) -> Pending[IssuedToken]:
        """:meth:`resume`, not yet written (``core.pending``)."""
        return self._renewal.prepare_resume(
            agent_id=agent_id, nonce=nonce, signature=signature, ctx=ctx
        )

    def delegate(
        self,
        claims: Claims,
        *,
        delegate_to: object,
        scope: object,
        ttl: object,
        ctx: RequestContext,
        resource: object = None,
        authorization_details: object = None,
    ) -> IssuedToken:
        """Hand a subset of the caller's scope and grants to another registered agent."""
        return self._delegating.delegate(
            claims,
            delegate_to=delegate_to,
            scope=scope,
            ttl=ttl,
            ctx=ctx,
            resource=resource,
            authorization_details=authorization_details,
        )

    def exchange_token(self, request: ExchangeRequest, ctx: RequestContext) -> Exchanged:
        """RFC 8693 token exchange: narrow a token, or carry a federated domain's token
        across to a local agent (:class:`~tasklease.core.exchange.Exchange`)."""
        return self._exchange.exchange(request, ctx)

    def hold_feed_lease(self, ttl: float) -> bool:
        """Take or extend the lease of the one process that follows the federated
        domains' revocation feeds (:class:`~tasklease.core.peerfeed.PeerFeeds`)."""
        return self._peer_feeds.hold_lease(self.instance_id, ttl)

    def federation_feed_heard(self, trust_domain: str) -> None:
        """Record that ``trust_domain``'s revocation feed is current now (the follower,
        every few seconds while it is: :class:`~tasklease.core.peerfeed.PeerFeeds`)."""
        self._peer_feeds.heard(trust_domain)

    def apply_federated_revocations(
        self,
        trust_domain: str,
        records: Sequence[RevocationRecord],
        *,
        sent_at: float | None = None,
    ) -> list[RevocationRecord]:
        """Make a federated domain's revocation feed entries ours; the entries written."""
        return self._peer_feeds.apply(trust_domain, records, sent_at=sent_at)

    # --- revocation (core.revoking, core.freshness) --------------------------------------

    def revoke(self, claims: Claims, *, level: object, target: object, ctx: RequestContext) -> int:
        """Revoke at ``token``, ``agent``, ``task`` or ``chain`` level; idempotent."""
        return self._revoking.revoke(claims, level=level, target=target, ctx=ctx)

    def revoke_token(
        self, caller: Claims, *, token: object, token_type_hint: object, ctx: RequestContext
    ) -> bool:
        """RFC 7009 revocation by a token holder; True iff something was revoked."""
        return self._revoking.revoke_token(
            caller, token=token, token_type_hint=token_type_hint, ctx=ctx
        )

    def end_session(self, claims: Claims, *, ctx: RequestContext) -> None:
        """End an operator's own token (sign-out); durable before it returns."""
        self._revoking.end_session(claims, ctx=ctx)

    def revocation_feed(self, cursor: int | None, anchor: str | None = None) -> FeedPage:
        """Revocation entries in ``seq`` order and the cursor to continue from; a
        snapshot when ``cursor`` and ``anchor`` no longer name the store's history
        (:meth:`Revoking.revocation_feed`)."""
        return self._revoking.revocation_feed(cursor, anchor)

    async def open_feed_stream(self, reader: Claims, ctx: RequestContext) -> Slot:
        """A slot for one more revocation stream of ``reader`` (an authenticated feed
        reader), released when the stream ends, however it ends; raises an audited
        ``RateLimited`` over ``feed_streams_per_reader`` or ``feed_streams_per_process``
        (:meth:`FeedStreams.open`)."""
        return await self._feed_streams.open(reader, ctx)

    @property
    def revocations_current(self) -> bool:
        """Whether this process's revocation index is confirmed current: always without a
        store watch; with one, until ``revocation_staleness_bound`` passes without a
        check-in (:class:`~tasklease.core.freshness.Freshness`). While it is not, what
        tells others this process is current (a feed's keepalive) must stop."""
        return self._freshness.current()

    @property
    def revocation_reloads(self) -> int:
        """How many times this process loaded its revocations again because the store no
        longer held the last one it had read (the database went back in time)."""
        return self._freshness.reloads

    def add_revocation_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every batch of revocations, and once more when the
        broker stops serving (:meth:`stop_serving`); returns its remover.

        It runs on the thread that applied them, so it must be cheap and thread-safe,
        for example ``loop.call_soon_threadsafe(event.set)``; it carries no data: the
        listener reads :meth:`revocation_feed` from its cursor, and :attr:`serving`.
        """
        return self.kernel.add_listener(listener)

    @property
    def serving(self) -> bool:
        """Whether this process still serves the broker's tenant (:meth:`stop_serving`)."""
        return self._serving

    def stop_serving(self) -> None:
        """Note that this process no longer serves the broker's tenant (it was removed,
        here or by another process: ``tasklease.tenancy``), and wake the revocation
        listeners: the feed ends every stream it has open on the tenant
        (``tasklease.http.feed``) rather than keep them beating. For good: the tenancy
        never hands out a broker that stopped serving."""
        self._serving = False
        # Its index leaves the process's tasklease_revocation_entries.
        self.metrics.revocations_held(self.kernel.revocations, 0)
        self.kernel.wake_listeners()

    def prune(self) -> int:
        """Drop revocation entries, nonces and launch tokens nothing can use any more;
        then, the default tenant's broker, count the deployment's live agents
        (:meth:`refresh_active_agents`): the housekeeping tick."""
        removed = self._revoking.prune()
        self.refresh_active_agents()
        return removed

    def refresh_active_agents(self) -> int | None:
        """Set ``tasklease_active_agents`` to the deployment's live agents, read from the
        store (``core.activeagents``), and return it; the default tenant's broker only
        (the count is every tenant's): another tenant's returns None and reads nothing."""
        if self.store.tenant != DEFAULT_TENANT or time.monotonic() < self._active_due:
            return None
        started = time.monotonic()
        try:
            count = live_agents(self.store, self.kernel.now(), self.config)
        finally:
            # A count that took long (a million agents registered within the ceiling) is
            # not made again before 20 times as long has passed: at most 5 % of one
            # connection. One cut by the statement timeout took long too: it is not
            # tried again at every tick, its gauge kept at the last count.
            elapsed = time.monotonic() - started
            if elapsed >= ACTIVE_AGENTS_SLOW:
                self._active_due = started + ACTIVE_AGENTS_DUTY * elapsed
        self.metrics.active_agents.set(count)
        return count

    def refresh_revocations(self) -> int:
        """Apply revocations other processes committed since we last looked."""
        return self._freshness.refresh()

    def write_back_revocations(self) -> int:
        """Write back to the store the revocation entries it lost when it went back in time
        (a failover to a standby that missed the last commits, a restore) and this process
        still holds; return how many were written. Nothing noted lost: no store access."""
        lost = self._freshness.lost()
        if not lost:
            return 0
        written = self._revoking.write_back(lost)
        self._freshness.written_back(lost)
        return written

    def watch_revocations(self) -> Callable[[], None] | None:
        """Follow the store's change notifications, if it offers them; return a stopper."""
        return self._freshness.watch()

    # --- call budgets (core.calls) ----------------------------------------------------

    def count_call(self, token: str, **request: Any) -> tuple[Claims, CallCount]:
        """Validate ``token`` for ``audience`` (as :meth:`validate`), then count one call of
        its grant that allows ``call`` (``core.calls``: ``max_calls``; the fields are
        :meth:`prepare_count_call`'s)."""
        return complete(self.kernel, self.prepare_count_call(token, **request))

    def prepare_count_call(
        self,
        token: str,
        *,
        kind: object,
        call: Mapping[str, Any],
        audience: str | None,
        presented: Presentation | None,
        ctx: RequestContext,
        caller: Claims | None = None,
    ) -> Pending[tuple[Claims, CallCount]]:
        """:meth:`count_call` checked, not written; :meth:`answer` commits the count.
        ``caller``: the resource server's credential, authenticated by
        :meth:`authenticate_introspector` (None: it sent none); a certificate-bound token's
        calls are counted only for one (``core.calls.vouching_refusal``)."""
        if not isinstance(kind, str) or not kind:
            raise InvalidRequest("type is required")

        def refusal(exc: TokenRejected) -> tuple[Unauthorized, AuditEntry]:
            return Unauthorized("token is invalid or expired", reason=exc.reason), AuditEntry(
                "grant_call_denied",
                outcome="denied",
                request_id=ctx.request_id,
                resource=ctx.path,
                detail=f"token refused: {reason_text(exc.reason)}",
            )

        try:
            claims = self._tokens.validate(
                token, audience=audience, presented=presented, ctx=ctx, refusal=refusal
            )
        except TokenRejected as exc:
            raise self.kernel.deny(*refusal(exc)) from None
        counting = self._calls.prepare_count(claims, kind, call, ctx, caller=caller)
        return Pending(counting.unit, lambda: (claims, counting.done()), counting.refused)

    # --- audit and health ----------------------------------------------------------------

    def audit_events(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        return self.store.query_audit(query)

    def health(self) -> dict[str, Any]:
        return health(self.kernel, self._keys, self._freshness)

    # --- agents that trust each other (core.handshake, liveness, discovery) -------------

    def mutual_initiate(
        self, claims: Claims, *, responder: object, initiator_nonce: object, ctx: RequestContext
    ) -> tuple[str, str, int]:
        """Handshake step 1 (:meth:`Handshakes.initiate`)."""
        return self._handshakes.initiate(
            claims, responder=responder, initiator_nonce=initiator_nonce, ctx=ctx
        )

    def mutual_respond(
        self,
        claims: Claims,
        *,
        offer: object,
        responder_nonce: object,
        signature: object,
        ctx: RequestContext,
    ) -> tuple[str, HandshakeResult]:
        """Handshake step 2 (:meth:`Handshakes.respond`)."""
        return self._handshakes.respond(
            claims, offer=offer, responder_nonce=responder_nonce, signature=signature, ctx=ctx
        )

    def mutual_complete(
        self, claims: Claims, *, answer: object, signature: object, ctx: RequestContext
    ) -> tuple[str, HandshakeResult]:
        """Handshake step 3 (:meth:`Handshakes.complete`)."""
        return self._handshakes.complete(claims, answer=answer, signature=signature, ctx=ctx)

    def prepare_mutual_respond(
        self, claims: Claims, **request: Any
    ) -> Pending[tuple[str, HandshakeResult]]:
        """:meth:`mutual_respond` checked, not written; :meth:`answer` commits it."""
        return self._handshakes.prepare_respond(claims, **request)

    def prepare_mutual_complete(
        self, claims: Claims, **request: Any
    ) -> Pending[tuple[str, HandshakeResult]]:
        """:meth:`mutual_complete` checked, not written; :meth:`answer` commits it."""
        return self._handshakes.prepare_complete(claims, **request)

    def heartbeat(self, claims: Claims, **request: Any) -> AgentSession:
        """Record a signed heartbeat, or the agent's release (:mod:`tasklease.core.liveness`;
        the fields are :meth:`prepare_heartbeat`'s)."""
        return complete(self.kernel, self.prepare_heartbeat(claims, **request))

    def prepare_heartbeat(
        self,
        claims: Claims,
        *,
        timestamp: object,
        jti: object,
        signature: object,
        done: object,
        ctx: RequestContext,
    ) -> Pending[AgentSession]:
        """:meth:`heartbeat` checked, not written; :meth:`answer` commits it."""
        return self._liveness.prepare_heartbeat(
            claims, timestamp=timestamp, proof_jti=jti, signature=signature, done=done, ctx=ctx
        )

    def sweep_silent_agents(self) -> list[str]:
        """Revoke (level ``agent``) supervised agents silent for interval x misses."""
        return self._liveness.sweep_silent_agents(self.instance_id)

    def release_leases(self) -> None:
        """Give up the store leases this process's background jobs hold (the audit
        checkpoints', the liveness sweeper's, the federated feeds' follower's), so that
        another process takes each over at its next round, not once it expires.

        Call it when the broker stops, after the jobs' last round (and the final
        checkpoint): a job that ran again would take its lease back. A lease that cannot
        be given up is logged, not raised: it expires as it would have.
        """
        for job, release in (
            ("audit checkpoint", self.transparency.release_lease),
            ("liveness sweeper", self._liveness.release_sweeper_lease),
            ("federation feed", self._peer_feeds.release_lease),
        ):
            try:
                release()
            except Exception as exc:  # noqa: BLE001 - the lease expires: stopping goes on
                _log.warning(
                    "tenant %s: the %s lease was not given up (%s: %s); another process "
                    "takes it over once it expires",
                    self.store.tenant,
                    job,
                    type(exc).__name__,
                    exc,
                )

    def discovery_bind(
        self,
        claims: Claims,
        *,
        endpoint: object,
        issued_at: object,
        signature: object,
        ctx: RequestContext,
    ) -> DiscoveryBinding:
        """Publish the caller's endpoint, signed by its registered key."""
        return self._discovery.bind(
            claims, endpoint=endpoint, issued_at=issued_at, signature=signature, ctx=ctx
        )

    def workload_identity(self, claims: Claims, ctx: RequestContext) -> tuple[str, int]:
        """A WIMSE Workload Identity Token for the agent holding ``claims``
        (:class:`WorkloadIdentities`); ``(wit, expires_in)``."""
        return self._workload.issue(claims, ctx)

    def discovery_resolve(self, agent_id: str) -> tuple[DiscoveryBinding, AgentRecord]:
        """An active agent's signed endpoint binding and registration (NotFound if none)."""
        return self._discovery.resolve(agent_id)
