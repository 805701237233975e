"""The tasklease agent SDK: register, carry, renew, delegate and release a credential.

    from tasklease.client import Agent

    with Agent.register(broker_url, launch_token, "orch-1", "task-42",
                        ["read:tickets:42"]) as agent:
        httpx.get(service_url, auth=agent.auth)   # renewed before it expires
    # released here, also if the block raised

Needs only httpx and PyNaCl (``pip install tasklease``). :class:`AsyncAgent` is the
same for asyncio; :class:`AppClient` is an app (client credentials, launch tokens, its
agents); :class:`AdminClient` is for operators (and the ``tasklease`` CLI);
``Agent.exchange`` and ``Agent.auth_for`` give tokens for one resource (RFC 8693), and
:func:`discover` finds a resource's broker (RFC 9728, RFC 8414);
:mod:`tasklease.client.testing` runs an in-process broker for tests (needs the
``server`` extra). Every ``auth`` works with httpx and with httpx2 clients.

Credentials go only over ``https://``, or ``http://`` to a loopback host: any other
``http://`` broker URL is refused with ``ValueError`` before a request, unless the caller
passes ``insecure_http=True`` or sets ``TASKLEASE_INSECURE_HTTP=1`` (then an
:class:`~tasklease.rules.cleartext.InsecureHTTPWarning`, once per URL). Every ``auth``
applies the same rule to each request it is given, with the opt-in its agent (or
credential) was made with: such a request raises :class:`InsecureHTTP` before the token
is attached or anything sent; so does :func:`discover` for such a resource.

Every error is a :class:`TaskleaseError` whose subclass mirrors the broker's
``error_code``; network failures raise :class:`TransportError`; a call on a closed client
(or through closed connections) raises :class:`ClientClosed`, with nothing sent.
:class:`InsufficientScope` is the verifier's too (``tasklease.verify.InsufficientScope``
is the same class). Requests answered 429
or 503, or that could not connect, are retried with backoff, honouring ``Retry-After``
(:class:`Retry`).

Without the broker (docs/broker-optional.md): a renewal that cannot reach it keeps the
unexpired token in use and is tried again shortly, so the agent renews as soon as the
broker is back; a token past its ``exp`` raises :class:`CredentialExpired`.
``Agent.attenuate`` hands part of a token on offline (:class:`OfflineCredential` holds
it); ``Agent.offline_peer`` authenticates another agent with no broker round trip
(:class:`OfflinePeerAuth`); :class:`OfflineReporter` reports offline work late.
"""

from __future__ import annotations

from types import FunctionType as _FunctionType

from tasklease.client._admin import AdminClient
from tasklease.client._app import AppClient
from tasklease.client._async import AsyncAgent, AsyncDelegatedToken
from tasklease.client._discovery import adiscover, discover
from tasklease.client._errors import (
    ClientClosed,
    Conflict,
    CredentialExpired,
    Forbidden,
    InsecureHTTP,
    InsufficientScope,
    InternalError,
    InvalidClient,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    InvalidTTL,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    RenewalLimitReached,
    ScopeViolation,
    TaskleaseError,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedGrantType,
    UseDPoPNonce,
)
from tasklease.client._flows import Clock
from tasklease.client._oauth import AuthorizationServer, ProtectedResource, ResourceToken
from tasklease.client._offline import OfflineCredential
from tasklease.client._peer import AuthenticatedPeer, OfflinePeerAuth, PeerAuthenticationFailed
from tasklease.client._reports import OfflineReporter
from tasklease.client._retry import Retry
from tasklease.client._sync import Agent, DelegatedToken
from tasklease.client._trust import Handshake, HeartbeatStatus, Peer

__all__ = [
    "AdminClient",
    "Agent",
    "AppClient",
    "AsyncAgent",
    "AsyncDelegatedToken",
    "AuthenticatedPeer",
    "AuthorizationServer",
    "ClientClosed",
    "Clock",
    "Conflict",
    "CredentialExpired",
    "DelegatedToken",
    "Forbidden",
    "Handshake",
    "HeartbeatStatus",
    "InsecureHTTP",
    "InsufficientScope",
    "InternalError",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTTL",
    "InvalidTarget",
    "MethodNotAllowed",
    "NotFound",
    "OfflineCredential",
    "OfflinePeerAuth",
    "OfflineReporter",
    "PayloadTooLarge",
    "Peer",
    "PeerAuthenticationFailed",
    "ProtectedResource",
    "RateLimited",
    "RenewalCeilingExceeded",
    "RenewalCountExceeded",
    "RenewalLimitReached",
    "ResourceToken",
    "Retry",
    "ScopeViolation",
    "TaskleaseError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedGrantType",
    "UseDPoPNonce",
    "adiscover",
    "discover",
]

# Show the public names as living here (tracebacks, help(), docs), as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type | _FunctionType) and _obj.__module__.startswith("tasklease.client._"):
        _obj.__module__ = __name__
del _name, _obj
