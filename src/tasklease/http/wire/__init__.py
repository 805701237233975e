"""The HTTP API's contract, declared once: every request and response body as a msgspec
Struct, and every operation (route, who may call it, what it takes and answers, how it
fails) in :data:`OPERATIONS`.

The route handlers decode requests into these Structs and encode responses from them;
:mod:`tasklease.http.openapi` generates the OpenAPI document from the same declarations.
A field's description is its ``msgspec.Meta``; a shape's is its docstring. One module
per area of the API.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tasklease.http.wire import (
    _apps,
    _attestation,
    _audit,
    _broker,
    _exchange,
    _federation,
    _grants,
    _inventory,
    _launch,
    _oauth,
    _offline,
    _operators,
    _tenants,
    _tokens,
    _trust,
)
from tasklease.http.wire._apps import (
    App,
    AppAuthRequest,
    AppAuthResponse,
    AppCreateRequest,
    AppList,
    AppUpdateRequest,
    AppWithSecret,
    DeregisteredApp,
    app_view,
    app_with_secret,
    deregistered_app,
)
from tasklease.http.wire._attestation import (
    Attestor,
    AttestorAdded,
    AttestorCreateRequest,
    AttestorList,
    AttestorTestRequest,
    AttestorTestResult,
    RemovedAttestor,
    attestor_test_result,
    attestor_view,
)
from tasklease.http.wire._audit import (
    AuditLogKeys,
    ConsistencyProof,
    InclusionProof,
    LogKeyRotationResponse,
    b64_hashes,
)
from tasklease.http.wire._base import (
    REF,
    Auth,
    Body,
    Failure,
    OneOf,
    Operation,
    Param,
    Request,
    Response,
)
from tasklease.http.wire._broker import (
    JWK,
    JWKS,
    HealthResponse,
    LiveResponse,
    ReadyResponse,
    RevocationEntry,
    RevocationList,
    RevocationSync,
    revocation_entry,
)
from tasklease.http.wire._exchange import TokenExchangeRequest, TokenExchangeResponse
from tasklease.http.wire._federation import (
    Federation,
    FederationAdded,
    FederationCreateRequest,
    FederationList,
    RemovedFederation,
    federation_view,
)
from tasklease.http.wire._grants import (
    CallCountRequest,
    CallCountResponse,
    GrantType,
    GrantTypeCreateRequest,
    GrantTypeList,
    PolicyView,
    RemovedGrantType,
    details_out,
    grant_type_view,
    policy_view,
)
from tasklease.http.wire._inventory import (
    AgentPage,
    AgentView,
    DelegationTree,
    LaunchTokenPage,
    LaunchTokenView,
    RevocationPage,
    TaskDetail,
    TokenNode,
    agent_page,
    agent_view,
    delegation_tree,
    launch_token_page,
    revocation_page,
    task_detail,
)
from tasklease.http.wire._launch import LaunchTokenPolicy, LaunchTokenRequest, LaunchTokenResponse
from tasklease.http.wire._oauth import AuthorizationServerMetadata
from tasklease.http.wire._offline import (
    OfflineReportRefusal,
    OfflineReportRequest,
    OfflineReportResponse,
    offline_report_response,
)
from tasklease.http.wire._operators import (
    AdminAuthRequest,
    AdminAuthResponse,
    AuditEvent,
    AuditEventPage,
    KeyRetirementResponse,
    KeyRotationResponse,
    Operator,
    OperatorAuthRequest,
    OperatorAuthResponse,
    OperatorCreateRequest,
    OperatorList,
    OperatorRotateRequest,
    OperatorWithSecret,
    RemovedOperator,
    RevokeRequest,
    RevokeResponse,
    audit_event,
    operator_view,
    operator_with_secret,
    removed_operator,
)
from tasklease.http.wire._problem import ERROR_CODES, Problem
from tasklease.http.wire._tenants import (
    Tenant,
    TenantCreateRequest,
    TenantList,
    TenantWithAdmin,
    tenant_view,
    tenant_with_admin,
)
from tasklease.http.wire._tokens import (
    ActiveToken,
    ChallengeResponse,
    Confirmation,
    DelegateRequest,
    DelegateResponse,
    DelegationRecord,
    InactiveToken,
    InvalidToken,
    RegisterRequest,
    RegisterResponse,
    RenewResponse,
    TokenClaims,
    TokenRequest,
    TokenRevocationResponse,
    ValidateRequest,
    ValidToken,
    delegation_record,
)
from tasklease.http.wire._trust import (
    DiscoveryBinding,
    DiscoveryBindRequest,
    HandshakeAnswer,
    HandshakeOffer,
    HandshakeReceipt,
    HeartbeatRequest,
    HeartbeatResponse,
    MutualCompleteRequest,
    MutualInitiateRequest,
    MutualRespondRequest,
    Peer,
    ResolvedEndpoint,
    ResumeRequest,
    WorkloadIdentityResponse,
)

__all__ = [
    "ERROR_CODES",
    "JWK",
    "JWKS",
    "MULTILINE_FIELDS",
    "OPERATIONS",
    "REF",
    "SHAPES",
    "TAGS",
    "ActiveToken",
    "AdminAuthRequest",
    "AdminAuthResponse",
    "AgentPage",
    "AgentView",
    "App",
    "AppAuthRequest",
    "AppAuthResponse",
    "AppCreateRequest",
    "AppList",
    "AppUpdateRequest",
    "AppWithSecret",
    "Attestor",
    "AttestorAdded",
    "AttestorCreateRequest",
    "AttestorList",
    "AttestorTestRequest",
    "AttestorTestResult",
    "AuditEvent",
    "AuditEventPage",
    "AuditLogKeys",
    "Auth",
    "AuthorizationServerMetadata",
    "Body",
    "CallCountRequest",
    "CallCountResponse",
    "ChallengeResponse",
    "Confirmation",
    "ConsistencyProof",
    "DelegateRequest",
    "DelegateResponse",
    "DelegationRecord",
    "DelegationTree",
    "DeregisteredApp",
    "DiscoveryBindRequest",
    "DiscoveryBinding",
    "Failure",
    "Federation",
    "FederationAdded",
    "FederationCreateRequest",
    "FederationList",
    "GrantType",
    "GrantTypeCreateRequest",
    "GrantTypeList",
    "HandshakeAnswer",
    "HandshakeOffer",
    "HandshakeReceipt",
    "HealthResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "InactiveToken",
    "InclusionProof",
    "InvalidToken",
    "KeyRetirementResponse",
    "KeyRotationResponse",
    "LaunchTokenPage",
    "LaunchTokenPolicy",
    "LaunchTokenRequest",
    "LaunchTokenResponse",
    "LaunchTokenView",
    "LiveResponse",
    "LogKeyRotationResponse",
    "MutualCompleteRequest",
    "MutualInitiateRequest",
    "MutualRespondRequest",
    "OfflineReportRefusal",
    "OfflineReportRequest",
    "OfflineReportResponse",
    "OneOf",
    "Operation",
    "Operator",
    "OperatorAuthRequest",
    "OperatorAuthResponse",
    "OperatorCreateRequest",
    "OperatorList",
    "OperatorRotateRequest",
    "OperatorWithSecret",
    "Param",
    "Peer",
    "PolicyView",
    "Problem",
    "ReadyResponse",
    "RegisterRequest",
    "RegisterResponse",
    "RemovedAttestor",
    "RemovedFederation",
    "RemovedGrantType",
    "RemovedOperator",
    "RenewResponse",
    "Request",
    "ResolvedEndpoint",
    "Response",
    "ResumeRequest",
    "RevocationEntry",
    "RevocationList",
    "RevocationPage",
    "RevocationSync",
    "RevokeRequest",
    "RevokeResponse",
    "TaskDetail",
    "Tenant",
    "TenantCreateRequest",
    "TenantList",
    "TenantWithAdmin",
    "TokenClaims",
    "TokenExchangeRequest",
    "TokenExchangeResponse",
    "TokenNode",
    "TokenRequest",
    "TokenRevocationResponse",
    "ValidToken",
    "ValidateRequest",
    "WorkloadIdentityResponse",
    "agent_page",
    "agent_view",
    "app_view",
    "app_with_secret",
    "attestor_test_result",
    "attestor_view",
    "audit_event",
    "b64_hashes",
    "delegation_record",
    "delegation_tree",
    "deregistered_app",
    "details_out",
    "federation_view",
    "grant_type_view",
    "launch_token_page",
    "offline_report_response",
    "operator_view",
    "operator_with_secret",
    "policy_view",
    "removed_operator",
    "revocation_entry",
    "revocation_page",
    "task_detail",
    "tenant_view",
    "tenant_with_admin",
]

_AREAS = (
    _tokens,
    _exchange,
    _oauth,
    _launch,
    _operators,
    _audit,
    _offline,
    _inventory,
    _apps,
    _broker,
    _trust,
    _tenants,
    _federation,
    _attestation,
    _grants,
)

TAGS: Final[dict[str, str]] = {name: text for area in _AREAS for name, text in area.TAGS.items()}
"""Each group of operations and what it is for, in the order the document lists them."""

OPERATIONS: Final[tuple[Operation, ...]] = tuple(
    sorted(
        (op for area in _AREAS for op in area.OPERATIONS),
        key=lambda op: list(TAGS).index(op.tag),
    )
)
"""Every route of the broker, grouped by tag."""

SHAPES: Final[tuple[type[Request | Response], ...]] = tuple(
    value
    for name in __all__
    if isinstance(value := globals().get(name), type)
    and issubclass(value, Request | Response)
    and value not in (Request, Response)
)
"""Every body Struct: each is a named schema of the document."""


def _multiline_fields() -> frozenset[str]:
    names: set[str] = set()
    for shape in SHAPES:
        if not issubclass(shape, Request):
            continue
        info = msgspec.inspect.type_info(shape)
        if not isinstance(info, msgspec.inspect.StructType):
            raise TypeError(f"{shape.__name__} is not a Struct")
        for field in info.fields:
            kind = field.type
            if isinstance(kind, msgspec.inspect.Metadata) and (kind.extra or {}).get("multiline"):
                names.add(field.encode_name)
    return frozenset(names)


MULTILINE_FIELDS: Final[frozenset[str]] = _multiline_fields()
"""Request fields that may hold line breaks (PEM); see :func:`_base.multiline`."""
