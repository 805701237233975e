"""The SDK's late audit of offline derivations: recorded locally when made, reported to the
broker (``POST /v1/audit/offline``) when it is reachable, batched and idempotent.

By default the queue is in memory only: a chain holds its root token, a credential, and
the SDK writes no credential to disk unless told to. ``spool=`` keeps the queue in a file
too (created ``0600``, one report a line, rewritten without the reports the broker
answered for), so a crash between a derivation and its report loses nothing; put it on
a private disk. docs/broker-optional.md explains the choice.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from tasklease import forksafe
from tasklease.bounds import json_document
from tasklease.client._brokerurl import check_broker_url
from tasklease.client._transport import closed
from tasklease.rules.offlinereports import (
    MAX_BATCH,
    PendingReport,
    ReportQueue,
    derivation_report,
    outcome_settles,
    request_body,
)

__all__ = ["OfflineReporter"]

_log = logging.getLogger("tasklease.client")
_PATH = "/v1/audit/offline"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_private(path: Path, flags: int) -> int:
    """A descriptor on ``path`` (created 0600 when ``flags`` say so) if it is a regular
    file, not a symbolic link, that only this user may read or write.

    Raises:
        ValueError: ``path`` is a symbolic link, not a regular file, another user's, or
            accessible by group or others: the reports it holds carry credentials.
        OSError: it cannot be opened (FileNotFoundError when absent, without O_CREAT).
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise ValueError(f"spool {path} is a symbolic link: not used") from None
        raise
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"spool {path} is not a regular file")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ValueError(f"spool {path} belongs to another user")
        if mode & 0o077:
            raise ValueError(
                f"spool {path} is accessible by group or others (mode {mode:04o}); its "
                "reports hold credentials (chmod 600 it, or name a new file)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Holder(Protocol):
    """What derives offline: an :class:`~tasklease.client.Agent` or an
    :class:`~tasklease.client.OfflineCredential`."""

    def attenuate(
        self,
        delegate_id: str,
        delegate_public_key: bytes,
        *,
        scope: Sequence[str] | None = ...,
        authorization_details: Sequence[Mapping[str, Any]] | None = ...,
        audience: str | None = ...,
        ttl: int = ...,
    ) -> str: ...


class OfflineReporter:
    """Records offline derivations and reports them when the broker is reachable.

    ``client`` sends with ``auth`` (an agent's ``auth``: its token, renewed, with its DPoP
    proof if bound; or an :class:`OfflineCredential`'s) to ``base_url``. :meth:`derived`
    records; :meth:`flush` reports what is queued (call it when the broker is back, or let
    :meth:`start` do it every ``interval`` seconds); with an ``httpx.AsyncClient`` and an
    :class:`AsyncAgent`'s ``auth``, :meth:`aflush`. At most ``limit`` reports wait (then
    the oldest are dropped, counted in :attr:`dropped`: a derivation that will never be
    reported stays verifiable by anyone who holds the chain). Thread-safe. ``client`` is
    used as it is: the SDK's bound on answers (uncompressed, capped) is on the clients it
    builds, not on one given here.

    ``base_url`` (or, when it is relative, the client's base URL) is ``https://``, or
    ``http://`` to a loopback host: the reports carry the token. ``insecure_http`` opts in
    to plain HTTP beyond loopback as :class:`~tasklease.client.AdminClient`'s does
    (ValueError without it).

    ``spool`` must be a file only this user may read and write, or a new one (created
    0600): a symbolic link, another user's file, or one open to group or others is
    refused (ValueError), and the spool is rewritten through a new file moved over it,
    never through a name someone could have planted beside it. The spool is the process
    that made the reporter's: a copy of the reporter in a forked child (a pre-forking
    server's worker) refuses to derive (ValueError) and starts with an empty queue,
    rather than rewrite the parent's file under it; make one with a spool of its own in
    each process.
    """

    def __init__(
        self,
        client: httpx.Client | httpx.AsyncClient,
        base_url: str,
        auth: httpx.Auth | Callable[[httpx.Request], httpx.Request],
        *,
        limit: int = 1000,
        spool: str | os.PathLike[str] | None = None,
        insecure_http: bool | None = None,
    ) -> None:
        check_broker_url(base_url, insecure_http, client)
        self._client = client
        self._url = base_url.rstrip("/") + _PATH
        self._auth = auth
        self._queue = ReportQueue(limit)
        self._limit = limit
        self._spool = Path(spool) if spool is not None else None
        self._pid = os.getpid()  # the process whose spool it is
        self._io = threading.Lock()  # one spool write at a time
        self._flushing = threading.Lock()  # one flush at a time (never held by derived)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval: float | None = None  # the thread's, while it runs
        self.refused = 0  # items the broker refused for good (audited there)
        forksafe.track(self)
        if self._spool is not None:
            self._load()

    @property
    def pending(self) -> int:
        """Reports not yet answered for by the broker."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Reports dropped because the queue was full."""
        return self._queue.dropped

    def derived(self, chain: str) -> None:
        """Record the derivation of ``chain``'s last block (made offline, just now).

        Raises:
            tasklease.rules.attenuation.ChainError: ``chain`` is not a chain.
            ValueError: the spool has become a link, or open to group or others, or
                belongs to the process this one was forked from.
        """
        report = derivation_report(chain)
        self._spool_file()
        if self._interval is not None and self._thread is None:
            self.start(self._interval)  # in a forked child: its flushing thread again
        with self._io:
            dropped = self._queue.add(report)
            if self._spool is not None:
                if dropped:
                    self._rewrite()
                else:
                    self._append(report)

    def attenuate(
        self,
        holder: _Holder,
        delegate_id: str,
        delegate_public_key: bytes,
        *,
        scope: Sequence[str] | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        audience: str | None = None,
        ttl: int = 300,
    ) -> str:
        """``holder.attenuate(...)`` (an Agent's or an OfflineCredential's), recorded: the
        derivation and its report in one call. Returns the chain for the delegate."""
        chain = holder.attenuate(
            delegate_id,
            delegate_public_key,
            scope=scope,
            authorization_details=authorization_details,
            audience=audience,
            ttl=ttl,
        )
        self.derived(chain)
        return chain

    def flush(self) -> int:
        """Report what is queued, a batch at a time; return how many items the broker
        answered for. Stops at the first batch that could not be delivered (no broker,
        a 5xx, a 401 before renewal): those stay queued, in order, for the next flush.
        A flush already under way (another thread's) makes this one return 0. Through a
        closed ``client``: ClientClosed, nothing sent, everything kept."""
        client = self._client
        if not isinstance(client, httpx.Client):
            raise TypeError("flush() sends with an httpx.Client; use aflush() with AsyncClient")
        if not self._flushing.acquire(blocking=False):
            return 0
        settled = 0
        try:
            while batch := self._queue.batch(MAX_BATCH):
                try:
                    response = client.post(
                        self._url,
                        json=request_body(batch),
                        auth=self._auth,
                        follow_redirects=False,  # the reports carry credentials
                    )
                except RuntimeError as exc:  # nothing sent: the reports stay queued
                    raise closed(client, exc) from None
                except httpx.HTTPError as exc:
                    _log.info("offline reports kept for later: %s", type(exc).__name__)
                    break
                if not self._answered(batch, response):
                    break
                settled += len(batch)
        finally:
            self._flushing.release()
            self._compact(settled)
        return settled

    async def aflush(self) -> int:
        """:meth:`flush` with an ``httpx.AsyncClient`` (and an :class:`AsyncAgent`'s
        ``auth``)."""
        client = self._client
        if not isinstance(client, httpx.AsyncClient):
            raise TypeError("aflush() sends with an httpx.AsyncClient; use flush() with Client")
        if not self._flushing.acquire(blocking=False):
            return 0
        settled = 0
        try:
            while batch := self._queue.batch(MAX_BATCH):
                try:
                    body = request_body(batch)
                    response = await client.post(
                        self._url, json=body, auth=self._auth, follow_redirects=False
                    )
                except RuntimeError as exc:  # nothing sent: the reports stay queued
                    raise closed(client, exc) from None
                except httpx.HTTPError as exc:
                    _log.info("offline reports kept for later: %s", type(exc).__name__)
                    break
                if not self._answered(batch, response):
                    break
                settled += len(batch)
        finally:
            self._flushing.release()
            self._compact(settled)
        return settled

    def _answered(self, batch: list[PendingReport], response: httpx.Response) -> bool:
        """Whether ``response`` settles ``batch`` (then it leaves the queue)."""
        status = response.status_code
        if not outcome_settles(status):
            _log.info("offline reports kept for later: HTTP %d", status)
            return False
        refused = len(batch)  # the batch itself refused (malformed, not ours): for good
        if status < 300:
            try:
                answer = json_document(response.content)
            except ValueError:
                answer = {}
            items = answer.get("refused") if isinstance(answer, dict) else None
            refused = len(items) if isinstance(items, list) else 0
        else:
            _log.warning("offline reports refused by the broker: HTTP %d", status)
        self._queue.settle(r.key for r in batch)
        self.refused += refused
        return True

    def _compact(self, settled: int) -> None:
        if settled and self._spool is not None:
            with self._io:
                self._rewrite()

    def start(self, interval: float = 5.0) -> None:
        """Flush every ``interval`` seconds in a daemon thread until :meth:`close` (with an
        ``httpx.Client``; with an ``AsyncClient``, run :meth:`aflush` in your own loop)."""
        if not isinstance(self._client, httpx.Client):
            raise TypeError("start() flushes with an httpx.Client")
        if self._thread is not None:
            return
        self._interval = interval

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - the thread must outlive one bad flush
                    _log.exception("offline report flush failed")

        self._thread = threading.Thread(target=run, name="tasklease-reports", daemon=True)
        self._thread.start()

    def close(self, *, flush: bool = True) -> None:
        """Stop the thread, and report what is queued once more (``flush``, with an
        ``httpx.Client``; with an ``AsyncClient``, ``await aflush()`` before)."""
        self._stop.set()
        self._interval = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if flush and isinstance(self._client, httpx.Client):
            self.flush()

    def _after_fork_in_child(self) -> None:
        # The flushing thread is the parent's (forksafe): the child's starts again at its
        # first derivation, with the interval the parent's was started with.
        self._thread = None
        if self._spool is not None:
            # The queue copied is the parent's, kept in the parent's spool, which the
            # parent reports: the child neither sends it again nor rewrites that file.
            self._queue = ReportQueue(self._limit)

    def _spool_file(self) -> Path | None:
        """The spool, if this reporter has one and this process made the reporter.

        Raises:
            ValueError: this is a forked copy: the spool is its parent's, which a rewrite
                here would take the parent's later reports from.
        """
        if self._spool is not None and os.getpid() != self._pid:
            raise ValueError(
                f"spool {self._spool} belongs to process {self._pid}, which this one was "
                "forked from: make an OfflineReporter with a spool of its own here"
            )
        return self._spool

    # --- the spool ------------------------------------------------------------------------

    def _append(self, report: PendingReport) -> None:
        spool = self._spool_file()
        if spool is None:  # pragma: no cover - only called with a spool
            return
        fd = _open_private(spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(report.to_json() + "\n")
            out.flush()
            os.fsync(out.fileno())

    def _rewrite(self) -> None:
        spool = self._spool_file()
        if spool is None:  # pragma: no cover
            return
        # A new file of a name no one could plant (O_EXCL), moved over the spool: a link
        # at the spool's name is replaced, never followed.
        temporary = spool.with_name(f".{spool.name}.{secrets.token_hex(8)}.tmp")
        fd = _open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for report in self._queue.items():
                    out.write(report.to_json() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, spool)
        finally:
            temporary.unlink(missing_ok=True)

    def _load(self) -> None:
        spool = self._spool
        if spool is None:
            return
        try:
            fd = _open_private(spool, os.O_RDONLY)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as lines:
            for raw in lines:
                # A report is written as ASCII JSON (PendingReport.to_json): a line that is
                # not, or not JSON, was torn by a crash mid-write or damaged on disk. Its
                # report is lost; the others are read on (decoding the whole file would
                # raise at the first bad byte, and lose them all).
                try:
                    self._queue.add(PendingReport.from_json(raw.decode("ascii")))
                except ValueError:  # UnicodeDecodeError included
                    continue
        self._rewrite()
