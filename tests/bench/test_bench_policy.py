"""`python -m bench.policy` runs end to end (no timing assertions): every mode registers,
and the growth over `off` is reported for the policy modes."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_policy_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    ran = subprocess.run(
        [sys.executable, "-m", "bench.policy", "--store", "memory", "--rounds", "1",
         "--per-round", "3", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(out.read_text())
    modes = {"off", "default", "operator"}
    assert {k for k in figures if k != "store"} == modes | {f"{m}+grants" for m in modes}
    for mode in ("default", "operator", "default+grants", "operator+grants"):
        assert figures[mode]["n"] == 3 and "p99_growth_ms" in figures[mode]
    assert "p99_growth_ms" not in figures["off"]
