"""App sign-in at the token endpoint and ``POST /v1/app/auth``: by client secret or by a
client assertion the app signs (``private_key_jwt``, RFC 7523 section 2.2, checked by
``core.clientauth``), bound when asked (the token endpoint) to the connection's client
certificate (RFC 8705 section 3) and the request's DPoP key (RFC 9449 section 5).

The assertion's ``jti`` and the DPoP proof are spent in the store (shared by workers and
replicas) in the transaction that audits the sign-in; every refusal is one generic error
outward and one audit event (``app_auth_failed``) with the precise reason. A token request
asking for more than an app token holds (a ``scope`` beyond its scopes, a ``resource`` other
than the broker) is refused once the app has authenticated, with a ``denial_id`` and the
same event.
"""

from __future__ import annotations

from collections.abc import Callable

from tasklease.core.audience import default_audience, validate_resource
from tasklease.core.auditformat import AuditEntry, clipped, reason_text
from tasklease.core.clientauth import AssertionRefused, assertion_issuer, check_assertion
from tasklease.core.errors import (
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TaskleaseError,
    Unauthorized,
    Unavailable,
    UseDPoPNonce,
)
from tasklease.core.issuing import clamp_ttl
from tasklease.core.kernel import IssuedToken, Kernel, RequestContext, Service
from tasklease.core.passwords import verify_secret
from tasklease.core.records import AppRecord
from tasklease.core.scopes import scope_param
from tasklease.core.store import WriteTx
from tasklease.core.tokens import APP_SCOPES, KIND_APP, Claims
from tasklease.rules.binding import (
    PROOF_REPLAYED,
    BindingError,
    DPoPNonceRequired,
    DPoPProof,
    DPoPVerifier,
)

__all__ = ["AppSignIn"]

_MAX_CLIENT_ID = 128


def token_binding(ctx: RequestContext, proof: DPoPProof | None) -> dict[str, str]:
    """The ``cnf`` of an app token asked for at the token endpoint: the client certificate
    of the connection (``x5t#S256``, RFC 8705 section 3: what the authorization server
    metadata's ``tls_client_certificate_bound_access_tokens`` promises) and the request's
    DPoP key (``jkt``, RFC 9449 section 5), both when both came, as an agent's registration
    binds both (decision 24): each is then proven at every use."""
    cnf: dict[str, str] = {}
    if ctx.cert_thumbprint:
        cnf["x5t#S256"] = ctx.cert_thumbprint
    if proof is not None:
        cnf["jkt"] = proof.jkt
    return cnf


class AppSignIn(Service):
    """Apps signing in. Thread-safe; one per broker, inside ``core.apps.Apps``.

    ``sign_in`` mints and audits the token (``Apps._sign_in``, shared with the admin's).
    """

    def __init__(
        self,
        kernel: Kernel,
        dpop: DPoPVerifier | None,
        sign_in: Callable[..., IssuedToken],
    ) -> None:
        super().__init__(kernel)
        self._dpop = dpop
        self._sign_in = sign_in

    def app_auth(
        self,
        client_id: object,
        client_secret: object,
        ctx: RequestContext,
        *,
        bind: bool = False,
        scope: object = None,
        resource: object = None,
    ) -> IssuedToken:
        """An app token for an app's client id and secret (``client_secret_*``).

        ``bind``: the request's client certificate (``ctx.cert_thumbprint``) and DPoP proof
        (``ctx.dpop``), when it has them, bind the token (:func:`token_binding`): the token
        endpoint's.
        ``scope`` and ``resource``: the token request's (RFC 6749 section 4.4.2, RFC 8707),
        held to what an app token is (:meth:`_within_app_token`).

        Raises:
            InvalidRequest: a credential missing, or ``scope`` malformed (not audited).
            Unauthorized: the app does not authenticate (audited).
            InvalidScope: it does, but asks for a scope an app token does not hold
                (audited, with a ``denial_id``).
            InvalidTarget: ``resource`` is malformed (not audited), or the app
                authenticates and names another resource than the broker (audited, with a
                ``denial_id``).
        """
        wanted = scope_param(scope), validate_resource(resource, field="resource")
        if (
            not isinstance(client_id, str)
            or not client_id
            or not isinstance(client_secret, str)
            or not client_secret
        ):
            raise InvalidRequest("client_id and client_secret are required")
        app = self._find(client_id)
        ok = verify_secret(app.secret_hash if app else None, client_secret)
        reason = (
            "unknown_client_id"
            if app is None
            else "wrong_secret"
            if not ok
            else "app_inactive"
            if app.status != "active"
            else ""
        )
        if reason or app is None:
            raise self._auth_failed(client_id if app is not None else "<unknown>", reason, ctx)
        return self._app_token(app, ctx, wanted, bind=bind, method="client_secret")

    def app_auth_assertion(
        self,
        assertion: str,
        ctx: RequestContext,
        *,
        client_id: str | None,
        audiences: tuple[str, ...],
        bind: bool = False,
        scope: object = None,
        resource: object = None,
    ) -> IssuedToken:
        """An app token for an app's signed client assertion (``private_key_jwt``, RFC 7523
        section 2.2): checked with the app's registered public key against ``audiences``
        (the issuer, and the token endpoint's URLs when the broker allows them), its
        ``jti`` spent in the store until ``clock_skew`` past the assertion's ``exp``
        (single use across workers and replicas, whatever clock within the skew prunes
        the store). ``client_id``,
        when the request names one, must be the assertion's ``iss``. Any failure is one
        generic 401 and one audit event with the precise reason; ``scope`` and
        ``resource`` are held to an app token's as :meth:`app_auth` holds them.
        """
        wanted = scope_param(scope), validate_resource(resource, field="resource")
        issuer = assertion_issuer(assertion)
        if issuer is None or (client_id is not None and client_id != issuer):
            why = "malformed_assertion" if issuer is None else "client_id_differs_from_iss"
            raise self._auth_failed("<unknown>", why, ctx)
        app = self._find(issuer)
        try:
            # For a client id no app has, the signature is checked all the same (against a
            # key nobody holds): the refusal takes the time a known client's does.
            checked = check_assertion(
                assertion,
                public_key=app.public_key if app is not None else "",
                client_id=app.client_id if app is not None else issuer,
                audiences=audiences,
                now=self._kernel.now(),
                skew=self._config.clock_skew,
            )
        except AssertionRefused as exc:
            if app is None:
                raise self._auth_failed("<unknown>", "unknown_client_id", ctx) from None
            raise self._auth_failed(app.client_id, exc.reason, ctx) from None
        if app is None:  # pragma: no cover - no assertion verifies without a key
            raise self._auth_failed("<unknown>", "unknown_client_id", ctx)
        if app.status != "active":
            raise self._auth_failed(app.client_id, "app_inactive", ctx)
        return self._app_token(
            app,
            ctx,
            wanted,
            bind=bind,
            method="private_key_jwt",
            spent=(checked.replay_key, checked.expires_at),
        )

    def _find(self, client_id: str) -> AppRecord | None:
        """The app whose client id a sign-in names, or None: also for one no app can have
        (over 128 characters, or holding a control or other unprintable character), which
        is not looked up. The edge refuses control characters in a body, but a Basic
        header's percent-encoded parts and an assertion's ``iss`` pass it; a store may
        refuse such a value (PostgreSQL: NUL in text), and the sign-in must fail as an
        unknown client's does, with its ``denial_id`` and audit event, on every backend."""
        if len(client_id) > _MAX_CLIENT_ID or not client_id.isprintable():
            return None
        return self._store.get_app_by_client_id(client_id)

    def refuse(self, reason: str, ctx: RequestContext) -> TaskleaseError:
        """Audit a client refused before it named an app (no credentials, a malformed or
        non-Basic ``Authorization`` header, another assertion type than RFC 7523's): the
        refusal every failed app sign-in gets, ``reason`` for the audit log only."""
        return self._auth_failed("<unknown>", reason, ctx)

    def _auth_failed(self, shown: str, reason: str, ctx: RequestContext) -> TaskleaseError:
        """Audit an app's failed authentication; the generic 401 to raise."""
        self._metrics.auth.labels("app", "failure").inc()
        return self._refused(
            Unauthorized("Authentication failed"), f"client_id={shown} reason={reason}", ctx
        )

    def _refused(self, error: TaskleaseError, detail: str, ctx: RequestContext) -> TaskleaseError:
        """``error`` with its ``denial_id``, and its one ``app_auth_failed`` event."""
        return self._kernel.deny(
            error,
            AuditEntry(
                "app_auth_failed", outcome="denied", request_id=ctx.request_id, detail=detail
            ),
        )

    def _within_app_token(
        self,
        app: AppRecord,
        wanted: tuple[tuple[str, ...] | None, str | None],
        ctx: RequestContext,
    ) -> None:
        """Refuse an authenticated app's token request for more than an app token is: a
        scope other than the app token's own (``APP_SCOPES``, which it always holds:
        ``invalid_scope``, RFC 6749 section 5.2) or a resource other than the broker's
        audience (``invalid_target``, RFC 8707 section 2), audited once with a
        ``denial_id``."""
        scope, resource = wanted
        extra = [s for s in scope or () if s not in APP_SCOPES]
        own = default_audience(self._config.audience)
        error: TaskleaseError
        if extra:
            listed = clipped(" ".join(extra), 200)
            error = InvalidScope(f"an app token holds {' '.join(APP_SCOPES)}; not {listed}")
            why = f"scope_beyond_app_token: {listed}"
        elif resource is not None and resource not in own:
            error = InvalidTarget(
                "an app token is for this broker only", hint=f"omit resource, or send {own[0]}"
            )
            why = f"resource_not_this_broker: {resource}"
        else:
            return
        self._metrics.scope_rejections.labels(ctx.route or "/v1/oauth/token").inc()
        raise self._refused(
            error, f"client_id={app.client_id} app_id={app.app_id} reason={reason_text(why)}", ctx
        )

    def _dpop_proof(self, app: AppRecord, ctx: RequestContext) -> DPoPProof:
        """The request's DPoP proof for the token endpoint, checked (replay aside) with the
        broker's verifier, as registration's; a refusal is audited (400)."""
        if self._dpop is None:
            raise InvalidDPoPProof("DPoP is not available here")
        shown = f"client_id={app.client_id}"
        try:
            return self._dpop.check(ctx.dpop, htm=ctx.method, htu=ctx.url, now=self._kernel.now())
        except DPoPNonceRequired as exc:  # RFC 9449 section 8: retry with this nonce
            error: TaskleaseError = UseDPoPNonce(reason=exc.reason, dpop_nonce=exc.nonce)
            why = exc.reason
        except BindingError as exc:
            error, why = InvalidDPoPProof("invalid DPoP proof", reason=exc.reason), exc.reason
        raise self._refused(error, f"{shown} reason=dpop_proof_refused: {reason_text(why)}", ctx)

    def _born_revoked(self, tx: WriteTx, claims: Claims) -> int:
        """Seconds until a token like the one about to be issued would not be revoked
        already (0: it is not). A key change revokes the app's tokens up to and including
        its entry's ``revoked_at``, ``clock_skew`` past the second of the change
        (``Kernel.revocation_entry``: so that it also ends what a replica whose clock runs
        ahead signed in before it), so a sign-in until then is asked to come back when it
        is past. The entry is read through the sign-in's own write too (``tx``): another
        replica's, not applied here yet, counts. (An app's record changes for its scopes
        too, which revoke nothing, so its time of change is no sign: the revocation
        itself is.)"""
        wait = self._kernel.reissue_wait("agent", claims.sub, claims.iat, tx)
        if not wait and self._kernel.revocations.match(claims) is not None:
            wait = 1  # ended by another entry: nothing to wait for, but nothing to issue
        return wait

    def _app_token(
        self,
        app: AppRecord,
        ctx: RequestContext,
        wanted: tuple[tuple[str, ...] | None, str | None],
        *,
        bind: bool,
        method: str,
        spent: tuple[str, float] | None = None,
    ) -> IssuedToken:
        """Mint the app token of an authenticated app, if what it asked for (``wanted``:
        scope and resource) is within one, bound when ``bind`` to the request's client
        certificate and DPoP key, those it has (:func:`token_binding`); the assertion's
        ``jti`` (``spent``) and the proof are recorded as used in the transaction that
        audits the sign-in.

        That transaction reads the app again, itself: its credential was checked against
        ``app`` as read before the (slow) check, and a removal or update written since
        (committed, or earlier in the same batch) refuses the sign-in (a removal's
        revocation entry, written a second earlier, would not match the token). A removal
        committed after it revokes the tokens issued until its own time of change.
        """
        self._within_app_token(app, wanted, ctx)
        proof = self._dpop_proof(app, ctx) if bind and ctx.dpop else None

        def spend(tx: WriteTx, claims: Claims) -> tuple[TaskleaseError, str] | None:
            # Read through this transaction: a removal or update earlier in its batch is
            # not committed yet, and the store's read connection would not see it.
            changed = tx.get_app(app.app_id) != app
            # First, before anything is spent: the client is asked to retry, and may send
            # the same assertion and proof again. (Not an app changed since it was read:
            # it is refused as ever, below.)
            wait = 0 if changed else self._born_revoked(tx, claims)
            if wait:
                return (
                    Unavailable(
                        f"the app's credential changed moments ago: sign in again in {wait} s",
                        retry_after=wait,
                    ),
                    f"credential_changed_moments_ago (come back in {wait}s)",
                )
            if spent is not None and not tx.consume_nonce(*spent):
                return Unauthorized("Authentication failed"), "assertion_replayed (jti used)"
            if proof is not None and not tx.consume_dpop_proof(proof.key, proof.expires_at):
                return InvalidDPoPProof("invalid DPoP proof", reason=PROOF_REPLAYED), PROOF_REPLAYED
            if changed:
                return Unauthorized("Authentication failed"), "app_changed_during_sign_in"
            return None

        cnf = token_binding(ctx, proof) if bind else {}
        bound = "".join(f" cnf.{name}={value}" for name, value in cnf.items())
        return self._sign_in(
            "app",
            kind=KIND_APP,
            sub=f"app:{app.app_id}",
            ttl=clamp_ttl(app.token_ttl, self._config.app_token_ttl, self._config),
            scope=APP_SCOPES,
            client_id=app.client_id,
            ctx=ctx,
            event="app_authenticated",
            detail=lambda _: (
                f"client_id={app.client_id} app_id={app.app_id} method={method}{bound}"
            ),
            cnf=cnf or None,
            spend=spend,
        )
