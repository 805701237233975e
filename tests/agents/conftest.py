"""Fixtures for tests/agents (helpers live in agents_support, beside this file)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from agents_support import Env, make_env  # noqa: E402


@pytest.fixture
def env() -> Iterator[Env]:
    running, served = make_env(heartbeat_interval=30, heartbeat_misses=3)
    yield running
    running.http.close()
    served.stop()
