"""Starting the CLI loads the CLI, not the broker.

Every ``tasklease`` command imports ``tasklease.cli.main`` and, through it, every command
module (typer needs their definitions for ``--help`` and for dispatch). So a module-level
import there is paid by every command: the policy engine, the kernel, the metrics, the
password hasher and the SDK are imported inside the commands that use them. A command
that talks to a broker loads the SDK and httpx, never the server's side.

Which modules a process loaded is asked of a fresh interpreter (``sys.modules``); how long
it takes is the benchmarks' business, not a test's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

# The broker's side: no command but the local ones (init, serve, db, doctor, keys,
# audit verify --database) has any use for these.
SERVER = (
    "cedarpy",
    "tasklease.core.kernel",
    "tasklease.core.policy",
    "tasklease.core.metrics",
    "tasklease.core.tenants",
    "tasklease.server",
    "tasklease.http",
    "tasklease.storage",
    "prometheus_client",
    "argon2",
    "jsonschema",
    "starlette",
    "uvicorn",
)
# What some commands use and --help does not: the SDK and its transport, key files, the
# settings (and their password hasher).
COMMANDS = (
    "tasklease.client",
    "tasklease.settings",
    "tasklease.core.config",
    "httpx",
    "cryptography",
    "nacl",
)
# The offline verifier: only the audit proof commands use it. The SDK shares its bounded
# reads (tasklease.bounds) and nothing else.
VERIFIER = ("tasklease.verify",)
# The installed distributions' metadata: only `tasklease sbom` reads it (and pydantic's
# plugin lookup, once typer parses a command's options).
SBOM = ("importlib.metadata",)
# What decides issuances and signs tokens: a local command that only reads a data
# directory (doctor, audit verify --database) has no use for it, nor for the token
# verifier's side of tasklease.verify (its HTTP client, JWKS, federation).
ISSUING = (
    "cedarpy",
    "tasklease.core.kernel",
    "tasklease.core.policy",
    "tasklease.core.tenants",
    "tasklease.core.transparency",
    "tasklease.server",
    "tasklease.http",
    "httpx",
    "tasklease.verify._verifier",
    "tasklease.verify._federation",
    "tasklease.verify._jwks",
)

_PROBE = textwrap.dedent(
    """
    import json, sys

    args = json.loads(sys.argv[1])
    code = None
    if args is not None:
        from tasklease.cli.main import app

        try:
            app(args, prog_name="tasklease")
        except SystemExit as exc:
            code = exc.code
    else:
        import tasklease.cli.main
    sys.stdout.write("\\n" + json.dumps({"exit": code, "modules": sorted(sys.modules)}) + "\\n")
    """
)


def _loaded(args: list[str] | None, home: Path) -> tuple[object, set[str]]:
    """Run the CLI with ``args`` (None: only import it) in a fresh interpreter; return its
    exit code and the names of the modules it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "100"})
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return answer["exit"], set(answer["modules"])


def _among(names: set[str], packages: tuple[str, ...]) -> list[str]:
    """The ``packages`` (a package counts with its submodules) that ``names`` holds."""
    return sorted(p for p in packages if any(n == p or n.startswith(p + ".") for n in names))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound and not listening: a connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_importing_the_cli_loads_no_server_module_and_no_sdk(tmp_path: Path) -> None:
    _, modules = _loaded(None, tmp_path)
    assert "tasklease.cli.main" in modules  # the probe saw the import
    assert _among(modules, SERVER + COMMANDS + VERIFIER + SBOM) == []


@pytest.mark.parametrize(
    "args",
    [["--help"], ["audit", "verify", "--help"], ["serve", "--help"], ["app", "list", "--help"]],
    ids=" ".join,
)
def test_help_loads_no_server_module_and_no_sdk(args: list[str], tmp_path: Path) -> None:
    code, modules = _loaded(args, tmp_path)
    assert code == 0
    assert _among(modules, SERVER + COMMANDS + VERIFIER) == []


def test_the_command_list_reads_no_distribution_metadata(tmp_path: Path) -> None:
    """`tasklease --help` lists `sbom` without reading what it reads."""
    code, modules = _loaded(["--help"], tmp_path)
    assert code == 0
    assert _among(modules, SBOM) == []


def test_a_remote_command_loads_the_sdk_and_no_server_module(
    closed_port: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    code, modules = _loaded(["app", "list", "--url", url, "--admin-secret", "x" * 32], tmp_path)
    assert code == 4  # unreachable: the SDK ran
    assert "tasklease.client" in modules
    assert _among(modules, SERVER + VERIFIER) == []


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A broker's data directory, as `tasklease init` leaves it (no broker running)."""
    from e2e_support import init_data_dir

    data = tmp_path_factory.mktemp("broker") / "data"
    data.mkdir(mode=0o700)
    init_data_dir(data, {"TASKLEASE_DATA_DIR": str(data)})
    return data


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [(["doctor"], 0), (["audit", "verify"], 0)],
    ids=["doctor", "audit verify"],
)
def test_a_local_reading_command_loads_nothing_that_issues(
    args: list[str], exit_code: int, data_dir: Path, tmp_path: Path
) -> None:
    """doctor walks the key directories by their names; audit verify --database checks
    the chain, the tree and the checkpoint with the log's key: neither builds a kernel."""
    code, modules = _loaded([*args, "--data-dir", str(data_dir)], tmp_path)
    assert code == exit_code
    assert "tasklease.settings" in modules  # the probe ran the command on the directory
    assert _among(modules, ISSUING) == []
