"""The brokers of one process: the default tenant's, and each other tenant's on first use.

A tenant is served by a :class:`~tasklease.core.broker.Broker` of its own, over its view of
the one database (``Store.for_tenant``), with its own configuration
(``core.tenants.tenant_config``: trust domain, issuer, key directory, no admin secret) and
its own keys (``<key_dir>/tenants/<name>``: signing keys, and the audit log's key in
``log/``, through the same key provider; rings held in memory for a broker that has no key
directory). :class:`Tenancy` makes a tenant's broker when first asked, and forgets one
within :data:`RECHECK` seconds of its removal by any process (:meth:`Tenancy.recheck`,
run by the server, notices removals by others without waiting for a request). A broker
forgotten stops serving (``Broker.stop_serving``): the revocation streams open on its
tenant end.

A tenant's keys are made when it is created (:meth:`Tenancy.create`), and only then, as
``tasklease init`` makes the default tenant's (docs/decisions.md 145 and 152). Opening a
tenant only loads them: a tenant whose keys are missing here (a replica with its own copy
of the key directory that never got the tenant's, a restore that left them out) or do not
open is not served, rather than given new keys that no other process has and that would
sign a second history of its audit log. Its requests are refused ``service_unavailable``;
the process logs what to do and audits the refusal, once per tenant every
:data:`REPORT_EVERY` seconds, and every refusal until then names that event's
``denial_id``. It is served again within :data:`RECHECK` seconds of its keys opening.

A tenant's audit log is judged against its anchor (``core.rollback``) when its broker is
opened, as the server judges every log at start: a tenant whose key directory, and so its
anchor, arrived after the start (copied in after a restore that left it out) is refused
the same way while its log does not extend the anchor, until ``tasklease db
accept-restore`` (which opens it with ``refuse_went_back`` false).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasklease.core.auditformat import AuditEntry
from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import Unavailable
from tasklease.core.kernel import denial_entry, new_denial_id
from tasklease.core.keys import KeyRing, load_keyring, load_or_create_keyring
from tasklease.core.records import OperatorRecord, TenantRecord
from tasklease.core.rollback import DatabaseWentBack
from tasklease.core.store import Store
from tasklease.core.tenants import (
    DEFAULT_TENANT,
    tenant_config,
    tenant_id_error,
    tenant_key_dir,
)
from tasklease.core.tokens import Claims
from tasklease.core.transparency import LOG_KEY_DIR

__all__ = ["RECHECK", "REPORT_EVERY", "Tenancy", "report_tenants_without_keys"]

_log = logging.getLogger("tasklease.tenancy")

# How long a process trusts what it last read of a tenant's registry row: a tenant
# removed by another process stops being served here within this time. A tenant whose
# keys did not open is tried again after as long.
RECHECK = 1.0
# Seconds between two reports (an error line in the log, an audit event) of a tenant this
# process cannot serve: its refusals meanwhile name the last report's denial_id.
REPORT_EVERY = 60.0
# Names asked for that are no tenant, remembered (for RECHECK) up to this many: a caller
# trying names cannot make the process read the registry for each request, nor grow.
_MISSES_KEPT = 1024


def _keys_recorded(store: Store, name: str) -> bool:
    """Whether tenant ``name``'s keys were made and recorded: its audit log holds an event
    (the first are its keys'; before them, nothing of the tenant can write there)."""
    seq, _ = store.for_tenant(name).audit_head()
    return seq > 0


def _holds_keys(directory: Path) -> bool:
    try:
        return any(directory.glob("signing-*.pem"))
    except OSError:
        return False


def report_tenants_without_keys(default: Broker) -> list[str]:
    """Log an error for each active tenant that this process will not serve because its
    key directory holds no signing key or no audit log key; return their names.

    Files are only looked at, not opened (a tenant is opened on its first request), and
    a tenant whose creation stopped before its keys is no tenant yet. For a serving
    process to say at start what it will refuse (``tasklease.server``), rather than at the
    first request.
    """
    key_dir = default.config.key_dir
    if default.keyring.provider is None or not key_dir:
        return []
    names = []
    for record in default.store.list_tenants():
        directory = Path(tenant_key_dir(key_dir, record.name))
        if record.status != "active" or (
            _holds_keys(directory) and _holds_keys(directory / LOG_KEY_DIR)
        ):
            continue
        if not _keys_recorded(default.store, record.name):
            continue
        names.append(record.name)
        _log.error(
            "tenant %s will not be served by this process: its key directory %s holds no "
            "signing key or no audit log key (log/). A tenant's keys are made when it is "
            "created, and never again: copy that directory whole (cp -a) from a replica "
            "or process that serves the tenant, or restore it from the backup taken with "
            "the database (docs/operations.md, Keys)",
            record.name,
            directory,
        )
    return names


@dataclass(slots=True)
class _Unserved:
    """A tenant whose broker this process could not open: why (the key store's words),
    when opening it was last tried, and the audited refusal its refusals name."""

    reason: str
    tried_at: float
    denial_id: str = ""
    reported_at: float = float("-inf")


class Tenancy:
    """The default tenant's broker and the other tenants' (made lazily). Thread-safe."""

    def __init__(
        self,
        default: Broker,
        *,
        open_broker: Callable[[TenantRecord], Broker] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        refuse_went_back: bool = True,
    ) -> None:
        self.default = default
        self._refuse_went_back = refuse_went_back
        self._open = open_broker or self._open_broker
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # name -> (broker, monotonic time its registry row was last read)
        self._brokers: dict[str, tuple[Broker, float]] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()
        # Tenants whose broker could not be opened here (their keys): refused, not served.
        self._unserved: dict[str, _Unserved] = {}
        # Set by the server when the default broker follows a store watch: each tenant
        # broker then follows one too (stopped when it is forgotten).
        self.watching = False
        self._stops: dict[int, Callable[[], None]] = {}
        self._recheck_failing: set[str] = set()  # tenants whose last recheck failed

    # --- lookup -----------------------------------------------------------------------

    def broker(self, name: str, *, request_id: str = "") -> Broker | None:
        """The broker of the active tenant ``name``; None if there is no such tenant.

        The default tenant is served at the root only: its name is no tenant here (None),
        so ``/t/default/...`` is as unknown as any other name, not a second door to the
        default tenant with limits of its own. The registry is read at most once per
        :data:`RECHECK` seconds per name. A tenant whose creation stopped before its keys
        were made and recorded is no tenant yet (None) until it is created again.

        Raises:
            Unavailable: the tenant exists but its keys do not open here (module
                docstring); the error names the audited refusal (``denial_id``), written
                with ``request_id`` when this refusal is the one reported.
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
            unserved = self._unserved.get(name)
        if unserved is not None and now - unserved.tried_at < RECHECK:
            raise self._refusal(name, unserved, now, request_id)
        if tenant_id_error(name) is not None:
            return None
        record = self.default.get_tenant(name)
        failure: Exception | None = None
        gone = None
        with self._lock:
            if record is None:
                found = self._brokers.get(name)
                if found is not None and found[1] >= now:
                    # Found by a read newer than this one (a creation, in between): this
                    # stale miss must not stop the broker the creation is setting up.
                    return found[0]
                gone = self._brokers.pop(name, None)
                self._unserved.pop(name, None)
                self._miss(name, now)
            else:
                try:
                    return self._serve(record, now)
                except (ValueError, OSError) as exc:  # the key store's: KeyStoreError
                    failure = exc
        if gone is not None:
            self._stop(gone[0])
        if record is None or failure is None:
            return None
        return self._not_served(record, failure, now, request_id)

    def _miss(self, name: str, now: float) -> None:
        """Remember ``name`` as no tenant until ``now`` + :data:`RECHECK`. Called with the
        lock held."""
        self._misses[name] = now
        self._misses.move_to_end(name)
        while len(self._misses) > _MISSES_KEPT:
            self._misses.popitem(last=False)

    def _serve(self, record: TenantRecord, now: float) -> Broker:
        """The broker of ``record``'s tenant, made if need be, trusted until ``now`` +
        :data:`RECHECK`; the name is no longer a miss. Called with the lock held.

        Raises:
            ValueError, OSError: its keys do not open (``open_broker``'s errors).
        """
        self._misses.pop(record.name, None)
        found = self._brokers.get(record.name)
        broker = found[0] if found is not None else self._start(self._opened(record))
        self._brokers[record.name] = (broker, now)
        if self._unserved.pop(record.name, None) is not None:
            _log.warning("tenant %s: its keys open again; it is served", record.name)
        return broker

    def _opened(self, record: TenantRecord) -> Broker:
        """A new broker of ``record``'s tenant, refused (closed) when its log does not
        extend its anchor, unless built with ``refuse_went_back`` false.

        Raises:
            ValueError, OSError: its keys do not open, its anchor is unsafe or unreadable,
                or its log went back.
        """
        broker = self._open(record)
        if not self._refuse_went_back:
            return broker
        try:
            found = broker.transparency.examine().went_back
            if found is not None:
                raise ValueError(str(DatabaseWentBack([found])))
        except BaseException:
            broker.audit.close()
            raise
        return broker

    def _not_served(
        self, record: TenantRecord, failure: Exception, now: float, request_id: str
    ) -> Broker | None:
        """What to do with a tenant whose broker did not open: nothing if its creation
        stopped before its keys were recorded (no tenant yet: None), its broker if its
        keys arrived in between (a creation elsewhere sharing the key directory), else
        raise the refusal."""
        if not self._keys_recorded(record.name):
            with self._lock:
                found = self._brokers.get(record.name)
                if found is not None:  # created by this process in between
                    return found[0]
                self._miss(record.name, now)
            return None
        with self._lock:
            try:  # the keys are recorded, so made: maybe just now, by another process
                return self._serve(record, now)
            except (ValueError, OSError) as exc:
                failure = exc
        raise self._unserved_error(record.name, failure, now, request_id)

    def _keys_recorded(self, name: str) -> bool:
        return _keys_recorded(self.default.store, name)

    def _unserved_error(
        self, name: str, failure: Exception, now: float, request_id: str
    ) -> Unavailable:
        """Note that ``name`` is not served here for ``failure``; return its refusal."""
        reason = str(failure) or type(failure).__name__
        with self._lock:
            unserved = self._unserved.get(name)
            if unserved is None or unserved.reason != reason:
                unserved = self._unserved[name] = _Unserved(reason, now)
            else:
                unserved.tried_at = now
        return self._refusal(name, unserved, now, request_id)

    def _refusal(self, name: str, unserved: _Unserved, now: float, request_id: str) -> Unavailable:
        """The refusal of a request for a tenant not served here. The first one, and the
        first after :data:`REPORT_EVERY` seconds, is logged and audited (in the default
        tenant's log: the tenant's own has no broker here) and names its own
        ``denial_id``; the others name the last one reported.

        Raises:
            Unavailable: the audit event could not be written (the next refusal tries
                again).
        """
        error = Unavailable(
            "this tenant is not served here: its keys are missing or cannot be opened on "
            "this broker",
            reason=f"tenant={name}: {unserved.reason}",
            hint="the broker's operator must restore the tenant's key directory "
            "(the broker's log says where); quote the denial_id",
        )
        with self._lock:
            if unserved.denial_id and now - unserved.reported_at < REPORT_EVERY:
                error.denial_id = unserved.denial_id
                return error
            # This refusal reports: the others meanwhile name its event.
            denial_id = new_denial_id()
            unserved.denial_id, unserved.reported_at = denial_id, now
        directory = tenant_key_dir(self.default.config.key_dir, name)
        entry = AuditEntry(
            "tenant_unavailable",
            outcome="denied",
            request_id=request_id,
            detail=f"tenant={name} not served: its keys in {directory or 'memory'} do not "
            f"open: {unserved.reason}",
        )
        try:
            self.default.kernel.record(denial_entry(entry, denial_id))
        except BaseException:
            with self._lock:
                if unserved.denial_id == denial_id:
                    unserved.denial_id = ""
            raise
        _log.error(
            "tenant %s is not served: its keys do not open (%s). A tenant's keys are made "
            "when it is created, and never again: copy its key directory %s whole (its "
            "signing keys and log/, with their owner and modes: cp -a) from a replica or "
            "process that serves it, or restore it from the backup taken with the "
            "database (docs/operations.md, Keys); it is served again within %.0f s of its "
            "keys opening. Its requests are refused 503 with denial_id %s",
            name,
            unserved.reason,
            directory,
            RECHECK,
            denial_id,
        )
        error.denial_id = denial_id
        return error

    def recheck(self) -> list[str]:
        """Read again the registry row of every tenant served here whose row was read
        :data:`RECHECK` seconds ago or more, and stop serving those removed meanwhile (by
        another process or replica); return their names.

        A request for a tenant reads its row the same way (:meth:`broker`); this is run
        every :data:`RECHECK` seconds by the server, so a removed tenant that receives no
        request here is stopped too: its revocation streams end, its housekeeping stops.
        One tenant's failed read (the database unreachable) does not stop the others'.
        """
        with self._lock:
            names = list(self._brokers)
        gone: list[str] = []
        for name in names:
            try:
                if self.broker(name) is None:
                    gone.append(name)
            except Exception as exc:  # noqa: BLE001 - tried again next round, not raised
                # Logged once per run of failures: a database away for minutes would
                # otherwise log every tenant every second.
                if name not in self._recheck_failing:
                    self._recheck_failing.add(name)
                    # The type only: a driver's message may quote a value.
                    _log.warning(
                        "tenant %s: reading its registry row failed (%s); tried again "
                        "every %s s, logged once",
                        name,
                        type(exc).__name__,
                        RECHECK,
                    )
            else:
                self._recheck_failing.discard(name)
        return gone

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

        The tenant's keys (signing keys, audit log key) are made here, under
        ``<key_dir>/tenants/<name>``, and audited in its own log as made by the caller
        (``signing_key_created``, ``audit_log_key_created``) before its first operator.
        A tenant whose creation stopped half-way is finished by asking again: its missing
        keys are made then, as long as none were recorded (its audit log is empty). Keys
        once recorded are never made again: a tenant whose recorded keys are missing
        here is refused as :meth:`broker` refuses it.

        Raises:
            InvalidRequest, Conflict: as :meth:`Broker.create_tenant`; Conflict also when
                the tenant is complete already (its ``admin`` exists), whose keys open
                (:meth:`Broker.refuse_complete_tenant`).
            Unavailable: its keys could not be made or do not open here (audited).
        """
        record = self.default.create_tenant(claims, name=name, trust_domain=trust_domain, ctx=ctx)
        now = self._monotonic()
        try:
            made = self._make_keys(record)
            # From the record just written, not through broker(): a request for the name a
            # moment ago (anyone may ask for /t/<name>/...) left it among the misses.
            with self._lock:
                broker = self._serve(record, now)
        except (ValueError, OSError) as exc:
            raise self._unserved_error(record.name, exc, now, ctx.request_id) from None
        if made:
            broker.record_keys_made(ctx, signing_key=True, log_key=True, by=claims.sub)
        else:  # its keys open (a tenant whose keys do not was refused above, 503)
            self.default.refuse_complete_tenant(claims, record, ctx)
        operator, secret = broker.set_up_tenant_admin(claims.sub, ctx)
        return record, operator, secret

    def _make_keys(self, record: TenantRecord) -> bool:
        """Make what is missing of the tenant's keys, if none were recorded yet; return
        whether they are to be recorded now (False: recorded already, or held in memory).

        Raises:
            ValueError, OSError: the key store's (``KeyStoreError``): a key cannot be made.
        """
        provider = self.default.keyring.provider
        key_dir = self.default.config.key_dir
        if provider is None or not key_dir or self._keys_recorded(record.name):
            return False
        directory = Path(tenant_key_dir(key_dir, record.name))
        load_or_create_keyring(directory, provider)
        load_or_create_keyring(directory / LOG_KEY_DIR, provider)
        return True

    def remove(self, claims: Claims, name: object, ctx: RequestContext) -> TenantRecord:
        """Remove a tenant (:meth:`Broker.remove_tenant`) and stop serving it here at once."""
        record = self.default.remove_tenant(claims, name, ctx)
        with self._lock:
            gone = self._brokers.pop(record.name, None)
            self._unserved.pop(record.name, None)
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
            self._stop(broker, removed=False)

    def _start(self, broker: Broker) -> Broker:
        if self.watching:
            stop = broker.watch_revocations()
            if stop is not None:
                self._stops[id(broker)] = stop
        return broker

    def _stop(self, broker: Broker, *, removed: bool = True) -> None:
        # First: the tenant's revocation streams end now (Broker.stop_serving), so a
        # resource server following its feed stops hearing it as current.
        broker.stop_serving()
        if removed:  # no longer served: its federated domains' series end with it
            broker.federation.end_series()
        stop = self._stops.pop(id(broker), None)
        if stop is not None:
            stop()
        broker.audit.close()

    # --- making a tenant's broker ------------------------------------------------------

    def _open_broker(self, record: TenantRecord) -> Broker:
        """The tenant's broker over its keys as they are: loaded, never made.

        Raises:
            KeyStoreError (a ValueError), OSError: its key directory, its signing keys or
                its audit log key are missing or cannot be opened.
        """
        default = self.default
        config = tenant_config(default.config, record)
        provider = default.keyring.provider
        keyring, log_keyring = KeyRing.generate(), None
        if provider is not None and config.key_dir:
            directory = Path(config.key_dir)
            keyring = load_keyring(directory, provider)
            log_keyring = load_keyring(directory / LOG_KEY_DIR, provider)
        return Broker(
            config,
            default.store.for_tenant(record.name),
            keyring,
            clock=default.clock,
            # The process's elapsed time, as the default tenant's: what pruning and the
            # silent-agent sweeper keep to when the wall clock jumps.
            monotonic=default.elapsed,
            metrics=default.metrics,
            nonce_issuer=default.nonces.for_tenant(record.name),
            # The process's streams: every tenant's count against one cap.
            stream_slots=default.stream_slots,
            anchors=default.transparency.anchors,
            log_keyring=log_keyring,
        )
