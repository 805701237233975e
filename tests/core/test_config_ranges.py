"""Settings that pace sign-ins and housekeeping are refused outside their range, NaN and
infinity included: a NaN rate refilled the sign-in limiter on every call (no limit at
all), a zero one divided by zero (500s for 429s), and a zero prune interval spun."""

from __future__ import annotations

import math
import re

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


# --- sizes, lifetimes and critical scopes (docs/decisions.md 146) ---------------------------


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        # A token limit below the tokens the broker issues: admin auth answered with a
        # 521-byte token that every later request refused.
        ({"max_token_bytes": 300}, "max_token_bytes must be between reference_token_threshold"),
        ({"max_token_bytes": 4095}, "max_token_bytes must be between reference_token_threshold"),
        ({"max_token_bytes": -1}, "max_token_bytes"),
        ({"max_token_bytes": 1_048_577, "max_body_bytes": 67_108_864}, "max_token_bytes"),
        ({"reference_token_threshold": 511}, "reference_token_threshold must be between 512"),
        ({"reference_token_threshold": 65537}, "reference_token_threshold must be between"),
        # Every request answered 413.
        ({"max_body_bytes": -5}, "max_body_bytes must be between 32768 and 67108864"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_body_bytes": 32767}, "max_body_bytes"),
        ({"max_body_bytes": 67_108_865}, "max_body_bytes"),
        ({"max_token_bytes": 16384, "max_body_bytes": 65535}, "between 65536 and"),
        ({"max_ttl": 31_536_001, "renewal_ceiling": 60}, "max_ttl must be between 1 and 31536000"),
        ({"nonce_ttl": 0}, "nonce_ttl must be between 1 and"),
        ({"renewal_ceiling": 10**20}, "renewal_ceiling must be between"),
        ({"max_renewals": 10**9}, "max_renewals must be between 0 and 1000000"),
        ({"max_renewals": -1}, "max_renewals"),
        ({"dpop_replay_cache_size": 0}, "dpop_replay_cache_size"),
    ],
)
def test_a_size_or_lifetime_out_of_range_is_refused(settings: dict[str, int], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        Config(**settings)


def test_sizes_and_lifetimes_at_their_edges_are_accepted() -> None:
    Config(reference_token_threshold=512, max_token_bytes=512, max_body_bytes=16384)
    Config(reference_token_threshold=65536, max_token_bytes=65536, max_body_bytes=262_144)
    Config(max_token_bytes=1_048_576, max_body_bytes=67_108_864)
    Config(max_ttl=31_536_000, renewal_ceiling=31_536_000, nonce_ttl=1, max_renewals=0)
    Config(max_renewals=1_000_000)


_MALFORMED_PATTERNS = [
    "write:payments",  # two parts: covers nothing, covered by nothing
    "write:payments:acct-*",  # a '*' inside an identifier is no wildcard
    "write: payments:*",
    "*:*:*",
    "",
]


@pytest.mark.parametrize("pattern", _MALFORMED_PATTERNS)
def test_a_malformed_critical_scope_is_refused_by_broker_and_verifier_alike(pattern: str) -> None:
    """The one rule (rules.scopes.check_scope_patterns): the broker took these and then
    matched no token with them, high assurance silently off; the verifier refused them."""
    from tasklease.verify._freshness import FreshnessPolicy

    with pytest.raises(ValueError, match=f"critical_scopes: {re.escape(repr(pattern))}") as broker:
        Config(critical_scopes=(pattern,))
    with pytest.raises(ValueError) as verifier:
        FreshnessPolicy(critical_scopes=[pattern])
    assert str(broker.value) == str(verifier.value)


def test_well_formed_critical_scopes_are_accepted_by_both() -> None:
    from tasklease.verify._freshness import FreshnessPolicy

    patterns = ("write:payments:*", "write:payments:acct-1", "delete:data:a:b")
    assert Config(critical_scopes=patterns).critical_scopes == patterns
    assert FreshnessPolicy(critical_scopes=patterns).critical_scopes == patterns


def test_a_witness_url_with_a_password_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ValueError) as caught:
        Config(audit_witnesses=("https://w:Pa55word@witness.example/ not-a-vkey",))
    assert "Pa55word" not in str(caught.value)
    assert "'https://***@witness.example/ not-a-vkey'" in str(caught.value)


@pytest.mark.parametrize("name", ["http_header_timeout", "http_body_timeout"])
@pytest.mark.parametrize("value", [*_BAD, 0.4, 301])
def test_a_request_deadline_out_of_range_is_refused(name: str, value: float) -> None:
    # Would fail if: a NaN, zero or unbounded deadline (no deadline at all, or every
    # request cut off) were taken.
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})
    Config(**{name: 0.5})
    Config(**{name: 300})


@pytest.mark.parametrize("value", [0, -1, 15, 1_000_001])
def test_a_connection_cap_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="http_max_connections"):
        Config(http_max_connections=value)
    Config(http_max_connections=16)


@pytest.mark.parametrize("value", [0, -1, 1_000_001])
def test_a_per_client_connection_cap_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="http_max_connections_per_client"):
        Config(http_max_connections_per_client=value)
    Config(http_max_connections_per_client=1)


@pytest.mark.parametrize("value", [*_BAD, 9.9, 86401])
def test_a_console_audit_walk_interval_out_of_range_is_refused(value: float) -> None:
    # Would fail if: a NaN or zero interval walked the whole audit log on every view of the
    # console's audit page (O(n) each), or a negative one were taken for a typo's sake.
    with pytest.raises(ValueError, match="console_audit_walk_interval must be between 10"):
        Config(console_audit_walk_interval=value)


def test_the_console_audit_walk_interval_accepts_its_edges_and_the_environment() -> None:
    from tasklease.settings import load_config

    assert Config().console_audit_walk_interval == 600
    Config(console_audit_walk_interval=10)
    Config(console_audit_walk_interval=86400)
    env = {"TASKLEASE_CONSOLE_AUDIT_WALK_INTERVAL": "3600"}
    assert load_config(env=env).console_audit_walk_interval == 3600
