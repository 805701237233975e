"""Starlette and FastAPI integration: an ASGI middleware and ``require_scope``.

    app.add_middleware(TaskleaseAuthMiddleware, verifier=verifier)

    @app.get("/data/42")                                   # FastAPI
    def read(token: VerifiedToken = Depends(require_scope("read:data:42"))): ...

    @require_scope("read:data:42")                          # Starlette
    async def read(request): ...

    pay = require_grant("resource_access", action="pay",     # structured grants
                        call=lambda request: {"amount": request.query_params["amount"],
                                              "currency": "EUR"})
    @app.post("/pay")                                       # FastAPI
    def send(token: VerifiedToken = Depends(pay)): ...
    @pay.guard                                              # Starlette
    async def send(request): ...

The middleware verifies the token of every request (``Authorization: Bearer``, RFC 6750
section 2.1, or ``Authorization: DPoP`` with a ``DPoP`` proof, RFC 9449; a
certificate-bound token against the client certificate of the ASGI TLS extension) and puts
the :class:`~tasklease.verify.VerifiedToken` in ``request.state.tasklease_token``; a request
without a valid token gets a 401 problem, a stale revocation feed a 503 problem (fail
closed). ``require_scope`` answers 403 when the token lacks the scope; ``require_grant``
when no structured grant (RFC 9396, docs/grants.md) allows the call, and asks the broker
to count the call when the grant carries ``max_calls`` (403 once they are used up).
Problems have the broker's RFC 9457 body (``type title status detail instance error_code
request_id``). For FastAPI, :func:`install_problem_handler` makes the dependency's 403 a
problem body too.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, overload

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tasklease.rules.binding import (
    MalformedAuthorization,
    authorization_credentials,
    expected_htu,
    origin_of,
    url_path,
    www_authenticate,
)
from tasklease.verify import _errors, _grants
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import InvalidToken, VerificationError, VerifierUnavailable
from tasklease.verify._verifier import Verifier

__all__ = [
    "STATE_KEY",
    "GrantRequirement",
    "ScopeDenied",
    "ScopeRequirement",
    "TaskleaseAuthMiddleware",
    "install_problem_handler",
    "problem_response",
    "require_grant",
    "require_scope",
]

STATE_KEY = "tasklease_token"
# What a grant requirement needs to have a call counted at the broker: the verifier and
# what the request presented (the token, its scheme and proofs).
_STATE_VERIFIER = "tasklease_verifier"
_STATE_PRESENTED = "tasklease_presented"
_TYPE_PREFIX = "urn:tasklease:error:"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[Request], Awaitable[Response]]


def _problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str,
    request_id: str,
    challenge: tuple[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = {
        "type": _TYPE_PREFIX + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "error_code": code,
        "request_id": request_id,
    }
    headers = {
        "content-type": "application/problem+json",
        "cache-control": "no-store",
        "x-request-id": request_id,
    }
    if challenge is not None:
        body["error"] = challenge[1]
        body["error_description"] = detail
    if status == 401 or challenge is not None:
        # RFC 6750 section 3.1: no error code when the request carried no token.
        headers["www-authenticate"] = www_authenticate(challenge)
    elif status == 503:
        headers["retry-after"] = "1"
    return json.dumps(body, separators=(",", ":")).encode() + b"\n", headers


def _request_id(headers: Collection[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SAFE_ID.fullmatch(text):
                return text
    return secrets.token_hex(8)


_STATUS = {"unauthorized": 401, "insufficient_scope": 403}


def _refusal(error: VerificationError, scope: Scope) -> tuple[int, tuple[str, str] | None]:
    """The status of a route's refusal and the challenge of the credential that failed
    (RFC 6750 section 3.1, RFC 9449 section 7.1): 403 ``insufficient_scope``, 401, or
    503 when the verifier (or the broker counting a call) cannot tell: fail closed."""
    status = 503 if isinstance(error, VerifierUnavailable) else _STATUS[error.code]
    scheme = _scheme(scope)
    if status == 403:
        return status, (scheme, "insufficient_scope")
    if status == 401 and isinstance(error, InvalidToken) and scheme:
        return status, _token_challenge(scheme, error)
    return status, None


def _refusal_headers(
    error: VerificationError, status: int, challenge: tuple[str, str] | None
) -> dict[str, str]:
    """What a refusal's status needs besides its body: ``WWW-Authenticate`` on a 401 or
    403 (RFC 6750 section 3; the scope a 403 lacked), ``Retry-After`` on a 503."""
    if status == 503:
        return {"retry-after": "1"}
    required = getattr(error, "required", "") if status == 403 else None
    return {"www-authenticate": www_authenticate(challenge, required)}


def problem_response(error: VerificationError, request: Request) -> Response:
    """The RFC 9457 problem for a refusal; the detail is generic, never ``error.reason``."""
    status, challenge = _refusal(error, request.scope)
    body, headers = _problem(
        status,
        error.code,
        error.message,
        instance=request.url.path,
        request_id=_request_id(request.scope.get("headers", [])),
        challenge=challenge,
    )
    headers.update(_refusal_headers(error, status, challenge))
    return Response(body, status, headers=headers)


def _token_challenge(scheme: str, error: InvalidToken) -> tuple[str, str]:
    """The challenge of a presented token that failed (RFC 6750 3.1, RFC 9449 7.1)."""
    return scheme, "invalid_dpop_proof" if error.dpop_proof else "invalid_token"


def _scheme(scope: Scope) -> str:
    """The scheme of a well-formed Bearer or DPoP ``Authorization`` header, else ``""``."""
    try:
        found = _authorization(scope)
    except MalformedAuthorization:
        return ""
    return found[0] if found is not None else ""


def _authorization(scope: Scope) -> tuple[str, str] | None:
    """``(scheme, token)`` of a ``Bearer`` (RFC 6750) or ``DPoP`` (RFC 9449) header.

    None without one (or with another scheme). Several ``Authorization`` fields are one
    malformed value (RFC 6750 section 3.1: more than one method).

    Raises:
        MalformedAuthorization: Bearer or DPoP without exactly one token.
    """
    values = [v.decode("latin-1") for n, v in scope.get("headers", []) if n == b"authorization"]
    if not values:
        return None
    return authorization_credentials(",".join(values))


def _dpop_proof(scope: Scope) -> str:
    """The ``DPoP`` header; several join into one value that fails (RFC 9449 4.3 point 1)."""
    values = [v.decode("latin-1") for n, v in scope.get("headers", []) if n == b"dpop"]
    return ",".join(values)


def _htu(scope: Scope, origins: Sequence[str], proof: str) -> str:
    """The URI a DPoP proof for this request must name: one of ``origins`` (the server's
    public origins) + the path of the request's URL, else the address the connection
    arrived at. Never the ``Host`` header, which the client writes: a proof minted for
    another server (another deployment behind the same audience) is not made valid here
    by naming it as ``Host``. The path is the broker's (``url_path``): the ASGI ``path``,
    which holds the ``root_path`` already, percent-encoded again as the URL writes it.
    """
    path = url_path(str(scope.get("path", "")))
    if not origins:
        raw_scheme = str(scope.get("scheme", "http"))
        scheme = {"ws": "http", "wss": "https"}.get(raw_scheme, raw_scheme)
        server = scope.get("server")
        if not server or server[1] is None:
            return ""
        host, port = str(server[0]), int(server[1])
        own = origin_of(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
        origins = (own,) if own is not None else ()
    return expected_htu(origins, path, proof)


def tls_client_certificate(scope: Scope) -> tuple[str, str]:
    """``(thumbprint, pem)`` of the client certificate from the ASGI TLS extension.

    The broker's own servers (and ``tasklease.http.tls.TLSScopeMixin``) put the
    precomputed ``x5t#S256`` there beside ``client_cert_chain``; other servers only the
    chain, whose first entry is the client's certificate (PEM). ``("", "")`` without one.
    """
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return "", ""
    thumbprint = tls.get("x5t#S256")
    if isinstance(thumbprint, str) and thumbprint:
        return thumbprint, ""
    chain = tls.get("client_cert_chain")
    if isinstance(chain, list | tuple) and chain and isinstance(chain[0], str):
        return "", chain[0]
    return "", ""


class TaskleaseAuthMiddleware:
    """Verify every request's token and its binding; 401/503 problems for those that fail.

    ``exempt_paths`` (exact paths, for health checks) pass without a token. The verifier is
    started at application start-up (lifespan) or, without one, on the first request.

    ``origins`` are the server's public origins (``https://api.example``), which a DPoP
    proof's ``htu`` must name: set them when clients reach the server through a proxy or
    a name other than the address it listens on. Without them, the address the
    connection arrived at. Never the ``Host`` header.

    Raises:
        ValueError: an origin is not an absolute http(s) URL.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier,
        exempt_paths: Collection[str] = (),
        origins: Collection[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)
        normalized: dict[str, None] = {}
        for url in origins:
            origin = origin_of(url)
            if origin is None:
                raise ValueError(f"origin {url!r} is not an absolute http(s) URL")
            normalized[origin] = None
        self.origins = tuple(normalized)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if not self.verifier.started:
            await self.verifier.astart()
        try:
            authorization = _authorization(scope)
        except MalformedAuthorization as exc:
            await self._malformed(scope, send, str(exc))
            return
        try:
            if authorization is None:
                raise VerificationError("missing authorization header or another scheme")
            scheme, token = authorization
            thumbprint, pem = tls_client_certificate(scope)
            proof = _dpop_proof(scope) if scheme == "DPoP" else None
            htu = _htu(scope, self.origins, proof or "")
            verified = await self.verifier.averify(
                token,
                scheme=scheme,
                client_cert=pem or None,
                client_cert_thumbprint=thumbprint or None,
                dpop_proof=proof,
                htm=scope.get("method", "GET"),
                htu=htu,
            )
        except VerificationError as exc:
            await self._refuse(scope, send, exc, authorization[0] if authorization else "")
            return
        state = scope.setdefault("state", {})
        state[STATE_KEY] = verified
        state[_STATE_VERIFIER] = self.verifier
        state[_STATE_PRESENTED] = {
            "token": token,
            "scheme": scheme,
            "client_cert": pem or None,
            "client_cert_thumbprint": thumbprint or None,
            "dpop_proof": proof,
            "htm": scope.get("method", "GET"),
            "htu": htu,
        }
        await self.app(scope, receive, send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.verifier.astart()
            elif message["type"] == "lifespan.shutdown":
                await self.verifier.aclose()
            return message

        return wrapped

    async def _refuse(
        self, scope: Scope, send: Send, error: VerificationError, scheme: str
    ) -> None:
        status = 503 if isinstance(error, VerifierUnavailable) else 401
        # A stale revocation state says so (revocation_state_stale, how stale, the bound);
        # every other refusal stays generic.
        code = error.code if status == 503 else "unauthorized"
        message = error.message if status == 503 else VerificationError.message
        challenge = None
        if status == 401 and scheme and isinstance(error, InvalidToken):
            challenge = _token_challenge(scheme, error)
        await self._send_problem(scope, send, status, code, message, challenge)

    async def _malformed(self, scope: Scope, send: Send, reason: str) -> None:
        """400 ``invalid_request`` for a malformed Bearer/DPoP header (RFC 6750 3.1)."""
        await self._send_problem(
            scope,
            send,
            400,
            "invalid_request",
            "malformed authorization header",
            ("Bearer", "invalid_request"),
        )

    async def _send_problem(
        self,
        scope: Scope,
        send: Send,
        status: int,
        code: str,
        message: str,
        challenge: tuple[str, str] | None,
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body, headers = _problem(
            status,
            code,
            message,
            instance=scope.get("path", ""),
            request_id=_request_id(scope.get("headers", [])),
            challenge=challenge,
        )
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


class ScopeDenied(HTTPException):
    """Raised by :class:`ScopeRequirement` and :class:`GrantRequirement` used as FastAPI
    dependencies: the status and headers of :func:`problem_response` (a challenge on a
    401 or 403, ``Retry-After`` on a 503), whichever handler answers it."""

    def __init__(self, error: VerificationError, request: Request | None = None) -> None:
        status, challenge = _refusal(error, request.scope if request is not None else {})
        super().__init__(status, error.message, headers=_refusal_headers(error, status, challenge))
        self.error = error


async def _problem_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ScopeDenied):
        return problem_response(exc.error, request)
    raise exc


def install_problem_handler(app: Any) -> None:
    """Make FastAPI answer :class:`ScopeDenied` with the broker's problem body."""
    app.add_exception_handler(ScopeDenied, _problem_handler)


class ScopeRequirement:
    """A FastAPI dependency and a Starlette endpoint decorator requiring one scope."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def check(self, request: Request) -> VerifiedToken:
        """The request's verified token if it covers the scope; raise otherwise."""
        from tasklease.verify._errors import InsufficientScope

        token = request.scope.get("state", {}).get(STATE_KEY)
        if not isinstance(token, VerifiedToken):
            raise InvalidToken("no verified token (is TaskleaseAuthMiddleware installed?)")
        if not token.has_scope(self.scope):
            raise InsufficientScope(f"token lacks required scope: {self.scope}", self.scope)
        return token

    @overload
    def __call__(self, request: Request) -> VerifiedToken: ...

    @overload
    def __call__(self, request: Endpoint) -> Endpoint: ...

    def __call__(self, request: Request) -> Any:  # type: ignore[misc]
        # FastAPI reads this signature: one parameter annotated `Request` is injected.
        if not isinstance(request, Request):
            return self._decorate(request)
        try:
            return self.check(request)
        except VerificationError as exc:
            raise ScopeDenied(exc, request) from None

    def _decorate(self, endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            try:
                self.check(request)
            except VerificationError as exc:
                return problem_response(exc, request)
            return await endpoint(request)

        return guarded


def require_scope(scope: str) -> ScopeRequirement:
    """Require ``scope`` (``action:resource:identifier``; wildcards as the broker's).

    Use as ``Depends(require_scope(...))`` in FastAPI (the dependency returns the
    :class:`~tasklease.verify.VerifiedToken`) or as a decorator on a Starlette endpoint.
    Needs :class:`TaskleaseAuthMiddleware` in front: without a verified token it answers
    401, without the scope 403.
    """
    return ScopeRequirement(scope)


CallArgs = Callable[[Request], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


class GrantRequirement:
    """Requires a structured grant allowing the request's call: a FastAPI dependency
    (``Depends(requirement)``, async) and, through :meth:`guard`, a Starlette endpoint
    decorator."""

    def __init__(self, kind: str, call: CallArgs | None, count: bool, fixed: Mapping[str, Any]):
        self.kind = kind
        self.call = call
        self.count = count
        self.fixed = dict(fixed)

    async def check(self, request: Request) -> VerifiedToken:
        """The request's verified token if a grant allows its call (counted at the broker
        when the grant has ``max_calls``); raise otherwise."""
        state = request.scope.get("state", {})
        token = state.get(STATE_KEY)
        if not isinstance(token, VerifiedToken):
            raise InvalidToken("no verified token (is TaskleaseAuthMiddleware installed?)")
        args = dict(self.fixed)
        if self.call is not None:
            extra = self.call(request)
            if inspect.isawaitable(extra):
                extra = await extra
            args.update(extra)
        grant = _grants.require_grant(token, self.kind, **args)
        if self.count and _grants.has_max_calls(grant):
            verifier = state.get(_STATE_VERIFIER)
            presented = state.get(_STATE_PRESENTED)
            if not isinstance(verifier, Verifier) or not isinstance(presented, dict):
                raise _errors.InsufficientScope("the grant's calls cannot be counted here")
            rest = {k: v for k, v in presented.items() if k != "token"}
            await verifier.acount_call(presented["token"], self.kind, **rest, **args)
        return token

    async def __call__(self, request: Request) -> VerifiedToken:
        # FastAPI reads this signature: one parameter annotated `Request` is injected.
        try:
            return await self.check(request)
        except VerificationError as exc:
            raise ScopeDenied(exc, request) from None

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """Decorate a Starlette endpoint: it runs only when the requirement holds."""

        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            try:
                await self.check(request)
            except VerificationError as exc:
                return problem_response(exc, request)
            return await endpoint(request)

        return guarded


def require_grant(
    kind: str, *, call: CallArgs | None = None, count: bool = True, **fixed: Any
) -> GrantRequirement:
    """Require a grant of type ``kind`` allowing the request's call (docs/grants.md).

    ``fixed`` are the call's arguments known per route (``action``, ``location``,
    ``scope``...); ``call(request)`` (sync or async) returns those that come with the
    request (``amount``, ``currency``, ``values``...). Every one must be allowed by one
    grant of the token (:meth:`VerifiedToken.allows`). When that grant carries
    ``max_calls`` the broker counts the call first (``count=False``: the route counts
    itself). Needs :class:`TaskleaseAuthMiddleware` in front; answers 401 without a
    verified token, 403 when no grant allows the call or its calls are used up.
    """
    return GrantRequirement(kind, call, count, fixed)
