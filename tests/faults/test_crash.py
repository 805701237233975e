"""A crash in the middle of work: ``tasklease serve`` on SQLite is killed (SIGKILL, every
process of it at once) while clients register, renew and revoke concurrently; restarted
on the same data directory, it must hold every operation it acknowledged. The same with
a SIGTERM in the middle of work, which must also stop the broker by itself, in time: the
group commit's batches then run while the event loops shut down.

Acknowledged means a 200 reached the client. For each such operation, after the restart:
a revoked token is refused; a registered agent exists and resumes by its key; a renewed
token's predecessor is refused; a token no later operation touched is still valid; and
``tasklease audit verify`` finds the chain intact. Operations cut off by the kill may or
may not have happened, and are not checked.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import (
    ADMIN_SECRET,
    SHARED_ENV,
    STARTUP_TIMEOUT,
    RunningBroker,
    _clean_env,
    b64,
    free_port,
    init_data_dir,
    jwt_parts,
    run_cli,
)

pytestmark = pytest.mark.slow

CLIENTS = 6
# The kill comes once this many operations were acknowledged, with every client busy.
ACKED_BEFORE_KILL = 60
SCOPE = ["read:data:*"]


def _start(data: Path, workers: int) -> RunningBroker:
    """``tasklease serve`` in a process group of its own (so one signal kills it all)."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    port = free_port()
    log_path = data / f"broker-{port}.log"
    command = [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = _clean_env(data, SHARED_ENV, with_secret=True)
    init_data_dir(data, env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(data),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=15.0)
    deadline = time.monotonic() + STARTUP_TIMEOUT * workers
    while True:
        if proc.poll() is not None:
            client.close()
            raise AssertionError(f"broker exited with {proc.returncode}: {log_path.read_text()}")
        try:
            if client.get("/v1/health").status_code == 200:
                return RunningBroker(url, ADMIN_SECRET, data, proc, log_path, client)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _kill(proc)
            client.close()
            raise AssertionError(f"broker did not become healthy: {log_path.read_text()}")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the broker's whole process group: supervisor, workers, helpers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


def _stop(broker: RunningBroker) -> None:
    broker.client.close()
    if broker.proc.poll() is None:
        broker.proc.send_signal(signal.SIGTERM)
        try:
            broker.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _kill(broker.proc)


@dataclass
class Held:
    """An agent as its client knows it: its key and its latest acknowledged token."""

    agent_id: str
    key: Ed25519PrivateKey
    token: str
    revoked: bool = False


@dataclass
class Ledger:
    """What the broker acknowledged, and what was cut off (uncertain)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    registered: list[Held] = field(default_factory=list)
    renewed: list[tuple[str, str]] = field(default_factory=list)  # (predecessor, successor)
    revoked: list[str] = field(default_factory=list)
    uncertain: set[str] = field(default_factory=set)  # agent ids an unfinished op touched
    acked: int = 0
    errors: list[str] = field(default_factory=list)

    def ack(self) -> None:
        with self.lock:
            self.acked += 1


def _jti(token: str) -> str:
    return str(jwt_parts(token)[1]["jti"])


def _register(client: httpx.Client, admin: str) -> Held:
    lt = client.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "crash-agent", "allowed_scope": SCOPE},
        headers={"Authorization": f"Bearer {admin}"},
    )
    lt.raise_for_status()
    nonce = client.get("/v1/challenge").raise_for_status().json()["nonce"]
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    resp = client.post(
        "/v1/register",
        json={
            "launch_token": lt.json()["launch_token"],
            "nonce": nonce,
            "public_key": b64(public),
            "signature": b64(key.sign(bytes.fromhex(nonce))),
            "orch_id": "orch-crash",
            "task_id": f"task-{random.randrange(1 << 32):08x}",
            "requested_scope": SCOPE,
        },
    )
    resp.raise_for_status()
    data = resp.json()
    return Held(data["agent_id"], key, data["access_token"])


def _client_loop(url: str, admin: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """Register, renew and revoke this client's own agents until stopped or cut off."""
    rng = random.Random(seed)
    mine: list[Held] = []
    with httpx.Client(base_url=url, timeout=15.0) as client:
        while not stop.is_set():
            live = [held for held in mine if not held.revoked]
            choice = rng.random() if live else 0.0
            target = rng.choice(live) if live and choice >= 0.4 else None
            try:
                if target is None:
                    held = _register(client, admin)
                    mine.append(held)
                    with ledger.lock:
                        ledger.registered.append(held)
                elif choice < 0.8:
                    resp = client.post(
                        "/v1/token/renew", headers={"Authorization": f"Bearer {target.token}"}
                    )
                    resp.raise_for_status()
                    successor = resp.json()["access_token"]
                    with ledger.lock:
                        ledger.renewed.append((target.token, successor))
                    target.token = successor
                else:
                    resp = client.post(
                        "/v1/revoke",
                        json={"level": "token", "target": _jti(target.token)},
                        headers={"Authorization": f"Bearer {admin}"},
                    )
                    resp.raise_for_status()
                    with ledger.lock:
                        ledger.revoked.append(target.token)
                    target.revoked = True
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                with ledger.lock:
                    if target is not None:
                        ledger.uncertain.add(target.agent_id)
                    if not stop.is_set():
                        ledger.errors.append(repr(exc))
                return
            ledger.ack()


def _resume(broker: RunningBroker, held: Held) -> httpx.Response:
    nonce = broker.nonce()
    body = {
        "agent_id": held.agent_id,
        "nonce": nonce,
        "signature": b64(held.key.sign(bytes.fromhex(nonce))),
    }
    return broker.post("/v1/resume", json=body)


def _audit_verifies(data: Path) -> None:
    """``tasklease audit verify --data-dir data`` finds the chain intact. Run in this
    process (``run_cli``), with no TASKLEASE_* variable set: the broker's processes are
    under test here, not this command's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    verify = run_cli(["audit", "verify", "--data-dir", str(data)], {**env, "COLUMNS": "200"})
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_acknowledged_operations_survive_a_sigkill(tmp_path: Path, workers: int) -> None:
    _survives(tmp_path, workers, _kill)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor only; it must stop itself and its workers."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill(proc)
        pytest.fail("the broker did not stop within 30 s of a SIGTERM in the middle of work")


def test_acknowledged_operations_survive_a_sigterm_mid_work(tmp_path: Path) -> None:
    _survives(tmp_path, 2, _terminate)


def _survives(
    tmp_path: Path, workers: int, stop_broker: Callable[[subprocess.Popen[bytes]], None]
) -> None:
    data = tmp_path / "data"
    broker = _start(data, workers)
    try:
        admin = broker.admin_token()
        ledger, stop = Ledger(), threading.Event()
        clients = [
            threading.Thread(target=_client_loop, args=(broker.url, admin, ledger, stop, seed))
            for seed in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while ledger.acked < ACKED_BEFORE_KILL:
            assert not ledger.errors, ledger.errors
            assert time.monotonic() < deadline, f"only {ledger.acked} operations acknowledged"
            time.sleep(0.01)
        stop.set()
        stop_broker(broker.proc)  # every client is mid-operation
        for thread in clients:
            thread.join(timeout=30)
        assert not ledger.errors, ledger.errors
    finally:
        broker.client.close()
        if broker.proc.poll() is None:
            _kill(broker.proc)
    assert ledger.registered and ledger.renewed and ledger.revoked, ledger

    again = _start(data, workers)
    try:
        for token in ledger.revoked:
            assert not again.is_valid(token), "an acknowledged revocation was lost"
        for predecessor, _ in ledger.renewed:
            assert not again.is_valid(predecessor), "a renewed token's predecessor lives"
        for held in ledger.registered:
            if held.agent_id in ledger.uncertain:
                continue
            # The latest acknowledged token of an agent nothing unfinished touched is
            # exactly as acknowledged: live unless revoked.
            assert again.is_valid(held.token) is not held.revoked, held.agent_id
        for held in ledger.registered:
            resp = _resume(again, held)
            assert resp.status_code == 200, f"{held.agent_id}: {resp.text}"
    finally:
        _stop(again)
    _audit_verifies(data)
