"""Offline verification of tasklease tokens for resource servers (APIs, MCP servers).

    from tasklease.verify import AppCredentials, Verifier

    verifier = Verifier("https://broker.example", audience="orders-api",
                        credentials=AppCredentials(client_id, client_secret))
    verifier.start()
    token = verifier.verify(bearer)          # VerifiedToken, or raises VerificationError
    verifier.require_scope(token, "read:orders:42")

Opaque by-reference tokens are resolved through the broker's introspection; bound tokens
(``cnf``) need their proof: ``verify(token, client_cert=...)`` or ``verify(token,
scheme="DPoP", dpop_proof=..., htm=..., htu=...)``.

Tokens of agents that registered with workload evidence carry what it proved
(``token.attestation``); :func:`require_attested` admits only the facts a route needs.

Structured grants (RFC 9396 ``authorization_details``, docs/grants.md):
``token.allows("resource_access", action="pay", amount="80", currency="EUR")`` names the
grant that allows a call; :func:`require_grant` raises when none does; a grant's
``max_calls`` is counted by the broker (``verifier.count_call``).

While the broker is away, verification goes on from the cached keys and the last state
of the revocation feed for ``max_feed_staleness`` (60 s), then fails closed with
:class:`RevocationStateStale` (503 ``revocation_state_stale``); tokens with a critical
scope or grant type (``critical_scopes``, ``critical_grant_types``) need a live feed. The
staleness is a metric (``verifier.feed_staleness()``, ``verifier.metrics_text()``). The
cached keys serve for ``jwks_max_stale`` (3600 s) after the last successful JWKS fetch, feed
or not, then every verification fails closed with :class:`KeySetStale` (503
``key_set_stale``): a key the broker removed meanwhile is not trusted for ever.
``verifier.verify_peer`` checks another agent's token for offline peer authentication
(docs/broker-optional.md).

Tokens of other brokers' trust domains are accepted when listed in ``federations``
(:class:`FederatedDomain`: each its bundle endpoint, issuer and scope ceiling; see
docs/federation.md).

Needs only PyNaCl and httpx. The Starlette/FastAPI middleware and ``require_scope`` are in
:mod:`tasklease.verify.asgi`; the token verifier for the ``mcp`` SDK is in
:mod:`tasklease.verify.mcp`. See ``docs/verifier.md``.

The broker's audit log is verified offline too, from a checkpoint and the log's keys
(``verify_checkpoint``, ``verify_event_inclusion``, ``verify_log_consistency``,
``verify_proof_bundle``; see ``docs/audit.md``).

:func:`parse_jwks` is the rule that decides which keys of a JWK Set verify anything (the
``kid`` is the key's RFC 7638 thumbprint, EdDSA for signatures only, no private half), for
tools that judge a token by a JWK Set as the verifier would (``tasklease token inspect``).
"""

from typing import TYPE_CHECKING, Any

# Each name is imported from its module when first asked for (PEP 562): a tool that only
# checks audit proofs (``tasklease audit verify``) does not load the token verifier, its
# HTTP client and the federation it is not using.
if TYPE_CHECKING:
    from tasklease.verify._attest import require_attested
    from tasklease.verify._audit import (
        AuditProofError,
        Checkpoint,
        verify_checkpoint,
        verify_event_inclusion,
        verify_log_consistency,
        verify_proof_bundle,
    )
    from tasklease.verify._claims import DelegationHop, VerifiedToken
    from tasklease.verify._errors import (
        InsufficientScope,
        InvalidToken,
        KeySetStale,
        RevocationStateStale,
        VerificationError,
        VerifierUnavailable,
    )
    from tasklease.verify._federation import FederatedDomain
    from tasklease.verify._feed import AppCredentials
    from tasklease.verify._grants import CallCount, has_max_calls, require_grant
    from tasklease.verify._introspection import BrokerIntrospector, TokenIntrospector
    from tasklease.verify._jwks import parse_jwks
    from tasklease.verify._verifier import Verifier

_HOMES = {
    "AppCredentials": "_feed",
    "AuditProofError": "_audit",
    "BrokerIntrospector": "_introspection",
    "CallCount": "_grants",
    "Checkpoint": "_audit",
    "DelegationHop": "_claims",
    "FederatedDomain": "_federation",
    "InsufficientScope": "_errors",
    "InvalidToken": "_errors",
    "KeySetStale": "_errors",
    "RevocationStateStale": "_errors",
    "TokenIntrospector": "_introspection",
    "VerificationError": "_errors",
    "VerifiedToken": "_claims",
    "Verifier": "_verifier",
    "VerifierUnavailable": "_errors",
    "has_max_calls": "_grants",
    "parse_jwks": "_jwks",
    "require_attested": "_attest",
    "require_grant": "_grants",
    "verify_checkpoint": "_audit",
    "verify_event_inclusion": "_audit",
    "verify_log_consistency": "_audit",
    "verify_proof_bundle": "_audit",
}
"""Where each public name lives: its module under ``tasklease.verify``."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AppCredentials",
    "AuditProofError",
    "BrokerIntrospector",
    "CallCount",
    "Checkpoint",
    "DelegationHop",
    "FederatedDomain",
    "InsufficientScope",
    "InvalidToken",
    "KeySetStale",
    "RevocationStateStale",
    "TokenIntrospector",
    "VerificationError",
    "VerifiedToken",
    "Verifier",
    "VerifierUnavailable",
    "has_max_calls",
    "parse_jwks",
    "require_attested",
    "require_grant",
    "verify_checkpoint",
    "verify_event_inclusion",
    "verify_log_consistency",
    "verify_proof_bundle",
]
