"""A peer's token checked as an identity credential, offline (offline peer authentication).

The SDK's offline handshake (``tasklease.client.OfflinePeerAuth``, formats in
``tasklease.rules.peerauth``) needs each agent's token verified by the other with no
broker round trip: :func:`verify_peer_token` makes every check :meth:`Verifier.verify`
makes (signature from the cached JWKS, issuer, time with no leeway on ``exp``, lifetime,
chain, ``act``; an offline chain by ``rules.chainverify``; revocation of the token and of
every agent and ancestor it names from the feed; the staleness bound, critical tokens
included) but two:

* the audience: a peer is not a resource server, and a token for any resource proves
  who holds it;
* the sender constraint (``cnf``): the handshake's transcript, signed with the key the
  token names (``agent_jwk``; an offline chain's last delegate key), is the proof of
  possession.

Nothing is cached here (the resource path's cache holds audience-checked tokens only), and
by-reference tokens are refused (introspection is a broker round trip).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tasklease.rules import jws
from tasklease.rules.attenuation import ChainError, is_chain
from tasklease.rules.chainverify import verify_chain
from tasklease.rules.claims import ClaimRejected, check_claims
from tasklease.verify._chains import token_of_chain
from tasklease.verify._claims import VerifiedToken, parse_claims
from tasklease.verify._errors import InvalidToken
from tasklease.verify._introspection import is_reference_token

__all__ = ["verify_peer_token"]

_ALLOWED_TYPS = frozenset({"at+jwt"})


def verify_peer_token(verifier: Any, token: str) -> VerifiedToken:
    """``token`` verified as a peer's identity credential by ``verifier``'s keys, rules and
    revocation state (see the module's documentation); :meth:`Verifier.verify_peer`
    (``verifier`` is that ``Verifier``: typed loosely, so that this module does not import
    the one that imports it).

    Raises:
        InvalidToken: any failed check.
        RevocationStateStale: the revocation state is older than the token's bound.
        KeySetStale: no JWKS fetch has succeeded for ``jwks_max_stale``.
    """
    if type(token) is not str or not token:
        raise InvalidToken("no token")
    if len(token) > verifier._max_bytes:
        raise InvalidToken("token too large")
    if is_reference_token(token):
        raise InvalidToken("a by-reference token cannot be verified offline")
    now = verifier._clock.now()
    if is_chain(token):
        try:
            chain = verify_chain(
                token,
                resolve_key=verifier._resolve,
                issuer=verifier.issuer,
                audiences=None,
                now=now,
                limits=verifier._chain_limits,
                max_lifetime=verifier._max_lifetime,
                presented=None,
                dpop=None,
                revoked=verifier._revocations.match,
                skew=verifier._skew,
            )
        except ChainError as exc:
            raise InvalidToken(f"offline chain: {exc.reason}") from None
        verified = token_of_chain(chain)
    else:
        try:
            _, _, claims = jws.decode_parts(
                token, verifier._resolve, _ALLOWED_TYPS, verifier._max_bytes
            )
        except jws.JWSError as exc:
            raise InvalidToken(exc.reason) from None
        verified = parse_claims(claims)
        try:
            actors = check_claims(
                verified,
                verified.claims,
                issuer=verifier.issuer,
                audiences=None,
                now=now,
                skew=verifier._skew,
                max_lifetime=verifier._max_lifetime,
                max_depth=verifier._max_depth,
            )
        except ClaimRejected as exc:
            raise InvalidToken(exc.reason) from None
        if actors:
            verified = dataclasses.replace(verified, actors=actors)
        level = verifier._revocations.match(verified)
        if level is not None:
            raise InvalidToken(f"token has been revoked (level {level})")
    verifier._freshness.check(verified, verifier._feed)
    return verified
