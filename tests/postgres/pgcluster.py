"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl in a temp dir.

No Docker and no TCP: the server listens only on a unix socket inside the temp dir, on a
free port number (which only names the socket). As root, the server runs as the
``postgres`` OS user (PostgreSQL refuses to run as root) and the temp dir is given to it.

``shared_cluster()`` starts one cluster per process, lazily, and stops it at exit; each
test then makes its own database with :meth:`Cluster.new_database`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cluster", "ClusterUnavailable", "find_bin", "shared_cluster"]

_RUN_AS = "postgres"


class ClusterUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed (run scripts/ensure-postgres.sh)."""


def find_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH, else /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure-postgres.sh"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """One running (or stopped) PostgreSQL cluster in a temp directory."""

    bindir: Path
    root: Path
    port: int
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&port={self.port}&user=postgres"

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls) -> Cluster:
        bindir = find_bin()
        root = Path(tempfile.mkdtemp(prefix="tasklease-pg-"))
        cluster = cls(bindir, root, _free_port())
        cluster.socket_dir.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(_RUN_AS)
            for path in (root, cluster.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            root.chmod(0o755)
        cluster._run(
            "initdb",
            "-D",
            str(cluster.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{cluster.socket_dir}'",
            "port": str(cluster.port),
            # A throwaway cluster: durability of the server itself is not under test.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        cluster.start()
        return cluster

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _RUN_AS, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def start(self) -> None:
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------

    def new_database(self, prefix: str = "t") -> str:
        """Create a fresh, empty database and return its URL."""
        import psycopg

        with self._lock:
            name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


_shared: Cluster | None = None
_shared_lock = threading.Lock()


def shared_cluster() -> Cluster:
    """The one cluster of this process, started on first use and destroyed at exit."""
    global _shared  # noqa: PLW0603 - one cluster per process, by design
    with _shared_lock:
        if _shared is None:
            _shared = Cluster.create()
            atexit.register(_destroy_shared)
        return _shared


def _destroy_shared() -> None:
    if _shared is not None:
        with contextlib.suppress(Exception):
            _shared.destroy()
