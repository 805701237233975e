"""The ``tasklease`` command: set up, serve, and check a broker.

Exit codes: 0 success; 1 the check failed (for example a broken audit chain); 2 usage or
configuration error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tasklease.settings import ConfigError, load_config

app = typer.Typer(
    name="tasklease",
    help="A credential broker for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Inspect and verify the audit log.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="TOML config file (default: <data-dir>/config.toml)."),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir", help="Directory for the database and keys.", envvar="TASKLEASE_DATA_DIR"
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _write_private(path: Path, text: str, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    if path.is_symlink():
        raise _fail(f"{path} is a symbolic link; refusing to write")
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


@app.command()
def init(
    data_dir: DataDirOpt = None,
    secret_file: Annotated[
        str | None,
        typer.Option(
            help="Write the admin secret to this file (mode 0600) instead of printing it."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing config and secret.")] = False,
) -> None:
    """Create a data directory, a config with a fresh admin secret, and a signing key.

    The admin secret is shown once (or written once to --secret-file); only its argon2id
    hash is kept in the config.
    """
    from tasklease.core.keys import load_or_create_keyring
    from tasklease.core.passwords import hash_secret, new_secret

    directory = Path(data_dir or ".tasklease")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path = directory / "config.toml"
    if config_path.exists() and not force:
        raise _fail(f"{config_path} already exists (use --force to replace it and its secret)")
    secret = new_secret()
    document = (
        "# tasklease broker configuration; every setting is documented in docs/configuration.md\n"
        f'data_dir = "{directory.as_posix()}"\n'
        'host = "127.0.0.1"\n'
        "port = 8080\n"
        f'admin_secret_hash = "{hash_secret(secret)}"\n'
    )
    _write_private(config_path, document, force=force)
    keyring = load_or_create_keyring(directory / "keys")
    out.print(f"Config written to {config_path}")
    out.print(f"Signing key {keyring.active_kid} in {directory / 'keys'}")
    if secret_file:
        _write_private(Path(secret_file), secret + "\n", force=force)
        out.print(f"Admin secret written to {secret_file} (mode 0600); it is not shown again.")
    else:
        out.print(f"Admin secret (shown once, save it now): {secret}", highlight=False)


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
) -> None:
    """Run the broker in the foreground."""
    from tasklease.server import serve as run_server

    try:
        cfg = load_config(config, overrides={"host": host, "port": port, "data_dir": data_dir})
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    run_server(cfg)


@db_app.command("migrate")
def db_migrate(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply pending schema migrations to the configured database."""
    from tasklease.storage import open_store

    try:
        cfg = load_config(config, overrides={"data_dir": data_dir})
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    store = open_store(cfg.database, migrate=True)
    store.close()
    out.print(f"database {cfg.database} is at the current schema")


@audit_app.command("verify")
def audit_verify(
    database: Annotated[
        str | None, typer.Option(help="Verify this database file directly (works offline).")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Walk the audit hash chain; exit 1 naming the first broken link."""
    from tasklease.core.audit import verify_chain
    from tasklease.storage import SchemaError, open_store

    if database is None:
        try:
            database = load_config(config, overrides={"data_dir": data_dir}).database
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    if "://" not in database and not Path(database).is_file():
        raise _fail(f"database {database} does not exist")
    try:
        store = open_store(database, migrate=False)
    except SchemaError as exc:
        raise _fail(str(exc)) from None
    try:
        total, _ = store.audit_head()
        with out.status("verifying audit chain") as status:
            report = verify_chain(
                store.iter_audit(),
                progress=lambda n: status.update(f"verifying audit chain: {n}/{total} events"),
            )
    finally:
        store.close()
    if report.ok:
        out.print(f"audit chain intact: {report.checked} events, head {report.head_hash}")
        return
    err.print(
        f"[bold red]audit chain broken[/] at {report.broken_at}: {report.reason} "
        f"({report.checked} events verified before it)",
        highlight=False,
    )
    raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
