"""Workload attestation: the configured attestors, their keys, and what evidence earns.

Operators configure attestors per tenant (``tasklease attestor add``): a type
(``core.attestors``), its settings (issuer, keys, claim rules) and a policy
(``core.attestpolicy``: which attested facts earn which ceiling), optionally for an app.
An agent registering with evidence (``POST /v1/register`` with ``attestation``) is
checked here: the attestor is chosen (by name, or by the issuer the evidence names), the
evidence verified with the issuer's keys, the policy decides the ceiling, and the result
is a :class:`~tasklease.core.kernel.Parent` for the kernel's one issuance check, with the
attestation as an ancestor (``attest:<type>:<attestor>:<subject>`` in the lineage; also
``fed:<domain>`` when the keys are a federated domain's, so removing the domain ends the
agent) and the ``attest`` claim every descendant token carries.

Keys: given in the settings (a JWK Set, a SPIFFE bundle) they are parsed here; a
federated trust domain's bundle comes from ``core.federation``; keys on the network are
fetched by a :class:`KeyFetcher` the broker's adapter installs
(``tasklease.attestation``), which caches, refreshes and fails closed. Without one, such
attestors refuse (category ``unavailable``).

Evidence is never stored or logged: the registration records a hash of it as used (the
replay cache, ``consume_evidence``) and the audit log names it by a hash prefix.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tasklease.core.attestors import (
    ATTESTORS,
    AttestationRefused,
    Attested,
    JwksSource,
    SettingsError,
    VerifyContext,
    keys_from_jwks,
    parse_jwks,
    unverified_claims,
)
from tasklease.core.attestpolicy import (
    Grant,
    PolicyRule,
    decide,
    dump_policy,
    load_policy,
    nearest_miss,
    parse_policy,
)
from tasklease.core.audience import check_ceiling
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.callers import change_refused
from tasklease.core.delegation import named_principal
from tasklease.core.errors import InvalidRequest, NotFound, TaskleaseError
from tasklease.core.federation import Federation, UntrustedDomain
from tasklease.core.foreign import domain_entry
from tasklease.core.issuing import listed
from tasklease.core.kernel import Kernel, Parent, RequestContext, Service, with_denial
from tasklease.core.lineage import app_ancestor
from tasklease.core.records import AttestorRecord
from tasklease.core.revoking import unrevocable
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules import scopes as scope_rules
from tasklease.rules.attest import DECLARED_NAMES, Attestation, AttestClaimError
from tasklease.rules.bundle import BundleError, jwt_svid_jwks

__all__ = [
    "MAX_NAME",
    "AttestationOutcome",
    "AttestationService",
    "AttestorTest",
    "KeyFetcher",
    "check_attestation",
    "declared_facts",
]

MAX_NAME = 63  # characters of an attestor's name
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class KeyFetcher(Protocol):
    """Fetches an issuer's keys over the network (an adapter's, ``tasklease.attestation``).

    ``keys(source, now, refresh)`` returns ``{kid: VerifyKey}`` from the last good JWK Set,
    fetching anew when it is older than ``source.refresh`` or when ``refresh`` asks (an
    unknown ``kid``; at most once in a short interval). It raises
    :class:`AttestationRefused` (``unavailable``) when it has no keys younger than
    ``source.max_stale``: fail closed.
    """

    def keys(self, source: JwksSource, now: float, refresh: bool) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Configured:
    """An attestor record with its settings and policy parsed (cached per version)."""

    record: AttestorRecord
    settings: Any
    policy: tuple[PolicyRule, ...]
    issuer: str


@dataclass(frozen=True, slots=True)
class AttestationOutcome:
    """Evidence that passed: what was proved, the claim tokens carry, the ceiling granted
    and the parent it makes for the issuance check."""

    attestor: AttestorRecord
    attested: Attested
    claim: Attestation
    grant: Grant
    parent: Parent


@dataclass(frozen=True, slots=True)
class AttestorTest:
    """What ``tasklease attestor test`` shows: the attested claim, and the grant (None
    when no rule matched; then ``missed`` names each rule's first fact that missed)."""

    claim: Attestation
    grant: Grant | None
    missed: str
    valid_until: float


def declared_facts(value: object) -> dict[str, str]:
    """What an agent declares of itself (``model``, ``runtime``, ``sdk``), checked.

    Raises:
        InvalidRequest: not an object of those names to short printable strings.
    """
    if value is None:
        return {}
    try:
        return dict(Attestation("launch_token", declared=value).declared)  # type: ignore[arg-type]
    except AttestClaimError as exc:
        raise InvalidRequest(
            f"declared: {exc.reason}", hint=f"declare only {', '.join(sorted(DECLARED_NAMES))}"
        ) from None


def _name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_NAME
        or set(value) - _NAME_CHARS
        or value[0] in "-_"
    ):
        raise InvalidRequest(
            f"name must be 1-{MAX_NAME} of a-z 0-9 - _, starting with a letter or digit"
        )
    return value


class AttestationService(Service):
    """The attestors of one broker (one tenant). Thread-safe."""

    def __init__(self, kernel: Kernel, federation: Federation | None = None) -> None:
        super().__init__(kernel)
        # Only the federated domains' trusted bundles are read (from the store, each time).
        self._federation = federation if federation is not None else Federation(kernel)
        self.fetcher: KeyFetcher | None = None
        self._configured: dict[tuple[str, float], _Configured] = {}
        # Keys parsed from a JWK Set's text, by the federated domain whose bundle it is
        # ("" for a pinned set) and the text: a bundle's jwt-svid keys alone, or every
        # signing key of a pinned set, are two readings of one text.
        self._static: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def use_fetcher(self, fetcher: KeyFetcher) -> None:
        """Fetch network keys with ``fetcher`` from now on (the adapter installs one)."""
        self.fetcher = fetcher

    # --- management (operators) ---------------------------------------------------------

    def add(
        self,
        claims: Claims,
        *,
        name: object,
        type: object,
        settings: object,
        policy: object,
        app_id: object = None,
        ctx: RequestContext,
    ) -> tuple[AttestorRecord, bool]:
        """Configure attestor ``name`` (or replace it); returns it and whether it replaced
        one. ``settings`` is the type's configuration object, ``policy`` its rules.

        Raises:
            InvalidRequest: an unknown type, malformed settings or policy, a policy scope
                outside the app's.
            NotFound: ``app_id`` names no active app (audited).
        """
        attestor_name = _name(name)
        if not isinstance(type, str) or type not in ATTESTORS:
            raise InvalidRequest(
                "type must be one of " + ", ".join(sorted(ATTESTORS)),
                hint="launch_token is the default and needs no attestor",
            )
        if not isinstance(settings, dict):
            raise InvalidRequest("settings must be an object")
        try:
            parsed = ATTESTORS[type].settings(settings)
        except SettingsError as exc:
            raise InvalidRequest(f"settings: {exc}") from None
        rules = parse_policy(policy, self._config)
        for index, rule in enumerate(rules):
            check_ceiling(
                rule.resources, field=f"policy[{index}].resources", configured=self._config.audience
            )
            if rule.principal:  # the broker derives creator identities itself
                named_principal(rule.principal)
        app = ""
        if app_id is not None and app_id != "":
            if not isinstance(app_id, str):
                raise InvalidRequest("app_id must be a string")
            record = self._store.get_app(app_id)
            if record is None or record.status != "active":
                why = f"add {attestor_name}: app_id={clipped(app_id, 128)} names no active app"
                raise self._kernel.deny(
                    NotFound("app not found"),
                    change_refused("attestor_denied", "attestor", why, claims, ctx),
                )
            for rule in rules:
                outside = scope_rules.uncovered(rule.scope, record.scopes)
                if outside:
                    raise InvalidRequest(
                        f"policy scope {outside[0]} is outside the app's scopes",
                        hint="an app's attestor grants at most the app's scopes",
                    )
            app = app_id
        stored = AttestorRecord(
            name=attestor_name,
            type=type,
            settings=json.dumps(settings, separators=(",", ":"), sort_keys=True),
            policy=dump_policy(rules),
            app_id=app,
            created_at=self._kernel.now(),
            created_by=claims.sub,
        )
        trusts = _trusts(ATTESTORS[type].issuer_of(parsed), ATTESTORS[type].source(parsed))
        grants = _policy_scopes(rules)
        replaced = False

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal replaced
            replaced = tx.delete_attestor(attestor_name)
            tx.put_attestor(stored)
            return [
                AuditEntry(
                    "attestor_added",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('attestor', attestor_name)} "
                    f"{detail_field('type', type)} "
                    f"{detail_field('app_id', app or '-')} {trusts} "
                    f"settings={_text_digest(stored.settings)} "
                    f"policy={_text_digest(stored.policy)} rules={len(rules)} scope={grants} "
                    f"replaced={str(replaced).lower()} by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        return stored, replaced

    def list_attestors(self) -> list[AttestorRecord]:
        return self._store.list_attestors()

    def get(self, name: str) -> AttestorRecord:
        record = self._store.get_attestor(name) if isinstance(name, str) else None
        if record is None:
            raise _missing()
        return record

    def remove(self, claims: Claims, name: str, ctx: RequestContext) -> AttestorRecord:
        """Remove attestor ``name``: evidence for it is refused from now on. Agents it
        registered keep their tokens; revoke ``attest:<type>:<name>:...`` (level
        ``chain``) to end those too.

        Raises:
            NotFound: no such attestor, before or while this ran (audited).
        """
        record = self._store.get_attestor(name) if isinstance(name, str) else None
        if record is None:
            why = f"remove {clipped(str(name), 128)}: no such attestor"
            raise self._kernel.deny(
                _missing(), change_refused("attestor_denied", "attestor", why, claims, ctx)
            )
        refused: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            if not tx.delete_attestor(record.name):
                refused[:] = [_missing()]
                why = f"remove {record.name}: no such attestor"
                return [
                    with_denial(
                        refused[0], change_refused("attestor_denied", "attestor", why, claims, ctx)
                    )
                ]
            return [
                AuditEntry(
                    "attestor_removed",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('attestor', record.name)} "
                    f"{detail_field('type', record.type)} "
                    f"by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        if refused:
            raise refused[0]
        return record

    def test(
        self, claims: Claims, name: str, evidence: object, ctx: RequestContext
    ) -> AttestorTest:
        """Verify ``evidence`` with attestor ``name`` and say what its policy would grant,
        consuming nothing (``tasklease attestor test``). A refusal is audited and raised
        as :class:`~tasklease.core.errors.InvalidRequest` with its precise reason: the
        caller is an operator checking the configuration."""
        record = self.get(name)
        base = AuditEntry(
            "attestor_tested",
            request_id=ctx.request_id,
            detail=f"{detail_field('attestor', record.name)} by={claims.sub}",
        )
        try:
            if not isinstance(evidence, str) or not evidence:
                raise AttestationRefused("evidence is required", "evidence")
            configured = self._parsed(record)
            attested = self._verify(configured, evidence)
            claim = _claim(attested, {})
        except AttestationRefused as exc:
            entry = AuditEntry(
                "attestor_tested",
                outcome="denied",
                request_id=ctx.request_id,
                detail=f"{base.detail} refused={exc.category}: {reason_text(exc.reason)}",
            )
            raise self._kernel.deny(
                InvalidRequest(f"evidence refused ({exc.category}): {exc.reason}"), entry
            ) from None
        grant = decide(configured.policy, claim, self._config)
        missed = "" if grant is not None else nearest_miss(configured.policy, claim)
        rule = "none" if grant is None else str(grant.rule)
        self._kernel.record(
            AuditEntry(
                "attestor_tested",
                request_id=ctx.request_id,
                detail=f"{base.detail} {detail_field('subject', attested.subject)} "
                f"{detail_field('rule', rule)} "
                f"evidence={attested.digest}",
            )
        )
        return AttestorTest(claim, grant, missed, attested.valid_until)

    # --- registration ---------------------------------------------------------------------

    def attest(
        self, attestation: object, declared: Mapping[str, str], *, iat: int
    ) -> AttestationOutcome:
        """Verify a registration's ``attestation`` (``{type, evidence, attestor?}``) and
        make its parent: the policy's ceiling, the lineage, the ``attest`` claim.

        Raises:
            InvalidRequest: ``attestation`` is not an object with ``type`` and ``evidence``.
            AttestationRefused: the evidence or the policy refused (audited by the caller).
        """
        kind, evidence, name = _request(attestation)
        configured = self._choose(kind, evidence, name)
        attested = self._verify(configured, evidence)
        claim = _claim(attested, declared)
        grant = decide(configured.policy, claim, self._config)
        if grant is None:
            raise AttestationRefused(
                f"no policy rule matched (missed {nearest_miss(configured.policy, claim)})",
                "policy",
            )
        record = configured.record
        app_id = record.app_id
        lineage = (app_ancestor(app_id),) if app_id else ()
        source = ATTESTORS[record.type].source(configured.settings)
        if source is not None and source.federation:
            # Evidence checked with a federated domain's bundle derives from that domain:
            # removing it (``Federation.remove``: a chain revocation of ``fed:<domain>``)
            # ends the agent, its renewals and all it delegated, as it ends exchanged tokens.
            lineage = (*lineage, domain_entry(source.federation))
        cfg = self._config
        parent = Parent(
            holder="",
            scope=grant.scope,
            audience=grant.resources,
            principal=grant.principal or (f"app:{app_id}" if app_id else f"attestor:{record.name}"),
            lineage=(*lineage, claim.ancestor),
            ceiling=iat + min(grant.lifetime, cfg.renewal_ceiling),
            ttl=min(grant.ttl, cfg.max_ttl),
            renewals=0,
            # A registration through evidence resumes with fresh evidence, never by key.
            resumable=False,
            attest=claim.as_json(),
        )
        return AttestationOutcome(record, attested, claim, grant, parent)

    # --- inside ---------------------------------------------------------------------------

    def _choose(self, kind: str, evidence: str, name: str) -> _Configured:
        if name:
            record = self._store.get_attestor(name)
            if record is None or record.type != kind:
                raise AttestationRefused(f"no {kind} attestor named {name}", "not_configured")
            return self._parsed(record)
        candidates = [r for r in self._store.list_attestors() if r.type == kind]
        if not candidates:
            raise AttestationRefused(f"no {kind} attestor configured", "not_configured")
        claims = unverified_claims(evidence)
        named = _issuer_named(kind, claims)
        matching = [c for c in map(self._parsed, candidates) if c.issuer == named]
        if not matching:
            shown = clipped(named, 120) if named else "none"
            raise AttestationRefused(f"issuer {shown} not configured", "not_configured")
        if len(matching) > 1:
            raise AttestationRefused(
                f"several {kind} attestors trust this issuer: name one (attestor)",
                "not_configured",
            )
        return matching[0]

    def _parsed(self, record: AttestorRecord) -> _Configured:
        key = (record.name, record.created_at)
        found = self._configured.get(key)
        if found is not None and found.record == record:
            return found
        attestor = ATTESTORS.get(record.type)
        if attestor is None:  # pragma: no cover - only known types are stored
            raise AttestationRefused(f"unknown attestor type {record.type}", "not_configured")
        try:
            settings = attestor.settings(json.loads(record.settings))
            policy = load_policy(record.policy, self._config)
        except (SettingsError, TaskleaseError, ValueError) as exc:
            raise AttestationRefused(f"stored attestor unusable: {exc}", "not_configured") from None
        found = _Configured(record, settings, policy, attestor.issuer_of(settings))
        with self._lock:
            if len(self._configured) > 256:
                self._configured.clear()
            self._configured[key] = found
        return found

    def _verify(self, configured: _Configured, evidence: str) -> Attested:
        record = configured.record
        attestor = ATTESTORS[record.type]
        source = attestor.source(configured.settings)
        now = self._kernel.now()

        def keys(refresh: bool) -> Mapping[str, Any]:
            return self._keys(source, now, refresh)

        ctx = VerifyContext(
            attestor=record.name,
            audience=self._config.issuer,
            now=now,
            skew=self._config.clock_skew,
        )
        return attestor.verify(evidence, configured.settings, keys, ctx)

    def _keys(self, source: JwksSource | None, now: float, refresh: bool) -> Mapping[str, Any]:
        if source is None:  # pragma: no cover - every JWT attestor names a source
            raise AttestationRefused("attestor has no keys", "keys")
        if source.federation:
            try:
                text = self._federation.trusted_bundle(source.federation, now)
            except UntrustedDomain as exc:
                raise AttestationRefused(f"federated bundle: {exc.reason}", "unavailable") from None
            try:
                return self._parsed_keys(
                    source.federation, text, lambda: jwt_svid_jwks(text, source.federation)
                )
            except BundleError as exc:
                raise AttestationRefused(f"federated bundle: {exc.reason}", "keys") from None
        if source.jwks:
            return self._parsed_keys("", source.jwks, lambda: parse_jwks(source.jwks))
        if self.fetcher is None:
            raise AttestationRefused(
                "no key fetcher: keys on the network unavailable", "unavailable"
            )
        return self.fetcher.keys(source, now, refresh)

    def _parsed_keys(self, domain: str, text: str, entries: Any) -> Mapping[str, Any]:
        """The keys ``entries`` reads from ``text``, remembered by ``domain`` (the
        federated domain whose bundle ``text`` is; "" for a pinned JWK Set) and the text:
        one text read the other way gives other keys."""
        key = (domain, text)
        found = self._static.get(key)
        if found is None:
            found = keys_from_jwks(entries())
            with self._lock:
                if len(self._static) > 256:
                    self._static.clear()
                self._static[key] = found
        return found


def check_attestation(attestation: object) -> None:
    """Check the shape of a registration's ``attestation`` before anything else is done
    with the registration.

    Raises:
        InvalidRequest: not an object with a known ``type`` and an ``evidence`` string, or
            an ``attestor`` that is not a string of at most :data:`MAX_NAME` characters.
    """
    _request(attestation)


def _request(attestation: object) -> tuple[str, str, str]:
    if not isinstance(attestation, dict):
        raise InvalidRequest("attestation must be an object with type and evidence")
    kind, evidence, name = (attestation.get(k) for k in ("type", "evidence", "attestor"))
    # First: the name is the caller's, and a refusal records it (no attestor named it).
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("attestation.attestor must be a string")
    if name is not None and len(name) > MAX_NAME:
        raise InvalidRequest(
            f"attestation.attestor must be at most {MAX_NAME} characters: no attestor's "
            "name is longer"
        )
    if not isinstance(kind, str) or kind not in ATTESTORS:
        raise InvalidRequest(
            "attestation.type must be one of " + ", ".join(sorted(ATTESTORS)),
            hint="a launch token is sent as launch_token",
        )
    if not isinstance(evidence, str) or not evidence:
        raise InvalidRequest("missing required field: attestation.evidence")
    return kind, evidence, name or ""


def _issuer_named(kind: str, claims: Mapping[str, Any]) -> str:
    """The issuer evidence names, unverified (to choose among attestors of one type)."""
    if kind == "jwt_svid":
        sub = claims.get("sub")
        if isinstance(sub, str) and sub.startswith("spiffe://"):
            return "spiffe://" + sub[len("spiffe://") :].split("/", 1)[0]
        return ""
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else ""


def _claim(attested: Attested, declared: Mapping[str, str]) -> Attestation:
    try:
        claim = Attestation(
            type=attested.type,
            attestor=attested.attestor,
            issuer=attested.issuer,
            subject=attested.subject,
            facts=attested.facts,
            declared=declared,
        )
    except AttestClaimError as exc:
        raise AttestationRefused(f"attested facts unusable: {exc.reason}", "claims") from None
    # Its agents are ended through it (level chain): a subject no revocation may name
    # (too long, shaped like a token) would leave them revocable one at a time only.
    why = unrevocable("chain", claim.ancestor)
    if why:
        shape = {"long": "too long", "credential": "shaped like a token"}.get(why, why)
        raise AttestationRefused(
            f"subject {shape}, so that no revocation could name its agents' ancestor", "claims"
        )
    return claim


def _trusts(issuer: str, source: JwksSource | None) -> str:
    """Audit detail of an attestor's trust anchor: the issuer its evidence must name and
    where the keys that verify it come from (``keys=pinned``, the settings' own JWK Set;
    ``fed:<domain>``, a federated domain's bundle; a ``jwks_uri``; ``discovery``, the
    issuer's OIDC discovery document), with the TLS anchor of a fetch."""
    text = detail_field("issuer", clipped(issuer, 256, breaks="/"))
    if source is None or source.jwks:
        return f"{text} keys=pinned"
    if source.federation:
        return f"{text} {detail_field('keys', 'fed:' + source.federation)}"
    where = clipped(source.jwks_uri, 256, breaks="/") if source.jwks_uri else "discovery"
    return f"{text} {detail_field('keys', where)} ca={'pem' if source.ca_pem else 'system'}"


def _policy_scopes(rules: tuple[PolicyRule, ...]) -> str:
    """Audit detail: every scope an attestor's policy grants, in the rules' order, once
    each (``[a b c]``), at most 1024 characters."""
    scopes = dict.fromkeys(scope for rule in rules for scope in rule.scope)
    return clipped(listed(list(scopes)), 1024)


def _text_digest(text: str) -> str:
    """Audit detail: a stored text by the first 32 hex characters of its SHA-256 (128 bits:
    no other text is found with them; below the 64 the sanitizer takes for a secret)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _missing() -> NotFound:
    return NotFound("attestor not found")
