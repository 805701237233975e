"""The broker's verification keys, fetched from its JWKS and cached by ``kid``.

Refreshed when the cache is older than ``ttl``, and when a token names an unknown ``kid``
(a key rotated in) — but at most once per ``min_interval`` seconds, whatever the tokens
say: a flood of tokens with invented kids costs the broker one request per interval.
Each key's ``kid`` must be its RFC 7638 thumbprint, as the broker publishes it, and a key
published with its private half (``d``) is never used: whoever read that JWK Set could
sign with it.

One rule decides which keys are usable: a key is usable only while the last successful
fetch of the JWKS holds its ``kid``. A successful fetch replaces the whole set, so a key
the broker removed (retired, or dropped after a compromise) stops verifying at the first
successful fetch that no longer lists it, for every token (the token whose use started
that fetch, and tokens remembered before it: the verifier asks for the key again at every
use). A failed fetch keeps the last good set: while the broker is away, the keys already
known keep serving, and a token whose key is known never waits for a refresh another
caller is making (a fetch from an unreachable broker can take the whole timeout). But not
for ever: once no fetch has succeeded for ``max_age`` seconds, every lookup raises
:class:`~tasklease.verify.KeySetStale` (fail closed, 503) until one does. A verifier cut
off from the broker would otherwise keep trusting a key the broker removed for as long as
it runs, where no revocation feed bounds the outage.

The JWKS is read off the wire uncompressed, at most :data:`MAX_JWKS_BYTES` of it: a
compressed or larger answer is a failed fetch, refused before it fills the verifier's
memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import nacl.signing

from tasklease import forksafe
from tasklease.bounds import bounded_body, json_document
from tasklease.rules import jws
from tasklease.verify._errors import KeySetStale

__all__ = ["DEFAULT_JWKS_MAX_STALE", "KeySet", "parse_jwks"]

MAX_JWKS_BYTES = 65536
# How long (seconds) a verifier trusts its last good key set with no fetch succeeding:
# as long as a federated domain's bundle (``FederatedDomain.max_bundle_age``).
DEFAULT_JWKS_MAX_STALE = 3600.0
_HEADERS = {"accept-encoding": "identity"}
_log = logging.getLogger("tasklease.verify")


def parse_jwks(document: Any) -> dict[str, nacl.signing.VerifyKey]:
    """The usable Ed25519 keys of a JWK Set; anything else in it is skipped, and so is a
    key whose private half is in it (its secret is out: it vouches for nothing)."""
    keys: dict[str, nacl.signing.VerifyKey] = {}
    if type(document) is not dict or type(document.get("keys")) is not list:
        raise ValueError("not a JWK Set")
    for jwk in document["keys"]:
        if type(jwk) is not dict or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if "d" in jwk:
            continue
        if jwk.get("alg", jws.ALGORITHM) != jws.ALGORITHM or jwk.get("use", "sig") != "sig":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if type(kid) is not str or type(x) is not str:
            continue
        try:
            raw = jws.b64url_decode(x)
        except jws.JWSError:
            continue
        if len(raw) != 32 or jws.jwk_thumbprint(raw) != kid:
            continue
        keys[kid] = nacl.signing.VerifyKey(raw)
    return keys


class KeySet:
    """Keys by ``kid``: the set of the last successful fetch, and nothing else (the
    module's rule); lookups are a dict probe, refreshes are rate limited."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        ttl: float,
        min_interval: float,
        max_age: float = float("inf"),
        wait_at_most: float = float("inf"),
        on_date: Callable[[str | None], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._on_date = on_date  # told each successful answer's Date header
        self._ttl = ttl
        self._max_age = max_age
        self._min_interval = min_interval
        self._wait_at_most = wait_at_most
        self._monotonic = monotonic
        self._keys: dict[str, nacl.signing.VerifyKey] = {}
        self._fetched_at = -float("inf")
        self._last_attempt = -float("inf")  # any fetch
        self._last_kid_attempt = -float("inf")  # fetches for an unknown kid
        self._lock = threading.Lock()
        self.fetches = 0
        forksafe.track(self)

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def get(self, kid: str) -> nacl.signing.VerifyKey | None:
        """The key for ``kid`` in the last good set only (never touches the network).

        For code that must not wait for the network (the event loop): it makes the
        refreshes :meth:`resolve` makes itself, elsewhere (:meth:`refresh_due`).

        Raises:
            KeySetStale: no fetch has succeeded for ``max_age`` seconds.
        """
        self.check_age()
        return self._keys.get(kid)

    def age(self) -> float:
        """Seconds since the last successful fetch (infinite before the first)."""
        return self._monotonic() - self._fetched_at

    def check_age(self) -> None:
        """Raise :class:`KeySetStale` when the last good set is older than ``max_age``."""
        age = self._monotonic() - self._fetched_at
        if age > self._max_age:
            raise KeySetStale(age, self._max_age)

    def may_refresh(self) -> bool:
        """True when an unknown kid would be allowed to trigger a fetch now."""
        return self._monotonic() - self._last_kid_attempt >= self._min_interval

    def stale(self) -> bool:
        return self._monotonic() - self._fetched_at >= self._ttl

    def refresh_due(self) -> bool:
        """True when the set is older than ``ttl`` and a fetch for it may be made now (not
        within ``min_interval`` of the last attempt, so not while one is under way)."""
        return self._due_by_age(self._monotonic())

    def _due_by_age(self, now: float) -> bool:
        return (
            now - self._fetched_at >= self._ttl and now - self._last_attempt >= self._min_interval
        )

    def resolve(self, kid: str) -> nacl.signing.VerifyKey | None:
        """The key for ``kid`` in the last good set, or None; fetches first (rate limited)
        when ``kid`` is unknown or the set older than ``ttl``.

        Raises:
            KeySetStale: no fetch has succeeded for ``max_age`` seconds, this one's
                attempt (if it made one) included.
        """
        key = self._keys.get(kid)
        if key is None:
            self.refresh_for_unknown_kid()
        elif self._monotonic() - self._fetched_at >= self._ttl:  # self.stale(), inline
            # Past max_age this lookup waits for a fetch under way: it fails closed else.
            self.refresh_if_stale(wait=self.age() > self._max_age)
        else:
            return key
        # A successful fetch replaced the set: what it holds for kid, None for a key the
        # broker removed; a failed (or skipped) one left the last good set in place.
        self.check_age()
        return self._keys.get(kid)

    def refresh_for_unknown_kid(self) -> bool:
        """Fetch unless an unknown kid caused a fetch less than ``min_interval`` ago."""
        return self._fetch(
            lambda now: now - self._last_kid_attempt >= self._min_interval, for_kid=True
        )

    def refresh_if_stale(self, *, wait: bool = True) -> bool:
        """Fetch when older than ``ttl`` (a failed attempt is retried after ``min_interval``).

        ``wait=False``: return at once (False) when another caller is fetching already.
        """
        return self._fetch(self._due_by_age, wait=wait)

    def refresh(self) -> bool:
        """Fetch now, whatever the rate limits (start-up)."""
        return self._fetch(lambda _now: True)

    def _fetch(
        self, due: Callable[[float], bool], *, for_kid: bool = False, wait: bool = True
    ) -> bool:
        """One caller fetches while concurrent callers wait (unless ``wait`` is False), then
        see it is no longer due. A caller waits ``wait_at_most`` seconds at most (the
        verifier's timeout; its fetch itself ends within a few): then it goes on with
        the last good set, as if its fetch had failed.

        Returns whether a fetch succeeded. A success replaces the whole set (a key it does
        not list is gone); a failure keeps the last good set.
        """
        if wait:
            waited = -1.0 if self._wait_at_most == float("inf") else self._wait_at_most
            if not self._lock.acquire(timeout=waited):
                return False
        elif not self._lock.acquire(blocking=False):
            return False
        try:
            now = self._monotonic()
            if not due(now):
                return False
            self._last_attempt = now
            if for_kid:
                self._last_kid_attempt = now
            self.fetches += 1
            try:
                with self._client.stream(
                    "GET", "/.well-known/jwks.json", headers=_HEADERS
                ) as response:
                    response.raise_for_status()
                    body = bounded_body(response, MAX_JWKS_BYTES)
                    date = response.headers.get("date")
                keys = parse_jwks(json_document(body))
            except (httpx.HTTPError, ValueError) as exc:
                _log.warning("fetching the broker's JWKS failed: %s", exc)
                return False
            self._keys = keys
            self._fetched_at = self._monotonic()
            if self._on_date is not None:
                self._on_date(date)
            return True
        finally:
            self._lock.release()
