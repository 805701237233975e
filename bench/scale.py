"""How cost grows with state: ``python -m bench.scale [--quick] [--keep DIR]``.

Runs the broker's main operations over SQLite databases holding 1x, 10x and 100x state
(full run: 10k/100k/1M registered agents, 100k/1M/10M audit events, 1k/10k/100k live
revocations; ``--quick``: a smoke run at 1/500 to 1/1000 of that, all in one process),
each size seeded in bulk (``bench.scaleseed``) and measured in a process of its own
(``bench.scaleops``): start-up
time, RSS, p50/p99 of each operation, and delegation trees of depth 1-5 and fan-out
1-100. Prints a table per size, the slope of each figure from 1x to 100x (what stays
flat and what grows, and why), and writes the figures as JSON and, with matplotlib (the
``bench`` extra), a PNG of latency, RSS and start-up time against state size, into
``bench/results/``. Not part of ``make bench``; the full run takes a while (seeding 10M
events is most of it).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scaleseed import seed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FACTORS = (1, 10, 100)
BASE = {"agents": 10_000, "events": 100_000, "revocations": 1_000}
QUICK_BASE = {"agents": 20, "events": 100, "revocations": 2}
FULL_RUN = {"ops": 400, "tree_reps": 5, "fanouts": [1, 10, 100]}
QUICK_RUN = {"ops": 5, "tree_reps": 1, "fanouts": [1, 3]}
OPS = ("register", "validate", "renew", "delegate", "revoke", "audit_query", "audit_proof")

# Why each figure does or does not grow with the state (what it touches per call).
WHY = {
    "register": "one point insert into agents (B-tree: log n pages, cached) and one "
    "group-committed audit append; the commit's fsync dominates",
    "validate": "signature check and O(1) dict lookups in the revocation index; no "
    "store read for ordinary scopes",
    "renew": "reads the agent's session, writes the successor's revocation pair, the "
    "session and an audit event: point writes and one commit",
    "delegate": "one point read of the delegate's agent row, two signatures, one commit",
    "revoke": "two point inserts into revocations (unique index) and one commit; the "
    "in-process index is a dict",
    "audit_query": "range of the agent lookup (tenant_id, agent_id, seq): log n to find, "
    "then the agent's 10 events; and the log's rows after the lookups (up to 4,096, read "
    "for the count and the page): that lag, not n, moves this figure",
    "audit_proof": "reads the tree row and about log16(n) tiles: O(log n), flat in practice",
    "startup": "migration check, the revocation index load (O(live revocations)), the "
    "audit head and tree row (two point reads): no scan of agents or events",
    "rss": "the revocation index (dict entries and an expiry heap) grows with live "
    "revocations; agents and events stay on disk; SQLite's page caches are bounded "
    "(64 MiB writer, small readers)",
}


def _log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sizes(base: dict[str, int]) -> list[dict[str, int]]:
    return [{k: v * f for k, v in base.items()} | {"factor": f} for f in FACTORS]


def _seeded(size: dict[str, int], keep: Path | None, scratch: Path) -> Path:
    """The database for ``size``: reused from ``keep`` when a run seeded it before."""
    name = f"scale-{size['agents']}a-{size['events']}e-{size['revocations']}r.db"
    folder = keep if keep is not None else scratch
    path = folder / name
    done = folder / (name + ".seeded")
    if keep is not None and done.exists():
        _log(f"reusing {path.name}")
        _forget_measured(path)
        return path
    for stale in folder.glob(name + "*"):
        stale.unlink()
    _log(f"seeding {size['agents']:,} agents, {size['events']:,} events, "
         f"{size['revocations']:,} revocations")  # fmt: skip
    took = seed(
        path,
        agents=size["agents"],
        events=size["events"],
        revocations=size["revocations"],
        now=time.time(),
    )
    _log(f"seeded in {sum(v for k, v in took.items() if k.endswith('_s')):.1f} s: {took}")
    done.write_text(json.dumps(took))
    return path


def _forget_measured(path: Path) -> None:
    """Drop the revocations an earlier measurement made (renewals, revokes), so that the
    index at start-up holds the seeded ones; its agents and events stay (a few thousand)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("DELETE FROM revocations WHERE target NOT LIKE 'seed%'")
        conn.commit()
    finally:
        conn.close()


def measure(
    size: dict[str, int], path: Path, run: dict[str, Any], *, in_process: bool = False
) -> dict[str, Any]:
    """One size measured by ``bench.scaleops`` in a fresh process (its RSS is its own),
    or, for the smoke run, in this one (RSS then includes the sizes before)."""
    with tempfile.TemporaryDirectory(prefix="tasklease-scale-keys-") as keys:
        spec = {**size, **run, "database": str(path), "key_dir": str(Path(keys) / "k")}
        if in_process:
            from bench.scaleops import measure as measure_here

            return measure_here(spec) | {"factor": size["factor"]}
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.scaleops", json.dumps(spec)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.scaleops failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result | {"factor": size["factor"]}


def slope(first: float, last: float, span: float) -> float:
    """Log-log slope from ``first`` to ``last`` over a ``span``-fold growth of state:
    0 is flat, 1 is linear."""
    if first <= 0 or last <= 0:
        return 0.0
    return math.log(last / first) / math.log(span)


def verdict(b: float) -> str:
    if b < 0.05:
        return "flat: O(1)"
    if b < 0.2:
        return "grows slowly (log-like)"
    return f"grows ~ n^{b:.2f}"


def _rss_per_agent(results: list[dict[str, Any]]) -> float | None:
    """RSS grown per agent from the 10x size to the 100x one (bytes), after start-up."""
    if len(results) < 3:
        return None
    mid, big = results[1], results[2]
    grown = (big["rss_started_mb"] - mid["rss_started_mb"]) * 1024 * 1024
    return grown / (big["agents"] - mid["agents"])


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = results[0], results[-1]
    span = last["agents"] / first["agents"]
    out: dict[str, Any] = {"slopes": {}}
    for op in OPS:
        if op in first["ops"] and op in last["ops"]:
            for q in ("p50_ms", "p99_ms"):
                b = slope(first["ops"][op][q], last["ops"][op][q], span)
                out["slopes"][f"{op} {q[:3]}"] = round(b, 3)
    out["slopes"]["startup"] = round(
        slope(first["startup"]["total_s"], last["startup"]["total_s"], span), 3
    )
    out["slopes"]["rss"] = round(slope(first["rss_started_mb"], last["rss_started_mb"], span), 3)
    for op in ("validate", "register"):
        lo, hi = first["ops"][op]["p99_ms"], last["ops"][op]["p99_ms"]
        out[f"{op}_p99_growth"] = round(hi / lo - 1, 3) if lo else None
    per_agent = _rss_per_agent(results)
    out["rss_bytes_per_agent_beyond_10x"] = None if per_agent is None else round(per_agent, 1)
    if per_agent is not None:
        mid, big = results[1], results[2]
        ratio = (big["agents"] - mid["agents"]) / (big["revocations"] - mid["revocations"])
        out["rss_bytes_per_revocation_beyond_10x"] = round(per_agent * ratio, 1)
    out["startup_s_at_100x"] = last["startup"]["total_s"]
    return out


def print_report(results: list[dict[str, Any]], figures: dict[str, Any]) -> None:
    print("How cost grows with state (in process, SQLite; ms per call, one at a time)")
    header = f"{'size':<34}" + "".join(f"{op:>17}" for op in OPS)
    print(header)
    print(f"{'':<34}" + "".join(f"{'p50 / p99':>17}" for _ in OPS))
    for r in results:
        label = f"{r['agents']:,} ag / {r['events']:,} ev / {r['revocations']:,} rv"
        cells = ""
        for op in OPS:
            s = r["ops"].get(op)
            cells += f"{s['p50_ms']:>8.2f} /{s['p99_ms']:>6.1f}" if s else f"{'-':>17}"
        print(f"{label:<34}{cells}")
    print()
    print(f"{'size':<34}{'startup s':>11}{'index':>9}{'RSS start MB':>14}{'RSS after MB':>14}")
    for r in results:
        label = f"{r['agents']:,} ag / {r['events']:,} ev / {r['revocations']:,} rv"
        print(
            f"{label:<34}{r['startup']['total_s']:>11.3f}{r['revocation_index_at_start']:>9,}"
            f"{r['rss_started_mb']:>14.1f}{r['rss_after_ops_mb']:>14.1f}"
        )
    print()
    print("delegation trees (at the largest size): p50 / p99 ms")
    trees = results[-1]["trees"]
    for d, row in trees["depth"].items():
        print(
            f"  depth {d}: delegate {row['delegate']['p50_ms']:.2f} / "
            f"{row['delegate']['p99_ms']:.2f}, validate {row['validate']['p50_ms']:.3f} / "
            f"{row['validate']['p99_ms']:.3f}"
        )
    for f, row in trees["fanout"].items():
        print(
            f"  fan-out {f}: revoke the root {row['revoke_root']['p50_ms']:.2f} / "
            f"{row['revoke_root']['p99_ms']:.2f}, each child refused "
            f"{row['child_refused']['p50_ms']:.3f} / {row['child_refused']['p99_ms']:.3f}"
        )
    print()
    print("slope from 1x to 100x (log-log: 0 flat, 1 linear) and why")
    for name, b in figures["slopes"].items():
        op = name.split()[0]
        print(f"  {name:<18}{b:>7.3f}  {verdict(b):<26}{WHY.get(op, '')}")
    print()
    print("targets")
    for op in ("validate", "register"):
        g = figures[f"{op}_p99_growth"]
        shown = "-" if g is None else f"{g:+.0%}"
        print(f"  {op} p99, 1x -> 100x agents: {shown} (target within 20 %)")
    per = figures["rss_bytes_per_agent_beyond_10x"]
    print(f"  RSS per agent beyond the 10x size: {per} bytes (target < 1 KB)")
    if "rss_bytes_per_revocation_beyond_10x" in figures:
        per_rev = figures["rss_bytes_per_revocation_beyond_10x"]
        print(f"  (the same growth per live revocation: {per_rev} bytes)")
    print(f"  start-up at the largest size: {figures['startup_s_at_100x']} s (target < 10 s)")


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    """Latency, RSS and start-up against state size as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    agents = [r["agents"] for r in results]
    fig, (lat, mem, start) = plt.subplots(1, 3, figsize=(15, 4.6))
    for op in OPS:
        if all(op in r["ops"] for r in results):
            line = lat.plot(agents, [r["ops"][op]["p99_ms"] for r in results], "o-", label=op)
            colour = line[0].get_color()
            lat.plot(agents, [r["ops"][op]["p50_ms"] for r in results], "x:", color=colour)
    lat.set(xscale="log", yscale="log", xlabel="registered agents (events 10x, revocations /10)",
            ylabel="ms per call", title="latency: p99 (solid), p50 (dotted)")  # fmt: skip
    lat.legend(fontsize=7)
    mem.plot(agents, [r["rss_started_mb"] for r in results], "o-", label="after start-up")
    mem.plot(agents, [r["rss_after_ops_mb"] for r in results], "s--", label="after the operations")
    mem.set(xscale="log", xlabel="registered agents", ylabel="RSS MB", title="broker process RSS")
    mem.set_ylim(bottom=0)
    mem.legend(fontsize=7)
    start.plot(agents, [r["startup"]["total_s"] for r in results], "o-", label="start-up")
    start.axhline(10, color="grey", linestyle=":", label="target 10 s")
    start.set(xscale="log", xlabel="registered agents", ylabel="seconds", title="start-up")
    start.set_ylim(bottom=0)
    start.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--keep", type=Path, help="keep seeded databases here and reuse them")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNG go")
    parser.add_argument("--name", help="file name stem (default scale-<timestamp>)")
    parser.add_argument(
        "--report", type=Path, help="print the report and plot again from a run's JSON"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text())["sizes"]
        print_report(results, summary(results))
        png = args.report.with_suffix(".png")
        print(f"plot: {png}" if plot(results, png) else "plot: skipped (no matplotlib)")
        return
    base, run = (QUICK_BASE, QUICK_RUN) if args.quick else (BASE, FULL_RUN)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tasklease-scale-"))
    results = []
    try:
        for size in _sizes(base):
            path = _seeded(size, args.keep, scratch)
            _log(f"measuring at {size['factor']}x")
            results.append(measure(size, path, run, in_process=args.quick))
            if args.keep is None:
                for leftover in scratch.glob(path.name + "*"):
                    leftover.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = summary(results)
    print_report(results, figures)
    stem = args.name or "scale-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"quick": args.quick, "sizes": results, "summary": figures, "why": WHY}
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=1))
    png = args.out / f"{stem}.png"
    if plot(results, png):
        print(f"plot: {png}")
    else:
        print("plot: skipped (matplotlib not installed: pip install 'tasklease[bench]')")


if __name__ == "__main__":
    main()
