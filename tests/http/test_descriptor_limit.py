"""``tasklease serve`` raises its soft descriptor limit so that ``http_max_connections``
connections and its own files fit, and says so when the hard limit is too low for them."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import _clean_env, free_port, init_data_dir, wait_answering

from tasklease.server import _OWN_DESCRIPTORS

pytestmark = pytest.mark.slow


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no descriptor limit in /proc")


def _serving(tmp_path: Path, soft: int, hard: int, connections: int) -> tuple[int, str]:
    """Start serve under the given limits; its soft limit once it answers, and its log."""
    data = tmp_path / "data"
    env = _clean_env(data, {"TASKLEASE_HTTP_MAX_CONNECTIONS": str(connections)}, with_secret=True)
    init_data_dir(data, env)
    port = free_port()

    def lowered() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=lowered,
        )  # fmt: skip
    try:
        wait_answering(f"http://127.0.0.1:{port}/v1/health", proc=proc, log=log)
        return _soft_limit(proc.pid), log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_soft_limit_is_raised_to_fit_the_connections(tmp_path: Path) -> None:
    # Would fail if: a broker capped at 1000 connections ran under a soft limit of 256
    # descriptors, so the system refused connections (and database files) long before.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1000 + _OWN_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard descriptor limit here is {hard}")
    soft, log = _serving(tmp_path, 256, hard, 1000)
    assert soft == need
    assert "descriptor limit" not in log


def test_a_hard_limit_too_low_is_reported(tmp_path: Path) -> None:
    soft, log = _serving(tmp_path, 200, 400, 1000)
    assert soft == 400  # raised as far as it goes
    assert "http_max_connections is 1000, but the descriptor limit (400)" in log


def test_a_limit_the_system_refuses_to_raise_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Where the hard limit is unlimited, the system may still refuse (a per-process
    # maximum): serve goes on and says so instead of failing with a traceback.
    from tasklease import server

    def refuse(_which: int, _limits: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    server._raise_descriptor_limit(1000)
    assert "http_max_connections is 1000, but the descriptor limit (256)" in caplog.text
