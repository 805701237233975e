"""The broker's side of C2SP ``tlog-witness``: taking checkpoints to the witnesses, and the
background job that makes checkpoints and gets them cosigned (docs/audit.md)."""

from __future__ import annotations

import logging
import threading

import httpx

from tasklease.bounds import TOTAL_TIMES, bounded_body, loopback_direct, total_deadline
from tasklease.core.broker import Broker
from tasklease.core.transparency import PushResult

__all__ = ["CHECKPOINT_TICK", "WitnessClient", "checkpoint_job", "final_checkpoint"]

# How often the checkpoint job looks whether a checkpoint is due (a check in memory).
CHECKPOINT_TICK = 0.5
# The most of a witness's answer read (a cosignature line is a hundred bytes): a witness
# is listed by the operator, but its answer is still input. It is read off the wire,
# uncompressed (bounds.bounded_body).
MAX_ANSWER = 65536

_log = logging.getLogger("tasklease.audit")


class WitnessClient:
    """``POST <witness>/add-checkpoint`` over one pooled HTTP client (TLS verified with the
    system's CAs for https witnesses). An answer that is compressed or larger than
    :data:`MAX_ANSWER` is an ``OSError``, as a witness not reached is.

    A push ends within :data:`~tasklease.bounds.TOTAL_TIMES` times ``timeout``
    (``bounds.total_deadline``): a witness that drips its answer, a byte before each read
    timeout, would otherwise hold the checkpoint job's round (every tenant's, and the
    broker's stop, which waits for it) as long as it liked. The deadline closes the pooled
    client; the next push makes another. A loopback witness is reached directly, never
    through a proxy the environment names (``bounds.loopback_direct``): a witness URL's
    user and password are sent to it as HTTP Basic.

    The HTTP client is made at the first checkpoint taken to a witness: every broker
    start makes a ``WitnessClient``, most never configure a witness, and making the
    client (its connection pool, the CA bundle read into a TLS context) took a tenth of
    a second of the start."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _pooled(self) -> httpx.Client:
        with self._lock:
            if self._closed:  # as httpx says of a closed client
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            if self._client is None:
                self._client = loopback_direct(
                    httpx.Client(timeout=self._timeout, follow_redirects=False)
                )
            return self._client

    def __call__(self, url: str, body: bytes) -> PushResult:
        headers = {"content-type": "text/plain; charset=utf-8", "accept-encoding": "identity"}
        client = self._pooled()
        seconds = TOTAL_TIMES * self._timeout
        try:
            with (
                total_deadline(client, seconds),
                client.stream(
                    "POST", f"{url}/add-checkpoint", content=body, headers=headers
                ) as response,
            ):
                try:
                    answer = bounded_body(response, MAX_ANSWER)
                except ValueError as exc:
                    raise OSError(f"the witness's answer: {exc}") from None
                return PushResult(
                    response.status_code, response.headers.get("content-type", ""), answer
                )
        except (httpx.HTTPError, RuntimeError):
            if not client.is_closed:
                raise
            with self._lock:
                if self._client is client:
                    self._client = None  # closed by the deadline: the next push makes one
                closed = self._closed
            if closed:
                raise
            raise OSError(f"the witness gave no answer within {seconds:g} s") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._client is not None:
                self._client.close()


def checkpoint_job(broker: Broker, client: WitnessClient) -> None:
    """One round for one tenant's broker.

    First, until done, one bounded transaction of the events written before the Merkle
    tree existed; then: adopt a log key another process made, sign a checkpoint if one is
    due, and take the latest to the witnesses (only the process holding the checkpoint
    lease does).
    """
    log = broker.transparency
    if not log.tree_current:
        left = broker.audit.catch_up_tree()
        if left:
            _log.info("audit tree: %d earlier events still to take", left)
            return
        log.tree_current = True
    log.refresh_keys()
    log.sign_if_due()
    log.publish(client)


def final_checkpoint(broker: Broker) -> None:
    """When the broker stops: a checkpoint of what was written since the last one (by the
    process holding the checkpoint lease), so the anchor beside the log key covers it
    (``core.rollback``), even when the broker stops before the job's first round.
    Witnesses get it from the next process that runs."""
    log = broker.transparency
    if not log.tree_current:
        if broker.audit.catch_up_tree():
            return  # earlier events still to take: the tree is not the log's yet
        log.tree_current = True
    log.sign_now()
