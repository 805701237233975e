"""Bad input to ``tasklease`` is one ``error:`` line and the documented exit code, never a
traceback (docs/cli.md, Errors and exit codes): a config file that is no file of text, a
database URL no store opens, a local JSON file nested past the decoder, a broker that
answers what no broker answers, a start-up that cannot bind what it was told to. Real
``tasklease`` processes (forked from one that has made the CLI's imports: cli_forks)."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cli_forks
import pytest
from e2e_support import free_port, init_data_dir, launch_broker, stop_broker

SECRET = "cli-input-errors-admin-secret-0123456789"
# A well-formed log verifier key (of no log): --log-key values are read when parsed.
A_LOG_KEY = "test.example/log+e601e8b4+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"


def cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``tasklease`` in ``cwd`` with no TASKLEASE_* variable but ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"COLUMNS": "200", "NO_COLOR": "1", "TASKLEASE_METRICS_LISTEN": "off"})
    full.update({"HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd / ".config")})
    full.update(env or {})
    return cli_forks.run(args, cwd=cwd, env=full, input=stdin, timeout=timeout)


def one_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one ``error:`` line (and its hint) of a command that must fail with ``code``."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert said and said[0].startswith("error: "), result.stderr
    assert len([line for line in said if not line.startswith("hint: ")]) == 1, result.stderr
    return " ".join(said)


# --- the config file -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "not-utf8"])
@pytest.mark.parametrize(
    "command",
    [["serve"], ["db", "migrate"], ["doctor"], ["audit", "verify"]],
    ids=lambda command: "-".join(command),
)
def test_a_config_file_that_is_no_text_file_is_one_error_line(
    command: list[str], kind: str, tmp_path: Path
) -> None:
    """``--config`` naming a directory, or a file that is not UTF-8, is a configuration
    error naming the file (exit 2): it was the open's or the decoder's traceback."""
    if kind == "directory":
        config = tmp_path / "conf.d"
        config.mkdir()
    else:
        config = tmp_path / "config.toml"
        config.write_bytes(b"\xff\xfe port = 8080\n")
        config.chmod(0o600)
    said = one_error(cli(*command, "--config", str(config), cwd=tmp_path))
    assert f"config file {config}" in said, said


# --- a data directory this user may not read --------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A broker's data directory, made by ``tasklease init``."""
    data = tmp_path_factory.mktemp("broker") / "d"
    init_data_dir(data, {"TASKLEASE_DATA_DIR": str(data), "TASKLEASE_ADMIN_SECRET": SECRET})
    return data


def as_a_user(
    args: list[str], env: Mapping[str, str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``tasklease *args`` bound by file modes: as root, without the capabilities that
    bypass them (a broker run as root is refused nothing by a mode), as ``setpriv
    --inh-caps=-dac_override,-dac_read_search --bounding-set=...`` would run it."""
    bypass = (1, 2) if os.geteuid() == 0 else ()  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    return cli_forks.run(args, env=env, drop_capabilities=bypass, **kwargs)


@pytest.fixture
def copied(data_dir: Path, tmp_path: Path) -> Path:
    """A copy of the broker's data directory, its config naming the copy."""
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    config = copy / "config.toml"
    config.write_text(config.read_text().replace(str(data_dir), str(copy)))
    return copy


@pytest.mark.parametrize(
    ("unreadable", "said"),
    [
        (
            "keys/nonce.secret",
            "cannot open the broker's files: Permission denied: {d}/keys/nonce.secret",
        ),
        ("key-passphrase", "cannot open the broker's files: Permission denied: {d}/key-passphrase"),
        (".", "cannot look for {d}/config.toml in the data directory: Permission denied"),
    ],
    ids=["nonce-secret", "key-passphrase", "data-directory"],
)
def test_serve_on_files_it_may_not_read_is_one_error_line(
    unreadable: str, said: str, copied: Path, tmp_path: Path
) -> None:
    """A data directory with the wrong owner or modes (restored as another user, a
    ``chmod`` too far) is a configuration error naming the file: it was PermissionError's
    traceback, from the key files, the nonce secret and the config file's lookup alike."""
    (copied / unreadable).chmod(0)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"TASKLEASE_METRICS_LISTEN": "off", "COLUMNS": "200"})
    command = ["serve", "--data-dir", str(copied), "--port", str(free_port())]
    try:
        result = as_a_user(command, full, cwd=tmp_path, timeout=60)
    finally:
        (copied / unreadable).chmod(0o700)
    assert said.format(d=copied) in one_error(result), result.stderr


@pytest.mark.parametrize(
    ("unreadable", "said"),
    [
        ("keys/nonce.secret", "cannot read {d}/keys/nonce.secret (the nonce secret)"),
        ("key-passphrase", "cannot read {d}/key-passphrase (the signing keys' passphrase)"),
        ("tasklease.db", "cannot read {d}/tasklease.db (the database)"),
        ("keys/signing-*.pem", "cannot read {d}/keys/signing-"),
        ("keys", "cannot list {d}/keys (the key directory)"),
    ],
    ids=["nonce-secret", "key-passphrase", "database", "signing-key", "key-directory"],
)
def test_doctor_reports_files_the_broker_may_not_read(
    unreadable: str, said: str, copied: Path, tmp_path: Path
) -> None:
    """``doctor`` passed (exit 0) a data directory whose files ``serve`` then could not
    open, and refused to start on: now a high finding, ``file-unreadable``."""
    (target,) = copied.glob(unreadable)
    target.chmod(0)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"COLUMNS": "400", "NO_COLOR": "1"})
    try:
        result = as_a_user(["doctor", "--data-dir", str(copied)], full, timeout=60)
    finally:
        target.chmod(0o700 if target.is_dir() else 0o600)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "HIGH   file-unreadable" in result.stdout, result.stdout
    assert said.format(d=copied) in result.stdout, result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="root checks for the data directory's owner")
def test_doctor_run_as_root_reports_what_the_owner_may_not_read(copied: Path) -> None:
    """Run as root, ``doctor`` checks for the data directory's owner (the broker's user),
    whom the owner's mode bits bind even where they do not bind root."""
    nobody = 65534
    for path in [copied, *copied.rglob("*")]:
        os.chown(path, nobody, nobody)
    (copied / "keys" / "nonce.secret").chmod(0o200)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"COLUMNS": "400", "NO_COLOR": "1"})
    result = cli_forks.run(["doctor", "--data-dir", str(copied)], env=full, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    unreadable = [line for line in result.stdout.splitlines() if "file-unreadable" in line]
    assert unreadable == [
        f"HIGH   file-unreadable: the broker's user (uid {nobody}) cannot read "
        f"{copied}/keys/nonce.secret (the nonce secret)"
    ], result.stdout


def test_init_under_a_directory_it_may_not_read_is_one_error_line(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    try:
        result = as_a_user(["init", "--data-dir", str(closed / "d")], full, timeout=60)
    finally:
        closed.chmod(0o700)
    said = one_error(result)
    assert f"cannot use data directory {closed / 'd'}: Permission denied" in said, said


# --- a named pipe where a file is expected -----------------------------------------------


@pytest.mark.parametrize(
    ("command", "setting", "said"),
    [
        (["doctor"], "--config", "cannot read config file {f}: not a regular file: a named pipe"),
        (["serve"], "--config", "cannot read config file {f}: not a regular file: a named pipe"),
        (
            ["serve"],
            "TASKLEASE_KEY_PASSPHRASE_FILE",
            "key_passphrase_file: {f} is not a regular file: a named pipe",
        ),
        (["serve"], "TASKLEASE_TLS_CERT", "tls_cert {f} and tls_key"),
        (["serve"], "TASKLEASE_TLS_KEY", "not a regular file: a named pipe"),
    ],
    ids=["doctor-config", "serve-config", "passphrase", "tls-cert", "tls-key"],
)
def test_a_named_pipe_where_a_file_is_expected_is_one_error_line(
    command: list[str], setting: str, said: str, data_dir: Path, tmp_path: Path
) -> None:
    """A FIFO's ``open`` waits for a writer: the command hung for ever, without a word.
    Now the one reader of local files (``localfiles.open_regular``) refuses it at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    env = {"TASKLEASE_DATA_DIR": str(data_dir)}
    args = [*command, "--port", str(free_port())] if command == ["serve"] else list(command)
    if setting == "--config":
        args += ["--config", str(fifo)]
    else:
        env[setting] = str(fifo)
    if setting in ("TASKLEASE_TLS_CERT", "TASKLEASE_TLS_KEY"):
        env.update(TASKLEASE_TLS_MODE="tls", TASKLEASE_TLS_CERT=str(fifo))
        env.update(TASKLEASE_TLS_KEY=str(fifo))
    result = cli(*args, cwd=tmp_path, env=env, timeout=30)
    assert said.format(f=fifo) in one_error(result), result.stderr


@pytest.mark.parametrize("where", ["--profile", "default-profile", "operator-key-file"])
def test_a_named_pipe_where_a_secret_file_is_expected_is_one_error_line(
    where: str, tmp_path: Path
) -> None:
    """The CLI's own secret files (the profile, which may hold the admin secret, and an
    operator's key file) are read as the broker reads its files: a named pipe with no
    writer made the command wait for ever; it is now refused at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    env = {"TASKLEASE_URL": "http://127.0.0.1:9"}
    args = ["agents", "list"]
    if where == "--profile":
        args += ["--profile", str(fifo)]
        env = {}
    elif where == "default-profile":
        (tmp_path / ".config" / "tasklease").mkdir(parents=True)
        os.mkfifo(fifo := tmp_path / ".config" / "tasklease" / "profile.toml", 0o600)
    else:
        env.update(TASKLEASE_OPERATOR="ops", TASKLEASE_OPERATOR_KEY_FILE=str(fifo))
    said = one_error(cli(*args, cwd=tmp_path, env=env, timeout=15))
    assert f"{fifo}: not a regular file: a named pipe" in said, said


def test_a_named_pipe_as_the_cached_session_is_no_session(tmp_path: Path) -> None:
    """A named pipe where ``login`` caches its session is no session, not a wait."""
    from tasklease.cli._sessions import cached_session, session_path

    url = "http://127.0.0.1:9"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        path = session_path(url)
        path.parent.mkdir(parents=True)
        os.mkfifo(path, 0o600)
        found: list[object] = []
        reader = threading.Thread(target=lambda: found.append(cached_session(url)), daemon=True)
        reader.start()
        reader.join(timeout=5)
        waited = reader.is_alive()
        if waited:  # give the open its writer, so that the thread ends
            os.close(os.open(path, os.O_WRONLY))
            reader.join(timeout=5)
    assert not waited, "reading the cached session waited for a writer"
    assert found == [None]


# --- TLS material that the mode leaves unused ---------------------------------------------


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            {"TASKLEASE_TLS_CERT": "/etc/tls/c.pem", "TASKLEASE_TLS_KEY": "/etc/tls/k.pem"},
            'tls_cert and tls_key are set but tls_mode is "none": the broker would serve '
            'plain HTTP; set tls_mode = "tls" (or "mtls")',
        ),
        ({"TASKLEASE_TLS_KEY": "/etc/tls/k.pem"}, 'tls_key is set but tls_mode is "none"'),
        (
            {"TASKLEASE_TLS_CLIENT_CA": "/etc/tls/ca.pem"},
            'tls_client_ca is set but tls_mode is "none"',
        ),
        (
            {
                "TASKLEASE_TLS_MODE": "tls",
                "TASKLEASE_TLS_CERT": "/etc/tls/c.pem",
                "TASKLEASE_TLS_KEY": "/etc/tls/k.pem",
                "TASKLEASE_TLS_CLIENT_CA": "/etc/tls/ca.pem",
            },
            'tls_client_ca is set but tls_mode is "tls": no client would be asked for a '
            'certificate; set tls_mode = "mtls"',
        ),
    ],
    ids=["cert-and-key", "key", "client-ca", "client-ca-under-tls"],
)
def test_tls_files_the_mode_would_not_use_stop_serve(
    settings: dict[str, str], said: str, data_dir: Path, tmp_path: Path
) -> None:
    """TLS files with ``tls_mode`` left at ``none`` served plain HTTP, and a client CA
    without ``mtls`` asked no client for a certificate, without a word."""
    env = {"TASKLEASE_DATA_DIR": str(data_dir), **settings}
    result = cli("serve", "--port", str(free_port()), cwd=tmp_path, env=env, timeout=30)
    assert said in one_error(result), result.stderr


# --- an empty variable -------------------------------------------------------------------


def test_an_empty_metrics_listen_variable_turns_the_listener_off(tmp_path: Path) -> None:
    """``TASKLEASE_METRICS_LISTEN=`` says what the file's ``metrics_listen = ""`` says: no
    listener. It was read as unset, and the listener came up on its default address."""
    broker = launch_broker(tmp_path / "b", {"TASKLEASE_METRICS_LISTEN": ""})
    try:
        assert broker.client.get("/v1/health").status_code == 200
    finally:
        stop_broker(broker)
    assert "metrics on" not in broker.log(), broker.log()


def test_other_empty_variables_still_count_as_unset(tmp_path: Path) -> None:
    """Every other empty ``TASKLEASE_<SETTING>=`` keeps its setting's default (Compose's
    ``${VAR:-}``): read as "", ``host`` would be every interface."""
    from tasklease.settings import load_config

    env = {"TASKLEASE_HOST": "", "TASKLEASE_DATA_DIR": str(tmp_path), "TASKLEASE_MAX_TTL": ""}
    loaded = load_config(None, env=env)
    assert loaded.host == "127.0.0.1" and loaded.max_ttl == 3600, loaded
    assert load_config(None, env={**env, "TASKLEASE_METRICS_LISTEN": ""}).metrics_address is None


# --- the database URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "database", "why"),
    [
        (["serve"], "mysql://db.example/tasklease", "'mysql'"),
        (["serve"], "postgresql://[::1/tasklease", "does not parse"),
        (["serve"], "sqlite://host/x.db", "sqlite:///absolute/path"),
        (["doctor"], "mysql://db.example/tasklease", "'mysql'"),
        (["db", "migrate"], "postgresql://[::1/tasklease", "does not parse"),
    ],
    ids=["unknown-scheme", "malformed-postgresql", "sqlite-with-host", "doctor", "migrate"],
)
def test_a_database_url_no_store_opens_names_the_setting(
    command: list[str], database: str, why: str, tmp_path: Path
) -> None:
    """A ``database`` this build cannot open stops the broker as every invalid setting
    does (docs/configuration.md): exit 2 naming ``database``. ``serve`` ended in the
    store's ValueError and its traceback."""
    env = {"TASKLEASE_DATABASE": database, "TASKLEASE_ADMIN_SECRET": SECRET}
    result = cli(*command, "--data-dir", str(tmp_path / "d"), cwd=tmp_path, env=env)
    said = one_error(result)
    assert said.startswith("error: database: ") and why in said, said


@pytest.mark.parametrize(
    "database",
    [
        "postgresql://tasklease:pw-not-shown@127.0.0.1:1/tasklease?no_such_keyword=1",
        "postgresql://tasklease:pw-not-shown%zz@127.0.0.1:1/tasklease",
    ],
    ids=["unknown-parameter", "bad-percent-encoding"],
)
def test_a_postgresql_url_libpq_cannot_parse_names_the_setting_not_the_url(
    database: str, tmp_path: Path
) -> None:
    """A URL Python's parser reads but libpq's does not is refused when the store is
    opened: exit 2 naming ``database``, the URL not shown (not even masked: what libpq
    could not read is no URL whose password a redaction surely finds)."""
    env = {"TASKLEASE_DATABASE": database, "TASKLEASE_ADMIN_SECRET": SECRET}
    result = cli("db", "migrate", "--data-dir", str(tmp_path / "d"), cwd=tmp_path, env=env)
    said = one_error(result)
    assert said.startswith("error: database: libpq cannot parse the PostgreSQL URL"), said
    assert "127.0.0.1" not in said and "pw-not-shown" not in said, said


# --- local JSON files ----------------------------------------------------------------------

_DEEP = "[" * 100_000 + "]" * 100_000
_NOWHERE = "http://127.0.0.1:9"  # never reached: the file is read first


@pytest.mark.parametrize(
    "args",
    [
        ["attestor", "add", "a", "--type", "oidc", "--settings", "{deep}", "--policy", "{arr}"],
        ["attestor", "add", "a", "--type", "oidc", "--settings", "{obj}", "--policy", "{deep}"],
        ["grant-type", "add", "g", "--schema", "{deep}"],
        ["grant-type", "add", "g", "--schema", "{obj}", "--narrowing", "{deep}"],
        ["audit", "prove", "--bundle", "{deep}", "--log-key", A_LOG_KEY],
        ["policy", "test", "{deep}"],
    ],
    ids=[
        "attestor-settings",
        "attestor-policy",
        "grant-type-schema",
        "grant-type-narrowing",
        "proof-bundle",
        "policy-request",
    ],
)
def test_a_json_file_nested_too_deeply_is_one_error_line(args: list[str], tmp_path: Path) -> None:
    """JSON nested deeper than the decoder goes is no JSON (``bounds.json_document``, the
    rule the SDK and the verifier read answers by), not a RecursionError's traceback."""
    (tmp_path / "deep.json").write_text(_DEEP)
    (tmp_path / "obj.json").write_text("{}")
    (tmp_path / "arr.json").write_text("[]")
    files = {name: str(tmp_path / f"{name}.json") for name in ("deep", "obj", "arr")}
    env = {"TASKLEASE_URL": _NOWHERE, "TASKLEASE_ADMIN_SECRET": SECRET}
    said = one_error(cli(*[a.format(**files) for a in args], cwd=tmp_path, env=env))
    assert files["deep"] in said, said


# --- local directories ---------------------------------------------------------------------


def test_witness_init_in_a_file_is_one_error_line(tmp_path: Path) -> None:
    """The witness's directory is a file: it was mkdir's traceback."""
    taken = tmp_path / "witness"
    taken.write_text("not a directory")
    said = one_error(
        cli("audit", "witness", "init", str(taken), "--name", "w.example", cwd=tmp_path)
    )
    assert str(taken) in said, said


def test_accept_restore_without_a_broker_is_one_error_line(tmp_path: Path) -> None:
    """A data directory holding no broker is a configuration error (exit 2), as it is for
    ``serve``: ``db accept-restore`` ended in StateError's traceback."""
    said = one_error(cli("db", "accept-restore", "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "no broker here" in said and "tasklease init" in said, said


# --- serve's start-up ----------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_metrics_address_already_taken_is_a_configuration_error(
    data_dir: Path, taken_port: int, tmp_path: Path
) -> None:
    """``metrics_listen`` that cannot be bound stops ``serve`` as ``port`` does: one
    ``error:`` line naming the setting and exit 2, not a bare line and exit 1."""
    env = {"TASKLEASE_METRICS_LISTEN": f"127.0.0.1:{taken_port}"}
    result = cli(
        "serve", "--data-dir", str(data_dir), "--port", str(free_port()), cwd=tmp_path, env=env
    )
    said = one_error(result)
    assert "metrics_listen" in said and f"127.0.0.1:{taken_port}" in said, said


def test_no_admin_secret_is_a_configuration_error(data_dir: Path, tmp_path: Path) -> None:
    """A configuration without an admin secret stops ``serve`` with exit 2 and an
    ``error:`` line, as every configuration error does (it was exit 1, no prefix)."""
    config = tmp_path / "config.toml"
    text = (data_dir / "config.toml").read_text()
    config.write_text(
        "".join(line for line in text.splitlines(True) if "admin_secret_hash" not in line)
    )
    config.chmod(0o600)
    result = cli("serve", "--config", str(config), "--port", str(free_port()), cwd=tmp_path)
    said = one_error(result)
    assert "no admin secret" in said, said


ARGON2_HASH = (  # noqa: S105 - the hash of a secret no test uses
    "$argon2id$v=19$m=65536,t=3,p=4$UcT9tuDIt1ab/HwvKYtKag$"
    "t/TbkGOB/jFSPBfASzA8nozbBXFeRm+AQ2/uywwUHNU"
)


@pytest.mark.parametrize(
    "stored",
    [
        "garbage",
        "argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",
        "$2b$12$abcdefghijklmnopqrstuv",
        # A real hash with characters cut off its end: a digest of 30 bytes, and one
        # that is no base64 of whole bytes. argon2 parses both; no secret matches them.
        ARGON2_HASH[:-3],
        ARGON2_HASH[:-1],
    ],
    ids=["garbage", "dollar-eaten-by-a-shell", "bcrypt", "cut-3", "cut-1"],
)
def test_an_admin_secret_hash_that_is_no_argon2id_hash_is_refused(
    stored: str, data_dir: Path, tmp_path: Path
) -> None:
    """A hash no secret can match (mangled by a shell's ``$`` expansion, or another
    scheme's) started a broker whose admin secret never worked, without a word."""
    env = {"TASKLEASE_ADMIN_SECRET_HASH": stored}
    result = cli(
        "serve", "--data-dir", str(data_dir), "--port", str(free_port()), cwd=tmp_path, env=env
    )
    said = one_error(result)
    assert "admin_secret_hash" in said and stored not in said, said


# --- a broker's answers --------------------------------------------------------------------


def _answering(status: int, content_type: str, body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def html_page() -> Iterator[str]:
    """A web server that is no broker: 200 and an HTML page."""
    yield from _answering(200, "text/html", b"<html><body>Welcome to nginx!</body></html>")


@pytest.fixture(scope="module")
def other_json() -> Iterator[str]:
    """A JSON API that is no broker: 200 and an object without the fields asked for."""
    yield from _answering(200, "application/json", b'{"status": "ok"}')


_COMMANDS = [["status"], ["app", "list"], ["audit", "events"], ["keys", "list"], ["login"]]


@pytest.mark.parametrize("command", _COMMANDS, ids=lambda c: "-".join(c))
def test_an_answer_that_is_not_json_is_a_broker_that_failed(
    command: list[str], html_page: str, tmp_path: Path
) -> None:
    """An answer no broker gives is exit 4 (the broker is unreachable or failed), as
    ``login`` already said of a sign-in answer without a token; it was 3, the code of a
    refusal (a 4xx), for a 200."""
    env = {"TASKLEASE_URL": html_page, "TASKLEASE_ADMIN_SECRET": SECRET}
    said = one_error(cli(*command, cwd=tmp_path, env=env), code=4)
    assert "not JSON" in said, said


@pytest.mark.parametrize("command", _COMMANDS, ids=lambda c: "-".join(c))
def test_an_answer_without_what_was_asked_is_a_broker_that_failed(
    command: list[str], other_json: str, tmp_path: Path
) -> None:
    """A JSON answer lacking what the command asked for: exit 4 for every command. The
    admin sign-in said exit 2 (a usage error), and ``keys list`` printed nothing and
    exited 0, as if the broker published no key."""
    env = {"TASKLEASE_URL": other_json, "TASKLEASE_ADMIN_SECRET": SECRET}
    one_error(cli(*command, cwd=tmp_path, env=env), code=4)


# --- make run ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["abc", "70000", "0"])
def test_make_runs_port_check_refuses_what_is_no_port(port: str) -> None:
    """``make run TASKLEASE_PORT=abc`` ended in int()'s traceback (bind()'s for 70000)
    before any broker was started."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "port_free.py"
    result = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", port], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == (
        f"error: TASKLEASE_PORT must be a port number from 1 to 65535, not {port!r}\n"
    )


# --- a malformed --log-key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "checkpoint", "--url", "http://127.0.0.1:9"],
        ["audit", "verify", "--checkpoint", "held.note"],
        ["audit", "prove", "evt-1", "--bundle", "bundle.json"],
    ],
    ids=["checkpoint", "verify-offline", "prove-offline"],
)
def test_a_malformed_log_key_is_a_usage_error(
    command: list[str], data_dir: Path, tmp_path: Path
) -> None:
    """``--log-key garbage`` is a malformed flag value: exit 2 naming the flag, before
    anything is fetched or read (it was exit 1, ``FAILED``, as if a proof had failed)."""
    (tmp_path / "held.note").write_text("tasklease.test/log\n1\nAAAA\n\n— x AAAA\n")
    (tmp_path / "bundle.json").write_text("{}")
    env = {"TASKLEASE_DATA_DIR": str(data_dir), "TASKLEASE_ADMIN_SECRET": SECRET}
    result = cli(*command, "--log-key", "garbage", cwd=tmp_path, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    said = " ".join(result.stderr.split())
    assert "Invalid value for '--log-key': 'garbage' is not a log verifier key" in said, said


# --- the CLI's private files, another user's --------------------------------------------

OTHER_UID = 12345


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file to another user")
@pytest.mark.parametrize("where", ["--profile", "default-profile", "operator-key-file"])
def test_a_secret_file_another_user_owns_is_one_error_line(where: str, tmp_path: Path) -> None:
    """A profile or an operator key file owned by another user, however private its mode,
    is that user's: its URL, its secret and its key are theirs to choose (as a policy
    file or the config file, it is refused)."""
    env = {"TASKLEASE_URL": "http://127.0.0.1:9"}
    args = ["agents", "list"]
    if where == "--profile":
        path = tmp_path / "profile.toml"
        args += ["--profile", str(path)]
        env = {}
    elif where == "default-profile":
        (tmp_path / ".config" / "tasklease").mkdir(parents=True)
        path = tmp_path / ".config" / "tasklease" / "profile.toml"
    else:
        path = tmp_path / "operator.key"
        env.update(TASKLEASE_OPERATOR="ops", TASKLEASE_OPERATOR_KEY_FILE=str(path))
    path.write_text('url = "http://127.0.0.1:9"\n' if where != "operator-key-file" else "x\n")
    path.chmod(0o600)
    os.chown(path, OTHER_UID, OTHER_UID)
    said = one_error(cli(*args, cwd=tmp_path, env=env, timeout=15))
    assert f"{path} is owned by uid {OTHER_UID}" in said, said


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file to another user")
def test_a_cached_session_another_user_owns_is_no_session(tmp_path: Path) -> None:
    """A cached session that another user's file holds is theirs, not this user's."""
    import json
    import time

    from tasklease.cli._sessions import cached_session, session_path

    url = "http://127.0.0.1:9"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        path = session_path(url)
        path.parent.mkdir(parents=True)
        session = {"url": url, "access_token": "t", "expires_at": time.time() + 600}
        path.write_text(json.dumps(session))
        path.chmod(0o600)
        assert cached_session(url) is not None  # this user's: used
        os.chown(path, OTHER_UID, OTHER_UID)
        assert cached_session(url) is None


# --- every other file the CLI reads -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["policy", "test", "{f}"], "the request file {f}"),
        (["grant-type", "add", "t", "--schema", "{f}"], "the schema file {f}"),
        (["audit", "prove", "--bundle", "{f}", "--log-key", A_LOG_KEY], "proof bundle {f}"),
        (["federation", "add", "peer.example", "--bundle-file", "{f}"], "bundle file {f}"),
        (["attestor", "test", "a", "--evidence", "{f}"], "evidence file {f}"),
        (["operator", "add", "ops", "--role", "admin", "--key", "{f}"], "public key {f}"),
        (["app", "register", "a", "--scope", "read:x", "--public-key", "{f}"], "key {f}"),
    ],
    ids=[
        "policy-test",
        "grant-schema",
        "proof-bundle",
        "federation-bundle",
        "evidence",
        "operator-key",
        "app-key",
    ],
)
def test_a_named_pipe_where_any_cli_file_is_expected_is_one_error_line(
    args: list[str], what: str, tmp_path: Path
) -> None:
    """Every file named on the command line is read by one rule (``localfiles``): a
    named pipe with no writer is refused at once, never waited on."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    env = {"TASKLEASE_URL": "http://127.0.0.1:9", "TASKLEASE_ADMIN_SECRET": SECRET}
    argv = [a.format(f=fifo) for a in args]
    said = one_error(cli(*argv, cwd=tmp_path, env=env, timeout=15))
    assert what.format(f=fifo) in said and "not a regular file: a named pipe" in said, said


def test_a_bounded_read_of_a_named_file_reads_no_more_than_its_limit(tmp_path: Path) -> None:
    """The CLI reads a bundle or an attestor's file with a limit one past what it takes, so
    that a huge file is refused after that many bytes, never read whole into memory."""
    from tasklease.localfiles import read_regular

    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 4096)
    assert read_regular(big, 11) == b"x" * 11
    assert read_regular(big) == b"x" * 4096
