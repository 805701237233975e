"""`python -m bench.policy` runs end to end (no timing assertions): every mode registers,
and the growth over `off` is reported for the policy modes."""

import json
from pathlib import Path

from tests.bench._bench import run_module


def test_the_policy_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    args = ["--store", "memory", "--rounds", "1", "--per-round", "3", "--json", str(out)]
    ran = run_module("bench.policy", *args, timeout=120)
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(out.read_text())
    modes = {"off", "default", "operator"}
    assert {k for k in figures if k != "store"} == modes | {f"{m}+grants" for m in modes}
    for mode in ("default", "operator", "default+grants", "operator+grants"):
        assert figures[mode]["n"] == 3 and "p99_growth_ms" in figures[mode]
    assert "p99_growth_ms" not in figures["off"]
