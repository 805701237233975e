"""Fixtures for the fault tests: a PostgreSQL cluster of the test's own (it gets frozen),
and a small filesystem of the test's own (it gets filled).

The PostgreSQL tests skip where the server binaries are missing (``make test`` installs
them); the disk tests skip only where mounting a filesystem is not permitted (they run
as root in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pgcluster
import pytest

# The test modules import their helpers from faults_support, beside this file (pytest's
# importlib mode does not put test directories on sys.path).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from faults_support import FakeClock, libfaketime, thaw  # noqa: E402


def _throwaway_cluster() -> Iterator[pgcluster.Cluster]:
    try:
        cluster = pgcluster.Cluster.create()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        thaw(cluster)  # never leave stopped processes behind, whatever failed
        cluster.destroy()


@pytest.fixture
def own_cluster() -> Iterator[pgcluster.Cluster]:
    """A throwaway cluster no other test uses (this one stops or freezes it)."""
    yield from _throwaway_cluster()


@pytest.fixture(scope="module")
def module_cluster() -> Iterator[pgcluster.Cluster]:
    """A throwaway cluster no test of another module uses: the tests of one module that
    freeze it and thaw it again before they end (each on a database of its own) share it,
    one after the other."""
    yield from _throwaway_cluster()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (skipped where mounting is not permitted)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        why = mounted.stderr.strip()
        if os.geteuid() != 0 or any(w in why.lower() for w in ("permi", "superuser")):
            pytest.skip(f"mounting a filesystem is not permitted here: {why}")
        pytest.fail(f"could not mount a small filesystem: {why}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


@pytest.fixture
def fake_clock(tmp_path: Path) -> FakeClock:
    library = libfaketime()
    if library is None:
        why = "libfaketime is not installed (scripts/ensure-faketime.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return FakeClock(tmp_path / "faketime.rc", library)
