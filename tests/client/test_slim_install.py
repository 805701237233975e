"""``pip install tasklease`` is the agent SDK and the verifier, and nothing of the server.

A wheel built from this tree goes into a fresh virtual environment with its dependencies
only, pinned to httpx 0.28 (the SDK works with httpx 0.28 and later, and with httpx2:
``test_sdk_parity``). The environment must stay small (at most 15 packages and 50 MB of
installed files besides pip), import ``tasklease.client`` and ``tasklease.verify``, lack
the server's dependencies, and register a real agent with a real broker. The
``tasklease`` script installed with it says to install the ``cli`` extra.

Packages come from the package index, or pip's cache when it holds them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasklease.client.testing import BrokerForTests

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MAX_PACKAGES = 15
MAX_MEGABYTES = 50
_TOOLS = {"pip", "setuptools", "wheel"}


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())


def test_slim_install_is_the_sdk_and_the_verifier(tmp_path: Path, broker: BrokerForTests) -> None:
    # Built from a copy: the build writes its own files beside the sources.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, source)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("tasklease-*.whl")

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        wheel,
        "httpx==0.28.1",
    )
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip(f"no package index or cache to install from: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr

    listed = _run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    packages = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    ours = {name: version for name, version in packages.items() if name not in _TOOLS}
    site = next((venv / "lib").glob("python3*/site-packages"))
    tools = sum(_size(d) for d in site.iterdir() if d.name.split("-")[0].lower() in _TOOLS)
    megabytes = (_size(site) - tools) / 1e6
    print(f"slim install: {len(ours)} packages, {megabytes:.1f} MB: {sorted(ours)}")
    assert ours["httpx"] == "0.28.1" and "tasklease" in ours
    assert len(ours) <= MAX_PACKAGES, sorted(ours)
    assert megabytes <= MAX_MEGABYTES

    probe = textwrap.dedent(
        """
        import importlib.util, json, sys
        import tasklease.client, tasklease.verify
        from tasklease.client import Agent, AppClient
        server = [m for m in ("starlette", "uvicorn", "msgspec", "cryptography", "typer",
                              "prometheus_client", "argon2") if importlib.util.find_spec(m)]
        broker, launch = sys.argv[1], sys.argv[2]
        with Agent.register(broker, launch, "orch", "slim", ["read:data:1"]) as agent:
            exchanged = agent.exchange(scope=["read:data:1"])
            verdict = AppClient(broker, "unused", "unused").validate(exchanged.token)
        print(json.dumps({"server": server, "valid": verdict["valid"]}))
        """
    )
    ran = _run(python, "-c", probe, broker.url, broker.launch_token(["read:data:1"]), timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"server": [], "valid": True}

    # The script comes along; without the cli extra it names what to install, exit 2.
    command = _run(venv / "bin" / "tasklease", "--version", timeout=60)
    assert command.returncode == 2, (command.stdout, command.stderr)
    assert "Traceback" not in command.stderr
    assert "pip install 'tasklease[cli]'" in command.stderr
