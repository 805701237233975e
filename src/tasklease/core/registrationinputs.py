"""What a registration rests on, checked before anything is written: the launch token's
parent, the attestation, the key binding (``cnf``), and the policy actor and audit words."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import replace

from tasklease.core.attestation import AttestationOutcome, AttestationService
from tasklease.core.attestors import AttestationRefused, evidence_hash
from tasklease.core.attestors.launch_token import refusal as launch_refusal
from tasklease.core.auditformat import AuditEntry, detail_field, reason_text
from tasklease.core.errors import (
    InvalidDPoPProof,
    InvalidRequest,
    TaskleaseError,
    Unauthorized,
    UseDPoPNonce,
)
from tasklease.core.kernel import Kernel, Parent, RequestContext, Service
from tasklease.core.launch import LAUNCH_TOKEN_PATTERN, launch_token_hash
from tasklease.core.lineage import app_ancestor
from tasklease.core.policyrequest import Actor
from tasklease.core.records import LaunchTokenRecord
from tasklease.core.store import WriteTx
from tasklease.rules import jws
from tasklease.rules.binding import BindingError, DPoPNonceRequired, DPoPProof, DPoPVerifier
from tasklease.rules.principals import creator_kind

__all__ = [
    "RegistrationInputs",
    "actor_of",
    "attested_suffix",
    "policy_of",
]


class RegistrationInputs(Service):
    """The checks of a registration's launch token, attestation and key binding; each
    raises what ``deny`` makes of a refusal. Thread-safe; one per :class:`Registration`."""

    def __init__(self, kernel: Kernel, dpop: DPoPVerifier, attestation: AttestationService) -> None:
        super().__init__(kernel)
        self._dpop = dpop
        self._attestation = attestation

    def launch_parent(
        self,
        launch_token: str,
        key: bytes,
        now: float,
        base: AuditEntry,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> tuple[LaunchTokenRecord, str, Parent]:
        """The launch token's record, its hash and the parent it makes (nothing consumed).

        Today's registration path (``core.attestors.launch_token``): looked up by hash,
        unexpired, with a use left, its creator standing, and, when it is bound to an
        agent's key, registering that key (``key``, the raw public key the registration
        presents; its possession is proven after); its ceiling the parent's.
        """
        if not LAUNCH_TOKEN_PATTERN.fullmatch(launch_token):
            raise deny(
                Unauthorized("launch token: launch token not found"),
                replace(base, detail="launch token malformed"),
            )
        lt_hash = launch_token_hash(launch_token)
        record = self._store.get_launch_token(lt_hash)
        why = launch_refusal(
            found=record is not None,
            expired=record is not None and now >= record.expires_at,
            uses=record.uses if record is not None else 0,
            max_uses=record.max_uses if record is not None else 1,
        )
        if record is None or why:
            detail = f"{why} ({lt_hash[:12]})"
            if record is not None and record.uses >= record.max_uses:
                detail = (
                    f"launch token already consumed: {record.uses} of {record.max_uses} uses "
                    f"({lt_hash[:12]})"
                )
            raise deny(Unauthorized(f"launch token: {why}"), replace(base, detail=detail))
        ended = self._creator_ended(record)
        if ended:
            raise deny(
                Unauthorized("launch token: launch token revoked"),
                replace(base, detail=f"{ended} ({lt_hash[:12]})"),
            )
        presented = jws.b64url_encode(key)
        if record.agent_key and not hmac.compare_digest(record.agent_key, presented):
            # Whoever holds a copy of the token, with a key of its own: refused before
            # anything is spent, so the agent it was made for still registers (TM-02).
            raise deny(
                Unauthorized("launch token: bound to another agent key"),
                replace(
                    base,
                    detail=f"launch token bound to agent_key={record.agent_key}, "
                    f"presented {presented} ({lt_hash[:12]})",
                ),
            )
        iat = int(now)
        principal = record.principal or (f"app:{record.app_id}" if record.app_id else "admin")
        parent = Parent(
            holder="",
            scope=record.allowed_scope,
            details=record.authorization_details,
            audience=record.audience,
            principal=principal,
            lineage=(app_ancestor(record.app_id),) if record.app_id else (),
            ceiling=iat + self._config.renewal_ceiling,
            ttl=record.max_ttl,
            renewals=0,
        )
        return record, lt_hash, parent

    def _creator_ended(self, record: LaunchTokenRecord) -> str:
        """Why the admin, operator or app that made a launch token no longer stands
        behind it ("" when it does): an operator removed, or its credential changed
        (rotated, its role or key changed) since; an app's key added, replaced or removed
        since; the admin secret changed since (``core.adminsecret``). A stolen operator
        secret's, app key's or admin secret's launch tokens end with that credential, as
        its own tokens do (TM-35). A removed app's end with the app (its ``app:``
        ancestor, refused by the kernel).

        The change's revocation entry on the creator's tokens (level ``agent``, dated
        ``clock_skew`` past the change: decision 142) ends the launch tokens made at or
        before its time too, as it ends the tokens that made them: one made by a token
        checked just before the change and written just after it, or by a replica whose
        clock runs ahead of the changer's, was made by such a token. It is read from the
        store, which no replica's lag can hide."""
        kind = creator_kind(record.created_by)
        if kind == "admin":
            return self._creator_revoked(record, held=True)
        if kind == "app" and record.app_id:
            app = self._store.get_app(record.app_id)
            if app is not None and app.credential_changed_at > record.created_at:
                return f"launch token of {record.created_by}, whose credential changed since"
            if app is None or app.status != "active":
                return ""  # the kernel refuses it: a removed app is a dead ancestor
            return self._creator_revoked(record)
        if kind != "operator":
            return ""
        name = record.created_by.partition(":")[2]
        operator = self._store.get_operator(name)
        if operator is None or operator.status != "active":
            return f"launch token of {record.created_by}, who was removed since"
        if operator.updated_at > record.created_at:
            return f"launch token of {record.created_by}, whose credential changed since"
        return self._creator_revoked(record)

    def _creator_revoked(self, record: LaunchTokenRecord, *, held: bool = False) -> str:
        """Why a launch token was made by a token its creator's revocation entry ends
        ("" when none does): made at or before that entry's ``revoked_at``.

        The entry is read from the store; ``held``: from this process's revocation index,
        as every token's is when validated (the admin's: a start with another secret
        writes it before any worker starts, and an operator's revocation reaches every
        process within milliseconds), so a registration under the admin's launch token
        costs no read more. Either way :meth:`creator_revoked_in` reads it again in the
        registration's own transaction."""
        creator = record.created_by
        if held:
            at = self._kernel.revocations.revoked_at("agent", creator)
            ends = [] if at is None else [at]
        else:
            ends = [
                entry.revoked_at for entry in self._store.find_revocations([("agent", creator)])
            ]
        return _made_before_an_end(record, ends)

    @staticmethod
    def creator_revoked_in(tx: WriteTx, record: LaunchTokenRecord) -> str:
        """:meth:`_creator_revoked` as the registration's own transaction sees it, under
        its write lock: an end of the creator (its removal, a new credential or key, its
        tokens revoked at level ``agent``: each writes that entry) committed after the
        registration was checked, and before it is written, refuses it, on every replica."""
        entry = tx.find_revocation("agent", record.created_by)
        return _made_before_an_end(record, [] if entry is None else [entry.revoked_at])

    def attested(
        self,
        attestation: object,
        declaration: dict[str, str],
        iat: int,
        base: AuditEntry,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> AttestationOutcome:
        """The evidence verified and the policy's ceiling (``core.attestation``); a
        refusal is one generic 401 outward and its precise reason in the audit log."""
        try:
            return self._attestation.attest(attestation, declaration, iat=iat)
        except AttestationRefused as exc:
            self._metrics.attestation_refusals.labels(exc.category).inc()
            detail = f"attestation refused ({exc.category}): {reason_text(exc.reason)}"
            if isinstance(attestation, dict) and isinstance(attestation.get("evidence"), str):
                detail += f" evidence={evidence_hash(attestation['evidence'])[:12]}"
            raise deny(Unauthorized("attestation refused"), replace(base, detail=detail)) from None

    def binding(
        self,
        ctx: RequestContext,
        now: float,
        base: AuditEntry,
        deny: Callable[[TaskleaseError, AuditEntry], Exception],
    ) -> tuple[dict[str, str], DPoPProof | None]:
        """The ``cnf`` a registration earns (its client certificate and/or DPoP key), and
        the DPoP proof for the registration's transaction to record as used (RFC 9449
        section 11.1: single use, in the store every worker and replica shares).

        With ``holder_binding = "required"`` a registration that earns none is refused
        (400, before anything is spent): every token of an agent carries its
        registration's binding, so this is the one place that decides it."""
        cnf: dict[str, str] = {}
        if ctx.cert_thumbprint:
            cnf["x5t#S256"] = ctx.cert_thumbprint
        proof = None
        if ctx.dpop:
            try:
                proof = self._dpop.check(ctx.dpop, htm=ctx.method, htu=ctx.url, now=now)
            except DPoPNonceRequired as exc:  # RFC 9449 section 8: retry with this nonce
                raise deny(
                    UseDPoPNonce(reason=exc.reason, dpop_nonce=exc.nonce),
                    replace(
                        base, detail=f"registration DPoP proof refused: {reason_text(exc.reason)}"
                    ),
                ) from None
            except BindingError as exc:
                raise deny(
                    InvalidDPoPProof("invalid DPoP proof", reason=exc.reason),
                    replace(
                        base, detail=f"registration DPoP proof refused: {reason_text(exc.reason)}"
                    ),
                ) from None
            cnf["jkt"] = proof.jkt
        if not cnf and self._config.holder_binding == "required":
            raise deny(
                InvalidRequest(
                    "holder binding required: register with a DPoP proof, or over mTLS "
                    "with a client certificate",
                    hint="the SDK binds with Agent.register(..., dpop=True); see docs/agents.md",
                ),
                replace(
                    base, detail="holder binding required: no DPoP proof, no client certificate"
                ),
            )
        return cnf, proof


def actor_of(
    record: LaunchTokenRecord | None,
    lt_hash: str,
    attested: AttestationOutcome | None,
    app_id: str,
) -> Actor:
    """Who asks, for the issuance policy: the launch token (with the attested facts as
    tags when evidence came too), else the attested workload."""
    facts = dict(attested.claim.facts) if attested is not None else {}
    if record is not None:
        attrs = {"agent_name": record.agent_name, "created_by": record.created_by}
        return Actor("LaunchToken", lt_hash[:16], attrs, facts, app_id)
    if attested is None:  # pragma: no cover - one of the two is required
        return Actor("LaunchToken", "unknown")
    used = attested.attested
    attrs = {"attestor": used.attestor, "type": used.type, "subject": used.subject}
    # The whole id, never clipped: a policy names the workload by it (an attestor's name
    # holds no ':', and the subject is at most 2048 printable characters).
    return Actor("Workload", f"{used.attestor}:{used.subject}", attrs, facts, app_id)


def policy_of(detail: str) -> str:
    """The policy decision a refusal's detail ends with (`` policy=...``), or ""."""
    at = detail.find(" policy=")
    return detail[at:] if at >= 0 else ""


def attested_suffix(attested: AttestationOutcome | None) -> str:
    """Audit detail: which attestor, subject, rule and evidence (by hash) admitted it."""
    if attested is None:
        return ""
    used = attested.attested
    return (
        f" {detail_field('attestor', used.attestor)} {detail_field('type', used.type)} "
        f"{detail_field('subject', used.subject)} {detail_field('rule', attested.grant.rule)} "
        f"evidence={used.digest}"
    )


def _made_before_an_end(record: LaunchTokenRecord, ends: Sequence[float]) -> str:
    """Why ``record`` was made at or before one of its creator's ends (``revoked_at`` of
    its ``agent``-level entries), or ""."""
    for revoked_at in ends:
        if record.created_at <= revoked_at:
            return (
                f"launch token of {record.created_by}, made by a token ended at "
                f"{revoked_at:.0f} (its credential changed or its tokens were revoked)"
            )
    return ""
