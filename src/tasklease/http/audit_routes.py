"""HTTP routes of the transparent audit log: the checkpoint, the log's keys, proofs, and
the log key's rotation (docs/audit.md).

Thin adapters like the rest of ``tasklease.http``: parse, authenticate, call the broker's
:class:`~tasklease.core.transparency.AuditTransparency`, translate.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.errors import InvalidRequest
from tasklease.core.kernel import RequestContext
from tasklease.core.tokens import KIND_ADMIN, Claims
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, json_response

__all__ = ["AUDIT_READ_SCOPE", "audit_routes"]

_ADMIN = frozenset({KIND_ADMIN})
AUDIT_READ_SCOPE = "admin:audit:*"
_MAX_SIZE = 2**63 - 1
_T = TypeVar("_T")


def _size(request: Request, name: str) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        raise InvalidRequest(f"{name} is required")
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    number = int(value)
    if number > _MAX_SIZE:
        raise InvalidRequest(f"{name} is out of range")
    return number


def audit_routes(broker: Broker, *, authed: Authed) -> list[Route]:
    """The audit log's transparency routes, each wrapped in the problem ``guard``."""
    log = broker.transparency
    public = broker.config.audit_checkpoint_public

    async def readable(request: Request, op: Callable[[], _T]) -> _T:
        """Run ``op`` for an auditor (or anyone, for what ``audit_checkpoint_public``
        opens)."""
        if public:
            return await run_in_threadpool(op)
        return await authed(request, _ADMIN, AUDIT_READ_SCOPE, lambda _c, _ctx: op())

    async def checkpoint(request: Request) -> Response:
        record = await readable(request, log.checkpoint)
        return Response(
            record.note,
            media_type="text/plain; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    async def log_keys(request: Request) -> Response:
        keys = await readable(request, log.log_keys)
        return json_response(
            wire.AuditLogKeys(
                origin=log.origin,
                keys=[k.vkey for k in keys],
                witnesses=[w.key.vkey for w in log.witnesses],
                quorum=log.quorum,
            )
        )

    async def inclusion(request: Request) -> Response:
        def op(_c: Claims, _ctx: RequestContext) -> tuple[int, int, list[bytes], bytes]:
            # Parsed once the caller is authenticated: strangers learn nothing of the log.
            index, size = _size(request, "index"), _size(request, "size")
            return index, size, log.inclusion(index, size), log.root(size)

        index, size, proof, root = await authed(request, _ADMIN, AUDIT_READ_SCOPE, op)
        return json_response(
            wire.InclusionProof(
                index=index,
                size=size,
                proof=wire.b64_hashes(proof),
                root=base64.b64encode(root).decode("ascii"),
            )
        )

    async def consistency(request: Request) -> Response:
        def op(_c: Claims, _ctx: RequestContext) -> tuple[int, int, list[bytes]]:
            first, second = _size(request, "first"), _size(request, "second")
            return first, second, log.consistency(first, second)

        first, second, proof = await authed(request, _ADMIN, AUDIT_READ_SCOPE, op)
        return json_response(
            wire.ConsistencyProof(first=first, second=second, proof=wire.b64_hashes(proof))
        )

    async def rotate(request: Request) -> Response:
        new, previous = await authed(request, _ADMIN, "admin:keys:*", log.rotate_key)
        return json_response(
            wire.LogKeyRotationResponse(
                key=new, previous_key=previous, keys=[k.vkey for k in log.log_keys()]
            )
        )

    return [
        Route("/v1/audit/checkpoint", guard(checkpoint), methods=["GET"]),
        Route("/v1/audit/log-keys", guard(log_keys), methods=["GET"]),
        Route("/v1/audit/proof/inclusion", guard(inclusion), methods=["GET"]),
        Route("/v1/audit/proof/consistency", guard(consistency), methods=["GET"]),
        Route("/v1/admin/audit/log-key/rotate", guard(rotate), methods=["POST"]),
    ]
