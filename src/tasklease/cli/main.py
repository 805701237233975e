"""The ``tasklease`` command: set up, serve, check and operate a broker.

Local commands (``init``, ``serve``, ``db migrate``, ``db accept-restore``,
``audit verify --database``, ``keys encrypt``) work on a data directory; the others talk
to a running broker over HTTP through :class:`tasklease.client.AdminClient`
(``--url``/``TASKLEASE_URL``; a named operator from ``TASKLEASE_OPERATOR`` with
``TASKLEASE_OPERATOR_SECRET`` or ``TASKLEASE_OPERATOR_KEY_FILE``, or the admin secret from
``TASKLEASE_ADMIN_SECRET`` or ``--admin-secret``; or a 0600 profile file; a client
certificate for a broker with ``tls_mode = "mtls"`` from ``--client-cert`` and
``--client-key``; see docs/cli.md).

Exit codes: 0 success; 1 a check failed (for example a broken audit chain) or the thing
asked for does not exist; 2 usage or configuration error; 3 the broker refused the
request (4xx); 4 the broker is unreachable or failed (5xx).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tasklease.cli import (
    _attestors,
    _audit,
    _doctor,
    _federation,
    _inventory,
    _keys,
    _login,
    _operators,
    _policy,
    _remote,
    _restore,
    _sbom,
    _tenants,
    _token,
    _transparency,
)
from tasklease.cli._common import (
    EXIT_CODES_HELP,
    AdminSecretOpt,
    ConfigOpt,
    DataDirOpt,
    ProfileOpt,
    allow_insecure_http,
    error_line,
    fail,
    out,
    present_client_certificate,
    select_tenant,
    selected_tenant,
)
from tasklease.cli._configfile import setting_line, with_settings
from tasklease.cli._help import CommandTree
from tasklease.localfiles import read_regular

# `tasklease --help` and every command import this module: what only the local commands
# use (sqlite3, the settings, storage, the broker) is imported in them.
if TYPE_CHECKING:
    import sqlite3

    from tasklease.core.config import Config
    from tasklease.core.records import TenantRecord
    from tasklease.core.store import Store

app = typer.Typer(
    name="tasklease",
    help=f"A credential broker for AI agents.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=CommandTree,
)
audit_app = typer.Typer(help="Inspect and verify the audit log.", no_args_is_help=True)
db_app = typer.Typer(
    help="Database schema management, and accepting a restored database.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        try:
            number = installed("tasklease")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree
            number = "unknown"
        sys.stdout.write(f"tasklease {number}\n")
        raise typer.Exit(0)


@app.callback()
def _every_command(
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            metavar="NAME",
            envvar="TASKLEASE_TENANT",
            help="The tenant to address (its API under /t/<name>/; default: the default "
            "tenant). Sign in as one of its operators.",
            show_envvar=False,
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            envvar="TASKLEASE_INSECURE_HTTP",
            help="Send credentials over plain http:// to a broker beyond loopback (refused "
            "otherwise: they would cross the network in clear). Only on a network you trust.",
            show_envvar=False,
        ),
    ] = False,
    client_cert: Annotated[
        str | None,
        typer.Option(
            "--client-cert",
            metavar="FILE",
            envvar="TASKLEASE_CLIENT_CERT",
            help="Present this client certificate (PEM) to an https:// broker, with "
            '--client-key: a broker with tls_mode = "mtls" asks every connection for one '
            "(or TASKLEASE_CLIENT_CERT, or client_cert in the profile).",
            show_envvar=False,
        ),
    ] = None,
    client_key: Annotated[
        str | None,
        typer.Option(
            "--client-key",
            metavar="FILE",
            envvar="TASKLEASE_CLIENT_KEY",
            help="The private key (unencrypted PEM, mode 0600) of --client-cert (or "
            "TASKLEASE_CLIENT_KEY, or client_key in the profile).",
            show_envvar=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    """Options that apply to every command."""
    select_tenant(tenant)
    allow_insecure_http(insecure_http)
    present_client_certificate(client_cert, client_key)


def _fail(message: str, code: int = 2) -> typer.Exit:
    error_line(message)
    return typer.Exit(code)


def _os_problem(exc: OSError) -> str:
    """An OSError in one line: what went wrong and, when it says, on which path."""
    what = exc.strerror or str(exc)
    return f"{what}: {exc.filename}" if exc.filename is not None else what


def _sqlite_problem(shown: str, exc: sqlite3.DatabaseError) -> str:
    """What is wrong with the SQLite database ``shown`` (its URL, redacted), in one line."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable, read-only, ...
        return f"cannot open database {shown}: {exc}"
    return f"{shown} is not a tasklease database ({exc})"


def _open_local_store(database: str, *, migrate: bool) -> Store:
    """Open the database of a local command, never creating one (only ``init`` does); a
    missing file, a file that is not a tasklease database, a data directory that is a
    file, an unreadable path: one error line and exit 2 (a configuration error), never a
    traceback."""
    import sqlite3

    from tasklease.core.errors import Unavailable
    from tasklease.storage import SchemaError, open_store, redact_url

    shown = redact_url(database)
    try:
        return open_store(database, migrate=migrate, create=False)
    except (SchemaError, Unavailable) as exc:
        fail(str(exc.reason or exc))
    except ValueError as exc:  # its words never quote the URL
        fail(f"database: {exc}")
    except sqlite3.DatabaseError as exc:
        fail(_sqlite_problem(shown, exc))
    except FileExistsError as exc:  # a directory on the way to it is a file
        fail(f"cannot open database {shown}: {exc.filename} is not a directory")
    except OSError as exc:
        fail(f"cannot open database {shown}: {_os_problem(exc)}")


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """``text`` as a new 0600 file of this user at ``path`` (its directory made 0700 when
    missing); with ``force`` it replaces a file there, never writing into it."""
    from tasklease.keystore import KeyStoreError, write_private_file

    try:
        write_private_file(path, text.encode("utf-8"), replace=force)
    except FileExistsError:
        raise _fail(f"{path} exists; use --force to replace it") from None
    except KeyStoreError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None


@app.command()
def init(
    data_dir: DataDirOpt = None,
    secret_file: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Write the admin secret to this file (mode 0600) instead of printing it.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Initialise again a data directory that holds a broker: keep its keys, "
            "database and every setting of its config file; replace the admin secret and "
            "the first operator's secret."
        ),
    ] = False,
    key_provider: Annotated[
        str | None,
        typer.Option(
            metavar="PROVIDER",
            help="Where the signing keys live: file (encrypted, the default), pkcs11 "
            "(an HSM, set up by TASKLEASE_PKCS11_* variables) or plaintext.",
            envvar="TASKLEASE_KEY_PROVIDER",
        ),
    ] = None,
    key_passphrase_file: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="An existing 0600 file holding the signing-key passphrase (file provider). "
            "Default: TASKLEASE_KEY_PASSPHRASE, else a new random key-passphrase file "
            "beside the admin secret file (or in the data directory).",
        ),
    ] = None,
    operator_name: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Name of the first admin operator; its secret goes to a 0600 file "
            "operator-<name>-secret beside the admin secret file (or in the data directory).",
        ),
    ] = "admin",
) -> None:
    """Create a broker: its data directory, config, keys, database and first operator.

    The config gets a fresh admin secret, and the first operator is an admin. This is the
    only command that creates a broker's state: serve and the others refuse to start
    without it.

    Refuses a data directory that already holds a broker (a config file, a database or
    keys) unless --force. The admin secret is shown once (or written once to
    --secret-file); only its argon2id hash is kept in the config. The signing key is
    encrypted (key_provider file) under a passphrase in a file of its own or in
    TASKLEASE_KEY_PASSPHRASE: the command says where. The first admin operator's secret is
    written to a 0600 file, whose path is printed.
    """
    from tasklease.core.errors import InvalidRequest
    from tasklease.core.operators import operator_name as valid_operator_name
    from tasklease.core.passwords import hash_secret, new_secret
    from tasklease.localfiles import make_private_directories

    try:
        valid_operator_name(operator_name)
    except InvalidRequest as exc:
        raise _fail(f"--operator-name: {exc.detail}") from None
    if key_provider is not None and key_provider not in _keys.KEY_PROVIDERS:
        fail(f"--key-provider must be one of {', '.join(_keys.KEY_PROVIDERS)}")
    # Absolute, so that the config file names this directory wherever it is read from.
    directory = Path(data_dir or ".tasklease").absolute()
    try:
        not_a_directory = directory.exists() and not directory.is_dir()
    except OSError as exc:  # a directory on the way this user may not look into
        fail(f"cannot use data directory {directory}: {_os_problem(exc)}")
    if not_a_directory:
        fail(f"data directory {directory} exists and is not a directory")
    config_path = directory / "config.toml"
    kept = _kept_config(config_path) if force else None
    keep = config_path if kept is not None else None
    settings = _init_settings(directory, keep, key_provider, key_passphrase_file)
    _refuse_a_broker(settings, config_path, force=force)
    beside = Path(secret_file).parent if secret_file else directory
    operator_secret_path = beside / f"operator-{operator_name}-secret"
    for path in (operator_secret_path, *([Path(secret_file)] if secret_file else [])):
        if os.path.lexists(path) and not force:
            raise _fail(f"{path} already exists (use --force to replace it)")
    try:
        make_private_directories(directory)
    except OSError as exc:
        fail(f"cannot create data directory {directory}: {_os_problem(exc)}")
    secret = new_secret()
    hashed = hash_secret(secret)
    key_lines, made_key = _keys.init_keys(settings, secret_file=secret_file)
    if kept is not None:
        try:
            document = with_settings(kept, {"admin_secret_hash": hashed}, key_lines)
        except ValueError as exc:
            fail(f"config file {config_path}: {exc}")
    else:
        document = "".join(
            line + "\n"
            for line in (
                "# tasklease broker configuration; every setting is documented in "
                "docs/configuration.md",
                setting_line("data_dir", directory.as_posix()),
                setting_line("host", "127.0.0.1"),
                "port = 8080",
                setting_line("admin_secret_hash", hashed),
                *key_lines,
            )
        )
    # The secret first: a configuration is never left holding the hash of a secret that
    # could not be saved.
    if secret_file:
        _write_private(Path(secret_file), secret + "\n", force=force)
    _write_private(config_path, document, force=force)
    kept_note = " (its other settings kept)" if kept is not None else ""
    out.print(f"Config written to {config_path}{kept_note}", highlight=False)
    if secret_file:
        out.print(f"Admin secret written to {secret_file} (mode 0600); it is not shown again.")
    else:
        out.print(f"Admin secret (shown once, save it now): {secret}", highlight=False)
    if kept is not None:
        out.print(
            "At the broker's next start the admin's tokens, and the launch tokens it made "
            "with the secret before, end; the admin signs in again clock_skew + 1 s later.",
            highlight=False,
        )
    _first_operator(
        config_path, directory, operator_name, operator_secret_path, force=force, made_key=made_key
    )


def _kept_config(path: Path) -> str | None:
    """The text of the config file ``init --force`` keeps (None when there is none)."""
    if not os.path.lexists(path):
        return None
    try:
        return read_regular(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the config file {path} that --force keeps: {exc}")


def _init_settings(
    directory: Path, kept: Path | None, key_provider: str | None, key_passphrase_file: str | None
) -> Config:
    """What init works with: the environment and the options, over the config file it
    keeps (``--force``) or none; the data directory is the one given."""
    from tasklease.settings import ConfigError, load_config

    try:
        return load_config(
            str(kept) if kept is not None else os.devnull,
            overrides={
                "data_dir": str(directory),
                "key_provider": key_provider,
                "key_passphrase_file": key_passphrase_file,
            },
        )
    except ConfigError as exc:
        kept_note = " (init --force keeps the config file: correct it first)" if kept else ""
        fail(f"{exc}{kept_note}")


def _refuse_a_broker(settings: Config, config_path: Path, *, force: bool) -> None:
    """Exit 2 unless there is room for a new broker: without --force, no part of one where
    ``settings`` point (config file, database, keys, nonce secret); a database that cannot
    hold one (``memory://``) never. A PostgreSQL database is opened to look at it: one
    whose audit log holds events is a broker's."""
    from tasklease import brokerstate
    from tasklease.storage import is_shared_database, redact_url

    try:
        brokerstate.refuse_unshared(settings.database)
    except brokerstate.StateError as exc:
        fail(str(exc))
    if force:
        return
    found = brokerstate.present(settings, config_path)
    if is_shared_database(settings.database):
        store = _open_local_store(settings.database, migrate=False)
        try:
            events, _ = store.audit_head()
        finally:
            store.close()
        if events:
            found.append(f"the database {redact_url(settings.database)} ({events} audit events)")
    if found:
        fail(
            f"a broker already exists here: {'; '.join(found)}. init never makes a broker "
            "over another one; `tasklease init --force` initialises it again (keeps its "
            "keys, database and settings; replaces the admin and first operator secrets)"
        )


def _first_operator(
    config_path: Path,
    directory: Path,
    name: str,
    secret_path: Path,
    *,
    force: bool,
    made_key: bool,
) -> None:
    """Make (or, with --force, re-key) the first admin operator in the new broker's
    database, and write its secret to ``secret_path`` (0600). Opening the broker makes
    what of its state is missing (database, nonce secret, audit log key); the keys init
    made are audited first (``signing_key_created``, ``audit_log_key_created``)."""
    from tasklease import brokerstate
    from tasklease.core.errors import TaskleaseError
    from tasklease.core.kernel import RequestContext
    from tasklease.keystore import KeyStoreError
    from tasklease.server import build_broker
    from tasklease.settings import ConfigError, load_config

    try:
        config = load_config(str(config_path), overrides={"data_dir": str(directory)})
        log_keys = Path(config.key_dir) / "log"
        made_log_key = not (log_keys.is_dir() and any(log_keys.glob("signing-*.pem")))
        broker = build_broker(config, create=True)
    except (ConfigError, KeyStoreError, TaskleaseError, brokerstate.StateError) as exc:
        raise _fail(f"cannot open the new broker to add its first operator: {exc}") from None
    try:
        ctx = RequestContext()
        broker.record_keys_made(ctx, signing_key=made_key, log_key=made_log_key)
        _, secret = broker.set_up_first_admin(name, ctx)
    except TaskleaseError as exc:
        raise _fail(f"first operator {name}: {exc.detail}") from None
    finally:
        broker.audit.close()
        broker.store.close()
    _write_private(secret_path, secret + "\n", force=force)
    out.print(
        f"Admin operator {name}: its secret is in {secret_path} (mode 0600); sign in with "
        f"TASKLEASE_OPERATOR={name} and TASKLEASE_OPERATOR_SECRET set to that secret",
        highlight=False,
        markup=False,
    )


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="Bind address (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port (default 8080).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Worker processes sharing the database and revocations."
        ),
    ] = 1,
    loop: Annotated[
        str, typer.Option(metavar="LOOP", help="Event loop: asyncio (default) or uvloop.")
    ] = "asyncio",
) -> None:
    """Run the broker in the foreground."""
    from tasklease.server import LOOPS
    from tasklease.server import serve as run_server
    from tasklease.settings import ADMIN_SECRET_ENV, ConfigError, load_config

    if loop not in LOOPS:
        raise _fail(f"--loop must be one of {', '.join(LOOPS)}")
    notices: list[str] = []
    try:
        cfg = load_config(
            config,
            overrides={"host": host, "port": port, "data_dir": data_dir},
            notices=notices,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    import sqlite3

    from tasklease.brokerstate import StateError
    from tasklease.core.errors import Unavailable
    from tasklease.core.rollback import DatabaseWentBack
    from tasklease.http.tls import TLSFileError
    from tasklease.keystore import KeyStoreError
    from tasklease.storage import SchemaError, redact_url

    data = Path(cfg.data_dir)
    if data.exists() and not data.is_dir():
        fail(f"data directory {data} exists and is not a directory")
    busy = _port_taken(cfg.host, cfg.port)
    if busy:
        problem, hint = busy
        fail(problem, hint=hint)
    try:
        run_server(
            cfg,
            workers=workers,
            loop=loop,
            notices=notices,
            admin_secret=os.environ.get(ADMIN_SECRET_ENV) or None,
        )
    except SystemExit as exc:
        # The server's refusals to start (no admin secret, metrics_listen or a worker's
        # port that cannot be bound, a worker that died starting) are configuration
        # errors told in words: exit 2 and an error line, as every other. A number is the
        # server's own status and stays.
        if isinstance(exc.code, str):
            fail(exc.code)
        raise
    except DatabaseWentBack as exc:
        fail(str(exc))
    except TLSFileError as exc:
        fail(str(exc))  # a configuration error: exit 2
    except StateError as exc:
        fail(str(exc))
    except (SchemaError, Unavailable) as exc:
        raise _fail(f"{exc} ({exc.reason})" if exc.reason != exc.detail else str(exc)) from None
    except KeyStoreError as exc:
        fail(f"signing keys: {exc}")
    except sqlite3.DatabaseError as exc:
        fail(_sqlite_problem(redact_url(cfg.database), exc))
    except OSError as exc:  # a file of the broker's state this user may not read or write
        fail(f"cannot open the broker's files: {_os_problem(exc)}")


def _port_taken(host: str, port: int) -> tuple[str, str] | None:
    """Why ``host:port`` cannot be listened on, and what to change (None when it can):
    said before anything else, rather than after a start-up that cannot end well."""
    import errno
    import socket

    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            problem = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is taken "
                    "(another broker, or another program, is listening there)",
                    f"stop it, or pass --port (or set TASKLEASE_PORT), e.g. --port {port + 1}",
                )
            if exc.errno == errno.EACCES:
                return problem, "pass a port above 1023 (--port or TASKLEASE_PORT)"
            # The address: a name that does not resolve, or an address of no interface here.
            return (
                problem,
                "pass --host (or set TASKLEASE_HOST) to an address of this machine, "
                "e.g. 127.0.0.1, or 0.0.0.0 for every interface",
            )
    return None


@db_app.command("migrate")
def db_migrate(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply pending schema migrations to the configured database.

    A SQLite database must exist (`tasklease init` makes it; serve migrates it too); an
    empty PostgreSQL database gets its schema here, before `tasklease init`.
    """
    from tasklease.settings import ConfigError, load_config
    from tasklease.storage import redact_url

    try:
        cfg = load_config(config, overrides={"data_dir": data_dir})
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _open_local_store(cfg.database, migrate=True).close()
    out.print(f"database {redact_url(cfg.database)} is at the current schema", highlight=False)


_restore.register(db_app)


@audit_app.command("verify")
def audit_verify(
    database: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Verify this database file directly (works offline)."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Verify a running broker's log over HTTP instead of a database."
        ),
    ] = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A checkpoint you kept: prove the log only grew since (with --url, against "
            "the broker's latest checkpoint and the events it serves; else against the "
            "database's events).",
        ),
    ] = None,
    log_key: _transparency.LogKeyOpt = None,
    witness: _transparency.WitnessOpt = None,
    quorum: _transparency.QuorumOpt = None,
    update: Annotated[
        bool, typer.Option(help="With --checkpoint and --url: keep the newer checkpoint.")
    ] = False,
) -> None:
    """Walk the audit hash chain and its Merkle tree; exit 1 naming the first broken link.

    Without --url it reads the database directly (works offline, broker stopped or not);
    with --url it pages through the broker's /v1/audit/events as the operator and holds
    them to its latest checkpoint (checked with --log-key, else with the keys it serves). With
    --checkpoint it proves against a checkpoint kept outside the database (a fork, a
    rewritten or cut log, exits 1). With --witness the checkpoint it holds the log to (the
    broker's latest with --url, else the one kept) must be cosigned by the witnesses.
    """
    witnesses = _transparency.witnessed(witness, quorum)
    if url is not None:
        if database is not None:
            raise _fail("give either --url or --database, not both")
        _audit.verify_over_http(
            url, admin_secret, profile, checkpoint_file=checkpoint, log_keys=log_key,
            update=update, witnesses=witnesses,
        )  # fmt: skip
        return
    if witnesses.keys and checkpoint is None:
        raise _fail("--witness checks a checkpoint: give the one you kept (--checkpoint)")
    store, record = _local_audit_log(database, config, data_dir)
    try:
        _transparency.verify_database(
            store,
            checkpoint_file=checkpoint,
            log_keys=log_key,
            local_keys=lambda: _local_log_keys(config, data_dir, record),
            witnesses=witnesses,
        )
    finally:
        store.close()


def _local_audit_log(
    database: str | None, config: str | None, data_dir: str | None
) -> tuple[Store, TenantRecord | None]:
    """The audit log a local ``audit`` command reads, from the database itself: the
    broker's own, or with ``--tenant`` that tenant's chain (and its registry record),
    whether the tenant is served or was removed (its log is kept). ``database`` is a file
    or URL; else the one the configuration (``config``, ``data_dir``) names.

    Exits 2 when the database cannot be found or opened, 1 when it holds no such tenant.
    """
    if database is None:
        from tasklease.settings import ConfigError, load_config

        try:
            database = load_config(config, overrides={"data_dir": data_dir}).database
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    if "://" not in database and not Path(database).is_file():
        missing = "is not a file" if Path(database).exists() else "does not exist"
        raise _fail(f"database {database} {missing}")
    store = _open_local_store(database, migrate=False)
    tenant = selected_tenant()
    if tenant is None:
        return store, None
    # A name the database does not hold has an empty chain, which is not "intact".
    record = store.get_tenant(tenant)
    if record is None:
        store.close()
        raise _fail(
            f"database {database} holds no tenant {tenant} (a tenant's log is kept "
            "after its removal too): see its tenants with `tasklease tenant list`",
            1,
        )
    return store.for_tenant(tenant), record  # that tenant's own chain


def _local_log_keys(
    config: str | None, data_dir: str | None, tenant: TenantRecord | None
) -> list[str] | str:
    """The audit log verifier keys of the broker's own log, or of ``tenant``'s, from the
    key directory its configuration names (a tenant's: ``<key_dir>/tenants/<name>``,
    through the same key provider, with its secrets), as ``vkey`` strings under the
    origin that log's checkpoints name; else why they cannot be read."""
    from tasklease.core.keydirs import LOG_KEY_DIR
    from tasklease.core.keys import load_keyring
    from tasklease.core.tenantids import DEFAULT_TENANT, log_origin
    from tasklease.keystore import KeyStoreError, open_key_provider
    from tasklease.rules.note import ED25519, VerifierKey
    from tasklease.settings import ConfigError, load_config

    whose = "the broker's" if tenant is None else f"tenant {tenant.name}'s"
    try:
        base = load_config(config, overrides={"data_dir": data_dir})
        if not base.key_dir:
            return "the configuration names no key directory"
        # A tenant's log is its broker's: its configuration, its key directory, and the
        # origin its checkpoints name (core.transparency), as the broker opens them.
        if tenant is None:
            cfg = base
        else:
            from tasklease.core.tenants import tenant_config

            cfg = tenant_config(base, tenant)
        origin = log_origin(
            cfg.audit_origin, bool(cfg.audit_log_origin), tenant.name if tenant else DEFAULT_TENANT
        )
        ring = load_keyring(Path(cfg.key_dir) / LOG_KEY_DIR, open_key_provider(base))
    except (ConfigError, KeyStoreError, ValueError, OSError) as exc:
        return f"{whose} log key cannot be read ({exc})"
    keys = (ring.public_key(kid) for kid in ring.kids())
    return [VerifierKey(origin, ED25519, key).vkey for key in keys if key is not None]


_doctor.register(app)  # local, like init and serve
_sbom.register(app)  # local: the installed distributions' metadata

# The commands that talk to a running broker, after the local ones in --help.
_remote.register(app)
_inventory.register(app, _remote.launch_token_app)
_login.register(app)
_operators.register(app)
_tenants.register(app)
_federation.register(app)
_attestors.register(app)
_policy.register(app)
_audit.register(audit_app, _local_audit_log)
_token.register(app)
_keys.register(_remote.keys_app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
