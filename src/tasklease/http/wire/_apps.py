"""Apps on the wire: registered clients that launch agents within a scope ceiling."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, UnsetType

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.records import AppRecord
from tasklease.http.wire._base import (
    PUBLIC,
    AccessToken,
    ExpiresIn,
    Failure,
    Operation,
    Param,
    Request,
    Response,
    Timestamp,
    TokenType,
    admin,
    doc,
    required,
)
from tasklease.http.wire._grants import DETAILS_FAILURE, details_out

__all__ = [
    "OPERATIONS",
    "TAGS",
    "App",
    "AppAuthRequest",
    "AppAuthResponse",
    "AppCreateRequest",
    "AppList",
    "AppUpdateRequest",
    "AppWithSecret",
    "DeregisteredApp",
    "app_view",
    "app_with_secret",
    "deregistered_app",
]

TAGS = {"apps": "Apps: registered clients that launch agents within a scope ceiling."}


# --- requests ------------------------------------------------------------------------------


class AppAuthRequest(Request):
    client_id: Annotated[str | None, required("The app's client id.")] = None
    client_secret: Annotated[str | None, required("The app's client secret.")] = None


APP_DETAILS = doc(
    "The app's grants ceiling (RFC 9396 structured grants, docs/grants.md): its launch "
    "tokens' grants must be covered by them."
)


class AppCreateRequest(Request):
    name: Annotated[
        str | None,
        required("2-64 lowercase letters, digits and single hyphens, starting with a letter."),
    ] = None
    scopes: Annotated[
        list[str] | None,
        required("The app's scope ceiling; may be absent with `authorization_details`."),
    ] = None
    authorization_details: Annotated[list[dict[str, Any]] | None, APP_DETAILS] = None
    token_ttl: Annotated[
        int | None, doc("App token lifetime in seconds, 60 to 86400 (default 1800).")
    ] = None
    public_key: Annotated[
        str | None,
        doc(
            "An Ed25519 public key the app signs client assertions with (`private_key_jwt`, "
            "RFC 7523, at `POST /v1/oauth/token`): a JWK (`kty` OKP, `crv` Ed25519, `x`; "
            "JSON text) or the 32 raw bytes in base64 or base64url. The secret works too."
        ),
    ] = None


class AppUpdateRequest(Request):
    scopes: Annotated[
        list[str] | None, doc("A new scope ceiling; `[]` removes it (the app keeps its grants).")
    ] = None
    authorization_details: Annotated[
        list[dict[str, Any]] | None,
        doc("A new grants ceiling (RFC 9396 structured grants); `[]` removes it."),
    ] = None
    token_ttl: Annotated[int | None, doc("A new app token lifetime in seconds, 60 to 86400.")] = (
        None
    )
    public_key: Annotated[
        str | None,
        doc(
            "A new Ed25519 public key for `private_key_jwt` (as in `createApp`); the empty "
            "string removes it."
        ),
    ] = None


# --- responses -----------------------------------------------------------------------------


class App(Response):
    app_id: Annotated[str, doc("The app's id (`app-<name>-<6 hex>`).")]
    name: Annotated[str, doc("The app's name.")]
    client_id: Annotated[str, doc("The client id to authenticate with.")]
    scopes: Annotated[list[str], doc("The app's scope ceiling.")]
    token_ttl: Annotated[int, doc("Lifetime of the app's tokens, in seconds.")]
    status: Annotated[str, doc("`inactive` once deregistered.", enum=["active", "inactive"])]
    created_at: Timestamp
    updated_at: Timestamp
    public_key: (
        Annotated[
            str,
            doc(
                "The app's Ed25519 public key for `private_key_jwt`, base64url of its 32 "
                "bytes; absent when it has none."
            ),
        ]
        | UnsetType
    ) = UNSET
    authorization_details: (
        Annotated[
            list[dict[str, Any]],
            doc("The app's grants ceiling (RFC 9396); absent when it has none."),
        ]
        | UnsetType
    ) = UNSET


class AppWithSecret(App, kw_only=True):
    client_secret: Annotated[str, doc("The app's secret, shown only once.")]


class DeregisteredApp(App, kw_only=True):
    deregistered_at: Timestamp


def app_view(record: AppRecord) -> App:
    return App(**_app_fields(record))


def app_with_secret(record: AppRecord, secret: str) -> AppWithSecret:
    return AppWithSecret(**_app_fields(record), client_secret=secret)


def deregistered_app(record: AppRecord) -> DeregisteredApp:
    fields = _app_fields(record)
    return DeregisteredApp(**fields, deregistered_at=fields["updated_at"])


def _app_fields(record: AppRecord) -> dict[str, Any]:
    return {
        "app_id": record.app_id,
        "name": record.name,
        "client_id": record.client_id,
        "scopes": list(record.scopes),
        "token_ttl": record.token_ttl,
        "status": record.status,
        "created_at": format_rfc3339_seconds(record.created_at),
        "updated_at": format_rfc3339_seconds(record.updated_at),
        "public_key": record.public_key or UNSET,
        "authorization_details": details_out(record.authorization_details),
    }


class AppList(Response):
    apps: list[App]
    total: Annotated[int, doc("Number of apps.")]


class AppAuthResponse(Response):
    access_token: AccessToken
    expires_in: ExpiresIn
    token_type: TokenType
    scopes: Annotated[list[str], doc("The app token's scopes.")]


# --- operations ----------------------------------------------------------------------------

_SCOPE = "admin:launch-tokens:*"
_APP_ID = Param(
    "app_id", "path", {"type": "string"}, "The app's `app_id` (`app-<name>-<6 hex>`).", True
)
_NO_SUCH_APP = Failure("not_found", "no app has this `app_id`")
_BAD_TTL = Failure("invalid_ttl", "`token_ttl` is not an integer from 60 to 86400")

OPERATIONS = (
    Operation(
        "POST /v1/admin/apps",
        "createApp",
        "apps",
        "Register an app",
        "Creates an app with a scope ceiling. The `client_secret` is shown once, here.",
        admin(_SCOPE),
        AppWithSecret,
        status=201,
        request=AppCreateRequest,
        commits=True,
        errors=(
            DETAILS_FAILURE,
            Failure(
                "invalid_request",
                "`name` is missing or not 2-64 lowercase letters, digits and single "
                "hyphens, `scopes` is empty or malformed, or `public_key` is not an "
                "Ed25519 public key",
            ),
            _BAD_TTL,
            Failure("conflict", "an app with this name already exists"),
        ),
    ),
    Operation(
        "GET /v1/admin/apps",
        "listApps",
        "apps",
        "List apps",
        "Every app, active and deregistered.",
        admin(_SCOPE),
        AppList,
    ),
    Operation(
        "GET /v1/admin/apps/{app_id}",
        "getApp",
        "apps",
        "Get an app",
        "One app by its `app_id`.",
        admin(_SCOPE),
        App,
        parameters=(_APP_ID,),
        errors=(_NO_SUCH_APP,),
    ),
    Operation(
        "PUT /v1/admin/apps/{app_id}",
        "updateApp",
        "apps",
        "Update an app",
        "Changes the scope ceiling, the token TTL and/or the public key, all or none. Give "
        "at least one of them. A new or removed key revokes the app's live tokens (it "
        "signs in again); a narrower ceiling holds the registrations of the launch tokens "
        "it made before, also those in flight when the change is answered. A deregistered "
        "app is not changed (409).",
        admin(_SCOPE),
        App,
        request=AppUpdateRequest,
        parameters=(_APP_ID,),
        commits=True,
        errors=(
            DETAILS_FAILURE,
            Failure(
                "invalid_request",
                "none of `scopes`, `token_ttl` and `public_key` is given, a scope is "
                "malformed, or `public_key` is not an Ed25519 public key",
            ),
            _BAD_TTL,
            _NO_SUCH_APP,
            Failure("conflict", "the app was deregistered (nothing is written)"),
        ),
    ),
    Operation(
        "POST /v1/admin/apps/{app_id}/rotate-secret",
        "rotateAppSecret",
        "apps",
        "Rotate an app's client secret",
        "Replaces the app's `client_secret` with a new one the broker makes, shown once, "
        "here; no body is read. The old secret stops working at once, and the app's live "
        "app tokens are revoked (level `agent` on `app:<app_id>`), with the launch tokens "
        "it made: they admit no agent from then on. The agents it launched keep their "
        "tokens (revoke them, or deregister the app, to end them). A public key the app "
        "has stays. The new secret signs in once `clock_skew` has passed (until then: 503 "
        "with `Retry-After`). A deregistered app is not changed (409).",
        admin(_SCOPE),
        AppWithSecret,
        parameters=(_APP_ID,),
        commits=True,
        errors=(_NO_SUCH_APP, Failure("conflict", "the app was deregistered (nothing is written)")),
    ),
    Operation(
        "DELETE /v1/admin/apps/{app_id}",
        "deregisterApp",
        "apps",
        "Deregister an app",
        "Deactivates the app: its secret stops working and its live app tokens are "
        "revoked. The record is kept (status `inactive`) for the audit trail. An app "
        "deregistered before is refused (409), and nothing more is written.",
        admin(_SCOPE),
        DeregisteredApp,
        parameters=(_APP_ID,),
        commits=True,
        errors=(_NO_SUCH_APP, Failure("conflict", "the app was deregistered before")),
    ),
    Operation(
        "POST /v1/app/auth",
        "appAuth",
        "apps",
        "Authenticate as an app",
        "Exchanges an app's `client_id` and `client_secret` for an app token. Unknown "
        "client, wrong secret and deregistered app look the same to the caller.",
        PUBLIC,
        AppAuthResponse,
        request=AppAuthRequest,
        commits=True,
        sign_in_limit="app",
        errors=(
            Failure("invalid_request", "`client_id` or `client_secret` is missing"),
            Failure("unauthorized", "the credentials are wrong or the app is deregistered"),
        ),
    ),
)
