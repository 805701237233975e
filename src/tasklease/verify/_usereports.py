"""A verifier's late reports of the offline chains it accepted: counted per chain leaf and
minute, and reported to the broker (``POST /v1/audit/offline``) with the verifier's own
app token once each minute is over (docs/audit.md, "Reported late").

Kept in memory only (a chain holds a credential; a resource server writes none to disk):
a crash loses at most the uses not yet reported, never a verification. The broker
records a (leaf, verifier, minute) once, so a batch sent again is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import httpx

from tasklease import forksafe
from tasklease.bounds import bounded_body
from tasklease.rules.offlinereports import (
    MAX_BATCH,
    ReportQueue,
    UseCounter,
    outcome_settles,
    request_body,
)

__all__ = ["UseReporter"]

_log = logging.getLogger("tasklease.verify")
_PATH = "/v1/audit/offline"
# The broker's answer (its counts, or a problem detail) is a few hundred bytes.
MAX_ANSWER_BYTES = 65536


class UseReporter:
    """Counts a verifier's acceptances of offline chains and reports them.

    ``client`` is the verifier's (its ``base_url`` the broker), ``token_source`` gives its
    app token (the one it reads the revocation feed with) and ``forget_token`` drops it
    after a 401. At most ``limit`` reports wait for the broker; beyond, the oldest are
    dropped and counted. The broker's answer is decided by its status; its body is read
    off the wire uncompressed, at most :data:`MAX_ANSWER_BYTES`, and never inflated.
    Thread-safe.
    """

    def __init__(
        self,
        client: httpx.Client,
        token_source: Callable[[], str],
        forget_token: Callable[[], None],
        *,
        limit: int = 10_000,
    ) -> None:
        self._client = client
        self._token = token_source
        self._forget = forget_token
        self._counter = UseCounter(limit)
        self._queue = ReportQueue(limit)
        self._flush_lock = threading.Lock()
        forksafe.track(self)

    @property
    def pending(self) -> int:
        """Minutes over and not yet answered for by the broker."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return self._queue.dropped + self._counter.dropped

    def used(self, chain: str, at: float) -> None:
        """Count one acceptance of ``chain`` at ``at``."""
        self._counter.count(chain, at)

    def flush(self, now: float, *, everything: bool = False) -> int:
        """Queue the minutes over by ``now`` (every minute, ``everything``) and report
        what is queued; return how many items the broker answered for. What could not be
        delivered stays queued for the next flush."""
        for report in self._counter.closed(now, everything=everything):
            self._queue.add(report)
        if not self._flush_lock.acquire(blocking=False):
            return 0  # another thread is flushing: it will take these too
        settled = 0
        try:
            while batch := self._queue.batch(MAX_BATCH):
                if not self._send(request_body(batch)):
                    break
                self._queue.settle(r.key for r in batch)
                settled += len(batch)
        finally:
            self._flush_lock.release()
        return settled

    def _send(self, body: dict[str, list[dict[str, object]]]) -> bool:
        try:
            token = self._token()
            headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
            with self._client.stream("POST", _PATH, json=body, headers=headers) as response:
                status = response.status_code
                # The status is the outcome. The body is read (capped, uncompressed) only
                # so that the connection can serve again; one refused is left unread.
                with contextlib.suppress(ValueError):
                    bounded_body(response, MAX_ANSWER_BYTES)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the reports for later
            _log.info("offline use reports kept for later: %s", type(exc).__name__)
            return False
        if status == 401:
            self._forget()
        if not outcome_settles(status):
            _log.info("offline use reports kept for later: HTTP %d", status)
            return False
        if status >= 300:
            _log.warning("offline use reports refused by the broker: HTTP %d", status)
        return True
