"""Percentiles, the one table ``make bench`` prints, and its JSON document."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(latencies: list[float], elapsed: float) -> dict[str, Any]:
    """Throughput and latency figures (milliseconds) of one measured run."""
    values = sorted(latencies)
    n = len(values)
    return {
        "n": n,
        "elapsed_s": round(elapsed, 4),
        "rps": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(values, 50) * 1e3, 3),
        "p95_ms": round(percentile(values, 95) * 1e3, 3),
        "p99_ms": round(percentile(values, 99) * 1e3, 3),
        "max_ms": round(values[-1] * 1e3, 3) if values else 0.0,
        "mean_ms": round(sum(values) / n * 1e3, 3) if n else 0.0,
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per operation: throughput, latency percentiles, floor and ratio."""
    header = ("operation", "ops/s", "p50 ms", "p95 ms", "p99 ms", "n", "err", "floor/s", "ratio")
    lines: list[tuple[str, ...]] = []
    tails: list[str] = []
    for row in rows:
        if row.get("skipped"):
            cells = (
                row["operation"],
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                _num(row.get("floor_rps")),
                "-",
            )
            tails.append("skipped: " + row["skipped"])
        else:
            cells = (
                row["operation"],
                _num(row.get("rps")),
                _num(row.get("p50_ms"), 2),
                _num(row.get("p95_ms"), 2),
                _num(row.get("p99_ms"), 2),
                _num(row.get("n")),
                _num(row.get("errors")),
                _num(row.get("floor_rps")),
                _num(row.get("ratio"), 2),
            )
            tail = "; ".join(x for x in (row.get("note", ""), row.get("target", "")) if x)
            tails.append(tail)
        lines.append(cells)
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: tuple[str, ...], tail: str) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{widths[i + 1]}}" for i, c in enumerate(cells[1:])]
        return "  ".join([first, *rest, tail]).rstrip()

    out = [fmt(header, "note / target")]
    out.append("-" * len(out[0]))
    out += [fmt(cells, tail) for cells, tail in zip(lines, tails, strict=True)]
    return "\n".join(out)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
