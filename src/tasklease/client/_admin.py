"""The operator's client: :class:`AdminClient` (what the ``tasklease`` CLI talks through)."""

from __future__ import annotations

import base64
import os
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import nacl.signing

from tasklease import bounds, forksafe
from tasklease.client._admin_audit import AuditCalls
from tasklease.client._bounded import MAX_ADMIN_ANSWER, AnswerRefused, bounded_client
from tasklease.client._brokerurl import check_broker_url
from tasklease.client._errors import (
    TransportError,
    Unauthorized,
    Unavailable,
    error_from_response,
)
from tasklease.client._flows import expect_json
from tasklease.client._holder import CertArg, ssl_context
from tasklease.client._transport import closed
from tasklease.rules.messages import operator_sign_in_input

__all__ = ["AdminClient"]

_REAUTH_MARGIN = 30.0


class AdminClient(AuditCalls):
    """Operator access to one broker over HTTP, as a named operator or with the admin secret.

    With ``operator`` it signs in as that named operator (``POST /v1/operator/auth``) with
    ``operator_secret``, or with ``operator_key`` (the 32-byte Ed25519 private key seed,
    or a ``nacl.signing.SigningKey``) by signing a fresh challenge nonce; otherwise with
    the admin secret (``POST /v1/admin/auth``, the built-in admin). The token is fetched
    on first use and again shortly before it expires, or once when the broker answers
    401. Results are the broker's JSON objects as documented in ``docs/api.md``.

    Every method raises the :class:`~tasklease.client.TaskleaseError` subclass matching
    the broker's ``error_code`` (for example ``Unauthorized`` for a wrong secret,
    ``InsufficientScope``, ``NotFound``), or :class:`~tasklease.client.TransportError`
    when the broker cannot be reached.

    Thread-safe: threads sharing one client sign in once and share its token.
    """

    def __init__(
        self,
        broker_url: str,
        admin_secret: str | None,
        *,
        operator: str | None = None,
        operator_secret: str | None = None,
        operator_key: bytes | nacl.signing.SigningKey | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        access_token: str | None = None,
        token_expires_in: float = 0.0,
        insecure_http: bool | None = None,
        cert: CertArg | None = None,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
    ) -> None:
        """``admin_secret`` may be None for the public calls (health, jwks) or when
        ``operator`` is given with its secret or key. ``access_token`` is an operator token
        already in hand (``tasklease login`` caches one), used until ``token_expires_in``
        seconds from now; then, or when the broker refuses it, the client signs in again
        with its credentials (and raises ``Unauthorized`` without any).

        ``broker_url`` is ``https://``, or ``http://`` to a loopback host (``localhost``,
        127.0.0.0/8, ``::1``): secrets and tokens must not cross a network in clear.
        ``insecure_http=True`` allows plain HTTP to any host (on a network you trust),
        ``False`` refuses it even when ``TASKLEASE_INSECURE_HTTP=1`` is set, and None (the
        default) follows that variable; an allowed URL is announced once with an
        :class:`~tasklease.rules.cleartext.InsecureHTTPWarning`.

        ``cert=(cert_path, key_path)`` presents a client certificate on every connection
        (a broker with ``tls_mode = "mtls"`` asks every connection for one), and ``verify``
        is what to trust, as :class:`~tasklease.client.Agent` takes them: an
        ``ssl.SSLContext`` (used as is, ``cert`` loaded into it), a CA bundle path, or a
        bool; the default trusts what every client of the SDK does.

        Raises:
            ValueError: ``broker_url`` is plain HTTP beyond loopback without an opt-in.
            OSError, ssl.SSLError: ``cert`` does not load.
        """
        check_broker_url(broker_url, insecure_http)
        self.broker_url = broker_url.rstrip("/")
        self._secret = admin_secret
        self._operator = operator
        self._operator_secret = operator_secret
        self._operator_key = (
            nacl.signing.SigningKey(operator_key)
            if isinstance(operator_key, bytes)
            else operator_key
        )
        self._client = bounded_client(
            MAX_ADMIN_ANSWER,
            base_url=self.broker_url,
            transport=transport,
            timeout=timeout,
            verify=ssl_context(cert, verify),
        )
        self._token: str | None = access_token
        self._token_deadline = time.monotonic() + token_expires_in if access_token else 0.0
        # One sign-in at a time: threads sharing the client share its token, rather than
        # each signing in (an audited event, counted against the sign-in rate limit).
        self._token_lock = threading.Lock()
        forksafe.track(self)

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except RuntimeError as exc:
            raise closed(self._client, exc) from None
        except AnswerRefused as exc:
            raise TransportError(
                f"cannot use the answer of the broker at {self.broker_url}: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the broker at {self.broker_url}: {exc}") from exc

    def _sign_in(self) -> dict[str, Any]:
        """Sign in as the named operator, or with the admin secret; the broker's answer."""
        name = self._operator
        if name is None:
            if not self._secret:
                raise Unauthorized("no admin secret given", code="no_admin_secret")
            return expect_json(self._send("POST", "/v1/admin/auth", json={"secret": self._secret}))
        if self._operator_key is None and not self._operator_secret:
            raise Unauthorized(
                f"no secret or key given for operator {name}", code="no_operator_credential"
            )
        response = self._send("POST", "/v1/operator/auth", json=self._operator_proof(name))
        if response.status_code == 503 and response.headers.get("retry-after") == "1":
            # The credential changed within this second (a rotation): once more, after it.
            time.sleep(1.0)
            response = self._send("POST", "/v1/operator/auth", json=self._operator_proof(name))
        return expect_json(response)

    def _operator_proof(self, name: str) -> dict[str, Any]:
        """The sign-in body: the secret, or the key's signature of a fresh nonce."""
        if self._operator_key is None:
            return {"name": name, "secret": self._operator_secret}
        nonce = expect_json(self._send("GET", "/v1/challenge")).get("nonce")
        if not isinstance(nonce, str):
            raise Unauthorized("the broker's challenge lacks a nonce", code="bad_response")
        signed = self._operator_key.sign(operator_sign_in_input(name, nonce)).signature
        return {"name": name, "nonce": nonce, "signature": base64.b64encode(signed).decode()}

    def _admin_token(self, *, refused: str | None = None) -> str:
        """The operator token, signed in for when there is none, it is about to expire, or
        it is ``refused`` (a 401 answered it; another thread may have replaced it since)."""
        with self._token_lock:
            force = refused is not None and self._token == refused
            return self._current_token(force)

    def _current_token(self, force: bool) -> str:
        if self._token is None or force or time.monotonic() >= self._token_deadline:
            answer = self._sign_in()
            token = answer.get("access_token")
            if not isinstance(token, str):
                raise Unauthorized("the broker's answer lacks an access token", code="bad_response")
            life = bounds.lifetime(answer.get("expires_in")) or 60
            self._token = token
            self._token_deadline = time.monotonic() + max(1.0, life - _REAUTH_MARGIN)
        return self._token

    def _authed(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._admin_token()
        headers = {"Authorization": f"Bearer {token}"}
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code == 401:  # expired or revoked admin token: once more, fresh
            headers = {"Authorization": f"Bearer {self._admin_token(refused=token)}"}
            response = self._send(method, path, headers=headers, **kwargs)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return expect_json(self._authed(method, path, **kwargs))

    # -- public endpoints -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: status and storage state; signed in (when the client has
        credentials, whose role must hold ``admin:audit:*``) also the version, uptime,
        counters and ``signing_kid``, which anonymous callers do not get.

        A sign-in the broker refuses as unavailable (storage or its signing key away: a
        sign-in is an audited write) gives the anonymous answer instead: it still says
        ``degraded`` and why, which is what the caller needs to see then."""
        if self._secret or self._operator:
            try:
                self._admin_token()
            except Unavailable:
                return expect_json(self._send("GET", "/v1/health"))
            return self._json("GET", "/v1/health")
        return expect_json(self._send("GET", "/v1/health"))

    def jwks(self) -> dict[str, Any]:
        """``GET /.well-known/jwks.json``: the token verification keys."""
        return expect_json(self._send("GET", "/.well-known/jwks.json"))

    def metrics(self) -> str:
        """``GET /v1/metrics``: the Prometheus text exposition, signed in when the client
        has credentials. The broker serves it on its main port only with
        ``metrics_public = "token"`` (else ``NotFound``: scrape the metrics listener)."""
        if self._secret or self._operator:
            response = self._authed("GET", "/v1/metrics")
        else:
            response = self._send("GET", "/v1/metrics")
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.text

    def validate_token(self, token: str) -> dict[str, Any]:
        """``POST /v1/token/validate``: ``{"valid": true, "claims": ...}`` or ``valid: false``."""
        return expect_json(self._send("POST", "/v1/token/validate", json={"token": token}))

    # -- apps -------------------------------------------------------------------------

    def register_app(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        token_ttl: int | None = None,
        public_key: str | None = None,
    ) -> dict[str, Any]:
        """Create an app; the answer holds its ``client_secret``, shown only this once.

        ``public_key`` (an Ed25519 JWK as JSON text, or the raw key in base64) lets the
        app authenticate with client assertions it signs (``private_key_jwt``)."""
        body: dict[str, Any] = {"name": name, "scopes": _scope_list("scopes", scopes)}
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        if public_key is not None:
            body["public_key"] = public_key
        return self._json("POST", "/v1/admin/apps", json=body)

    def list_apps(self) -> list[dict[str, Any]]:
        """``GET /v1/admin/apps``: every registered app (no secrets)."""
        apps = self._json("GET", "/v1/admin/apps").get("apps")
        return [a for a in apps if isinstance(a, dict)] if isinstance(apps, list) else []

    def get_app(self, app_id: str) -> dict[str, Any]:
        """Raises NotFound for an unknown ``app_id``."""
        return self._json("GET", f"/v1/admin/apps/{_segment(app_id)}")

    def update_app(
        self,
        app_id: str,
        *,
        scopes: Sequence[str] | None = None,
        token_ttl: int | None = None,
        public_key: str | None = None,
    ) -> dict[str, Any]:
        """Change an app; ``public_key`` ``""`` removes its key."""
        body: dict[str, Any] = {}
        if scopes is not None:
            body["scopes"] = _scope_list("scopes", scopes)
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        if public_key is not None:
            body["public_key"] = public_key
        return self._json("PUT", f"/v1/admin/apps/{_segment(app_id)}", json=body)

    def rotate_app_secret(self, app_id: str) -> dict[str, Any]:
        """``POST /v1/admin/apps/{app_id}/rotate-secret``: a new ``client_secret`` made by
        the broker, in the answer only this once. The old secret stops working at once;
        the app's live app tokens and the launch tokens it made end, its agents keep
        theirs. Raises NotFound for an unknown ``app_id``, Conflict for a deregistered
        app."""
        return self._json("POST", f"/v1/admin/apps/{_segment(app_id)}/rotate-secret")

    def remove_app(self, app_id: str) -> dict[str, Any]:
        """Deregister an app: its secret stops working and its app tokens are revoked."""
        return self._json("DELETE", f"/v1/admin/apps/{_segment(app_id)}")

    # -- credentials --------------------------------------------------------------------

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
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        agent_key: bytes | None = None,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """A launch token (``launch_token``, ``expires_at``, ``max_uses``, ``uses_left``,
        ``policy``), shown once. ``max_uses`` needs ``single_use=False``. ``resource``
        (RFC 8707: absolute URIs) names what its agents' tokens may be for: with one, the
        registration's token is for it alone. ``authorization_details`` are structured
        grants of its ceiling (RFC 9396, docs/grants.md) besides ``allowed_scope``.
        ``agent_key`` (the agent's raw 32-byte Ed25519 public key) binds it to that agent:
        no other key registers with it. ``principal`` (``kind:value``, e.g.
        ``user:alice@example.com``) is the human its agents work for, carried by every
        token of theirs (default: its creator, ``operator:<name>`` for a named operator,
        ``admin`` for the admin secret; docs/agents.md).

        Raises:
            TypeError: ``allowed_scope`` is one string, not a list of scopes.
            InvalidRequest: a field is malformed (a scope, ``principal``, ``resource``).
        """
        body: dict[str, Any] = {
            "agent_name": agent_name,
            "allowed_scope": _scope_list("allowed_scope", allowed_scope),
            "single_use": single_use,
        }
        if max_ttl is not None:
            body["max_ttl"] = max_ttl
        if ttl is not None:
            body["ttl"] = ttl
        if max_uses is not None:
            body["max_uses"] = max_uses
        if allow_resume is not None:
            body["allow_resume"] = allow_resume
        if resource is not None:
            body["resource"] = resource if isinstance(resource, str) else list(resource)
        if authorization_details:
            body["authorization_details"] = [dict(d) for d in authorization_details]
        if agent_key is not None:
            body["agent_key"] = base64.b64encode(agent_key).decode("ascii")
        if principal is not None:
            body["principal"] = principal
        return self._json("POST", "/v1/admin/launch-tokens", json=body)

    def revoke(self, level: str, target: str) -> dict[str, Any]:
        """Revoke at ``level`` token (a jti), agent (a SPIFFE ID), task or chain."""
        return self._json("POST", "/v1/revoke", json={"level": level, "target": target})

    def rotate_signing_key(self) -> dict[str, Any]:
        """``POST /v1/admin/keys/rotate``: a new active key; old keys keep verifying."""
        return self._json("POST", "/v1/admin/keys/rotate")

    def retire_signing_key(self, kid: str) -> dict[str, Any]:
        """``POST /v1/admin/keys/{kid}/retire``: nothing the older key ``kid`` signed
        verifies any more (the active key cannot be retired: rotate first)."""
        return self._json("POST", f"/v1/admin/keys/{_segment(kid)}/retire")

    # -- operators (the admin role) -------------------------------------------------------

    def add_operator(
        self, name: str, role: str, *, public_key: bytes | None = None
    ) -> dict[str, Any]:
        """Add an operator with ``role`` (``admin``, ``operator`` or ``auditor``).

        With ``public_key`` (a raw 32-byte Ed25519 key) it signs in with that key;
        otherwise the answer holds its generated ``secret``, shown only this once.
        """
        body: dict[str, Any] = {"name": name, "role": role}
        if public_key is not None:
            body["public_key"] = base64.b64encode(public_key).decode("ascii")
        return self._json("POST", "/v1/admin/operators", json=body)

    def list_operators(self) -> list[dict[str, Any]]:
        """Every operator, active and removed, by name (no credential is ever shown)."""
        found = self._json("GET", "/v1/admin/operators").get("operators")
        return [o for o in found if isinstance(o, dict)] if isinstance(found, list) else []

    def remove_operator(self, name: str) -> dict[str, Any]:
        """Remove an operator: its credential stops working and its tokens are revoked."""
        return self._json("DELETE", f"/v1/admin/operators/{_segment(name)}")

    def rotate_operator(self, name: str, *, public_key: bytes | None = None) -> dict[str, Any]:
        """Replace an operator's credential (``public_key``, else a new ``secret`` shown
        once); its live tokens are revoked."""
        body: dict[str, Any] = {}
        if public_key is not None:
            body["public_key"] = base64.b64encode(public_key).decode("ascii")
        return self._json("POST", f"/v1/admin/operators/{_segment(name)}/rotate", json=body)

    # -- tenants (the default tenant's admin role) -----------------------------------------

    def create_tenant(self, name: str, *, trust_domain: str | None = None) -> dict[str, Any]:
        """Create a tenant; the answer holds its first operator's ``admin_secret``, shown
        only this once. Its API is then served under ``/t/<name>/``."""
        body: dict[str, Any] = {"name": name}
        if trust_domain is not None:
            body["trust_domain"] = trust_domain
        return self._json("POST", "/v1/admin/tenants", json=body)

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant besides the default one, active and removed, by name."""
        found = self._json("GET", "/v1/admin/tenants").get("tenants")
        return [t for t in found if isinstance(t, dict)] if isinstance(found, list) else []

    def remove_tenant(self, name: str) -> dict[str, Any]:
        """Remove a tenant: it is no longer served, so none of its credentials work."""
        return self._json("DELETE", f"/v1/admin/tenants/{_segment(name)}")

    # -- federation (admin:keys:*: the admin role and the built-in admin) ---------------

    def add_federation(
        self,
        trust_domain: str,
        *,
        bundle_endpoint_url: str | None = None,
        bundle: str | None = None,
        ca_pem: str | None = None,
        max_bundle_age: int | None = None,
        scope_map: Sequence[tuple[str, str]] | None = None,
        scope_ceiling: Sequence[str] | None = None,
        max_ttl: int | None = None,
        revocation_feed: str | None = None,
        feed_credentials_file: str | None = None,
    ) -> dict[str, Any]:
        """Federate with ``trust_domain``: its bundle from ``bundle_endpoint_url`` (https;
        checked against ``ca_pem``, else the system's trust store) or the static ``bundle``
        (its JSON text). Declaring it again replaces the record (``replaced`` in the
        answer). The broker fetches an endpoint's bundle before answering: ``status`` and
        ``last_error`` say how that went. ``revocation_feed`` (the other broker's base URL)
        with ``feed_credentials_file`` (the name of the file, in the broker's
        ``<data_dir>/federation/`` directory, holding the app credentials the other
        broker's operator gave) makes its revocations cross over."""
        body: dict[str, Any] = {"trust_domain": trust_domain}
        optional = {
            "bundle_endpoint_url": bundle_endpoint_url,
            "bundle": bundle,
            "ca_pem": ca_pem,
            "max_bundle_age": max_bundle_age,
            "scope_ceiling": None if scope_ceiling is None else list(scope_ceiling),
            "scope_map": None if scope_map is None else [list(pair) for pair in scope_map],
            "max_ttl": max_ttl,
            "revocation_feed": revocation_feed,
            "feed_credentials_file": feed_credentials_file,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return self._json("POST", "/v1/admin/federations", json=body)

    def list_federations(self) -> list[dict[str, Any]]:
        """Every federated trust domain, by name, with its bundle's state."""
        found = self._json("GET", "/v1/admin/federations").get("federations")
        return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []

    def get_federation(self, trust_domain: str) -> dict[str, Any]:
        """One federated trust domain; raises NotFound if it is not federated."""
        return self._json("GET", f"/v1/admin/federations/{_segment(trust_domain)}")

    def remove_federation(self, trust_domain: str) -> dict[str, Any]:
        """Stop trusting ``trust_domain``: its credentials are refused from now on."""
        return self._json("DELETE", f"/v1/admin/federations/{_segment(trust_domain)}")

    # -- workload attestors (admin:keys:*) -----------------------------------------------

    def add_attestor(
        self,
        name: str,
        kind: str,
        *,
        settings: dict[str, Any],
        policy: Sequence[dict[str, Any]],
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Configure the attestor ``name`` of type ``kind`` (``k8s_sat``, ``jwt_svid``,
        ``oidc``) with its ``settings`` and ``policy`` rules (docs/attestation.md); adding
        it again replaces it (``replaced`` in the answer)."""
        body: dict[str, Any] = {
            "name": name,
            "type": kind,
            "settings": dict(settings),
            "policy": [dict(rule) for rule in policy],
        }
        if app_id:
            body["app_id"] = app_id
        return self._json("POST", "/v1/admin/attestors", json=body)

    def list_attestors(self) -> list[dict[str, Any]]:
        """Every configured attestor, by name."""
        found = self._json("GET", "/v1/admin/attestors").get("attestors")
        return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []

    def get_attestor(self, name: str) -> dict[str, Any]:
        """One attestor; raises NotFound if there is none of that name."""
        return self._json("GET", f"/v1/admin/attestors/{_segment(name)}")

    def remove_attestor(self, name: str) -> dict[str, Any]:
        """Remove an attestor: its evidence is refused from now on."""
        return self._json("DELETE", f"/v1/admin/attestors/{_segment(name)}")

    def test_attestor(self, name: str, evidence: str) -> dict[str, Any]:
        """Verify sample ``evidence`` with attestor ``name`` (not consumed) and answer the
        ``attest`` claim and the ceiling its policy would grant; InvalidRequest (with
        the reason) when the evidence is refused."""
        path = f"/v1/admin/attestors/{_segment(name)}/test"
        return self._json("POST", path, json={"evidence": evidence})

    # -- structured grants and issuance policy (admin:keys:*) ---------------------------

    def add_grant_type(
        self,
        name: str,
        *,
        schema: dict[str, Any],
        narrowing: dict[str, str],
        description: str | None = None,
    ) -> dict[str, Any]:
        """Register grant type ``name``: the JSON Schema its grants match and how one
        narrows, member by member (docs/grants.md)."""
        body: dict[str, Any] = {"name": name, "schema": schema, "narrowing": narrowing}
        if description:
            body["description"] = description
        return self._json("POST", "/v1/admin/grant-types", json=body)

    def list_grant_types(self) -> list[dict[str, Any]]:
        """The tenant's grant types, by name."""
        found = self._json("GET", "/v1/admin/grant-types").get("grant_types")
        return [t for t in found if isinstance(t, dict)] if isinstance(found, list) else []

    def get_grant_type(self, name: str) -> dict[str, Any]:
        """One grant type; raises NotFound if there is none of that name."""
        return self._json("GET", f"/v1/admin/grant-types/{_segment(name)}")

    def remove_grant_type(self, name: str) -> dict[str, Any]:
        """Remove a grant type: requests naming it are refused from now on."""
        return self._json("DELETE", f"/v1/admin/grant-types/{_segment(name)}")

    def policy(self, *, reload: bool = False) -> dict[str, Any]:
        """The tenant's issuance policy in force (Cedar files, ``@id``s, digest, and why
        the latest files were refused if they were); ``reload`` reads them first."""
        if reload:
            return self._json("POST", "/v1/admin/policy/reload")
        return self._json("GET", "/v1/admin/policy")

    def trust_bundle(self) -> dict[str, Any]:
        """This broker's SPIFFE trust bundle (``GET /v1/federation/bundle``, public)."""
        return expect_json(self._send("GET", "/v1/federation/bundle"))

    # -- what is alive (docs/api.md, inventory) -----------------------------------------

    def sign_in(self) -> dict[str, Any]:
        """Sign in now; the broker's answer (``access_token``, ``expires_in``, ...)."""
        answer = self._sign_in()
        token = answer.get("access_token")
        if isinstance(token, str):
            life = bounds.lifetime(answer.get("expires_in")) or 60
            self._token = token
            self._token_deadline = time.monotonic() + max(1.0, life - _REAUTH_MARGIN)
        return answer

    def list_agents(self, **filters: Any) -> dict[str, Any]:
        """``GET /v1/admin/agents``: one page (``agents``, ``next_cursor``); filters
        ``app_id``, ``task_id``, ``principal``, ``state``, ``cursor``, ``limit``."""
        return self._json("GET", "/v1/admin/agents", params=_params(filters))

    def list_launch_tokens(self, **filters: Any) -> dict[str, Any]:
        """``GET /v1/admin/launch-tokens``: outstanding launch tokens, one page."""
        return self._json("GET", "/v1/admin/launch-tokens", params=_params(filters))

    def list_revocations(self, **filters: Any) -> dict[str, Any]:
        """``GET /v1/admin/revocations``: stored revocation entries, one page."""
        return self._json("GET", "/v1/admin/revocations", params=_params(filters))

    def delegation_tree(self, jti: str) -> dict[str, Any]:
        """``GET /v1/admin/delegations/{jti}``; raises NotFound for an unknown token."""
        return self._json("GET", f"/v1/admin/delegations/{_segment(jti)}")

    def task(self, task_id: str) -> dict[str, Any]:
        """``GET /v1/admin/tasks/{task_id}``; raises NotFound for an unknown task."""
        return self._json("GET", f"/v1/admin/tasks/{_segment(task_id)}")

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections (``with AdminClient(...)`` does it on exit)."""
        self._client.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        who = f", operator={self._operator!r}" if self._operator else ""
        return f"AdminClient({self.broker_url!r}{who})"


def _scope_list(name: str, scopes: Sequence[str]) -> list[str]:
    """``scopes`` as the list the broker takes; one string (a ``Sequence[str]`` too, of
    its characters) is a mistake the type checker lets through, refused here."""
    if isinstance(scopes, str):
        raise TypeError(f"{name} must be a list of scope strings, not one string")
    return list(scopes)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _params(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v is not None and v != ""}
