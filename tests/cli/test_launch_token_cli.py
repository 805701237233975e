"""``tasklease launch-token create``: uses left, multi-use and resume switched off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
