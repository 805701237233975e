# Would fail if: a command of docs/audit.md's walkthrough, or its Python snippet, stopped
# working as written: the witness's set-up, the log key handed out, the proof of a
# revocation and its offline check, the consistency check against a kept checkpoint.
"""docs/audit.md's walkthrough and snippet, run as written: a broker on loopback with one
witness (quorum 1) run by ``tasklease audit witness serve``, then the auditor's commands
and the Python snippet, in one working directory. Only the witness's port and the broker's
URL and secret (environment variables) are the test's own."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import free_port

from tasklease.client import Agent, NotFound
from tasklease.client.testing import BrokerForTests

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
DOC_PORT = "127.0.0.1:7380"

pytestmark = pytest.mark.slow


def block(marker: str, language: str = "sh") -> str:
    found = re.search(
        rf"<!-- {marker}: run by tests/cli/test_audit_docs.py -->\n```{language}\n(.*?)```",
        DOC.read_text(),
        re.S,
    )
    assert found, f"no {marker} block in {DOC}"
    return found.group(1)


def commands(script: str) -> list[str]:
    joined = script.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One documented command, with ``tasklease`` this interpreter's CLI."""
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_walkthrough_and_the_snippet_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "tasklease"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tasklease.cli.main "$@"\n')
    launcher.chmod(0o755)
    port = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"PATH": f"{bindir}:{env.get('PATH', '')}", "COLUMNS": "300"})

    for command in commands(block("witness-init")):
        sh(command, work, env)
    witness_vkey = (work / "witness.vkey").read_text().strip()
    settings: dict[str, Any] = {
        "audit_witnesses": (f"http://{port} {witness_vkey}",),
        "audit_witness_quorum": 1,
        "audit_checkpoint_interval": 0.2,
    }
    witness: subprocess.Popen[str] | None = None
    with BrokerForTests(data_dir=tmp_path / "broker", **settings) as broker:
        env.update({"TASKLEASE_URL": broker.url, "TASKLEASE_ADMIN_SECRET": broker.admin_secret})
        for command in commands(block("log-key")):
            sh(command, work, env)
        (serve,) = commands(block("witness-serve"))
        witness = subprocess.Popen(
            ["/bin/sh", "-c", "exec " + serve.replace(DOC_PORT, port)],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # A history with a revocation, for a human principal.
            admin = broker.admin()
            signed_in = httpx.post(
                f"{broker.url}/v1/admin/auth", json={"secret": broker.admin_secret}
            ).json()
            made = httpx.post(
                f"{broker.url}/v1/admin/launch-tokens",
                headers={"Authorization": f"Bearer {signed_in['access_token']}"},
                json={
                    "agent_name": "triage",
                    "allowed_scope": ["read:tickets:*"],
                    "principal": "user:ada@example.com",
                },
            ).json()
            with Agent.register(
                broker.url, made["launch_token"], "orch", "task", ["read:tickets:*"]
            ) as agent:
                admin.revoke("agent", agent.agent_id)
            (revocation,) = admin.iter_audit_events(event_type="token_revoked")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if int(admin.audit_checkpoint().split("\n")[1]) >= revocation["seq"]:
                        break
                except NotFound:
                    pass
                assert time.monotonic() < deadline, "no final checkpoint"
                time.sleep(0.1)
            auditor = block("auditor").replace("evt-000004", revocation["id"])
            outputs = []
            for command in commands(auditor):
                outputs.append(sh(command, work, env).stdout)
                if len(outputs) == 1:  # the copy of the database, made after the checkpoint
                    source = sqlite3.connect(tmp_path / "broker" / "tasklease.db")
                    copy = sqlite3.connect(work / "tasklease.db")
                    source.backup(copy)
                    source.close()
                    copy.close()
            assert f"PROVED: {revocation['id']} (token_revoked)" in outputs[1]
            assert "PROVED" in outputs[2]
            assert "CONSISTENT" in outputs[3] and "CONSISTENT" in outputs[4]
            assert "token_revoked" in outputs[5] and "agent_registered" in outputs[5]
            snippet = block("snippet", "python")
            ran = subprocess.run(
                [sys.executable, "-c", snippet],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert ran.returncode == 0, ran.stderr
            index = revocation["index"]
            assert f"token_revoked is leaf {index} of tasklease/audit" in ran.stdout
        finally:
            witness.terminate()
            witness.communicate(timeout=10)
    shutil.rmtree(work / "witness-data", ignore_errors=True)
