"""The CLI as a new user lives in it (issue: the operator's workflow), each bug seen with
its regression test: list commands and their output formats, login/logout with a cached
token, --version, completion, markup in data, a removed app removed again, --outcome,
task revocations found by task, plurals, and a busy port said first."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cli_forks
import pytest
import yaml
from cli_runner import CliRunner

from tasklease.cli.main import app
from tasklease.client import Agent
from tasklease.client.testing import BrokerForTests
from tasklease.rules import jws

SCOPE = ["read:data:*"]
ROOT = Path(__file__).resolve().parents[2]
_RUNNER = CliRunner()


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests() as running:
        yield running


def run(
    *args: str,
    home: Path,
    broker: BrokerForTests | None = None,
    secret: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tasklease <args>`` as its own process, as a user runs it (forked from one that
    made the CLI's imports: cli_forks)."""
    return cli_forks.run(args, env=_environment(home, broker, secret, extra_env), timeout=60)


def cli(
    *args: str,
    home: Path,
    broker: BrokerForTests | None = None,
    secret: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tasklease <args>`` through the same entry point, in this process (the same
    environment, none of this process's ``TASKLEASE_`` settings): a process costs half a
    second of start, and these tests run dozens."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    env.update(_environment(home, broker, secret, extra_env))
    result = _RUNNER.invoke(app, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def _environment(
    home: Path, broker: BrokerForTests | None, secret: bool, extra: dict[str, str] | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "80"})
    if broker is not None:
        env["TASKLEASE_URL"] = broker.url
        if secret:
            env["TASKLEASE_ADMIN_SECRET"] = broker.admin_secret
    env.update(extra or {})
    return env


def test_version_and_completion(tmp_path: Path) -> None:
    version = run("--version", home=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("tasklease ")
    # The shell named, not detected: what runs the tests may be any shell (make's is sh).
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    completion = run("--show-completion", "bash", home=tmp_path, extra_env=named)
    assert completion.returncode == 0, completion.stderr
    assert "complete" in completion.stdout and "tasklease" in completion.stdout.lower()


def test_lists_in_every_format_plain_when_piped_never_the_launch_token(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    launch = broker.admin().create_launch_token("lister", SCOPE, single_use=False, max_uses=3)
    token = launch["launch_token"]
    agent = Agent.register(broker.url, token, "orch-cli", "task-listed", SCOPE)
    try:
        piped = cli("agents", "list", "--task-id", "task-listed", home=tmp_path, broker=broker)
        assert piped.returncode == 0, piped.stderr
        header, row = piped.stdout.splitlines()[:2]
        assert header.split("\t")[:3] == ["state", "agent", "task"]
        assert row.split("\t")[1] == agent.agent_id  # whole, not cut at 80 columns

        as_json = cli("agents", "list", "-o", "json", home=tmp_path, broker=broker)
        listed = json.loads(as_json.stdout)
        mine = next(a for a in listed if a["agent_id"] == agent.agent_id)
        assert mine["state"] == "active" and mine["task_id"] == "task-listed"
        assert list(mine)[:3] == ["agent_id", "app_id", "task_id"]  # the API's order
        as_yaml = cli("agents", "list", "-o", "yaml", home=tmp_path, broker=broker)
        assert yaml.safe_load(as_yaml.stdout) == listed

        tokens = cli("launch-token", "list", "-o", "json", home=tmp_path, broker=broker)
        assert token not in tokens.stdout
        ids = [t["id"] for t in json.loads(tokens.stdout)]
        assert hashlib.sha256(token.encode()).hexdigest()[:12] in ids

        jti = jws.decode_unverified(agent.token)[1]["jti"]
        tree = cli("tree", jti, home=tmp_path, broker=broker)
        assert tree.returncode == 0, tree.stderr
        assert "register" in tree.stdout and "admin" in tree.stdout
        task = cli("task", "show", "task-listed", "-o", "json", home=tmp_path, broker=broker)
        assert json.loads(task.stdout)[0]["agents"][0]["agent_id"] == agent.agent_id
        missing = cli("task", "show", "no-such-task", home=tmp_path, broker=broker)
        assert missing.returncode == 1
        bad_state = cli("agents", "list", "--state", "nope", home=tmp_path, broker=broker)
        assert bad_state.returncode == 2
    finally:
        agent.close()


def test_login_caches_a_short_lived_token_0600_and_logout_forgets_it(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    signed = cli("login", home=tmp_path, broker=broker)
    assert signed.returncode == 0, signed.stderr
    sessions = list((tmp_path / ".config" / "tasklease" / "sessions").glob("*.json"))
    assert len(sessions) == 1
    assert stat.S_IMODE(sessions[0].stat().st_mode) == 0o600
    cached = json.loads(sessions[0].read_text())
    assert broker.admin_secret not in sessions[0].read_text()
    assert cached["access_token"] and cached["url"] == broker.url

    # No credential in the environment: the cached token does.
    listed = cli("agents", "list", "-o", "json", home=tmp_path, broker=broker, secret=False)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)

    out = cli("logout", home=tmp_path, broker=broker, secret=False)
    assert out.returncode == 0 and not sessions[0].exists()
    refused = cli("agents", "list", home=tmp_path, broker=broker, secret=False)
    assert refused.returncode == 2 and "tasklease login" in refused.stderr


def test_markup_in_data_is_shown_as_written(broker: BrokerForTests, tmp_path: Path) -> None:
    # Its own process: the table is drawn for the terminal width the process is given.
    revoked = run("revoke", "--level", "task", "--target", "[/]", home=tmp_path, broker=broker)
    assert revoked.returncode == 0, revoked.stderr
    assert "(1 entry written)" in revoked.stdout  # a plural that agrees
    wide = {"COLUMNS": "250"}
    events = run(
        "audit",
        "events",
        "--task-id",
        "[/]",
        "-o",
        "table",
        home=tmp_path,
        broker=broker,
        extra_env=wide,
    )
    assert events.returncode == 0, events.stderr
    assert "[/]" in events.stdout and "token_revoked" in events.stdout


def test_task_revocations_are_found_by_task(broker: BrokerForTests, tmp_path: Path) -> None:
    revoked = cli(
        "revoke", "--level", "task", "--target", "task-found", home=tmp_path, broker=broker
    )
    assert revoked.returncode == 0, revoked.stderr
    found = cli(
        "audit", "events", "--task-id", "task-found", "--json", home=tmp_path, broker=broker
    )
    events = [json.loads(line) for line in found.stdout.splitlines()]
    assert [e["event_type"] for e in events] == ["token_revoked"]


def test_outcome_must_be_success_or_denied(broker: BrokerForTests, tmp_path: Path) -> None:
    for command in (("audit", "events"), ("audit", "export")):
        refused = cli(*command, "--outcome", "nope", home=tmp_path, broker=broker)
        assert refused.returncode == 2 and "--outcome" in refused.stderr


def test_a_removed_app_is_not_removed_again(broker: BrokerForTests, tmp_path: Path) -> None:
    made = cli(
        "app",
        "register",
        "twice-gone",
        "--scope",
        "read:data:*",
        "--json",
        home=tmp_path,
        broker=broker,
    )
    app_id = json.loads(made.stdout)["app_id"]
    assert cli("app", "remove", app_id, home=tmp_path, broker=broker).returncode == 0
    again = cli("app", "remove", app_id, home=tmp_path, broker=broker)
    assert again.returncode == 3 and "already deregistered" in again.stderr
    events = cli(
        "audit",
        "events",
        "--event-type",
        "app_deregistered",
        "--json",
        home=tmp_path,
        broker=broker,
    )
    mine = [e for e in map(json.loads, events.stdout.splitlines()) if app_id in e["detail"]]
    assert len(mine) == 1


def test_serve_on_a_busy_port_says_so_first(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        init = run(
            "init",
            "--data-dir",
            str(tmp_path / "d"),
            "--secret-file",
            str(tmp_path / "secret"),
            home=tmp_path,
        )
        assert init.returncode == 0, init.stderr
        served = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port), home=tmp_path)
        assert served.returncode == 2
        assert f"port {port} on 127.0.0.1 is taken" in served.stderr
        assert "broker listening on" not in served.stdout + served.stderr
        probe = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "port_free.py"), "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 1 and f"TASKLEASE_PORT={port + 1}" in probe.stderr


def test_make_help_lists_the_targets() -> None:
    shown = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    for target in ("run", "test", "unit", "lint", "typecheck", "help"):
        assert f"  {target} " in shown.stdout


def test_every_listing_takes_an_output_format(broker: BrokerForTests, tmp_path: Path) -> None:
    made = cli(
        "app",
        "register",
        "listed-app",
        "--scope",
        "read:data:*",
        "--json",
        home=tmp_path,
        broker=broker,
    )
    assert made.returncode == 0, made.stderr
    for command in (
        ("app", "list"),
        ("operator", "list"),
        ("tenant", "list"),
        ("federation", "list"),
        ("revocation", "list"),
        ("launch-token", "list"),
        ("agents", "list"),
        ("audit", "events"),
    ):
        as_json = cli(*command, "-o", "json", home=tmp_path, broker=broker)
        assert as_json.returncode == 0, (command, as_json.stderr)
        document = json.loads(as_json.stdout)
        assert isinstance(document, list), command
        as_yaml = cli(*command, "-o", "yaml", home=tmp_path, broker=broker)
        loaded = yaml.safe_load(as_yaml.stdout)
        assert isinstance(loaded, list), command
        # Each audit call signs in (one more event each time); launch tokens and agents
        # of earlier tests may expire between the two calls.
        if command[0] not in ("audit", "launch-token", "agents"):
            assert loaded == document, command
    apps = json.loads(cli("app", "list", "-o", "json", home=tmp_path, broker=broker).stdout)
    assert "listed-app" in [a["name"] for a in apps]
