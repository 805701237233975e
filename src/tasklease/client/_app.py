"""The app's client: its credentials become an app token (OAuth client credentials), the
app token launch tokens, and each launch token one agent.

    with AppClient(broker_url, client_id, client_secret) as app:
        with app.create_agent("support", "ticket-4711", ["read:tickets:4711"]) as agent:
            httpx.get(url, auth=agent.auth)

The app token comes from ``POST /v1/oauth/token`` with ``grant_type=client_credentials``
(HTTP Basic, RFC 6749 section 2.3.1; or, with ``private_key``, a client assertion the app
signs, RFC 7523 ``private_key_jwt``), on first use and again a minute before it expires or
once when the broker answers 401, as the ``agentwrit`` SDK's ``AgentWritApp`` does. With
``dpop`` the app token is bound to a DPoP key (RFC 9449) and every request carries a proof.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote_plus

import httpx
import nacl.signing

from tasklease import bounds, forksafe
from tasklease.client._bounded import bounded_client
from tasklease.client._brokerurl import check_broker_url
from tasklease.client._errors import TaskleaseError, Unauthorized
from tasklease.client._flows import Clock, Flow, SystemClock, expect_json
from tasklease.client._holder import DPoPKey, bind_flow, default_ssl_context, dpop_key
from tasklease.client._retry import DEFAULT_RETRY, Retry
from tasklease.client._sync import Agent, run_flow
from tasklease.rules import jws

__all__ = ["ASSERTION_TYPE", "AppClient", "client_assertion"]

_REAUTH_MARGIN = 60.0
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME = 60


def client_assertion(
    client_id: str, key: nacl.signing.SigningKey, audience: str, *, now: float | None = None
) -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523 section 2.2): ``iss`` and ``sub``
    the client id, ``aud`` the ``audience`` given (the broker's issuer identifier, as
    draft-ietf-oauth-rfc7523bis says), a minute's life and a fresh ``jti``; EdDSA, ``kid``
    the key's RFC 7638 thumbprint."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + _ASSERTION_LIFETIME,
        "jti": secrets.token_urlsafe(18),
    }
    payload = json.dumps(claims, separators=(",", ":")).encode()
    kid = jws.jwk_thumbprint(bytes(key.verify_key))
    return jws.encode(payload, typ="JWT", kid=kid, key=key)


def _basic(client_id: str, client_secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class AppClient:
    """One app of one broker (or tenant: its base URL ``<broker>/t/<name>``).

    Every method raises the :class:`~tasklease.client.TaskleaseError` subclass matching
    the broker's answer (``InvalidClient`` for wrong credentials); requests refused with
    429 or 503, or that could not connect, are retried as ``retry`` says. Thread-safe.
    """

    def __init__(
        self,
        broker_url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        private_key: nacl.signing.SigningKey | None = None,
        dpop: bool | nacl.signing.SigningKey | DPoPKey = False,
        timeout: float = 10.0,
        retry: Retry = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        clock: Clock | None = None,
        insecure_http: bool | None = None,
        issuer: str | None = None,
    ) -> None:
        """No request is made until one is needed.

        Authenticate with ``client_secret`` or with ``private_key`` (the Ed25519 key whose
        public half the app registered), exactly one. ``dpop`` (True, a key) binds the app
        token to a DPoP key; its proofs then go with every request.

        ``issuer``: with ``private_key``, the broker's issuer identifier, the one audience
        of the client assertions (draft-ietf-oauth-rfc7523bis). By default it is read
        once from the broker's RFC 8414 metadata (``/.well-known/oauth-authorization-server``
        under ``broker_url``), and taken only if it is ``broker_url`` itself or, for a
        broker without ``public_url``, no URL at all (RFC 8414 section 3.3: a server that
        names another issuer could have the app sign for that one); give it when the
        broker is reached at another URL than its issuer.

        ``broker_url`` is ``https://``, or ``http://`` to a loopback host;
        ``insecure_http`` opts in to plain HTTP beyond loopback as
        :class:`~tasklease.client.AdminClient`'s does, for this client and the agents it
        creates.

        Raises:
            ValueError: ``broker_url`` is plain HTTP beyond loopback without an opt-in.
        """
        if (client_secret is None) == (private_key is None):
            raise TypeError("give client_secret or private_key, exactly one")
        check_broker_url(broker_url, insecure_http)
        self._insecure_http = insecure_http
        self.broker_url = broker_url.rstrip("/")
        self.client_id = client_id
        self._authorization = _basic(client_id, client_secret) if client_secret else None
        self._private_key = private_key
        self._issuer = issuer
        self.dpop = dpop_key(dpop)
        self._retry = retry
        self._clock = clock if clock is not None else SystemClock()
        self._client = bounded_client(
            transport=transport,
            timeout=timeout,
            verify=default_ssl_context() if verify is True else verify,
        )
        self._lock = threading.Lock()
        forksafe.track(self)
        self._token: str | None = None
        self._deadline = 0.0

    # -- plumbing ------------------------------------------------------------------------

    def _run(
        self,
        flow: Flow[dict[str, Any]],
        remake: Callable[[], httpx.Request] | None = None,
    ) -> dict[str, Any]:
        """Drive ``flow``; each retry sends ``remake()`` (a request with fresh single-use
        credentials) in place of the request refused, when given, and a fresh DPoP proof."""
        key = self.dpop

        def rebind(request: httpx.Request) -> httpx.Request:
            again = remake() if remake is not None else request
            return key.bind(again) if key is not None else again

        fresh = rebind if key is not None or remake is not None else None
        return run_flow(self._client, bind_flow(flow, key), retry=self._retry, rebind=fresh)

    def _url(self, path: str) -> str:
        return self.broker_url + path

    def _sign_in_request(self) -> httpx.Request:
        """``POST /v1/oauth/token``, with a fresh client assertion when the app signs them
        (a ``jti`` is spent once: every attempt needs its own)."""
        url = self._url("/v1/oauth/token")
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        if self._private_key is not None and self._issuer is not None:
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = client_assertion(
                self.client_id, self._private_key, self._issuer
            )
        return httpx.Request("POST", url, data=form, headers=headers)

    def _issuer_flow(self) -> Flow[dict[str, Any]]:
        url = self._url("/.well-known/oauth-authorization-server")
        headers = {"Accept": "application/json"}
        return expect_json((yield httpx.Request("GET", url, headers=headers)))

    def _learn_issuer(self) -> None:
        """The broker's issuer identifier, read from its metadata once (the audience of
        the client assertions): ``broker_url`` itself, or a broker's issuer that is no
        URL (no ``public_url``); any other is refused (RFC 8414 section 3.3)."""
        if self._private_key is None or self._issuer is not None:
            return
        # Public, and no request of the app's: no DPoP proof goes with it.
        issuer = run_flow(self._client, self._issuer_flow(), retry=self._retry).get("issuer")
        is_url = isinstance(issuer, str) and issuer.startswith(("https://", "http://"))
        if (
            not isinstance(issuer, str)
            or not issuer
            or (is_url and issuer.rstrip("/") != self.broker_url)
        ):
            raise TaskleaseError(
                f"the broker's metadata names the issuer {str(issuer)[:200]!r}, not "
                f"{self.broker_url}: give AppClient the broker's issuer (issuer=...) if it "
                "is reached at another URL",
                code="bad_response",
            )
        self._issuer = issuer

    def _sign_in_flow(self) -> Flow[dict[str, Any]]:
        return expect_json((yield self._sign_in_request()))

    def app_token(self, *, force: bool = False) -> str:
        """The current app token, signed in again when it expires within a minute."""
        with self._lock:
            if self._token is None or force or self._clock.now() >= self._deadline:
                self._learn_issuer()
                answer = self._run(self._sign_in_flow(), remake=self._sign_in_request)
                token = answer.get("access_token")
                expires_in = bounds.lifetime(answer.get("expires_in"))
                if not isinstance(token, str) or expires_in is None:
                    raise TaskleaseError("the broker's answer lacks the token", code="bad_response")
                self._token = token
                self._deadline = self._clock.now() + max(1.0, expires_in - _REAUTH_MARGIN)
            return self._token

    def _authed(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        def flow(token: str) -> Flow[dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            request = httpx.Request(method, self._url(path), headers=headers, json=body)
            return expect_json((yield request))

        try:
            return self._run(flow(self.app_token()))
        except Unauthorized:  # expired or revoked app token: once more, signed in afresh
            return self._run(flow(self.app_token(force=True)))

    # -- the app's operations ----------------------------------------------------------

    def create_launch_token(
        self,
        agent_name: str,
        allowed_scope: Sequence[str],
        *,
        max_ttl: int | None = None,
        single_use: bool = True,
        ttl: int | None = None,
        max_uses: int | None = None,
        allow_resume: bool | None = None,
        resource: str | Sequence[str] | None = None,
        principal: str | None = None,
        agent_key: bytes | None = None,
    ) -> dict[str, Any]:
        """A launch token (``POST /v1/app/launch-tokens``), within the app's scopes.

        ``resource`` (RFC 8707) names what its agents' tokens may be for; ``principal``
        (``kind:value``, e.g. ``user:alice@example.com``) the human its agents work for,
        carried by every token of theirs (default: this app); ``agent_key`` (the agent's
        raw 32-byte Ed25519 public key) binds it to that agent: no other key registers
        with it.
        """
        if isinstance(allowed_scope, str):
            raise TypeError("allowed_scope must be a list of scope strings, not one string")
        body: dict[str, Any] = {
            "agent_name": agent_name,
            "allowed_scope": list(allowed_scope),
            "single_use": single_use,
        }
        optional: dict[str, Any] = {
            "max_ttl": max_ttl,
            "ttl": ttl,
            "max_uses": max_uses,
            "allow_resume": allow_resume,
            "principal": principal,
            "resource": list(resource) if isinstance(resource, list | tuple) else resource,
            "agent_key": None if agent_key is None else base64.b64encode(agent_key).decode(),
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._authed("POST", "/v1/app/launch-tokens", body)

    def create_agent(
        self,
        orch_id: str,
        task_id: str,
        scope: Sequence[str],
        *,
        agent_name: str | None = None,
        max_ttl: int = 300,
        resource: str | None = None,
        principal: str | None = None,
        key: nacl.signing.SigningKey | None = None,
        dpop: bool | nacl.signing.SigningKey | DPoPKey = False,
        renew_margin: float = 30,
    ) -> Agent:
        """Launch and register one agent run: a single-use launch token for ``scope``,
        bound to the agent's key (a fresh one unless ``key`` is given), then
        :meth:`Agent.register` with it: no other key can register with that token.

        The agent shares this client's connections; close the agent (or leave its
        ``with`` block, which releases it) before closing this client.
        """
        key = key or nacl.signing.SigningKey.generate()
        launch = self.create_launch_token(
            agent_name or f"{orch_id}/{task_id}",
            scope,
            max_ttl=max_ttl,
            resource=resource,
            principal=principal,
            agent_key=bytes(key.verify_key),
        )
        token = launch.get("launch_token")
        if not isinstance(token, str):
            raise TaskleaseError("the broker's answer lacks the launch token", code="bad_response")
        return Agent.register(
            self.broker_url,
            token,
            orch_id,
            task_id,
            scope,
            key=key,
            dpop=dpop,
            renew_margin=renew_margin,
            clock=self._clock,
            client=self._client,
            resource=resource,
            insecure_http=self._insecure_http,
        )

    def validate(self, token: str) -> dict[str, Any]:
        """The broker's verdict on ``token`` (``POST /v1/token/validate``): ``valid`` and
        ``claims``, or ``valid: false`` and ``error``."""

        def flow() -> Flow[dict[str, Any]]:
            request = httpx.Request("POST", self._url("/v1/token/validate"), json={"token": token})
            return expect_json((yield request))

        return self._run(flow())

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``."""

        def flow() -> Flow[dict[str, Any]]:
            return expect_json((yield httpx.Request("GET", self._url("/v1/health"))))

        return self._run(flow())

    def close(self) -> None:
        """Close the HTTP connections, which the agents of :meth:`create_agent` share:
        close (or release) them first. ``with AppClient(...)`` closes on exit."""
        self._client.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AppClient(broker_url={self.broker_url!r}, client_id={self.client_id!r})"
