"""Fixtures for the threat suite: one real ``tasklease serve`` process per module.

A module may set ``BROKER_ENV`` (settings for its broker, as ``TASKLEASE_*`` variables)
when its attack needs a tighter limit than the defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers live beside this file (threat_support) and in tests/http (e2e_support). Under
# --import-mode=importlib pytest puts neither directory on sys.path, so do it here: a
# conftest is imported before the test modules of its directory.
for _directory in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "http"):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402


@pytest.fixture(scope="module")
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBroker]:
    """A broker shared by one module's tests, on its own data directory (SQLite)."""
    env = {**SHARED_ENV, **getattr(request.module, "BROKER_ENV", {})}
    running = launch_broker(tmp_path_factory.mktemp("threat-broker"), env)
    yield running
    stop_broker(running)
