"""An in-process broker for tests: :class:`BrokerForTests`.

    from tasklease.client.testing import BrokerForTests

    def test_my_agent() -> None:
        with BrokerForTests() as broker:
            with broker.agent(["read:data:*"]) as agent:
                ...  # agent.auth, agent.delegate(...), broker.admin().revoke(...)

It runs the real broker (``tasklease.core.broker.Broker``, a SQLite database and a
signing key in a temporary directory, the real HTTP application) served by uvicorn on a
free loopback port in a background thread, so the SDK talks real HTTP to it.

Unlike the rest of :mod:`tasklease.client`, this module needs the broker's own
dependencies (Starlette, uvicorn, argon2-cffi, prometheus-client): install
``tasklease`` itself, not only the SDK's dependencies. They are imported when a broker
starts, not when this module is imported.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from tasklease.client._admin import AdminClient
from tasklease.client._flows import Clock
from tasklease.client._sync import Agent

if TYPE_CHECKING:
    from tasklease.core.broker import Broker

__all__ = ["BrokerForTests"]

_START_TIMEOUT = 20.0


class BrokerForTests:
    """A real broker on ``127.0.0.1:<free port>`` for the duration of a ``with`` block.

    Args:
        clock: the broker's time source (an object with ``now()``, for example
            ``tasklease.core.clock.ManualClock``); the system clock when None. The same
            clock is handed to agents made by :meth:`agent` unless they get their own.
        admin_secret: the operator secret; a random one when None.
        data_dir: where the database and keys live; a temporary directory (removed on
            exit) when None.
        admin_transport: the transport of :meth:`admin` clients, for example an
            ``httpx.HTTPTransport(verify=context)`` that trusts the test CA and presents
            a client certificate when the broker runs in ``mtls`` mode.
        **settings: any other :class:`tasklease.core.config.Config` field, for example
            ``max_renewals=1`` or ``default_ttl=60``. Admin and app authentication rate
            limits default to generous values so tests do not throttle themselves. With
            ``tls_mode="tls"`` or ``"mtls"`` (and ``tls_cert``, ``tls_key``,
            ``tls_client_ca``) the broker serves HTTPS, binding tokens registered over
            mTLS to the client certificate; :attr:`url` is then ``https://``.

    Raises:
        RuntimeError: the server did not start within 20 seconds.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        admin_secret: str | None = None,
        data_dir: str | Path | None = None,
        admin_transport: httpx.BaseTransport | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock
        self.admin_transport = admin_transport
        self.admin_secret = admin_secret or secrets.token_urlsafe(32)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._settings = settings
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._admins: list[AdminClient] = []
        self.url = ""
        self.broker: Broker | None = None
        self.data_dir: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> BrokerForTests:
        """Start the broker and wait until it answers (``with`` calls this)."""
        import uvicorn

        from tasklease.core.broker import Broker
        from tasklease.core.config import Config
        from tasklease.core.keys import load_or_create_keyring
        from tasklease.core.passwords import hash_secret
        from tasklease.http.app import create_app
        from tasklease.http.tls import MTLSHttpToolsProtocol, uvicorn_tls_options
        from tasklease.keystore.plaintext import PlaintextKeyProvider
        from tasklease.storage import open_store

        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tasklease-test-")
            data_dir = Path(self._tmp.name)
        else:
            data_dir = self._data_dir
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        self.data_dir = data_dir
        settings: dict[str, Any] = {
            "admin_auth_burst": 10_000,
            "admin_auth_rate": 10_000.0,
            "app_auth_burst": 10_000,
            "app_auth_rate": 10_000.0,
            **self._settings,
            "data_dir": str(data_dir),
            "database": str(data_dir / "tasklease.db"),
            "key_dir": str(data_dir / "keys"),
            "admin_secret_hash": hash_secret(self.admin_secret),
        }
        config = Config(**settings)
        store = open_store(config.database)
        # A throwaway broker in a temporary directory: its keys are plaintext on purpose.
        keyring = load_or_create_keyring(Path(config.key_dir), PlaintextKeyProvider())
        self.broker = Broker(
            config, store, keyring, clock=self.clock, nonce_secret=secrets.token_bytes(32)
        )
        app = create_app(self.broker)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        tls: dict[str, Any] = uvicorn_tls_options(config)
        if config.tls_mode == "mtls":
            tls["http"] = MTLSHttpToolsProtocol  # puts the client certificate in the scope
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                loop="asyncio",
                lifespan="on",
                log_level="warning",
                access_log=False,
                server_header=False,
                # Forwarded headers are ours to judge (trusted_proxies), never uvicorn's.
                proxy_headers=False,
                **tls,
            )
        )
        self._server = server
        self._socket = sock
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="tasklease-test-broker", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test broker did not start")
            time.sleep(0.01)
        scheme = "http" if config.tls_mode == "none" else "https"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop the server, close the database and remove the temporary directory."""
        for admin in self._admins:
            admin.close()
        self._admins.clear()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.broker is not None:
            self.broker.audit.close()
            self.broker.store.close()
            self.broker = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> BrokerForTests:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- conveniences ---------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """An :class:`AdminClient` for this broker (closed when the broker stops)."""
        client = AdminClient(self.url, self.admin_secret, transport=self.admin_transport)
        self._admins.append(client)
        return client

    def launch_token(
        self,
        scope: Sequence[str],
        *,
        agent_name: str = "test-agent",
        max_ttl: int | None = None,
        single_use: bool = True,
        ttl: int | None = None,
    ) -> str:
        """A fresh launch token allowing at most ``scope``."""
        if not self._admins:
            self.admin()
        answer = self._admins[0].create_launch_token(
            agent_name, scope, max_ttl=max_ttl, single_use=single_use, ttl=ttl
        )
        token = answer["launch_token"]
        if not isinstance(token, str):
            raise TypeError("the broker's answer lacks a launch token")
        return token

    def agent(
        self,
        scope: Sequence[str],
        *,
        orch_id: str = "test-orch",
        task_id: str = "test-task",
        max_ttl: int | None = None,
        **kwargs: Any,
    ) -> Agent:
        """Register an :class:`~tasklease.client.Agent` with a fresh launch token.

        ``kwargs`` go to :meth:`Agent.register` (``clock``, ``renew_margin``...).
        """
        kwargs.setdefault("clock", self.clock)
        token = self.launch_token(scope, max_ttl=max_ttl)
        return Agent.register(self.url, token, orch_id, task_id, scope, **kwargs)

    def __repr__(self) -> str:
        return f"BrokerForTests(url={self.url!r})"
