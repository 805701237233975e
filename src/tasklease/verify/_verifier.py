"""Offline verification of tasklease agent tokens for resource servers.

A :class:`Verifier` holds the broker's keys (JWKS, cached, refreshed on an unknown ``kid``
at most once per interval), a copy of the broker's revocation index kept current by the
revocation feed, and a bounded cache of tokens it has verified. Verification is local:
no request to the broker per token.

Checks, in order (as the broker's own validation): size cap, header allow-list (``alg``
``EdDSA``, ``typ`` ``at+jwt``, known ``kid``), Ed25519 signature (PyNaCl), claim types,
``iss``, ``aud`` contains this resource's audience (RFC 8707 / MCP: a token for another
resource is refused), ``exp``/``nbf``/``iat`` with the clock skew, lifetime, delegation
depth and chain hash, revocation. Then freshness: when the feed has not proved current
for ``max_feed_staleness`` seconds, every verification fails closed with
:class:`VerifierUnavailable`.

By-reference tokens (opaque handles resolved by RFC 7662 introspection) are not verified
here yet: :class:`TokenIntrospector` is the extension point a future release plugs in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from tasklease.core import _jws
from tasklease.core.clock import Clock, SystemClock
from tasklease.verify._claims import VerifiedToken, check_claims, check_time, parse_claims
from tasklease.verify._errors import InsufficientScope, InvalidToken, VerifierUnavailable
from tasklease.verify._feed import AppCredentials, FeedFollower
from tasklease.verify._jwks import KeySet
from tasklease.verify._revocations import RevocationIndex

__all__ = ["TokenIntrospector", "Verifier"]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT type, not a secret
_ALLOWED_TYPS = frozenset({ACCESS_TOKEN_TYPE})
_log = logging.getLogger("tasklease.verify")


class TokenIntrospector(Protocol):
    """Extension point for by-reference tokens (RFC 7662), not wired in this release.

    An implementation returns the introspection response (``{"active": true, ...claims}``)
    or ``None``; the verifier would then apply the same claim and revocation checks and
    cache the answer no longer than the token's ``exp``.
    """

    def introspect(self, token: str) -> Mapping[str, Any] | None: ...


class _TokenCache:
    """Verified tokens by SHA-256 of the token string; least recently used evicted."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> VerifiedToken | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: bytes, token: VerifiedToken) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._entries[key] = token
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def discard(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)


class Verifier:
    """Verifies agent access tokens offline for one resource (``audience``).

    Args:
        broker_url: the broker's base URL (``https://broker.example``).
        audience: this resource's audience; a token whose ``aud`` lacks it is refused.
        issuer: the broker's ``iss``.
        jwks_ttl: seconds before the cached JWKS is fetched again.
        jwks_min_refresh_interval: at most one JWKS fetch per this many seconds, however
            many tokens name unknown kids.
        feed: follow the broker's revocation feed (needs ``credentials``). Without it,
            revocations reach this verifier only through token expiry: use it only where
            that is acceptable.
        credentials: an app's :class:`AppCredentials`, or a callable returning an admin or
            app bearer token, to read the revocation feed.
        max_feed_staleness: seconds without news from a current feed after which every
            verification fails closed (:class:`VerifierUnavailable`).
        clock_skew: seconds of tolerance on ``exp``, ``nbf`` and ``iat``.
        max_token_lifetime: the broker's ``max_ttl``: longer-lived tokens are refused.
        max_delegation_depth: deepest delegation chain accepted.
        cache_size: verified tokens remembered (LRU); 0 disables the cache.
        transport: an httpx transport (tests inject one to count or fake requests).
        clock: wall clock for ``exp``/``nbf``/``iat`` (tests inject one).
    """

    def __init__(
        self,
        broker_url: str,
        *,
        audience: str,
        issuer: str = "tasklease",
        jwks_ttl: float = 300,
        jwks_min_refresh_interval: float = 30.0,
        feed: bool = True,
        credentials: AppCredentials | Callable[[], str] | None = None,
        max_feed_staleness: float = 5.0,
        clock_skew: int = 30,
        max_token_lifetime: int = 3600,
        max_delegation_depth: int = 5,
        cache_size: int = 10_000,
        max_token_bytes: int = _jws.MAX_TOKEN_BYTES,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not audience:
            raise ValueError("audience is required: tokens are checked against it")
        if feed and credentials is None:
            raise ValueError("the revocation feed needs credentials (AppCredentials or a token)")
        self.audience = audience
        self.issuer = issuer
        self.max_feed_staleness = max_feed_staleness
        self._skew = clock_skew
        self._max_lifetime = max_token_lifetime
        self._max_depth = max_delegation_depth
        self._max_bytes = max_token_bytes
        self._clock = clock or SystemClock()
        self._client = httpx.Client(
            base_url=broker_url.rstrip("/"), transport=transport, timeout=timeout
        )
        self._keys = KeySet(self._client, ttl=jwks_ttl, min_interval=jwks_min_refresh_interval)
        self._revocations = RevocationIndex()
        self._cache = _TokenCache(cache_size)
        self._credentials = credentials
        self._feed_token: tuple[str, float] | None = None
        self._feed: FeedFollower | None = None
        if feed:
            self._feed = FeedFollower(
                self._client,
                self._revocations,
                token_source=self._bearer_for_feed,
                forget_token=self._forget_feed_token,
                read_timeout=max_feed_staleness,
                on_revocation=lambda: None,
                housekeeping=self._housekeeping,
            )
        self._started = False
        self._start_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def start(self, *, wait: float | None = None) -> bool:
        """Fetch the keys and start following the feed; idempotent.

        ``wait`` (default ``max_feed_staleness``) bounds how long to wait for the feed's
        first sync. Returns whether the verifier is ready (keys known, feed current).
        """
        with self._start_lock:
            if not self._started:
                self._started = True
                self._keys.refresh()
                if self._feed is not None:
                    self._feed.start()
        if self._feed is not None:
            self._feed.wait_synced(self.max_feed_staleness if wait is None else wait)
        return self.ready

    async def astart(self, *, wait: float | None = None) -> bool:
        """:meth:`start` without blocking the event loop."""
        return await asyncio.to_thread(lambda: self.start(wait=wait))

    def close(self) -> None:
        """Stop following the feed and close connections. Verification then fails closed."""
        if self._feed is not None:
            self._feed.stop()
        self._client.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Verifier:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def ready(self) -> bool:
        """Keys known and, with a feed, the feed current within the staleness bound."""
        return bool(self._keys.kids) and self.feed_staleness() <= self.max_feed_staleness

    def feed_staleness(self) -> float:
        """Seconds since the feed last proved current (0 without a feed)."""
        return 0.0 if self._feed is None else self._feed.staleness()

    def stats(self) -> dict[str, Any]:
        """Counters for health endpoints and tests."""
        return {
            "jwks_fetches": self._keys.fetches,
            "kids": self._keys.kids,
            "cached_tokens": len(self._cache),
            "revocation_entries": len(self._revocations),
            "feed_cursor": None if self._feed is None else self._feed.cursor,
            "feed_staleness": self.feed_staleness(),
            "feed_connections": 0 if self._feed is None else self._feed.connections,
        }

    # --- verification -------------------------------------------------------------------

    def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` for this audience; may fetch the JWKS once for an unknown kid.

        Raises:
            InvalidToken: any failed check (the reason is in ``.reason`` only).
            VerifierUnavailable: the revocation feed is stale: fail closed.
        """
        return self._verify(token, self._keys.resolve)

    async def averify(self, token: str) -> VerifiedToken:
        """:meth:`verify` for async code: the JWKS fetch, when due, runs in a thread."""
        try:
            return self._verify(token, self._keys.get)
        except InvalidToken as exc:
            if exc.reason != "unknown kid" or not self._keys.may_refresh():
                raise
        await asyncio.to_thread(self._keys.refresh_for_unknown_kid)
        return self._verify(token, self._keys.get)

    def require_scope(self, token: VerifiedToken, scope: str) -> None:
        """Raise :class:`InsufficientScope` unless ``token`` covers ``scope``."""
        if not token.has_scope(scope):
            raise InsufficientScope(f"token lacks required scope: {scope}", scope)

    def _verify(self, token: str, resolve_key: Callable[[str], Any]) -> VerifiedToken:
        if type(token) is not str or not token:
            raise InvalidToken("no token")
        if len(token) > self._max_bytes:
            raise InvalidToken("token too large")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock.now()
        verified = self._cache.get(digest)
        if verified is not None:
            try:
                check_time(verified, now, self._skew)
            except InvalidToken:
                self._cache.discard(digest)
                raise
        else:
            try:
                decoded = _jws.decode(
                    token,
                    resolve_key=resolve_key,
                    allowed_typs=_ALLOWED_TYPS,
                    max_bytes=self._max_bytes,
                )
            except _jws.JWSError as exc:
                raise InvalidToken(exc.reason) from None
            verified = parse_claims(decoded.claims)
            check_claims(
                verified,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
                skew=self._skew,
                max_lifetime=self._max_lifetime,
                max_depth=self._max_depth,
            )
            self._cache.put(digest, verified)
        level = self._revocations.match(verified)
        if level is not None:
            self._cache.discard(digest)
            raise InvalidToken(f"token has been revoked (level {level})")
        if self._feed is not None and self._feed.staleness() > self.max_feed_staleness:
            raise VerifierUnavailable("revocation feed is stale")
        return verified

    # --- feed plumbing ---------------------------------------------------------------------

    def _bearer_for_feed(self) -> str:
        credentials = self._credentials
        if credentials is None:
            raise RuntimeError("no feed credentials")
        if not isinstance(credentials, AppCredentials):
            return credentials()
        cached = self._feed_token
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        response = self._client.post(
            "/v1/app/auth",
            json={"client_id": credentials.client_id, "client_secret": credentials.client_secret},
        )
        response.raise_for_status()
        body = response.json()
        token, expires_in = body["access_token"], int(body["expires_in"])
        # Renew well before expiry; the broker ends the stream when the token expires.
        self._feed_token = (token, time.monotonic() + max(expires_in * 0.8, expires_in - 60))
        return str(token)

    def _forget_feed_token(self) -> None:
        self._feed_token = None

    def _housekeeping(self) -> None:
        self._revocations.prune(self._clock.now())
        self._keys.refresh_if_stale()
