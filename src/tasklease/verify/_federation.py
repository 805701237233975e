"""Tokens from federated trust domains, for a resource server's :class:`Verifier`.

A resource server may accept tokens issued by another broker (another trust domain) that
it names in its configuration, each with its own scope ceiling: :class:`FederatedDomain`.
Each domain's keys come from its SPIFFE bundle, fetched from its bundle endpoint over
HTTPS (SPIFFE Federation ``https_web``: the certificate checked against ``ca_file`` or the
system's trust store, for the URL's host), refreshed on the bundle's hint and, at most
once per interval, for a key id it does not hold. The keys of two domains are never
merged, and a key id never chooses a domain: a token belongs to the domain its holder's
SPIFFE ID names (``act.sub`` of a delegated token, else ``sub``: a broker issues tokens
to its own agents only), read before the signature only to choose the keys
(:meth:`Federations.claimed`), and is checked against that domain's bundle alone. A token
whose holder names no configured domain is the home broker's, checked against its JWKS
alone. So a domain publishing another's key id (or the home broker's) takes nothing from
it. A federated token must then be issued by its domain's issuer, held by one of that
domain's agents, and ask for nothing beyond its ceiling (scopes only: a token carrying
structured grants, ``authorization_details``, is refused). A domain whose last good
bundle is older than ``max_bundle_age`` is refused (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from tasklease import forksafe
from tasklease.bounds import FetchFailed, bounded_get, https_url
from tasklease.rules import scopes as scope_rules
from tasklease.rules.bundle import (
    MAX_BUNDLE_BYTES,
    BundleError,
    TrustBundle,
    parse_bundle,
    valid_trust_domain,
)

__all__ = ["FederatedDomain", "FederationError", "Federations"]

_log = logging.getLogger("tasklease.verify")
_DEFAULT_HINT = 300.0  # SPIFFE Federation: five minutes without a hint
_MIN_INTERVAL = 1.0


class FederationError(Exception):
    """A federated domain's bundle could not be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class FederatedDomain:
    """A trust domain whose tokens a :class:`~tasklease.verify.Verifier` accepts.

    Args:
        trust_domain: the domain's SPIFFE trust domain; its agents' IDs are
            ``spiffe://<trust_domain>/...``.
        bundle_endpoint: its broker's bundle endpoint, an ``https`` URL
            (``https://b.example/v1/federation/bundle``, or ``/t/<tenant>/...``).
        issuer: the ``iss`` of its tokens (its broker's, or tenant's, issuer).
        scope_ceiling: the scopes its tokens may carry here; a token asking for anything
            beyond is refused. Required: accepting a foreign domain is a decision about
            what it may do. It holds scopes only: a token of the domain carrying
            structured grants (RFC 9396 ``authorization_details``) is refused.
        ca_file: PEM certificates its endpoint's certificate must chain to; None: the
            system's trust store.
        max_bundle_age: seconds the last good bundle stays usable without a successful
            refresh; beyond, the domain's tokens are refused.
        max_token_lifetime: the longest lifetime (``exp - iat``) accepted from it; None:
            the verifier's own ``max_token_lifetime``.

    Raises:
        ValueError: a malformed trust domain, a URL that is not https without userinfo,
            an empty or malformed ceiling, or a non-positive age.
    """

    trust_domain: str
    bundle_endpoint: str
    issuer: str
    scope_ceiling: Sequence[str]
    ca_file: str | None = None
    max_bundle_age: float = 3600.0
    max_token_lifetime: int | None = None

    def __post_init__(self) -> None:
        if not valid_trust_domain(self.trust_domain):
            raise ValueError(f"invalid trust domain: {self.trust_domain!r}")
        if not https_url(self.bundle_endpoint):
            raise ValueError("bundle_endpoint must be an https URL without userinfo")
        if not self.issuer:
            raise ValueError("issuer is required: tokens are checked against it")
        ceiling = tuple(self.scope_ceiling)
        if not ceiling or any(scope_rules.parse_scope(s) is None for s in ceiling):
            raise ValueError("scope_ceiling must name at least one well-formed scope")
        object.__setattr__(self, "scope_ceiling", ceiling)
        if not self.max_bundle_age > 0:
            raise ValueError("max_bundle_age must be positive")


@dataclass
class _Domain:
    """One domain's last good bundle, as verify keys, and when it was fetched."""

    config: FederatedDomain
    context: ssl.SSLContext
    keys: dict[str, nacl.signing.VerifyKey] = field(default_factory=dict)
    bundle: TrustBundle | None = None
    fetched_at: float = -float("inf")  # monotonic
    last_attempt: float = -float("inf")
    last_kid_attempt: float = -float("inf")
    lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        forksafe.track(self)  # its lock, held by a fetch at a fork, unheld in the child

    def interval(self) -> float:
        hint = self.bundle.refresh_hint if self.bundle is not None else None
        seconds = _DEFAULT_HINT if hint is None else float(hint)
        return max(_MIN_INTERVAL, min(seconds, self.config.max_bundle_age / 2))


class Federations:
    """The federated domains of one verifier: their keys, refreshed, never merged."""

    def __init__(
        self,
        domains: Sequence[FederatedDomain],
        *,
        timeout: float,
        min_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [d.trust_domain for d in domains]
        if len(set(names)) != len(names):
            raise ValueError("a trust domain is configured twice")
        self._domains = {d.trust_domain: _Domain(d, _context(d.ca_file)) for d in domains}
        self._timeout = timeout
        self._min_interval = min_interval
        self._monotonic = monotonic

    # --- keys ------------------------------------------------------------------------------

    def claimed(self, claims: Mapping[str, Any]) -> _Domain | None:
        """The configured domain a token's claims (not yet verified) say it belongs to:
        its holder's trust domain (``act.sub`` of a delegated token, else ``sub``), or
        None for any other token (the home broker's, verified with its JWKS alone).

        Only to choose whose keys may verify the token: the verified token must then be
        issued by that domain's issuer to one of its agents
        (:meth:`check_holder_and_ceiling`).
        """
        act = claims.get("act")
        if act is None:
            holder = claims.get("sub")
        elif type(act) is dict:
            holder = act.get("sub")
        else:
            return None  # malformed: refused as the home broker's (rules.claims.holder_of)
        if type(holder) is not str or not holder.startswith("spiffe://"):
            return None
        return self._domains.get(holder[9:].partition("/")[0])

    def key(self, domain: _Domain, kid: str, *, network: bool) -> nacl.signing.VerifyKey | None:
        """``kid``'s key in ``domain``'s bundle, and in no other domain's. With
        ``network``, the bundle is fetched first when its refresh hint has passed, and
        again for a kid it lacks (at most once per ``min_interval``).

        Raises:
            FederationError: the domain's last good bundle is older than its max age.
        """
        if network and self._due(domain, self._monotonic()):
            self._fetch(domain, due=self._due)
        found = self.resolve_in(domain)(kid)
        if found is None and network and self.refresh_for_unknown_kid(domain):
            found = self.resolve_in(domain)(kid)
        return found

    def refresh_for_unknown_kid(self, domain: _Domain) -> bool:
        """Fetch ``domain``'s bundle unless one was fetched for an unknown kid less than
        ``min_interval`` ago; True if the fetch succeeded."""
        now = self._monotonic()
        if now - domain.last_kid_attempt < self._min_interval:
            return False
        domain.last_kid_attempt = now
        return self._fetch(domain)

    def due(self) -> bool:
        """True when a bundle's refresh hint has passed and it may be fetched now."""
        now = self._monotonic()
        return any(self._due(domain, now) for domain in self._domains.values())

    def refresh_due(self) -> None:
        """Fetch the bundles whose refresh hint has passed (a failure is retried after
        ``min_interval``); run by the verifier's housekeeping, by a verification that may
        fetch, and (in a thread) by an async one. Callers at once make one fetch."""
        for domain in self._domains.values():
            if self._due(domain, self._monotonic()):
                self._fetch(domain, due=self._due)

    def _due(self, domain: _Domain, now: float) -> bool:
        interval = domain.interval()
        return now - domain.fetched_at >= interval and now - domain.last_attempt >= min(
            self._min_interval, interval
        )

    def refresh_all(self) -> None:
        """Fetch every bundle now (start-up)."""
        for domain in self._domains.values():
            self._fetch(domain)

    def stats(self) -> dict[str, dict[str, Any]]:
        now = self._monotonic()
        return {
            name: {
                "kids": list(d.keys),
                "sequence": d.bundle.sequence if d.bundle is not None else None,
                "age": now - d.fetched_at if d.bundle is not None else None,
                "fetches": d.fetches,
                "last_error": d.last_error,
            }
            for name, d in self._domains.items()
        }

    # --- checks ------------------------------------------------------------------------------

    def resolve_in(self, domain: _Domain) -> Callable[[str], nacl.signing.VerifyKey | None]:
        """A key resolver over ``domain``'s bundle only, refusing when it is too old."""
        if self._monotonic() - domain.fetched_at > domain.config.max_bundle_age:
            raise FederationError(f"bundle of {domain.config.trust_domain} too old or missing")
        return domain.keys.get

    @staticmethod
    def check_holder_and_ceiling(
        domain: _Domain, holder: str, scope: Sequence[str], claims: Mapping[str, Any]
    ) -> None:
        """The holder must be the domain's agent, its scopes within the domain's ceiling,
        and the token must carry no structured grants (``authorization_details``).

        A domain's ceiling is scopes only: there is nothing to hold a foreign broker's
        RFC 9396 grants to (a payment limit, a ``scope`` grant naming a scope beyond the
        ceiling), so a token carrying any is refused rather than trusted as it claims.
        """
        config = domain.config
        if not holder.startswith(f"spiffe://{config.trust_domain}/"):
            raise FederationError("holder is not an agent of the token's trust domain")
        if not scope_rules.is_subset(scope, config.scope_ceiling):
            raise FederationError("scope beyond the federated domain's ceiling")
        if "authorization_details" in claims:
            raise FederationError("authorization_details are not accepted from a federated domain")

    # --- fetching (SPIFFE Federation https_web) -----------------------------------------

    def _fetch(
        self, domain: _Domain, *, due: Callable[[_Domain, float], bool] | None = None
    ) -> bool:
        """Fetch ``domain``'s bundle (when ``due`` says so, asked once its lock is held).

        Another caller's fetch under way is waited for ``timeout`` seconds at most: a peer
        that answers slowly holds one thread, not every verification that wants its keys.
        """
        if not domain.lock.acquire(timeout=self._timeout):
            return False
        with contextlib.ExitStack() as held:
            held.callback(domain.lock.release)
            if due is not None and not due(domain, self._monotonic()):
                return False  # another caller fetched it while this one waited
            domain.last_attempt = self._monotonic()
            domain.fetches += 1
            config = domain.config
            try:
                body = _get(config.bundle_endpoint, domain.context, self._timeout)
                bundle = parse_bundle(body, config.trust_domain)
            except (FederationError, BundleError) as exc:
                domain.last_error = exc.reason
                _log.warning("bundle of %s not refreshed: %s", config.trust_domain, exc.reason)
                return False
            previous = domain.bundle
            if (
                previous is not None
                and previous.sequence is not None
                and (bundle.sequence is None or bundle.sequence < previous.sequence)
            ):
                domain.last_error = "spiffe_sequence went backwards"
                _log.warning("bundle of %s refused: sequence went back", config.trust_domain)
                return False
            domain.keys = {kid: nacl.signing.VerifyKey(k) for kid, k in bundle.keys.items()}
            domain.bundle = bundle
            domain.fetched_at = self._monotonic()
            domain.last_error = ""
            return True


def _context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _get(url: str, context: ssl.SSLContext, timeout: float) -> bytes:
    """GET ``url`` within every bound of :func:`tasklease.bounds.bounded_get`."""
    try:
        return bounded_get(url, context=context, timeout=timeout, limit=MAX_BUNDLE_BYTES)
    except FetchFailed as exc:
        raise FederationError(exc.reason) from None
