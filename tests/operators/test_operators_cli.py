"""``tasklease init`` makes the first admin operator; ``tasklease operator ...`` manages
operators, and every remote command signs in as a named operator (secret or key), as real
processes against a broker served from the initialised data directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_forks
import pytest
from cli_runner import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, launch_broker, stop_broker

from tasklease.cli.main import app

pytestmark = pytest.mark.slow
_RUNNER = CliRunner()


class Setup:
    def __init__(self, root: Path, broker: RunningBroker, admin_secret: str) -> None:
        self.root = root
        self.broker = broker
        self.admin_secret = admin_secret
        self.root_secret = (root / "data" / "operator-root-secret").read_text().strip()

    def cli(
        self, *args: str, as_: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI against the broker; ``as_``: the TASKLEASE_* credential variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
        env.update(
            {
                "HOME": str(self.root),
                "XDG_CONFIG_HOME": str(self.root / ".config"),
                "COLUMNS": "200",
                "TASKLEASE_URL": self.broker.url,
            }
        )
        env.update(as_ if as_ is not None else self.root_env)
        # The command's entry point in this process, in the operator's directory, none of
        # this process's own TASKLEASE_ settings: a process per call costs half a second.
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
        with contextlib.chdir(self.root):
            result = _RUNNER.invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)
        return subprocess.CompletedProcess(
            list(args), result.exit_code, result.stdout, result.stderr
        )

    @property
    def root_env(self) -> dict[str, str]:
        return {"TASKLEASE_OPERATOR": "root", "TASKLEASE_OPERATOR_SECRET": self.root_secret}

    def once_past_the_change(
        self, *args: str, as_: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI as a just re-keyed operator: until its entry is past (clock_skew
        after the change, decision 142) the sign-in is refused, exit code 4 and how long
        to wait; then it works."""
        for _ in range(3):
            result = self.cli(*args, as_=as_)
            if result.returncode != 4:
                return result
            wait = re.search(r"changed moments ago: sign in again in (\d+) s", result.stderr)
            assert wait, result.stderr
            time.sleep(int(wait[1]))  # as long as the broker said (at most clock_skew + 1)
        return result

    def many(self, *args: str, as_: dict[str, str] | None = None) -> list[Any]:
        """The JSON lines a successful ``--json`` command printed."""
        result = self.cli(*args, "--json", as_=as_)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def ok(self, *args: str, as_: dict[str, str] | None = None) -> Any:
        """The one JSON object a successful ``--json`` command printed."""
        (found,) = self.many(*args, as_=as_)
        return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("operators-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    made = cli_forks.run(  # a process forked from one that made the CLI's imports
        ["init", "--data-dir", "data", "--secret-file", "data/admin-secret"]
        + ["--operator-name", "root"],
        env=env,
        cwd=root,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    said = " ".join(made.stdout.split())
    assert "Admin operator root: its secret is in data/operator-root-secret (mode 0600)" in said
    secret_file = root / "data" / "operator-root-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert made.stdout.count(secret_file.read_text().strip()) == 0  # never printed
    admin_secret = (root / "data" / "admin-secret").read_text().strip()
    broker = launch_broker(
        root / "data",
        # A re-keyed operator signs in again once its entry, dated clock_skew past the
        # change, is past (decision 142): a small skew keeps that wait short here.
        {"TASKLEASE_ADMIN_AUTH_BURST": "1000", "TASKLEASE_CLOCK_SKEW": "2"},
        admin_secret=admin_secret,
        use_env_secret=False,
    )
    yield Setup(root, broker, admin_secret)
    stop_broker(broker)


def test_init_made_the_first_admin_operator(setup: Setup) -> None:
    (root,) = [o for o in setup.many("operator", "list") if o["name"] == "root"]
    assert root["role"] == "admin" and root["created_by"] == "init"
    assert root["credential"] == "secret" and root["status"] == "active"
    table = setup.cli("operator", "list")
    assert table.returncode == 0 and "root" in table.stdout


def test_operator_lifecycle_through_the_cli(setup: Setup) -> None:
    made = setup.ok("operator", "add", "alice", "--role", "operator")
    assert made["role"] == "operator" and len(made["secret"]) == 64
    alice = {"TASKLEASE_OPERATOR": "alice", "TASKLEASE_OPERATOR_SECRET": made["secret"]}

    # An operator runs apps and launch tokens, reads the audit log, and is refused the rest.
    app = setup.ok("app", "register", "alice-bot", "--scope", "read:data:*", as_=alice)
    assert app["client_secret"]
    events = setup.many("audit", "events", "--event-type", "app_registered", as_=alice)
    assert any("by=operator:alice" in e["detail"] for e in events)
    for refused in (("operator", "list"), ("keys", "rotate")):
        result = setup.cli(*refused, as_=alice)
        assert result.returncode == 3, (refused, result.stderr)
        assert "insufficient_scope" in result.stderr and "Traceback" not in result.stderr

    # Rotation: a new secret, shown once; the old one is refused at once.
    rotated = setup.ok("operator", "rotate", "alice")
    assert rotated["secret"] != made["secret"]
    assert setup.cli("app", "list", as_=alice).returncode == 3
    alice["TASKLEASE_OPERATOR_SECRET"] = rotated["secret"]
    assert setup.once_past_the_change("app", "list", as_=alice).returncode == 0

    removed = setup.ok("operator", "remove", "alice")
    assert removed["status"] == "removed"
    assert setup.cli("app", "list", as_=alice).returncode == 3
    assert setup.cli("operator", "remove", "alice").returncode == 1  # not found


def _key_files(directory: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private = directory / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_an_auditor_signs_in_with_a_key_file(setup: Setup) -> None:
    private, public = _key_files(setup.root, "bob")
    made = setup.ok("operator", "add", "bob", "--role", "auditor", "--key", str(public))
    assert made["credential"] == "key" and "secret" not in made
    bob = {"TASKLEASE_OPERATOR": "bob", "TASKLEASE_OPERATOR_KEY_FILE": str(private)}
    assert setup.many("audit", "events", "--limit", "1", as_=bob)
    assert setup.cli("audit", "export", as_=bob).returncode == 0
    listed = setup.cli("app", "list", as_=bob)
    assert listed.returncode == 3 and "insufficient_scope" in listed.stderr

    # A key file others can read is refused before anything is sent.
    private.chmod(0o644)
    loose = setup.cli("audit", "events", as_=bob)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    private.chmod(0o600)

    # Re-keyed: the old key no longer signs in.
    new_private, new_public = _key_files(setup.root, "bob2")
    assert setup.ok("operator", "rotate", "bob", "--key", str(new_public))["credential"] == "key"
    assert setup.cli("audit", "events", as_=bob).returncode == 3
    bob["TASKLEASE_OPERATOR_KEY_FILE"] = str(new_private)
    assert setup.once_past_the_change("audit", "events", as_=bob).returncode == 0


def test_a_profile_names_the_operator(setup: Setup) -> None:
    made = setup.ok("operator", "add", "carol", "--role", "operator")
    profile = setup.root / "carol.toml"
    profile.write_text(f'operator = "carol"\noperator_secret = "{made["secret"]}"\n')
    profile.chmod(0o600)
    listed = setup.cli("app", "list", "--profile", str(profile), as_={})
    assert listed.returncode == 0, listed.stderr
    no_secret = setup.cli("app", "list", as_={"TASKLEASE_OPERATOR": "carol"})
    assert no_secret.returncode == 2 and "no secret or key for operator carol" in no_secret.stderr


def test_the_admin_secret_still_drives_the_cli(setup: Setup) -> None:
    builtin = {"TASKLEASE_ADMIN_SECRET": setup.admin_secret}
    names = [o["name"] for o in setup.many("operator", "list", as_=builtin)]
    assert "root" in names
    assert setup.ok("keys", "rotate", as_=builtin)["kid"]
