"""`python -m bench.inproc offline_chain` runs end to end (no timing assertions): it
derives, verifies a 5-hop chain by the rule and at a resource server, and the report's
rows carry the figures and their ratios."""

from bench.offline_chain import chain_rows
from tests.bench._bench import last_json


def test_the_offline_chain_benchmark_runs() -> None:
    result = last_json("bench.inproc", "offline_chain", '{"n": 5, "rounds": 1}', timeout=120)
    assert result["hops"] == 5 and result["chain_bytes"] <= 4096
    for name in ("derive_us", "token_verify_us", "chain_verify_us", "rs_chain_dpop_us"):
        assert result[name] > 0
    rows = chain_rows(result)
    assert [row["key"] for row in rows] == ["chain_derive", "chain_verify"]
