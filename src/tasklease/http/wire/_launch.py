"""Launch tokens on the wire: creating one, by an operator or by an app, and what it
admits."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, UnsetType

from tasklease.core.launch import DEFAULT_MULTI_USES, MAX_USES
from tasklease.http.wire._base import (
    Failure,
    Operation,
    Request,
    Response,
    Timestamp,
    admin,
    app,
    doc,
    required,
)
from tasklease.http.wire._grants import DETAILS_FAILURE

__all__ = [
    "OPERATIONS",
    "TAGS",
    "LaunchTokenPolicy",
    "LaunchTokenRequest",
    "LaunchTokenResponse",
]

TAGS = {"launch tokens": "Launch tokens, which let an agent register."}

_Text = str | None
_Resources = str | list[str] | None


class LaunchTokenRequest(Request):
    agent_name: Annotated[
        _Text, required("A label for the agent(s) it launches, at most 257 characters.")
    ] = None
    allowed_scope: Annotated[
        list[str] | None,
        required(
            "The most an agent registered with it may request; may be absent with "
            "`authorization_details`."
        ),
    ] = None
    authorization_details: Annotated[
        list[dict[str, Any]] | None,
        doc(
            "Structured grants of its ceiling (RFC 9396, docs/grants.md): an agent may ask "
            "for grants each covered by one of these. An app's must be covered by the app's."
        ),
    ] = None
    max_ttl: Annotated[
        int | None,
        doc(
            "Lifetime of the agent's tokens in seconds, above 0 (capped by the broker's "
            "`max_ttl`; default the broker's `default_ttl`)."
        ),
    ] = None
    single_use: Annotated[
        bool | None,
        doc("Whether one registration consumes it (default true); false admits `max_uses`."),
    ] = None
    max_uses: Annotated[
        int | None,
        doc(
            "How many registrations a multi-use launch token (`single_use: false`) admits, "
            f"1 to {MAX_USES} (default {DEFAULT_MULTI_USES}); each takes one use atomically. "
            "Above 1 only with `single_use: false`."
        ),
    ] = None
    ttl: Annotated[
        int | None,
        doc(
            "How long the launch token itself stays valid, in seconds above 0 (default the "
            "broker's `launch_token_ttl`, 30; at most its `launch_token_max_ttl`, 3600)."
        ),
    ] = None
    allow_resume: Annotated[
        bool | None,
        doc(
            "Whether the agents it launches may resume by key after a restart "
            "(`POST /v1/resume`; default true)."
        ),
    ] = None
    resource: Annotated[
        _Resources,
        doc(
            "RFC 8707: the resources (absolute URIs; a string or a list of at most 16) its "
            "agents' tokens may be for; a registration names one of them. Absent: the "
            "broker's first configured audience."
        ),
    ] = None
    audience: Annotated[_Resources, doc("Alias of `resource`; may be logical names.")] = None
    principal: Annotated[
        _Text,
        doc(
            "The human its agents work for, `kind:value` (e.g. `user:alice@example.com`, at "
            "most 256 characters); by default the creator (`admin`, `operator:<name>` or "
            "`app:<app_id>`). Every token of its agents, and every token delegated from "
            "them, carries it."
        ),
    ] = None
    agent_key: Annotated[
        _Text,
        doc(
            "Binds it to one agent: the agent's Ed25519 public key (32 bytes, standard "
            "base64, as `POST /v1/register` takes it). Only a registration presenting and "
            "proving that key is admitted; another key is refused (401) without spending "
            "a use, so whoever copies the launch token cannot register in the agent's place. "
            "Required when the broker's `launch_token_binding` is `required`."
        ),
    ] = None


class LaunchTokenPolicy(Response):
    allowed_scope: Annotated[list[str], doc("The most an agent may request.")]
    max_ttl: Annotated[int, doc("Lifetime of the agent's tokens, in seconds.")]
    single_use: Annotated[bool, doc("Whether one registration consumes it.")]
    allow_resume: Annotated[bool, doc("Whether its agents may resume by key.")]
    authorization_details: (
        Annotated[list[dict[str, Any]], doc("The structured grants of its ceiling.")] | UnsetType
    ) = UNSET
    agent_key: (
        Annotated[str, doc("The agent key it is bound to (base64url of the raw key).")] | UnsetType
    ) = UNSET


class LaunchTokenResponse(Response):
    launch_token: Annotated[str, doc("The launch token (64 hex characters), shown once.")]
    expires_at: Timestamp
    max_uses: Annotated[int, doc("How many registrations it admits (1: single use).")]
    uses_left: Annotated[int, doc("How many registrations it still admits.")]
    policy: LaunchTokenPolicy


_LAUNCH_TOKEN_FAILURES = (
    DETAILS_FAILURE,
    Failure(
        "invalid_request",
        "`agent_name` is missing or longer than 257 characters, `allowed_scope` is "
        "empty or malformed, `principal` is not `kind:value` or names a creator "
        "(`admin`, `operator:`, `app:`, `attestor:`), `ttl`, `max_ttl` or "
        f"`max_uses` is not a positive integer, `max_uses` is above {MAX_USES} or above 1 "
        "without `single_use: false`, `single_use` or `allow_resume` is not a boolean, "
        "`agent_key` is not a base64 Ed25519 public key (or is missing while "
        "`launch_token_binding` is `required`: a `denial_id`), or "
        "`resource` (or `audience`) lists the broker's default audience, which "
        "restricts nothing",
    ),
    Failure("invalid_ttl", "`ttl` exceeds the broker's `launch_token_max_ttl`"),
    Failure("invalid_target", "a `resource` is malformed or there are more than 16"),
)

OPERATIONS = (
    Operation(
        "POST /v1/admin/launch-tokens",
        "createLaunchTokenAsAdmin",
        "launch tokens",
        "Create a launch token (operator)",
        "A launch token lets one agent (or, with `single_use: false`, up to `max_uses`) "
        "register with at most `allowed_scope`; `uses_left` counts what is left. The "
        "token is shown once. `resource` (or "
        "`audience`; a string or a list, RFC 8707) names the resources its agents' tokens "
        "may be for; `principal` the human they work for.",
        admin("admin:launch-tokens:*"),
        LaunchTokenResponse,
        status=201,
        request=LaunchTokenRequest,
        commits=True,
        errors=_LAUNCH_TOKEN_FAILURES,
    ),
    Operation(
        "POST /v1/app/launch-tokens",
        "createLaunchTokenAsApp",
        "launch tokens",
        "Create a launch token (app)",
        "As the operator route, but the scope is held to the calling app's ceiling. "
        "`resource` and `principal` as on the operator route.",
        app("app:launch-tokens:*"),
        LaunchTokenResponse,
        status=201,
        request=LaunchTokenRequest,
        commits=True,
        errors=(
            *_LAUNCH_TOKEN_FAILURES,
            Failure(
                "forbidden",
                "the app is no longer active, or `allowed_scope` exceeds the app's ceiling",
            ),
        ),
    ),
)
