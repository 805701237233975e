"""The zero-trust suite imports its helpers from security_support, beside this; a module
that attacks a real broker process takes ``broker``, one of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_HTTP = str(Path(__file__).resolve().parents[1] / "http")
if _HTTP not in sys.path:
    sys.path.insert(0, _HTTP)

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker process on SQLite for the module, over loopback HTTP."""
    running = launch_broker(tmp_path_factory.mktemp("attacked-broker"), SHARED_ENV)
    yield running
    stop_broker(running)
