"""What the synchronous client runs on: driving a flow over httpx (with retries), the
bearer auth of a fixed token, the delegated token, and the HTTP client an agent owns."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import httpx

from tasklease.client._bounded import AnswerRefused, bounded_client
from tasklease.client._brokerurl import check_request_url
from tasklease.client._compat import dual
from tasklease.client._errors import ClientClosed, TaskleaseError, TransportError
from tasklease.client._flows import Clock, Delegation, Flow, delegate_flow, release_flow
from tasklease.client._holder import CertArg, DPoPKey, sender_constrained, ssl_context
from tasklease.client._retry import DEFAULT_RETRY, Retry

__all__ = [
    "BearerAuth",
    "DelegatedToken",
    "auth_headers",
    "closed",
    "delegated_release_flow",
    "http_client",
    "run_flow",
]

T = TypeVar("T")


def run_flow(
    client: httpx.Client,
    flow: Flow[T],
    *,
    retry: Retry = DEFAULT_RETRY,
    rebind: Callable[[httpx.Request], httpx.Request] | None = None,
) -> T:
    """Drive a sans-I/O flow through ``client``; network failures become TransportError.

    A closed ``client`` sends nothing: ClientClosed (:func:`closed`).

    Requests go to the URL they name and nowhere else: a redirect is not followed, also
    by a ``client`` that follows them. A 429 or 503, or a connection never made, is tried
    again as ``retry`` says. Each
    retry sends ``rebind(request)`` when given: the request with fresh single-use
    credentials (a DPoP proof, a client assertion). A request with a DPoP proof and no
    ``rebind`` is not retried.
    """
    try:
        request = next(flow)
        while True:
            attempt = 0
            while True:
                request.extensions.setdefault("timeout", client.timeout.as_dict())
                try:
                    # Never on to where a redirect points (a client of the caller's own
                    # may follow them): the body would go too, and its answer would be
                    # taken for the broker's. A redirect is an answer, an error here.
                    response = client.send(request, follow_redirects=False)
                except RuntimeError as exc:
                    raise closed(client, exc) from None
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    attempt += 1
                    wait = retry.wait(attempt)
                    if wait is None:
                        raise TransportError(f"cannot reach the broker: {exc}") from exc
                except AnswerRefused as exc:
                    raise TransportError(f"cannot use the broker's answer: {exc}") from exc
                except httpx.TransportError as exc:
                    raise TransportError(f"cannot reach the broker: {exc}") from exc
                else:
                    attempt += 1
                    wait = retry.wait(attempt, response)
                    # A DPoP proof is single use: resent only with a fresh one.
                    if wait is None or (rebind is None and "dpop" in request.headers):
                        break
                time.sleep(wait)
                if rebind is not None:  # fresh single-use credentials
                    request = rebind(request)
            request = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result


def closed(client: httpx.Client | httpx.AsyncClient, error: RuntimeError) -> ClientClosed:
    """What to raise for ``error``, httpx's refusal to send through ``client``: the
    SDK's ClientClosed when the client is closed (httpx refuses before sending), else
    ``error`` itself, which is no such refusal."""
    if not client.is_closed:
        raise error
    return ClientClosed()


def auth_headers(dpop: DPoPKey | None, token: str, method: str, url: str) -> dict[str, str]:
    if dpop is None:
        return {"Authorization": f"Bearer {token}"}
    return {"Authorization": f"DPoP {token}", "DPoP": dpop.proof(method, url, token)}


class BearerAuth(httpx.Auth):
    """Attach a fixed bearer token (a delegated token: it is not renewed); never on a
    request over plain HTTP beyond loopback without ``insecure_http`` (``_brokerurl``)."""

    def __init__(self, token: str, *, insecure_http: bool | None = None) -> None:
        self._token = token
        self._insecure_http = insecure_http

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        check_request_url(request.url, self._insecure_http)
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def delegated_release_flow(base_url: str, token: str) -> Flow[None]:
    """Release a delegated token as its bearer: none of one bound to its delegate.

    A token bound to the delegate's key or certificate (``cnf``) is refused, presented
    without the delegate's proof, as any unusable token is; release would count that as
    done and the token would live on. Only the delegate can give it up.

    Raises:
        TaskleaseError: code ``holder_bound``, before any request.
    """
    if sender_constrained(token):
        raise TaskleaseError(
            "this delegated token is bound to its delegate's key or certificate: only the "
            "delegate can release it (or revoke the delegation)",
            code="holder_bound",
        )
    return (yield from release_flow(base_url, token))


class DelegatedToken:
    """A token another agent handed to ``agent_id`` through :meth:`Agent.delegate`.

    ``token`` works as a bearer token (``bearer_header``, ``auth``) until ``expires_at``;
    it is not renewed. It can be delegated further (narrowing again) and released.
    ``insecure_http`` is the delegating agent's choice, which ``auth`` follows.
    """

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        delegation: Delegation,
        agent_id: str,
        scope: Sequence[str],
        clock: Clock,
        *,
        insecure_http: bool | None = None,
    ) -> None:
        self._client = client
        self._base_url = base_url
        self._clock = clock
        self._insecure_http = insecure_http
        self.token = delegation.token
        self.agent_id = agent_id
        self.scope: tuple[str, ...] = tuple(scope)
        self.expires_at = clock.now() + delegation.expires_in
        self.delegation_chain = delegation.delegation_chain

    @property
    def bearer_header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}``."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` that attaches this token: over ``https://``, or ``http://``
        to a loopback host; to any other ``http://`` URL only with the opt-in of the agent
        that delegated it (its ``insecure_http``, or ``TASKLEASE_INSECURE_HTTP=1``).

        Raises (from the request call): InsecureHTTP for such a URL without the opt-in,
        before the token is attached or anything sent.
        """
        return dual(BearerAuth)(self.token, insecure_http=self._insecure_http)

    def delegate(
        self, delegate_to: str, scope: Sequence[str], ttl: int | None = None
    ) -> DelegatedToken:
        """Delegate a subset of this token's scope on to another registered agent.

        Raises:
            ScopeViolation: ``scope`` is not within this token's, or the chain is at its
                maximum depth.
            NotFound: ``delegate_to`` is not a registered, active agent.
            Unauthorized: this token is expired or revoked.
            TransportError: the broker could not be reached.
        """
        flow = delegate_flow(self._base_url, self.token, delegate_to, scope, ttl)
        delegation = run_flow(self._client, flow)
        return DelegatedToken(
            self._client,
            self._base_url,
            delegation,
            delegate_to,
            scope,
            self._clock,
            insecure_http=self._insecure_http,
        )

    def release(self) -> None:
        """Give this token up (idempotent; an already invalid token counts as released).

        Raises:
            TaskleaseError: code ``holder_bound`` for a token bound to its delegate's key
                or certificate: only the delegate, with its proof, can release it.
            TransportError: the broker could not be reached.
        """
        run_flow(self._client, delegated_release_flow(self._base_url, self.token))

    def __repr__(self) -> str:
        return f"DelegatedToken(agent_id={self.agent_id!r}, scope={list(self.scope)!r})"


def http_client(
    client: httpx.Client | None,
    transport: httpx.BaseTransport | None,
    timeout: float,
    cert: CertArg | None,
    verify: ssl.SSLContext | str | os.PathLike[str] | bool,
) -> tuple[httpx.Client, bool]:
    """The client to use and whether the agent owns (closes) it: ``client`` as it is, or
    one of ours, whose answers are uncompressed and capped (``_bounded``)."""
    if client is not None:
        return client, False
    return bounded_client(
        transport=transport, timeout=timeout, verify=ssl_context(cert, verify)
    ), True
