"""The overview's small charts: rates sampled from the broker's own metrics, drawn as
inline SVG on the server (no script, nothing the strict CSP would have to allow)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from tasklease.core.metrics import Metrics

__all__ = ["Chart", "MetricSampler", "sparkline"]

_SERIES = {
    "issued": ("tasklease_tokens_issued",),
    "rejected": (
        "tasklease_validation_failures",
        "tasklease_scope_rejections",
        "tasklease_attestation_refusals",
    ),
    "revoked": ("tasklease_tokens_revoked",),
}


@dataclass(frozen=True, slots=True)
class Chart:
    """One series: its name, the latest rate (per minute) and the rates to draw."""

    name: str
    latest: float
    rates: tuple[float, ...]


def _totals(registry: CollectorRegistry) -> tuple[dict[str, float], float | None]:
    """Counter totals per series, and the p99 of revocation propagation (an upper
    bucket bound, seconds; None before the first observation)."""
    totals = dict.fromkeys(_SERIES, 0.0)
    buckets: list[tuple[float, float]] = []
    for family in registry.collect():
        for sample in family.samples:
            for series, names in _SERIES.items():
                if sample.name in (f"{n}_total" for n in names):
                    totals[series] += sample.value
            if sample.name == "tasklease_revocation_propagation_seconds_bucket":
                bound = sample.labels.get("le", "+Inf")
                buckets.append((float("inf") if bound == "+Inf" else float(bound), sample.value))
    buckets.sort()
    count = buckets[-1][1] if buckets else 0.0
    p99 = None
    if count > 0:
        p99 = next(bound for bound, seen in buckets if seen >= 0.99 * count)
    return totals, p99


class MetricSampler:
    """Samples of the broker's counters, taken whenever the overview is drawn (at most
    one every ``every`` seconds), ``keep`` of them: enough for a few minutes of rates.

    From what a scrape reads (``Metrics.scraped``): with several workers, their sum, so
    that the charts agree with the metrics whichever worker draws them."""

    def __init__(self, metrics: Metrics, *, every: float = 2.0, keep: int = 60) -> None:
        self._metrics = metrics
        self._every = every
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def charts(self) -> tuple[list[Chart], float | None]:
        """A chart per series, in events per minute between samples, and the p99 of
        revocation propagation in seconds."""
        totals, p99 = _totals(self._metrics.scraped)
        now = time.monotonic()
        with self._lock:
            if not self._samples or now - self._samples[-1][0] >= self._every:
                self._samples.append((now, totals))
            samples = list(self._samples)
        charts = []
        for series in _SERIES:
            rates = tuple(
                max(0.0, (b[1][series] - a[1][series]) * 60.0 / max(b[0] - a[0], 1e-6))
                for a, b in itertools.pairwise(samples)
            )
            charts.append(Chart(series, rates[-1] if rates else 0.0, rates))
        return charts, p99


def sparkline(rates: tuple[float, ...], *, width: int = 160, height: int = 36) -> str:
    """An SVG polyline of ``rates`` (numbers only: nothing from a request reaches it)."""
    if len(rates) < 2:
        points = f"0,{height - 1} {width},{height - 1}"
    else:
        top = max(*rates, 1e-09)
        step = width / (len(rates) - 1)
        points = " ".join(
            f"{i * step:.1f},{height - 1 - (r / top) * (height - 4):.1f}"
            for i, r in enumerate(rates)
        )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-hidden="true" focusable="false">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{points}"/>'
        "</svg>"
    )
