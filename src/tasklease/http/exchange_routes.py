"""The OAuth token endpoint, ``POST /v1/oauth/token``: RFC 8693 token exchange for agents
and the ``client_credentials`` grant (RFC 6749 section 4.4) for apps.

The body is a form (RFC 6749 section 3.2; a parameter may not repeat, section 3.1) or
JSON with the same names. **Token exchange** takes no ``Authorization`` header: the
tokens in the body are the credentials, and the one the caller holds (``actor_token``, or
``subject_token`` when narrowing) is checked with the request's DPoP proof or client
certificate when bound. **Client credentials** authenticate the app with its client
secret, in an HTTP Basic header (``client_secret_basic``, RFC 6749 section 2.3.1: each
part form-urlencoded) or in the body (``client_secret_post``), or with a JWT it signed
with the key it registered (``private_key_jwt``, RFC 7523 section 2.2: its ``aud`` the
issuer, draft-ietf-oauth-rfc7523bis; this endpoint's URL too only when
``client_assertion_token_endpoint_aud`` says so), exactly one of them; the answer is the app token
``POST /v1/app/auth`` gives, through the same service and the same rate limit, bound to
the DPoP key of the request's proof when it carries one (RFC 9449 section 5). The answer
is never cached (RFC 6749 section 5.1); a refusal is a problem that also carries RFC 6749
section 5.2's ``error`` and ``error_description``, with ``invalid_client`` (401, and a
``Basic`` challenge when Basic was used) for a client that does not authenticate: however
it failed (no credentials, a part missing, a malformed or non-Basic header, a wrong
assertion type, a wrong secret), the refusal spends the sign-in rate limit and carries a
``denial_id`` naming its one ``app_auth_failed`` audit event. An app that authenticates but
asks for a ``scope`` beyond the app token's or a ``resource`` other than the broker gets
``invalid_scope`` or ``invalid_target`` (400), decided by the broker after authentication,
with a ``denial_id`` and one such event as well.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clientauth import ASSERTION_TYPE
from tasklease.core.errors import (
    InvalidRequest,
    Unauthorized,
)
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, ExchangeRequest
from tasklease.core.exchange import GRANT_TYPE as EXCHANGE_GRANT
from tasklease.core.tokens import token_type_of
from tasklease.http import wire
from tasklease.http._handling import one_of, request_id
from tasklease.http.jsonbody import decode_json_body
from tasklease.http.middleware import is_form
from tasklease.http.problems import problem_response_parts
from tasklease.http.ratelimit import limit_sign_in
from tasklease.http.token_routes import RequestURI, form_parameters

__all__ = ["CLIENT_CREDENTIALS", "exchange_routes", "parse_exchange_request"]

Handler = Callable[[Request], Awaitable[Response]]
_FIELDS = frozenset(f.name for f in msgspec.structs.fields(wire.TokenExchangeRequest))
_encoder = msgspec.json.Encoder()
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
CLIENT_CREDENTIALS = "client_credentials"
_TARGETS = frozenset(("resource", "audience"))
_ASSERTION = "client_assertion"
_BASIC_CHALLENGE = 'Basic realm="tasklease", charset="UTF-8"'
_BASIC_HINT = "HTTP Basic: form-urlencoded client_id ':' client_secret, base64-encoded"


class _NotAuthenticated(Exception):
    """A client whose credentials cannot even be read: refused as ``invalid_client``
    and audited by the broker (:meth:`Broker.refuse_app_client`) like a wrong secret.
    ``reason`` is for the audit log only; ``basic``: the Basic header was tried."""

    def __init__(self, reason: str, *, basic: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.basic = basic


def _missing(client_id: str | None, *, basic: bool) -> _NotAuthenticated:
    """The refusal of client credentials with the id, the secret or both missing or empty."""
    if not client_id:
        return _NotAuthenticated("no_client_id", basic=basic)
    return _NotAuthenticated("no_client_secret", basic=basic)


def _basic_credentials(header: str) -> tuple[str, str]:
    """``client_id`` and ``client_secret`` of an RFC 6749 section 2.3.1 Basic header.

    Raises:
        _NotAuthenticated: the header is not Basic, is malformed, or lacks a part.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _NotAuthenticated("authorization_not_basic", basic=True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 once decoded
        raise _NotAuthenticated("malformed_basic_credentials", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _NotAuthenticated("malformed_basic_credentials", basic=True)
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if not client_id or not secret:
        raise _missing(client_id, basic=True)
    return client_id, secret


def _client_assertion(request: Request, req: wire.TokenExchangeRequest) -> str | None:
    """The request's ``client_assertion`` (``private_key_jwt``), or None when it uses a
    secret.

    Raises:
        InvalidRequest: an assertion with a secret or a Basic header (RFC 6749 section
            2.3: one method), or ``client_assertion`` and its type not both present.
        _NotAuthenticated: an assertion type other than RFC 7523's.
    """
    if req.client_assertion is None and req.client_assertion_type is None:
        return None
    if req.client_secret is not None or request.headers.get("authorization") is not None:
        raise InvalidRequest(
            "client authenticated twice: send a client assertion or a secret, not both"
        )
    if not req.client_assertion or not req.client_assertion_type:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if req.client_assertion_type != ASSERTION_TYPE:
        raise _NotAuthenticated("client_assertion_type_not_jwt_bearer", basic=False)
    return req.client_assertion


def _app_credentials(request: Request, req: wire.TokenExchangeRequest) -> tuple[str, str]:
    """The app's ``(client_id, client_secret)``, by exactly one method.

    Raises:
        InvalidRequest: two authentication methods at once (RFC 6749 section 2.3).
        _NotAuthenticated: none, a malformed one, or one without its id or secret.
    """
    header = request.headers.get("authorization")
    if header is not None:
        if req.client_secret is not None:
            raise InvalidRequest(
                "client authenticated twice: send the secret in the Basic header or in the "
                "body, not both"
            )
        client_id, secret = _basic_credentials(header)
        if req.client_id is not None and req.client_id != client_id:
            raise InvalidRequest("client_id in the body differs from the Basic header's")
        return client_id, secret
    if not req.client_id and not req.client_secret:
        raise _NotAuthenticated("no_client_credentials", basic=False)
    if not req.client_id or not req.client_secret:
        raise _missing(req.client_id, basic=False)
    return req.client_id, req.client_secret


async def parse_exchange_request(request: Request) -> wire.TokenExchangeRequest:
    """The form or JSON body as a :class:`wire.TokenExchangeRequest`.

    Raises:
        InvalidRequest: empty or malformed, or a form parameter given more than once.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing required field: grant_type")
    if not is_form(request.headers.get("content-type")):
        return decode_json_body(raw, wire.TokenExchangeRequest, form_too=True)
    values = form_parameters(raw, max_fields=32, targets=_TARGETS)
    return wire.TokenExchangeRequest(**{k: v for k, v in values.items() if k in _FIELDS})


def _token_response(body: wire.TokenExchangeResponse) -> Response:
    return Response(
        _encoder.encode(body) + b"\n", 200, headers=_NO_STORE, media_type="application/json"
    )


def exchange_routes(
    broker: Broker,
    *,
    guard: Callable[[Handler], Handler],
    context: Callable[[Request], RequestContext],
) -> list[Route]:
    """The token endpoint, wrapped by the application's problem ``guard``.

    ``client_credentials`` spends the app sign-in limit (``POST /v1/app/auth``'s,
    ``limit_sign_in``): two doors to one secret get one limit.
    """
    cfg = broker.config
    uri = RequestURI(cfg)
    issuer_endpoint = (
        (cfg.issuer.rstrip("/") + "/v1/oauth/token",)
        if cfg.issuer.startswith(("https://", "http://"))
        else ()
    )

    def assertion_audiences(request: Request) -> tuple[str, ...]:
        """What a client assertion's ``aud`` may be: the issuer identifier alone
        (draft-ietf-oauth-rfc7523bis section 4: a token endpoint URL is what another
        authorization server's metadata can name, making its client sign an assertion
        for us). With ``client_assertion_token_endpoint_aud`` (clients that cannot be
        told): also this endpoint's URL at one of the broker's own origins (never from
        ``Host``) and the issuer's token endpoint (the metadata's)."""
        if not cfg.client_assertion_token_endpoint_aud:
            return (cfg.issuer,)
        path = request.url.path
        here = tuple(origin + path for origin in uri.origins(request.scope))
        return (*here, *issuer_endpoint, cfg.issuer)

    async def client_credentials(
        request: Request, req: wire.TokenExchangeRequest, ctx: RequestContext
    ) -> Response:
        try:
            assertion = _client_assertion(request, req)
            client_id, secret = ("", "") if assertion else _app_credentials(request, req)
        except _NotAuthenticated as exc:
            # Audited like a wrong secret (an audit write each), so it spends the same
            # sign-in budget: guessing without credentials is no cheaper than with.
            await limit_sign_in(broker, "app", request)
            refused = await run_in_threadpool(broker.refuse_app_client, exc.reason, ctx)
            refused.oauth_error = "invalid_client"  # RFC 6749 section 5.2
            if exc.basic:
                refused.hint = _BASIC_HINT
            raise refused from None
        resource = one_of(req.resource, req.audience)
        # The limit guards the secret's check (argon2id) and the audit write of a refusal.
        await limit_sign_in(broker, "app", request)
        try:
            if assertion:
                issued = await run_in_threadpool(
                    lambda: broker.app_auth_assertion(
                        assertion,
                        ctx,
                        client_id=req.client_id,
                        audiences=assertion_audiences(request),
                        bind=True,
                        scope=req.scope,
                        resource=resource,
                    )
                )
            else:
                issued = await run_in_threadpool(
                    lambda: broker.app_auth(
                        client_id, secret, ctx, bind=True, scope=req.scope, resource=resource
                    )
                )
        except Unauthorized as exc:
            exc.oauth_error = "invalid_client"  # RFC 6749 section 5.2
            raise
        return _token_response(
            wire.TokenExchangeResponse(
                access_token=issued.token,
                issued_token_type=ACCESS_TOKEN_TYPE,
                token_type=token_type_of(issued.claims),
                expires_in=issued.expires_in,
                scope=" ".join(issued.claims.scope),
            )
        )

    async def token(request: Request) -> Response:
        req = await parse_exchange_request(request)
        ctx = context(request)
        if req.grant_type == CLIENT_CREDENTIALS:
            try:
                return await client_credentials(request, req, ctx)
            except Unauthorized as exc:
                # RFC 6749 section 5.2: a client that tried the Authorization header is
                # challenged with the scheme it used.
                basic = request.headers.get("authorization") is not None
                if exc.oauth_error != "invalid_client" or not basic:
                    raise
                status, body, headers = problem_response_parts(
                    exc, instance=request.url.path, request_id=request_id(request)
                )
                headers["WWW-Authenticate"] = _BASIC_CHALLENGE
                return Response(
                    body, status, headers=headers, media_type="application/problem+json"
                )
        if req.grant_type == EXCHANGE_GRANT and (
            request.headers.get("authorization", "").lower().startswith("basic")
            or req.client_secret is not None
            or req.client_assertion is not None
            or req.client_assertion_type is not None
        ):
            # Token exchange authenticates no client (token_endpoint_auth_method "none":
            # the tokens in the request are the credentials). Client credentials sent
            # anyway (RFC 6749 section 2.3: Basic, a secret, an assertion) are refused, not
            # ignored: a server checks the ones it is given, and a caller must not believe
            # a wrong secret was accepted. (Another scheme is no client authentication.)
            raise InvalidRequest(
                "token exchange takes no client authentication: the subject token is the "
                "credential; send no Basic header, client_secret or client_assertion"
            )
        exchange = ExchangeRequest(
            grant_type=req.grant_type,
            subject_token=req.subject_token,
            subject_token_type=req.subject_token_type,
            actor_token=req.actor_token,
            actor_token_type=req.actor_token_type,
            requested_token_type=req.requested_token_type,
            scope=req.scope,
            resource=one_of(req.resource, req.audience),
            authorization_details=req.authorization_details,
        )
        done = await run_in_threadpool(broker.exchange_token, exchange, ctx)
        return _token_response(
            wire.TokenExchangeResponse(
                access_token=done.token,
                issued_token_type=done.issued_token_type,
                token_type=done.token_type,
                expires_in=done.issued.expires_in,
                scope=" ".join(done.scope),
                authorization_details=wire.details_out(done.details),
            )
        )

    return [Route("/v1/oauth/token", guard(token), methods=["POST"])]
