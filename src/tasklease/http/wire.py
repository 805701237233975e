"""Request bodies as msgspec Structs, and the JSON shapes of responses.

Every request field is optional at the decoding step so that a missing field reaches
the core, which answers with a precise ``missing required field: <name>`` (400) rather
than a generic decoding error; wrong JSON types are refused here with the path of the
offending field. Unknown fields are ignored, as AgentWrit v2 does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.store import AppRecord, AuditEvent

__all__ = [
    "AdminAuthRequest",
    "AppAuthRequest",
    "AppCreateRequest",
    "AppUpdateRequest",
    "DelegateRequest",
    "LaunchTokenRequest",
    "RegisterRequest",
    "RevokeRequest",
    "TokenRequest",
    "ValidateRequest",
    "app_json",
    "event_json",
]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=False):
    launch_token: str | None = None
    nonce: str | None = None
    public_key: str | None = None
    signature: str | None = None
    orch_id: str | None = None
    task_id: str | None = None
    requested_scope: list[str] | None = None
    # RFC 8707: the one resource the token is for (``audience`` is an alias).
    resource: str | None = None
    audience: str | None = None


class ValidateRequest(msgspec.Struct):
    token: str | None = None
    # The resource server's own identifier (RFC 8707): tokens for others are invalid.
    audience: str | None = None
    # What the resource server's own request presented, for bound tokens: the client
    # certificate (PEM) or its x5t#S256 (RFC 8705), the DPoP proof with the request's
    # method and URI (RFC 9449).
    client_cert: str | None = None
    client_cert_thumbprint: str | None = None
    dpop: str | None = None
    htm: str | None = None
    htu: str | None = None


class DelegateRequest(msgspec.Struct):
    delegate_to: str | None = None
    scope: list[str] | None = None
    ttl: int | None = None
    # RFC 8707: keep the delegator's audience, or narrow it to one resource.
    resource: str | None = None
    audience: str | None = None


class TokenRequest(msgspec.Struct):
    """RFC 7009 revocation and RFC 7662 introspection (JSON form; forms also accepted)."""

    token: str | None = None
    token_type_hint: str | None = None
    # Introspection only: refuse (active: false) tokens not for this resource.
    audience: str | None = None


class RevokeRequest(msgspec.Struct):
    level: str | None = None
    target: str | None = None


class AdminAuthRequest(msgspec.Struct):
    secret: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class AppAuthRequest(msgspec.Struct):
    client_id: str | None = None
    client_secret: str | None = None


class AppCreateRequest(msgspec.Struct):
    name: str | None = None
    scopes: list[str] | None = None
    token_ttl: int | None = None


class AppUpdateRequest(msgspec.Struct):
    scopes: list[str] | None = None
    token_ttl: int | None = None


class LaunchTokenRequest(msgspec.Struct):
    agent_name: str | None = None
    allowed_scope: list[str] | None = None
    max_ttl: int | None = None
    single_use: bool | None = None
    ttl: int | None = None
    # RFC 8707: the resources its agents' tokens may be for (``audience`` is an alias).
    resource: str | list[str] | None = None
    audience: str | list[str] | None = None
    # The human the launched agents work for, ``kind:value`` (docs/agents.md).
    principal: str | None = None


def app_json(app: AppRecord) -> dict[str, Any]:
    return {
        "app_id": app.app_id,
        "name": app.name,
        "client_id": app.client_id,
        "scopes": list(app.scopes),
        "token_ttl": app.token_ttl,
        "status": app.status,
        "created_at": format_rfc3339_seconds(app.created_at),
        "updated_at": format_rfc3339_seconds(app.updated_at),
    }


def event_json(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "seq": ev.seq,
        "timestamp": ev.timestamp,
        "event_type": ev.event_type,
        "agent_id": ev.agent_id,
        "task_id": ev.task_id,
        "orch_id": ev.orch_id,
        "detail": ev.detail,
        "resource": ev.resource,
        "outcome": ev.outcome,
        "deleg_depth": ev.deleg_depth,
        "deleg_chain_hash": ev.deleg_chain_hash,
        "request_id": ev.request_id,
        "hash": ev.hash,
        "prev_hash": ev.prev_hash,
    }
