"""Servers under test, each in its own process(es) on loopback.

- :class:`Broker` runs ``tasklease serve`` in a fresh temporary data directory with
  ``TASKLEASE_ADMIN_SECRET`` set (SQLite today; a ``--database postgresql://...`` option
  would pass ``TASKLEASE_DATABASE`` here).
- :class:`EmptyServer` runs ``bench.emptyapp``, the HTTP floor.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ADMIN_SECRET = "bench-admin-secret-" + os.urandom(8).hex()
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; ppid is the 2nd field after the ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Process:
    proc: subprocess.Popen[bytes]
    workers: int

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.proc.pid]
        # uvicorn's supervisor may also own a resource tracker: keep the workers only.
        return [p for p in _children(self.proc.pid) if _is_worker(p)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in cmd


class Broker(_Process):
    def __init__(self, *, workers: int, loop: str) -> None:
        self.workers = workers
        self.loop = loop
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tasklease-bench-"))
        self.database = self.dir / "data" / "tasklease.db"

    def __enter__(self) -> Broker:
        env = {
            **os.environ,
            "TASKLEASE_ADMIN_SECRET": ADMIN_SECRET,
            "TASKLEASE_DATA_DIR": str(self.dir / "data"),
        }
        env.pop("TASKLEASE_CONFIG", None)
        self.log = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [
                sys.executable,
                "-c",
                "from tasklease.cli.main import main; main()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--loop",
                self.loop,
            ],
            env=env,
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{self.port}/v1/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {(self.dir / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200 and self._workers_have_db():
                        time.sleep(0.5)
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("broker did not become ready")

    def _workers_have_db(self) -> bool:
        """Every worker opened the database (it does so just before it starts serving)."""
        pids = self.worker_pids()
        if len(pids) < self.workers:
            return False
        for pid in pids:
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
                if not any(os.readlink(fd).endswith("tasklease.db") for fd in fds):
                    return False
            except OSError:
                return False
        return True

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class EmptyServer(_Process):
    def __init__(self, *, workers: int, loop: str) -> None:
        self.workers = workers
        self.loop = loop
        self.port = free_port()
        self.ready = Path(tempfile.mkdtemp(prefix="tasklease-bench-empty-"))

    def __enter__(self) -> EmptyServer:
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [
                sys.executable,
                "-m",
                "bench.emptyapp",
                str(self.port),
                str(self.workers),
                self.loop,
                str(self.ready),
            ],
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while len(list(self.ready.iterdir())) < self.workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("empty server did not start")
            time.sleep(0.05)
        time.sleep(0.3)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.ready, ignore_errors=True)
