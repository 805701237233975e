"""PostgreSQL fixtures: one throwaway cluster per session (``pgcluster``), a fresh
database per test, and real ``tasklease serve`` replicas on it.

Skipped (not failed) where PostgreSQL's server binaries are missing; ``make test`` runs
``scripts/ensure-postgres.sh`` first, which installs them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for folder in (_HERE, _HERE.parent / "http"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pgcluster  # noqa: E402
from e2e_support import RunningBroker, stop_broker  # noqa: E402
from pg_e2e import migrate, start_replica  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster() -> pgcluster.Cluster:
    try:
        return pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def pg_url(pg_cluster: pgcluster.Cluster) -> str:
    """A fresh, empty (unmigrated) database."""
    return pg_cluster.new_database("it")


@pytest.fixture
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., list[RunningBroker]]]:
    """``start(url, n=2, env=...)``: migrate ``url`` with ``tasklease db migrate`` and
    start ``n`` replicas on it sharing one key directory. Every replica a test started
    (also through ``track``) is stopped at its end."""
    started: list[RunningBroker] = []

    def start(url: str, n: int = 2, env: dict[str, str] | None = None) -> list[RunningBroker]:
        data_dir = tmp_path_factory.mktemp("replicas")
        migrate(url, data_dir)
        # One after the other: the first creates the signing key and nonce secret.
        running = [start_replica(url, data_dir, env) for _ in range(n)]
        started.extend(running)
        return running

    start.track = started.append  # type: ignore[attr-defined]
    yield start
    for running in started:
        with contextlib.suppress(Exception):
            stop_broker(running)


@contextlib.contextmanager
def _module_replicas(
    url: str, tmp_path_factory: pytest.TempPathFactory, n: int
) -> Iterator[list[RunningBroker]]:
    """``n`` replicas on ``url`` (migrated first), sharing one key directory; stopped
    when the block ends."""
    data_dir = tmp_path_factory.mktemp("shared")
    migrate(url, data_dir)
    started: list[RunningBroker] = []
    try:
        for _ in range(n):
            started.append(start_replica(url, data_dir))
        yield started
    finally:
        for running in started:
            with contextlib.suppress(Exception):
                stop_broker(running)


@pytest.fixture(scope="module")
def pair_url(pg_cluster: pgcluster.Cluster) -> str:
    """The database of ``replica_pair``."""
    return pg_cluster.new_database("pair")


@pytest.fixture(scope="module")
def replica_pair(
    pair_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningBroker, RunningBroker]]:
    """Two replicas (sharing one key directory) on a database of their own, shared by
    the tests of a module that need no fresh ones: each such test gives what it makes
    (apps, operators, tenants, domains) names of its own, reads only what it made, and
    changes nothing the others rely on (no key rotation, no policy, no replica stopped).
    Starting a pair of brokers costs more than most of these tests."""
    with _module_replicas(pair_url, tmp_path_factory, 2) as (a, b):
        yield a, b


@pytest.fixture(scope="module")
def one_replica(
    pg_cluster: pgcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBroker]:
    """One replica on a database of its own, shared by the tests of a module as
    ``replica_pair`` is."""
    url = pg_cluster.new_database("one")
    with _module_replicas(url, tmp_path_factory, 1) as (broker,):
        yield broker
