"""The bundle refresher: fetch each federated domain's bundle on its refresh hint.

SPIFFE Federation ``https_web``: a plain HTTPS GET of the configured URL, the server's
certificate checked as any web server's (RFC 6125: it chains to the record's CA
certificates, or the system's trust store, and names the URL's host), no client
authentication. A temporary redirect is followed only to another ``https`` URL without
userinfo, at most :data:`MAX_REDIRECTS` times, and never remembered. The body is read up
to :data:`~tasklease.rules.bundle.MAX_BUNDLE_BYTES` and no further, uncompressed (a
compressed body could expand beyond the cap before it is counted); each network read has
a deadline of :data:`TIMEOUT` seconds and the whole fetch (redirects included) of
:data:`TOTAL_TIMES` times that, so a peer that trickles its answer is cut off. The domains
due in a round are fetched in parallel (at most :data:`MAX_PARALLEL` at once): a slow or
hostile peer delays no other domain's refresh.

What is fetched goes to :meth:`Federation.accept_bundle` (parsed there, refused if
malformed or if its sequence goes backwards; the last good bundle is kept); a fetch that
fails is recorded with :meth:`Federation.fetch_failed`. When to fetch is read from the
stored records (:meth:`Federation.due`), so replicas sharing a database share the
schedule: after one has fetched, the others wait for the next refresh.
"""

from __future__ import annotations

import functools
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor

from tasklease.bounds import MAX_REDIRECTS, TOTAL_TIMES, FetchFailed, bounded_get
from tasklease.core.broker import Broker
from tasklease.core.errors import NotFound
from tasklease.core.federation import BundleRefused
from tasklease.core.records import FederationRecord
from tasklease.core.tlsanchor import UnusableAnchor, anchor_context
from tasklease.rules.bundle import MAX_BUNDLE_BYTES

__all__ = [
    "MAX_PARALLEL",
    "MAX_REDIRECTS",
    "TIMEOUT",
    "TOTAL_TIMES",
    "FetchError",
    "fetch_bundle",
    "refresh_domain",
    "refresh_due",
    "tls_context",
]

TIMEOUT = 5.0
MAX_PARALLEL = 8  # domains fetched at once by one round
_log = logging.getLogger("tasklease.federation")


class FetchError(Exception):
    """A bundle could not be fetched; ``reason`` says why (for the record and the logs)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """The client context of ``https_web``: certificate and host name checked, against
    ``ca_pem`` or the system's trust store (``core.tlsanchor``, the rule the declaration
    was checked with).

    Raises:
        UnusableAnchor: ``ca_pem`` cannot be used (a ``ValueError``).
    """
    return anchor_context(ca_pem)


def fetch_bundle(url: str, *, ca_pem: str = "", timeout: float | None = None) -> bytes:
    """The body served at the bundle endpoint ``url`` (not parsed), each read within
    ``timeout`` seconds (default :data:`TIMEOUT`) and all of it within :data:`TOTAL_TIMES`
    times that (:func:`tasklease.bounds.bounded_get`).

    Raises:
        FetchError: the URL or a redirect is not an allowed https URL, the connection or
            the TLS handshake failed (an untrusted certificate, another host's name), the
            status is not 200, the body is compressed or larger than a bundle may be, or
            the deadline passed.
    """
    try:
        context = tls_context(ca_pem)
    except UnusableAnchor as exc:  # stored before the declaration was checked as used
        raise FetchError(f"the CA certificates cannot be used: {exc.reason}") from None
    try:
        return bounded_get(
            url,
            context=context,
            timeout=TIMEOUT if timeout is None else timeout,
            limit=MAX_BUNDLE_BYTES,
        )
    except FetchFailed as exc:
        raise FetchError(exc.reason) from None


def refresh_domain(broker: Broker, record: FederationRecord) -> bool:
    """Fetch ``record``'s bundle and hand it to the core; True iff it was accepted.

    Never raises for what the peer does (an unreachable endpoint, a refused bundle): that
    is recorded on the record (``last_error``) and counted in the metrics.
    """
    if record.static:
        return False
    domain, version = record.trust_domain, record.created_at
    federation = broker.federation
    try:
        body = fetch_bundle(record.bundle_endpoint_url, ca_pem=record.ca_pem)
    except FetchError as exc:
        _log.warning("fetching the bundle of %s failed: %s", domain, exc.reason)
        federation.fetch_failed(
            domain, f"fetch failed: {exc.reason}", version=version, now=broker.clock.now()
        )
        return False
    try:
        federation.accept_bundle(domain, body, version=version, now=broker.clock.now())
    except BundleRefused as exc:
        _log.warning("the bundle of %s was refused: %s", domain, exc.reason)
        return False
    except NotFound:
        return False  # removed or replaced meanwhile: the new record has its own schedule
    return True


def refresh_due(broker: Broker) -> int:
    """Fetch every bundle that is due for ``broker``'s tenant, in parallel; returns how
    many were accepted. Run every second by the server (one tenant after another); a round
    ends within one fetch's deadline per :data:`MAX_PARALLEL` domains due."""
    records = broker.federation.due(broker.clock.now())
    if len(records) <= 1:
        return sum(refresh_domain(broker, record) for record in records)
    with ThreadPoolExecutor(
        max_workers=min(MAX_PARALLEL, len(records)), thread_name_prefix="tasklease-bundle"
    ) as pool:
        return sum(pool.map(functools.partial(refresh_domain, broker), records))
