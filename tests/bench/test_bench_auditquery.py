"""`python -m bench.auditquery --quick` runs end to end (no timing assertions): it fills a
log past the lookups' lag, so both the lookups and the log's own tail are read, and times
every query."""

from tests.bench._bench import last_json


def test_the_audit_query_benchmark_runs() -> None:
    figures = last_json("bench.auditquery", "--quick", timeout=180)
    assert figures["events"] == 20_000
    assert figures["lookups_behind"] == 4_000  # the queries read the log's tail as well
    timed = {k: v for k, v in figures.items() if k not in ("events", "fill_s", "lookups_behind")}
    assert len(timed) == 10
    assert all(isinstance(v, float) and v > 0 for v in timed.values())
