"""Finding a resource's broker: :func:`discover` and :func:`adiscover` drive
``_oauth.discover_flow`` (RFC 9728, then RFC 8414)."""

from __future__ import annotations

import httpx

from tasklease.client._async import arun_flow
from tasklease.client._bounded import bounded_async_client, bounded_client
from tasklease.client._oauth import ProtectedResource, discover_flow
from tasklease.client._sync import run_flow

__all__ = ["adiscover", "discover"]


def discover(
    resource: str,
    *,
    metadata_url: str | None = None,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> ProtectedResource:
    """The RFC 9728 metadata of ``resource`` and the RFC 8414 metadata of the
    authorization servers it names, checked (``tasklease.client._oauth.discover_flow``)."""
    with bounded_client(timeout=timeout, transport=transport) as client:
        return run_flow(client, discover_flow(resource, metadata_url=metadata_url))


async def adiscover(
    resource: str,
    *,
    metadata_url: str | None = None,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ProtectedResource:
    """The async twin of :func:`discover`."""
    async with bounded_async_client(timeout=timeout, transport=transport) as client:
        return await arun_flow(client, discover_flow(resource, metadata_url=metadata_url))
