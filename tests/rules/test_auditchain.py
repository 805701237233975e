# Would fail if: a verifier recomputing an event's hash accepted a prev_hash or event hash
# that is not 64 lowercase hex characters, or an event with a missing or mistyped field
# (a JSON null, a bool for a number, a number for a text), whose bytes no broker wrote.
"""The audit event formats as a verifier reads them (``rules.auditchain``): what it
refuses to hash, not only what it hashes."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.rules.auditchain import (
    GENESIS_HASH,
    V2_FIELDS,
    AuditFormatError,
    event_hash,
    event_leaf,
)


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {name: "" for name in V2_FIELDS}
    event.update(
        seq=1,
        timestamp="2027-01-15T08:00:00Z",
        event_type="agent_registered",
        outcome="success",
        deleg_depth=0,
        tenant="default",
        prev_hash=GENESIS_HASH,
        version=2,
    )
    event.update(changes)
    return event


def test_a_well_formed_event_hashes() -> None:
    digest = event_hash(_event())
    assert len(digest) == 64 and digest == digest.lower()
    assert event_hash(_event(prev_hash="ab" * 32)) != digest


@pytest.mark.parametrize(
    "prev_hash",
    ["AB" * 32, "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, None, 0],
)
def test_a_prev_hash_that_is_not_64_lowercase_hex_is_refused(prev_hash: object) -> None:
    with pytest.raises(AuditFormatError, match="prev_hash"):
        event_hash(_event(prev_hash=prev_hash))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", "1"),
        ("seq", True),
        ("seq", None),
        ("deleg_depth", False),
        ("deleg_depth", 0.0),
        ("detail", None),
        ("detail", 0),
        ("tenant", None),
        ("chain_root", []),
    ],
)
def test_a_mistyped_field_is_refused(field: str, value: object) -> None:
    with pytest.raises(AuditFormatError, match=field):
        event_hash(_event(**{field: value}))


@pytest.mark.parametrize("field", ["request_id", "tenant", "seq"])
def test_a_missing_field_is_refused(field: str) -> None:
    event = _event()
    del event[field]
    with pytest.raises(AuditFormatError, match=field):
        event_hash(event)


@pytest.mark.parametrize("digest", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32])
def test_an_event_hash_that_is_not_64_lowercase_hex_has_no_leaf(digest: str) -> None:
    with pytest.raises(AuditFormatError):
        event_leaf(digest)
