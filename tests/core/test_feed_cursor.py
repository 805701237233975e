"""The revocation feed's anchored cursor: ``<seq>.<fingerprint>``, or a bare ``seq`` from a
reader that came before it (decision 139)."""

from __future__ import annotations

import pytest

from tasklease.core.errors import InvalidRequest
from tasklease.core.feedcursor import FeedPage, fingerprint, format_cursor, parse_cursor
from tasklease.core.records import RevocationRecord


def test_a_cursor_round_trips_and_a_bare_seq_is_still_taken() -> None:
    entry = RevocationRecord("agent", "spiffe://d/agent/o/t/i", 100, 2e9, 7)
    anchor = fingerprint(entry)
    assert len(anchor) == 16
    assert parse_cursor(format_cursor(7, anchor)) == (7, anchor)
    assert parse_cursor("7") == (7, None)
    assert parse_cursor(None) == parse_cursor("") == (None, None)
    assert FeedPage([entry], 7, anchor).next_cursor == f"7.{anchor}"
    assert FeedPage([], 0, "").next_cursor == "0"


def test_the_fingerprint_tells_an_entry_numbered_again_from_the_one_read() -> None:
    read = RevocationRecord("token", "jti-10", 100, 2e9, 10)
    assert fingerprint(read) == fingerprint(RevocationRecord("token", "jti-10", 100, 3e9, 11))
    for other in (
        RevocationRecord("agent", "jti-10", 100, 2e9, 10),
        RevocationRecord("token", "jti-11", 100, 2e9, 10),
        RevocationRecord("token", "jti-10", 101, 2e9, 10),
    ):
        assert fingerprint(other) != fingerprint(read)


@pytest.mark.parametrize(
    "value",
    ["-1", "x", "1.", "1.abc", "1.0123456789ABCDEF", "1.0123456789abcdeg", "9" * 20, "²", " 1"],
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_cursor(value)
