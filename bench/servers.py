"""Servers under test, each in its own process(es) on loopback.

- :class:`Broker` runs ``tasklease init`` and ``tasklease serve`` in a fresh temporary
  data directory with ``TASKLEASE_ADMIN_SECRET`` set: on SQLite in that directory, or on
  the PostgreSQL database it is given (``TASKLEASE_DATABASE``).
- :class:`Databases` hands out the database of each broker configuration: nothing for
  SQLite; for PostgreSQL a fresh, migrated database in a throwaway cluster (or the one
  existing database it was given).
- :class:`EmptyServer` runs ``bench.emptyapp``, the HTTP floor.
"""

from __future__ import annotations

import os
import re
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
from typing import Any

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
    """``tasklease serve`` on SQLite in its temp directory, or on ``database_url``."""

    def __init__(
        self,
        *,
        workers: int,
        loop: str,
        database_url: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.settings = settings or {}
        self.loop = loop
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tasklease-bench-"))
        self.database_url = database_url
        self.database = self.dir / "data" / "tasklease.db"

    def __enter__(self) -> Broker:
        env = {
            **os.environ,
            "TASKLEASE_ADMIN_SECRET": ADMIN_SECRET,
            "TASKLEASE_DATA_DIR": str(self.dir / "data"),
            # The default, pinned: the readiness check reads uvicorn's info lines.
            "TASKLEASE_LOG_LEVEL": "info",
            # The metrics listener on any free port: never one another broker holds.
            "TASKLEASE_METRICS_LISTEN": "127.0.0.1:0",
        }
        env.pop("TASKLEASE_CONFIG", None)
        env.pop("TASKLEASE_DATABASE", None)
        if self.database_url is not None:
            env["TASKLEASE_DATABASE"] = self.database_url
        env.update(self.settings)  # TASKLEASE_* settings of one measurement
        # Only `tasklease init` makes a broker's keys and database; serve refuses without.
        # A PostgreSQL database given by URL serves every configuration in turn: each one's
        # init finds the brokers before it there (--force: keys of its own, same database).
        again = ["--force"] if self.database_url is not None else []
        subprocess.run(  # noqa: S603 - our own interpreter and modules
            [
                sys.executable,
                "-c",
                "from tasklease.cli.main import main; main()",
                "init",
                "--secret-file",
                str(self.dir / "data" / "init-admin-secret"),
                *again,
            ],
            env=env,
            cwd=self.dir,
            capture_output=True,
            check=True,
            timeout=120,
        )
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
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until every worker has its database open and health answers ``ok`` 3 times running."""
        deadline = time.monotonic() + 60
        in_a_row = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self._log_tail()}")
            if self._health_ok() and self._workers_ready():
                in_a_row += 1
                if in_a_row >= 3:
                    time.sleep(0.5)
                    return
            else:
                in_a_row = 0
            time.sleep(0.1)
        raise RuntimeError(f"broker did not become ready: {self._log_tail()}")

    def _health_ok(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/v1/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200 and b'"status":"ok"' in resp.read().replace(b" ", b"")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"

    def _workers_ready(self) -> bool:
        pids = self.worker_pids()
        if len(pids) < self.workers:
            return False
        if self.database_url is None:
            return self._workers_have_db(pids)
        return self._workers_started(pids)

    @staticmethod
    def _workers_have_db(pids: list[int]) -> bool:
        """SQLite: every worker opened the database file (just before it starts serving)."""
        for pid in pids:
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
                if not any(os.readlink(fd).endswith("tasklease.db") for fd in fds):
                    return False
            except OSError:
                return False
        return True

    def _workers_started(self, pids: list[int]) -> bool:
        """PostgreSQL: every worker logged uvicorn's ``Started server process [pid]``.

        uvicorn logs it after the worker built its app, i.e. after the worker's store
        opened its connection pool (which waits for a first connection). Its connections
        are unix sockets to a throwaway cluster, whose client ends name no path in /proc,
        so the log is the check that works for unix and TCP alike.
        """
        try:
            text = (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return False
        started = {int(m) for m in re.findall(r"Started server process \[(\d+)\]", text)}
        return all(pid in started for pid in pids)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Databases:
    """The database of each broker configuration.

    ``spec`` is ``sqlite`` (every broker makes its own file: :meth:`new_url` is ``None``),
    ``postgresql`` (a throwaway cluster, ``tests/postgres/pgcluster.py``, with a fresh
    database per configuration) or a ``postgresql://`` URL (that one database, used by
    every configuration). PostgreSQL databases are migrated before a broker starts on
    them (``tasklease serve`` leaves a shared database to ``tasklease db migrate``).

    The throwaway cluster is made durable like the SQLite broker (``synchronous=FULL``):
    ``fsync``, ``synchronous_commit`` and ``full_page_writes`` on (the test cluster turns
    them off for speed).
    """

    DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.kind = "sqlite" if spec == "sqlite" else "postgresql"
        self.existing_url = spec if "://" in spec else None
        self.cluster: Any = None

    def __enter__(self) -> Databases:
        if self.kind == "postgresql" and self.existing_url is None:
            support = str(REPO / "tests" / "postgres")
            if support not in sys.path:
                sys.path.insert(0, support)
            import pgcluster

            self.cluster = pgcluster.Cluster.create()
            try:
                self._make_durable()
            except BaseException:
                self.cluster.destroy()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.destroy()
            self.cluster = None

    def _make_durable(self) -> None:
        import psycopg

        url = self.cluster.url()
        with psycopg.connect(url, autocommit=True) as conn:
            for name, value in self.DURABLE.items():
                conn.execute(f"ALTER SYSTEM SET {name} = {value}")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self._settings(url, tuple(self.DURABLE)) != self.DURABLE:
            if time.monotonic() > deadline:
                raise RuntimeError("the throwaway cluster did not take the durable settings")
            time.sleep(0.05)

    @staticmethod
    def _settings(url: str, names: tuple[str, ...]) -> dict[str, str]:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}

    def new_url(self) -> str | None:
        """A migrated database for the next broker configuration (``None``: SQLite)."""
        if self.kind == "sqlite":
            return None
        from tasklease.storage.postgres import PostgresStore

        url = self.existing_url or self.cluster.new_database("bench")
        PostgresStore(url).close()  # migrate (what `tasklease db migrate` does)
        return str(url)

    def describe(self) -> dict[str, Any]:
        """What the JSON document records about the database server."""
        if self.kind == "sqlite":
            return {}
        url = self.existing_url or self.cluster.url()
        names = ("server_version", *self.DURABLE, "shared_buffers")
        return {
            "server": "existing" if self.existing_url else "throwaway cluster",
            **self._settings(url, names),
        }


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
