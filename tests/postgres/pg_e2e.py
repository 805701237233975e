"""Helpers for the replica tests: the CLI, migrations and (re)starting replicas."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

from e2e_support import SHARED_ENV, TASKLEASE, RunningBroker, launch_broker, run_cli

from tasklease.core import readahead
from tasklease.storage.postgres import PostgresStore

# The tree under test, when the suite runs one (PYTHONPATH) rather than the installed one.
_PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def tasklease_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKLEASE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1", **_PYTHONPATH, **env},
        check=False,
    )


def tasklease_in_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``tasklease *args`` run in this process, through the CLI's own entry, with ``env``
    for the TASKLEASE_* environment (the others unset for the run, as for a new process
    given ``env``): for a command whose process is not under test (one that sets a test
    up, or whose effect is checked); a new interpreter would spend most of its time
    importing. Its output, stdout then stderr, is the CompletedProcess's ``stdout``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    done = run_cli(list(args), {**full, "COLUMNS": "200", **env})
    return subprocess.CompletedProcess(
        list(args), done.returncode, done.stdout + done.stderr, done.stderr
    )


def migrate(
    url: str, data_dir: Path, *, in_process: bool = True
) -> subprocess.CompletedProcess[str]:
    """``tasklease db migrate`` on ``url``: in this process unless ``in_process`` is
    False (a new ``tasklease`` process, for the tests of the command itself)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {"TASKLEASE_DATABASE": url, "TASKLEASE_DATA_DIR": str(data_dir)}
    if in_process:
        done = tasklease_in_process("db", "migrate", env=env)
    else:
        done = tasklease_cli("db", "migrate", env=env, cwd=data_dir)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def verify_chain(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tasklease audit verify --database <url>``."""
    return tasklease_cli("audit", "verify", "--database", url, env={}, cwd=cwd)


def start_replica(url: str, data_dir: Path, env: dict[str, str] | None = None) -> RunningBroker:
    """A replica on ``url`` using the keys in ``data_dir`` (shared by every replica)."""
    return launch_broker(data_dir, {**SHARED_ENV, "TASKLEASE_DATABASE": url, **(env or {})})


def start_replica_with_own_keys(
    url: str, source: Path, other: Path, env: dict[str, str] | None = None
) -> RunningBroker:
    """A replica on ``url`` whose data directory ``other`` holds a copy (``cp -a``) of
    ``source``'s key directory and passphrase, taken now, anchors and all."""
    other.mkdir(mode=0o700)
    shutil.copytree(source / "keys", other / "keys", symlinks=True)
    shutil.copy2(source / "key-passphrase", other / "key-passphrase")
    return start_replica(url, other, env)


async def warm(store: PostgresStore) -> None:
    """Wait until the running loop has a connection for its reads (opened in the
    background after the first read that found none)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await store.read_ahead(("one", "SELECT 1", ()))
            return
        except readahead.InThread as exc:
            assert exc.reason == "no connection open on the loop yet"
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


_COUNTING = "tasklease-tests-counting"


def count_backends(url: str, condition: str) -> int:
    """Client connections open on ``url``'s database that meet the SQL ``condition`` on
    ``pg_stat_activity``, the connections that count them excepted: each count's own, and
    the earlier counts' backends, which may still be exiting (on a loaded machine, for
    longer than the next count takes to come)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name=_COUNTING) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            f" AND application_name <> '{_COUNTING}' AND ({condition})"
        ).fetchone()
    return int(row[0]) if row else 0
