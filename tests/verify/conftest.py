"""Fixtures for the verifier suite: a real broker subprocess and real uvicorn servers on
loopback, so every test crosses real HTTP."""

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

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402
from verify_support import AUDIENCES, Served, serve_app  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One broker for the module: tokens that name no resource are for svc-a (the first
    configured audience); the others are accepted at the broker."""
    env = {**SHARED_ENV, "TASKLEASE_AUDIENCE": AUDIENCES}
    running = launch_broker(tmp_path_factory.mktemp("verify-broker"), env)
    yield running
    stop_broker(running)


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker this test may stop."""
    env = {**SHARED_ENV, "TASKLEASE_AUDIENCE": "svc-a"}
    running = launch_broker(tmp_path_factory.mktemp("own-broker"), env)
    yield running
    with contextlib.suppress(Exception):
        stop_broker(running)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(app: Any, port: int | None = None, **options: Any) -> Served:
        served = serve_app(app, port, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
