"""Fixtures for the operator suite: one real ``tasklease serve`` process per module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# e2e_support lives in tests/http; under --import-mode=importlib a conftest puts it on the
# path before the test modules of its directory are imported.
_HTTP = Path(__file__).resolve().parents[1] / "http"
if str(_HTTP) not in sys.path:
    sys.path.insert(0, str(_HTTP))

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402

# A re-keyed operator signs in again once its entry, dated clock_skew past the change, is
# past (decision 142): a small skew (one host, one clock) keeps that wait short here.
OPERATORS_ENV = {**SHARED_ENV, "TASKLEASE_CLOCK_SKEW": "2"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker shared by one module's tests, on its own data directory (SQLite)."""
    running = launch_broker(tmp_path_factory.mktemp("operators-broker"), dict(OPERATORS_ENV))
    yield running
    stop_broker(running)
