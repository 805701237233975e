"""Settings that pace sign-ins and housekeeping are refused outside their range, NaN and
infinity included: a NaN rate refilled the sign-in limiter on every call (no limit at
all), a zero one divided by zero (500s for 429s), and a zero prune interval spun."""

from __future__ import annotations

import math

import pytest

from tasklease.core.config import Config, is_loopback_host

_BAD = (math.nan, math.inf, -math.inf, 0, -1)


@pytest.mark.parametrize(
    "name", ["admin_auth_rate", "app_auth_rate", "refusal_rate", "prune_interval"]
)
@pytest.mark.parametrize("value", _BAD)
def test_a_rate_or_interval_out_of_range_is_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


@pytest.mark.parametrize("name", ["admin_auth_burst", "app_auth_burst"])
@pytest.mark.parametrize("value", [0, -3, 100_001])
def test_a_burst_out_of_range_is_refused(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_the_defaults_and_the_edges_are_accepted() -> None:
    Config()
    Config(admin_auth_rate=0.001, app_auth_rate=10_000, admin_auth_burst=1, prune_interval=0.1)
    Config(refusal_rate=0.001, refusal_burst=1)
    Config(refusal_rate=10_000, refusal_burst=1_000_000)


@pytest.mark.parametrize("value", [0, -3, 1_000_001])
def test_a_refusal_burst_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="refusal_burst"):
        Config(refusal_burst=value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - what is checked
        ("0", False),  # every interface too
        ("::", False),
        ("192.0.2.2", False),
        ("broker.internal", False),  # a name may resolve to anything
    ],
)
def test_what_counts_as_loopback_for_the_plain_http_warning(host: str, loopback: bool) -> None:
    """``serve`` warns about plain HTTP, and ``doctor`` flags it, for every bind address
    that is not loopback, not only for the two spellings of all interfaces."""
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("name", ["feed_streams_per_reader", "feed_streams_per_process"])
@pytest.mark.parametrize("value", [0, -1, 100_001])
def test_a_feed_stream_cap_out_of_range_is_refused(name: str, value: int) -> None:
    """A cap of 0 would refuse every stream (every verifier fails closed), and a negative
    or huge one is a typo: each is refused when the broker starts, naming the setting."""
    with pytest.raises(ValueError, match=f"{name} must be between 1 and 100000"):
        Config(**{name: value})


def test_the_feed_stream_caps_accept_their_edges() -> None:
    assert (Config().feed_streams_per_reader, Config().feed_streams_per_process) == (64, 1000)
    Config(feed_streams_per_reader=1, feed_streams_per_process=1)
    Config(feed_streams_per_reader=100_000, feed_streams_per_process=100_000)
