"""The time a verifier judges tokens by (decision 251, ``verify._brokertime``): the later of
its own clock and the broker's, read from the ``Date`` header of its JWKS answers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import nacl.signing
import pytest

from tasklease.core.clock import ManualClock
from tasklease.core.keys import KeyRing
from tasklease.verify._brokertime import BrokerPacedClock
from tasklease.verify._jwks import KeySet

START = 1_800_000_000.0


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True)


def test_a_clock_behind_the_brokers_is_made_up_for_and_one_ahead_is_not() -> None:
    local, mono = ManualClock(START), [100.0]
    clock = BrokerPacedClock(local, warn_after=15, monotonic=lambda: mono[0])
    assert clock.now() == START and clock.offset() is None  # nothing read yet
    clock.note(_date(START + 600.7))  # the broker is ten minutes ahead (to the second)
    assert clock.now() == START + 600  # the Date header's second: a lower bound
    assert clock.offset() == -600
    mono[0] += 5.0  # time passes for both; the local wall clock does not move
    assert clock.now() == START + 605 and clock.offset() == -605
    local.set(START + 1000)  # the local clock put right, and past the broker's
    assert clock.now() == START + 1000
    clock.note(_date(START + 400))  # now the broker is behind: nothing shortens tokens
    assert clock.now() == START + 1000 and clock.offset() == 600


@pytest.mark.parametrize("header", [None, "", "yesterday", "Mon, 07 Dec 2026 05:00:00"])
def test_a_missing_or_malformed_date_changes_nothing(header: str | None) -> None:
    clock = BrokerPacedClock(ManualClock(START), warn_after=15)
    clock.note(_date(START + 60))
    clock.note(header)
    assert clock.offset() is not None and -61 < clock.offset() < -59  # type: ignore[operator]


def test_clocks_apart_are_logged_once_an_hour(caplog: pytest.LogCaptureFixture) -> None:
    mono = [0.0]
    clock = BrokerPacedClock(ManualClock(START), warn_after=15, monotonic=lambda: mono[0])
    with caplog.at_level(logging.WARNING, logger="tasklease.verify"):
        clock.note(_date(START + 10))  # within half the skew: quiet
        clock.note(_date(START + 300))
        mono[0] += 600
        clock.note(_date(START + 900))
        mono[0] += 3000
        clock.note(_date(START + 3900))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("this host's clock is 300 s behind the broker's")


def test_the_key_set_reports_each_successful_answers_date() -> None:
    key = nacl.signing.SigningKey.generate()
    heard: list[str | None] = []
    answers = [httpx.Response(200, json=KeyRing(key).jwks(), headers={"date": _date(START)})]
    answers.append(httpx.Response(503, headers={"date": _date(START + 5)}))

    def answer(_request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    keys = KeySet(client, ttl=300, min_interval=0, on_date=heard.append)
    assert keys.refresh() and heard == [_date(START)]
    assert not keys.refresh() and heard == [_date(START)]  # a failed fetch tells nothing
    client.close()
