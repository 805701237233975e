"""``tasklease serve --workers 2``: each worker listens on its own socket, the kernel spreads
connections over them, a worker that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
import pytest
from e2e_support import STARTUP_TIMEOUT, _clean_env, free_port, init_data_dir
from worker_procs import (
    ESTABLISHED,
    age,
    listening_workers,
    socket_inodes,
    tcp_inodes,
    worker_pids,
)

CONNECTIONS = 32


def _start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    init_data_dir(data_dir, _clean_env(data_dir, {}, with_secret=True))
    with open(tmp_path / "serve.log", "wb") as log:  # the child keeps its own descriptor
        return _popen(data_dir, port, log)


def _popen(data_dir: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasklease.cli.main",
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_clean_env(data_dir, {}, with_secret=True),
        cwd=str(data_dir.parent),
        preexec_fn=_allow_cores,  # the broker itself must turn them off
    )


def _allow_cores() -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _core_limit(pid: int) -> str:
    """The soft core file size limit of process ``pid``, as /proc shows it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4]
    raise AssertionError("no core file size limit in /proc")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], workers: int) -> set[int]:
    """Until ``workers`` workers run and every one of them listens (health answers)."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + STARTUP_TIMEOUT * 2
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        pids = worker_pids(proc.pid)
        try:
            healthy = httpx.get(f"{url}/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            healthy = False
        if healthy and len(pids) == workers and listening_workers(proc.pid, port) == pids:
            return pids
        time.sleep(0.1)
    raise AssertionError("the workers did not come up")


def _wait_replaced(url: str, proc: subprocess.Popen[bytes], gone: int) -> set[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gone not in worker_pids(proc.pid):
            break
        time.sleep(0.2)
    workers = _wait_healthy(url, proc, 2)
    assert gone not in workers
    return workers


@pytest.mark.slow
def test_two_workers_share_the_port_and_are_replaced_when_stuck_or_dead(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        workers = _wait_healthy(url, proc, 2)

        # A burst of connections, all opened at once, as a load generator or a fleet of
        # agents starting together does: both workers must get a fair share.
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        try:
            for sock in sockets:
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in sockets:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            established = tcp_inodes(port, ESTABLISHED)
            held = {pid: len(socket_inodes(pid) & established) for pid in workers}
        finally:
            for sock in sockets:
                sock.close()
        assert sum(held.values()) == CONNECTIONS, held
        # With one socket shared by the workers this was 31 to 1; spread by the kernel's
        # hash, fewer than 6 of 32 on one side has a probability below 1e-4.
        assert min(held.values()) >= 6, held

        # Another broker cannot share the port, even though our workers use SO_REUSEPORT.
        intruder_dir = tmp_path / "intruder"
        intruder_dir.mkdir()
        with open(intruder_dir / "serve.log", "wb") as log:
            intruder = _popen(intruder_dir / "data", port, log)
        assert intruder.wait(timeout=60) != 0
        assert f"port {port} on 127.0.0.1 is taken" in (intruder_dir / "serve.log").read_text()

        # A worker that stops answering (here: stopped) is replaced.
        stuck = min(workers)
        os.kill(stuck, signal.SIGSTOP)
        replaced = _wait_replaced(url, proc, stuck)
        assert httpx.get(f"{url}/v1/health", timeout=5).json()["status"] == "ok"

        # A worker that dies after start-up is replaced too.
        (victim,) = replaced & workers  # the original worker, up for more than 10 s
        time.sleep(max(0.0, 11.5 - age(victim)))  # the supervisor counts from just after its fork
        os.kill(victim, signal.SIGKILL)
        _wait_replaced(url, proc, victim)
        assert httpx.get(f"{url}/v1/health", timeout=5).json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert worker_pids(proc.pid) == set()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", timeout=2)


def test_a_port_taken_by_another_program_fails_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = _start(tmp_path, port)
        code = proc.wait(timeout=60)
    log = (tmp_path / "serve.log").read_text()
    assert code != 0
    assert f"port {port} on 127.0.0.1 is taken" in log, log[-2000:]


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        workers = _wait_healthy(url, proc, 2)
    finally:
        proc.kill()  # no chance to stop its workers itself
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    for pid in workers:
        # Gone, or a zombie waiting for a parent that no longer exists to reap it.
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text(), pid
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", timeout=2)


def test_sighup_stops_the_broker_and_its_workers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        workers = _wait_healthy(url, proc, 2)
        # Every process of the broker dumps no core (tasklease.hardening), and the
        # workers' environment holds none of the secrets the supervisor was given.
        for pid in {proc.pid, *workers}:
            assert _core_limit(pid) == "0", pid
        for pid in workers:
            assert b"TASKLEASE_ADMIN_SECRET=" not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(timeout=30)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
