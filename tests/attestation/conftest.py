"""Attestation tests: helpers beside this file (``issuers``, ``core_support``,
``http_support``) and the end-to-end suite's (``e2e_support``, tests/http) on the path,
and ``start_broker`` for tests that run real ``tasklease serve`` processes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_HTTP = str(Path(__file__).resolve().parents[1] / "http")
if _HTTP not in sys.path:
    sys.path.insert(0, _HTTP)

from e2e_support import RunningBroker, launch_broker, stop_broker  # noqa: E402


@pytest.fixture
def start_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningBroker]]:
    """Start ``tasklease serve`` processes owned by one test (stopped at its end)."""
    started: list[RunningBroker] = []

    def start(
        data_dir: Path | None = None, env: dict[str, str] | None = None, **kwargs: Any
    ) -> RunningBroker:
        running = launch_broker(data_dir or tmp_path_factory.mktemp("broker"), env, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        with contextlib.suppress(Exception):
            stop_broker(running)
