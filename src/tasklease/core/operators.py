"""Named operators: who they are, what their role lets them do, and how they sign in.

An operator has a name (its tokens' ``sub`` and the audit log's name for it are
``operator:<name>``), one role (``core.tokens.ROLE_SCOPES``: ``admin``, ``operator`` or
``auditor``) and one credential of its own: a secret (kept as an argon2id hash, shown once
when made) or an Ed25519 public key, proven by signing a challenge nonce
(``rules.messages.operator_sign_in_input``). Its tokens are ``tasklease-admin+jwt`` with
its role's scopes; the routes' scope gates decide the rest.

Removing an operator, or rotating its credential, empties or replaces the credential and
ends every token it holds (an ``agent``-level revocation of ``operator:<name>``, which
matches tokens with that subject issued until then): a credential is rotated because
someone else may know it. A removed operator's name is never given to another.

The admin secret (``POST /v1/admin/auth``, ``core.apps``) stays as the built-in admin
(``sub`` ``admin``), which holds the ``admin`` role.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace

from tasklease.core.audience import default_audience
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    TaskleaseError,
    Unauthorized,
    Unavailable,
)
from tasklease.core.identity import (
    NonceIssuer,
    decode_public_key,
    decode_signature,
    nonce_hash,
    verify_signed,
)
from tasklease.core.issuing import clamp_ttl
from tasklease.core.kernel import IssuedToken, Kernel, RequestContext, Service, with_denial
from tasklease.core.passwords import hash_secret, new_secret, verify_secret
from tasklease.core.records import OperatorRecord, RevocationRecord
from tasklease.core.signing import SigningKeys
from tasklease.core.store import WriteTx
from tasklease.core.tenants import FIRST_OPERATOR
from tasklease.core.tokens import KIND_ADMIN, ROLE_SCOPES, ROLES, Claims, mint
from tasklease.rules.jws import jwk_thumbprint
from tasklease.rules.messages import operator_sign_in_input

__all__ = ["INIT", "UNKNOWN_OPERATOR", "Operators", "operator_name", "operator_subject"]

_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,62}[a-z0-9])?")
# Who the audit log names for what `tasklease init` does on the local database.
INIT = "init"
_JUST_CHANGED = "credential changed moments ago"
# What a refused sign-in records for a name no operator has (as an unknown app client id).
UNKNOWN_OPERATOR = "<unknown>"


def operator_subject(name: str) -> str:
    """The ``sub`` of an operator's tokens, and its name in the audit log."""
    return f"operator:{name}"


def _shown(name: str, record: OperatorRecord | None) -> str:
    """``name`` as a refused sign-in records it: the name of an operator the store holds
    (active or removed: a name is never given to another), else :data:`UNKNOWN_OPERATOR`.
    A name no operator has is only what was typed in the name field, and that is where a
    secret lands when it is typed, pasted or filled in one field too early: the audit log,
    which an auditor reads without holding any secret, must not keep it."""
    return name if record is not None and record.name == name else UNKNOWN_OPERATOR


def operator_name(name: object) -> str:
    """``name`` if it is a well-formed operator name; raises :class:`InvalidRequest`."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest("missing required field: name")
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            "invalid operator name: must be lowercase letters, digits, and hyphens",
            hint="1-64 characters, starting with a letter, not ending with a hyphen",
        )
    return name


def _credential(record: OperatorRecord) -> str:
    """How ``record`` signs in: ``key``, ``secret``, or ``none`` once removed.

    Written in audit details as ``sign_in=``: a field named ``credential`` would be
    taken by the sanitizer for a secret's, and its value redacted."""
    return "key" if record.public_key else "secret" if record.secret_hash else "none"


def _key_named(record: OperatorRecord) -> str:
    """Audit detail: the key ``record`` signs in with, by its RFC 7638 thumbprint, as an
    app's is (`` public_key_jkt=...``); "" for an operator without one."""
    return f" public_key_jkt={jwk_thumbprint(record.public_key)}" if record.public_key else ""


def _key_change(before: OperatorRecord, after: OperatorRecord) -> str:
    """Audit detail of a rotation: the key before and after, by thumbprint, ``-`` for none
    (`` public_key_jkt=<before>-><after>``); "" when neither has a key."""
    if not before.public_key and not after.public_key:
        return ""
    was = jwk_thumbprint(before.public_key) if before.public_key else "-"
    now = jwk_thumbprint(after.public_key) if after.public_key else "-"
    return f" public_key_jkt={was}->{now}"


# Why the last active admin of a broker without an admin secret (a tenant's) is not removed.
_LAST_ADMIN = (
    "the last admin operator of a tenant is not removed: no one could manage the tenant "
    "after it; add another admin operator first"
)


class Operators(Service):
    """Operator identities: add, remove, list, rotate, sign in. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys, nonces: NonceIssuer) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._nonces = nonces

    # --- management (admin role) ----------------------------------------------------------

    def add(
        self,
        claims: Claims,
        *,
        name: object,
        role: object,
        public_key: object,
        ctx: RequestContext,
    ) -> tuple[OperatorRecord, str]:
        """Create an operator; returns the record and its secret ("" when it has a key).

        With ``public_key`` (standard base64 of a raw Ed25519 key) the operator signs in
        with that key; without, a secret is generated and returned, shown only this once.

        Raises:
            InvalidRequest: a malformed name, role or key.
            Conflict: the name is taken, now or by a removed operator (audited).
        """
        return self._add(claims.sub, name=name, role=role, public_key=public_key, ctx=ctx)

    def _add(
        self, by: str, *, name: object, role: object, public_key: object, ctx: RequestContext
    ) -> tuple[OperatorRecord, str]:
        name = operator_name(name)
        if not isinstance(role, str) or not role:
            raise InvalidRequest("missing required field: role")
        if role not in ROLES:
            raise InvalidRequest(
                f"invalid role: {clipped(role, 32)}", hint=f"use one of {', '.join(ROLES)}"
            )
        key = b"" if public_key is None else decode_public_key(public_key)
        if self._store.get_operator(name) is not None:
            raise self._refuse(
                Conflict("operator name already exists"),
                name,
                by,
                ctx,
                "name taken (operator names are never reused)",
            )
        secret = "" if key else new_secret()
        now = self._kernel.now()
        record = OperatorRecord(
            name=name,
            role=role,
            secret_hash=hash_secret(secret) if secret else "",
            public_key=key,
            status="active",
            created_at=now,
            updated_at=now,
            created_by=by,
        )

        how = _credential(record)
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            try:
                tx.insert_operator(record)
            except Conflict:  # taken since the check above (another process, a racing add)
                refused[:] = [Conflict("operator name already exists")]
                why = "name taken (operator names are never reused)"
                return [with_denial(refused[0], self._denied(name, by, ctx, why))]
            return [
                AuditEntry(
                    "operator_added",
                    agent_id=operator_subject(name),
                    request_id=ctx.request_id,
                    detail=f"{detail_field('operator', name)} {detail_field('role', role)} "
                    f"sign_in={how}{_key_named(record)} by={by}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return record, secret

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        return self._store.list_operators()

    def remove(self, claims: Claims, name: object, ctx: RequestContext) -> OperatorRecord:
        """Remove an operator: its credential stops working and its live tokens end, at once.

        A broker without an admin secret (every tenant's) keeps at least one active admin
        operator: nothing else can ever make one there (the default tenant's admins
        manage the tenant registry, not what is inside a tenant).

        Raises:
            NotFound: no such operator, or it was removed before (audited).
            Conflict: it is the last active admin of a broker without an admin secret,
                before or while this ran (audited).
        """
        record = self._active(claims.sub, name, ctx, "remove")
        others: tuple[str, ...] = ()
        if record.role == "admin" and not self._config.admin_secret_hash:
            others = tuple(
                o.name
                for o in self._store.list_operators()
                if o.role == "admin" and o.status == "active" and o.name != record.name
            )
            if not others:
                raise self._refuse(
                    Conflict(_LAST_ADMIN), record.name, claims.sub, ctx, "remove: " + _LAST_ADMIN
                )

        def entry(current: OperatorRecord) -> AuditEntry:
            return AuditEntry(
                "operator_removed",
                agent_id=operator_subject(current.name),
                request_id=ctx.request_id,
                detail=f"{detail_field('operator', current.name)} role={current.role} removed, "
                f"its tokens "
                f"revoked by={claims.sub}",
            )

        return self._change(
            record.name,
            claims.sub,
            ctx,
            "remove",
            entry,
            status="removed",
            secret_hash="",
            public_key=b"",
            one_of_stays=others,
        )

    def rotate(
        self, claims: Claims, name: object, *, public_key: object, ctx: RequestContext
    ) -> tuple[OperatorRecord, str]:
        """Replace an operator's credential; its live tokens end.

        With ``public_key`` the operator signs in with that key from now on; without, a
        new secret is generated and returned (shown only this once). The old credential
        stops working at once.

        Raises:
            InvalidRequest: a malformed key.
            NotFound: no such operator, or it was removed, before or while this ran
                (audited).
        """
        return self._rotate(claims.sub, name, public_key=public_key, ctx=ctx)

    def _rotate(
        self, by: str, name: object, *, public_key: object, ctx: RequestContext
    ) -> tuple[OperatorRecord, str]:
        key = b"" if public_key is None else decode_public_key(public_key)
        record = self._active(by, name, ctx, "rotate")
        secret = "" if key else new_secret()
        secret_hash = hash_secret(secret) if secret else ""

        def entry(current: OperatorRecord) -> AuditEntry:
            after = replace(current, secret_hash=secret_hash, public_key=key)
            return AuditEntry(
                "operator_credential_rotated",
                agent_id=operator_subject(current.name),
                request_id=ctx.request_id,
                detail=f"{detail_field('operator', current.name)} "
                f"sign_in={_credential(current)}->{_credential(after)}"
                f"{_key_change(current, after)}, "
                f"its tokens revoked by={by}",
            )

        changed = self._change(
            record.name,
            by,
            ctx,
            "rotate",
            entry,
            status="active",
            secret_hash=secret_hash,
            public_key=key,
        )
        return changed, secret

    def _change(
        self,
        name: str,
        by: str,
        ctx: RequestContext,
        what: str,
        entry: Callable[[OperatorRecord], AuditEntry],
        *,
        status: str,
        secret_hash: str,
        public_key: bytes,
        one_of_stays: tuple[str, ...] = (),
    ) -> OperatorRecord:
        """Give the active operator ``name`` a new status and credential (a removal or a
        rotation), audited by ``entry`` of the record as it was, and end every token it
        holds; return the record written.

        The operator is read again inside the write unit, under the write lock: one removed
        since the caller looked is refused (NotFound, audited with a ``denial_id``, nothing
        written), never made active again, and nothing read before the unit is written.

        The time of the change, which the revocation entry's ``revoked_at`` is, is read
        inside the write unit: a sign-in whose own unit committed before this one minted
        its token before that time, so the entry ends it; one whose unit comes after sees
        the changed row and is refused (:func:`_still_standing`).

        With ``one_of_stays`` (the other active admins the caller saw, when the change
        removes the last admin of a broker without an admin secret otherwise), one of them
        must still be an active admin under the write lock: two removals at once (two
        replicas) never remove the last two (Conflict, audited, nothing written).
        """
        written: list[tuple[OperatorRecord, list[RevocationRecord]]] = []
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            current = tx.get_operator(name)
            if current is None or current.status != "active":
                why = "no such operator" if current is None else "operator was removed"
                error: TaskleaseError = NotFound("operator not found")
                refused[:] = [error]
                return [with_denial(error, self._denied(name, by, ctx, f"{what}: {why}"))]
            if one_of_stays and not any(
                (other := tx.get_operator(n)) is not None
                and other.status == "active"
                and other.role == "admin"
                for n in one_of_stays
            ):
                error = Conflict(_LAST_ADMIN)
                refused[:] = [error]
                return [with_denial(error, self._denied(name, by, ctx, f"{what}: {_LAST_ADMIN}"))]
            now = self._kernel.now()
            changed = replace(
                current,
                status=status,
                secret_hash=secret_hash,
                public_key=public_key,
                updated_at=now,
            )
            ending = self._ending(name, now)
            tx.update_operator(changed)
            for revocation in ending:
                tx.insert_revocation(revocation)
            written[:] = [(changed, ending)]
            return [entry(current)]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        changed, ending = written[0]
        self._kernel.apply_revocations(ending)
        return changed

    def set_up_first_admin(self, name: object, ctx: RequestContext) -> tuple[OperatorRecord, str]:
        """An admin operator with a fresh secret, for ``tasklease init`` on its own database.

        Made when there is none of that name; an active one has its secret replaced (init
        ``--force`` replaces every secret it made). Audited as done by ``init``.

        Raises:
            InvalidRequest: a malformed name.
            NotFound: an operator of that name was removed (names are never reused).
        """
        existing = self._store.get_operator(operator_name(name))
        if existing is None:
            return self._add(INIT, name=name, role="admin", public_key=None, ctx=ctx)
        return self._rotate(INIT, name, public_key=None, ctx=ctx)

    def add_first_admin(self, by: str, ctx: RequestContext) -> tuple[OperatorRecord, str]:
        """The operator ``admin`` (admin role, a fresh secret) of a new tenant, made by
        ``by`` (the default tenant's operator who created the tenant).

        Raises:
            Conflict: the tenant has an operator ``admin`` already (audited): a second
                call never replaces its secret.
        """
        return self._add(by, name=FIRST_OPERATOR, role="admin", public_key=None, ctx=ctx)

    def _active(self, by: str, name: object, ctx: RequestContext, what: str) -> OperatorRecord:
        """The active operator ``name``, or an audited NotFound."""
        name = operator_name(name)
        record = self._store.get_operator(name)
        if record is None or record.status != "active":
            why = "no such operator" if record is None else "operator was removed"
            raise self._refuse(NotFound("operator not found"), name, by, ctx, f"{what}: {why}")
        return record

    def _ending(self, name: str, now: float) -> list[RevocationRecord]:
        """The entry that ends every token ``operator:<name>`` holds, issued until ``now``."""
        return [self._kernel.revocation_entry("agent", operator_subject(name), at=now)]

    def _refuse(
        self, exc: TaskleaseError, name: str, by: str, ctx: RequestContext, why: str
    ) -> TaskleaseError:
        return self._kernel.deny(exc, self._denied(name, by, ctx, why))

    @staticmethod
    def _denied(name: str, by: str, ctx: RequestContext, why: str) -> AuditEntry:
        return AuditEntry(
            "operator_denied",
            outcome="denied",
            agent_id=operator_subject(name),
            request_id=ctx.request_id,
            detail=f"{detail_field('operator', name)} refused: {reason_text(why)} by={by}",
        )

    # --- sign-in ---------------------------------------------------------------------------

    def authenticate(
        self,
        *,
        name: object,
        secret: object,
        nonce: object,
        signature: object,
        ctx: RequestContext,
    ) -> tuple[IssuedToken, OperatorRecord]:
        """An operator token for ``name`` and its secret, or its key's signature of a nonce.

        The key signs ``rules.messages.operator_sign_in_input(name, nonce)`` with a fresh
        nonce from ``GET /v1/challenge``; the nonce is spent whether or not the signature
        verifies. Unknown names, removed operators, the wrong kind of credential, wrong
        credentials and a credential rotated or removed while the sign-in ran all answer
        the same (401 ``invalid credentials``); the audit log says which.

        Raises:
            InvalidRequest: a malformed name, nonce or signature, or neither or both
                kinds of credential.
            Unauthorized: the credential did not prove the operator (audited).
        """
        name = operator_name(name)
        by_key = nonce is not None or signature is not None
        if by_key == (secret is not None):
            raise InvalidRequest("send either secret, or nonce and signature")
        if by_key:
            return self._by_key(name, nonce, signature, ctx)
        if not isinstance(secret, str) or not secret:
            raise InvalidRequest("missing required field: secret")
        started = time.perf_counter()
        record = self._store.get_operator(name)
        stored = record.secret_hash if record is not None and record.secret_hash else None
        verified = verify_secret(stored, secret)  # the same work for every failure
        reason = self._failure(record, "secret") or ("" if verified else "wrong secret")
        if reason or record is None:
            raise self._sign_in_refused(name, record, reason, ctx)
        return self._issue(name, record, "", ctx, started)

    def _by_key(
        self, name: str, nonce: object, signature: object, ctx: RequestContext
    ) -> tuple[IssuedToken, OperatorRecord]:
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest("missing required field: nonce")
        sig = decode_signature(signature)
        started = time.perf_counter()
        now = self._kernel.now()
        record = self._store.get_operator(name)
        try:
            nonce_expiry = self._nonces.check(nonce, now)
        except Unauthorized as exc:
            why = f"nonce refused: {exc.reason}"
            raise self._sign_in_refused(name, record, why, ctx) from None
        reason = self._failure(record, "key")
        key = record.public_key if record is not None and not reason else None
        # One signature checked for every name, as one argon2 check is for a secret.
        if not verify_signed(key, operator_sign_in_input(name, nonce), sig) and not reason:
            reason = "signature does not verify"
        spent = (nonce_hash(nonce), nonce_expiry + self._config.clock_skew)
        return self._issue(name, record, reason, ctx, started, spent=spent)

    def _issue(
        self,
        name: str,
        record: OperatorRecord | None,
        reason: str,
        ctx: RequestContext,
        started: float,
        *,
        spent: tuple[str, float] | None = None,
    ) -> tuple[IssuedToken, OperatorRecord]:
        """Issue the token of a sign-in whose credential ``record`` proved (``reason``
        empty), or refuse it: one write unit spends the nonce (``spent``: its hash and
        until when), checks that the operator still stands as read, and records the
        sign-in or its refusal (one audit event, a ``denial_id``).

        The credential was checked against ``record`` as read before the (slow) check: a
        rotation or removal committed since would otherwise let the old credential mint a
        token its revocation entry, written a second earlier, does not match.
        """
        issued = self._mint(record) if not reason and record is not None else None
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            # The nonce is spent in every case: a failed proof must not leave it reusable.
            fresh = spent is None or tx.consume_nonce(*spent)
            why = reason or ("" if fresh else "nonce already used")
            wait = 0
            if record is not None and not why:
                # An operator changed since it was read is refused as such, not asked to
                # come back (its token would be born revoked too).
                why = _still_standing(tx, record)
            if issued is not None and not why:
                wait = self._born_revoked(tx, issued.claims)
                why = f"{_JUST_CHANGED}: come back in {wait}s" if wait else ""
            if why or issued is None or record is None:
                failure = _refusal(why, wait)
                refused[:] = [failure]
                return [with_denial(failure, self._failure_entry(name, record, why, ctx))]
            return [self._signed_in(record, issued.claims, ctx)]

        self._kernel.commit(unit)
        if refused or issued is None or record is None:  # the unit refused every such case
            self._metrics.auth.labels("operator", "failure").inc()
            raise refused[0]
        return self._issued(issued, started), record

    @staticmethod
    def _failure(record: OperatorRecord | None, credential: str) -> str:
        """Why ``record`` cannot sign in with this kind of credential, or ""."""
        if record is None:
            return "no such operator"
        if record.status != "active":
            return "operator was removed"
        if _credential(record) != credential:
            return f"operator signs in with a {_credential(record)}, not a {credential}"
        return ""

    def shown_name(self, name: str) -> str:
        """``name`` as a sign-in refused before its operator was read records it (the
        console's form): looked up now; :data:`UNKNOWN_OPERATOR` for a malformed name, one
        no operator has, or when the store cannot say."""
        try:
            return _shown(name, self._store.get_operator(operator_name(name)))
        except TaskleaseError:
            return UNKNOWN_OPERATOR

    def _failure_entry(
        self, name: str, record: OperatorRecord | None, reason: str, ctx: RequestContext
    ) -> AuditEntry:
        """The refusal's event; ``record``: the operator read for ``name`` (None: none)."""
        shown = _shown(name, record)
        return AuditEntry(
            "operator_auth_failed",
            outcome="denied",
            agent_id=operator_subject(shown) if shown != UNKNOWN_OPERATOR else "",
            request_id=ctx.request_id,
            detail=f"operator sign-in failed: {reason_text(reason)} | "
            f"{detail_field('operator', shown)} from "
            f"{ctx.remote}",
        )

    def _sign_in_refused(
        self, name: str, record: OperatorRecord | None, reason: str, ctx: RequestContext
    ) -> TaskleaseError:
        self._metrics.auth.labels("operator", "failure").inc()
        entry = self._failure_entry(name, record, reason, ctx)
        return self._kernel.deny(_refusal(reason), entry)

    def _born_revoked(self, tx: WriteTx, claims: Claims) -> int:
        """Seconds until a token like the one just minted would not be revoked already
        (0: it is not).

        The entry a rotation (or an operator's ``agent``-level revocation) writes ends the
        tokens issued up to and including its ``revoked_at``, which is ``clock_skew`` past
        the second of the change (``Kernel.revocation_entry``: so that it also ends what a
        replica whose clock runs ahead signed in before it). A token minted until then is
        therefore not issued; the caller is asked to come back when it is past. The entry
        is read through the sign-in's own write (``tx``) as well as this process's index,
        so another replica's, not applied here yet, counts as this one's does.
        """
        wait = self._kernel.reissue_wait("agent", claims.sub, claims.iat, tx)
        if not wait and self._kernel.revocations.match(claims) is not None:
            wait = 1  # ended by another entry: nothing to wait for, but nothing to issue
        return wait

    def _mint(self, record: OperatorRecord) -> IssuedToken:
        cfg = self._config
        sub = operator_subject(record.name)
        iat = int(self._kernel.now())
        token, claims = mint(
            self._keys,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub=sub,
            aud=default_audience(cfg.audience),
            iat=iat,
            ttl=clamp_ttl(cfg.admin_token_ttl, cfg.default_ttl, cfg),
            scope=ROLE_SCOPES[record.role],
            client_id=sub,
        )
        return IssuedToken(token, claims)

    @staticmethod
    def _signed_in(record: OperatorRecord, claims: Claims, ctx: RequestContext) -> AuditEntry:
        return AuditEntry(
            "operator_authenticated",
            agent_id=claims.sub,
            request_id=ctx.request_id,
            detail=f"{detail_field('operator', record.name)} role={record.role} signed in with its "
            f"{_credential(record)} from {ctx.remote} jti={claims.jti}",
        )

    def _issued(self, issued: IssuedToken, started: float) -> IssuedToken:
        self._metrics.auth.labels("operator", "success").inc()
        self._metrics.tokens_issued.labels("operator").inc()
        self._metrics.issuance_seconds.labels("operator").observe(time.perf_counter() - started)
        return issued


def _still_standing(tx: WriteTx, record: OperatorRecord) -> str:
    """Why the operator no longer stands as ``record`` says, or "": read again through the
    sign-in's own write transaction, where a change is either written already (committed,
    or earlier in the same batch: then seen here) or comes after (then its revocation
    entry ends the token, :meth:`Operators._change`). Never through the store's read
    connection, which does not see a change earlier in the batch."""
    current = tx.get_operator(record.name)
    if current is None or current.status != record.status:
        return "operator was removed during sign-in"
    if current != record:  # a new secret or key, or any other change: updated_at
        return "operator's credential changed during sign-in"
    return ""


def _refusal(reason: str, wait: int = 0) -> TaskleaseError:
    """What a failed sign-in answers: one generic 401, or come back in ``wait`` seconds
    (a token issued now would be born revoked: ``Operators._born_revoked``)."""
    if wait and reason.startswith(_JUST_CHANGED):
        return Unavailable(
            f"the operator's credential changed moments ago: sign in again in {wait} s",
            retry_after=wait,
        )
    return Unauthorized("invalid credentials")
