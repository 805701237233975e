"""The operator's client: :class:`AdminClient` (what the ``tasklease`` CLI talks through)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from tasklease.client._errors import TransportError, Unauthorized, error_from_response
from tasklease.client._flows import expect_json

__all__ = ["AdminClient"]

_REAUTH_MARGIN = 30.0


class AdminClient:
    """Operator access to one broker over HTTP, authenticated with the admin secret.

    The admin token is fetched on first use (``POST /v1/admin/auth``) and fetched again
    shortly before it expires, or once when the broker answers 401. Results are the
    broker's JSON objects as documented in ``docs/api.md``.

    Every method raises the :class:`~tasklease.client.TaskleaseError` subclass matching
    the broker's ``error_code`` (for example ``Unauthorized`` for a wrong secret,
    ``InsufficientScope``, ``NotFound``), or :class:`~tasklease.client.TransportError`
    when the broker cannot be reached.
    """

    def __init__(
        self,
        broker_url: str,
        admin_secret: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        """``admin_secret`` may be None for the public calls (health, jwks, metrics)."""
        self.broker_url = broker_url.rstrip("/")
        self._secret = admin_secret
        self._client = httpx.Client(base_url=self.broker_url, transport=transport, timeout=timeout)
        self._token: str | None = None
        self._token_deadline = 0.0

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the broker at {self.broker_url}: {exc}") from exc

    def _admin_token(self, *, force: bool = False) -> str:
        if self._token is None or force or time.monotonic() >= self._token_deadline:
            if not self._secret:
                raise Unauthorized("no admin secret given", code="no_admin_secret")
            answer = expect_json(
                self._send("POST", "/v1/admin/auth", json={"secret": self._secret})
            )
            token = answer.get("access_token")
            if not isinstance(token, str):
                raise Unauthorized("the broker's answer lacks an access token")
            expires_in = answer.get("expires_in")
            life = float(expires_in) if isinstance(expires_in, int) else 60.0
            self._token = token
            self._token_deadline = time.monotonic() + max(1.0, life - _REAUTH_MARGIN)
        return self._token

    def _authed(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._admin_token()}"}
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code == 401:  # expired or revoked admin token: once more, fresh
            headers = {"Authorization": f"Bearer {self._admin_token(force=True)}"}
            response = self._send(method, path, headers=headers, **kwargs)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return expect_json(self._authed(method, path, **kwargs))

    # -- public endpoints -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: status, version, uptime, counters, ``signing_kid``."""
        return expect_json(self._send("GET", "/v1/health"))

    def jwks(self) -> dict[str, Any]:
        """``GET /.well-known/jwks.json``: the token verification keys."""
        return expect_json(self._send("GET", "/.well-known/jwks.json"))

    def metrics(self) -> str:
        """``GET /v1/metrics``: the Prometheus text exposition."""
        response = self._send("GET", "/v1/metrics")
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.text

    def validate_token(self, token: str) -> dict[str, Any]:
        """``POST /v1/token/validate``: ``{"valid": true, "claims": ...}`` or ``valid: false``."""
        return expect_json(self._send("POST", "/v1/token/validate", json={"token": token}))

    # -- apps -------------------------------------------------------------------------

    def register_app(
        self, name: str, scopes: Sequence[str], *, token_ttl: int | None = None
    ) -> dict[str, Any]:
        """Create an app; the answer holds its ``client_secret``, shown only this once."""
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        return self._json("POST", "/v1/admin/apps", json=body)

    def list_apps(self) -> list[dict[str, Any]]:
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
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        return self._json("PUT", f"/v1/admin/apps/{_segment(app_id)}", json=body)

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
    ) -> dict[str, Any]:
        """A launch token (``launch_token``, ``expires_at``, ``max_uses``, ``uses_left``,
        ``policy``), shown once. ``max_uses`` needs ``single_use=False``."""
        body: dict[str, Any] = {
            "agent_name": agent_name,
            "allowed_scope": list(allowed_scope),
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
        return self._json("POST", "/v1/admin/launch-tokens", json=body)

    def revoke(self, level: str, target: str) -> dict[str, Any]:
        """Revoke at ``level`` token (a jti), agent (a SPIFFE ID), task or chain."""
        return self._json("POST", "/v1/revoke", json={"level": level, "target": target})

    def rotate_signing_key(self) -> dict[str, Any]:
        """``POST /v1/admin/keys/rotate``: a new active key; old keys keep verifying."""
        return self._json("POST", "/v1/admin/keys/rotate")

    # -- audit --------------------------------------------------------------------------

    def audit_events(
        self,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """One page: ``{"events": [...], "total", "offset", "limit"}``, in chain order."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        for name, value in (
            ("agent_id", agent_id),
            ("task_id", task_id),
            ("event_type", event_type),
            ("outcome", outcome),
            ("since", since),
            ("until", until),
        ):
            if value:
                params[name] = value
        return self._json("GET", "/v1/audit/events", params=params)

    def iter_audit_events(
        self,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Every matching event in chain order, fetched page by page.

        Appends made while iterating land after the pages already read, so offset
        paging in ``seq`` order neither skips nor repeats events.
        """
        page_size = max(1, min(page_size, 1000))  # the broker's largest page
        offset = 0
        while True:
            page = self.audit_events(
                agent_id=agent_id,
                task_id=task_id,
                event_type=event_type,
                outcome=outcome,
                since=since,
                until=until,
                limit=page_size,
                offset=offset,
            )
            events = page.get("events")
            if not isinstance(events, list) or not events:
                return
            for event in events:
                offset += 1
                yield event
            used = page.get("limit")
            if len(events) < (used if isinstance(used, int) and used > 0 else page_size):
                return

    def audit_total(self) -> int:
        """How many events the log holds."""
        total = self.audit_events(limit=1).get("total")
        return total if isinstance(total, int) else 0

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
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
        return f"AdminClient({self.broker_url!r})"


def _segment(value: str) -> str:
    return quote(value, safe="")
