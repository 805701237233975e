"""Wiring: build a Broker from a Config and serve it with uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import load_or_create_keyring
from tasklease.storage import open_store

__all__ = ["build_broker", "serve"]

_log = logging.getLogger("tasklease.server")


def build_broker(config: Config, *, migrate: bool = True) -> Broker:
    """Open storage (migrating it if asked) and the key ring, and build the Broker."""
    Path(config.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    store = open_store(config.database, migrate=migrate)
    keyring = load_or_create_keyring(Path(config.key_dir))
    return Broker(config, store, keyring, nonce_secret=_nonce_secret(Path(config.key_dir)))


def _nonce_secret(key_dir: Path) -> bytes:
    """The secret that authenticates challenge nonces, created once beside the keys (0600).

    Every process and replica that shares the key directory accepts the others' nonces.
    """
    path = key_dir / "nonce.secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) != 32 or path.is_symlink():
            raise ValueError(f"{path} is not a 32-byte secret file") from None
        return data
    secret = os.urandom(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
        fh.flush()
        os.fsync(fh.fileno())
    return secret


def serve(config: Config) -> None:
    """Run the broker in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from tasklease.http.app import create_app

    if not config.admin_secret_hash:
        raise SystemExit(
            "no admin secret configured: run `tasklease init` or set TASKLEASE_ADMIN_SECRET"
        )
    broker = build_broker(config)
    app = create_app(broker)
    if config.host in ("0.0.0.0", "::"):  # noqa: S104 - a warning about exactly that
        _log.warning("listening on all interfaces without TLS: put it behind TLS")
    print(
        f"tasklease broker listening on http://{config.host}:{config.port} "
        f"(database {config.database}, pid {os.getpid()})",
        flush=True,
    )
    try:
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            loop="asyncio",
            http="httptools",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        broker.store.close()
