"""HTTP routes for agents that trust each other: handshake, heartbeat, resume, discovery.

Thin adapters like the rest of ``tasklease.http``: parse a msgspec struct, call one
:class:`~tasklease.core.broker.Broker` method in the thread pool, translate the answer.
The Broker audits; nothing here decides anything. See docs/agents.md for the flows.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import TaskleaseError
from tasklease.core.mutual import HandshakeResult
from tasklease.core.tokens import KIND_AGENT, Claims, token_type_of
from tasklease.http import wire
from tasklease.http._handling import (
    Handler,
    authenticated,
    first_half,
    json_response,
    prepared,
    read_body,
)

__all__ = ["agent_routes"]

T = TypeVar("T")
_AGENT = frozenset({KIND_AGENT})


def _peer(result: HandshakeResult) -> wire.Peer:
    return wire.Peer(agent_id=result.peer_id, scope=list(result.peer_scope))


def agent_routes(
    broker: Broker,
    *,
    guard: Callable[[Handler], Handler],
    context: Callable[[Request], RequestContext],
) -> list[Route]:
    """The agent-trust routes (handshake, heartbeat, discovery, resume, WIMSE identity).

    Each is wrapped in the application's problem ``guard``.
    """

    # Heartbeats and the handshake: checked on the loop, their writes and events awaited.
    written = prepared(broker, context)
    authed = authenticated(broker, context)

    async def as_agent(request: Request, op: Callable[[Claims, RequestContext], T]) -> T:
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> T:
            return op(broker.authenticate(header, ctx, kinds=_AGENT), ctx)

        return await run_in_threadpool(run)

    async def initiate(request: Request) -> Response:
        req = await read_body(request, wire.MutualInitiateRequest)
        hid, offer, ttl = await authed(
            request,
            _AGENT,
            None,
            lambda c, ctx: broker.mutual_initiate(
                c, responder=req.responder_id, initiator_nonce=req.initiator_nonce, ctx=ctx
            ),
            reads=True,  # writes only its event: deferred, awaited before the answer
        )
        return json_response(wire.HandshakeOffer(handshake_id=hid, offer=offer, expires_in=ttl))

    async def respond(request: Request) -> Response:
        req = await read_body(request, wire.MutualRespondRequest)
        answer, initiator = await written(
            request,
            _AGENT,
            None,
            lambda c, ctx: broker.prepare_mutual_respond(
                c,
                offer=req.offer,
                responder_nonce=req.responder_nonce,
                signature=req.signature,
                ctx=ctx,
            ),
        )
        return json_response(
            wire.HandshakeAnswer(
                handshake_id=initiator.handshake_id, answer=answer, initiator=_peer(initiator)
            )
        )

    async def complete(request: Request) -> Response:
        req = await read_body(request, wire.MutualCompleteRequest)
        receipt, responder = await written(
            request,
            _AGENT,
            None,
            lambda c, ctx: broker.prepare_mutual_complete(
                c, answer=req.answer, signature=req.signature, ctx=ctx
            ),
        )
        return json_response(
            wire.HandshakeReceipt(
                handshake_id=responder.handshake_id, receipt=receipt, responder=_peer(responder)
            )
        )

    async def heartbeat(request: Request) -> Response:
        req = await read_body(request, wire.HeartbeatRequest)
        session = await written(
            request,
            _AGENT,
            None,
            lambda c, ctx: broker.prepare_heartbeat(
                c,
                timestamp=req.timestamp,
                jti=req.jti,
                signature=req.signature,
                done=req.done,
                ctx=ctx,
            ),
        )
        cfg = broker.config
        return json_response(
            wire.HeartbeatResponse(
                status="released" if session.state == "released" else "alive",
                interval=cfg.heartbeat_interval,
                misses=cfg.heartbeat_misses,
                deadline=session.last_heartbeat + cfg.heartbeat_interval * cfg.heartbeat_misses,
            )
        )

    async def resume(request: Request) -> Response:
        req = await read_body(request, wire.ResumeRequest)
        ctx = context(request)
        try:
            # Checked and signed on the loop (run_reading), its refusals' events and
            # DPoP proof written with its unit.
            first = await first_half(
                lambda: broker.prepare_resume(
                    agent_id=req.agent_id, nonce=req.nonce, signature=req.signature, ctx=ctx
                ),
                store=broker.store,
            )
            issued = await broker.answer(first)
        except TaskleaseError as exc:
            # A resumption answers every failure alike; a DPoP client gets the current
            # nonce either way, so that a missing one is no oracle (RFC 9449 section 8).
            offered = broker.offered_dpop_nonce() if ctx.dpop else ""
            if offered:
                exc.dpop_nonce = offered
            raise
        return json_response(
            wire.RegisterResponse(
                agent_id=issued.claims.sub,
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type=token_type_of(issued.claims),
            )
        )

    async def bind(request: Request) -> Response:
        req = await read_body(request, wire.DiscoveryBindRequest)
        binding = await as_agent(
            request,
            lambda c, ctx: broker.discovery_bind(
                c, endpoint=req.endpoint, issued_at=req.issued_at, signature=req.signature, ctx=ctx
            ),
        )
        return json_response(
            wire.DiscoveryBinding(
                agent_id=binding.agent_id, endpoint=binding.endpoint, issued_at=binding.issued_at
            )
        )

    async def resolve(request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        binding, agent = await as_agent(
            request, lambda _c, _ctx: broker.discovery_resolve(agent_id)
        )
        return json_response(
            wire.ResolvedEndpoint(
                agent_id=binding.agent_id,
                endpoint=binding.endpoint,
                issued_at=binding.issued_at,
                signature=base64.b64encode(binding.signature).decode("ascii"),
                public_key=base64.b64encode(agent.public_key).decode("ascii"),
            )
        )

    async def workload_identity(request: Request) -> Response:
        wit, expires_in = await as_agent(request, broker.workload_identity)
        return json_response(
            wire.WorkloadIdentityResponse(workload_identity_token=wit, expires_in=expires_in)
        )

    return [
        Route("/v1/mutual/initiate", guard(initiate), methods=["POST"]),
        Route("/v1/mutual/respond", guard(respond), methods=["POST"]),
        Route("/v1/mutual/complete", guard(complete), methods=["POST"]),
        Route("/v1/heartbeat", guard(heartbeat), methods=["POST"]),
        Route("/v1/resume", guard(resume), methods=["POST"]),
        Route("/v1/discovery/bind", guard(bind), methods=["POST"]),
        Route("/v1/discovery/{agent_id:path}", guard(resolve), methods=["GET"]),
        Route("/v1/workload/identity", guard(workload_identity), methods=["POST"]),
    ]
