"""Offline verification of tasklease agent tokens for resource servers.

A :class:`Verifier` holds the broker's keys (JWKS, cached, refreshed on an unknown ``kid``
at most once per interval), a copy of the broker's revocation index kept current by the
revocation feed, and a bounded cache of tokens it has verified. Verification is local:
no request to the broker per token. A key is usable only while the last successful fetch
of the JWKS lists it (``verify._jwks``): a remembered token is checked again at every use
for its key, time, revocation, freshness and binding.

Checks, in order (the broker's own rules, ``tasklease.rules``): size cap, header
allow-list (``alg`` ``EdDSA``, ``typ`` ``at+jwt``, known ``kid``), Ed25519 signature
(PyNaCl), claim types, ``iss``, ``aud`` contains this resource's audience (RFC 8707 / MCP:
a token for another resource is refused), ``exp`` (no leeway unless ``exp_leeway``),
``nbf``/``iat`` with the clock skew, lifetime, ``max_exp``, delegation depth and chain
hash, revocation (the token, its subject, task, delegators and ``lineage``). Then
freshness (``verify._freshness``, the outage policy): when the feed has not proved current
for ``max_feed_staleness`` seconds (60), every verification fails closed with
:class:`RevocationStateStale`; tokens with a critical scope or grant type are refused as
soon as the feed is no longer live (``critical_feed_staleness`` 0).

The ``act`` chain (RFC 8693) of a delegated token must agree with its delegation chain and
principal. A sender-constrained token (``cnf``) must come with its proof: the client
certificate (RFC 8705) or ``Authorization: DPoP`` and a DPoP proof (RFC 9449); see
``tasklease.rules.binding``. Binding is checked on every request, cached token or not.

Offline chains (``tla1~...``: a token followed by blocks its holders signed to hand on part
of it without the broker, docs/formats.md) are verified by the broker's own rules
(``rules.chainverify``): every signature, each block's attenuation by the issuance check,
expiry, depth, every element against the revocation index, freshness, and the last
delegate's DPoP proof (``Authorization: DPoP`` with a ``DPoP`` header). The answer is a
:class:`VerifiedToken` for the last holder, with ``offline`` holding the chain.

By-reference tokens (``tlr_...``, issued when a JWT would be too large) are resolved
through the broker's RFC 7662 introspection with the verifier's credentials; active
answers go through the same claim checks and are cached in their own bounded LRU until
``exp`` or a matching revocation from the feed (not cached at all without a feed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from hashlib import sha256 as _sha256
from typing import Any

import nacl.signing

from tasklease.rules import jws
from tasklease.rules.attenuation import is_chain
from tasklease.rules.binding import (
    BindingError,
    DPoPProofError,
    Presentation,
    check_binding,
    presented_thumbprint,
)
from tasklease.rules.claims import ClaimRejected, check_claims, check_time
from tasklease.verify._chains import (
    recheck_offline_chain,
    token_of_chain,
    verify_offline_chain,
)
from tasklease.verify._claims import VerifiedToken, claims_from_introspection, parse_claims
from tasklease.verify._errors import InsufficientScope, InvalidToken
from tasklease.verify._federation import FederationError, Federations, _Domain
from tasklease.verify._grants import CallCount, count_call
from tasklease.verify._introspection import (
    REFERENCE_CHARS,
    TokenIntrospector,
    is_reference_token,
)
from tasklease.verify._peer import verify_peer_token
from tasklease.verify._verifierbase import VerifierBase

__all__ = ["TokenIntrospector", "Verifier"]  # TokenIntrospector: re-exported

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT type, not a secret
_ALLOWED_TYPS = frozenset({ACCESS_TOKEN_TYPE})
_decode_parts = jws.decode_parts
_decode_claimed = jws.decode_parts_claimed
_log = logging.getLogger("tasklease.verify")


_BEARER = Presentation()


class _NeedsIntrospection(Exception):
    """Raised on the event loop when a by-reference token must be introspected (I/O)."""


class Verifier(VerifierBase):
    """Verifies agent access tokens offline for one resource (``audience``).

    Args:
        broker_url: the broker's base URL (``https://broker.example``): ``https://``, or
            ``http://`` to a loopback host (``localhost``, 127.0.0.0/8, ``::1``). The app's
            secret and its tokens must not cross a network in clear, and the key set read
            from it decides which tokens are accepted, so must not be open to rewriting in
            transit (ValueError otherwise, unless ``insecure_http``).
        audience: this resource's audience; a token whose ``aud`` lacks it is refused.
        issuer: the broker's ``iss``.
        jwks_ttl: seconds before the cached JWKS is fetched again (by the next
            verification, sync or async, feed or not; with a feed also in the background).
            A key the broker removed stops verifying at the first successful fetch that no
            longer lists it, for every token, remembered ones too: at most ``jwks_ttl``
            seconds after its removal while the broker answers.
        jwks_min_refresh_interval: at most one JWKS fetch per this many seconds, however
            many tokens name unknown kids.
        jwks_max_stale: seconds the last good key set serves with no JWKS fetch succeeding
            (the broker away, or this verifier cut off from it); past it every
            verification fails closed (:class:`KeySetStale`, a :class:`VerifierUnavailable`)
            until a fetch succeeds, so a key the broker removed meanwhile is not trusted
            for as long as this verifier runs. Must exceed ``jwks_ttl``.
        feed: follow the broker's revocation feed (needs ``credentials``). Without it,
            revocations reach this verifier only through token expiry: use it only where
            that is acceptable.
        credentials: an app's :class:`AppCredentials`, or a callable returning an admin or
            app bearer token, to read the revocation feed and to introspect by-reference
            tokens (an app sees only its own agents' tokens there).
        max_feed_staleness: seconds without news from a current feed (a keepalive counts)
            after which every verification fails closed (:class:`RevocationStateStale`, a
            :class:`VerifierUnavailable`): how long this resource server rides out a broker
            outage on its cached keys and revocation state (docs/broker-optional.md).
        critical_feed_staleness: the same bound for critical tokens; 0 (the default) means
            they are accepted only while the feed is live (connected, synced and heard from
            within ``feed_liveness`` seconds).
        critical_scopes: scope patterns (the broker's ``critical_scopes``, e.g.
            ``write:payments:*``); a token holding a scope that overlaps one, in its
            ``scope`` claim or as a ``scope`` grant (limited or not), is critical.
        critical_grant_types: structured grant types (RFC 9396 ``type``) that make a token
            holding one critical.
        feed_liveness: seconds without a byte from a connected stream after which it no
            longer counts as live and is reconnected (the broker beats every 2 s).
        clock_skew: seconds an ``nbf`` or ``iat`` may lie in the future (clocks drift).
        exp_leeway: seconds a token is still accepted after its ``exp``: 0, as at the
            broker (a token is dead at its ``exp``), unless this resource server's clock
            is known to run ahead. Revocation entries are kept that much longer too.
        max_token_lifetime: the broker's ``max_ttl``: longer-lived tokens are refused.
        max_delegation_depth: deepest delegation chain accepted.
        cache_size: verified tokens remembered (LRU); 0 disables the cache.
        introspector: resolves by-reference tokens; default :class:`BrokerIntrospector`
            (``POST /v1/introspect`` with ``credentials``). Without either, by-reference
            tokens are refused.
        introspection_cache_size: active introspection answers remembered (LRU, each
            until its ``exp`` or a matching revocation); 0 disables it. Only with a feed.
        dpop_proof_window: seconds a DPoP proof's ``iat`` may differ from now (the
            broker's ``dpop_proof_window``); proof ``jti``s are remembered that long.
        dpop_replay_cache_size: most DPoP proof ``jti``s remembered; when full, new proofs
            are refused (fail closed).
        dpop_replay: where DPoP proofs already presented are remembered
            (:class:`~tasklease.rules.binding.ProofLedger`); default: this process's
            memory. A resource server running several processes passes one they share,
            so that a proof is single use across them (RFC 9449 section 11.1). One with
            ``remember_for`` (:class:`~tasklease.rules.binding.QuotaProofLedger`) is told
            whose proof it is, to keep its own per-key quota.
        dpop_replay_per_key: most live (unexpired) proofs of one DPoP key remembered in the
            default cache (5,000: 83 requests a second for a 60 s window); past it that
            key's proofs are refused (``invalid_dpop_proof``) and every other key's still
            accepted, so that one holder cannot fill the cache and lock the others out.
            An offline chain's proofs count against its root holder's key.
        transport: an httpx transport (tests inject one to count or fake requests).
        clock: wall clock for ``exp``/``nbf``/``iat`` (tests inject one).
        federations: other brokers' trust domains whose tokens are accepted too, each
            verified with its own SPIFFE bundle (fetched over HTTPS from its bundle
            endpoint) and held to its own issuer and scope ceiling
            (:class:`~tasklease.verify.FederatedDomain`; docs/federation.md). Their
            tokens are checked against this verifier's revocations, not their broker's:
            keep their lifetimes short (``max_token_lifetime``).
        broker_audiences: the broker's own audiences (its ``audience`` setting), when an
            offline chain's block may narrow a token for the broker alone to one resource;
            without them a block only narrows to a resource its parent already names.
        report_uses: report the offline chains this verifier accepts to the broker's audit
            log (``POST /v1/audit/offline``, with ``credentials``), counted per chain and
            minute, once the minute is over and the feed is connected (docs/audit.md).
        bearer_chains: accept an offline chain presented as a bearer token, without the
            last delegate's DPoP proof (for transports that carry no ``DPoP`` header, such
            as MCP's). Off by default: whoever holds such a chain can use it.
        insecure_http: True talks to a broker beyond loopback over plain HTTP (on a
            network you trust: ``credentials`` are sent, and keys read, in clear),
            announced once with an
            :class:`~tasklease.rules.cleartext.InsecureHTTPWarning`; False refuses it even
            when ``TASKLEASE_INSECURE_HTTP=1`` is set; None (the default) follows that
            variable.
    """

    # --- verification -------------------------------------------------------------------

    def verify(
        self,
        token: str,
        *,
        scheme: str = "Bearer",
        client_cert: bytes | str | None = None,
        client_cert_thumbprint: str | None = None,
        dpop_proof: str | None = None,
        htm: str = "",
        htu: str = "",
    ) -> VerifiedToken:
        """Verify ``token`` for this audience; may fetch the JWKS once for an unknown kid,
        and introspects a by-reference token not in the cache.

        The rest is what the request presented besides the token, for sender-constrained
        tokens: ``scheme`` (``Bearer`` or ``DPoP``, from the ``Authorization`` header);
        the TLS client certificate as ``client_cert`` (DER bytes or PEM) or its
        ``client_cert_thumbprint`` (``x5t#S256``); the ``DPoP`` header as ``dpop_proof``
        with the request's method ``htm`` and URI ``htu`` (scheme, host, path).

        Raises:
            InvalidToken: any failed check (the reason is in ``.reason`` only).
            VerifierUnavailable: the revocation feed is stale, no JWKS fetch has succeeded
                for ``jwks_max_stale`` (:class:`KeySetStale`), or introspection failed: fail
                closed.
        """
        presented = (
            None
            if scheme == "Bearer" and client_cert is None and not client_cert_thumbprint
            else self._presentation(
                scheme, client_cert, client_cert_thumbprint, dpop_proof, htm, htu
            )
        )
        return self._verify(token, self._resolve, presented, introspect=True)

    async def averify(
        self,
        token: str,
        *,
        scheme: str = "Bearer",
        client_cert: bytes | str | None = None,
        client_cert_thumbprint: str | None = None,
        dpop_proof: str | None = None,
        htm: str = "",
        htu: str = "",
    ) -> VerifiedToken:
        """:meth:`verify` for async code: a JWKS fetch or an introspection runs in a thread.

        The keys are refreshed by age as :meth:`verify` refreshes them (without a feed
        too): when they are due, this call fetches them in a thread before it verifies.
        """
        presented = self._presentation(
            scheme, client_cert, client_cert_thumbprint, dpop_proof, htm, htu
        )
        if self._keys_due():
            await asyncio.to_thread(self._refresh_due_keys)
        try:
            return self._verify(token, self._cached_key, presented, introspect=False)
        except _NeedsIntrospection:
            return await asyncio.to_thread(
                self._verify, token, self._cached_key, presented, introspect=True
            )
        except InvalidToken as exc:
            if exc.reason != "unknown kid":
                raise
            if self._federation is not None:  # its bundles may be fetched: in a thread
                return await asyncio.to_thread(
                    self._verify, token, self._resolve, presented, introspect=True
                )
            if not self._keys.may_refresh():
                raise
        await asyncio.to_thread(self._keys.refresh_for_unknown_kid)
        return self._verify(token, self._keys.get, presented, introspect=False)

    @staticmethod
    def _presentation(
        scheme: str,
        client_cert: bytes | str | None,
        client_cert_thumbprint: str | None,
        dpop_proof: str | None,
        htm: str,
        htu: str,
    ) -> Presentation | None:
        """What the request presented; ``None`` for a plain bearer token (the fast path)."""
        if scheme == "Bearer" and client_cert is None and not client_cert_thumbprint:
            return None
        try:
            thumbprint = client_cert_thumbprint or presented_thumbprint(client_cert)
        except BindingError as exc:
            raise InvalidToken(exc.reason) from None
        return Presentation(
            scheme=scheme,
            cert_thumbprint=thumbprint,
            dpop_proof=dpop_proof or "",
            htm=htm,
            htu=htu,
        )

    def verify_peer(self, token: str) -> VerifiedToken:
        """Verify another agent's token (or offline chain) as its identity credential, for
        offline peer authentication (``tasklease.client.OfflinePeerAuth``): every check of
        :meth:`verify` but the audience and the sender constraint, which the handshake's
        signature by the key the token names replaces. No broker call; nothing cached.

        Raises:
            InvalidToken: any failed check.
            RevocationStateStale: the revocation state is older than the token's bound.
            KeySetStale: no JWKS fetch has succeeded for ``jwks_max_stale``.
        """
        return verify_peer_token(self, token)

    def require_scope(self, token: VerifiedToken, scope: str) -> None:
        """Raise :class:`InsufficientScope` unless ``token`` covers ``scope``."""
        if not token.has_scope(scope):
            raise InsufficientScope(f"token lacks required scope: {scope}", scope)

    def count_call(
        self,
        token: str,
        kind: str,
        *,
        scheme: str = "Bearer",
        client_cert: bytes | str | None = None,
        client_cert_thumbprint: str | None = None,
        dpop_proof: str | None = None,
        htm: str = "",
        htu: str = "",
        **call: Any,
    ) -> CallCount:
        """Ask the broker to count one call of ``token``'s grant that allows ``call``
        against its ``max_calls`` (``POST /v1/token/calls``; the arguments of
        :meth:`VerifiedToken.allows`, and what the request presented as for
        :meth:`verify`). Raises :class:`InsufficientScope` when the calls are used up.

        With ``credentials`` the request carries this verifier's app or admin token: the
        broker counts a certificate-bound token's calls only for an authenticated resource
        server (for an app, only its own agents'), and names it in the count's audit
        event. Without them such a count is refused (:class:`InvalidToken`)."""
        presented = self._presentation(
            scheme, client_cert, client_cert_thumbprint, dpop_proof, htm, htu
        )
        credentials = self._credentials is not None
        return count_call(
            self._client,
            token,
            kind,
            audience=self.audience,
            presented=presented,
            call=call,
            token_source=self._bearer_for_feed if credentials else None,
            forget_token=self._forget_feed_token if credentials else None,
        )

    async def acount_call(self, token: str, kind: str, **kwargs: Any) -> CallCount:
        """:meth:`count_call` for async code (the request runs in a thread)."""
        return await asyncio.to_thread(self.count_call, token, kind, **kwargs)

    def _verify(
        self,
        token: str,
        resolve_key: Callable[[str], Any],
        presented: Presentation | None,
        *,
        introspect: bool,
    ) -> VerifiedToken:
        # The first-seen path of a signed token is the hot one (~9 us above the signature
        # check): decode_parts, parse_claims and check_claims each make one pass.
        if type(token) is not str or not token:
            raise InvalidToken("no token")
        if len(token) > self._max_bytes:
            raise InvalidToken("token too large")
        if is_chain(token):
            return self._verify_chain(token, resolve_key, presented)
        digest = _sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock.now()
        reference = len(token) == REFERENCE_CHARS and is_reference_token(token)
        cache = self._references if reference else self._cache
        verified: VerifiedToken | None = None
        entry = cache.get(digest)
        if entry is not None:
            verified, kid = entry
            if kid and resolve_key(kid) is None:
                # Its key left the broker's key set (verify._jwks): no longer remembered,
                # verified again from scratch, which refuses it unless the key is back.
                cache.discard(digest)
                verified = None
            else:
                try:
                    check_time(verified, now, self._skew, self._exp_leeway)
                except ClaimRejected as exc:
                    cache.discard(digest)
                    raise InvalidToken(exc.reason) from None
        if verified is None:
            kid = ""
            if reference:
                if not introspect:
                    raise _NeedsIntrospection
                verified = self._introspect(token)
            else:
                federation = self._federation
                try:
                    if federation is None:
                        _, kid, claims = _decode_parts(
                            token, resolve_key, _ALLOWED_TYPS, self._max_bytes
                        )
                    else:
                        _, kid, claims = _decode_claimed(
                            token,
                            self._keys_by_claims(federation, resolve_key, introspect),
                            _ALLOWED_TYPS,
                            self._max_bytes,
                        )
                        domain = federation.claimed(claims)
                        if domain is not None:
                            return self._federated(token, domain, claims, presented, now)
                except (jws.JWSError, FederationError) as exc:
                    raise InvalidToken(exc.reason) from None
                verified = parse_claims(claims)
            try:
                actors = check_claims(
                    verified,
                    verified.claims,
                    issuer=self.issuer,
                    audiences=self._audiences,
                    now=now,
                    skew=self._skew,
                    max_lifetime=self._max_lifetime,
                    max_depth=self._max_depth,
                    exp_leeway=self._exp_leeway,
                )
            except ClaimRejected as exc:
                raise InvalidToken(exc.reason) from None
            if actors:
                verified = dataclasses.replace(verified, actors=actors)
            cache.put(digest, (verified, kid))
        level = self._revocations.match(verified)
        if level is not None:
            cache.discard(digest)
            raise InvalidToken(f"token has been revoked (level {level})")
        self._freshness.check(verified, self._feed)
        cnf = verified.cnf
        if cnf is not None or presented is not None:
            try:
                check_binding(cnf, token, presented or _BEARER, dpop=self._dpop, now=now)
            except BindingError as exc:
                raise InvalidToken(exc.reason, dpop_proof=isinstance(exc, DPoPProofError)) from None
        return verified

    # --- offline chains (rules.chainverify) ------------------------------------------------

    def _verify_chain(
        self,
        text: str,
        resolve_key: Callable[[str], Any],
        presented: Presentation | None,
    ) -> VerifiedToken:
        """An offline chain: every check of the shared rules, then freshness, then the
        presenter's DPoP proof of the last delegate's key. Remembered like a token (in the
        same cache): at a later use the root's key (still in the key set), time, each
        element's revocation, freshness and the proof are checked again."""
        now = self._clock.now()
        digest = _sha256(text.encode("utf-8", "surrogatepass")).digest()
        entry = self._cache.get(digest)
        chain = None if entry is None else entry[0].offline
        if entry is not None and chain is not None and resolve_key(entry[1]) is not None:
            verified = entry[0]
            try:
                recheck_offline_chain(
                    chain, now=now, skew=self._skew, revoked=self._revocations.match
                )
            except InvalidToken:
                self._cache.discard(digest)
                raise
        else:
            if entry is not None:  # the root's key left the key set: verified from scratch
                self._cache.discard(digest)
            root_kids: list[str] = []

            def resolve_root(kid: str) -> Any:
                root_kids.append(kid)
                return resolve_key(kid)

            chain = verify_offline_chain(
                text,
                resolve_key=resolve_root,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
                limits=self._chain_limits,
                max_lifetime=self._max_lifetime,
                skew=self._skew,
                revoked=self._revocations.match,
            )
            verified = token_of_chain(chain)
            self._cache.put(digest, (verified, root_kids[0]))
        self._freshness.check(verified, self._feed)
        if presented is not None or not self._bearer_chains:
            try:
                check_binding(
                    chain.cnf,
                    text,
                    presented or _BEARER,
                    dpop=self._dpop,
                    now=now,
                    holder=chain.root_holder_jkt,
                )
            except BindingError as exc:
                raise InvalidToken(
                    f"offline chain: {exc.reason}", dpop_proof=isinstance(exc, DPoPProofError)
                ) from None
        if self._uses is not None:
            self._uses.used(text, now)
        return verified

    # --- tokens of federated trust domains (verify._federation) ---------------------------

    @staticmethod
    def _keys_by_claims(
        federation: Federations,
        home: Callable[[str], nacl.signing.VerifyKey | None],
        network: bool,
    ) -> Callable[[str, dict[str, Any]], nacl.signing.VerifyKey | None]:
        """The key resolver of a verifier with federated domains: the domain a token's
        claims name (:meth:`Federations.claimed`) chooses the keys, then its ``kid`` one of
        them. A federated domain's token: that domain's bundle alone (with ``network``,
        fetched when due or for a kid it lacks). Any other: the broker's keys alone
        (``home``; the sync path fetches its JWKS for a kid it lacks), whatever kids a
        federated bundle publishes."""

        def resolve(kid: str, claims: dict[str, Any]) -> nacl.signing.VerifyKey | None:
            domain = federation.claimed(claims)
            if domain is None:
                return home(kid)
            return federation.key(domain, kid, network=network)

        return resolve

    def _federated(
        self,
        token: str,
        domain: _Domain,
        claims: dict[str, Any],
        presented: Presentation | None,
        now: float,
    ) -> VerifiedToken:
        """The checks of a token of a federated domain, verified with that domain's keys:
        its issuer, lifetime, holder and ceiling, then revocation, freshness and binding.

        Not cached: the bundle's age and the domain's configuration count at every use.
        """
        config = domain.config
        try:
            verified = parse_claims(claims)
            actors = check_claims(
                verified,
                verified.claims,
                issuer=config.issuer,
                audiences=self._audiences,
                now=now,
                skew=self._skew,
                max_lifetime=config.max_token_lifetime or self._max_lifetime,
                max_depth=self._max_depth,
                exp_leeway=self._exp_leeway,
            )
            if actors:
                verified = dataclasses.replace(verified, actors=actors)
            Federations.check_holder_and_ceiling(
                domain, verified.sub, verified.scope, verified.claims
            )
        except (ClaimRejected, FederationError) as exc:
            raise InvalidToken(exc.reason) from None
        level = self._revocations.match(verified)
        if level is not None:
            raise InvalidToken(f"token has been revoked (level {level})")
        self._freshness.check(verified, self._feed)
        if verified.cnf is not None or presented is not None:
            try:
                check_binding(verified.cnf, token, presented or _BEARER, dpop=self._dpop, now=now)
            except BindingError as exc:
                raise InvalidToken(exc.reason, dpop_proof=isinstance(exc, DPoPProofError)) from None
        return verified

    def _introspect(self, token: str) -> VerifiedToken:
        if self._introspector is None:
            raise InvalidToken("by-reference token but no introspection credentials")
        self._freshness.check_any(self._feed)
        body = self._introspector.introspect(token)
        if body is None:
            raise InvalidToken("by-reference token is not active")
        return claims_from_introspection(dict(body))
