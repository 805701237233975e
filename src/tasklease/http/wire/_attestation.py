"""Workload attestation on the wire: the attestors operators configure, and their test."""

from __future__ import annotations

import json
from typing import Annotated, Any

from tasklease.core.attestation import AttestorTest
from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.records import AttestorRecord
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
    "Attestor",
    "AttestorAdded",
    "AttestorCreateRequest",
    "AttestorList",
    "AttestorTestRequest",
    "AttestorTestResult",
    "RemovedAttestor",
    "attestor_test_result",
    "attestor_view",
]

TAGS = {
    "attestation": "Workload attestation: the attestors that let agents register with "
    "platform evidence (Kubernetes, SPIFFE, CI and cloud OIDC) instead of a launch token, "
    "and the policy that maps attested facts to a ceiling (docs/attestation.md).",
}

# Declaring whose evidence to trust is managing trust anchors, as signing keys are.
_SCOPE = "admin:keys:*"
_Text = str | None
_SETTINGS = (
    "The type's configuration. `k8s_sat`: `issuer`, `cluster`, `jwks` (a JWK Set's JSON "
    "text) or `jwks_uri` or neither (OIDC discovery from `issuer`), `ca_pem`, "
    "`jwks_refresh`, `jwks_max_stale`, `max_age`, `require_pod`. `jwt_svid`: "
    "`trust_domain`, `bundle` (a SPIFFE bundle's JSON text) or `federation: true`, "
    "`path`, `max_age`. `oidc`: `issuer`, `claims` (claim name to pattern, all required), "
    "`subject`, `facts`, `algorithms`, and the key settings of `k8s_sat`."
)
_POLICY = (
    "Rules, first match wins: `{match: {fact: pattern}, scope: [...], ttl, lifetime, "
    "resources, principal}`. A pattern is equality or a glob (`*`, `?`)."
)


class AttestorCreateRequest(Request):
    name: Annotated[
        _Text,
        required("The attestor's name: 1-63 of a-z 0-9 - _. Adding it again replaces it."),
    ] = None
    type: Annotated[_Text, required("`k8s_sat`, `jwt_svid` or `oidc`.")] = None
    settings: Annotated[dict[str, Any] | None, required(_SETTINGS)] = None
    policy: Annotated[list[dict[str, Any]] | None, required(_POLICY)] = None
    app_id: Annotated[
        _Text,
        doc("The app whose agents it registers (its policy within the app's scopes)."),
    ] = None


class AttestorTestRequest(Request):
    evidence: Annotated[
        _Text, required("Sample evidence (a token) to verify; it is not consumed.")
    ] = None


class Attestor(Response):
    name: Annotated[str, doc("Its name.")]
    type: Annotated[str, doc("Its type.", enum=["k8s_sat", "jwt_svid", "oidc"])]
    settings: Annotated[dict[str, Any], doc("Its configuration, as given.")]
    policy: Annotated[list[dict[str, Any]], doc("Its rules, as checked.")]
    app_id: Annotated[str | None, doc("The app whose agents it registers; null: the tenant's.")]
    created_at: Timestamp
    created_by: Annotated[str, doc("Who configured it.")]


class AttestorAdded(Attestor):
    replaced: Annotated[bool, doc("Whether an attestor of that name was replaced.")]


class AttestorList(Response):
    attestors: list[Attestor]
    total: int


class RemovedAttestor(Response):
    name: Annotated[str, doc("The attestor removed: its evidence is refused from now on.")]
    removed: Annotated[bool, doc("Always true.")]


class AttestorTestResult(Response):
    attest: Annotated[
        dict[str, Any], doc("The `attest` claim a token registered with it would carry.")
    ]
    matched: Annotated[bool, doc("Whether a policy rule matched (else a registration fails).")]
    rule: Annotated[int | None, doc("The index of the rule that matched.")]
    scope: Annotated[list[str], doc("The scope ceiling it grants.")]
    ttl: Annotated[int | None, doc("The longest lifetime of one token, in seconds.")]
    lifetime: Annotated[int | None, doc("The registration's lifetime ceiling, in seconds.")]
    resources: Annotated[list[str], doc("The resources its tokens may be for.")]
    principal: Annotated[str | None, doc("The principal its work is done for.")]
    missed: Annotated[str, doc("When no rule matched: `index:fact` of each rule's first miss.")]
    valid_until: Timestamp


def attestor_view(record: AttestorRecord) -> dict[str, Any]:
    """The fields of :class:`Attestor` for ``record``."""
    return {
        "name": record.name,
        "type": record.type,
        "settings": json.loads(record.settings),
        "policy": json.loads(record.policy),
        "app_id": record.app_id or None,
        "created_at": format_rfc3339_seconds(record.created_at),
        "created_by": record.created_by,
    }


def attestor_test_result(result: AttestorTest, principal: str) -> AttestorTestResult:
    grant = result.grant
    return AttestorTestResult(
        attest=result.claim.as_json(),
        matched=grant is not None,
        rule=None if grant is None else grant.rule,
        scope=[] if grant is None else list(grant.scope),
        ttl=None if grant is None else grant.ttl,
        lifetime=None if grant is None else grant.lifetime,
        resources=[] if grant is None else list(grant.resources),
        principal=None if grant is None else (grant.principal or principal),
        missed=result.missed,
        valid_until=format_rfc3339_seconds(result.valid_until),
    )


_NAME = Param("name", "path", {"type": "string"}, "The attestor's name.", True)
_NOT_FOUND = Failure("not_found", "no attestor of this name")

OPERATIONS = (
    Operation(
        "POST /v1/admin/attestors",
        "addAttestor",
        "attestation",
        "Configure a workload attestor",
        "Declares an attestor: its type, whose evidence it trusts and how (issuer, keys, "
        "claim rules), and its policy (which attested facts earn which scope ceiling, TTL "
        "and lifetime). Adding a name again replaces it. Evidence must name this broker's "
        "issuer as its audience. Needs `admin:keys:*`.",
        admin(_SCOPE),
        AttestorAdded,
        status=201,
        request=AttestorCreateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "a malformed name, an unknown type, settings the type refuses (an issuer "
                "whose keys would be fetched over plain HTTP, an algorithm outside the "
                "allow-list, `jwks` and `jwks_uri` both), or a malformed policy",
            ),
            Failure("not_found", "`app_id` names no active app"),
        ),
    ),
    Operation(
        "GET /v1/admin/attestors",
        "listAttestors",
        "attestation",
        "List workload attestors",
        "Every configured attestor by name, with its settings and policy.",
        admin(_SCOPE),
        AttestorList,
    ),
    Operation(
        "GET /v1/admin/attestors/{name}",
        "getAttestor",
        "attestation",
        "Show a workload attestor",
        "One attestor, with its settings and policy.",
        admin(_SCOPE),
        Attestor,
        parameters=(_NAME,),
        errors=(_NOT_FOUND,),
    ),
    Operation(
        "DELETE /v1/admin/attestors/{name}",
        "removeAttestor",
        "attestation",
        "Remove a workload attestor",
        "From now on its evidence is refused. Agents it registered keep their tokens: "
        "revoke `attest:<type>:<name>:<subject>` at level `chain` to end them.",
        admin(_SCOPE),
        RemovedAttestor,
        parameters=(_NAME,),
        commits=True,
        errors=(_NOT_FOUND,),
    ),
    Operation(
        "POST /v1/admin/attestors/{name}/test",
        "testAttestor",
        "attestation",
        "Test evidence against an attestor",
        "Verifies sample evidence as a registration would (signature, issuer, audience, "
        "time, claim rules) without consuming it, and answers the `attest` claim and the "
        "ceiling its policy would grant. A refusal answers 400 with its precise reason (the "
        "caller is an operator); every test is audited.",
        admin(_SCOPE),
        AttestorTestResult,
        request=AttestorTestRequest,
        parameters=(_NAME,),
        errors=(
            _NOT_FOUND,
            Failure("invalid_request", "the evidence is refused; `detail` says why"),
        ),
    ),
)
