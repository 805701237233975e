"""Keeping this process's revocation index current: loading, refreshing, the store watch,
the staleness bound past which protected requests fail closed, and noting what a store
that went back in time lost."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tasklease.core.errors import Unavailable
from tasklease.core.horizon import SafeHorizon
from tasklease.core.kernel import Kernel
from tasklease.core.records import RevocationRecord

__all__ = ["WATCH_INTERVAL", "Freshness"]

_log = logging.getLogger("tasklease.broker")

# How often a store watch checks in (confirms the revocation index is current).
WATCH_INTERVAL = 1.0
# The most revocations committed here and not read back yet that are followed: beyond it
# (refreshes that stopped), later ones are not.
_UNREAD_MOST = 100_000


class Freshness:
    """Whether the revocation index holds every revocation other replicas committed.

    ``until`` is the monotonic time after which the index can no longer be trusted to:
    infinite unless a store watch runs (:meth:`watch`); each confirmed check-in pushes it
    on. ``monotonic`` is the clock it is read against (tests replace it).
    """

    def __init__(self, kernel: Kernel, horizon: SafeHorizon) -> None:
        self._kernel = kernel
        self._horizon = horizon
        self.until = math.inf
        self.monotonic: Callable[[], float] = time.monotonic
        self._watch: Any = None
        # Wall time at which a refresh last applied something: a notification that finds
        # its revocation applied already (a check-in got there first) still measures it.
        self._applied_at = -math.inf
        # The entry at the index's ``last_seq``, as read from the store: not there at that
        # seq any more, the store lost what this index read (or widened or pruned it).
        self._anchor: RevocationRecord | None = None
        # How many times the index was loaded again for that (the feed's hub ends its
        # streams when it sees this move).
        self.reloads = 0
        # Entries this index holds that the store no longer did at a reload (it went back
        # in time), by (level, target): written back by ``Revoking.write_back``.
        self._lost: dict[tuple[str, str], RevocationRecord] = {}
        self._lost_lock = threading.Lock()
        # Revocations committed here, by (level, target), with the monotonic time they were
        # applied, until a refresh reads them back: one committed before a read began that
        # the read does not return (nor the store hold) was lost with the commits, which
        # no reload shows when this process had not read it yet. Followed once refreshes
        # run (``_following``).
        self._unread: dict[tuple[str, str], tuple[RevocationRecord, float]] = {}
        self._following = False
        # One refresh at a time: the watch's thread and a caller (the read made as the
        # watch starts, the start-up read, the poll) would otherwise move one anchor.
        self._refreshing = threading.Lock()
        kernel.on_committed = self._committed_here

    def load(self) -> None:
        """Apply every revocation in the store unexpired by the safe horizon (at start-up):
        an entry the wall clock, jumped ahead, takes for expired may still be needed."""
        kernel = self._kernel
        records = kernel.store.load_revocations(self._horizon.now())
        kernel.revocations.apply(records)
        self._anchor = records[-1] if records else None
        kernel.metrics.revocations_held(kernel.revocations, len(kernel.revocations))

    def current(self) -> bool:
        return self.monotonic() <= self.until

    def stale(self) -> Unavailable:
        """The error a protected request fails closed with while the index is not current."""
        return Unavailable(
            "revocation state cannot be confirmed current; try again shortly",
            reason="revocation index stale beyond revocation_staleness_bound",
            retry_after=1,
        )

    def refresh(self) -> int:
        """Apply revocations other processes committed since we last looked.

        If the store went back in time (a failover to a standby that missed the last
        commits, a restore), numbers past its last are handed out again, and reading on
        from ours would skip them for good. The last entry read (the anchor) comes back
        with what is new, in the same read: not at its ``seq`` any more, or another entry
        there, and the index is loaded again whole (what it holds stays). An anchor
        widened meanwhile has moved to a new ``seq``: that costs a reload, never a miss.
        """
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> int:
        kernel = self._kernel
        self._following = True
        started = self.monotonic()
        store, since, anchor = kernel.store, kernel.revocations.last_seq, self._anchor
        if since == 0:
            fresh = store.revocations_since(0)
        else:
            read = store.revocations_since(since - 1)
            at = read[0] if read and read[0].seq == since else None
            if anchor is None or anchor.seq != since:
                # Not known (the index was moved on other than by this object): the entry
                # at ``since`` becomes the anchor; none there, and the index is reloaded.
                anchor = at
            if at is None or at != anchor:
                return self._reload(started, anchor)
            fresh = read[1:]
        if fresh:
            kernel.apply_revocations(fresh, read=True)
            self._applied_at = kernel.now()
        self._anchor = fresh[-1] if fresh else anchor
        self._check_unread(fresh, started)
        return len(fresh)

    def _reload(self, started: float, anchor: RevocationRecord | None = None) -> int:
        """Load the store's unexpired revocations again, keeping what the index holds, and
        continue from the last of them (an expired one above is read once more: harmless).
        The revocation listeners learn it through :attr:`reloads` (the feed's streams end,
        so that their readers reconnect with their cursors and get the check). What the
        index holds and the store lacks is noted lost (the revocations committed here before
        the refresh began included: they are in the index)."""
        kernel = self._kernel
        now = self._horizon.now()
        records = kernel.store.load_revocations(now)
        last = records[-1].seq if records else 0
        _log_reload(anchor, kernel.revocations.last_seq, records, now)
        # An entry within the clock skew of its end is left out: an index loaded again
        # because another replica, its clock ahead, pruned the last entry would otherwise
        # write back what that replica had just pruned.
        self._note_lost(kernel.revocations.entries(now + kernel.config.clock_skew), records)
        with self._lost_lock:
            self._unread = {k: v for k, v in self._unread.items() if v[1] >= started}
        kernel.revocations.rewind(last)
        self._anchor = records[-1] if records else None
        self.reloads += 1
        kernel.apply_revocations(records, read=True)
        self._applied_at = kernel.now()
        return len(records)

    def _note_lost(self, held: list[RevocationRecord], stored: list[RevocationRecord]) -> None:
        """Keep the entries of ``held`` (this index) that ``stored`` (the store, reloaded)
        lacks or holds narrower, until :meth:`written_back` says they are stored again."""
        self._note(_uncovered(held, stored))

    def _committed_here(self, records: Sequence[RevocationRecord]) -> None:
        """``Kernel.on_committed``: follow ``records`` until a refresh reads them back."""
        if not self._following:
            return
        applied = self.monotonic()
        with self._lost_lock:
            for record in records:
                if len(self._unread) >= _UNREAD_MOST:
                    return
                self._unread[(record.level, record.target)] = (record, applied)

    def _check_unread(self, fresh: list[RevocationRecord], started: float) -> None:
        """After a refresh that began at ``started`` and read ``fresh``: a revocation
        committed here before it began is in ``fresh`` unless the store lost it (or wrote
        nothing for it, an entry at least as wide being there already: the store is asked).
        """
        with self._lost_lock:
            if not self._unread:
                return
            for record in fresh:
                key = (record.level, record.target)
                mine = self._unread.get(key)
                if mine is not None and _covers(record, mine[0]):
                    del self._unread[key]
            due = {key: held for key, held in self._unread.items() if held[1] < started}
        horizon = self._horizon.now() + self._kernel.config.clock_skew
        asked = [record for record, _ in due.values() if record.expires_at > horizon]
        # A store that cannot be read raises here, and the next refresh asks again.
        keys = [(record.level, record.target) for record in asked]
        stored = self._kernel.store.find_revocations(keys) if keys else []
        with self._lost_lock:
            for key, held in due.items():
                if self._unread.get(key) == held:  # not committed again meanwhile
                    del self._unread[key]
        self._note(_uncovered(asked, stored))

    def _note(self, lost: list[RevocationRecord]) -> None:
        """Keep ``lost`` until :meth:`written_back` (an entry noted twice: the wider)."""
        if not lost:
            return
        _log.warning(
            "the store lost %d revocation entries this process holds; they stay enforced "
            "here and are written back",
            len(lost),
        )
        with self._lost_lock:
            for record in lost:
                key = (record.level, record.target)
                old = self._lost.get(key)
                self._lost[key] = (
                    record
                    if old is None
                    else RevocationRecord(
                        record.level,
                        record.target,
                        max(record.revoked_at, old.revoked_at),
                        max(record.expires_at, old.expires_at),
                    )
                )

    def lost(self) -> list[RevocationRecord]:
        """The entries the store lost that this index still holds (oldest note first)."""
        with self._lost_lock:
            return list(self._lost.values())

    def written_back(self, records: list[RevocationRecord]) -> None:
        """``records`` (from :meth:`lost`) are in the store again: forget them, unless a
        later reload noted a wider entry for the same target meanwhile."""
        with self._lost_lock:
            for record in records:
                key = (record.level, record.target)
                if self._lost.get(key) == record:
                    del self._lost[key]

    def watch(self) -> Callable[[], None] | None:
        """Follow the store's change notifications, if it offers them; return a stopper.

        Returns None (nothing started) for a store without the optional ``start_watch``
        capability (``core.store``), or when a watch runs already: the caller polls
        :meth:`refresh`. The index is read once more after subscribing (and before
        returning), so that nothing committed before the subscription is left to the
        next check-in. With a watch, every notification and check-in refreshes the
        index, and from now on validation and protected requests fail closed
        (``Unavailable``) unless a refresh succeeded within ``revocation_staleness_bound``
        seconds.
        """
        start_watch = getattr(self._kernel.store, "start_watch", None)
        if start_watch is None or self._watch is not None:
            return None
        self.until = self.monotonic() + self._kernel.config.revocation_staleness_bound
        self._watch = start_watch(self._on_store_change, interval=WATCH_INTERVAL)
        watch = self._watch
        # Subscribed, then read: a commit notified before the subscription (the store's
        # watch may already run, for another tenant) was handed to the followers of that
        # moment only, and is read here; one after it is notified to this follower too.
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - the watch's next check-in reads again
            _log.warning("revocation refresh failed as the watch started: %s", exc)

        def stop() -> None:
            watch.close()
            self._watch = None
            self.until = math.inf

        return stop

    def _on_store_change(self, committed_at: float | None) -> None:
        """The watch's callback (its own thread): refresh, then mark the index current.

        Current as of when the read *started*: it sees every revocation committed before.
        A failed read raises to the watch and leaves the deadline where it was.
        """
        kernel = self._kernel
        checked = self.monotonic()
        self.refresh()
        self.until = checked + kernel.config.revocation_staleness_bound
        # Propagation: from the other process's commit to when this one applied it (now,
        # or by an earlier check-in that read it before its notification arrived).
        if committed_at is not None and self._applied_at >= committed_at:
            kernel.metrics.revocation_propagation_seconds.observe(
                max(0.0, self._applied_at - committed_at)
            )


def _covers(stored: RevocationRecord, record: RevocationRecord) -> bool:
    """Whether ``stored`` is at least as wide as ``record`` (same level and target)."""
    return stored.revoked_at >= record.revoked_at and stored.expires_at >= record.expires_at


def _uncovered(
    records: list[RevocationRecord], stored: list[RevocationRecord]
) -> list[RevocationRecord]:
    """The entries of ``records`` that ``stored`` lacks or holds narrower."""
    by_key = {(r.level, r.target): r for r in stored}
    return [
        record
        for record in records
        if (found := by_key.get((record.level, record.target))) is None
        or not _covers(found, record)
    ]


def _log_reload(
    anchor: RevocationRecord | None, since: int, records: list[RevocationRecord], now: float
) -> None:
    """Say why the index is loaded again. An anchor found again under a later ``seq`` was
    widened (revoked again), and one past its end was pruned: both are routine. Anything
    else is what a database gone back in time looks like, and an operator should know."""
    if anchor is not None:
        moved = any(
            r.level == anchor.level and r.target == anchor.target and r.seq > anchor.seq
            for r in records
        )
        if moved or anchor.expires_at <= now:
            _log.info(
                "the last revocation this process read (at %d) was %s; reloading",
                since,
                "widened under a new seq" if moved else "pruned",
            )
            return
    _log.warning(
        "the store no longer holds the last revocation this process read (at %d): the "
        "database went back in time, or the entry was widened or pruned; reloading",
        since,
    )
