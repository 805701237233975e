"""Prometheus metrics: the pattern's KPIs and the broker's own health.

One :class:`Metrics` per broker, on its own registry (never the process-global one), so
several brokers in one process (tests) do not mix their figures. Names are documented in
``docs/metrics.md``. With several worker processes, prometheus-client's multiprocess mode
keeps each worker's values in files that one scrape sums (``tasklease.http.metrics``);
a gauge says there how its workers' values combine.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["Metrics"]

# No `<name>_created` series beside each counter and histogram: one series per figure,
# the same with one process or several (multiprocess mode has none either).
disable_created_metrics()  # type: ignore[no-untyped-call]

# The labels of a federated domain's series: the tenant that federates with it, then the
# domain. Each tenant's admins choose the domains their tenant federates with, and every
# tenant's broker writes into the process's one registry: labelled by the domain alone, a
# tenant federating with the domain another tenant follows wrote into that tenant's series
# (its live feed's 1 over the other's 0, its fresh bundle's age over the other's stale one).
_FEDERATED = ["tenant", "trust_domain"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.issuance_seconds = Histogram(
            "tasklease_issuance_seconds",
            "Time to issue a token, by kind (register, renew, delegate, admin, app).",
            ["kind"],
            buckets=_LATENCY,
            registry=r,
        )
        self.validation_seconds = Histogram(
            "tasklease_validation_seconds",
            "Time to validate a presented token (signature, claims, revocation).",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        )
        self.revocation_propagation_seconds = Histogram(
            "tasklease_revocation_propagation_seconds",
            "From a revocation's durable commit to this process enforcing it.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
        self.scope_rejections = Counter(
            "tasklease_scope_rejections_total",
            "Requests refused because a scope was not covered, by endpoint.",
            ["endpoint"],
            registry=r,
        )
        self.delegation_depth = Histogram(
            "tasklease_delegation_depth",
            "Depth of the delegation chain of each delegated token issued.",
            buckets=(1, 2, 3, 4, 5, 6, 8, 12, 16),
            registry=r,
        )
        self.tokens_issued = Counter(
            "tasklease_tokens_issued_total", "Tokens issued, by kind.", ["kind"], registry=r
        )
        self.tokens_revoked = Counter(
            "tasklease_tokens_revoked_total",
            "Revocations, by level (token, agent, task, chain, release, renewal).",
            ["level"],
            registry=r,
        )
        self.offline_reports = Counter(
            "tasklease_offline_reports_total",
            "Items of late audit reports (POST /v1/audit/offline), by kind (derivation, "
            "use) and outcome (accepted, duplicate, refused).",
            ["kind", "outcome"],
            registry=r,
        )
        self.offline_report_lateness = Histogram(
            "tasklease_offline_report_lateness_seconds",
            "From an offline derivation or use to the broker receiving its report.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600, 14400, 86400),
            registry=r,
        )
        self.registrations = Counter(
            "tasklease_registrations_total",
            "Agent registrations, by status.",
            ["status"],
            registry=r,
        )
        self.attestation_refusals = Counter(
            "tasklease_attestation_refusals_total",
            "Registrations whose workload evidence was refused, by kind of refusal.",
            ["category"],
            registry=r,
        )
        self.auth = Counter(
            "tasklease_auth_total", "Admin and app authentications.", ["who", "status"], registry=r
        )
        self.launch_tokens_created = Counter(
            "tasklease_launch_tokens_created_total", "Launch tokens created.", registry=r
        )
        self.active_agents = Gauge(
            "tasklease_active_agents",
            "Agents of the deployment (every tenant not removed) whose registration is live:"
            " within its ceiling, not revoked, released or swept, its app not deregistered"
            " (read from the store every prune_interval; core.activeagents).",
            registry=r,
            # every worker reads the same deployment-wide count: the latest, never a sum
            multiprocess_mode="livemostrecent",
        )
        self.validation_failures = Counter(
            "tasklease_validation_failures_total",
            "Tokens refused, by the internal reason class.",
            ["reason"],
            registry=r,
        )
        self.token_cache = Counter(
            "tasklease_token_cache_total",
            "Presented tokens whose signature the token cache settled (hit) or that were "
            "verified (miss).",
            ["result"],
            registry=r,
        )
        self.audit_events = Counter(
            "tasklease_audit_events_total",
            "Audit events written, by type.",
            ["event_type"],
            registry=r,
        )
        self.audit_batch_seconds = Histogram(
            "tasklease_audit_append_seconds",
            "Time to commit one group-committed batch of operations and their audit events.",
            buckets=_LATENCY,
            registry=r,
        )
        self.audit_append_failures = Counter(
            "tasklease_audit_append_failures_total",
            "Group-committed batches whose transaction failed (their operations were refused"
            " with 503 and nothing of them was written).",
            registry=r,
        )
        self.audit_batch_size = Histogram(
            "tasklease_audit_batch_size",
            "Operations per group-committed transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.revocation_entries = Gauge(
            "tasklease_revocation_entries",
            "Revocation entries held in memory (pruned once nothing they match is valid).",
            registry=r,
            multiprocess_mode="livemax",  # every worker holds the whole index
        )
        self.feed_streams = Gauge(
            "tasklease_feed_streams",
            "Revocation-feed streams open in this process (at most feed_streams_per_process).",
            registry=r,
            multiprocess_mode="livesum",  # with --workers: the sum over live workers
        )
        self.rate_limited = Counter(
            "tasklease_rate_limited_total",
            "Requests refused by a rate limit.",
            ["endpoint"],
            registry=r,
        )
        self.storage_recovery_seconds = Histogram(
            "tasklease_storage_recovery_seconds",
            "How long storage refused writes (first failed batch to the next committed one):"
            " the time to recover from a database outage or a full disk.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.clock_steps = Counter(
            "tasklease_clock_steps_total",
            "Steps of the wall clock (beyond 5 s of elapsed time between housekeeping ticks),"
            " by direction (forward, backward).",
            ["direction"],
            registry=r,
        )
        self.clock_offset = Gauge(
            "tasklease_clock_offset_seconds",
            "This process's clock minus the database server's, at the last housekeeping"
            " tick (PostgreSQL only; core.clockoffset): replicas' clocks differ by the"
            " difference of theirs.",
            multiprocess_mode="livemostrecent",  # one host's workers share one clock
            registry=r,
        )
        self.prune_horizon_lag = Gauge(
            "tasklease_prune_horizon_lag_seconds",
            "How far pruning's safe horizon is behind the wall clock (core.horizon).",
            multiprocess_mode="livemax",  # workers share the stored horizon: the largest
            registry=r,
        )
        self.federation_bundle_age = Gauge(
            "tasklease_federation_bundle_age_seconds",
            "Age of the last good bundle of each tenant's federated trust domain; beyond the"
            " domain's max_bundle_age its credentials are refused there (fail closed).",
            _FEDERATED,
            multiprocess_mode="livemax",  # workers read one stored bundle: the oldest view
            registry=r,
        )
        self.federation_refresh_failures = Counter(
            "tasklease_federation_refresh_failures_total",
            "Bundle fetches that failed or whose bundle was refused, by tenant and trust domain.",
            _FEDERATED,
            registry=r,
        )

        self.federation_revocation_seconds = Histogram(
            "tasklease_federation_revocation_seconds",
            "From a federated domain's feed sending a revocation (its clock) to this broker"
            " enforcing it as its own (committed and applied): cross-domain propagation.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
            registry=r,
        )
        self.federation_feed_up = Gauge(
            "tasklease_federation_feed_up",
            "1 while this broker is current with a tenant's federated trust domain's"
            " revocation feed (connected and past its backlog), else 0.",
            _FEDERATED,
            multiprocess_mode="livemax",  # one follower per deployment: any worker's 1
            registry=r,
        )
        self.federation_feed_heard = Gauge(
            "tasklease_federation_feed_last_heard_timestamp_seconds",
            "When this broker last heard from a tenant's federated trust domain's current"
            " revocation feed (an entry, its sync or a keepalive), in seconds since the"
            " epoch: the feed's staleness is time() minus this.",
            _FEDERATED,
            multiprocess_mode="livemax",  # one follower per deployment: its latest time
            registry=r,
        )

        self.http_requests = Counter(
            "tasklease_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_seconds = Histogram(
            "tasklease_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body), by method, route"
            " template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes... of this process
        # (one process; with --workers the sum has no process series).
        ProcessCollector(registry=r)
        # What a scrape of this broker reads (render(), the console's charts): this
        # registry, or a worker's of several the sum over every worker
        # (``tasklease.http.metrics.multiprocess_registry``, set by the server).
        self.scraped: CollectorRegistry = r
        # The size of each revocation index this process holds (the default tenant's and
        # every tenant's broker share these metrics): the gauge is their sum.
        self._held: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._held_lock = threading.Lock()

    def end_feed_series(self, tenant: str, trust_domain: str) -> None:
        """``tenant`` no longer follows ``trust_domain``'s revocation feed: its feed series
        end (a feed not followed is not down: ``TaskleaseFederationFeedDown`` must not fire
        for it)."""
        self._end((self.federation_feed_up, self.federation_feed_heard), tenant, trust_domain)

    def end_federation_series(self, tenant: str, trust_domain: str) -> None:
        """``tenant`` no longer federates with ``trust_domain``: every series of the
        domain ends, so declaring and removing domains leaves none behind.

        With ``--workers`` (prometheus-client's multiprocess mode) a series cannot be
        removed: it stays until the broker restarts (docs/metrics.md)."""
        self._end(
            (
                self.federation_bundle_age,
                self.federation_refresh_failures,
                self.federation_feed_up,
                self.federation_feed_heard,
            ),
            tenant,
            trust_domain,
        )

    @staticmethod
    def _end(metrics: tuple[Gauge | Counter, ...], tenant: str, trust_domain: str) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return  # not removable there (prometheus-client would only warn)
        for metric in metrics:
            with contextlib.suppress(KeyError):
                metric.remove(tenant, trust_domain)

    def revocations_held(self, index: object, entries: int) -> None:
        """``index`` (a broker's revocation index) now holds ``entries``: set
        ``tasklease_revocation_entries`` to what every index of the process holds. An
        index no longer referenced (a tenant no longer served) leaves the sum."""
        with self._held_lock:
            self._held[index] = entries
            self.revocation_entries.set(sum(self._held.values()))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.audit_batch_size.observe(size)
        self.audit_batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.scraped)
