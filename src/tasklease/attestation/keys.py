"""The key fetcher: an issuer's JWKS, found through its OIDC discovery document, cached.

For each key source (``core.attestors.JwksSource``) the last good key set is kept with
the time it was fetched. It is fetched anew when older than the source's ``refresh``, or
when evidence names an unknown ``kid`` (the issuer may have rotated), but never more
often than every :data:`MIN_REFETCH` seconds, so neither a flood of unknown kids nor an
issuer that is down makes every registration wait on the network. While fetches fail, the
last good keys serve until ``max_stale`` seconds after they were fetched; then every
registration through that issuer is refused (fail closed) until a fetch succeeds.

Discovery (OpenID Connect Discovery 1.0 section 4): ``GET {issuer}/.well-known/openid-
configuration``; its ``issuer`` must equal the configured issuer exactly, and its
``jwks_uri`` be an https URL. A ``jwks_uri`` given by configuration skips discovery
(pinned). Both requests: HTTPS only, the certificate checked against the source's
``ca_pem`` or the system's store, no redirects followed, bodies read up to a cap, a
deadline of :data:`TIMEOUT` seconds. Times come from the caller (the broker's clock).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tasklease.bounds import TOTAL_TIMES, bounded_body, json_document, total_deadline
from tasklease.core.attestors import (
    AttestationRefused,
    JwksSource,
    VerifyKey,
    keys_from_jwks,
    parse_jwks,
)
from tasklease.core.tlsanchor import UnusableAnchor, anchor_context

__all__ = ["MIN_REFETCH", "TIMEOUT", "FetchError", "HttpKeyFetcher", "fetch_jwks"]

TIMEOUT = 5.0  # a fetch (discovery and the JWK Set) ends within TOTAL_TIMES times this
MIN_REFETCH = 10.0
_MAX_BODY = 262144
_log = logging.getLogger("tasklease.attestation")


class FetchError(Exception):
    """Keys could not be fetched; ``reason`` says why (for the logs and the audit)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _https(url: object) -> str:
    if not isinstance(url, str) or not url.startswith("https://") or "@" in url.split("/")[2]:
        raise FetchError("not an https URL without userinfo")
    try:
        httpx.URL(url)  # what the client would refuse to send (a control character, length)
    except httpx.InvalidURL:
        raise FetchError("not an https URL without userinfo") from None
    return url


def _get_json(client: httpx.Client, url: str) -> Any:
    try:
        with client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchError(f"{url} answered {response.status_code}")
            body = bounded_body(response, _MAX_BODY)
    except ValueError as exc:
        raise FetchError(f"{url}: {exc}") from None
    except (httpx.HTTPError, RuntimeError) as exc:
        # The total deadline closes the client: a read under way fails (an HTTPError), the
        # JWK Set's request after discovery is refused (a RuntimeError).
        if client.is_closed:
            raise FetchError(f"{url}: no answer within the fetch's deadline") from None
        if isinstance(exc, RuntimeError):
            raise
        raise FetchError(f"{url}: {type(exc).__name__}: {str(exc)[:200]}") from None
    try:
        return json_document(body)
    except ValueError:
        raise FetchError(f"{url} answered something that is not JSON") from None


def fetch_jwks(source: JwksSource, *, timeout: float = TIMEOUT) -> dict[str, VerifyKey]:
    """Fetch ``source``'s keys now (discovery first unless ``jwks_uri`` is pinned).

    Raises:
        FetchError: ``ca_pem`` holds no certificate, a request failed, discovery named
            another issuer or a ``jwks_uri`` that is no https URL, or the JWK Set is
            malformed or holds no usable key.
    """
    try:
        context = anchor_context(source.ca_pem)
    except UnusableAnchor:
        raise FetchError("ca_pem holds no usable CA certificate") from None
    with (
        httpx.Client(
            verify=context,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"accept-encoding": "identity"},
        ) as client,
        total_deadline(client, TOTAL_TIMES * timeout),
    ):
        jwks_uri = source.jwks_uri
        if not jwks_uri:
            discovery_url = source.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = _get_json(client, _https(discovery_url))
            if not isinstance(document, dict) or document.get("issuer") != source.issuer:
                raise FetchError("the discovery document names another issuer")
            jwks_uri = _https(document.get("jwks_uri"))
        document = _get_json(client, _https(jwks_uri))
    try:
        keys = keys_from_jwks(parse_jwks(json.dumps(document)))
    except AttestationRefused as exc:
        raise FetchError(exc.reason) from None
    if not keys:
        raise FetchError("the JWK Set holds no usable signing key")
    return keys


@dataclass
class _Cached:
    keys: Mapping[str, VerifyKey] | None = None
    fetched_at: float = 0.0
    tried_at: float | None = None
    error: str = ""


class HttpKeyFetcher:
    """``core.attestation.KeyFetcher`` over HTTPS, with a cache per key source. Thread-safe."""

    def __init__(self, *, timeout: float = TIMEOUT, min_refetch: float = MIN_REFETCH) -> None:
        self._timeout = timeout
        self._min_refetch = min_refetch
        self._cache: dict[JwksSource, _Cached] = {}
        self._locks: dict[JwksSource, threading.Lock] = {}
        self._guard = threading.Lock()

    def keys(self, source: JwksSource, now: float, refresh: bool) -> Mapping[str, Any]:
        """The source's keys; see the module docstring for when they are fetched.

        Raises:
            AttestationRefused: (``unavailable``) no keys fetched yet, or the last good
                ones are older than ``source.max_stale``.
        """
        with self._guard:
            cached = self._cache.setdefault(source, _Cached())
            lock = self._locks.setdefault(source, threading.Lock())
        # Another caller's fetch under way is waited for one timeout at most, then the
        # keys held are used: an issuer that answers slowly holds one thread, not every
        # registration that names it.
        fetching = lock.acquire(timeout=self._timeout)
        try:
            if fetching and self._due(cached, source, now, refresh):
                cached.tried_at = now
                try:
                    cached.keys = fetch_jwks(source, timeout=self._timeout)
                    cached.fetched_at = now
                    cached.error = ""
                except FetchError as exc:
                    cached.error = exc.reason
                    _log.warning("keys of %s not fetched: %s", source.issuer, exc.reason)
            keys, fetched_at, error = cached.keys, cached.fetched_at, cached.error
        finally:
            if fetching:
                lock.release()
        if keys is None:
            raise AttestationRefused(f"issuer keys unavailable: {error}", "unavailable")
        if now - fetched_at > source.max_stale:
            raise AttestationRefused(
                f"issuer keys {int(now - fetched_at)}s old, beyond jwks_max_stale "
                f"{source.max_stale}s (last error: {error or 'none'})",
                "unavailable",
            )
        return keys

    def _due(self, cached: _Cached, source: JwksSource, now: float, refresh: bool) -> bool:
        if cached.tried_at is not None and now - cached.tried_at < self._min_refetch:
            return False  # tried a moment ago: neither floods nor outages cost a fetch each
        if cached.keys is None:
            return True
        return refresh or now - cached.fetched_at >= source.refresh
