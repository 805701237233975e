"""Structured grants' tests: the end-to-end suite's helpers (``e2e_support``, tests/http;
``verify_support``, tests/verify) on the path, and ``serve`` for resource servers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

for _folder in ("http", "verify"):
    _path = str(Path(__file__).resolve().parents[1] / _folder)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from verify_support import Served, serve_app  # noqa: E402


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Run ASGI apps under uvicorn in threads for one test (stopped at its end)."""
    running: list[Served] = []

    def start(app: Any, port: int | None = None, **options: Any) -> Served:
        served = serve_app(app, port, **options)
        running.append(served)
        return served

    yield start
    for served in running:
        served.stop()
