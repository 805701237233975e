"""The queue of offline reports and the per-minute use counts, without a network: bounded,
oldest first, one entry per key, nothing lost until settled, a minute handed out once."""

from __future__ import annotations

import pytest

from tasklease.rules.attenuation import ChainError
from tasklease.rules.offlinereports import (
    PendingReport,
    ReportQueue,
    UseCounter,
    chain_digest,
    derivation_report,
    outcome_settles,
    request_body,
)


def _report(key: str, kind: str = "derivation") -> PendingReport:
    return PendingReport(kind, key, {"chain": f"tla1~{key}"})


def test_the_queue_keeps_order_until_settled_and_one_entry_per_key() -> None:
    queue = ReportQueue(limit=3)
    for key in ("a", "b", "a", "c"):
        queue.add(_report(key))
    assert [r.key for r in queue.batch(2)] == ["a", "b"]
    assert len(queue) == 3  # taking a batch settles nothing
    queue.settle(["a"])
    assert [r.key for r in queue.items()] == ["b", "c"]


def test_a_full_queue_drops_the_oldest_and_says_so() -> None:
    queue = ReportQueue(limit=2)
    assert queue.add(_report("a")) == [] and queue.add(_report("b")) == []
    dropped = queue.add(_report("c"))
    assert [r.key for r in dropped] == ["a"] and queue.dropped == 1
    assert [r.key for r in queue.items()] == ["b", "c"]
    with pytest.raises(ValueError):
        ReportQueue(limit=0)


def test_uses_are_counted_per_chain_and_minute_and_handed_out_once_over() -> None:
    counter = UseCounter()
    for at in (120.5, 130, 179):
        counter.count("tla1~x", at)
    counter.count("tla1~x", 181)  # the next minute
    assert counter.closed(179) == []  # the minute 120-179 is not over yet
    (first,) = counter.closed(180)
    assert first.key == f"u:{chain_digest('tla1~x')}:120"
    assert first.body == {"chain": "tla1~x", "occurred_at": 120, "count": 3}
    assert counter.closed(180) == []  # handed out once
    (last,) = counter.closed(181, everything=True)
    assert last.body["count"] == 1 and last.body["occurred_at"] == 181


def test_a_full_counter_counts_what_it_could_not_keep() -> None:
    counter = UseCounter(limit=1)
    counter.count("tla1~x", 0)
    counter.count("tla1~y", 0)
    counter.count("tla1~x", 1)  # an open count still counts
    assert counter.dropped == 1
    assert [r.body["count"] for r in counter.closed(60)] == [2]


def test_what_settles_a_batch_and_what_is_sent() -> None:
    assert [s for s in (200, 400, 401, 403, 413, 429, 500, 503) if outcome_settles(s)] == [
        200,
        400,
        403,
        413,
    ]
    body = request_body([_report("a"), _report("u", "use"), _report("b")])
    assert [d["chain"] for d in body["derivations"]] == ["tla1~a", "tla1~b"]
    assert [u["chain"] for u in body["uses"]] == ["tla1~u"]


def test_a_spooled_line_reads_back_and_a_torn_one_does_not() -> None:
    report = _report("a")
    assert PendingReport.from_json(report.to_json()) == report
    for torn in (report.to_json()[:-3], "[]", '{"kind":"other","key":"k","body":{"chain":"x"}}'):
        with pytest.raises(ValueError):
            PendingReport.from_json(torn)
    with pytest.raises(ChainError):
        derivation_report("eyJhbGciOiJFZERTQSJ9.e30.sig")


def test_chains_whose_leaves_share_a_jti_are_counted_apart() -> None:
    """A leaf's ``jti`` is its deriver's choice: two chains may share one. Each is counted
    and reported as itself, never credited with the other's uses."""
    counter = UseCounter()
    counter.count("tla1~bob.leaf-7", 0)
    for at in range(5):
        counter.count("tla1~eve.leaf-7", at)
    reports = {r.body["chain"]: r for r in counter.closed(60)}
    assert {c: r.body["count"] for c, r in reports.items()} == {
        "tla1~bob.leaf-7": 1,
        "tla1~eve.leaf-7": 5,
    }
    assert len({r.key for r in reports.values()}) == 2
