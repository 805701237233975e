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
    insecure_http: bool | None = None,
) -> ProtectedResource:
    """The RFC 9728 metadata of ``resource`` and the RFC 8414 metadata of the
    authorization servers it names, checked (``tasklease.client._oauth.discover_flow``).

    The resource's metadata is read over ``https://``, or ``http://`` to a loopback host:
    it chooses the servers the agent trusts and sends its tokens to. From any other
    ``http://`` URL only with ``insecure_http=True`` (or, when it is None,
    ``TASKLEASE_INSECURE_HTTP=1``), then with an ``InsecureHTTPWarning`` once per server.

    Raises:
        InsecureHTTP: the metadata URL is plain HTTP beyond loopback without the opt-in
            (nothing is fetched).
        TaskleaseError: ``bad_metadata`` as ``discover_flow`` says; TransportError.
    """
    flow = discover_flow(resource, metadata_url=metadata_url, insecure_http=insecure_http)
    with bounded_client(timeout=timeout, transport=transport) as client:
        return run_flow(client, flow)


async def adiscover(
    resource: str,
    *,
    metadata_url: str | None = None,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    insecure_http: bool | None = None,
) -> ProtectedResource:
    """The async twin of :func:`discover` (the same rule for plain HTTP)."""
    flow = discover_flow(resource, metadata_url=metadata_url, insecure_http=insecure_http)
    async with bounded_async_client(timeout=timeout, transport=transport) as client:
        return await arun_flow(client, flow)
