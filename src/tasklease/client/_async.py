"""The asynchronous agent: :class:`AsyncAgent` and :class:`AsyncDelegatedToken`.

The protocol and the renew decision are the same generators the sync agent drives
(:mod:`tasklease.client._flows`); only the pumping is async here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
import nacl.signing

from tasklease import forksafe
from tasklease.client._agentbase import AgentBase
from tasklease.client._attest import KUBERNETES_TOKEN_PATH, attestation, kubernetes_token
from tasklease.client._bounded import AnswerRefused, bounded_async_client
from tasklease.client._brokerurl import check_broker_url, check_request_url
from tasklease.client._compat import dual
from tasklease.client._errors import RateLimited, TaskleaseError, TransportError, Unavailable
from tasklease.client._flows import (
    HANDSHAKE_SPAN,
    Clock,
    Credential,
    Delegation,
    Flow,
    SystemClock,
    delegate_flow,
    register_flow,
)
from tasklease.client._holder import CertArg, DPoPKey, bind_flow, dpop_key, ssl_context
from tasklease.client._oauth import AsyncResourceAuth, ResourceToken, exchange_flow
from tasklease.client._retry import DEFAULT_RETRY, NO_RETRY, Retry
from tasklease.client._transport import BearerAuth, closed, delegated_release_flow
from tasklease.client._trust import (
    Exchange,
    Handshake,
    HeartbeatStatus,
    Peer,
    complete_flow,
    heartbeat_flow,
    heartbeat_wait,
    initiate_flow,
    respond_flow,
    resume_flow,
)

__all__ = ["AsyncAgent", "AsyncDelegatedToken", "arun_flow"]

T = TypeVar("T")
_log = logging.getLogger("tasklease.client")


async def arun_flow(
    client: httpx.AsyncClient,
    flow: Flow[T],
    *,
    retry: Retry = DEFAULT_RETRY,
    rebind: Callable[[httpx.Request], httpx.Request] | None = None,
) -> T:
    """Drive a sans-I/O flow through ``client``; network failures become TransportError.

    Retries, and follows no redirect, as :func:`tasklease.client._transport.run_flow` does.
    """
    try:
        request = next(flow)
        while True:
            attempt = 0
            while True:
                request.extensions.setdefault("timeout", client.timeout.as_dict())
                try:
                    # Never on to where a redirect points (as run_flow).
                    response = await client.send(request, follow_redirects=False)
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
                await asyncio.sleep(wait)
                if rebind is not None:  # fresh single-use credentials
                    request = rebind(request)
            request = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result


class _AsyncAgentAuth(httpx.Auth):
    """Attach the agent's current token, renewing it first when it is about to expire;
    never on a request over plain HTTP beyond loopback without the agent's opt-in."""

    def __init__(self, agent: AsyncAgent) -> None:
        self._agent = agent

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:  # pragma: no cover
        raise RuntimeError("AsyncAgent.auth is for httpx.AsyncClient; use Agent with Client")
        yield request  # makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        check_request_url(request.url, self._agent._insecure_http)
        await self._agent.ensure_fresh()
        request.headers["Authorization"] = f"Bearer {self._agent.token}"
        dpop = self._agent._credential.dpop
        if dpop is None:
            yield request
            return
        response = yield dpop.bind(request)
        if dpop.observe(response):  # a resource server's nonce (RFC 9449 section 9)
            yield dpop.bind(request)


class AsyncDelegatedToken:
    """The async twin of :class:`~tasklease.client.DelegatedToken`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
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
        """As :attr:`tasklease.client.DelegatedToken.auth` (for httpx and httpx2 clients,
        sync or async)."""
        return dual(BearerAuth)(self.token, insecure_http=self._insecure_http)

    async def delegate(
        self, delegate_to: str, scope: Sequence[str], ttl: int | None = None
    ) -> AsyncDelegatedToken:
        """As :meth:`tasklease.client.DelegatedToken.delegate`."""
        flow = delegate_flow(self._base_url, self.token, delegate_to, scope, ttl)
        delegation = await arun_flow(self._client, flow)
        return AsyncDelegatedToken(
            self._client,
            self._base_url,
            delegation,
            delegate_to,
            scope,
            self._clock,
            insecure_http=self._insecure_http,
        )

    async def release(self) -> None:
        """Give this token up (idempotent); as :meth:`DelegatedToken.release`."""
        await arun_flow(self._client, delegated_release_flow(self._base_url, self.token))

    def __repr__(self) -> str:
        return f"AsyncDelegatedToken(agent_id={self.agent_id!r}, scope={list(self.scope)!r})"


def _client(
    client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    timeout: float,
    cert: CertArg | None,
    verify: ssl.SSLContext | str | os.PathLike[str] | bool,
) -> tuple[httpx.AsyncClient, bool]:
    """The client to use and whether the agent owns (closes) it: ``client`` as it is, or
    one of ours, whose answers are uncompressed and capped (``_bounded``)."""
    if client is not None:
        return client, False
    http = bounded_async_client(
        transport=transport, timeout=timeout, verify=ssl_context(cert, verify)
    )
    return http, True


class AsyncAgent(AgentBase):
    """The async twin of :class:`~tasklease.client.Agent`; same contract, awaited.

    Use ``async with``: the credential is released on exit, also when the block raises.
    Renewals are serialized by an ``asyncio.Lock`` (one event loop per agent).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        credential: Credential,
        *,
        owns_client: bool,
        key: nacl.signing.SigningKey | None = None,
        insecure_http: bool | None = None,
    ) -> None:
        """Internal: use :meth:`AsyncAgent.register` or :meth:`AsyncAgent.resume`."""
        self._client = client
        self._credential = credential
        self._owns_client = owns_client
        self._lock = asyncio.Lock()
        forksafe.track(self)
        self._key = key
        self._insecure_http = insecure_http
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeats_starting = False

    @classmethod
    async def register(
        cls,
        broker_url: str,
        launch_token: str | None,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        key: nacl.signing.SigningKey | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        renew_margin: float = 30,
        clock: Clock | None = None,
        timeout: float = 10.0,
        dpop: bool | nacl.signing.SigningKey | DPoPKey = False,
        cert: CertArg | None = None,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        client: httpx.AsyncClient | None = None,
        attestation: Mapping[str, str] | None = None,
        declared: Mapping[str, str] | None = None,
        resource: str | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        insecure_http: bool | None = None,
    ) -> AsyncAgent:
        """As :meth:`tasklease.client.Agent.register` (same arguments and exceptions)."""
        check_broker_url(broker_url, insecure_http, client)
        http, owns = _client(client, transport, timeout, cert, verify)
        signing_key = key if key is not None else nacl.signing.SigningKey.generate()
        proof_key = dpop_key(dpop)
        try:
            registration = await arun_flow(
                http,
                bind_flow(
                    register_flow(
                        broker_url,
                        launch_token,
                        orch_id,
                        task_id,
                        scope,
                        signing_key,
                        attestation=attestation,
                        declared=declared,
                        resource=resource,
                        authorization_details=authorization_details,
                    ),
                    proof_key,
                ),
            )
        except BaseException:
            if owns:
                await http.aclose()
            raise
        credential = Credential(
            broker_url,
            registration,
            scope,
            clock=clock if clock is not None else SystemClock(),
            renew_margin=renew_margin,
            dpop=proof_key,
            mtls=cert is not None,
            resume=functools.partial(resume_flow, broker_url, registration.agent_id, signing_key),
        )
        return cls(http, credential, owns_client=owns, key=signing_key, insecure_http=insecure_http)

    @classmethod
    async def from_kubernetes(
        cls,
        broker_url: str,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        token_path: str | os.PathLike[str] = KUBERNETES_TOKEN_PATH,
        attestor: str | None = None,
        **options: Any,
    ) -> AsyncAgent:
        """As :meth:`tasklease.client.Agent.from_kubernetes`."""
        evidence = attestation("k8s_sat", kubernetes_token(token_path), attestor)
        return await cls.register(
            broker_url, None, orch_id, task_id, scope, attestation=evidence, **options
        )

    @classmethod
    async def from_oidc(
        cls,
        broker_url: str,
        token: str,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        kind: str = "oidc",
        attestor: str | None = None,
        **options: Any,
    ) -> AsyncAgent:
        """As :meth:`tasklease.client.Agent.from_oidc`."""
        evidence = attestation(kind, token, attestor)
        return await cls.register(
            broker_url, None, orch_id, task_id, scope, attestation=evidence, **options
        )

    @property
    def auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` for ``httpx.AsyncClient``; renews when due, and refuses plain
        HTTP beyond loopback without the agent's opt-in (``InsecureHTTP``), as
        ``Agent.auth``."""
        return dual(_AsyncAgentAuth)(self)

    async def _run(self, flow: Flow[T], retry: Retry | None = None) -> T:
        """Drive ``flow``, with a DPoP proof on each request when the token is bound."""
        dpop = self._credential.dpop
        return await arun_flow(
            self._client,
            bind_flow(flow, dpop),
            rebind=dpop.bind if dpop is not None else None,
            **({} if retry is None else {"retry": retry}),
        )

    async def ensure_fresh(self, ahead: float = 0.0) -> None:
        """As :meth:`tasklease.client.Agent.ensure_fresh` (rides out a broker outage)."""
        credential = self._credential
        async with self._lock:
            try:
                await self._run(credential.refresh_flow(ahead), NO_RETRY)
            except (TransportError, Unavailable, RateLimited) as exc:
                credential.renewal_unreachable(exc)

    @property
    def broker_unreachable_for(self) -> float | None:
        """As :attr:`tasklease.client.Agent.broker_unreachable_for`."""
        return self._credential.unreachable_for()

    async def renew(self) -> None:
        """As :meth:`tasklease.client.Agent.renew`: the successor now, the predecessor
        revoked; raises the same errors."""
        async with self._lock:
            await self._run(self._credential.renew_flow())

    async def release(self) -> None:
        """As :meth:`tasklease.client.Agent.release` (idempotent; ``async with`` calls it
        on exit)."""
        if await self._stop_heartbeats() and not self._credential.released:
            try:
                await self.heartbeat(done=True)
            except TaskleaseError as exc:
                _log.warning("could not tell the broker %s is done: %s", self.agent_id, exc)
        async with self._lock:
            await self._run(self._credential.release_flow())

    # -- agents that trust each other (docs/agents.md) ---------------------------------

    @classmethod
    async def resume(
        cls,
        broker_url: str,
        agent_id: str,
        key: nacl.signing.SigningKey,
        scope: Sequence[str] = (),
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        renew_margin: float = 30,
        clock: Clock | None = None,
        timeout: float = 10.0,
        dpop: nacl.signing.SigningKey | DPoPKey | None = None,
        cert: CertArg | None = None,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        client: httpx.AsyncClient | None = None,
        insecure_http: bool | None = None,
    ) -> AsyncAgent:
        """As :meth:`tasklease.client.Agent.resume` (same arguments and exceptions)."""
        check_broker_url(broker_url, insecure_http, client)
        http, owns = _client(client, transport, timeout, cert, verify)
        proof_key = dpop_key(dpop)
        try:
            registration = await arun_flow(
                http, bind_flow(resume_flow(broker_url, agent_id, key), proof_key)
            )
        except BaseException:
            if owns:
                await http.aclose()
            raise
        credential = Credential(
            broker_url,
            registration,
            scope,
            clock=clock if clock is not None else SystemClock(),
            renew_margin=renew_margin,
            dpop=proof_key,
            mtls=cert is not None,
            resume=functools.partial(resume_flow, broker_url, registration.agent_id, key),
        )
        return cls(http, credential, owns_client=owns, key=key, insecure_http=insecure_http)

    async def handshake(self, peer_id: str, exchange: Exchange) -> Handshake:
        """As :meth:`tasklease.client.Agent.handshake`; ``exchange`` is called as is
        (run blocking I/O in a thread yourself)."""
        await self.ensure_fresh(HANDSHAKE_SPAN)  # its token must outlive the steps
        base = self._credential.base_url
        offer, nonce = await self._run(initiate_flow(base, self.token, peer_id))
        answer = exchange(offer)
        return await self._run(
            complete_flow(
                base,
                self.token,
                self._signing_key(),
                answer,
                offer=offer,
                initiator_nonce=nonce,
            )
        )

    async def respond_to_handshake(self, offer: str) -> tuple[str, Peer, str, str]:
        """As :meth:`tasklease.client.Agent.respond_to_handshake`."""
        await self.ensure_fresh(HANDSHAKE_SPAN)  # its token must outlive the steps
        return await self._run(
            respond_flow(self._credential.base_url, self.token, self._signing_key(), offer),
        )

    async def heartbeat(self, *, done: bool = False) -> HeartbeatStatus:
        """As :meth:`tasklease.client.Agent.heartbeat`."""
        if not done:
            await self.ensure_fresh()
        return await self._run(
            heartbeat_flow(
                self._credential.base_url,
                self.token,
                self.agent_id,
                self._signing_key(),
                self._credential.clock.now(),
                done=done,
            ),
        )

    async def start_heartbeats(self, interval: float = 30.0) -> None:
        """Heartbeat every ``interval`` seconds (at most; each wait is 80-100 % of it, at
        random, so agents started together drift apart) in a task until release or exit.

        One task, however many callers start it at once; none after a release."""
        if self._heartbeat_task is not None or self._heartbeats_starting:
            return
        self._heartbeats_starting = True
        try:
            await self.heartbeat()
        finally:
            self._heartbeats_starting = False
        if self._credential.released:  # released while the first heartbeat was sent
            return

        async def beat() -> None:
            while True:
                await asyncio.sleep(heartbeat_wait(interval))
                if self._credential.released:  # released meanwhile: nothing to beat for
                    return
                try:
                    await self.heartbeat()
                except TaskleaseError as exc:
                    _log.warning("heartbeat of %s failed: %s", self.agent_id, exc)

        self._heartbeat_task = asyncio.create_task(beat())

    async def _stop_heartbeats(self) -> bool:
        """Stop the heartbeat task; True if one was running.

        It is cancelled holding the renewal lock: a renewal it has in flight ends first,
        since one cancelled after the broker minted its successor would leave this agent
        the revoked predecessor, and a release of that would end nothing.
        """
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is None:
            return False
        async with self._lock:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def delegate(
        self,
        delegate_to: str,
        scope: Sequence[str],
        ttl: int | None = None,
        *,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncDelegatedToken:
        """As :meth:`tasklease.client.Agent.delegate`: part of this agent's scope (and
        grants) for the registered agent ``delegate_to``, raising the same errors."""
        await self.ensure_fresh()
        delegation = await self._run(
            self._credential.delegate_flow(delegate_to, scope, ttl, authorization_details)
        )
        return AsyncDelegatedToken(
            self._client,
            self._credential.base_url,
            delegation,
            delegate_to,
            scope,
            self._credential.clock,
            insecure_http=self._insecure_http,
        )

    async def exchange(
        self, resource: str | None = None, scope: Sequence[str] | None = None
    ) -> ResourceToken:
        """As :meth:`tasklease.client.Agent.exchange`."""
        await self.ensure_fresh()
        cred = self._credential
        flow = exchange_flow(
            cred.base_url,
            cred.token,
            resource=resource,
            scope=scope,
            clock=cred.clock,
            dpop=cred.dpop,
        )
        return await arun_flow(self._client, flow)

    def auth_for(
        self, resource: str, scope: Sequence[str] | None = None, *, margin: float = 30
    ) -> httpx.Auth:
        """As :meth:`tasklease.client.Agent.auth_for`, for ``AsyncClient`` (httpx or
        httpx2, the ``mcp`` package's client)."""
        auth: httpx.Auth = dual(AsyncResourceAuth)(
            lambda: self.exchange(resource, scope),
            self._credential.clock,
            margin,
            insecure_http=self._insecure_http,
        )
        return auth

    async def aclose(self) -> None:
        """Close the HTTP connections (does not release; see :meth:`release`)."""
        await self._stop_heartbeats()
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncAgent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self.release()
            else:
                try:
                    await self.release()
                except TaskleaseError as release_error:
                    _log.warning(
                        "could not release agent %s on exit: %s", self.agent_id, release_error
                    )
        finally:
            await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncAgent(agent_id={self.agent_id!r}, scope={list(self.scope)!r})"
