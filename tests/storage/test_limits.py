"""What bounds a store's waits, and what it says about writing: PostgreSQL's connection
parameters (server timeouts, keepalives), and SQLite's ``check_writable``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pgcluster
import pytest

from tasklease.core.errors import Unavailable
from tasklease.storage import SQLiteStore, open_store
from tasklease.storage._pg_guard import Limits


def test_connections_carry_server_timeouts_and_keepalives() -> None:
    kwargs = Limits().connect_kwargs("postgresql:///db?host=/tmp")
    assert kwargs["options"] == (
        "-c statement_timeout=5000 -c lock_timeout=3000 "
        "-c idle_in_transaction_session_timeout=10000 -c synchronous_commit=on"
    )
    assert kwargs["keepalives"] == 1
    assert (kwargs["keepalives_idle"], kwargs["keepalives_interval"]) == (5, 2)
    assert kwargs["keepalives_count"] == 3
    assert kwargs["tcp_user_timeout"] == 10_000
    assert kwargs["connect_timeout"] == 3


def test_what_the_url_says_wins() -> None:
    url = "postgresql:///db?keepalives_idle=60&connect_timeout=9&options=-c%20lock_timeout%3D0"
    kwargs = Limits().connect_kwargs(url)
    assert "keepalives_idle" not in kwargs and "connect_timeout" not in kwargs
    # Ours first, the URL's after: PostgreSQL applies the last -c of a name.
    assert kwargs["options"].endswith("-c lock_timeout=0 -c synchronous_commit=on")
    assert kwargs["options"].startswith("-c statement_timeout=5000")


@pytest.mark.parametrize(
    "given",
    ["-c synchronous_commit=off", "-csynchronous_commit=OFF", "--synchronous-commit=false"],
)
def test_a_url_cannot_make_commits_asynchronous(given: str) -> None:
    # An acknowledged commit must survive a crash of the server (docs/postgresql.md):
    # ours comes after the URL's, and PostgreSQL applies the last one.
    kwargs = Limits().connect_kwargs(f"postgresql:///db?options={quote(given)}")
    assert kwargs["options"].endswith(f"{given} -c synchronous_commit=on")


@pytest.mark.parametrize("level", ["remote_apply", "remote_write", "on", "local"])
def test_a_url_may_ask_for_commits_as_durable_or_more(level: str) -> None:
    given = f"-c synchronous_commit={level}"
    kwargs = Limits().connect_kwargs(f"postgresql:///db?options={quote(given)}")
    assert kwargs["options"].endswith(given)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="statement_timeout"):
        Limits(statement_timeout=0)
    with pytest.raises(ValueError, match="tcp_timeout"):
        Limits(tcp_timeout=0.5)
    assert Limits(statement_timeout=2).deadline == 2.5


def test_the_server_applies_them() -> None:
    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    import psycopg

    url = cluster.new_database("limits")
    limits = Limits(statement_timeout=0.25, lock_timeout=0.1)
    with psycopg.connect(url, autocommit=True, **limits.connect_kwargs(url)) as conn:
        shown = [
            conn.execute(f"SHOW {name}").fetchone()
            for name in ("statement_timeout", "lock_timeout")
        ]
        assert shown == [("250ms",), ("100ms",)]
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")


def test_sqlite_is_not_writable_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    try:
        store.check_writable()  # room, and the write lock
        monkeypatch.setattr(store, "_free_bytes", lambda: 4096)
        with pytest.raises(Unavailable, match="disk holding the database is full") as info:
            store.check_writable()
        assert info.value.retry_after is not None
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        # libpq quotes the component, or the whole URL, that it cannot parse.
        "postgresql://tasklease:s3cret%zz@127.0.0.1/tl",
        "postgresql://tasklease:s3cret%@127.0.0.1/tl",
        "postgresql://tasklease:s3cret@[::1]x/tl",
    ],
)
def test_a_url_libpq_cannot_parse_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_store(url)
    shown = [str(refused.value)]
    cause = refused.value.__cause__ or refused.value.__context__
    if not refused.value.__suppress_context__ and cause is not None:
        shown.append(str(cause))
    assert "s3cret" not in " ".join(shown)
    # Not even masked: a URL libpq cannot read is no URL a redaction surely reads either.
    assert "libpq cannot parse the PostgreSQL URL" in str(refused.value)
    assert "tasklease" not in str(refused.value) and "127.0.0.1" not in str(refused.value)
