"""When the SDK tries a request again: on 429 and 503, and when no connection was made.

A 429 (rate limited) or 503 (the broker could not make the operation durable, or is not
current yet: it failed closed and changed nothing) is retried after the broker's
``Retry-After`` when it gives one (and up to half as long again, at random), else after
an exponential backoff with jitter. A
request that never reached the broker (connection refused, connect timeout) is retried
the same way. Anything else is answered at once. A ``Retry-After`` longer than
``max_wait`` is not waited for: the error is raised with it (``RateLimited.retry_after``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from tasklease import bounds

__all__ = ["DEFAULT_RETRY", "NO_RETRY", "Retry", "retry_after_seconds", "spread_retry_after"]

_RETRY_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` value (RFC 9110 section 10.2.3: seconds or an HTTP date) in
    seconds from now, or None when absent or malformed (:func:`bounds.retry_after_seconds`)."""
    return bounds.retry_after_seconds(value, now=time.time() if now is None else now)


def spread_retry_after(asked: float, limit: float) -> float:
    """How long to wait when the broker said ``Retry-After: asked``: at least that, and up
    to half as long again at random, never past ``limit`` (nor below ``asked``).

    The broker tells every client it refuses together the same whole seconds (a 503's
    default 1 s, a rate limit's bucket): waited exactly, an orchestrator's hundreds of
    agents refused in one burst would all come back at one instant, to the broker that
    has just said it cannot keep up. The SDK's retries and its renewals kept in reserve
    both wait by this."""
    room = max(0.0, min(asked / 2, limit - asked))
    return asked + room * random.random()  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how long to wait before trying a request again.

    ``attempts`` retries after the first try; the n-th waits ``backoff * 2**(n-1)``
    seconds (at most ``max_wait``), scaled by a random factor in [0.5, 1] so that clients
    refused together do not return together; or the broker's ``Retry-After``, spread
    likewise (:func:`spread_retry_after`, at most ``max_wait``).
    """

    attempts: int = 3
    backoff: float = 0.25
    max_wait: float = 10.0
    statuses: frozenset[int] = field(default=_RETRY_STATUSES)

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff < 0 or self.max_wait < 0:
            raise ValueError("attempts, backoff and max_wait must not be negative")

    def wait(self, attempt: int, response: httpx.Response | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (from 1) after ``response``
        (None: no connection was made), or None to give up and report it."""
        if attempt > self.attempts:
            return None
        if response is not None:
            if response.status_code not in self.statuses:
                return None
            asked = retry_after_seconds(response.headers.get("retry-after"))
            if asked is not None:
                return spread_retry_after(asked, self.max_wait) if asked <= self.max_wait else None
        computed = min(self.max_wait, self.backoff * 2.0 ** (attempt - 1))
        jitter: float = 0.5 + random.random() / 2  # noqa: S311 - jitter, not a secret
        return computed * jitter


DEFAULT_RETRY = Retry()
"""Three retries, from a quarter of a second, never more than 10 s at a time."""

NO_RETRY = Retry(attempts=0)
"""Every failure is reported at once."""
