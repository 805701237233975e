"""The ``store`` fixture: every test that takes it runs once per backend.

To add a backend, write a factory (a generator that yields an open store and cleans up
after it) and add it to ``BACKENDS``. A factory may call ``pytest.skip`` when its
service is not available (e.g. PostgreSQL without a DSN in the environment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tasklease.core.store import Store
from tasklease.storage import MemoryStore, SQLiteStore

StoreFactory = Callable[[pytest.FixtureRequest], Iterator[Store]]


def _memory(request: pytest.FixtureRequest) -> Iterator[Store]:
    store = MemoryStore()
    yield store
    store.close()


def _sqlite(request: pytest.FixtureRequest) -> Iterator[Store]:
    tmp_path = request.getfixturevalue("tmp_path")
    store = SQLiteStore(tmp_path / "tasklease.db")
    yield store
    store.close()


def _postgres(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh database per test on the session's throwaway cluster (tests/postgres)."""
    import pgcluster

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    store = PostgresStore(cluster.new_database("conf"))
    yield store
    store.close()


BACKENDS: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from BACKENDS[request.param](request)
