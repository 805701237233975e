"""`python -m bench.pgcommit --quick` runs end to end on a throwaway PostgreSQL cluster (no
timing assertions): every kind of commit is measured and every notification arrives."""

import pytest
from tests.bench._bench import last_json


@pytest.mark.slow
def test_the_commit_rate_benchmark_runs() -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    figures = last_json("bench.pgcommit", "--quick", timeout=180)
    assert figures["settings"]["fsync"] == "on"
    assert figures["settings"]["synchronous_commit"] == "on"
    for kind in ("single", "batched", "chained"):
        assert figures[kind] and all(row["commits_per_s"] > 0 for row in figures[kind])
    assert all(row["rows"] > 0 for row in figures["batched"] + figures["chained"])
    assert figures["notify"] and all(row["missing"] == 0 for row in figures["notify"])
