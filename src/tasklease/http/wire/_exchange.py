"""The token endpoint on the wire: token exchange (RFC 8693), where one agent token becomes
the parent of another, narrowed in the same domain or carried across from a federated
domain; and the client credentials grant (RFC 6749 section 4.4), where an app signs in."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, UnsetType

from tasklease.http.wire._base import (
    PUBLIC,
    AccessToken,
    ExpiresIn,
    Failure,
    Operation,
    Request,
    Response,
    TokenType,
    doc,
    required,
)
from tasklease.http.wire._grants import DETAILS_FAILURE, DETAILS_OUT

__all__ = ["OPERATIONS", "TAGS", "TokenExchangeRequest", "TokenExchangeResponse"]

TAGS = {
    "token exchange": "The OAuth token endpoint: RFC 8693 token exchange (narrow an agent "
    "token, or carry a federated domain's token across to an agent of this broker) and "
    "the client credentials grant for apps.",
}

_Text = str | None


class TokenExchangeRequest(Request):
    """An RFC 8693 section 2.1 or RFC 6749 section 4.4.2 request, as a form
    (`application/x-www-form-urlencoded`, RFC 6749 section 3.2) or JSON with the same
    names; a form parameter may not repeat."""

    grant_type: Annotated[
        _Text,
        required("`urn:ietf:params:oauth:grant-type:token-exchange` or `client_credentials`."),
    ] = None
    subject_token: Annotated[
        _Text,
        doc(
            "Token exchange (required): the token to exchange: the caller's own agent "
            "token (narrowing), or an agent "
            "token of a federated trust domain whose `aud` names `spiffe://<this broker's "
            "trust domain>`."
        ),
    ] = None
    subject_token_type: Annotated[
        _Text,
        doc(
            "Token exchange (required): `urn:ietf:params:oauth:token-type:access_token` or "
            "`urn:ietf:params:oauth:token-type:jwt`."
        ),
    ] = None
    actor_token: Annotated[
        _Text,
        doc(
            "The caller's own agent token, required when `subject_token` is a federated "
            "domain's: the new token is the actor's. Checked like any presented token, "
            "with its DPoP proof (`DPoP` header, `ath` of this token) or client "
            "certificate when it is bound."
        ),
    ] = None
    actor_token_type: Annotated[
        _Text, doc("Required with `actor_token`, as `subject_token_type`.")
    ] = None
    requested_token_type: Annotated[
        _Text, doc("Only `urn:ietf:params:oauth:token-type:access_token` (the default).")
    ] = None
    scope: Annotated[
        _Text,
        doc(
            "Space-separated scopes (RFC 6749 section 3.3) within what the subject token "
            "grants here; all of it when absent. Client credentials: among the app token's "
            "(`app:launch-tokens:*`, `app:agents:*`, `app:audit:read`), which it always holds."
        ),
    ] = None
    resource: Annotated[
        _Text,
        doc(
            "RFC 8707: the one resource the new token is for (narrowing: within the "
            "subject token's audience; cross-domain: any of this broker's)."
        ),
    ] = None
    audience: Annotated[
        _Text, doc("RFC 8693 `audience`, the same as `resource`; if both, they must agree.")
    ] = None
    authorization_details: Annotated[
        _Text | list[dict[str, Any]],
        doc(
            "Narrowing: structured grants (RFC 9396 section 6; in a form, JSON text) each "
            "covered by the subject token's; all of them when absent. Not for a federated "
            "domain's token."
        ),
    ] = None
    client_id: Annotated[
        _Text,
        doc(
            "Client credentials: the app's client id (`client_secret_post`), or the same "
            "as in the Basic header if sent there too."
        ),
    ] = None
    client_secret: Annotated[
        _Text,
        doc(
            "Client credentials: the app's secret (`client_secret_post`). Or send both in "
            "`Authorization: Basic` (`client_secret_basic`, RFC 6749 section 2.3.1), not both."
        ),
    ] = None
    client_assertion: Annotated[
        _Text,
        doc(
            "Client credentials (`private_key_jwt`, RFC 7523 section 2.2): a JWT the app "
            "signed with the Ed25519 key it registered (`alg` EdDSA or Ed25519); `iss` and "
            "`sub` its client id, `aud` this endpoint's URL or the issuer, `exp` at most 5 "
            "minutes away, a `jti` used once. Not with a secret or a Basic header."
        ),
    ] = None
    client_assertion_type: Annotated[
        _Text,
        doc("With `client_assertion`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`."),
    ] = None


class TokenExchangeResponse(Response):
    """RFC 8693 section 2.2.1."""

    access_token: AccessToken
    issued_token_type: Annotated[
        str, doc("Always `urn:ietf:params:oauth:token-type:access_token`.")
    ]
    token_type: TokenType
    expires_in: ExpiresIn
    scope: Annotated[str, doc("The new token's scopes, space-separated.")]
    authorization_details: Annotated[list[dict[str, Any]], DETAILS_OUT] | UnsetType = UNSET


OPERATIONS = (
    Operation(
        "POST /v1/oauth/token",
        "exchangeToken",
        "token exchange",
        "The OAuth token endpoint: token exchange (RFC 8693) and client credentials",
        "**Client credentials** (`grant_type=client_credentials`, RFC 6749 section 4.4): "
        "an app authenticates with its client secret, in `Authorization: Basic` or in the "
        "body, or with a JWT signed by the key it registered (`private_key_jwt`, RFC 7523: "
        "`client_assertion`), exactly one of them, and gets the app token `POST "
        "/v1/app/auth` gives (same service, same rate limit, same audit); `scope` may "
        "only name the app token's scopes and `resource` only this broker, checked once "
        "the app has authenticated (a refusal carries a `denial_id`). With a DPoP proof "
        "(`DPoP` header, no `ath`) the app token "
        "is bound to the proof's key (`cnf.jkt`, `token_type` `DPoP`, RFC 9449 section 5) "
        "and must then be presented with a proof wherever it is used. A failed client "
        "authentication is 401 with `error=invalid_client` (and a `Basic` challenge when "
        "Basic was used). **Token exchange** issues an agent token whose parent is "
        "`subject_token`, through the same issuance "
        "check as every other token (docs/authority.md): scope, audience and lifetime only "
        "narrow, the renewal count carries on, the principal is the subject token's. "
        "**Narrowing**: `subject_token` is the caller's own token (with its DPoP proof or "
        "client certificate if bound); the new token has the same holder, binding and "
        "chain, and ends with it. **Cross-domain** (docs/federation.md): `subject_token` is "
        "an agent token of a federated trust domain, verified with that domain's last good "
        "bundle (EdDSA, `exp` with no leeway, `aud` naming `spiffe://<our trust domain>`); "
        "`actor_token` is the caller's own token. The federation's mapping policy turns "
        "the subject's scopes into ours (only narrower); the new token is the actor's, "
        "bound to its registered key, with the subject's delegation chain and `act` hops "
        "plus this one, the subject's principal, and the subject's ancestry in `lineage` "
        "(so that domain's revocations end it here). Errors are problems that also carry "
        "RFC 6749 section 5.2's `error` and `error_description`, and `denial_id` when "
        "audited.",
        PUBLIC,
        TokenExchangeResponse,
        request=TokenExchangeRequest,
        form=True,
        commits=True,
        sign_in_limit="app",
        errors=(
            DETAILS_FAILURE,
            Failure(
                "unauthorized",
                "client credentials: the app's credentials are missing, malformed, wrong, "
                "or the app is inactive; its client assertion is unsigned by its key, for "
                "another audience, expired, too long-lived or replayed "
                "(`error=invalid_client`)",
            ),
            Failure(
                "invalid_dpop_proof",
                "client credentials, or token exchange of a DPoP-bound token: the DPoP "
                "proof is malformed, not for this request, or replayed",
            ),
            Failure(
                "use_dpop_nonce",
                "client credentials with DPoP, or token exchange of a DPoP-bound token, "
                '`dpop_nonce = "required"`: the proof lacks a current nonce; retry with the '
                "one in the `DPoP-Nonce` header",
            ),
            Failure(
                "invalid_request",
                "a parameter is missing, malformed or repeated; a token type is not an "
                "access token or JWT; `actor_token` is missing for a federated domain's "
                "subject token; a token exchange carries client credentials (a Basic "
                "header, `client_secret` or `client_assertion`: it authenticates no "
                "client); or either token is invalid, expired, revoked, of an "
                "unknown or untrusted domain (its bundle unknown or older than its maximum "
                "age), or not acceptable (its lineage has ended, the actor is already in "
                "its chain, the chain is at its depth limit)",
            ),
            Failure(
                "unsupported_grant_type",
                "`grant_type` is neither `urn:ietf:params:oauth:grant-type:token-exchange` nor "
                "`client_credentials`",
            ),
            Failure(
                "invalid_scope",
                "`scope` asks for more than the subject token grants here, or it grants "
                "nothing here (client credentials: names a scope the app token does not hold)",
            ),
            Failure(
                "invalid_target",
                "`resource`/`audience` is malformed, given more than once in a form (a token "
                "is for one target, RFC 8707), or would widen the audience (client "
                "credentials: names anything but this broker)",
            ),
            Failure(
                "service_unavailable",
                "cross-domain: the federated domain's revocation feed has not been heard "
                "current for `federation_feed_max_staleness` (60 s by default), so a "
                "revocation made there may not have reached us; `Retry-After` says when to "
                "try again (audited, with a `denial_id`)",
            ),
        ),
    ),
)
