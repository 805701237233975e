"""Structured grants and issuance policy on the wire: operators' grant types, counting a
grant's calls, and the policy set in force (docs/grants.md, docs/policy.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.policy import CompiledPolicies, PolicyError
from tasklease.core.records import GrantTypeRecord
from tasklease.http.wire._base import (
    PUBLIC,
    Failure,
    Operation,
    Param,
    Request,
    Response,
    Timestamp,
    admin,
    doc,
    multiline,
    required,
)

__all__ = [
    "DETAILS_FAILURE",
    "DETAILS_IN",
    "DETAILS_OUT",
    "OPERATIONS",
    "TAGS",
    "CallCountRequest",
    "CallCountResponse",
    "GrantType",
    "GrantTypeCreateRequest",
    "GrantTypeList",
    "PolicyView",
    "RemovedGrantType",
    "details_out",
    "grant_type_view",
    "policy_view",
]

TAGS = {
    "grants": "Structured grants (RFC 9396 `authorization_details`) and issuance policy: "
    "operators' grant types, call budgets (`max_calls`) counted for resource servers, and "
    "the tenant's Cedar policies in force (docs/grants.md, docs/policy.md).",
}

# Grant types and policies decide what authority exists, as trust anchors do.
_SCOPE = "admin:keys:*"
_Text = str | None

DETAILS_IN = doc(
    "RFC 9396 structured grants, each `{type, ...}`: `scope` (`{type, scope}`), "
    "`resource_access` (`actions`, `locations`, `datatypes`, `privileges`, `identifier`) "
    "or an operator's type, each with optional `limits` (`max_amount` with `currency`, "
    "`max_calls`, `not_before`/`not_after`, `allowed_values`). Each must be covered by a "
    "grant of the parent (docs/grants.md)."
)
DETAILS_OUT = doc(
    "The structured grants the token carries (RFC 9396 section 7); absent when it has scopes only."
)


DETAILS_FAILURE = Failure(
    "invalid_authorization_details",
    "a grant of an unknown type, with unknown or malformed members, or one its type's "
    "schema refuses (RFC 9396 section 5)",
)


def details_out(details: Any) -> list[dict[str, Any]] | UnsetType:
    """A response's ``authorization_details``: the grants, or absent for none."""
    return [dict(d) for d in details] if details else UNSET


class GrantTypeCreateRequest(Request):
    name: Annotated[
        _Text,
        required(
            "The type's name (the grants' `type`): a letter, then up to 127 letters, digits "
            "and `_ . : / -`; not `scope` or `resource_access`."
        ),
    ] = None
    json_schema: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(
            description="A JSON Schema (2020-12) object schema every grant of the type must "
            "match, `limits` aside.",
            extra={"required": True},
        ),
    ] = msgspec.field(default=None, name="schema")
    narrowing: Annotated[
        dict[str, str] | None,
        doc(
            "How a grant narrows, member by member: `equal`, `subset`, `at_most`, "
            "`at_least`, `prefix` (a string starting with the parent's) or `path` (the "
            "parent's location or one below it, at a `/`; dot segments and encoded "
            "separators never narrow); a member not named must be equal."
        ),
    ] = None
    description: Annotated[_Text, doc("What the type grants, for operators.")] = None


class GrantType(Response):
    name: Annotated[str, doc("The type's name.")]
    json_schema: Annotated[dict[str, Any], doc("Its JSON Schema.")] = msgspec.field(name="schema")
    narrowing: Annotated[dict[str, str], doc("How its grants narrow, member by member.")]
    description: Annotated[str, doc("What it grants.")]
    created_at: Timestamp
    created_by: Annotated[str, doc("Who added it.")]


class GrantTypeList(Response):
    grant_types: list[GrantType]
    total: int


class RemovedGrantType(Response):
    name: Annotated[str, doc("The type removed: requests naming it are refused from now on.")]
    removed: Annotated[bool, doc("Always true.")]


def grant_type_view(record: GrantTypeRecord) -> GrantType:
    return GrantType(
        name=record.name,
        json_schema=json.loads(record.schema),
        narrowing=json.loads(record.narrowing),
        description=record.description,
        created_at=format_rfc3339_seconds(record.created_at),
        created_by=record.created_by,
    )


class CallCountRequest(Request):
    """One call a resource server is about to serve, to count against the token's grant
    that allows it (its `max_calls`)."""

    token: Annotated[
        _Text, required("The agent access token presented (JWS or `tlr_` by-reference).")
    ] = None
    audience: Annotated[_Text, doc("The resource server's own identifier (RFC 8707).")] = None
    type: Annotated[_Text, required("The grant type the call needs.")] = None
    scope: Annotated[_Text, doc("For a `scope` grant: the scope the call needs.")] = None
    action: Annotated[_Text, doc("The action (one of the grant's `actions`).")] = None
    location: Annotated[_Text, doc("The location (at or below one of the grant's).")] = None
    datatype: Annotated[_Text, doc("The datatype.")] = None
    privilege: Annotated[_Text, doc("The privilege.")] = None
    identifier: Annotated[_Text, doc("The identifier.")] = None
    amount: Annotated[
        str | int | None, doc("The call's amount (a decimal), within `max_amount`.")
    ] = None
    currency: Annotated[_Text, doc("The amount's currency (ISO 4217).")] = None
    values: Annotated[
        dict[str, str | int] | None, doc("The call's values of the fields `allowed_values` names.")
    ] = None
    fields: Annotated[
        dict[str, Any] | None, doc("An operator's type's members the call needs.")
    ] = None
    client_cert: Annotated[
        _Text, multiline("The client certificate (PEM) of the resource server's request.")
    ] = None
    client_cert_thumbprint: Annotated[_Text, doc("Its `x5t#S256` instead.")] = None
    dpop: Annotated[_Text, doc("The DPoP proof (RFC 9449) the resource server received.")] = None
    htm: Annotated[_Text, doc("The HTTP method of the resource server's request.")] = None
    htu: Annotated[_Text, doc("Its URI (for `dpop`).")] = None


class CallCountResponse(Response):
    counted: Annotated[
        bool, doc("False when a grant without `max_calls` allows the call: nothing to count.")
    ]
    remaining: Annotated[int | None, doc("Calls the grant has left after this one.")]
    max_calls: Annotated[int | None, doc("The grant's `max_calls`.")]
    sub: Annotated[str, doc("The agent holding the token.")]
    jti: Annotated[str, doc("The token's id.")]


class PolicyView(Response):
    """The tenant's issuance policy in force (Cedar)."""

    origin: Annotated[str, doc("Where it came from: `built-in default` or its directory.")]
    digest: Annotated[str, doc("SHA-256 of its files (hex).")]
    policies: Annotated[list[str], doc("The `@id` of each policy, in order.")]
    files: Annotated[dict[str, str], doc("Each file's name and Cedar text.")]
    failure: Annotated[
        str | None,
        doc("Why the source's latest text is not in force (it was refused whole); null: it is."),
    ]
    schema: Annotated[str, doc("The Cedar schema policies are checked against.")]


def policy_view(current: CompiledPolicies, failure: PolicyError | None, schema: str) -> PolicyView:
    return PolicyView(
        origin=current.origin,
        digest=current.digest,
        policies=list(current.ids),
        files=dict(current.files),
        failure=None if failure is None else str(failure),
        schema=schema,
    )


_NAME = Param("name", "path", {"type": "string"}, "The grant type's name.", True)
_NOT_FOUND = Failure("not_found", "no grant type of this name")

OPERATIONS = (
    Operation(
        "POST /v1/admin/grant-types",
        "addGrantType",
        "grants",
        "Add a grant type",
        "Registers a structured grant type for this tenant: the JSON Schema its grants "
        "must match and how one narrows (member by member). Requests naming it are checked "
        "against both from then on. Needs `admin:keys:*`.",
        admin(_SCOPE),
        GrantType,
        status=201,
        request=GrantTypeCreateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "a malformed or built-in name, a schema that is not a JSON Schema object "
                "schema, or an unknown narrowing operator",
            ),
            Failure("conflict", "the type exists (remove it first)"),
        ),
    ),
    Operation(
        "GET /v1/admin/grant-types",
        "listGrantTypes",
        "grants",
        "List grant types",
        "This tenant's grant types by name (the built-in `scope` and `resource_access` "
        "are not listed).",
        admin(_SCOPE),
        GrantTypeList,
    ),
    Operation(
        "GET /v1/admin/grant-types/{name}",
        "getGrantType",
        "grants",
        "Show a grant type",
        "One grant type with its schema and narrowing rule.",
        admin(_SCOPE),
        GrantType,
        parameters=(_NAME,),
        errors=(_NOT_FOUND,),
    ),
    Operation(
        "DELETE /v1/admin/grant-types/{name}",
        "removeGrantType",
        "grants",
        "Remove a grant type",
        "Requests naming it are refused from now on; tokens already carrying its grants "
        "narrow them only to identical ones.",
        admin(_SCOPE),
        RemovedGrantType,
        parameters=(_NAME,),
        commits=True,
        errors=(_NOT_FOUND,),
    ),
    Operation(
        "POST /v1/token/calls",
        "countCall",
        "grants",
        "Count a call against a grant's max_calls",
        "For resource servers: validates the token as `/v1/token/validate` does, reads its "
        "live state from the store (high assurance), finds the grant that allows the call "
        "and takes one call from its budget and from every budget it was narrowed from, "
        "all or none (so delegation never multiplies calls). A grant without `max_calls` "
        "allows the call uncounted. A token bound only to a client certificate "
        "(`cnf.x5t#S256` without `jkt`) is counted only for an authenticated resource "
        "server: `Authorization` with an app token (for its own agents' tokens) or an "
        "operator's token with `admin:revoke:*`, as for introspection; the count's audit "
        "event names it. Refusals carry a `denial_id`.",
        PUBLIC,
        CallCountResponse,
        request=CallCountRequest,
        commits=True,
        errors=(
            Failure(
                "unauthorized",
                "the token is invalid, expired, revoked or not for you; the `Authorization` "
                "credential is refused; or a certificate-bound token's count came without one",
            ),
            Failure("insufficient_scope", "no grant of the token allows the call"),
            Failure(
                "forbidden",
                "the grant's calls (or a delegator's) are used up; or an app asked to count "
                "a certificate-bound token of another app's agent",
            ),
        ),
    ),
    Operation(
        "GET /v1/admin/policy",
        "getPolicy",
        "grants",
        "Show the issuance policy in force",
        "The tenant's Cedar policies in force (files, `@id`s, digest), why the source's "
        "latest text was refused if it was, and the schema. Needs `admin:keys:*`.",
        admin(_SCOPE),
        PolicyView,
    ),
    Operation(
        "POST /v1/admin/policy/reload",
        "reloadPolicy",
        "grants",
        "Reload the issuance policy now",
        "Reads the tenant's policy directory now (it is also read every few seconds): a "
        "set that parses and matches the schema is put in force, a broken one refused "
        "whole (the set in force stays; `failure` says why). Audited. Needs "
        "`admin:keys:*`.",
        admin(_SCOPE),
        PolicyView,
    ),
)
