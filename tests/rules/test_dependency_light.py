"""The SDK, the verifier and the rules import without the server's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The server's dependencies (and msgspec and cryptography, which the server needs and
# the SDK and verifier must do without).
SERVER_ONLY = (
    "starlette",
    "uvicorn",
    "argon2",
    "prometheus_client",
    "typer",
    "rich",
    "psycopg",
    "psycopg_pool",
    "msgspec",
    "cryptography",
)

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys

    BLOCKED = set(json.loads(sys.argv[1]))

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    for name in BLOCKED:  # the blocker works, or this probe proves nothing
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} was not blocked")
    for name in json.loads(sys.argv[2]):
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    SERVER = ("tasklease.http", "tasklease.storage", "tasklease.cli",
              "tasklease.core.broker", "tasklease.core.kernel")
    server = sorted(m for m in sys.modules
                    if any(m == s or m.startswith(s + ".") for s in SERVER))
    print(json.dumps({"blocked_loaded": loaded, "server_modules": server}))
    """
)

PUBLIC = (
    "tasklease.client",
    "tasklease.client.testing",
    "tasklease.verify",
    "tasklease.rules.jws",
    "tasklease.rules.claims",
    "tasklease.rules.scopes",
    "tasklease.rules.binding",
    "tasklease.rules.messages",
    "tasklease.rules.bundle",
    "tasklease.rules.cleartext",
)


def _probe(modules: tuple[str, ...]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(SERVER_ONLY), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, list[str]] = json.loads(result.stdout)
    return answer


def test_client_verify_and_rules_import_without_server_dependencies() -> None:
    assert _probe(PUBLIC) == {"blocked_loaded": [], "server_modules": []}


def test_the_probe_catches_a_module_that_needs_them() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(SERVER_ONLY), '["tasklease.core.tokens"]'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "blocked: msgspec" in result.stderr
