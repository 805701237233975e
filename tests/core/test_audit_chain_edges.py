# Would fail if: the chain walk accepted a log whose first event is not seq 1 (its head cut
# off), whose first event does not start from the genesis hash (a head cut off and the
# new first event re-chained), whose sequence numbers repeat or jump ahead, or whose
# format goes back from v2 to v1 (a v2 event downgraded so its lineage is not hashed).
"""The edges of ``verify_chain``: the first event, and each link, as an attacker who can
rewrite rows (and recompute every hash they like) would shape them."""

from __future__ import annotations

import dataclasses

from tasklease.core.auditformat import GENESIS_HASH, AuditEntry, event_hash, verify_chain
from tasklease.core.records import AuditEvent


def _event(prev: str, seq: int, version: int = 2) -> AuditEvent:
    entry = AuditEntry("agent_registered", detail=f"event {seq}")
    stamp = "2027-01-15T08:00:00Z"
    digest = event_hash(prev, seq, stamp, entry, "default", version)
    return AuditEvent(
        seq=seq,
        timestamp=stamp,
        event_type=entry.event_type,
        agent_id="",
        task_id="",
        orch_id="",
        detail=entry.detail,
        resource="",
        outcome="success",
        deleg_depth=0,
        deleg_chain_hash="",
        request_id="",
        prev_hash=prev,
        hash=digest,
        version=version,
    )


def _chain(
    seqs: list[int], *, start: str = GENESIS_HASH, versions: list[int] | None = None
) -> list[AuditEvent]:
    """Events with these sequence numbers (and formats), each correctly hashed over the
    one before: every link but the one under test is self-consistent."""
    prev, events = start, []
    for i, seq in enumerate(seqs):
        event = _event(prev, seq, versions[i] if versions else 2)
        events.append(event)
        prev = event.hash
    return events


def test_a_well_formed_chain_verifies() -> None:
    events = _chain([1, 2, 3], versions=[1, 1, 2])
    report = verify_chain(events)
    assert report.ok and report.checked == 3 and report.head_hash == events[-1].hash


def test_a_log_whose_head_was_cut_off_is_broken() -> None:
    """Events 1 and 2 deleted, 3 kept as it was: the first event left is not seq 1."""
    events = _chain([1, 2, 3, 4])[2:]
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == events[0].id and report.checked == 0
    assert "expected 1, found 3" in report.reason


def test_a_first_event_not_chained_from_genesis_is_broken() -> None:
    """A rewritten head, renumbered from 1 and rehashed over a made-up predecessor: each
    event's own hash is right and each later link holds, only the start is wrong."""
    events = _chain([1, 2, 3], start="ab" * 32)
    assert all(e.hash == event_hash(e.prev_hash, e.seq, e.timestamp, e) for e in events)
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == events[0].id and report.checked == 0
    assert "prev_hash" in report.reason


def test_a_repeated_sequence_number_is_broken() -> None:
    """Seq 2 twice, the second hashed over the first: a link whose hashes hold."""
    first, second = _chain([1, 2])
    again = _event(second.hash, 2)
    report = verify_chain([first, second, again])
    assert not report.ok and report.broken_at == again.id and report.checked == 2
    assert "gap" in report.reason


def test_a_sequence_number_that_jumps_ahead_is_broken() -> None:
    events = _chain([1, 2, 4])
    report = verify_chain(events)
    assert not report.ok and report.broken_at == events[2].id and report.checked == 2
    assert "expected 3, found 4" in report.reason


def test_a_format_that_goes_back_is_broken() -> None:
    """A v1 event after a v2 one, correctly hashed in v1: its lineage and tenant would no
    longer be covered by its hash."""
    events = _chain([1, 2, 3], versions=[1, 2, 1])
    assert verify_chain(events[:2]).ok
    report = verify_chain(events)
    assert not report.ok and report.broken_at == events[2].id and report.checked == 2
    assert "format v1 after format v2" in report.reason
    # The same event in v2 continues the chain.
    fixed = dataclasses.replace(events[2], version=2)
    fixed = dataclasses.replace(fixed, hash=event_hash(fixed.prev_hash, 3, fixed.timestamp, fixed))
    assert verify_chain([*events[:2], fixed]).ok
