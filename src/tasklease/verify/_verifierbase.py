"""The Verifier's state built from its options, its lifecycle, feed credentials and metrics."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import httpx

from tasklease import forksafe
from tasklease.bounds import TOTAL_TIMES, loopback_direct, read_app_token, with_deadlines
from tasklease.core.clock import Clock, ElapsedHorizon, SystemClock
from tasklease.core.lru import LRUCache
from tasklease.rules import jws
from tasklease.rules.binding import DEFAULT_HOLDER_QUOTA, DPoPVerifier, ProofLedger
from tasklease.rules.chainverify import offline_limits
from tasklease.rules.cleartext import KEYS_ONLY, check_credential_url
from tasklease.verify._brokertime import BrokerPacedClock
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import VerifierUnavailable
from tasklease.verify._federation import FederatedDomain, Federations
from tasklease.verify._feed import AppCredentials, FeedFollower
from tasklease.verify._freshness import (
    DEFAULT_LIVENESS,
    DEFAULT_MAX_STALENESS,
    FreshnessPolicy,
    prometheus_text,
)
from tasklease.verify._introspection import BrokerIntrospector, TokenIntrospector
from tasklease.verify._jwks import DEFAULT_JWKS_MAX_STALE, KeySet
from tasklease.verify._revocations import RevocationIndex
from tasklease.verify._usereports import UseReporter

__all__ = ["VerifierBase"]

_START_WAIT = 5.0  # seconds start() waits for the feed's first sync by default


class VerifierBase:
    """A :class:`~tasklease.verify.Verifier` without its verification paths: the keys,
    revocation index, caches, feed and reporters its options make (the options are
    documented on ``Verifier``), starting and closing them, and their metrics."""

    def __init__(
        self,
        broker_url: str,
        *,
        audience: str,
        issuer: str = "tasklease",
        jwks_ttl: float = 300,
        jwks_min_refresh_interval: float = 30.0,
        jwks_max_stale: float = DEFAULT_JWKS_MAX_STALE,
        feed: bool = True,
        credentials: AppCredentials | Callable[[], str] | None = None,
        max_feed_staleness: float = DEFAULT_MAX_STALENESS,
        critical_feed_staleness: float = 0.0,
        critical_scopes: Sequence[str] = (),
        critical_grant_types: Sequence[str] = (),
        feed_liveness: float = DEFAULT_LIVENESS,
        clock_skew: int = 30,
        exp_leeway: float = 0,
        max_token_lifetime: int = 3600,
        max_delegation_depth: int = 5,
        cache_size: int = 10_000,
        introspector: TokenIntrospector | None = None,
        introspection_cache_size: int = 1_000,
        dpop_proof_window: int = 60,
        dpop_replay_cache_size: int = 100_000,
        dpop_replay: ProofLedger | None = None,
        dpop_replay_per_key: int = DEFAULT_HOLDER_QUOTA,
        max_token_bytes: int = jws.MAX_TOKEN_BYTES,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        federations: Sequence[FederatedDomain] = (),
        broker_audiences: Sequence[str] = (),
        bearer_chains: bool = False,
        report_uses: bool = True,
        insecure_http: bool | None = None,
    ) -> None:
        if not audience:
            raise ValueError("audience is required: tokens are checked against it")
        if feed and credentials is None:
            raise ValueError("the revocation feed needs credentials (AppCredentials or a token)")
        # With credentials, the feed, introspection and use reports send them; without,
        # the key set fetched from the broker still decides which tokens are trusted.
        check_credential_url(
            httpx.URL(broker_url),
            insecure_http=insecure_http,
            environ=os.environ,
            what=None if credentials is not None else KEYS_ONLY,
        )
        if not 0 <= exp_leeway <= 300:
            raise ValueError("exp_leeway must be between 0 and 300 seconds")
        if not jwks_max_stale > jwks_ttl:
            raise ValueError(
                f"jwks_max_stale ({jwks_max_stale:g} s) must exceed jwks_ttl ({jwks_ttl:g} s): "
                "the key set is fetched again every jwks_ttl seconds"
            )
        self.audience = audience
        self.issuer = issuer
        self.max_feed_staleness = max_feed_staleness
        self._freshness = FreshnessPolicy(
            max_staleness=max_feed_staleness,
            critical_staleness=critical_feed_staleness,
            critical_scopes=critical_scopes,
            critical_grant_types=critical_grant_types,
            liveness=feed_liveness,
        )
        self._audiences = (audience,)
        self._skew = clock_skew
        self._exp_leeway = exp_leeway
        self._max_lifetime = max_token_lifetime
        self._max_depth = max_delegation_depth
        self._max_bytes = max_token_bytes
        # Offline chains (rules.chainverify): blocks checked by the broker's issuance rule
        # within this verifier's lifetime and depth bounds; the broker's own audiences
        # (when given) count as "not yet restricted", as at the broker.
        self._chain_limits = offline_limits(
            max_ttl=max_token_lifetime,
            max_delegation_depth=max_delegation_depth,
            audience=broker_audiences,
        )
        self._bearer_chains = bearer_chains
        local = clock or SystemClock()
        # Tokens are judged by the later of this clock and the broker's, as its JWKS
        # answers tell it (verify._brokertime): a clock set back lengthens no token.
        self._clock = BrokerPacedClock(local, warn_after=clock_skew / 2)
        # Pruning never runs ahead of the time that elapsed: a wall clock stepped forward
        # would forget revocations of tokens still valid by the true time (core.clock). By
        # the local clock: never ahead of the time tokens are judged by.
        self._horizon = ElapsedHorizon(local)
        # Each of its requests but the feed's stream ends within TOTAL_TIMES its timeout
        # (bounds.with_deadlines): a broker, or a path to it, that drips an answer holds no
        # key fetch, introspection, counted call or sign-in longer.
        # Its requests carry the app's credentials and fetch the keys: a loopback broker
        # is reached directly, never through a proxy the environment names (bounds).
        # A user and password in the URL (a proxy's HTTP Basic credential) are sent as the
        # client's auth, never kept in its URL: every URL the client names (its request
        # log lines, an error answer's message, which the key set's failures log) is then
        # one without them.
        base = httpx.URL(broker_url.rstrip("/"))
        basic = (base.username, base.password) if base.userinfo else None
        self._client = loopback_direct(
            with_deadlines(
                httpx.Client(
                    base_url=base.copy_with(userinfo=b""),
                    auth=basic,
                    transport=transport,
                    timeout=timeout,
                ),
                TOTAL_TIMES * timeout,
            )
        )
        # In a process forked from this one, the client's connections are the parent's:
        # the child's copy opens its own (forksafe; the feed follows again, the locks of
        # this verifier's parts are unheld).
        forksafe.track(self._client)
        self.jwks_max_stale = jwks_max_stale
        self._keys = KeySet(
            self._client,
            ttl=jwks_ttl,
            min_interval=jwks_min_refresh_interval,
            max_age=jwks_max_stale,
            on_date=self._clock.note,
            wait_at_most=timeout,
        )
        self._federation = (
            Federations(federations, timeout=timeout, min_interval=jwks_min_refresh_interval)
            if federations
            else None
        )
        # The broker's own keys: fetched again for an unknown kid (rate limited), or not.
        # A federated domain's token is never looked up here, nor the broker's in a bundle:
        # which keys verify a token is Federations.claimed's choice (verify._verifier).
        self._resolve = self._keys.resolve
        self._cached_key = self._keys.get
        self._revocations = RevocationIndex()
        # Verified tokens (and offline chains) with the kid of the broker's key that signed
        # them: at every use the key must still be in the last good key set (verify._jwks).
        self._cache: LRUCache[bytes, tuple[VerifiedToken, str]] = LRUCache(cache_size)
        self._credentials = credentials
        self._feed_token: tuple[str, float] | None = None
        self._feed_token_lock = threading.Lock()
        if introspector is None and credentials is not None:
            introspector = BrokerIntrospector(
                self._client,
                audience=audience,
                token_source=self._bearer_for_feed,
                forget_token=self._forget_feed_token,
            )
        self._introspector = introspector
        # Introspected by-reference tokens: the broker vouched for them, no key of ours did
        # (their kid is "").
        self._references: LRUCache[bytes, tuple[VerifiedToken, str]] = LRUCache(
            introspection_cache_size if feed else 0
        )
        self._dpop = DPoPVerifier(
            dpop_proof_window,
            capacity=dpop_replay_cache_size,
            ledger=dpop_replay,
            holder_quota=dpop_replay_per_key,
        )
        # Late audit of the offline chains accepted here (verify._usereports).
        self._uses = (
            UseReporter(self._client, self._bearer_for_feed, self._forget_feed_token)
            if report_uses and credentials is not None
            else None
        )
        self._feed: FeedFollower | None = None
        if feed:
            self._feed = FeedFollower(
                self._client,
                self._revocations,
                token_source=self._bearer_for_feed,
                forget_token=self._forget_feed_token,
                read_timeout=max(0.5, min(feed_liveness, max_feed_staleness)),
                max_staleness=max_feed_staleness,
                on_revocation=lambda: None,
                housekeeping=self._housekeeping,
            )
        self._started = False
        self._start_lock = threading.Lock()
        forksafe.track(self)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` (or :meth:`astart`) has been called."""
        return self._started

    def start(self, *, wait: float | None = None) -> bool:
        """Fetch the keys and start following the feed; idempotent.

        ``wait`` (default 5 s) bounds how long to wait for the feed's first sync. Returns
        whether the verifier is ready (keys known, feed current).
        """
        with self._start_lock:
            if not self._started:
                self._started = True
                self._keys.refresh()
                if self._federation is not None:
                    self._federation.refresh_all()
                if self._feed is not None:
                    self._feed.start()
        if self._feed is not None:
            self._feed.wait_synced(_START_WAIT if wait is None else wait)
        return self.ready

    async def astart(self, *, wait: float | None = None) -> bool:
        """:meth:`start` without blocking the event loop."""
        return await asyncio.to_thread(lambda: self.start(wait=wait))

    def close(self) -> None:
        """Stop following the feed and close connections. Verification then fails closed."""
        if self._feed is not None:
            self._feed.stop()
        if self._uses is not None:
            self._uses.flush(self._clock.now(), everything=True)  # best effort: once
        self._client.close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        """``async with Verifier(...) as verifier``: :meth:`astart`, without blocking the
        event loop; :meth:`aclose` on exit."""
        await self.astart()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @property
    def ready(self) -> bool:
        """Keys known and fetched within ``jwks_max_stale`` and, with a feed, the feed current
        within the staleness bound."""
        return (
            bool(self._keys.kids)
            and self._keys.age() <= self.jwks_max_stale
            and self.feed_staleness() <= self.max_feed_staleness
        )

    def clock_offset(self) -> float | None:
        """This host's clock minus the broker's, as its last JWKS answer told it (within
        about a second; None before the first): negative when this clock is behind, which
        verification makes up for. A metric."""
        return self._clock.offset()

    def jwks_age(self) -> float:
        """Seconds since the broker's JWKS was last fetched (infinite before the first
        fetch): past ``jwks_max_stale`` every verification fails closed. A metric."""
        return self._keys.age()

    def feed_staleness(self) -> float:
        """Seconds since the feed last proved current (0 without a feed; infinite before
        its first sync). A metric: see :meth:`metrics_text`."""
        return 0.0 if self._feed is None else self._feed.staleness()

    def feed_live(self) -> bool:
        """True while the feed is connected, synced and heard from within ``feed_liveness``
        seconds (always true without a feed): critical tokens are accepted only then."""
        return self._feed is None or self._feed.live(self._freshness.liveness)

    def is_critical(self, token: VerifiedToken) -> bool:
        """True when ``token`` holds a critical scope or grant type (held to
        ``critical_feed_staleness``)."""
        return self._freshness.is_critical(token)

    def metrics_text(self) -> str:
        """The feed's staleness and the refusals it caused, in the Prometheus text format
        (serve it on the resource server's metrics endpoint)."""
        return prometheus_text(
            audience=self.audience,
            staleness=self.feed_staleness(),
            live=self.feed_live(),
            policy=self._freshness,
            connections=0 if self._feed is None else self._feed.connections,
            revocation_entries=len(self._revocations),
            jwks_age=self._keys.age(),
            jwks_max_stale=self.jwks_max_stale,
            clock_offset=self._clock.offset(),
        )

    def stats(self) -> dict[str, Any]:
        """Counters for health endpoints and tests."""
        return {
            "jwks_fetches": self._keys.fetches,
            "federations": {} if self._federation is None else self._federation.stats(),
            "kids": self._keys.kids,
            "jwks_age": self._keys.age(),
            "clock_offset": self._clock.offset(),
            "cached_tokens": len(self._cache),
            "cached_references": len(self._references),
            "introspections": getattr(self._introspector, "calls", None),
            "dpop_jtis": len(self._dpop),
            "revocation_entries": len(self._revocations),
            "feed_cursor": None if self._feed is None else self._feed.cursor,
            "feed_staleness": self.feed_staleness(),
            "feed_connections": 0 if self._feed is None else self._feed.connections,
            "feed_live": self.feed_live(),
            "stale_refusals": self._freshness.refusals,
            "offline_uses_pending": 0 if self._uses is None else self._uses.pending,
            "offline_uses_dropped": 0 if self._uses is None else self._uses.dropped,
        }

    # --- feed plumbing ---------------------------------------------------------------------

    def _bearer_for_feed(self) -> str:
        credentials = self._credentials
        if credentials is None:
            raise RuntimeError("no feed credentials")
        if not isinstance(credentials, AppCredentials):
            return credentials()
        with self._feed_token_lock:  # the feed thread and introspecting requests share it
            cached = self._feed_token
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            token, expires_in = self._sign_in(credentials)
            # Renew well before expiry; the broker ends the stream when the token expires.
            self._feed_token = (token, time.monotonic() + max(expires_in * 0.8, expires_in - 60))
            return token

    def _sign_in(self, credentials: AppCredentials) -> tuple[str, int]:
        """``POST /v1/app/auth``: the app token and its lifetime in seconds. The answer is
        read off the wire uncompressed (:func:`~tasklease.bounds.read_app_token`).

        Raises:
            httpx.HTTPError: the broker could not be reached, or refused the sign-in.
            VerifierUnavailable: the answer is compressed, too large, or not a token
                (not a JSON object with a non-empty ``access_token`` and an integer
                ``expires_in`` of at least 1).
        """
        with self._client.stream(
            "POST",
            "/v1/app/auth",
            json={"client_id": credentials.client_id, "client_secret": credentials.client_secret},
            headers={"accept-encoding": "identity"},
        ) as response:
            response.raise_for_status()
            try:
                return read_app_token(response)
            except ValueError as exc:
                raise VerifierUnavailable(f"signing in to the broker: {exc}") from None

    def _forget_feed_token(self) -> None:
        self._feed_token = None

    def _housekeeping(self) -> None:
        # An entry expires when nothing it matches is still valid at the broker; this
        # verifier accepts tokens exp_leeway seconds longer, so it keeps entries as long.
        self._revocations.prune(self._horizon.now() - self._exp_leeway)
        self._keys.refresh_if_stale()
        if self._federation is not None:
            self._federation.refresh_due()
        if self._uses is not None and self._feed is not None and self._feed.connected:
            self._uses.flush(self._clock.now())

    # --- keys for code that must not wait for the network --------------------------------

    def _keys_due(self) -> bool:
        """True when the JWKS or a federated bundle is due for its refresh by age: the
        refresh a sync verification makes as it resolves a key, which an async one (whose
        resolver never fetches) makes in a thread first (:meth:`_refresh_due_keys`)."""
        federation = self._federation
        return self._keys.refresh_due() or (federation is not None and federation.due())

    def _refresh_due_keys(self) -> None:
        """Fetch the key sets due by age (blocking: run it in a thread from async code).
        Never waits for a JWKS fetch another caller is making: its last good set serves."""
        self._keys.refresh_if_stale(wait=False)
        if self._federation is not None:
            self._federation.refresh_due()
