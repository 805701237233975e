"""``tasklease launch-token create``: uses left, multi-use, resume switched off, and a
token bound to its agent's key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tasklease.client import Agent, TaskleaseError
from tasklease.client.testing import BrokerForTests


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests() as running:
        yield running


def create(broker: BrokerForTests, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "COLUMNS": "200",
            "TASKLEASE_URL": broker.url,
            "TASKLEASE_ADMIN_SECRET": broker.admin_secret,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "launch-token", "create"]
        + ["--agent-name", "cli", "--scope", "read:data:*", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_single_use_token_shows_one_use_left(broker: BrokerForTests, tmp_path: Path) -> None:
    made = create(broker, tmp_path)
    assert made.returncode == 0, made.stderr
    token, summary = made.stdout.splitlines()[:2]
    assert len(token) == 64
    assert "uses left 1 of 1" in summary
    assert "resume allowed" in summary


def test_max_uses_makes_a_counted_multi_use_token(broker: BrokerForTests, tmp_path: Path) -> None:
    made = create(broker, tmp_path, "--max-uses", "4", "--no-resume")
    assert made.returncode == 0, made.stderr
    assert "uses left 4 of 4" in made.stdout
    assert "resume off" in made.stdout
    plain = create(broker, tmp_path, "--multi-use", "--json")
    answer = json.loads(plain.stdout)
    assert (answer["max_uses"], answer["uses_left"]) == (10, 10)
    assert answer["policy"]["single_use"] is False
    assert answer["policy"]["allow_resume"] is True


def test_bad_values_are_refused(broker: BrokerForTests, tmp_path: Path) -> None:
    for args in (("--max-uses", "0"), ("--ttl", "-5"), ("--ttl", "7200"), ("--max-ttl", "0")):
        refused = create(broker, tmp_path, *args)
        assert refused.returncode != 0, args
        assert "Traceback" not in refused.stderr


def test_agent_key_binds_the_token_to_one_agent(broker: BrokerForTests, tmp_path: Path) -> None:
    key = SigningKey.generate()
    made = create(broker, tmp_path, "--agent-key", base64.b64encode(bytes(key.verify_key)).decode())
    assert made.returncode == 0, made.stderr
    bound = base64.urlsafe_b64encode(bytes(key.verify_key)).decode().rstrip("=")
    assert f"bound to agent key {bound}" in made.stdout
    token = made.stdout.splitlines()[0]
    with pytest.raises(TaskleaseError, match="bound to another agent key"):
        Agent.register(broker.url, token, "orch", "task-thief", ["read:data:1"])
    with Agent.register(broker.url, token, "orch", "task-1", ["read:data:1"], key=key) as agent:
        assert agent.token
    for bad in ("not-base64", base64.b64encode(b"short").decode()):
        refused = create(broker, tmp_path, "--agent-key", bad)
        assert refused.returncode == 2 and "--agent-key" in refused.stderr, refused.stderr
