"""End-to-end fixtures: a real ``tasklease serve`` subprocess driven over loopback HTTP.

``broker`` is one process shared by the whole session (generous rate limits so tests do
not starve each other); ``start_broker`` starts extra processes owned by one test, for
their own limits or a restart.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The test modules import their helpers from e2e_support, beside this file. Under
# --import-mode=importlib pytest does not put test directories on sys.path, so do it here
# (conftest.py is always imported before the test modules of its directory).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One broker shared by the session."""
    running = launch_broker(tmp_path_factory.mktemp("shared-broker"), SHARED_ENV)
    yield running
    stop_broker(running)


@pytest.fixture
def start_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningBroker]]:
    """Start brokers owned by one test (stopped at its end, if still running)."""
    started: list[RunningBroker] = []

    def start(
        data_dir: Path | None = None, env: dict[str, str] | None = None, **kwargs: Any
    ) -> RunningBroker:
        directory = data_dir or tmp_path_factory.mktemp("broker")
        running = launch_broker(directory, env, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        with contextlib.suppress(Exception):
            stop_broker(running)
