"""Only ``tasklease init`` creates a broker's state; every other command opens what is
there and refuses what is not (docs/decisions.md 145). Real ``tasklease`` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import cli_forks
import httpx
import pytest
from e2e_support import free_port

from tasklease import brokerstate
from tasklease.core.config import Config
from tasklease.core.records import CheckpointRecord
from tasklease.server import build_broker
from tasklease.settings import load_config
from tasklease.storage import open_store

ADMIN_SECRET = "state-test-admin-secret-" + "x" * 16


def cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``tasklease`` in ``cwd`` with no TASKLEASE_* setting but ``env`` (a process forked
    from one that has made the CLI's imports: cli_forks)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"COLUMNS": "200", "NO_COLOR": "1", "TASKLEASE_METRICS_LISTEN": "off"})
    full.update(env or {})
    return cli_forks.run(args, cwd=cwd, env=full, timeout=timeout)


def init(data: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    made = cli("init", "--data-dir", str(data), *extra, cwd=cwd)
    assert made.returncode == 0, made.stdout + made.stderr
    return made


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory as ``tasklease init`` leaves it, made once for the tests that
    start from one (each takes its own copy: ``initialised_copy``)."""
    root = tmp_path_factory.mktemp("initialised")
    init(root / "data", cwd=root)
    return root / "data"


def initialised_copy(initialised: Path, data: Path) -> None:
    """``data``: what ``init(data)`` would have made, copied from ``initialised`` (its
    modes kept, the config naming ``data``)."""
    shutil.copytree(initialised, data)
    config = data / "config.toml"
    config.write_text(config.read_text().replace(str(initialised), str(data)))


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """What a command that must refuse said: exit 2, one ``error:`` line, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def audit_events(database: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(database) as conn:
        return list(conn.execute("SELECT seq, event_type FROM audit_events ORDER BY seq"))


@contextmanager
def serving(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``tasklease serve *args`` until the block ends; yields its URL once it answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"TASKLEASE_METRICS_LISTEN": "off", **(env or {})})
    log = cwd / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasklease.cli.main", "serve", *args, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=full, cwd=str(cwd),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v1/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def signing_kid(data: Path) -> str:
    (key,) = (data / "keys").glob("signing-*.pem")  # signing-<time>Z-<kid[:8]>.pem
    return key.name.split("Z-", 1)[1].removesuffix(".pem")


# -- serve creates nothing -----------------------------------------------------------------


def test_serve_refuses_a_mistyped_database_and_creates_nothing(
    tmp_path: Path, initialised: Path
) -> None:
    """D2: a database path that names no file (a typo, a relative path from another
    directory) is refused: serving an empty database there forgot every revocation."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    before = sorted(p.name for p in data.iterdir())
    typo = data / "taskleas.db"
    said = refused(
        cli(
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
            cwd=tmp_path,
            env={"TASKLEASE_DATABASE": str(typo)},
        )  # fmt: skip
    )
    assert f"the database {typo} does not exist" in said
    assert "Only `tasklease init` creates a broker" in said
    assert sorted(p.name for p in data.iterdir()) == before  # no file, no lock, no socket

    # `db migrate` (another command that opens a broker) creates no database either.
    said = refused(
        cli("db", "migrate", "--data-dir", str(data), cwd=tmp_path,
            env={"TASKLEASE_DATABASE": str(typo)})
    )  # fmt: skip
    assert "does not exist" in said and "tasklease init" in said
    assert not typo.exists()


def test_serve_refuses_a_database_no_init_ran_on(tmp_path: Path, initialised: Path) -> None:
    """A SQLite file with the schema but an empty audit log is not this broker's."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    other = tmp_path / "other.db"
    open_store(str(other)).close()  # the schema, no event
    said = refused(
        cli(
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
            cwd=tmp_path,
            env={"TASKLEASE_DATABASE": str(other)},
        )  # fmt: skip
    )
    assert "holds no audit event" in said and "tasklease init" in said


def test_serve_refuses_an_empty_key_directory_and_makes_no_key(
    tmp_path: Path, initialised: Path
) -> None:
    """D3: an empty key_dir (a typo, a lost volume) is refused: serve made a new signing
    key, audit log key and nonce secret there, unaudited, and every token stopped
    verifying."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    events = audit_events(data / "tasklease.db")
    empty = tmp_path / "new-keys"
    empty.mkdir(mode=0o700)
    said = refused(
        cli(
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
            cwd=tmp_path,
            env={"TASKLEASE_KEY_DIR": str(empty)},
        )  # fmt: skip
    )
    assert f"the key directory {empty} holds no signing key" in said
    assert f"the nonce secret {empty / 'nonce.secret'} does not exist" in said
    assert list(empty.iterdir()) == []
    assert audit_events(data / "tasklease.db") == events
    # A key directory that is not there at all is not made either.
    missing = tmp_path / "no-such-keys"
    said = refused(
        cli(
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
            cwd=tmp_path,
            env={"TASKLEASE_KEY_DIR": str(missing)},
        )  # fmt: skip
    )
    assert f"the key directory {missing} does not exist" in said
    assert not missing.exists()


def test_init_audits_the_keys_it_makes(tmp_path: Path) -> None:
    """The first signing key and the audit log's key are in the log, as made by init,
    before the first operator."""
    data = tmp_path / "data"
    init(data, cwd=tmp_path)
    assert [kind for _, kind in audit_events(data / "tasklease.db")] == [
        "signing_key_created",
        "audit_log_key_created",
        "operator_added",
    ]
    with sqlite3.connect(data / "tasklease.db") as conn:
        (detail,) = conn.execute(
            "SELECT detail FROM audit_events WHERE event_type = 'signing_key_created'"
        ).fetchone()
    assert "by=init" in detail and signing_kid(data) in detail


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_the_memory_store(tmp_path: Path, initialised: Path, workers: str) -> None:
    """D1: ``memory://`` keeps nothing and is one process's: with two workers a token
    revoked on one stayed valid on the other."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    said = refused(
        cli(
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
            "--workers",
            workers,
            cwd=tmp_path,
            env={"TASKLEASE_DATABASE": "memory://"},
        )  # fmt: skip
    )
    assert 'database = "memory://"' in said and "not shared between worker processes" in said
    # Nor can init make a broker on it.
    said = refused(
        cli("init", "--data-dir", str(tmp_path / "m"), cwd=tmp_path,
            env={"TASKLEASE_DATABASE": "memory://"})
    )  # fmt: skip
    assert "memory://" in said


def test_the_audit_log_key_is_made_only_for_a_log_without_checkpoints(tmp_path: Path) -> None:
    """A data directory from before signed checkpoints (signing keys, no log key, no
    checkpoint) gets its log key when opened; a log key missing beside checkpoints it
    signed is refused."""
    from tasklease.brokerstate import StateError

    data = tmp_path / "data"
    init(data, "--key-provider", "plaintext", cwd=tmp_path)
    config = load_config(str(data / "config.toml"))
    logs = data / "keys" / "log"
    for path in logs.iterdir():
        path.unlink()
    broker = build_broker(config)
    try:
        assert any(logs.glob("signing-*.pem"))  # the pre-checkpoint upgrade
        with broker.store.write() as tx:
            tx.put_checkpoint(CheckpointRecord("signed", 1, "a checkpoint", broker.kernel.now()))
    finally:
        broker.audit.close()
        broker.store.close()
    for path in logs.iterdir():
        path.unlink()
    with pytest.raises(StateError, match="holds no audit log key"):
        build_broker(config)
    assert not any(logs.glob("signing-*.pem"))


# -- init ----------------------------------------------------------------------------------


def test_init_refuses_a_data_directory_that_holds_a_broker(
    tmp_path: Path, initialised: Path
) -> None:
    """D9: with the config file moved out of the data directory (TASKLEASE_CONFIG), a
    second init re-keyed the admin operator. It is refused, and changes nothing."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    elsewhere = tmp_path / "etc" / "config.toml"
    elsewhere.parent.mkdir()
    (data / "config.toml").rename(elsewhere)
    (data / "operator-admin-secret").unlink()
    events = audit_events(data / "tasklease.db")
    keys = sorted(p.name for p in (data / "keys").iterdir())

    again = cli(
        "init", "--data-dir", str(data), cwd=tmp_path, env={"TASKLEASE_CONFIG": str(elsewhere)}
    )
    said = refused(again)
    assert "a broker already exists here" in said
    assert f"the database {data / 'tasklease.db'}" in said and "signing keys in" in said
    assert "--force" in said
    assert audit_events(data / "tasklease.db") == events  # no operator re-keyed
    assert sorted(p.name for p in (data / "keys").iterdir()) == keys
    assert not (data / "config.toml").exists() and not (data / "operator-admin-secret").exists()


def test_init_force_keeps_every_setting_and_replaces_only_the_admin_secret(
    tmp_path: Path,
    initialised: Path,
) -> None:
    """D8: ``init --force`` (doctor's advice for a weak admin secret) rewrote the config
    from scratch, dropping every setting the operator added; with the passphrase moved
    out of the data directory, it could not even open the keys. It keeps the file."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    kek = tmp_path / "kek"
    (data / "key-passphrase").rename(kek)
    config = data / "config.toml"
    added = (
        "# hardened by the operator\n"
        f'key_passphrase_file = "{kek}"\n'
        'critical_scopes = ["write:payments:*"]\n'
        "heartbeat_required = true\n"
        'trust_domain = "agents.example.com"\n'
        'dpop_nonce = "required"\n'
        "max_ttl = 600\n"
    )
    config.write_text(config.read_text() + added)
    before = tomllib.loads(config.read_text())
    kid = signing_kid(data)

    forced = cli("init", "--data-dir", str(data), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "its other settings kept" in forced.stdout
    assert "At the broker's next start the admin's tokens" in forced.stdout
    after = tomllib.loads(config.read_text())
    assert after.pop("admin_secret_hash") != before.pop("admin_secret_hash")
    assert after == before
    assert config.read_text().endswith(added)  # comments and order too
    assert signing_kid(data) == kid and not (data / "key-passphrase").exists()
    secret = forced.stdout.split("Admin secret (shown once, save it now): ")[1].split()[0]
    with serving("--data-dir", str(data), cwd=tmp_path) as url:
        auth = httpx.post(f"{url}/v1/admin/auth", json={"secret": secret})
        assert auth.status_code == 200, auth.text


@pytest.mark.parametrize("name", ["back\\slash", 'q"uote', "spa ce"])
def test_init_writes_the_data_directory_absolute_and_toml_escaped(
    tmp_path: Path, name: str
) -> None:
    """D15 and D4: the data directory goes into the config as a TOML string, escaped, and
    absolute (it was written as given: a relative path read from elsewhere named another
    directory)."""
    (tmp_path / "work").mkdir()
    init(Path(name), cwd=tmp_path / "work")
    config = tmp_path / "work" / name / "config.toml"
    assert tomllib.loads(config.read_text())["data_dir"] == str(tmp_path / "work" / name)
    checked = cli("doctor", "--config", str(config), "--json", cwd=tmp_path)
    assert json.loads(checked.stdout)["data_dir"] == str(tmp_path / "work" / name)


# -- relative paths ------------------------------------------------------------------------


def test_a_config_file_names_one_broker_whatever_directory_serve_starts_in(
    tmp_path: Path,
) -> None:
    """D4: relative paths in a config file are read from the file's directory. Started
    from elsewhere with --config, serve used to make a second broker (new key,
    passphrase and database) under the current directory; it opens the same one, for a
    file init writes now and for one an earlier init wrote (``data_dir = ".tasklease"``)."""
    project = tmp_path / "project"
    project.mkdir()
    init(Path(".tasklease"), cwd=project)
    data = project / ".tasklease"
    config = data / "config.toml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kid = signing_kid(data)
    # As an earlier init wrote it: relative paths, from the directory init ran in.
    text = config.read_text().replace(f'data_dir = "{data}"', 'data_dir = ".tasklease"')
    text = text.replace(f'key_passphrase_file = "{data / "key-passphrase"}"\n', "")
    config.write_text(text + 'key_dir = "keys"\n')
    env = {"TASKLEASE_ADMIN_SECRET": ADMIN_SECRET}
    with serving("--config", str(config), cwd=elsewhere, env=env) as url:
        jwks = httpx.get(f"{url}/.well-known/jwks.json").json()
        assert [key["kid"][:8] for key in jwks["keys"]] == [kid]
    assert [p.name for p in elsewhere.iterdir() if not p.name.startswith("serve-")] == []

    loaded = load_config(str(config), env={})
    assert (loaded.data_dir, loaded.key_dir) == (str(data), str(data / "keys"))
    assert loaded.database == str(data / "tasklease.db")


def test_relative_paths_in_a_config_file_are_read_from_its_directory(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "broker.toml"
    config.write_text(
        'data_dir = "state"\n'
        'database = "db/broker.db"\n'
        'key_dir = "../keys"\n'
        'key_passphrase_file = "secrets/kek"\n'
        'tls_mode = "tls"\n'
        'tls_cert = "tls/cert.pem"\n'
        'tls_key = "/etc/tls/key.pem"\n'
        'policy_dir = "policies"\n'
    )
    loaded = load_config(str(config), env={})
    assert loaded.data_dir == str(folder / "state")
    assert loaded.database == str(folder / "db" / "broker.db")
    assert loaded.key_dir == str(folder / "../keys")
    assert loaded.key_passphrase_file == str(folder / "secrets" / "kek")
    assert loaded.tls_cert == str(folder / "tls" / "cert.pem")
    assert loaded.tls_key == "/etc/tls/key.pem"
    assert loaded.policy_dir == str(folder / "policies")
    # URLs, library names and absolute paths stay as written; the environment's relative
    # paths are the current directory's, as on the command line.
    config.write_text(
        'database = "postgresql://db.internal/tasklease"\n'
        'pkcs11_module = "libsofthsm2.so"\n'
        'key_dir = "/var/lib/keys"\n'
    )
    loaded = load_config(str(config), env={"TASKLEASE_DATA_DIR": "here"})
    assert loaded.database == "postgresql://db.internal/tasklease"
    assert loaded.pkcs11_module == "libsofthsm2.so"
    assert loaded.key_dir == "/var/lib/keys"
    assert loaded.data_dir == "here"


def test_init_records_no_event_for_keys_that_were_there(tmp_path: Path, initialised: Path) -> None:
    """``init --force`` keeps the keys: no key event, the first operator re-keyed."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    before = audit_events(data / "tasklease.db")
    init(data, "--force", cwd=tmp_path)
    added = [kind for _, kind in audit_events(data / "tasklease.db")[len(before) :]]
    assert added == ["operator_credential_rotated"]


# -- a database others can change is no broker's --------------------------------------------


def _layout(tmp_path: Path) -> Config:
    """The files :func:`brokerstate.require` looks for, as ``init`` leaves their modes."""
    data = tmp_path / "data"
    (data / "keys").mkdir(mode=0o700, parents=True)
    data.chmod(0o700)
    for path in (data / "tasklease.db", data / "keys" / "signing-1Z-AAAAAAAA.pem"):
        path.touch(0o644)
    (data / "keys" / "nonce.secret").touch(0o600)
    return load_config(os.devnull, env={}, overrides={"data_dir": str(data)})


# Would fail if: serve opened a SQLite database that other users can rewrite (revocations
# deleted, an operator added, an old copy put in place), as it did; the key directory
# beside it was already refused when writable by others, the database was not.
@pytest.mark.parametrize(
    ("which", "mode"),
    [("tasklease.db", 0o666), ("tasklease.db", 0o664), ("tasklease.db-wal", 0o646), (".", 0o777)],
)
def test_a_database_others_can_write_is_refused(tmp_path: Path, which: str, mode: int) -> None:
    config = _layout(tmp_path)
    brokerstate.require(config)  # as init leaves it
    path = Path(config.data_dir) / which
    path.touch(0o600)
    path.chmod(mode)
    with pytest.raises(brokerstate.StateError, match=f"writable by group or others.*{mode:04o}"):
        brokerstate.require(config)


# Would fail if: a database whose directory another user owns were opened, as it was: the
# directory's owner may put another database (or a journal) in its place.
def test_a_database_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _layout(tmp_path)
    directory = Path(config.data_dir)
    if os.geteuid() == 0:
        os.chown(directory, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(os, "geteuid", lambda: directory.stat().st_uid + 1)
    with pytest.raises(brokerstate.StateError, match="database's directory .* is owned by uid"):
        brokerstate.require(config)


def test_a_database_file_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _layout(tmp_path)
    database = Path(config.data_dir) / "tasklease.db"
    if os.geteuid() == 0:
        os.chown(database, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(os, "geteuid", lambda: database.stat().st_uid + 1)
    with pytest.raises(brokerstate.StateError, match="is owned by uid .*, not by this user"):
        brokerstate.require(config)


def test_serve_after_an_interrupted_init_says_init_force_finishes_it(
    tmp_path: Path, initialised: Path
) -> None:
    """``init`` stopped (SIGPIPE, Ctrl-C) after its config and signing keys, before the
    database and nonce secret: serve sent the operator to ``init``, which refused the half
    broker. The refusal now names the command that finishes it."""
    data = tmp_path / "data"
    initialised_copy(initialised, data)
    for name in ("tasklease.db", "tasklease.db-wal", "tasklease.db-shm"):
        (data / name).unlink(missing_ok=True)
    (data / "keys" / "nonce.secret").unlink()
    shutil.rmtree(data / "keys" / "log", ignore_errors=True)
    said = refused(cli("serve", "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path))
    assert "init --force" in said and "interrupted" in said, said
