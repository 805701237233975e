"""The brokers of one process: the default tenant's, and each other tenant's on first use.

A tenant is served by a :class:`~tasklease.core.broker.Broker` of its own, over its view of
the one database (``Store.for_tenant``), with its own configuration
(``core.tenants.tenant_config``: trust domain, issuer, key directory, no admin secret) and
its own signing keys (``<key_dir>/tenants/<name>``, through the same key provider; rings
held in memory for a broker that has no key directory). :class:`Tenancy` makes them when
first asked, and forgets one within :data:`RECHECK` seconds of its removal by any process.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.keys import KeyRing, load_or_create_keyring
from tasklease.core.records import OperatorRecord, TenantRecord
from tasklease.core.tenants import DEFAULT_TENANT, tenant_config, tenant_id_error
from tasklease.core.tokens import Claims

__all__ = ["RECHECK", "Tenancy"]

# How long a process trusts what it last read of a tenant's registry row: a tenant
# removed by another process stops being served here within this time.
RECHECK = 1.0
# Names asked for that are no tenant, remembered (for RECHECK) up to this many: a caller
# trying names cannot make the process read the registry for each request, nor grow.
_MISSES_KEPT = 1024


class Tenancy:
    """The default tenant's broker and the other tenants' (made lazily). Thread-safe."""

    def __init__(
        self,
        default: Broker,
        *,
        open_broker: Callable[[TenantRecord], Broker] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = default
        self._open = open_broker or self._open_broker
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # name -> (broker, monotonic time its registry row was last read)
        self._brokers: dict[str, tuple[Broker, float]] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()
        # Set by the server when the default broker follows a store watch: each tenant
        # broker then follows one too (stopped when it is forgotten).
        self.watching = False
        self._stops: dict[int, Callable[[], None]] = {}

    # --- lookup -----------------------------------------------------------------------

    def broker(self, name: str) -> Broker | None:
        """The broker of the active tenant ``name``; None if there is no such tenant.

        The default tenant is served at the root only: its name is no tenant here (None),
        so ``/t/default/...`` is as unknown as any other name, not a second door to the
        default tenant with limits of its own. The registry is read at most once per
        :data:`RECHECK` seconds per name.
        """
        if name == DEFAULT_TENANT:
            return None
        now = self._monotonic()
        with self._lock:
            found = self._brokers.get(name)
            if found is not None and now - found[1] < RECHECK:
                return found[0]
            missed = self._misses.get(name)
            if missed is not None and now - missed < RECHECK:
                return None
        if tenant_id_error(name) is not None:
            return None
        record = self.default.get_tenant(name)
        with self._lock:
            if record is None:
                found = self._brokers.get(name)
                if found is not None and found[1] >= now:
                    # Found by a read newer than this one (a creation, in between): this
                    # stale miss must not stop the broker the creation is setting up.
                    return found[0]
                gone = self._brokers.pop(name, None)
                self._misses[name] = now
                self._misses.move_to_end(name)
                while len(self._misses) > _MISSES_KEPT:
                    self._misses.popitem(last=False)
            else:
                return self._serve(record, now)
        if gone is not None:
            self._stop(gone[0])
        return None

    def _serve(self, record: TenantRecord, now: float) -> Broker:
        """The broker of ``record``'s tenant, made if need be, trusted until ``now`` +
        :data:`RECHECK`; the name is no longer a miss. Called with the lock held."""
        self._misses.pop(record.name, None)
        found = self._brokers.get(record.name)
        broker = found[0] if found is not None else self._start(self._open(record))
        self._brokers[record.name] = (broker, now)
        return broker

    def brokers(self) -> list[Broker]:
        """The default tenant's broker and every tenant broker made so far."""
        with self._lock:
            return [self.default, *(broker for broker, _ in self._brokers.values())]

    # --- the registry's operations, with the tenant's own set-up ----------------------

    def create(
        self, claims: Claims, *, name: object, trust_domain: object, ctx: RequestContext
    ) -> tuple[TenantRecord, OperatorRecord, str]:
        """Create a tenant with its keys and its first operator ``admin``; return the
        record, that operator and its secret (shown once).

        A tenant whose creation stopped half-way is finished by asking again.

        Raises:
            InvalidRequest, Conflict: as :meth:`Broker.create_tenant`; Conflict also when
                the tenant is complete already (its ``admin`` exists).
        """
        record = self.default.create_tenant(claims, name=name, trust_domain=trust_domain, ctx=ctx)
        # From the record just written, not through broker(): a request for the name a
        # moment ago (anyone may ask for /t/<name>/...) left it among the misses.
        with self._lock:
            broker = self._serve(record, self._monotonic())
        operator, secret = broker.set_up_tenant_admin(claims.sub, ctx)
        return record, operator, secret

    def remove(self, claims: Claims, name: object, ctx: RequestContext) -> TenantRecord:
        """Remove a tenant (:meth:`Broker.remove_tenant`) and stop serving it here at once."""
        record = self.default.remove_tenant(claims, name, ctx)
        with self._lock:
            gone = self._brokers.pop(record.name, None)
            self._misses[record.name] = self._monotonic()
        if gone is not None:
            self._stop(gone[0])
        return record

    def close(self) -> None:
        """Write out what every tenant broker's audit committer still holds (not the
        default tenant's: its owner closes it)."""
        with self._lock:
            brokers = [broker for broker, _ in self._brokers.values()]
            self._brokers.clear()
        for broker in brokers:
            self._stop(broker)

    def _start(self, broker: Broker) -> Broker:
        if self.watching:
            stop = broker.watch_revocations()
            if stop is not None:
                self._stops[id(broker)] = stop
        return broker

    def _stop(self, broker: Broker) -> None:
        stop = self._stops.pop(id(broker), None)
        if stop is not None:
            stop()
        broker.audit.close()

    # --- making a tenant's broker ------------------------------------------------------

    def _open_broker(self, record: TenantRecord) -> Broker:
        default = self.default
        config = tenant_config(default.config, record)
        provider = default.keyring.provider
        keyring = (
            load_or_create_keyring(Path(config.key_dir), provider)
            if provider is not None and config.key_dir
            else KeyRing.generate()
        )
        return Broker(
            config,
            default.store.for_tenant(record.name),
            keyring,
            clock=default.clock,
            metrics=default.metrics,
            nonce_issuer=default.nonces.for_tenant(record.name),
            # The process's streams: every tenant's count against one cap.
            stream_slots=default.stream_slots,
            anchors=default.transparency.anchors,
        )
