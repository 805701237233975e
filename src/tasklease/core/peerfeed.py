"""Revocation across the bridge: a federated domain's revocations, made our own.

A broker that accepts a federated domain ``D``'s tokens by exchange (``core.exchange``)
follows ``D``'s revocation feed (``tasklease.federation_feed``, the adapter that reads
it). Each entry ``D`` publishes becomes our own chain-level entry on the namespaced
lineage target our tokens derived from ``D`` list (``core.foreign.converted``), written
to our store and applied like any revocation of ours: our other workers and replicas,
and our verifiers through our own feed, enforce it as they enforce every other. ``D``
can end only what came from ``D``: every target it reaches is under ``fed:D:``.

One follower per deployment: :meth:`PeerFeeds.hold_lease` takes a store lease, so of
several workers and replicas sharing a store exactly one reads the feeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasklease.core.auditformat import AuditEntry
from tasklease.core.foreign import converted
from tasklease.core.kernel import Service
from tasklease.core.records import RevocationRecord
from tasklease.core.store import WriteTx

__all__ = ["FEED_LEASE", "PeerFeeds"]

FEED_LEASE = "federation-feeds"
"""The store lease whose holder follows the federated domains' revocation feeds."""


class PeerFeeds(Service):
    """Federated domains' revocations applied here. Thread-safe; one per broker."""

    def hold_lease(self, holder: str, ttl: float) -> bool:
        """Take or extend the follower lease for ``ttl`` seconds; True iff ``holder`` has it."""
        now = self._kernel.now()
        granted: list[bool] = []

        def lease(tx: WriteTx) -> list[AuditEntry]:
            granted.append(tx.acquire_lease(FEED_LEASE, holder, now, now + ttl))
            return []

        self._kernel.commit(lease)
        return granted[0]

    def apply(
        self, domain: str, records: Sequence[RevocationRecord], *, sent_at: float | None = None
    ) -> list[RevocationRecord]:
        """Make ``domain``'s feed entries ours; return the entries written.

        Entries of a domain no longer federated, and entries we already hold (a feed read
        again after a reconnection), write nothing. Every entry written is audited
        (``federation_revocation``) and enforced by this process before this returns.
        ``sent_at`` is when ``domain``'s feed sent them (its clock), for the propagation
        metric.
        """
        kernel = self._kernel
        if self._store.get_federation(domain) is None:
            return []
        now = kernel.now()
        ours: dict[str, tuple[RevocationRecord, RevocationRecord]] = {}
        for record in records:
            mine = converted(record, domain, now=now, expiry=kernel.revocation_expiry)
            if mine is not None and mine.target not in ours:
                ours[mine.target] = (record, mine)
        if not ours:
            return []
        held = {r.target for r in self._store.find_revocations([("chain", t) for t in ours])}
        fresh = [pair for target, pair in ours.items() if target not in held]
        if not fresh:
            return []
        written: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            written.clear()
            entries: list[AuditEntry] = []
            for theirs, mine in fresh:
                if tx.insert_revocation(mine):
                    written.append(mine)
                    entries.append(
                        AuditEntry(
                            "federation_revocation",
                            agent_id=theirs.target if theirs.level == "agent" else "",
                            detail=f"revoked in {domain} level={theirs.level} "
                            f"target={theirs.target} seq={theirs.seq} -> level=chain "
                            f"target={mine.target}",
                        )
                    )
            return entries

        kernel.commit(unit)
        if written:
            kernel.apply_revocations(written)
            self._metrics.tokens_revoked.labels("federation").inc(len(written))
            if sent_at is not None:
                self._metrics.federation_revocation_seconds.observe(max(0.0, now - sent_at))
        return written
