"""This broker's own SPIFFE trust bundle: its verification keys and their sequence.

The bundle holds the keys the JWKS holds (the active key and those not yet retired), as
``jwt-svid`` JWKs, and is what other brokers fetch from ``GET /v1/federation/bundle``
(SPIFFE Federation, ``https_web``). Its ``spiffe_sequence`` must grow on every change of
the key set and never go back, across restarts and replicas: so it lives in the store
(``PublishedBundle``), and a process that sees a key set other than the stored one
publishes it as the next sequence, in one transaction that reads and writes the row
under its lock. A process publishes what its key ring holds when the ring changes
(rotation here, keys another process added or retired, start-up), never when it merely
serves: a replica a second behind another's rotation serves the stored bundle, which is
newer than its ring, rather than publishing an older key set over it.

The sequence is never lower than the time of the change, in whole milliseconds since 1970
(``max(stored + 1, floor(now * 1000))``): the stored number alone went back with the
database, and
a broker restored from a backup published numbers its federated peers had seen already, so
they refused its next bundle (a sequence going backwards) and kept trusting keys it had
since removed. Time moves on outside the database, so a new bundle is numbered past every
bundle published before the restore, whatever was restored, on every replica, with no
state of its own (decisions 144 and 154). SPIFFE asks for a monotonically increasing
integer, not for consecutive ones.

The refresh hint (``spiffe_refresh_hint``) is the configuration's
``federation_refresh_hint``; it is added when the bundle is served, not stored.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import Unavailable
from tasklease.core.kernel import Kernel, Service
from tasklease.core.records import PublishedBundle
from tasklease.core.signing import SigningKeys
from tasklease.core.store import WriteTx
from tasklease.rules.bundle import TrustBundle, parse_bundle, serialize_bundle

__all__ = ["TrustBundles", "next_sequence"]

_REREAD = 1.0


def next_sequence(stored: PublishedBundle | None, now: float) -> int:
    """The ``spiffe_sequence`` of a new bundle: past the stored one, and never below the
    time in whole milliseconds (so past every number published before a restore, unless
    that was published within the same millisecond)."""
    return max(1 if stored is None else stored.sequence + 1, int(now * 1000))


class TrustBundles(Service):
    """Publishes this broker's bundle when its keys change, and serves it. Thread-safe."""

    def __init__(
        self, kernel: Kernel, keys: SigningKeys, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._lock = threading.Lock()
        self._published_kids: str | None = None  # what this process last saw stored
        self._served: tuple[str, int, bytes] | None = None  # (stored text, hint, served)
        # The stored row as last read, and when (monotonic): the endpoint is public, so a
        # flood of requests costs at most one read of the store per second.
        self._stored: tuple[float, PublishedBundle] | None = None
        self._monotonic = monotonic

    def publish(self, *, force: bool = False) -> PublishedBundle:
        """Make the current key ring the published bundle, unless it is already (or with
        ``force``: a database that went back was accepted, and peers may hold a later
        number than the stored one).

        The sequence, when the key set differs from the stored set, is the stored one
        plus one or the time in whole milliseconds, whichever is larger (the time for the
        first bundle); it is unchanged otherwise. A stored set that
        holds a key this ring lacks may be another process's rotation of an instant ago
        (that process writes its key before it publishes): the ring is first reloaded
        from the key directory, and only a key still missing then counts as retired
        here. So a process whose ring lags never publishes an older key set over a newer.

        Raises:
            Unavailable: the store could not be written, or the key directory not read
                (the next call tries again).
        """
        with self._lock:
            kids, result = self._publish(adopt_missing=False, force=force)
            if result is None:
                try:
                    self._keys.refresh()
                except (OSError, ValueError) as exc:  # a key unreadable: publish nothing yet
                    raise Unavailable(f"cannot reload the signing keys: {exc}") from exc
                kids, result = self._publish(adopt_missing=True, force=force)
            if result is None:  # pragma: no cover - with adopt_missing the unit always sets it
                raise RuntimeError("publishing the trust bundle produced nothing")
            self._published_kids = kids
            self._stored = (self._monotonic(), result)
        return result

    def _publish(
        self, *, adopt_missing: bool, force: bool = False
    ) -> tuple[str, PublishedBundle | None]:
        """One transaction of :meth:`publish`: the ring's key set and the bundle now stored,
        None when the stored set holds a key the ring lacks, or the ring a key retired in
        the store, and ``adopt_missing`` is false (then nothing is written).

        Raises:
            Unavailable: with ``adopt_missing``, the ring (just refreshed) still holds a
                retired key; or the store could not be read or written.
        """
        ring = self._keys.ring
        kids = " ".join(sorted(ring.kids()))
        # A ring that still holds a key retired by another process (its next key refresh
        # has not come yet) is behind, not newer: publishing it would vouch for the key
        # again (read before the transaction: the retiring process publishes after its
        # retirement is committed, so it writes over a set read before that).
        if set(ring.kids()) & self._store.retired_keys():
            if not adopt_missing:
                return kids, None
            raise Unavailable("the signing keys here still hold a retired key")
        keys = {kid: key for kid in ring.kids() if (key := ring.public_key(kid)) is not None}
        result: PublishedBundle | None = None

        def unit(tx: WriteTx) -> list[AuditEntry]:
            nonlocal result
            stored = tx.get_published_bundle()
            if stored is not None and stored.kids == kids and not force:
                result = stored
                return []
            if (
                stored is not None
                and not adopt_missing
                and set(stored.kids.split()) - set(ring.kids())
            ):
                return []
            sequence = next_sequence(stored, self._kernel.now())
            bundle = TrustBundle(self._config.trust_domain, sequence, None, keys)
            result = PublishedBundle(
                sequence=sequence,
                kids=kids,
                bundle=serialize_bundle(bundle).decode("utf-8"),
                updated_at=self._kernel.now(),
            )
            tx.put_published_bundle(result)
            return []

        self._kernel.commit(unit)  # derived from the keys: no audit event of its own
        return kids, result

    def republish(self) -> None:
        """:meth:`publish` after a rotation here; when the store cannot be written, the
        next :meth:`publish_if_changed` publishes instead (the rotation stands)."""
        with contextlib.suppress(Unavailable):
            self.publish()

    def publish_if_changed(self) -> bool:
        """:meth:`publish` when the ring's key set is not the one last published by this
        process (cheap otherwise: no store access). Run every second with the key refresh;
        returns whether it looked at the store."""
        ring = self._keys.ring
        if " ".join(sorted(ring.kids())) == self._published_kids:
            return False
        if not ring.signs:
            # Its active key was retired elsewhere and its key directory lacks the one
            # that replaced it: its set is behind the stored one, not a newer one.
            return False
        self.publish()
        return True

    def served(self) -> bytes:
        """The bundle document to serve: the stored one with the refresh hint.

        Publishes first when nothing is stored yet (a new database). The stored row is
        read again after a second at most (this process's own publications at once), so
        a rotation by another replica is served within a second. A stored bundle holding
        a key this process's ring lacks, when the ring's set is not what this process
        last published (a key removed here, not yet published: the store may be
        unwritable), is not served: it would vouch for a removed key.

        Raises:
            Unavailable: nothing stored and the store could not be written, or the
                stored bundle holds a key removed here that is not yet published.
        """
        now = self._monotonic()
        remembered = self._stored
        if remembered is not None and now - remembered[0] < _REREAD:
            stored = remembered[1]
        else:
            found = self._store.get_published_bundle()
            stored = self.publish() if found is None else found
            self._stored = (now, stored)
        kids = self._keys.ring.kids()
        if " ".join(sorted(kids)) != self._published_kids and set(stored.kids.split()) - set(kids):
            raise Unavailable("the trust bundle still holds a key removed here")
        hint = self._config.federation_refresh_hint
        cached = self._served
        if cached is not None and cached[0] == stored.bundle and cached[1] == hint:
            return cached[2]
        bundle = parse_bundle(stored.bundle, self._config.trust_domain)
        document = serialize_bundle(
            TrustBundle(bundle.trust_domain, bundle.sequence, hint, bundle.keys)
        )
        self._served = (stored.bundle, hint, document)
        return document
