"""Revocation across the bridge: a federated domain's revocations, made our own.

A broker that accepts a federated domain ``D``'s tokens by exchange (``core.exchange``)
follows ``D``'s revocation feed (``tasklease.federation_feed``, the adapter that reads
it). Each entry ``D`` publishes becomes our own chain-level entry on the namespaced
lineage target our tokens derived from ``D`` list (``core.foreign.converted``), written
to our store and applied like any revocation of ours: our other workers and replicas,
and our verifiers through our own feed, enforce it as they enforce every other. ``D``
can end only what came from ``D``: every target it reaches is under ``fed:D:``.

One follower per deployment: :meth:`PeerFeeds.hold_lease` takes a store lease, so of
several workers and replicas sharing a store exactly one reads the feeds. It records in
the store when each feed was last heard current (:meth:`PeerFeeds.heard`); a domain whose
feed has been silent longer than ``federation_feed_max_staleness`` has its tokens refused
by exchange in every process (:meth:`PeerFeeds.stale`): a revocation made there meanwhile
cannot have reached us.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasklease.core.auditformat import AuditEntry, detail_field
from tasklease.core.foreign import converted
from tasklease.core.kernel import Kernel, Service
from tasklease.core.records import FederationRecord, RevocationRecord, RevocationWrite
from tasklease.core.store import WriteTx

__all__ = ["FEED_LEASE", "PeerFeeds"]

FEED_LEASE = "federation-feeds"
"""The store lease whose holder follows the federated domains' revocation feeds."""


class PeerFeeds(Service):
    """Federated domains' revocations applied here. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        # Who took the follower lease at the last :meth:`hold_lease` (None: not taken).
        self._holder: str | None = None

    def hold_lease(self, holder: str, ttl: float) -> bool:
        """Take or extend the follower lease for ``ttl`` seconds; True iff ``holder`` has it.
        Dated by :meth:`Kernel.lease_now`: a clock that jumped ahead takes no lease."""
        now = self._kernel.lease_now()
        granted: list[bool] = []

        def lease(tx: WriteTx) -> list[AuditEntry]:
            granted.append(tx.acquire_lease(FEED_LEASE, holder, now, now + ttl))
            return []

        self._kernel.commit(lease)
        self._holder = holder if granted[0] else None
        return granted[0]

    def release_lease(self) -> bool:
        """Give the follower lease up if the last :meth:`hold_lease` took it, so that
        another process follows the feeds from its next tick, not once the lease expires
        (a broker that stops, after its followers stopped). True iff it was given up.

        Raises:
            Unavailable: the store could not be written (the lease expires as before).
        """
        holder = self._holder
        if holder is None:
            return False
        released = self._kernel.release_lease(FEED_LEASE, holder)
        self._holder = None
        return released

    def heard(self, domain: str) -> None:
        """Record that ``domain``'s feed is current now: every entry it published until
        now has been applied here. Written by the follower every few seconds while the
        feed is current, read by every process's exchange (:meth:`stale`).

        Dated by :meth:`Kernel.lease_now`, as the follower's lease is: every process takes
        the feed as current until this time plus the bound, and the time heard never goes
        back, so a wall clock jumped ahead must not vouch for time that has not passed.

        Raises:
            Unavailable: the store could not be written.
        """
        at = self._kernel.lease_now()

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.put_feed_heard(domain, at)
            return []

        self._kernel.commit(unit)

    def stale(self, record: FederationRecord, now: float) -> str:
        """Why ``record``'s domain's revocations cannot be taken as current here, or ""
        when they can: it has a feed, and the feed was last heard current longer than
        ``federation_feed_max_staleness`` ago (or never). A domain without a feed, or
        the bound at 0, is never stale. Reads the store (the follower may be another
        process's)."""
        bound = self._config.federation_feed_max_staleness
        if not record.revocation_feed or bound <= 0:
            return ""
        heard = self._store.feed_heard(record.trust_domain)
        if heard is None:
            return "its revocation feed has not been heard current yet"
        if now - heard > bound:
            return (
                f"its revocation feed was last heard current {now - heard:.0f} s ago "
                f"(federation_feed_max_staleness {bound:g} s)"
            )
        return ""

    def apply(
        self, domain: str, records: Sequence[RevocationRecord], *, sent_at: float | None = None
    ) -> list[RevocationRecord]:
        """Make ``domain``'s feed entries ours; return the entries written.

        Entries of a domain no longer federated, and entries we already hold (a feed read
        again), write nothing. A target ``domain`` revoked again after the entry we hold
        (a later ``revoked_at``) widens ours to a later revocation and a later expiry.
        Every entry written or widened is audited (``federation_revocation``) and enforced
        by this process before this returns. ``sent_at`` is when ``domain``'s feed sent
        them (its clock), for the propagation metric.
        """
        kernel = self._kernel
        if self._store.get_federation(domain) is None:
            return []
        now = kernel.now()
        ours: dict[str, tuple[RevocationRecord, RevocationRecord]] = {}
        for record in records:
            mine = converted(
                record,
                domain,
                now=now,
                expiry=kernel.revocation_expiry,
                ahead=2 * self._config.clock_skew,
            )
            if mine is None:
                continue
            # Two of its entries on one target of ours (an agent- and a chain-level one on
            # the same SPIFFE ID): the later revocation is the wider.
            first = ours.get(mine.target)
            if first is None or first[1].revoked_at < mine.revoked_at:
                ours[mine.target] = (record, mine)
        # A feed read again (a restart, a new follower) brings back revocations already
        # made ours, heard later: the same entry with a later expiry (counted from when we
        # hear it). That would widen ours at every such read, for nothing: while it lives
        # no token listing its target is minted or accepted here. Only a later
        # revocation of a target we hold is news; the store decides what it widens.
        held = {
            r.target: r.revoked_at
            for r in self._store.find_revocations([("chain", t) for t in ours])
        }
        news = [pair for target, pair in ours.items() if held.get(target, -1) < pair[1].revoked_at]
        if not news:
            return []
        written: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            written.clear()
            entries: list[AuditEntry] = []
            for theirs, mine in news:
                outcome = tx.insert_revocation(mine)
                if outcome is RevocationWrite.UNCHANGED:
                    continue
                written.append(mine)
                entries.append(
                    AuditEntry(
                        "federation_revocation",
                        agent_id=theirs.target if theirs.level == "agent" else "",
                        detail=f"revoked in {domain} {detail_field('level', theirs.level)} "
                        f"{detail_field('target', theirs.target)} seq={theirs.seq} -> level=chain "
                        f"target={mine.target} entry={outcome.value}",
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
