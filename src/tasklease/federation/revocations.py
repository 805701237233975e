"""Following federated domains' revocation feeds: revocation across the bridge.

For each federated domain whose record names a revocation feed (``revocation_feed``: the
peer broker's base URL, the tenant's if the peer is one; ``feed_credentials_file``: the
name of a 0600 JSON file in :func:`credentials_dir` with the ``client_id`` and
``client_secret`` of an app the peer's operator made for us), one thread reads
``<base>/v1/revocations/stream`` (server-sent events) with an app token from
``<base>/v1/app/auth``, over HTTPS checked like the bundle endpoint
(the record's CA certificates or the system store, and the URL's host). Every entry read
goes to :meth:`Broker.apply_federated_revocations`, which makes it our own revocation of
what we derived from that domain (``core.peerfeed``). The stream is resumed from the last
entry seen after a disconnection; the first connection reads every unexpired entry.

One follower per deployment: every process calls :meth:`FeedFollowers.tick` each second
for each tenant, and only the holder of the tenant's store lease runs that tenant's
followers (another process takes over at its next tick once a holder that stops gives the
lease up, ``Broker.release_leases``, or within :data:`LEASE_TTL` of one that dies). The
credential is read from its file at each sign-in, never stored or logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasklease.bounds import bounded_lines, read_app_token
from tasklease.core.broker import Broker
from tasklease.core.errors import TaskleaseError
from tasklease.core.records import FederationRecord, RevocationRecord
from tasklease.core.revocation import feed_time
from tasklease.core.tenants import DEFAULT_TENANT
from tasklease.federation.refresher import tls_context
from tasklease.keystore import KeyStoreError, read_secret_file

__all__ = [
    "HEARD_EVERY",
    "LEASE_TTL",
    "FeedError",
    "FeedFollowers",
    "FeedSource",
    "credentials_dir",
    "feed_source",
    "parse_event",
]

LEASE_TTL = 5.0
"""Seconds the follower lease outlives its holder's last tick."""
READ_TIMEOUT = 10.0
"""Seconds without a byte before the stream is taken for dead (the feed beats every 2 s)."""
CONFIG_RETRY = 30.0
"""Seconds before trying again after a refusal that needs fixing (credentials, URL)."""
HEARD_EVERY = 5.0
"""Seconds between two records of a current feed in the store (less for a tighter
``federation_feed_max_staleness``: a quarter of it)."""
_STREAM = "/v1/revocations/stream"
_AUTH = "/v1/app/auth"
_MAX_LINE = 65536
_log = logging.getLogger("tasklease.federation")


class FeedError(Exception):
    """The feed cannot be followed now; ``reason`` never holds a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FeedSource:
    """Where and how to follow one federated domain's revocations."""

    trust_domain: str
    base_url: str
    ca_pem: str
    credentials_file: str


def credentials_dir(broker: Broker) -> Path:
    """Where a tenant's feed credential files live on the broker's host:
    ``<data_dir>/federation/`` (``<data_dir>/federation/tenants/<name>/`` for a tenant).
    Records name a file here, never a path, so the admin API cannot make the broker read
    a file elsewhere (another tenant's)."""
    base = Path(broker.config.data_dir) / "federation"
    return base if broker.tenant == DEFAULT_TENANT else base / "tenants" / broker.tenant


def feed_source(record: FederationRecord, directory: Path) -> FeedSource | None:
    """The feed ``record`` names, its credential file in ``directory``; None if none."""
    name = record.feed_credentials_file
    if not record.revocation_feed or not name or "/" in name or name in (".", ".."):
        return None
    return FeedSource(
        record.trust_domain,
        record.revocation_feed.rstrip("/"),
        record.ca_pem,
        str(directory / name),
    )


def read_credentials(path: str) -> tuple[str, str]:
    """``(client_id, client_secret)`` from a 0600 JSON file of this user's."""
    try:
        text = read_secret_file(Path(path), "feed_credentials_file")
    except KeyStoreError as exc:
        raise FeedError(str(exc)) from None
    except OSError as exc:
        raise FeedError(f"feed_credentials_file: {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    client_id = data.get("client_id") if isinstance(data, dict) else None
    secret = data.get("client_secret") if isinstance(data, dict) else None
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id:
        raise FeedError(
            f"feed_credentials_file: {path} must be a JSON object with client_id and client_secret"
        )
    return client_id, secret


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "" for a comment (keepalive)
    data: str = ""
    id: str = ""  # the last ``id:`` field read (the WHATWG last event ID)


def parse_event(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events (the WHATWG format) from a stream's lines."""
    kind, data, ident, size = "", list[str](), "", 0
    for line in lines:
        if len(line) > _MAX_LINE:
            raise FeedError("feed line too long")
        if not line:
            if data:
                yield Event(kind or "message", "\n".join(data), ident)
            kind, data, size = "", [], 0
        elif line.startswith(":"):
            yield Event("")
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                size += len(value)
                if size > _MAX_LINE:  # an event's data lines, together
                    raise FeedError("feed event too large")
                data.append(value)
            elif name == "id" and "\x00" not in value:
                ident = value


def _entry(data: str) -> tuple[RevocationRecord, float | None]:
    entry: Any = json.loads(data)
    if not isinstance(entry, dict):
        raise FeedError("feed entry is not an object")
    level, target = entry.get("level"), entry.get("target")
    revoked_at, expires_at, seq = entry.get("revoked_at"), entry.get("expires_at"), entry.get("seq")
    sent_at = entry.get("sent_at")
    if type(level) is not str or type(target) is not str or type(seq) is not int:
        raise FeedError("feed entry without level, target or seq")
    expiry = feed_time(expires_at)
    if type(revoked_at) is not int or expiry is None:
        raise FeedError("feed entry with a bad revoked_at or expires_at")
    if isinstance(sent_at, bool):
        raise FeedError("feed entry with a bad expires_at or sent_at")
    return RevocationRecord(level, target, revoked_at, expiry, seq), feed_time(sent_at)


def _cursor_id(ident: str, seq: int) -> str:
    """The cursor to send back after an event: its ``id:`` when that names ``seq`` (the
    peer's anchored ``<seq>.<fingerprint>``, opaque here), else the bare ``seq``."""
    head, _, _ = ident.partition(".")
    return ident if head == str(seq) else str(seq)


class _Follower:
    """One domain's feed, followed by a daemon thread until stopped."""

    def __init__(
        self, broker: Broker, source: FeedSource, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.broker = broker
        self.source = source
        self._monotonic = monotonic
        self._stop = threading.Event()
        # Held to write the feed's series and to stop: once stopped, a follower writes
        # them no more (its successor, or their end, owns them: FeedFollowers.tick).
        self._writing = threading.Lock()
        self._token: tuple[str, float] | None = None
        # The last entry's seq, and the cursor sent back: the id of the last event read
        # (the peer's anchored cursor; a bare seq from a peer that gives none).
        self.cursor: int | None = None
        self.resume: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"tasklease-feed-{source.trust_domain}", daemon=True
        )
        # The tenant's own series: another tenant may follow the same domain's feed.
        series = (broker.tenant, source.trust_domain)
        self._gauge = broker.metrics.federation_feed_up.labels(*series)
        self._heard = broker.metrics.federation_feed_heard.labels(*series)
        # When the feed was last recorded current in the store (monotonic; None: not since
        # the stream was opened), and how often it is recorded while it stays current.
        self._noted: float | None = None
        bound = broker.config.federation_feed_max_staleness
        self._note_every = min(HEARD_EVERY, bound / 4) if bound > 0 else HEARD_EVERY

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._writing:
            self._stop.set()

    def _show(self, up: bool | None = None, *, heard: bool = False) -> None:
        """Set the feed's series (``up``, and the time it was heard), unless stopped."""
        with self._writing:
            if self._stop.is_set():
                return
            if up is not None:
                self._gauge.set(1 if up else 0)
            if heard:
                self._heard.set(time.time())

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            delay = backoff
            try:
                self._follow_once()
                backoff = delay = 0.1
            except FeedError as exc:
                # A configuration the peer or the operator must fix: do not hammer the
                # peer's sign-in (it is rate limited); a fixed file is read within 30 s.
                _log.warning("revocation feed of %s: %s", self.source.trust_domain, exc.reason)
                delay = CONFIG_RETRY
            except (httpx.HTTPError, ValueError) as exc:
                _log.info(
                    "revocation feed of %s disconnected: %s",
                    self.source.trust_domain,
                    type(exc).__name__,
                )
            except Exception:  # noqa: BLE001 - a follower must outlive whatever happened
                _log.exception("revocation feed of %s failed", self.source.trust_domain)
            self._show(up=False)
            self._stop.wait(delay)
            backoff = min(backoff * 2, 5.0)

    def _note_heard(self) -> None:
        """Record in the store that the feed is current (every ``_note_every`` seconds at
        most): what every process's exchange reads (``PeerFeeds.stale``). A store that
        cannot be written is logged; the feed goes on, and exchanges fail closed once the
        record is older than ``federation_feed_max_staleness``."""
        now = self._monotonic()
        if self._noted is not None and now - self._noted < self._note_every:
            return
        try:
            self.broker.federation_feed_heard(self.source.trust_domain)
        except TaskleaseError as exc:
            _log.warning(
                "revocation feed of %s: could not record it current: %s",
                self.source.trust_domain,
                exc.detail,
            )
            return
        self._noted = now

    def _client(self) -> httpx.Client:
        parts = urlsplit(self.source.base_url)
        if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
            raise FeedError("revocation_feed must be an https URL without userinfo")
        try:
            context = tls_context(self.source.ca_pem)
        except ValueError as exc:  # UnusableAnchor: a record stored before it was checked
            raise FeedError(f"the CA certificates cannot be used: {exc}") from None
        return httpx.Client(
            base_url=self.source.base_url,
            verify=context,
            trust_env=False,
            timeout=httpx.Timeout(READ_TIMEOUT),
            follow_redirects=False,
        )

    def _bearer(self, client: httpx.Client) -> str:
        if self._token is not None and self._monotonic() < self._token[1]:
            return self._token[0]
        client_id, secret = read_credentials(self.source.credentials_file)
        with client.stream(
            "POST",
            _AUTH,
            json={"client_id": client_id, "client_secret": secret},
            headers={"accept-encoding": "identity"},
        ) as response:
            if response.status_code != 200:
                raise FeedError(f"signing in to the feed: HTTP {response.status_code}")
            try:
                token, expires_in = read_app_token(response)
            except ValueError as exc:
                raise FeedError(f"signing in to the feed: {exc}") from None
        self._token = (token, self._monotonic() + max(expires_in * 0.8, expires_in - 60))
        return token

    def _follow_once(self) -> None:
        broker, domain = self.broker, self.source.trust_domain
        with self._client() as client:
            params = {} if self.resume is None else {"cursor": self.resume}
            headers = {
                "authorization": f"Bearer {self._bearer(client)}",
                "accept": "text/event-stream",
                "accept-encoding": "identity",
            }
            with client.stream("GET", _STREAM, params=params, headers=headers) as response:
                if response.status_code == 401:
                    self._token = None
                if response.status_code != 200:
                    raise FeedError(f"feed answered HTTP {response.status_code}")
                current = False
                self._noted = None
                for event in parse_event(bounded_lines(response, _MAX_LINE)):
                    if self._stop.is_set():
                        return
                    if current:  # past the backlog, anything heard proves the feed alive
                        self._show(heard=True)
                        self._note_heard()
                    if event.kind == "revocation":
                        record, sent_at = _entry(event.data)
                        broker.apply_federated_revocations(domain, [record], sent_at=sent_at)
                        self.cursor = record.seq
                        self.resume = _cursor_id(event.id, record.seq)
                    elif event.kind == "sync":
                        cursor = json.loads(event.data).get("cursor")
                        if type(cursor) is int:
                            # The peer's word, even below ours: after its database went
                            # back in time it answers a snapshot and a smaller cursor.
                            self.cursor = cursor
                            self.resume = _cursor_id(event.id, cursor)
                        self._show(up=True, heard=True)
                        current = True
                        self._note_heard()


class FeedFollowers:
    """The feed followers of one process, across its tenants. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[int, str], _Follower] = {}
        self._ticked: dict[int, float] = {}
        self._monotonic = monotonic

    def tick(self, broker: Broker) -> int:
        """Take or keep ``broker``'s follower lease and follow its domains' feeds while
        held (stop them when not); returns how many of its feeds are followed."""
        sources: dict[str, FeedSource] = {}
        directory = credentials_dir(broker)
        for record in broker.federation.list_federations():
            source = feed_source(record, directory)
            if source is not None:
                sources[source.trust_domain] = source
        declared = set(sources)
        # The lease is a write: taken only by a tenant that has feeds to follow.
        if sources and not broker.hold_feed_lease(LEASE_TTL):
            sources.clear()
        owner, now = id(broker), self._monotonic()
        with self._lock:
            self._ticked[owner] = now
            # A tenant removed is ticked no more: its followers stop (its lease lapses).
            gone = {o for o, at in self._ticked.items() if now - at > 2 * LEASE_TTL}
            for key, follower in list(self._running.items()):
                if key[0] in gone or (key[0] == owner and sources.get(key[1]) != follower.source):
                    follower.stop()
                    del self._running[key]
                    ended = follower.broker.metrics
                    if key[0] in gone or key[1] not in declared:
                        # Not followed any more (no longer declared, or the tenant is
                        # gone): its series end rather than read "down" until a restart.
                        ended.end_feed_series(follower.broker.tenant, key[1])
                    else:
                        # Still declared: followed elsewhere (the lease is another
                        # process's; the deployment's figure is the max) or by a successor
                        # of a changed source, not yet current.
                        ended.federation_feed_up.labels(follower.broker.tenant, key[1]).set(0)
            for stale in gone:
                del self._ticked[stale]
            for domain, source in sources.items():
                if (owner, domain) not in self._running:
                    follower = _Follower(broker, source, self._monotonic)
                    self._running[(owner, domain)] = follower
                    follower.start()
        return len(sources)

    def following(self) -> list[tuple[str, str]]:
        """``(tenant, trust domain)`` of every feed this process follows now."""
        with self._lock:
            return sorted((f.broker.tenant, domain) for (_, domain), f in self._running.items())

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            followers = list(self._running.values())
            self._running.clear()
        for follower in followers:
            follower.stop()
        for follower in followers:
            follower.join(timeout)
