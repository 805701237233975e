"""Federated trust domains: their records, their last good bundles, the keys they trust.

An operator declares another broker's trust domain (``tasklease federation add``): where
its SPIFFE bundle comes from (a bundle endpoint, SPIFFE Federation ``https_web``, or a
static bundle given once), how old the last good bundle may grow before it is no longer
trusted (``max_bundle_age``: fail closed), and the policy for credentials from it
(``scope_map``, ``scope_ceiling``, ``max_ttl``; cross-domain token exchange applies it).
The records live in the store, so every replica sees the same bundles; the bundles are
fetched outside the core (``tasklease.federation``, an adapter) and handed to
:meth:`Federation.accept_bundle`, which refuses one that does not parse or whose
``spiffe_sequence`` goes backwards and keeps the last good one.

:meth:`Federation.trusted_keys` is what verifying a foreign token asks: the keys of one
domain's last good bundle, never another domain's (bundles are never merged), or
:class:`UntrustedDomain` (one generic refusal whatever the reason: unknown domain, no
bundle yet, bundle too old).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import replace

from tasklease.core import federationfields as fields
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.foreign import domain_entry
from tasklease.core.issuing import listed
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.keys import jwk_thumbprint
from tasklease.core.records import FederationRecord
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims
from tasklease.rules.bundle import BundleError, TrustBundle, parse_bundle

__all__ = [
    "DEFAULT_MAX_BUNDLE_AGE",
    "DEFAULT_REFRESH_HINT",
    "MIN_REFRESH_INTERVAL",
    "BundleRefused",
    "Federation",
    "FederationRecord",
    "UntrustedDomain",
]

# SPIFFE Federation section 5: poll every refresh hint, five minutes without one. The
# interval is bounded below (a peer cannot make us poll it in a loop) and by half the
# maximum age (two chances to refresh before the bundle is too old to trust); after a
# failure, the next attempt comes sooner: a tenth of the interval, 1 to 30 seconds.
DEFAULT_REFRESH_HINT = 300
MIN_REFRESH_INTERVAL = 1.0
MAX_RETRY_INTERVAL = 30.0
DEFAULT_MAX_BUNDLE_AGE = 3600
_MAX_BUNDLE_AGE = 30 * 86400
_MAX_ERROR = 300


class UntrustedDomain(Unauthorized):
    """A credential from this trust domain cannot be trusted now: the domain is not
    federated, its bundle has not been fetched yet, or its last good bundle is older than
    its ``max_bundle_age``. One generic refusal; ``reason`` says which (for the audit)."""

    default_detail = "invalid token"


class BundleRefused(TaskleaseError):
    """A bundle offered for a federated domain was refused; the last good one is kept."""

    code = "invalid_request"
    default_detail = "bundle refused"


class Federation(Service):
    """The federated trust domains of one broker (one tenant). Thread-safe."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        # Parsed bundles by (domain, bundle text): parsing is done once per bundle.
        self._parsed: dict[tuple[str, str], TrustBundle] = {}
        self._parsed_lock = threading.Lock()
        self._gauged: set[str] = set()  # the domains the bundle-age gauge has a value for

    # --- what verifying a foreign credential asks ---------------------------------------

    def record(self, trust_domain: str) -> FederationRecord:
        """The federated domain ``trust_domain``; raises :class:`UntrustedDomain`."""
        record = self._store.get_federation(trust_domain) if isinstance(trust_domain, str) else None
        if record is None:
            raise UntrustedDomain(reason=f"trust domain {trust_domain!r:.80} is not federated")
        return record

    def trusted_keys(self, trust_domain: str, now: float) -> Mapping[str, bytes]:
        """The keys (``kid`` -> raw Ed25519 public key) that sign ``trust_domain``'s
        credentials, from its last good bundle.

        Reads the store on every call, so a removal or another replica's refresh counts
        at once. A fetched bundle older than the record's ``max_bundle_age`` is not used
        (a static bundle does not age: the operator replaces it).

        Raises:
            UntrustedDomain: not federated, no bundle yet, or the bundle is too old.
        """
        return self._parse(self._trusted(trust_domain, now)).keys

    def trusted_bundle(self, trust_domain: str, now: float) -> str:
        """The text of ``trust_domain``'s last good bundle, trusted as :meth:`trusted_keys`
        trusts it: for verifiers of JWT-SVIDs (``core.attestors.jwt_svid``), whose EC and
        RSA keys :class:`TrustBundle` does not keep. Raises :class:`UntrustedDomain`."""
        return self._trusted(trust_domain, now).bundle

    def _trusted(self, trust_domain: str, now: float) -> FederationRecord:
        record = self.record(trust_domain)
        if not record.bundle or record.fetched_at is None:
            raise UntrustedDomain(reason=f"no bundle of {trust_domain} fetched yet")
        age = now - record.fetched_at
        if not record.static and age > record.max_bundle_age:
            raise UntrustedDomain(
                reason=f"the bundle of {trust_domain} is {int(age)}s old, "
                f"beyond its max_bundle_age {record.max_bundle_age}s"
            )
        return record

    def bundle(self, record: FederationRecord) -> TrustBundle | None:
        """The record's last good bundle, parsed; None before the first."""
        return self._parse(record) if record.bundle else None

    def _parse(self, record: FederationRecord) -> TrustBundle:
        key = (record.trust_domain, record.bundle)
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = parse_bundle(record.bundle, record.trust_domain)
            except BundleError as exc:  # stored only after parsing: a damaged row
                raise UntrustedDomain(reason=f"stored bundle unusable: {exc.reason}") from None
            with self._parsed_lock:
                if len(self._parsed) > 1024:
                    self._parsed.clear()
                self._parsed[key] = parsed
        return parsed

    # --- management (operators) -----------------------------------------------------

    def add(
        self,
        claims: Claims,
        *,
        trust_domain: object,
        bundle_endpoint_url: object = None,
        bundle: object = None,
        ca_pem: object = None,
        max_bundle_age: object = None,
        scope_map: object = None,
        scope_ceiling: object = None,
        max_ttl: object = None,
        revocation_feed: object = None,
        feed_credentials_file: object = None,
        ctx: RequestContext,
    ) -> tuple[FederationRecord, bool]:
        """Declare a federated domain, or replace its declaration; returns the record and
        whether one was replaced.

        Exactly one of ``bundle_endpoint_url`` (https, no userinfo, no fragment) and
        ``bundle`` (a static SPIFFE bundle, JSON text) is given. ``ca_pem`` (PEM
        certificates) is the trust anchor for the endpoint's server certificate; without
        it, the system's. A static bundle is trusted from now; an endpoint's from its
        first fetch. Replacing a record with the same endpoint and the same ``ca_pem`` keeps
        its last good bundle; a new endpoint or trust anchor starts with none.
        ``revocation_feed`` (the peer broker's base URL, https) and ``feed_credentials_file``
        (a file name in this tenant's credentials directory on the broker's host,
        ``<data_dir>/federation/``; read where the feed is followed, never here) go
        together: the peer's revocations are followed and made ours (``core.peerfeed``);
        ``ca_pem`` checks that server too. A name, not a path: the admin API cannot point
        the broker at a file outside that directory (another tenant's, say).

        Raises:
            InvalidRequest: a malformed field, our own trust domain, or a static bundle
                that does not parse (audited: an attempt to install trust anchors).
            Conflict: the domain was removed and its removal still stands (audited).
        """
        try:
            return self._add(
                claims,
                trust_domain=trust_domain,
                bundle_endpoint_url=bundle_endpoint_url,
                bundle=bundle,
                ca_pem=ca_pem,
                max_bundle_age=max_bundle_age,
                scope_map=scope_map,
                scope_ceiling=scope_ceiling,
                max_ttl=max_ttl,
                revocation_feed=revocation_feed,
                feed_credentials_file=feed_credentials_file,
                ctx=ctx,
            )
        except (InvalidRequest, Conflict) as exc:
            shown = clipped(trust_domain, 64) if isinstance(trust_domain, str) else ""
            entry = AuditEntry(
                "federation_refused",
                outcome="denied",
                request_id=ctx.request_id,
                detail=f"{detail_field('trust_domain', shown)} by={claims.sub}: "
                f"{reason_text(exc.detail)}",
            )
            raise self._kernel.deny(exc, entry) from None

    def _add(
        self,
        claims: Claims,
        *,
        trust_domain: object,
        bundle_endpoint_url: object,
        bundle: object,
        ca_pem: object,
        max_bundle_age: object,
        scope_map: object,
        scope_ceiling: object,
        max_ttl: object,
        revocation_feed: object,
        feed_credentials_file: object,
        ctx: RequestContext,
    ) -> tuple[FederationRecord, bool]:
        cfg = self._config
        domain = fields.trust_domain(trust_domain)
        if domain == cfg.trust_domain:
            raise InvalidRequest(
                "a broker does not federate with its own trust domain",
                hint="name the other broker's trust domain",
            )
        url = fields.endpoint(bundle_endpoint_url)
        static = fields.static_bundle(bundle, domain)
        if bool(url) == (static is not None):
            raise InvalidRequest("give either bundle_endpoint_url or bundle, not both or neither")
        pem = fields.ca_pem(ca_pem)
        feed = fields.endpoint(revocation_feed, "revocation_feed")
        credentials = fields.file_name(feed_credentials_file, "feed_credentials_file")
        if bool(feed) != bool(credentials):
            raise InvalidRequest("give revocation_feed and feed_credentials_file together")
        if pem and not (url or feed):
            raise InvalidRequest("ca_pem is for a bundle endpoint's server certificate")
        age = fields.seconds(
            max_bundle_age, "max_bundle_age", DEFAULT_MAX_BUNDLE_AGE, _MAX_BUNDLE_AGE
        )
        ttl = fields.seconds(max_ttl, "max_ttl", cfg.max_ttl, cfg.max_ttl)
        mapping = fields.scope_map(scope_map)
        ceiling = fields.scopes(scope_ceiling, "scope_ceiling")
        now = self._kernel.now()
        record = FederationRecord(
            trust_domain=domain,
            bundle_endpoint_url=url,
            ca_pem=pem,
            max_bundle_age=age,
            scope_map=mapping,
            scope_ceiling=ceiling,
            max_ttl=ttl,
            bundle=static or "",
            fetched_at=now if static is not None else None,
            last_error="",
            created_at=now,
            created_by=claims.sub,
            revocation_feed=feed,
            feed_credentials_file=credentials,
        )
        replaced = False

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal record, replaced
            _refuse_while_removed(tx, domain, self._kernel.now())
            previous = tx.get_federation(domain)
            replaced = previous is not None
            if previous is not None and _same_source(previous, record):
                # The same endpoint, trusted the same way: what it served stays good until
                # the next refresh. Otherwise nothing fetched before is kept, nor its
                # sequence as a baseline: a bundle served under an anchor the operator
                # replaced (a CA found compromised) is not this declaration's.
                record = replace(record, bundle=previous.bundle, fetched_at=previous.fetched_at)
            tx.put_federation(record)
            source = f"endpoint={url}" if url else f"static bundle {_describe(static, domain)}"
            return [
                AuditEntry(
                    "federation_added",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('trust_domain', domain)} {source} "
                    f"ca={'pem' if pem else 'system'} "
                    f"max_bundle_age={age} max_ttl={ttl} map={fields.map_text(mapping)} "
                    f"ceiling={listed(ceiling)} {detail_field('feed', feed or 'none')} "
                    f"replaced={str(replaced).lower()} "
                    f"by={claims.sub}",
                )
            ]

        self._kernel.commit(unit)
        return record, replaced

    def list_federations(self) -> list[FederationRecord]:
        """Every federated domain, by name."""
        return self._store.list_federations()

    def get(self, trust_domain: str) -> FederationRecord:
        """The federated domain ``trust_domain``; raises NotFound (for operators)."""
        record = self._store.get_federation(trust_domain)
        if record is None:
            raise NotFound("federated trust domain not found")
        return record

    def remove(self, claims: Claims, trust_domain: str, ctx: RequestContext) -> FederationRecord:
        """Stop trusting ``trust_domain``: from now on its credentials are refused, and
        so is everything derived here from them.

        Tokens exchanged from the domain's credentials, those of agents registered with
        evidence checked against its bundle (``core.attestation``), and all they were
        delegated, renewed or narrowed to, list ``fed:<trust_domain>`` in their
        ``lineage`` (``core.foreign``): the removal writes a chain-level revocation on it
        in the same unit, so none of them validates, renews or hands authority on
        afterwards, in any worker or replica, nor at resource servers following the
        revocation feed. The entry lives as an operator's does
        (:meth:`Kernel.revocation_expiry`); until it expires, declaring the domain again
        is refused (Conflict, saying until when).

        Raises:
            NotFound: it is not federated (audited).
        """
        removed: FederationRecord | None = None
        deleted = False
        ended = self._kernel.revocation_entry("chain", domain_entry(trust_domain))

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal removed, deleted
            removed = tx.get_federation(trust_domain)
            deleted = removed is not None and tx.delete_federation(trust_domain)
            if not deleted:
                return []
            tx.insert_revocation(ended)
            return [
                AuditEntry(
                    "federation_removed",
                    request_id=ctx.request_id,
                    detail=f"{detail_field('trust_domain', trust_domain)} removed by={claims.sub}; "
                    f"revoked level=chain target={ended.target}",
                )
            ]

        self._kernel.commit(unit)
        if deleted:
            self._kernel.apply_revocations([ended])
        if removed is None:
            raise self._kernel.deny(
                NotFound("federated trust domain not found"),
                AuditEntry(
                    "federation_denied",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"remove {detail_field('trust_domain', clipped(trust_domain, 255))}: "
                    f"not federated "
                    f"by={claims.sub}",
                ),
            )
        return removed

    # --- what the bundle refresher asks and hands in ---------------------------------

    def next_refresh(self, record: FederationRecord) -> float:
        """When ``record``'s bundle should next be fetched (Unix seconds; ``-inf``: now,
        ``inf``: never, for a static bundle). Read from the stored record alone, so every
        replica and a restarted process agree: after one fetched, the others wait."""
        if record.static:
            return math.inf
        stored = self._stored(record)
        hint = DEFAULT_REFRESH_HINT
        if stored is not None and stored.refresh_hint is not None:
            hint = stored.refresh_hint
        interval = max(MIN_REFRESH_INTERVAL, min(float(hint), record.max_bundle_age / 2))
        if record.last_error or record.fetched_at is None:
            if record.checked_at is None:
                return -math.inf
            retry = min(MAX_RETRY_INTERVAL, max(MIN_REFRESH_INTERVAL, interval / 10))
            return record.checked_at + retry
        return max(record.fetched_at, record.checked_at or 0.0) + interval

    def due(self, now: float) -> list[FederationRecord]:
        """The records whose bundle endpoint should be fetched now, and the metrics of
        every record's bundle age brought up to date."""
        records = self._store.list_federations()
        gauge, tenant = self._metrics.federation_bundle_age, self._store.tenant
        names = {record.trust_domain for record in records}
        with self._parsed_lock:
            gone, self._gauged = self._gauged - names, names
        for name in gone:  # no longer federated: none of its series stays behind
            self._metrics.end_federation_series(tenant, name)
        for record in records:
            if record.fetched_at is not None:
                gauge.labels(tenant, record.trust_domain).set(max(0.0, now - record.fetched_at))
        return [record for record in records if self.next_refresh(record) <= now]

    def end_series(self) -> None:
        """This tenant is served no more (removed): its domains' series end with it."""
        with self._parsed_lock:
            gone, self._gauged = self._gauged, set()
        for name in gone:
            self._metrics.end_federation_series(self._store.tenant, name)

    def accept_bundle(
        self, trust_domain: str, document: bytes, *, version: float, now: float
    ) -> FederationRecord:
        """Keep ``document``, just fetched from ``trust_domain``'s endpoint, as its last
        good bundle: it must parse, and its ``spiffe_sequence`` must not be lower than the
        last good one's (equal is a re-confirmation: only ``fetched_at`` moves).

        ``version`` is the ``created_at`` of the record the fetch was made for: if the
        record was replaced or removed since, nothing is written. A bundle whose keys or
        sequence changed is audited (``federation_bundle_updated``); a refusal records
        ``last_error`` and is audited when the error is new.

        Raises:
            BundleRefused: the bundle does not parse, or its sequence went backwards.
            NotFound: the record is gone or was replaced.
        """
        text = document.decode("utf-8", "replace")
        try:
            bundle = parse_bundle(document, trust_domain)
        except BundleError as exc:
            self._refused(trust_domain, f"bundle refused: {exc.reason}", version, now)
            raise BundleRefused(reason=exc.reason) from None
        outcome: FederationRecord | None = None
        refusal = ""

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal outcome, refusal
            current = tx.get_federation(trust_domain)
            if current is None or current.created_at != version or current.static:
                return []
            previous = self._stored(current)
            if _goes_back(bundle, previous):
                refusal = (
                    f"bundle refused: spiffe_sequence {bundle.sequence} is lower than the "
                    f"last good one's {previous.sequence if previous else None}"
                )
                outcome = replace(current, last_error=refusal, checked_at=now)
                tx.put_federation(outcome)
                return [] if current.last_error == refusal else [_refused_entry(current, refusal)]
            outcome = replace(current, bundle=text, fetched_at=now, last_error="", checked_at=now)
            tx.put_federation(outcome)
            if previous is not None and _same(previous, bundle):
                return []  # re-confirmed: the bundle's age starts again, nothing else moved
            return [
                AuditEntry(
                    "federation_bundle_updated",
                    detail=f"{detail_field('trust_domain', trust_domain)} "
                    f"sequence={previous.sequence if previous else None}->{bundle.sequence} "
                    f"{_named_keys(bundle)} skipped={bundle.skipped}",
                )
            ]

        self._kernel.commit(unit)
        if outcome is None:
            raise NotFound("federated trust domain not found")
        if refusal:
            self._metrics.federation_refresh_failures.labels(self._store.tenant, trust_domain).inc()
            raise BundleRefused(reason=refusal)
        return outcome

    def fetch_failed(self, trust_domain: str, error: str, *, version: float, now: float) -> None:
        """Record why fetching ``trust_domain``'s bundle failed; the last good one stays.

        Audited when the error differs from the one recorded (``federation_bundle_refused``).
        """
        self._refused(trust_domain, error, version, now)

    def _refused(self, trust_domain: str, error: str, version: float, now: float) -> None:
        error = clipped(error, _MAX_ERROR)
        counted = False

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal counted
            current = tx.get_federation(trust_domain)
            if current is None or current.created_at != version:
                return []
            counted = True
            tx.put_federation(replace(current, last_error=error, checked_at=now))
            return [] if current.last_error == error else [_refused_entry(current, error)]

        self._kernel.commit(unit)
        # Counted for a domain still federated only: a fetch that ends after the domain was
        # removed (or replaced) makes no series that nothing would end.
        if counted:
            self._metrics.federation_refresh_failures.labels(self._store.tenant, trust_domain).inc()

    def _stored(self, record: FederationRecord) -> TrustBundle | None:
        try:
            return self.bundle(record)
        except UntrustedDomain:
            return None


# --- checks of operators' input ---------------------------------------------------------


def _refuse_while_removed(tx: WriteTx, domain: str, now: float) -> None:
    """A removed domain's revocation (:meth:`Federation.remove`) ends whatever is derived
    from it, whenever issued: declared again meanwhile, it would admit exchanges that are
    born dead. Refused, saying until when, rather than accepted and useless.

    Read in the declaration's own write, under its lock: a removal committed after the
    declaration's inputs were checked (another replica, a request at the same time) is
    seen, so a declaration and a removal of one domain never both win."""
    entry = tx.find_revocation("chain", domain_entry(domain))
    if entry is not None and entry.expires_at > now:
        until = format_rfc3339_seconds(entry.expires_at)
        raise Conflict(
            f"{domain} was removed; its removal stands until {until}",
            hint="tokens derived from it may be live until then: declare it again after "
            "that (to change a declared domain, declare it again without removing it)",
        )


def _describe(static: str | None, domain: str) -> str:
    if static is None:
        return ""
    bundle = parse_bundle(static, domain)
    return f"sequence={bundle.sequence} {_named_keys(bundle)}"


def _named_keys(bundle: TrustBundle) -> str:
    """Audit detail: a bundle's keys, each by its RFC 7638 thumbprint, after its kid when
    the kid is not that thumbprint (``keys=[<thumbprint> <kid>:<thumbprint>]``). A kid is
    the peer's name for a key, not the key: a key served anew under a kid it had before
    is seen to change."""
    named = []
    for kid, key in bundle.keys.items():
        jkt = jwk_thumbprint(key)
        named.append(jkt if kid == jkt else f"{kid}:{jkt}")
    return f"keys=[{' '.join(named)}]"


def _same_source(previous: FederationRecord, record: FederationRecord) -> bool:
    """Whether ``record`` fetches its bundle where ``previous`` did and trusts the server
    it reaches as ``previous`` did: the same endpoint URL and the same CA certificates (or
    both the system's store). Only then is a bundle ``previous`` fetched still good."""
    return (
        bool(record.bundle_endpoint_url)
        and previous.bundle_endpoint_url == record.bundle_endpoint_url
        and previous.ca_pem == record.ca_pem
    )


def _goes_back(bundle: TrustBundle, previous: TrustBundle | None) -> bool:
    """Whether ``bundle`` would replace a newer one: its sequence is lower, or missing
    where the last good one had one (a peer that sends sequences always does)."""
    if previous is None or previous.sequence is None:
        return False
    return bundle.sequence is None or bundle.sequence < previous.sequence


def _same(previous: TrustBundle, bundle: TrustBundle) -> bool:
    return previous.sequence == bundle.sequence and dict(previous.keys) == dict(bundle.keys)


def _refused_entry(record: FederationRecord, error: str) -> AuditEntry:
    return AuditEntry(
        "federation_bundle_refused",
        outcome="denied",
        detail=f"{detail_field('trust_domain', record.trust_domain)} {error} (the last good "
        f"bundle is kept)",
    )
