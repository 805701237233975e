"""The conformance suite runs against a real ``tasklease serve`` over loopback HTTP."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _dir in (Path(__file__).resolve().parent, _TESTS / "http", _TESTS / "verify"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from conformance_support import BROKER_ENV, Kit  # noqa: E402
from e2e_support import RunningBroker, launch_broker, stop_broker  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("conformance-broker"), BROKER_ENV)
    yield running
    stop_broker(running)


@pytest.fixture(scope="session")
def kit(broker: RunningBroker) -> Kit:
    return Kit(broker)


@pytest.fixture
def start_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningBroker]]:
    """Brokers of one test's own (other settings, several workers)."""
    started: list[RunningBroker] = []

    def start(env: dict[str, str] | None = None, **kwargs: Any) -> RunningBroker:
        running = launch_broker(
            tmp_path_factory.mktemp("conformance-own"), {**BROKER_ENV, **(env or {})}, **kwargs
        )
        started.append(running)
        return running

    yield start
    for running in started:
        with contextlib.suppress(Exception):
            stop_broker(running)
