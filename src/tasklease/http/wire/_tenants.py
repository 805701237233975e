"""Tenants on the wire: the registry the default tenant's operators manage."""

from __future__ import annotations

from typing import Annotated

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.records import TenantRecord
from tasklease.core.tenants import TENANT_PATH_PREFIX, tenant_issuer
from tasklease.http.wire._base import (
    Failure,
    Operation,
    Param,
    Request,
    Response,
    Timestamp,
    admin,
    doc,
    required,
)

__all__ = [
    "OPERATIONS",
    "TAGS",
    "Tenant",
    "TenantCreateRequest",
    "TenantList",
    "TenantWithAdmin",
    "tenant_view",
    "tenant_with_admin",
]

TAGS = {
    "tenants": "Tenants: trust domains of their own, each served under `/t/<name>/` with "
    "every route of the API. Managed by the default tenant's admins only.",
}

_TENANTS = "admin:tenants:*"
_Text = str | None


class TenantCreateRequest(Request):
    name: Annotated[
        _Text,
        required(
            "1-63 lowercase letters, digits and hyphens, not starting or ending with a "
            "hyphen; `default` is the default tenant's. Never given to another tenant."
        ),
    ] = None
    trust_domain: Annotated[
        _Text,
        doc(
            "The tenant's SPIFFE trust domain. Absent: `<name>.<the default tenant's trust "
            "domain>`."
        ),
    ] = None


class Tenant(Response):
    name: Annotated[str, doc("The tenant's name, in its URLs: `/t/<name>/`.")]
    trust_domain: Annotated[str, doc("Its SPIFFE trust domain (its agents' IDs).")]
    issuer: Annotated[str, doc("The `iss` of its tokens.")]
    base_path: Annotated[str, doc("Where its API is served: `/t/<name>`.")]
    status: Annotated[str, doc("`removed` once removed.", enum=["active", "removed"])]
    created_at: Timestamp
    created_by: Annotated[str, doc("Who created it.")]


class TenantWithAdmin(Tenant):
    admin_name: Annotated[str, doc("The tenant's first operator (role `admin`).")]
    admin_secret: Annotated[
        str,
        doc(
            "That operator's secret, shown only this once: it signs in at "
            "`POST /t/<name>/v1/operator/auth`."
        ),
    ]


class TenantList(Response):
    tenants: list[Tenant]
    total: Annotated[int, doc("Number of tenants besides the default one, removed included.")]


def tenant_view(record: TenantRecord, base_issuer: str) -> Tenant:
    return Tenant(
        name=record.name,
        trust_domain=record.trust_domain,
        issuer=tenant_issuer(base_issuer, record.name),
        base_path=f"{TENANT_PATH_PREFIX}{record.name}",
        status=record.status,
        created_at=format_rfc3339_seconds(record.created_at),
        created_by=record.created_by,
    )


def tenant_with_admin(
    record: TenantRecord, base_issuer: str, admin_name: str, secret: str
) -> TenantWithAdmin:
    view = tenant_view(record, base_issuer)
    return TenantWithAdmin(
        name=view.name,
        trust_domain=view.trust_domain,
        issuer=view.issuer,
        base_path=view.base_path,
        status=view.status,
        created_at=view.created_at,
        created_by=view.created_by,
        admin_name=admin_name,
        admin_secret=secret,
    )


_NAME = Param("name", "path", {"type": "string"}, "The tenant's name.", True)

OPERATIONS = (
    Operation(
        "POST /v1/admin/tenants",
        "createTenant",
        "tenants",
        "Create a tenant",
        "Creates a tenant: its trust domain, its keys (signing keys and audit log key, "
        "made here and never again), and its first operator `admin`, whose secret is "
        "shown once, here. From then on the tenant's whole API is served under "
        "`/t/<name>/` (its JWKS at `/t/<name>/.well-known/jwks.json`) by every broker "
        "process that has its key directory. A tenant whose creation stopped half-way is "
        "finished by asking again.",
        admin(_TENANTS),
        TenantWithAdmin,
        status=201,
        request=TenantCreateRequest,
        commits=True,
        errors=(
            Failure("invalid_request", "a malformed name or trust domain, or `default`"),
            Failure("conflict", "the name or trust domain is taken, or the tenant is complete"),
            Failure(
                "service_unavailable",
                "the tenant's keys cannot be made, or, made by an earlier request, are "
                "missing or do not open on this broker (the `denial_id` names the audit "
                "event)",
            ),
        ),
    ),
    Operation(
        "GET /v1/admin/tenants",
        "listTenants",
        "tenants",
        "List tenants",
        "Every tenant besides the default one, active and removed, by name.",
        admin(_TENANTS),
        TenantList,
    ),
    Operation(
        "DELETE /v1/admin/tenants/{name}",
        "removeTenant",
        "tenants",
        "Remove a tenant",
        "Stops serving the tenant at once (within a second on every replica): its "
        "credentials are refused everywhere. Its records stay, and its name and trust domain "
        "are never reused.",
        admin(_TENANTS),
        Tenant,
        parameters=(_NAME,),
        commits=True,
        errors=(Failure("not_found", "no active tenant has this name"),),
    ),
)
