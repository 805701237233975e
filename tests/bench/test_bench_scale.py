"""`python -m bench.scale --quick` runs end to end (no timing assertions): every size is
seeded and measured, the slopes and targets are printed, and the JSON (and the plot, with
matplotlib installed) are written."""

import importlib.util
import json
from pathlib import Path

from tests.bench._bench import run_module

OPS = {"register", "validate", "renew", "delegate", "revoke", "audit_query", "audit_proof"}


def test_the_scaling_benchmark_runs(tmp_path: Path) -> None:
    args = ["--quick", "--out", str(tmp_path), "--name", "s"]
    ran = run_module("bench.scale", *args, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    document = json.loads((tmp_path / "s.json").read_text())
    sizes = document["sizes"]
    assert [s["agents"] for s in sizes] == [20, 200, 2000]
    for size in sizes:
        assert set(size["ops"]) == OPS
        assert all(row["n"] > 0 for row in size["ops"].values())
        # The seeded revocations are all in the index the broker loaded at start-up.
        assert size["revocation_index_at_start"] == size["revocations"]
        assert size["startup"]["total_s"] > 0
        assert set(size["trees"]["depth"]) == {"1", "2", "3", "4", "5"}
        for row in size["trees"]["fanout"].values():
            assert row["child_refused"]["n"] > 0
    assert "register p99" in document["summary"]["slopes"]
    assert "targets" in ran.stdout and "slope from 1x to 100x" in ran.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
