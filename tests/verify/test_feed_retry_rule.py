"""The rule by which the verifier tries the revocation feed again after an error answer
(``verify._feed.retry_delay``, docs/decisions.md 148): ``Retry-After`` no sooner, backoff
on errors in a row, jitter, and never past the staleness bound when an attempt before it
could keep it."""

from __future__ import annotations

import pytest

from tasklease.verify._feed import (
    MAX_ERROR_BACKOFF,
    MAX_RECONNECT_BACKOFF,
    MAX_RETRY_AFTER,
    retry_after_seconds,
    retry_delay,
)


def test_the_rule() -> None:
    never_synced = float("inf")

    def delay(failures: int, retry_after: float | None, staleness: float, jitter: float) -> float:
        return retry_delay(
            failures=failures,
            retry_after=retry_after,
            staleness=staleness,
            max_staleness=60.0,
            jitter=jitter,
        )

    # Retry-After, no sooner, at most 20% later.
    assert delay(1, 5, never_synced, 0.0) == 5
    assert delay(1, 5, never_synced, 0.999) == pytest.approx(6, abs=0.01)
    # Backoff on errors in a row, with or without Retry-After, capped.
    assert [delay(n, None, never_synced, 0.0) for n in (1, 2, 3, 8, 50)] == [
        0.25,
        0.5,
        1.0,
        MAX_ERROR_BACKOFF,
        MAX_ERROR_BACKOFF,
    ]
    assert delay(6, 5, never_synced, 0.0) == 8
    # A Retry-After past reason is cut short.
    assert delay(1, 86_400, never_synced, 0.0) == MAX_RETRY_AFTER
    # Within the bound: as asked while that leaves a second before it is passed...
    assert delay(1, 30, 10.0, 0.5) == pytest.approx(33)
    # ...else tried again a second before the bound...
    assert delay(1, 30, 40.0, 0.5) == 19
    assert delay(8, None, 40.0, 0.0) == 19
    # ...not sooner than the quick retry...
    assert delay(1, 30, 58.9, 0.0) == MAX_RECONNECT_BACKOFF
    # ...and once it is passed (or before the first sync), as asked.
    assert delay(1, 30, 59.5, 0.0) == 30
    assert delay(1, 30, 75.0, 0.0) == 30
    # A small bound keeps half of itself for the attempt.
    assert (
        retry_delay(failures=1, retry_after=5, staleness=0.0, max_staleness=1.0, jitter=0.0) == 0.5
    )


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("5", now=now) == 5
    assert retry_after_seconds(" 0 ", now=now) == 0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0  # passed
    for unreadable in (None, "", "-1", "1.5", "soon", "٣"):
        assert retry_after_seconds(unreadable, now=now) is None


def test_a_retry_after_no_float_holds_is_unreadable() -> None:
    now = 1_700_000_000.0
    for absurd in ("9" * 400, "9" * 5000, "1" + "0" * 10):
        assert retry_after_seconds(absurd, now=now) is None
    assert retry_after_seconds("9999999999", now=now) == 9999999999
    # The last date there is, seconds from now: a number, whatever it is.
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", now=now) == 253402300799 - now
