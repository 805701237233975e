"""The OpenAPI 3.1 document of the HTTP API, served at ``/v1/openapi.json``.

Generated, not written: the operations come from :data:`tasklease.http.wire.OPERATIONS`
and every named schema from the msgspec Structs of :mod:`tasklease.http.wire` (through
``msgspec.json.schema_components``), with their docstrings and field descriptions. What
this module adds is what the declarations imply:

* a request field is required when it is marked :func:`~tasklease.http.wire._base.required`
  (the core refuses the request without it), a response field unless its default is
  ``UNSET`` (every other field is always sent);
* the failures every route of its kind shares (a malformed body, a bad token, the wrong
  kind of token, a write that could not be made durable, the last-resort 500) join the
  route's own, one RFC 9457 problem response per status, each code with its reason
  (``x-error-codes``); statuses come from :data:`tasklease.http.problems.STATUS_BY_CODE`.

``tests/http/test_openapi.py`` holds the document to the running application, and
``docs/api.md`` is rendered from it by ``scripts/gen_api_docs.py``.
"""

from __future__ import annotations

import copy
import functools
from http import HTTPStatus
from typing import Any

import msgspec

from tasklease.http import wire
from tasklease.http.problems import STATUS_BY_CODE
from tasklease.http.wire import Body, Failure, OneOf, Operation

__all__ = ["API_VERSION", "WWW_AUTHENTICATE", "failures", "openapi_document", "openapi_json"]

API_VERSION = "v1"
"""The version of the HTTP API the document describes (its paths' ``/v1``)."""

Schema = dict[str, Any]
_PROBLEM_MEDIA = "application/problem+json"
_CHALLENGE_ERROR = r'(, error="[a-z_]+"(, scope="[\x21\x23-\x5b\x5d-\x7e ]+")?)?'
WWW_AUTHENTICATE = (
    rf'^Bearer realm="tasklease"{_CHALLENGE_ERROR}, '
    rf'DPoP realm="tasklease"{_CHALLENGE_ERROR}, algs="EdDSA"$'
    r'|^Basic realm="tasklease", charset="UTF-8"$'
)
"""The pattern of the challenges every 401, and a 403 for want of scope, carry (RFC 6750
section 3, RFC 9449 section 7.1): both schemes, the error code (and for
``insufficient_scope`` the scope) in the scheme the failed credential came with. The
token endpoint answers an app that tried HTTP Basic with a ``Basic`` challenge instead
(RFC 6749 section 5.2, ``invalid_client``)."""


def _ref(name: str) -> Schema:
    return {"$ref": wire.REF.format(name=name)}


# --- schemas ------------------------------------------------------------------------------


def _is_required_request_field(field: msgspec.inspect.Field) -> bool:
    kind = field.type
    return isinstance(kind, msgspec.inspect.Metadata) and bool((kind.extra or {}).get("required"))


def _struct_schemas() -> dict[str, Schema]:
    _, schemas = msgspec.json.schema_components(wire.SHAPES, ref_template=wire.REF)
    for shape in wire.SHAPES:
        schema = schemas[shape.__name__]
        properties: dict[str, Schema] = schema["properties"]
        if issubclass(shape, wire.Response):
            schema["required"] = [
                f.encode_name
                for f in msgspec.structs.fields(shape)
                if f.default is not msgspec.UNSET
            ]
            for prop in properties.values():
                prop.pop("default", None)  # sent as it is, not filled in by the reader
        else:
            info = msgspec.inspect.type_info(shape)
            if not isinstance(info, msgspec.inspect.StructType):
                raise TypeError(f"{shape.__name__} is not a Struct")
            schema["required"] = [
                f.encode_name for f in info.fields if _is_required_request_field(f)
            ]
        for name, prop in properties.items():
            if "$ref" in prop:  # a mapping documented by a Struct's shape: keep the reference
                properties[name] = {k: v for k, v in prop.items() if k in ("$ref", "description")}
    return schemas


def _named_schema(response: OneOf | Body) -> Schema:
    if isinstance(response, OneOf):
        return {"oneOf": [_ref(shape.__name__) for shape in response.shapes]}
    return dict(response.schema)


def _schemas() -> dict[str, Schema]:
    schemas = _struct_schemas()
    for op in wire.OPERATIONS:
        if isinstance(op.response, OneOf | Body):
            schemas[op.response.name] = _named_schema(op.response)
    return schemas


# --- failures -----------------------------------------------------------------------------

_MALFORMED = Failure(
    "invalid_request", "the body is empty, not JSON, or a field has the wrong JSON type"
)
_REFUSALS_SPENT = (
    "the client address (an IPv6 one by its /64) has spent its budget of audited "
    "refusals; the `denial_id` names the one audit event of the run"
)
_SIGN_IN_LIMITS = {
    "admin": (
        "too many sign-ins from this client address: the admin secret's and operators' "
        "share `admin_auth_burst` and `admin_auth_rate`; the `denial_id` names the one "
        "`admin_auth_rate_limited` audit event of the run"
    ),
    "app": (
        "too many app sign-ins from this client address: `POST /v1/app/auth` and client "
        "credentials at `POST /v1/oauth/token` share `app_auth_burst` and `app_auth_rate`; "
        "the `denial_id` names the one `app_auth_rate_limited` audit event of the run"
    ),
}
_CONTROL = Failure(
    "invalid_request",
    "a string holds a control character (C0, DEL or C1; line breaks only in PEM fields)",
)


def failures(op: Operation) -> list[Failure]:
    """The route's own failures and those every route of its kind shares, one per code,
    in status order."""
    found: list[Failure] = []
    # The sign-ins have limits of their own (http/ratelimit.py limit_sign_in), and every
    # route: a client that spent its budget of audited refusals is answered 429 before any
    # work (RefusalGate).
    if op.sign_in_limit:
        found.append(Failure("rate_limited", _SIGN_IN_LIMITS[op.sign_in_limit]))
    found.append(Failure("rate_limited", _REFUSALS_SPENT))
    if op.request is not None:
        found.append(_MALFORMED)
        found.append(
            Failure("request_timeout", "the body did not arrive within `http_body_timeout`")
        )
        found.append(Failure("payload_too_large", "the body exceeds the broker's body limit"))
    # Every route: the edge refuses a control character in any path, query string or
    # body, also a body sent to a route that reads none (http/middleware.py).
    found.append(_CONTROL)
    if op.auth.kind:
        found.append(
            Failure(
                "unauthorized",
                "the bearer token is missing, malformed, invalid, expired or revoked",
            )
        )
    if op.auth.scope is not None:
        found.append(
            Failure(
                "insufficient_scope",
                f"the token is not an {op.auth.kind} token, or lacks `{op.auth.scope}`",
            )
        )
    if op.auth.kind == "agent":
        found.append(Failure(op.auth.refusal, "the token is an admin or app token"))
    found.extend(op.errors)
    if op.commits or op.auth.kind:
        found.append(
            Failure("service_unavailable", "the audit event or state change could not be stored")
        )
    found.append(Failure("internal_error", "an unexpected failure"))
    merged: dict[str, str] = {}
    for failure in found:
        merged[failure.code] = (
            f"{merged[failure.code]}; or {failure.when}" if failure.code in merged else failure.when
        )
    order = list(STATUS_BY_CODE)
    return [
        Failure(code, merged[code])
        for code in sorted(merged, key=lambda c: (STATUS_BY_CODE[c], order.index(c)))
    ]


def _error_responses(op: Operation) -> dict[str, Any]:
    by_status: dict[int, list[Failure]] = {}
    for failure in failures(op):
        by_status.setdefault(STATUS_BY_CODE[failure.code], []).append(failure)
    responses: dict[str, Any] = {}
    for status, found in by_status.items():
        response: dict[str, Any] = {
            "description": "; ".join(f"`{f.code}`: {f.when}" for f in found),
            "content": {_PROBLEM_MEDIA: {"schema": _ref("Problem")}},
            "x-error-codes": [{"error_code": f.code, "when": f.when} for f in found],
        }
        if status in (401, 403):
            response["headers"] = {
                "WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}
            }
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        responses[str(status)] = response
    return responses


# --- operations -----------------------------------------------------------------------------


def _success(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": HTTPStatus(op.status).phrase}
    if op.response is None:
        return success
    if isinstance(op.response, Body):
        name, media = op.response.name, op.response.media
    elif isinstance(op.response, OneOf):
        name, media = op.response.name, "application/json"
    else:
        name, media = op.response.__name__, "application/json"
    success["content"] = {media: {"schema": _ref(name)}}
    return success


def _operation(op: Operation) -> dict[str, Any]:
    auth = op.auth
    body: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": f"{op.description}\n\n**Authentication:** {auth.description}",
        "security": [{"bearerAuth": [auth.scope] if auth.scope else []}] if auth.kind else [],
        "x-token-kind": auth.kind or "none",
    }
    if op.parameters:
        body["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required,
                "description": p.description,
                "schema": dict(p.schema),
            }
            for p in op.parameters
        ]
    if op.request is not None:
        media = ("application/x-www-form-urlencoded",) if op.form else ()
        body["requestBody"] = {
            "required": True,
            "content": {
                m: {"schema": _ref(op.request.__name__)} for m in (*media, "application/json")
            },
        }
    body["responses"] = {str(op.status): _success(op), **_error_responses(op)}
    return body


def _build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in wire.OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tasklease",
            # The API's version, not the release's: like the anonymous health answer
            # (decision 56), a public document does not name the build to attack.
            "version": API_VERSION,
            "summary": "A credential broker for AI agents, wire-compatible with AgentWrit v2.",
            "description": "Every agent instance gets its own identity at spawn, carries only a "
            "minute-scale token scoped to its task, is re-validated on every request, can be "
            "revoked at four levels, and every credential operation is audited. Errors are "
            "RFC 9457 problem details (`application/problem+json`) with a stable "
            "`error_code`; a 503 says in `Retry-After` when to try again. Every response "
            "carries an `X-Request-ID` header. No string of a request (path, query, form or "
            "JSON) may hold a control character (C0, DEL, C1), except line breaks in PEM "
            "fields, and a request gives `Content-Type` and `Authorization` each at most "
            "once: such a request is "
            "refused with 400 `invalid_request` on every route.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name, "description": text} for name, text in wire.TAGS.items()],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A broker-issued EdDSA JWT: an agent token from "
                    "`/v1/register`, an admin token from `/v1/admin/auth` or an app token "
                    "from `/v1/app/auth`. Requirements list the scope a route needs. A "
                    "DPoP-bound agent token is sent as `Authorization: DPoP <token>` with "
                    "its proof (RFC 9449).",
                }
            },
            "headers": {
                "WWWAuthenticate": {
                    "description": "The authentication schemes (RFC 6750 section 3, RFC 9449 "
                    "section 7.1). A presented credential that failed adds `error` to the "
                    "challenge of its scheme: `invalid_token`, `invalid_request` (a malformed "
                    "header), `invalid_dpop_proof`, `use_dpop_nonce`, or `insufficient_scope` "
                    "with the `scope` needed (on 403). Without a credential, no `error`: "
                    '`Bearer realm="tasklease", DPoP realm="tasklease", algs="EdDSA"`. The '
                    "token endpoint answers an app's failed HTTP Basic client authentication "
                    'with `Basic realm="tasklease", charset="UTF-8"` (RFC 6749 section 5.2).',
                    "schema": {"type": "string", "pattern": WWW_AUTHENTICATE},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                },
            },
            "schemas": _schemas(),
        },
    }


@functools.cache
def _cached() -> dict[str, Any]:
    return _build()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API, as a fresh JSON-ready dict."""
    return copy.deepcopy(_cached())


@functools.cache
def openapi_json() -> bytes:
    """The document encoded once, as ``/v1/openapi.json`` serves it."""
    return msgspec.json.encode(_cached()) + b"\n"
