"""The tasklease agent SDK: register, carry, renew, delegate and release a credential.

    from tasklease.client import Agent

    with Agent.register(broker_url, launch_token, "orch-1", "task-42",
                        ["read:tickets:42"]) as agent:
        httpx.get(service_url, auth=agent.auth)   # renewed before it expires
    # released here, also if the block raised

Needs only httpx and PyNaCl. :class:`AsyncAgent` is the same for asyncio;
:class:`AdminClient` is for operators (and the ``tasklease`` CLI);
:mod:`tasklease.client.testing` runs an in-process broker for tests.

Every error is a :class:`TaskleaseError` whose subclass mirrors the broker's
``error_code``; network failures raise :class:`TransportError`.
"""

from __future__ import annotations

from tasklease.client._admin import AdminClient
from tasklease.client._async import AsyncAgent, AsyncDelegatedToken
from tasklease.client._errors import (
    Conflict,
    Forbidden,
    InsufficientScope,
    InternalError,
    InvalidRequest,
    InvalidTTL,
    NotFound,
    RateLimited,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    RenewalLimitReached,
    ScopeViolation,
    TaskleaseError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from tasklease.client._flows import Clock
from tasklease.client._sync import Agent, DelegatedToken
from tasklease.client._trust import Handshake, HeartbeatStatus, Peer

__all__ = [
    "AdminClient",
    "Agent",
    "AsyncAgent",
    "AsyncDelegatedToken",
    "Clock",
    "Conflict",
    "DelegatedToken",
    "Forbidden",
    "Handshake",
    "HeartbeatStatus",
    "InsufficientScope",
    "InternalError",
    "InvalidRequest",
    "InvalidTTL",
    "NotFound",
    "Peer",
    "RateLimited",
    "RenewalCeilingExceeded",
    "RenewalCountExceeded",
    "RenewalLimitReached",
    "ScopeViolation",
    "TaskleaseError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
]

# Show the public names as living here (tracebacks, help(), docs), as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("tasklease.client._"):
        _obj.__module__ = __name__
del _name, _obj
