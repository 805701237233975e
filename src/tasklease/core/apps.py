"""Operators and apps: admin and app sign-in, the app registry, and launch tokens.

Admin and app tokens are minted here after a secret (argon2id) verifies, or, for an app
with a public key, its signed client assertion (``core.clientauth``, RFC 7523); an app
token asked for with a DPoP proof is bound to the proof's key (RFC 9449 section 5).
Launch tokens are the ceiling (scope, audience, agent token lifetime, principal) an
agent registers under. Removing an app ends every token it issued or launched, with
their descendants; a new secret or key ends its app tokens and launch tokens, not the
agents it launched.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tasklease.core.appauth import AppSignIn
from tasklease.core.audience import default_audience, validate_ceiling
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, quoted, reason_text
from tasklease.core.callers import change_refused
from tasklease.core.clientauth import app_public_key
from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.delegation import named_principal, principal_ref
from tasklease.core.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidTTL,
    NotFound,
    TaskleaseError,
    Unauthorized,
    Unavailable,
)
from tasklease.core.identity import decode_public_key
from tasklease.core.issuing import clamp_ttl, listed
from tasklease.core.kernel import IssuedToken, Kernel, RequestContext, Service, with_denial
from tasklease.core.launch import (
    DEFAULT_MULTI_USES,
    MAX_USES,
    MULTI_USE_DEFAULT_TTL,
    new_launch_token,
)
from tasklease.core.lineage import Refusal, app_ancestor
from tasklease.core.passwords import hash_secret, new_secret, verify_secret
from tasklease.core.pending import Pending, complete
from tasklease.core.policyrequest import Actor
from tasklease.core.records import AppRecord, LaunchTokenRecord, RevocationRecord
from tasklease.core.scopes import validate_scopes
from tasklease.core.signing import SigningKeys
from tasklease.core.spiffe import MAX_SEGMENT_CHARS
from tasklease.core.store import WriteTx
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, KIND_APP, Claims, mint
from tasklease.rules import jws
from tasklease.rules.binding import DPoPVerifier
from tasklease.rules.grants import digest

__all__ = ["Apps", "expires_at_text"]

_APP_NAME = re.compile(r"[a-z][a-z0-9]+(?:-[a-z0-9]+)*")
# A launch token's label. The ``agentwrit`` SDK (and ours) names the launch token it makes
# for an agent ``<orch_id>/<task_id>`` when given no label: every such name of ids a
# registration accepts fits, the longest included.
MAX_AGENT_NAME_CHARS = 2 * MAX_SEGMENT_CHARS + 1


def expires_at_text(record: LaunchTokenRecord) -> str:
    """When a launch token expires, as RFC 3339 (whole seconds)."""
    return format_rfc3339_seconds(record.expires_at)


def _positive_seconds(name: str, value: object) -> int | None:
    """A launch token's ``ttl`` or ``max_ttl`` as given (None when absent): whole seconds
    above zero, else 400 naming the field (never silently replaced by a default)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidRequest(f"{name} must be a positive integer number of seconds")
    return value


def _max_uses(value: object, *, multi_use: bool) -> int:
    """How many registrations a launch token admits: 1 for a single-use token, else
    ``max_uses`` (default :data:`DEFAULT_MULTI_USES`, 1 to :data:`MAX_USES`)."""
    if value is None:
        return DEFAULT_MULTI_USES if multi_use else 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_USES:
        raise InvalidRequest(f"max_uses must be an integer from 1 to {MAX_USES}")
    if value > 1 and not multi_use:
        raise InvalidRequest(
            "max_uses above 1 needs single_use: false",
            hint="a launch token is single-use unless created with single_use: false",
        )
    return value


def _key_suffix(public_key: str) -> str:
    """Audit detail: the app's public key, by its RFC 7638 thumbprint."""
    if not public_key:
        return " public_key=none"
    return f" public_key_jkt={jws.jwk_thumbprint(jws.b64url_decode(public_key))}"


def _grant_list(details: Sequence[Mapping[str, Any]]) -> str:
    """Structured grants as audit text, by type and digest (``[type#digest ...]``)."""
    return listed([f"{quoted(str(d.get('type')))}#{digest(d)[:12]}" for d in details])


def _grants(details: Sequence[Mapping[str, Any]]) -> str:
    """Audit detail: structured grants by type and digest (`` grants=[type#digest ...]``)."""
    if not details:
        return ""
    return " grants=" + _grant_list(details)


def _ceiling_change(before: AppRecord, after: AppRecord) -> str:
    """Audit detail of an app's update: its ceiling before and after, ``scopes=[..]->[..]``
    and, when it has or had grants, `` grants=[..]->[..]``, so that one event tells a
    narrowing from a widening and from a change that left the ceiling as it was."""
    text = f"scopes={listed(before.scopes)}->{listed(after.scopes)}"
    if before.authorization_details or after.authorization_details:
        text += (
            f" grants={_grant_list(before.authorization_details)}"
            f"->{_grant_list(after.authorization_details)}"
        )
    return text


def _app_token_ttl(token_ttl: object) -> int | None:
    """An app's token TTL as given (None: unchanged or the default), 60 s to 24 h."""
    if token_ttl is None:
        return None
    if type(token_ttl) is not int or not 60 <= token_ttl <= 86400:
        raise InvalidTTL(
            f"invalid token TTL: must be between 60 and 86400 seconds, got {token_ttl}"
        )
    return token_ttl


class Apps(Service):
    """Admin and app sign-in, app CRUD, launch tokens. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys, dpop: DPoPVerifier | None = None) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._app_sign_in = AppSignIn(kernel, dpop, self._sign_in)
        # The admin secret's hash on record that this process's secret last matched: the
        # same record needs no second check of the same secret (core.adminsecret).
        self._admin_record_matched: str | None = None

    def admin_auth(self, secret: object, ctx: RequestContext) -> IssuedToken:
        """An admin token for the admin secret: this process's, and the one on record.

        A broker process started with another secret changes the record (and ends what
        the one before made: ``core.adminsecret``); a process still running with the one
        before then refuses it too, so a rolling restart leaves no window in which the
        old secret signs in on a process not yet restarted.
        """
        if not isinstance(secret, str) or not secret:
            raise InvalidRequest("secret is required")
        configured = self._config.admin_secret_hash or None
        if not verify_secret(configured, secret):
            raise self._admin_refused(ctx, "")
        held = self._store.admin_credential()
        if held is not None and held not in (configured, self._admin_record_matched):
            if not verify_secret(held, secret):
                raise self._admin_refused(
                    ctx,
                    ": the admin secret on record was changed by another broker process's "
                    "start, and this one still runs the one before (restart it)",
                )
            self._admin_record_matched = held
        return self._sign_in(
            "admin",
            kind=KIND_ADMIN,
            sub="admin",
            ttl=clamp_ttl(self._config.admin_token_ttl, self._config.default_ttl, self._config),
            scope=ADMIN_SCOPES,
            client_id="admin",
            ctx=ctx,
            event="admin_auth",
            detail=lambda claims: (
                f"admin authenticated as admin from {ctx.remote} jti={claims.jti} "
                "operator=admin (built-in admin, the admin secret)"
            ),
        )

    def _admin_refused(self, ctx: RequestContext, why: str) -> TaskleaseError:
        self._metrics.auth.labels("admin", "failure").inc()
        return self._kernel.deny(
            Unauthorized("invalid credentials"),
            AuditEntry(
                "admin_auth_failed",
                outcome="denied",
                request_id=ctx.request_id,
                detail=f"admin authentication failed from {ctx.remote}{why}",
            ),
        )

    def register_app(
        self,
        claims: Claims,
        *,
        name: object,
        scopes: object,
        token_ttl: object,
        ctx: RequestContext,
        public_key: object = None,
        authorization_details: object = None,
    ) -> tuple[AppRecord, str]:
        """Create an app; returns the record and its client secret (shown once).

        Its ceiling is ``scopes`` and ``authorization_details`` (RFC 9396 structured
        grants; either may be empty, not both): its launch tokens stay within them.

        ``public_key`` (an Ed25519 JWK or raw key, :func:`app_public_key`) lets the app
        authenticate with signed client assertions (``private_key_jwt``) too.

        Raises:
            Conflict: the name is taken (audited; nothing is written).
        """
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name is required")
        details = self._kernel.grant_types.check(
            authorization_details, field="authorization_details"
        )
        if (scopes is None or scopes == []) and not details:
            raise InvalidRequest("scopes must not be empty")
        ttl = _app_token_ttl(token_ttl)
        if len(name) > 64 or not _APP_NAME.fullmatch(name):
            raise InvalidRequest(
                "invalid app name: must be lowercase letters, digits, and hyphens",
                hint="2-64 characters starting with a letter; hyphens only between letters",
            )
        ceiling = () if scopes is None or scopes == [] else validate_scopes(scopes, field="scopes")
        key = "" if public_key is None else app_public_key(public_key)
        now = self._kernel.now()
        parts = name.split("-")
        abbrev = "".join(p[0] for p in parts)[:3] if len(parts) > 1 else name[:2]
        secret = new_secret()
        app = AppRecord(
            app_id=f"app-{name}-{secrets.token_hex(3)}",
            name=name,
            client_id=f"{abbrev}-{secrets.token_hex(6)}",
            secret_hash=hash_secret(secret),
            scopes=ceiling,
            token_ttl=ttl if ttl is not None else self._config.app_token_ttl,
            status="active",
            created_at=now,
            updated_at=now,
            created_by=claims.sub,
            public_key=key,
            authorization_details=details,
            credential_changed_at=now,
        )

        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            try:
                tx.insert_app(app)
            except Conflict as exc:  # nothing written: the name (or an id) is taken
                refused[:] = [exc]
                return [
                    with_denial(
                        exc,
                        AuditEntry(
                            "app_registration_denied",
                            outcome="denied",
                            request_id=ctx.request_id,
                            detail=f"{detail_field('app', name)} "
                            f"refused: {reason_text(exc.detail)} "
                            f"by={claims.sub}",
                        ),
                    )
                ]
            return [
                AuditEntry(
                    "app_registered",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('app', name)} app_id={app.app_id} "
                    f"client_id={app.client_id} "
                    f"scopes={listed(ceiling)}{_grants(details)} token_ttl={app.token_ttl}"
                    f"{_key_suffix(key)} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return app, secret

    def list_apps(self) -> list[AppRecord]:
        return self._store.list_apps()

    def get_app(self, app_id: str) -> AppRecord:
        app = self._store.get_app(app_id)
        if app is None:
            raise NotFound("app not found")
        return app

    def update_app(
        self,
        claims: Claims,
        app_id: str,
        *,
        scopes: object,
        token_ttl: object,
        ctx: RequestContext,
        public_key: object = None,
        authorization_details: object = None,
    ) -> AppRecord:
        """Change an app's ceiling (scopes, grants), token TTL and/or public key,
        atomically (all or none). ``public_key`` ``""`` removes the key (secret only from
        then on); ``scopes`` and ``authorization_details`` replace the app's scopes and
        grants (``[]`` removes them; None leaves them).

        Raises:
            NotFound: no such app (audited).
            Conflict: the app was deregistered, before or while this ran (audited; nothing
                else is written): a deregistered app stays so.
        """
        details = (
            None
            if authorization_details is None
            else self._kernel.grant_types.check(
                authorization_details, field="authorization_details"
            )
        )
        if scopes is None and token_ttl is None and public_key is None and details is None:
            raise InvalidRequest(
                "at least one of scopes, authorization_details, token_ttl or public_key "
                "must be provided"
            )
        # ``scopes: []`` is a new, empty scope ceiling (grants only), as ``[]`` of grants
        # removes them: never "not given", which would leave the app the scopes the
        # operator took away.
        ceiling = (
            None
            if scopes is None
            else ()
            if scopes == []
            else validate_scopes(scopes, field="scopes")
        )
        ttl = _app_token_ttl(token_ttl)
        key = None if public_key is None or public_key == "" else app_public_key(public_key)
        self._known(app_id, "app_update_denied", claims, ctx)
        written: list[AppRecord] = []
        records: list[RevocationRecord] = []
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # Read under the write lock: a deregistration or another update committed since
            # the request began is what this one changes, and only the fields it changes.
            app = tx.get_app(app_id)
            if app is None or app.status != "active":
                return [self._refused(refused, "app_update_denied", app, app_id, claims, ctx)]
            now = self._kernel.now()
            updated = replace(
                app,
                scopes=ceiling if ceiling is not None else app.scopes,
                token_ttl=ttl if ttl is not None else app.token_ttl,
                public_key=app.public_key if public_key is None else (key or ""),
                updated_at=now,
                authorization_details=(
                    details if details is not None else app.authorization_details
                ),
            )
            ended = ""
            if updated.public_key != app.public_key:  # a key added, replaced or removed
                updated, ended = self._new_credential(tx, updated, records)
            else:
                tx.update_app(updated)
            written[:] = [updated]
            return [
                AuditEntry(
                    "app_updated",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} {_ceiling_change(app, updated)} "
                    f"token_ttl={app.token_ttl}->{updated.token_ttl}"
                    f"{_key_suffix(updated.public_key)}{ended} updated_by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        self._kernel.apply_revocations(records)
        return written[0]

    def rotate_secret(
        self, claims: Claims, app_id: str, ctx: RequestContext
    ) -> tuple[AppRecord, str]:
        """Replace an app's client secret with one the broker makes; returns the record
        and the new secret (shown only this once).

        The old secret stops working at once; the app's live tokens and the launch tokens
        it made end, its agents keep theirs (:meth:`_new_credential`). A public key the
        app has stays (every app has a secret, a key besides it or not: it is the secret
        that is replaced).

        Raises:
            NotFound: no such app (audited).
            Conflict: the app was deregistered, before or while this ran (audited;
                nothing is written).
        """
        event = "app_secret_rotation_denied"
        self._known(app_id, event, claims, ctx)
        secret = new_secret()
        secret_hash = hash_secret(secret)  # the slow part, before the write lock
        written: list[AppRecord] = []
        records: list[RevocationRecord] = []
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # Read under the write lock, as update_app does: a deregistration committed
            # since the request began is refused, never undone, and a change committed
            # meanwhile is kept.
            app = tx.get_app(app_id)
            if app is None or app.status != "active":
                return [self._refused(refused, event, app, app_id, claims, ctx)]
            rotated = replace(app, secret_hash=secret_hash, updated_at=self._kernel.now())
            rotated, ended = self._new_credential(tx, rotated, records)
            written[:] = [rotated]
            return [
                AuditEntry(
                    "app_secret_rotated",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} {detail_field('name', app.name)} "
                    f"client_id={app.client_id} "
                    f"client secret replaced{_key_suffix(app.public_key)}{ended} "
                    f"rotated_by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        self._kernel.apply_revocations(records)
        return written[0], secret

    def _new_credential(
        self, tx: WriteTx, app: AppRecord, records: list[RevocationRecord]
    ) -> tuple[AppRecord, str]:
        """Write ``app``, whose credential changed at its ``updated_at`` (a new secret, a
        key added, replaced or removed), in ``tx``; returns the record written and the
        audit detail's suffix.

        Whoever held the old credential, or a token signed in with it, holds nothing, as
        when an operator is rotated: the app's live tokens end (an ``agent``-level entry
        on ``app:<app_id>``, put in ``records`` to apply once committed), and so do the
        launch tokens it made (its ``credential_changed_at``, and that entry: decisions
        185, 220 and 276). The agents it launched keep their tokens: the change says the
        credential may be known to someone else, not that the work it started was
        illegitimate (only the app's removal ends its ``app:`` ancestor)."""
        now = app.updated_at
        changed = replace(app, credential_changed_at=now)
        tx.update_app(changed)
        records[:] = [self._kernel.revocation_entry("agent", f"app:{app.app_id}", at=now)]
        tx.insert_revocation(records[0])
        return changed, f"; revoked level=agent target=app:{app.app_id}"

    def deregister_app(self, claims: Claims, app_id: str, ctx: RequestContext) -> AppRecord:
        """Deactivate an app: its secret stops working and its live app tokens are revoked.

        Raises:
            NotFound: no such app (audited).
            Conflict: the app was deregistered before (audited; nothing else is written).
        """
        self._known(app_id, "app_deregistration_denied", claims, ctx)
        written: list[AppRecord] = []
        records: list[RevocationRecord] = []
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # Read under the write lock, as update_app does: of two deregistrations one
            # wins, and an update committed meanwhile is kept, not written over.
            app = tx.get_app(app_id)
            if app is None or app.status != "active":
                event = "app_deregistration_denied"
                return [self._refused(refused, event, app, app_id, claims, ctx)]
            # Dated in the transaction: an app token issued by a sign-in that committed
            # before it is covered, however long this call took to get here.
            now = self._kernel.now()
            updated = replace(app, status="inactive", updated_at=now)
            tx.update_app(updated)
            written[:] = [updated]
            records[:] = [
                # The app's own tokens (subject app:<app_id>) ...
                self._kernel.revocation_entry("agent", f"app:{app_id}", at=now),
                # ... and every agent token launched through it, with their descendants.
                self._kernel.revocation_entry("chain", app_ancestor(app_id), at=now),
            ]
            for record in records:
                tx.insert_revocation(record)
            return [
                AuditEntry(
                    "app_deregistered",
                    request_id=ctx.request_id,
                    detail=f"app_id={app_id} {detail_field('name', app.name)} "
                    f"deregistered_by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        self._kernel.apply_revocations(records)
        return written[0]

    def _known(self, app_id: str, event: str, claims: Claims, ctx: RequestContext) -> None:
        """Refuse a change to an unknown app (NotFound, audited as ``event``) before
        anything is written."""
        if self._store.get_app(app_id) is None:
            entry = change_refused(
                event, f"app_id={clipped(app_id, 128)}", "no such app", claims, ctx
            )
            raise self._kernel.deny(NotFound("app not found"), entry)

    @staticmethod
    def _refused(
        refused: list[TaskleaseError],
        event: str,
        app: AppRecord | None,
        app_id: str,
        claims: Claims,
        ctx: RequestContext,
    ) -> AuditEntry:
        """The refusal of a change to an app that does not exist (NotFound) or was
        deregistered before (Conflict), found so under the write lock: the error goes into
        ``refused``, its event (with a ``denial_id``) is returned for the unit to commit,
        and nothing else is written."""
        error: TaskleaseError
        if app is None:
            error, why = NotFound("app not found"), "no such app"
        else:
            error, why = Conflict("app is already deregistered"), "is already deregistered"
        refused[:] = [error]
        return with_denial(
            error, change_refused(event, f"app_id={clipped(app_id, 128)}", why, claims, ctx)
        )

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
        """An app token for an app's client id and secret (:class:`AppSignIn`)."""
        return self._app_sign_in.app_auth(
            client_id, client_secret, ctx, bind=bind, scope=scope, resource=resource
        )

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
        """An app token for an app's signed client assertion (:class:`AppSignIn`)."""
        return self._app_sign_in.app_auth_assertion(
            assertion,
            ctx,
            client_id=client_id,
            audiences=audiences,
            bind=bind,
            scope=scope,
            resource=resource,
        )

    def refuse_app_client(self, reason: str, ctx: RequestContext) -> TaskleaseError:
        """A client refused before it named an app (:meth:`AppSignIn.refuse`)."""
        return self._app_sign_in.refuse(reason, ctx)

    def _sign_in(
        self,
        label: str,
        *,
        kind: str,
        sub: str,
        ttl: int,
        scope: tuple[str, ...],
        client_id: str,
        ctx: RequestContext,
        event: str,
        detail: Callable[[Claims], str],
        cnf: dict[str, str] | None = None,
        spend: Callable[[WriteTx, Claims], tuple[TaskleaseError, str] | None] | None = None,
    ) -> IssuedToken:
        """Mint an admin or app token for a caller who authenticated; audit it.

        ``spend`` records single-use credentials (an assertion's ``jti``, a DPoP proof) in
        the transaction of the audit event, and checks the token about to be issued;
        when it finds a reason to refuse it returns the error and reason, and the sign-in
        is refused instead (audited, nothing issued). Without it (the built-in admin's),
        the check is its subject's entry alone, read in the same write.
        """
        started = time.perf_counter()
        cfg = self._config
        token, claims = mint(
            self._keys,
            kind=kind,
            iss=cfg.issuer,
            sub=sub,
            aud=default_audience(cfg.audience),
            iat=int(self._kernel.now()),
            ttl=ttl,
            scope=scope,
            client_id=client_id,
            cnf=cnf,
        )
        entry = AuditEntry(event, request_id=ctx.request_id, detail=detail(claims))

        def born_revoked(tx: WriteTx, claims: Claims) -> tuple[TaskleaseError, str] | None:
            # The built-in admin's: its subject revoked moments ago (an ``agent``-level
            # entry on ``admin``, dated clock_skew ahead: decision 142), here or on another
            # replica (read through this write), would end the token at birth. Come back
            # when it is past.
            wait = self._kernel.reissue_wait("agent", sub, claims.iat, tx)
            if not wait:
                return None
            return (
                Unavailable(
                    f"the {label}'s tokens were revoked moments ago: sign in again in {wait} s",
                    retry_after=wait,
                ),
                f"revoked_moments_ago (come back in {wait}s) from {ctx.remote}",
            )

        check = born_revoked if spend is None else spend
        refused: list[tuple[TaskleaseError, str]] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            refusal = check(tx, claims)
            if refusal is not None:
                refused.append(refusal)
                return []
            return [entry]

        self._kernel.commit(unit)
        if refused:
            error, why = refused[0]
            self._metrics.auth.labels(label, "failure").inc()
            raise self._kernel.deny(
                error,
                AuditEntry(
                    f"{label}_auth_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('client_id', client_id)} {detail_field('reason', why)}",
                ),
            )
        self._metrics.auth.labels(label, "success").inc()
        self._metrics.tokens_issued.labels(label).inc()
        self._metrics.issuance_seconds.labels(label).observe(time.perf_counter() - started)
        return IssuedToken(token, claims)

    # --- launch tokens ---------------------------------------------------------------------

    def create_launch_token(self, claims: Claims, **request: Any) -> tuple[str, LaunchTokenRecord]:
        """:meth:`prepare_launch_token`, committed in this thread: the token and its
        record."""
        return complete(self._kernel, self.prepare_launch_token(claims, **request))

    def _launch_denied(
        self,
        error: TaskleaseError,
        claims: Claims,
        agent_name: str,
        ctx: RequestContext,
        reason: str,
    ) -> TaskleaseError:
        """A launch token refused: ``error`` under its ``denial_id``, with the one
        ``launch_token_denied`` event saying who asked, for which agent, and why."""
        return self._kernel.deny(
            error,
            AuditEntry(
                "launch_token_denied",
                outcome="denied",
                agent_id=claims.sub,
                request_id=ctx.request_id,
                detail=f"launch token denied for {detail_field('agent', agent_name)} "
                f"by={claims.sub} "
                f"{detail_field('reason', reason)}",
            ),
        )

    def prepare_launch_token(
        self,
        claims: Claims,
        *,
        agent_name: object,
        allowed_scope: object,
        max_ttl: object,
        single_use: object,
        ttl: object,
        ctx: RequestContext,
        principal: object = None,
        resource: object = None,
        max_uses: object = None,
        allow_resume: object = None,
        authorization_details: object = None,
        agent_key: object = None,
    ) -> Pending[tuple[str, LaunchTokenRecord]]:
        """A launch token decided, not written (``core.pending``: its record and event
        are committed by whoever completes it). App callers are held to their app's
        ceiling (scopes and grants); the tenant's issuance policy decides
        (``core.policy``).

        ``authorization_details`` (RFC 9396) are structured grants of its ceiling besides
        ``allowed_scope`` (either may be empty, not both).

        ``resource`` (a string or a list, RFC 8707) names the resources its agents'
        tokens may be for; a registration then names one of them (``invalid_target``).
        The broker's default audience alone is refused: it restricts nothing.

        ``principal`` (``kind:value``, e.g. ``user:alice@example.com``) names the human
        the agents it launches work for; by default the creator (``admin``,
        ``operator:<name>`` or ``app:<app_id>``), which no caller may name itself
        (``invalid_request``). Every token of those agents, and every token delegated
        from them, carries it (docs/agents.md).

        A launch token admits one registration unless ``single_use`` is false; then
        ``max_uses`` of them (default :data:`DEFAULT_MULTI_USES`), each taken atomically.
        ``ttl`` (its own validity) defaults to ``launch_token_ttl`` and may not exceed
        ``launch_token_max_ttl`` (``invalid_ttl``). ``allow_resume`` false keeps the
        agents it launches from resuming by key. ``ttl``, ``max_ttl`` and ``max_uses``
        must be positive integers: anything else is ``invalid_request`` naming the field.

        ``agent_key`` (standard base64 of a raw Ed25519 public key) binds it to one agent:
        only a registration presenting and proving that key is admitted, so a thief of the
        launch token cannot register with a key of its own (TM-02). With
        ``launch_token_binding = "required"`` it is required (``invalid_request``).
        """
        cfg = self._config
        if not isinstance(agent_name, str) or not agent_name:
            raise InvalidRequest("agent_name is required")
        if len(agent_name) > MAX_AGENT_NAME_CHARS:
            raise InvalidRequest(f"agent_name must be at most {MAX_AGENT_NAME_CHARS} characters")
        details = self._kernel.grant_types.check(
            authorization_details, field="authorization_details"
        )
        if allowed_scope is None or allowed_scope == []:
            if not details:
                raise InvalidRequest("allowed_scope must not be empty")
            scope: tuple[str, ...] = ()
        else:
            scope = validate_scopes(allowed_scope, field="allowed_scope")
        validity = _positive_seconds("ttl", ttl)
        agent_ttl = clamp_ttl(_positive_seconds("max_ttl", max_ttl), cfg.default_ttl, cfg)
        for name, flag in (("single_use", single_use), ("allow_resume", allow_resume)):
            if flag is not None and not isinstance(flag, bool):
                raise InvalidRequest(f"{name} must be a boolean")
        multi_use = single_use is False
        uses = _max_uses(max_uses, multi_use=multi_use)
        if agent_key is None and cfg.launch_token_binding == "required":  # noqa: S105
            raise self._launch_denied(
                InvalidRequest(
                    "agent_key is required: launch tokens here admit only the agent key they name",
                    hint="pass the agent's public key (--agent-key; AppClient.create_agent "
                    "binds its own)",
                ),
                claims,
                agent_name,
                ctx,
                "no agent_key (launch_token_binding = required)",
            )
        bound_key = (
            ""
            if agent_key is None
            else jws.b64url_encode(decode_public_key(agent_key, field="agent_key"))
        )
        named = None if principal is None else named_principal(principal)
        resources = validate_ceiling(resource, field="resource", configured=cfg.audience)
        if validity is None:
            validity = cfg.launch_token_ttl
            if multi_use:
                validity = min(validity, MULTI_USE_DEFAULT_TTL)
        if validity > cfg.launch_token_max_ttl:
            raise InvalidTTL(
                f"invalid launch token ttl: at most {cfg.launch_token_max_ttl} seconds, "
                f"got {validity}"
            )
        app_id = ""
        app: AppRecord | None = None
        if claims.kind == KIND_APP:
            app_id = claims.sub.removeprefix("app:")
            app = self._store.get_app(app_id)
            if app is None or app.status != "active":
                raise self._launch_denied(
                    Forbidden("app not found or not active"),
                    claims,
                    agent_name,
                    ctx,
                    "app not active",
                )
        principal_of = named or (f"app:{app_id}" if app_id else claims.sub)
        try:
            decision = self._kernel.check_launch(
                Actor("App", app_id) if app is not None else Actor("Operator", claims.sub),
                scope=scope,
                details=details,
                ceiling=(app.scopes, app.authorization_details) if app is not None else None,
                ttl=agent_ttl,
                human=principal_of,
            )
        except Refusal as refusal:
            if refusal.event_type == "attenuation" and app is not None:
                self._metrics.scope_rejections.labels(ctx.route or "launch-tokens").inc()
                raise self._kernel.deny(
                    Forbidden(
                        f"requested scopes exceed app ceiling; allowed: {listed(app.scopes)}"
                    ),
                    AuditEntry(
                        "scope_ceiling_exceeded",
                        outcome="denied",
                        agent_id=claims.sub,
                        request_id=ctx.request_id,
                        detail=f"{detail_field('app', app_id)} "
                        f"requested={listed(scope)}{_grants(details)} "
                        f"ceiling={listed(app.scopes)}{_grants(app.authorization_details)}"
                        f"{refusal.detail.removeprefix('ceiling would widen')}",
                    ),
                ) from None
            raise self._launch_denied(
                refusal.error, claims, agent_name, ctx, refusal.detail
            ) from None
        now = self._kernel.now()
        token, digest = new_launch_token()
        record = LaunchTokenRecord(
            token_hash=digest,
            agent_name=agent_name,
            allowed_scope=scope,
            max_ttl=agent_ttl,
            single_use=not multi_use,
            created_at=now,
            expires_at=now + validity,
            created_by=claims.sub,
            app_id=app_id,
            principal=principal_of,
            audience=resources,
            max_uses=uses,
            allow_resume=allow_resume is not False,
            authorization_details=details,
            agent_key=bound_key,
        )
        suffix = f" {detail_field('app_id', app_id)}" if app_id else ""
        if bound_key:
            suffix += f" {detail_field('agent_key', bound_key)}"
        if resources:
            suffix += f" resource={listed(resources)}"
        suffix += (
            f" {detail_field('principal', record.principal)} "
            f"principal_ref={principal_ref(record.principal)}"
        )
        suffix += _grants(details) + decision.audit()

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_launch_token(record)
            return [
                AuditEntry(
                    "launch_token_issued",
                    request_id=ctx.request_id,
                    app_id=record.app_id,
                    principal_ref=principal_ref(
                        record.principal or (f"app:{record.app_id}" if record.app_id else "admin")
                    ),
                    detail=f"launch token issued for {detail_field('agent', agent_name)} "
                    f"scope={listed(scope)} "
                    f"max_ttl={agent_ttl} single_use={record.single_use} max_uses={uses} "
                    f"allow_resume={record.allow_resume} ttl={validity} id={digest[:12]} "
                    f"created_by={claims.sub}{suffix}",
                )
            ]

        def done() -> tuple[str, LaunchTokenRecord]:
            self._metrics.launch_tokens_created.inc()
            return token, record

        return Pending(unit, done)
