"""``tasklease serve`` listens on its port before it starts anything else that listens:
the metrics listener never takes the broker's port (one process; with ``--workers`` the
supervisor holds the port bound, which an automatic port, ``:0``, never takes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import _clean_env, free_port, init_data_dir

pytestmark = pytest.mark.slow


def _serve(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def test_the_metrics_listener_cannot_take_the_brokers_port(tmp_path: Path) -> None:
    # The metrics listener told to use the broker's own port: the broker's socket is bound
    # first, so it is the metrics listener that is refused, by name.
    data_dir = tmp_path / "data"
    port = free_port()
    env = _clean_env(data_dir, {"TASKLEASE_METRICS_LISTEN": f"127.0.0.1:{port}"}, with_secret=True)
    data_dir.mkdir(mode=0o700)
    init_data_dir(data_dir, env)
    proc = _serve(data_dir, env, "--port", str(port))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port} for metrics (metrics_listen)" in output, output
