"""The synchronous agent: :class:`Agent` and :class:`DelegatedToken`."""

from __future__ import annotations

import functools
import logging
import os
import ssl
import threading
from collections.abc import Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
import nacl.signing

from tasklease import forksafe
from tasklease.client._agentbase import AgentBase
from tasklease.client._attest import (
    KUBERNETES_TOKEN_PATH,
    attestation,
    github_actions_token_flow,
    kubernetes_token,
)
from tasklease.client._bounded import bounded_client
from tasklease.client._brokerurl import check_broker_url, check_request_url
from tasklease.client._compat import dual
from tasklease.client._errors import RateLimited, TaskleaseError, TransportError, Unavailable
from tasklease.client._flows import (
    HANDSHAKE_SPAN,
    Clock,
    Credential,
    Flow,
    SystemClock,
    register_flow,
)
from tasklease.client._holder import CertArg, DPoPKey, bind_flow, dpop_key
from tasklease.client._oauth import ResourceAuth, ResourceToken, exchange_flow
from tasklease.client._retry import NO_RETRY, Retry
from tasklease.client._transport import DelegatedToken, http_client, run_flow
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

__all__ = ["Agent", "DelegatedToken", "run_flow"]

T = TypeVar("T")
_log = logging.getLogger("tasklease.client")


class _AgentAuth(httpx.Auth):
    """Attach the agent's current token, renewing it first when it is about to expire;
    never on a request over plain HTTP beyond loopback without the agent's opt-in."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        check_request_url(request.url, self._agent._insecure_http)
        self._agent.ensure_fresh()
        request.headers["Authorization"] = f"Bearer {self._agent.token}"
        dpop = self._agent._credential.dpop
        if dpop is None:
            yield request
            return
        response = yield dpop.bind(request)
        if dpop.observe(response):  # a resource server's nonce (RFC 9449 section 9)
            yield dpop.bind(request)

    async def async_auth_flow(self, request: httpx.Request) -> Any:  # pragma: no cover
        raise RuntimeError("Agent.auth is for httpx.Client; use AsyncAgent with AsyncClient")
        yield request  # makes this an async generator, as httpx expects


class Agent(AgentBase):
    """One registered agent instance and its short-lived, auto-renewed credential.

    Create it with :meth:`register`. Use it as a context manager: the credential is
    released on exit, also when the block raises. Thread-safe: renewals are serialized.
    """

    def __init__(
        self,
        client: httpx.Client,
        credential: Credential,
        *,
        owns_client: bool,
        key: nacl.signing.SigningKey | None = None,
        insecure_http: bool | None = None,
    ):
        """Internal: use :meth:`Agent.register` or :meth:`Agent.resume`."""
        self._client = client
        self._credential = credential
        self._owns_client = owns_client
        self._lock = threading.Lock()
        self._key = key
        self._insecure_http = insecure_http
        self._heartbeat_stop: threading.Event | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_lock = threading.Lock()
        self._heartbeats_starting = False
        forksafe.track(self)

    def _after_fork_in_child(self) -> None:
        # The heartbeat thread is the parent's, which keeps the agent alive (forksafe):
        # a forked child sends none unless it starts its own (start_heartbeats).
        self._heartbeat_stop = self._heartbeat_thread = None
        self._heartbeats_starting = False

    @classmethod
    def register(
        cls,
        broker_url: str,
        launch_token: str | None,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        key: nacl.signing.SigningKey | None = None,
        transport: httpx.BaseTransport | None = None,
        renew_margin: float = 30,
        clock: Clock | None = None,
        timeout: float = 10.0,
        dpop: bool | nacl.signing.SigningKey | DPoPKey = False,
        cert: CertArg | None = None,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        client: httpx.Client | None = None,
        attestation: Mapping[str, str] | None = None,
        declared: Mapping[str, str] | None = None,
        resource: str | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        insecure_http: bool | None = None,
    ) -> Agent:
        """Register a new agent instance with the broker at ``broker_url``.

        Generates an Ed25519 key (unless ``key`` is given), fetches a nonce from
        ``GET /v1/challenge``, signs its hex-decoded bytes and redeems ``launch_token``
        at ``POST /v1/register`` for ``scope``. ``renew_margin`` is how many seconds
        before expiry :attr:`auth` renews; ``clock`` (an object with ``now()``) is the
        time source for that decision. ``timeout`` (seconds) bounds each phase of every
        request the agent sends (connecting, each read and write, a pooled connection);
        an answer 429 or 503, or a connection never made, is tried again 3 times with
        backoff (:class:`~tasklease.client.Retry`), and nothing else is (docs/agents.md
        section 8).

        Holder binding, where the broker offers it: ``dpop=True`` (or an Ed25519
        ``SigningKey`` to use) binds the token to a DPoP key (RFC 9449): every later
        request, including those through :attr:`auth`, sends ``Authorization: DPoP`` and
        a fresh proof. ``cert=(cert_path, key_path)`` with ``verify`` (a CA bundle path or
        an ``ssl.SSLContext``) presents a client certificate on every connection; over a
        broker in ``mtls`` mode the token is bound to it (RFC 8705). ``client``: an
        ``httpx.Client`` of your own (its certificates, proxies, transport) that the
        agent uses as it is and does not close, but for redirects: the agent's requests
        to the broker follow none (a redirect is an error).

        The client the agent builds (without ``client``) asks for the broker's answers
        uncompressed and refuses one compressed or over 1 MiB (a ``TransportError``,
        before it is inflated or read whole); a ``transport`` given is put behind the same
        bound. A ``client`` of your own reads answers as you set it up.

        Workload attestation (docs/attestation.md): ``attestation`` is evidence of where
        the agent runs (``{"type": "k8s_sat" | "jwt_svid" | "oidc", "evidence": token}``),
        in place of ``launch_token`` (None) or beside it; :meth:`from_kubernetes`,
        :meth:`from_oidc` and :meth:`from_github_actions` build it. ``declared`` is what
        the agent says of itself (``model``, ``runtime``, ``sdk``): carried in the token,
        marked as declared, never trusted.

        ``authorization_details`` are structured grants (RFC 9396, docs/grants.md) asked
        for besides ``scope`` (which may then be empty), each within the launch token's.

        ``resource`` (RFC 8707) is the one resource the token is for, among those the
        launch token names; without it, the launch token's only one or the broker's
        first audience. For tokens for several resources over time, see :meth:`exchange`.

        ``broker_url`` is ``https://``, or ``http://`` to a loopback host (``localhost``,
        127.0.0.0/8, ``::1``), also with a ``client`` of your own; ``insecure_http`` opts
        in to plain HTTP beyond loopback as :class:`~tasklease.client.AdminClient`'s does.
        The agent keeps that choice for the token it presents: :attr:`auth`,
        :meth:`auth_for` and its delegated tokens' ``auth`` put the token on a request
        over plain HTTP beyond loopback only with it (None: as
        ``TASKLEASE_INSECURE_HTTP`` says at the time of the request).

        Raises:
            ValueError: ``broker_url`` is plain HTTP beyond loopback without an opt-in
                (before any request).
            Unauthorized: the launch token is unknown, expired or consumed, or the
                evidence was refused.
            ScopeViolation: ``scope`` exceeds the launch token's allowed scope.
            InvalidRequest: a field is malformed (ids, scopes).
            TransportError: the broker could not be reached.
        """
        check_broker_url(broker_url, insecure_http, client)
        http, owns = http_client(client, transport, timeout, cert, verify)
        signing_key = key if key is not None else nacl.signing.SigningKey.generate()
        proof_key = dpop_key(dpop)
        try:
            registration = run_flow(
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
                http.close()
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
    def from_kubernetes(
        cls,
        broker_url: str,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        token_path: str | os.PathLike[str] = KUBERNETES_TOKEN_PATH,
        attestor: str | None = None,
        **options: Any,
    ) -> Agent:
        """Register with the pod's projected service-account token (attestor ``k8s_sat``),
        read from ``token_path`` now; no launch token. ``options`` as :meth:`register`'s."""
        evidence = attestation("k8s_sat", kubernetes_token(token_path), attestor)
        return cls.register(
            broker_url, None, orch_id, task_id, scope, attestation=evidence, **options
        )

    @classmethod
    def from_oidc(
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
    ) -> Agent:
        """Register with an OIDC workload token the agent holds (attestor ``oidc``; a
        JWT-SVID with ``kind="jwt_svid"``); no launch token. ``options`` as :meth:`register`'s."""
        evidence = attestation(kind, token, attestor)
        return cls.register(
            broker_url, None, orch_id, task_id, scope, attestation=evidence, **options
        )

    @classmethod
    def from_github_actions(
        cls,
        broker_url: str,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        audience: str,
        attestor: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Agent:
        """In a GitHub Actions job (``permissions: id-token: write``): ask the runner for an
        OIDC token whose audience is ``audience`` (the broker's issuer), then register
        with it as :meth:`from_oidc` does."""
        # The broker URL first: the runner's token is not asked for one that is refused.
        check_broker_url(broker_url, options.get("insecure_http"), options.get("client"))
        with bounded_client(timeout=options.get("timeout", 10.0)) as runner:
            token = run_flow(runner, github_actions_token_flow(audience, env))
        return cls.from_oidc(
            broker_url, token, orch_id, task_id, scope, attestor=attestor, **options
        )

    # -- state -------------------------------------------------------------------------

    @property
    def auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` for ``httpx.Client`` that renews when due, then attaches the token.

        The token goes over ``https://``, or ``http://`` to a loopback host; to any other
        ``http://`` URL only with the opt-in the agent was made with (``insecure_http``
        of :meth:`register` or :meth:`resume`, or ``TASKLEASE_INSECURE_HTTP=1``), then
        with an ``InsecureHTTPWarning`` once per server.

        Raises (from the request call): InsecureHTTP for such a URL without the opt-in,
        before the token is attached or anything sent (nor renewed); RenewalLimitReached
        once the broker refuses to renew (the token is then used until it expires, then
        the same error is raised); Unauthorized after :meth:`release`.
        """
        return dual(_AgentAuth)(self)

    # -- operations ----------------------------------------------------------------------

    def _run(self, flow: Flow[T], retry: Retry | None = None) -> T:
        """Drive ``flow``, with a DPoP proof on each request when the token is bound."""
        dpop = self._credential.dpop
        return run_flow(
            self._client,
            bind_flow(flow, dpop),
            rebind=dpop.bind if dpop is not None else None,
            **({} if retry is None else {"retry": retry}),
        )

    def ensure_fresh(self, ahead: float = 0.0) -> None:
        """Renew now if the token expires within ``renew_margin`` seconds (and ``ahead``
        seconds more).

        While the broker cannot be reached (or answers 503 or 429), the token is used on until
        its ``exp`` and renewal is tried again after a short backoff (at most 2 s): the
        first request after the broker is back renews.

        Renewal happens only here (and so with each use of the agent): an agent left
        unused longer than its token lives is dead at its ``exp``. Call this every few
        seconds from a thread to keep an idle agent alive; it renews only when due.

        Raises: as :meth:`renew`, when a renewal was due; CredentialExpired when the token
            is past its ``exp`` (the broker still cannot be reached, or nothing renewed it
            in time), with nothing sent.
        """
        credential = self._credential
        with self._lock:
            try:
                # No retries inside one attempt: the credential spaces the attempts out.
                self._run(credential.refresh_flow(ahead), NO_RETRY)
            except (TransportError, Unavailable, RateLimited) as exc:
                credential.renewal_unreachable(exc)

    @property
    def broker_unreachable_for(self) -> float | None:
        """Seconds since renewals began failing to reach the broker, or None when the last
        renewal (or registration) went through."""
        return self._credential.unreachable_for()

    def renew(self) -> None:
        """Exchange the token for a successor now (the predecessor is revoked).

        Raises:
            RenewalCountExceeded, RenewalCeilingExceeded: the broker will not renew any
                more (both are RenewalLimitReached); automatic renewal stops.
            Unauthorized: the token was revoked, expired, or released.
            TransportError: the broker could not be reached.
        """
        with self._lock:
            self._run(self._credential.renew_flow())

    def release(self) -> None:
        """Give the credential up (``POST /v1/token/release``). Idempotent.

        With background heartbeats running, they stop and the agent first tells the
        broker it is done (so it is not swept as silent), which also releases the token.

        Raises:
            TransportError: the broker could not be reached (the token stays valid
                until it expires).
        """
        if self._stop_heartbeats() and not self._credential.released:
            try:
                self.heartbeat(done=True)
            except TaskleaseError as exc:
                _log.warning("could not tell the broker %s is done: %s", self.agent_id, exc)
        with self._lock:
            self._run(self._credential.release_flow())

    # -- agents that trust each other (docs/agents.md) ---------------------------------

    @classmethod
    def resume(
        cls,
        broker_url: str,
        agent_id: str,
        key: nacl.signing.SigningKey,
        scope: Sequence[str] = (),
        *,
        transport: httpx.BaseTransport | None = None,
        renew_margin: float = 30,
        clock: Clock | None = None,
        timeout: float = 10.0,
        dpop: nacl.signing.SigningKey | DPoPKey | None = None,
        cert: CertArg | None = None,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        client: httpx.Client | None = None,
        insecure_http: bool | None = None,
    ) -> Agent:
        """Continue as ``agent_id`` after a restart, proving its registered ``key``.

        No launch token: a fresh nonce is signed as at registration. The token keeps the
        registration's ``oiat`` (the renewal ceiling still applies) and counts as a renewal.
        A bound agent proves its binding again: pass the registration's DPoP key
        (:attr:`dpop_key`) as ``dpop``, or its client certificate as ``cert`` (see
        :meth:`register`); the resumed token is bound the same way. ``broker_url`` and
        ``insecure_http`` as for :meth:`register`.

        Raises:
            ValueError: ``broker_url`` is plain HTTP beyond loopback without an opt-in.
            Unauthorized: ``key`` is not the agent's registered key, or it is unknown.
            Forbidden: the agent was revoked, released or swept as silent.
            RenewalLimitReached: its task reached the renewal ceiling or count.
            TransportError: the broker could not be reached.
        """
        check_broker_url(broker_url, insecure_http, client)
        http, owns = http_client(client, transport, timeout, cert, verify)
        proof_key = dpop_key(dpop)
        try:
            registration = run_flow(
                http, bind_flow(resume_flow(broker_url, agent_id, key), proof_key)
            )
        except BaseException:
            if owns:
                http.close()
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

    def handshake(self, peer_id: str, exchange: Exchange) -> Handshake:
        """Mutually authenticate with the agent ``peer_id`` through the broker.

        ``exchange(offer) -> answer`` carries the offer to the peer (which calls
        :meth:`respond_to_handshake`) and brings its answer back, over the agents' own
        channel. Returns the peer's broker-verified identity and scope, and the receipt
        to forward to the peer.

        Raises:
            Unauthorized: the broker refused a step (a party is revoked, a proof failed).
        """
        self.ensure_fresh(HANDSHAKE_SPAN)  # its token must outlive the steps
        offer, nonce = self._run(initiate_flow(self._credential.base_url, self.token, peer_id))
        answer = exchange(offer)
        return self._run(
            complete_flow(
                self._credential.base_url,
                self.token,
                self._signing_key(),
                answer,
                offer=offer,
                initiator_nonce=nonce,
            ),
        )

    def respond_to_handshake(self, offer: str) -> tuple[str, Peer, str, str]:
        """The responder's step: ``(answer, initiator, handshake_id, our_nonce)``.

        Send ``answer`` back to the initiator; check the receipt it then forwards with
        ``tasklease.core.mutual.verify_receipt(..., handshake_id=, responder_nonce=our_nonce)``.
        """
        self.ensure_fresh(HANDSHAKE_SPAN)  # its token must outlive the steps
        return self._run(
            respond_flow(self._credential.base_url, self.token, self._signing_key(), offer),
        )

    def heartbeat(self, *, done: bool = False) -> HeartbeatStatus:
        """Send one signed heartbeat (``done``: this agent is finished)."""
        if not done:
            self.ensure_fresh()
        return self._run(
            heartbeat_flow(
                self._credential.base_url,
                self.token,
                self.agent_id,
                self._signing_key(),
                self._credential.clock.now(),
                done=done,
            ),
        )

    def start_heartbeats(self, interval: float = 30.0) -> None:
        """Heartbeat every ``interval`` seconds on a daemon thread until release or exit:
        at most, each wait being 80-100 % of it at random, so agents started together
        drift apart instead of beating together for good.

        The first heartbeat is sent before this returns (it opts the agent in to liveness
        supervision, so a failure shows here). Later failures are logged and retried.
        """
        with self._heartbeat_lock:  # one thread, however many callers start it at once
            if self._heartbeat_thread is not None or self._heartbeats_starting:
                return
            self._heartbeats_starting = True
        try:
            self.heartbeat()
        finally:
            with self._heartbeat_lock:
                self._heartbeats_starting = False
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(heartbeat_wait(interval)) and not self._credential.released:
                try:
                    self.heartbeat()
                except TaskleaseError as exc:
                    _log.warning("heartbeat of %s failed: %s", self.agent_id, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat {self.agent_id}", daemon=True)
        with self._heartbeat_lock:
            if self._credential.released:  # released while the first heartbeat was sent
                return
            self._heartbeat_stop, self._heartbeat_thread = stop, thread
            thread.start()

    def _stop_heartbeats(self) -> bool:
        """Stop the heartbeat thread; True if one was running."""
        with self._heartbeat_lock:
            stop, thread = self._heartbeat_stop, self._heartbeat_thread
            if stop is None or thread is None:
                return False
            self._heartbeat_stop = self._heartbeat_thread = None
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=5)
        return True

    def delegate(
        self,
        delegate_to: str,
        scope: Sequence[str],
        ttl: int | None = None,
        *,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
    ) -> DelegatedToken:
        """Hand a subset of this agent's scope to the registered agent ``delegate_to``,
        and of its structured grants (``authorization_details``, RFC 9396: each covered
        by one of this agent's; ``scope`` may then be empty).

        The result lives at most ``ttl`` seconds (broker default 60) and never longer
        than this agent's token.

        Raises:
            ScopeViolation: ``scope`` exceeds this agent's, or the chain is too deep.
            NotFound: ``delegate_to`` is not a registered, active agent.
            Unauthorized: this agent's token is no longer valid.
            TransportError: the broker could not be reached.
        """
        self.ensure_fresh()
        delegation = self._run(
            self._credential.delegate_flow(delegate_to, scope, ttl, authorization_details)
        )
        return DelegatedToken(
            self._client,
            self._credential.base_url,
            delegation,
            delegate_to,
            scope,
            self._credential.clock,
            insecure_http=self._insecure_http,
        )

    def exchange(
        self, resource: str | None = None, scope: Sequence[str] | None = None
    ) -> ResourceToken:
        """A token for ``resource`` alone (RFC 8707) with ``scope`` (default: all of this
        agent's), by RFC 8693 token exchange of the current token: same holder, same
        binding, no longer lifetime; it ends when this agent's token is revoked.

        Raises:
            InvalidTarget: ``resource`` is malformed or not among this token's audiences.
            InvalidScope: ``scope`` is not within this agent's.
            Unauthorized: this agent's token is no longer valid.
        """
        self.ensure_fresh()
        cred = self._credential
        flow = exchange_flow(
            cred.base_url,
            cred.token,
            resource=resource,
            scope=scope,
            clock=cred.clock,
            dpop=cred.dpop,
        )
        return run_flow(self._client, flow)

    def auth_for(
        self, resource: str, scope: Sequence[str] | None = None, *, margin: float = 30
    ) -> httpx.Auth:
        """An ``httpx.Auth`` (also an ``httpx2.Auth`` when httpx2 is installed) presenting
        a token for ``resource`` from :meth:`exchange`, exchanged again ``margin`` seconds
        before it expires and once when the resource answers 401.

        Over plain HTTP beyond loopback as :attr:`auth`: the request call raises
        InsecureHTTP, before any exchange, unless the agent was made with the opt-in."""
        auth: httpx.Auth = dual(ResourceAuth)(
            lambda: self.exchange(resource, scope),
            self._credential.clock,
            margin,
            insecure_http=self._insecure_http,
        )
        return auth

    def close(self) -> None:
        """Close the HTTP connections (does not release; see :meth:`release`)."""
        self._stop_heartbeats()
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.release()
            else:
                try:
                    self.release()
                except TaskleaseError as release_error:
                    _log.warning(
                        "could not release agent %s on exit: %s", self.agent_id, release_error
                    )
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Agent(agent_id={self.agent_id!r}, scope={list(self.scope)!r})"
