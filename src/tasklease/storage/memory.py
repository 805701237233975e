"""An in-process store: dicts under one lock. For tests and single-process experiments.

It follows the same contracts as the durable stores (the conformance suite in
``tests/storage`` runs against all of them) but keeps nothing across a restart.

Concurrency: one :class:`threading.RLock` guards every dict. :meth:`MemoryStore.write`
holds it for the whole transaction, so a transaction is serializable and readers in other
threads only ever see committed state. Rollback and savepoints replay an undo log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasklease.core.readahead import InThread
from tasklease.core.tenantids import DEFAULT_TENANT, check_tenant_id
from tasklease.storage._memory_tables import MemoryShared, MemoryTables
from tasklease.storage._memory_tx import MemoryWriteTx

__all__ = ["MemoryStore"]


class MemoryStore(MemoryTables):
    """:class:`tasklease.core.store.Store` in memory; state is lost when the process exits.

    Reads return committed state when called from another thread than the writer's; a
    read from inside ``write()`` on the writer's own thread sees that transaction's
    uncommitted writes (the durable stores would not: read through the transaction).
    """

    local_reads = True  # see Store.local_reads
    # Its reads take the lock that write() holds: a read on the loop would wait for the
    # transaction whose statements wait for the loop.
    statements_on_loop = False

    async def read_ahead(self, query: object) -> Any:
        """See ``Store.read_ahead``: reads here are local, made on the loop."""
        raise InThread("this store reads locally")

    def __init__(
        self, *, _shared: MemoryShared | None = None, _tenant: str = DEFAULT_TENANT
    ) -> None:
        shared = MemoryShared() if _shared is None else _shared
        super().__init__(shared, _tenant)
        shared.views[_tenant] = self

    # -- tenants -------------------------------------------------------------------------

    def for_tenant(self, tenant: str) -> MemoryStore:
        """This store's data for ``tenant`` (a view kept for the store's life).

        Raise ``ValueError`` if ``tenant`` is not a valid tenant id.
        """
        with self._lock:
            view = self._shared.views.get(check_tenant_id(tenant))
            # Every view is a MemoryStore (this constructor is the only one that makes them).
            if isinstance(view, MemoryStore):
                return view
            return MemoryStore(_shared=self._shared, _tenant=tenant)

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[MemoryWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Not reentrant: calling ``write()`` inside ``write()`` raises ``RuntimeError``.
        """
        with self._lock:
            self._check_open()
            if self._writer is not None:
                raise RuntimeError("write() is not reentrant: use the open transaction")
            self._writer = threading.get_ident()
            tx = MemoryWriteTx(self)
            try:
                yield tx
            except BaseException:
                tx._finish(commit=False)
                raise
            else:
                tx._finish(commit=True)
            finally:
                self._writer = None

    # -- writes outside a transaction -----------------------------------------------------

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces and launch tokens with ``expires_at <= now``.

        Return the number of entries removed. Audit events are never touched.
        """
        # Through write(), so that it is refused inside a transaction like everywhere else.
        with self.write():
            removed = 0
            for key in [k for k, r in self._revocations.items() if r.expires_at <= now]:
                del self._revocations[key]
                removed += 1
            for used in (self._nonces, self._dpop_proofs, self._evidence, self._offline_reports):
                for key in [k for k, exp in used.items() if exp <= now]:
                    del used[key]
                    removed += 1
            for key in [k for k, t in self._launch_tokens.items() if t.expires_at <= now]:
                del self._launch_tokens[key]
                removed += 1
            for key in [k for k, r in self._reference_tokens.items() if r.expires_at <= now]:
                del self._reference_tokens[key]
                removed += 1
            for table in (self._sessions, self._bindings, self._budgets):
                for key in [k for k, v in table.items() if v.expires_at <= now]:
                    del table[key]
                    removed += 1
            for key in [k for k, (_, exp) in self._leases.items() if exp <= now]:
                del self._leases[key]
                removed += 1
        return removed

    def server_time(self) -> float | None:
        return None

    def safe_horizon(self) -> float | None:
        with self._lock:
            self._check_open()
            return self._safe_horizon

    def raise_safe_horizon(self, horizon: float) -> float:
        with self.write():
            if self._safe_horizon is None or horizon > self._safe_horizon:
                self._safe_horizon = horizon
            return self._safe_horizon

    def close(self) -> None:
        """Drop all state; later calls raise ``RuntimeError``. Closing twice is harmless."""
        with self._lock:
            self._closed = True
