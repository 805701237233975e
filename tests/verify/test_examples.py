"""The examples run as users would run them: each a process, against a live broker."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, free_port
from verify_support import MCP_PORT, MCP_RESOURCE, app_credentials

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextlib.contextmanager
def running(script: str, env: dict[str, str], port: int, path: str) -> Iterator[str]:
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"example-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script)],
            env={**os.environ, **env, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{script} exited: {log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + path, timeout=1)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{script} did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_agent_flow_against_the_protected_service_and_the_mcp_server(
    broker: RunningBroker,
) -> None:
    creds = app_credentials(broker)
    common = {
        "TASKLEASE_BROKER_URL": broker.url,
        "TASKLEASE_CLIENT_ID": creds.client_id,
        "TASKLEASE_CLIENT_SECRET": creds.client_secret,
    }
    service_env = {**common, "SERVICE_AUDIENCE": "svc-a"}
    mcp_env = {**common, "MCP_RESOURCE_URL": MCP_RESOURCE}
    with (
        running("protected_service.py", service_env, free_port(), "/health") as service,
        running("mcp_server.py", mcp_env, MCP_PORT, "/mcp") as _mcp,
    ):
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "agent_flow.py")],
            env={
                **os.environ,
                "TASKLEASE_BROKER_URL": broker.url,
                "TASKLEASE_ADMIN_SECRET": ADMIN_SECRET,
                "SERVICE_URL": service,
                "MCP_URL": MCP_RESOURCE,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    names = [s["step"] for s in steps]
    assert names == [
        "registered",
        "called service",
        "write refused",
        "called MCP tool",
        "sub-agent called service",
        "released delegated token refused",
        "released",
    ]
    assert "printer on fire" in steps[3]["result"]
    assert steps[4]["body"]["delegation_depth"] == 1
