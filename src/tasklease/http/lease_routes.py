"""HTTP routes of an agent's lease: challenge, register, validate, renew, release, delegate.

Thin adapters like the rest of ``tasklease.http``: parse, call one
:class:`~tasklease.core.broker.Broker` method, translate. These are the hot paths, so each
handler calls the Broker itself, with no layer between. Token validation is pure CPU and
runs on the event loop unless the store may be read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.binding import cert_thumbprint_from_pem
from tasklease.core.broker import (
    ALL_KINDS,
    Broker,
    PendingRegistration,
    RequestContext,
)
from tasklease.core.errors import InvalidRequest
from tasklease.core.introspection import is_reference_token
from tasklease.core.tokens import Claims, token_type_of
from tasklease.core.validation import TokenRejected
from tasklease.http import wire
from tasklease.http._handling import (
    Authed,
    first_half,
    guard,
    json_response,
    one_of,
    prepared,
    read_body,
    run_reading,
)
from tasklease.rules.binding import BindingError, Presentation

__all__ = ["lease_routes", "presentation"]

_INVALID = msgspec.json.encode(wire.InvalidToken()) + b"\n"


def validated_claims(claims: Claims) -> dict[str, Any]:
    """The token's claims as ``/v1/token/validate`` answers them (AgentWrit's shape).

    The claims as signed, except ``scope``, a list here (the ``agentwrit`` SDK reads it
    as one; the token carries RFC 9068's space-delimited string) and ``sub``, the holder
    (AgentWrit's subject; a delegated token's ``sub`` is RFC 8693's subject, and its
    holder the current actor in ``act``).
    """
    shown = dict(claims.raw)
    shown["scope"] = list(claims.scope)
    shown["sub"] = claims.sub
    return shown


def presentation(req: wire.ValidateRequest | wire.CallCountRequest) -> Presentation:
    """What a resource server says its own request presented (for bound tokens)."""
    thumbprint = req.client_cert_thumbprint or ""
    if req.client_cert:
        try:
            thumbprint = cert_thumbprint_from_pem(req.client_cert)
        except BindingError as exc:
            raise InvalidRequest("client_cert must be one PEM certificate") from exc
    return Presentation(
        scheme="DPoP" if req.dpop else "Bearer",
        cert_thumbprint=thumbprint,
        dpop_proof=req.dpop or "",
        htm=req.htm or "",
        htu=req.htu or "",
    )


def lease_routes(
    broker: Broker,
    *,
    context: Callable[[Request], RequestContext],
    authed: Authed,
) -> list[Route]:
    """The lease routes, each wrapped in the problem ``guard``."""
    cfg = broker.config
    # Renew, release and delegate: checked and signed on the loop, the commit awaited.
    written = prepared(broker, context)

    async def challenge(request: Request) -> Response:
        nonce, ttl = broker.challenge()
        answer = json_response(wire.ChallengeResponse(nonce=nonce, expires_in=ttl))
        # A registration or resumption follows: its DPoP proof can carry the nonce at once.
        dpop_nonce = broker.offered_dpop_nonce()
        if dpop_nonce:
            answer.headers["DPoP-Nonce"] = dpop_nonce
        return answer

    async def validate(request: Request) -> Response:
        req = await read_body(request, wire.ValidateRequest)
        if not req.token:
            raise InvalidRequest("token field is required")
        presented = presentation(req)
        ctx = context(request)
        token = req.token

        def check() -> Claims:
            return broker.validate(token, audience=req.audience, presented=presented, ctx=ctx)

        # Pure CPU on the loop, unless the store may be read (by-reference tokens,
        # high-assurance scopes): then as run_reading says.
        reads = bool(cfg.critical_scopes) or is_reference_token(token)
        store = broker.store if reads else None
        try:
            if req.dpop:
                # The proof is recorded as used with the check's deferred audit events,
                # awaited without a thread (core.audit.Guard); a replay is not valid.
                claims = await broker.settle(await first_half(check, store=store))
            elif store is not None:
                claims = await run_reading(store, check)
            else:
                claims = check()
        except TokenRejected:
            return Response(_INVALID, media_type="application/json")
        return json_response(wire.ValidToken(valid=True, claims=validated_claims(claims)))

    async def register(request: Request) -> Response:
        req = await read_body(request, wire.RegisterRequest)
        ctx = context(request)

        def prepare() -> PendingRegistration:
            return broker.prepare_register(
                launch_token=req.launch_token,
                nonce=req.nonce,
                public_key=req.public_key,
                signature=req.signature,
                orch_id=req.orch_id,
                task_id=req.task_id,
                requested_scope=req.requested_scope,
                ctx=ctx,
                resource=one_of(req.resource, req.audience),
                attestation=attestation,
                declared=req.declared,
                authorization_details=req.authorization_details,
            )

        # The core reads the attestation as a mapping. Verifying it may fetch an issuer's
        # keys over the network, so a registration with evidence runs in a thread.
        attestation = None if req.attestation is None else msgspec.structs.asdict(req.attestation)
        # Checks and signing write nothing: on the loop (run_reading). The commit is
        # awaited without holding a thread, so concurrent registrations share a
        # transaction and are answered with one wake-up of the loop.
        if attestation is None:
            pending = await run_reading(broker.store, prepare)
        else:
            pending = await run_in_threadpool(prepare)
        issued = await broker.complete_register(pending)
        return json_response(
            wire.RegisterResponse(
                agent_id=issued.claims.sub,
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type=token_type_of(issued.claims),
                authorization_details=wire.details_out(issued.claims.details),
            )
        )

    async def renew(request: Request) -> Response:
        issued = await written(request, ALL_KINDS, None, broker.prepare_renew)
        return json_response(
            wire.RenewResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type=token_type_of(issued.claims),
            )
        )

    async def release(request: Request) -> Response:
        await written(request, ALL_KINDS, None, broker.prepare_release)
        return Response(status_code=204)

    async def delegate(request: Request) -> Response:
        req = await read_body(request, wire.DelegateRequest)
        issued = await written(
            request,
            ALL_KINDS,
            None,
            lambda c, ctx: broker.prepare_delegate(
                c,
                delegate_to=req.delegate_to,
                scope=req.scope,
                ttl=req.ttl,
                ctx=ctx,
                resource=one_of(req.resource, req.audience),
                authorization_details=req.authorization_details,
            ),
        )
        return json_response(
            wire.DelegateResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type=token_type_of(issued.claims),
                delegation_chain=[
                    wire.delegation_record(r) for r in issued.claims.delegation_chain
                ],
                authorization_details=wire.details_out(issued.claims.details),
            )
        )

    return [
        Route("/v1/challenge", guard(challenge), methods=["GET"]),
        Route("/v1/token/validate", guard(validate), methods=["POST"]),
        Route("/v1/register", guard(register), methods=["POST"]),
        Route("/v1/token/renew", guard(renew), methods=["POST"]),
        Route("/v1/token/release", guard(release), methods=["POST"]),
        Route("/v1/delegate", guard(delegate), methods=["POST"]),
    ]
