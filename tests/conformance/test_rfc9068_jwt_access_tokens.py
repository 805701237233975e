"""RFC 9068: JSON Web Token (JWT) Profile for OAuth 2.0 Access Tokens.

Agent access tokens checked against the RFC by hand, by an independent validator (authlib's
RFC 9068 ``JWTBearerTokenValidator``, over joserfc), and by the broker's and the
verifier's refusals of what section 4 says a resource server must refuse.
"""

from __future__ import annotations

from typing import Any

import jwt as pyjwt
import pytest
from authlib.oauth2.rfc6750.errors import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims
from conformance_support import DEFAULT_AUDIENCE, ISSUER, SCOPE, Kit, parts
from joserfc import jwt as joserfc_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tasklease.verify import AppCredentials, InvalidToken, Verifier

NOT_APPLICABLE = {
    "s2_2_1 auth_time, acr, amr": "no end-user authentication event at the broker: agents "
    "register with launch tokens and keys",
    "s2_2_2 identity claims": "agent tokens name a workload and a principal, no user profile",
    "s2_2_3_1 groups, roles, entitlements": "authority is carried by scopes only",
    "s4 encrypted access tokens (JWE)": "tokens are signed, never encrypted: they carry no "
    "secret and resource servers verify them offline with the JWKS",
}


class _Validator(JWTBearerTokenValidator):  # type: ignore[misc]
    def __init__(self, jwks: dict[str, Any], resource: str) -> None:
        super().__init__(issuer=ISSUER, resource_server=resource)
        self._jwks = jwks

    def get_jwks(self) -> KeySet:
        return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]

    def authenticate_token(self, token_string: str) -> JWTAccessTokenClaims:
        # authlib's own, except that joserfc is told EdDSA is allowed: it accepts only its
        # "recommended" algorithms by default, and prefers RFC 9864's name (Ed25519).
        options = {
            name: {"essential": True}
            for name in ("exp", "aud", "sub", "client_id", "iat", "jti", "iss")
        }
        options["iss"]["validate"] = self.validate_iss
        options["aud"]["value"] = self.resource_server
        options["scope"] = {"essential": False}
        try:
            token = joserfc_jwt.decode(token_string, self.get_jwks(), algorithms=["EdDSA"])
        except JoseError as exc:
            raise InvalidTokenError() from exc
        return JWTAccessTokenClaims(token.claims, token.header, options)


def test_rfc9068_s2_1_header_typ_is_at_jwt(kit: Kit) -> None:
    """§2.1: the header `typ` is `at+jwt` (with `alg` and the signing key's `kid`)."""
    header, _ = parts(kit.register().token)
    kids = {k["kid"] for k in kit.jwks()["keys"]}
    assert header["typ"] == "at+jwt" and header["alg"] == "EdDSA" and header["kid"] in kids


def test_rfc9068_s2_2_required_claims(kit: Kit) -> None:
    """§2.2: `iss`, `exp`, `aud`, `sub`, `client_id`, `iat` and `jti` are present, with the
    types RFC 7519 gives them."""
    _, claims = parts(kit.register().token)
    for name in ("iss", "sub", "client_id", "jti"):
        assert isinstance(claims[name], str) and claims[name], name
    for name in ("exp", "iat"):
        assert isinstance(claims[name], int), name
    assert claims["aud"] == [DEFAULT_AUDIENCE] and claims["iss"] == ISSUER
    assert claims["exp"] > claims["iat"]


def test_rfc9068_s2_2_3_1_scope_is_a_space_delimited_string(kit: Kit) -> None:
    """§2.2.3.1 (RFC 8693 §4.2): `scope` is one string of space-delimited scope tokens."""
    _, claims = parts(kit.register(SCOPE).token)
    assert claims["scope"] == " ".join(SCOPE)


# joserfc warns that RFC 9864 deprecates the polymorphic "EdDSA" name (for "Ed25519").
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_rfc9068_s2_2_an_independent_validator_accepts_the_token(kit: Kit) -> None:
    """§2.2 and §4, as authlib's RFC 9068 validator reads them: signature, `typ`, required
    claims, `iss`, `aud`, and the scope string."""
    agent = kit.register(SCOPE)
    validator = _Validator(kit.jwks(), DEFAULT_AUDIENCE)
    claims = validator.authenticate_token(agent.token)
    validator.validate_token(claims, ["read:data:42"], None)
    assert claims["sub"] == agent.agent_id
    with pytest.raises(InsufficientScopeError):
        validator.validate_token(claims, ["admin:revoke:*"], None)
    with pytest.raises(InvalidTokenError):  # aud names another resource server
        elsewhere = _Validator(kit.jwks(), "https://elsewhere.example")
        elsewhere.validate_token(elsewhere.authenticate_token(agent.token), [], None)


def test_rfc9068_s4_typ_application_at_jwt_and_case_are_accepted(kit: Kit) -> None:
    """§4 (RFC 7515 §4.1.9): `application/at+jwt` and case variants of `at+jwt` are the
    same type, at the broker and at the verifier."""
    agent = kit.register()
    header, payload = parts(agent.token)
    for n, typ in enumerate(("application/at+jwt", "AT+JWT", "Application/At+Jwt")):
        token = kit.resign({**payload, "jti": f"{n:032x}"}, {**header, "typ": typ})
        assert kit.validate(token)["valid"] is True, typ
        answer = kit.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text


def test_rfc9068_s4_other_typ_is_refused(kit: Kit) -> None:
    """§4: a JWT whose `typ` is not `at+jwt` (e.g. `JWT`) is refused."""
    header, payload = parts(kit.register().token)
    for typ in ("JWT", "application/jwt", "dpop+jwt", "tasklease-admin+jwt"):
        assert kit.validate(kit.resign(payload, {**header, "typ": typ}))["valid"] is False


def test_rfc9068_s4_iss_must_match_the_issuer(kit: Kit) -> None:
    """§4: `iss` must exactly match the authorization server's issuer identifier."""
    agent = kit.register()
    header, payload = parts(agent.token)
    forged = kit.resign({**payload, "iss": "https://other-issuer.example"}, header)
    assert kit.validate(forged)["valid"] is False
    key = kit.jwks()["keys"][0]
    public = pyjwt.PyJWK(key).key
    with pytest.raises(pyjwt.InvalidIssuerError):
        pyjwt.decode(
            agent.token, public, algorithms=["EdDSA"], audience=DEFAULT_AUDIENCE, issuer="x"
        )


def test_rfc9068_s4_aud_must_name_the_resource_server(kit: Kit) -> None:
    """§4: a resource server refuses a token whose `aud` does not name it (the verifier)."""
    agent = kit.register()
    app = kit.broker.create_app(["read:data:*"])
    credentials = AppCredentials(app["client_id"], app["client_secret"])
    with Verifier(kit.url, audience="https://elsewhere.example", issuer=ISSUER,
                  credentials=credentials) as verifier:  # fmt: skip
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(agent.token)
        assert caught.value.reason == "audience mismatch"
    with Verifier(kit.url, audience=DEFAULT_AUDIENCE, issuer=ISSUER,
                  credentials=credentials) as verifier:  # fmt: skip
        assert verifier.verify(agent.token).sub == agent.agent_id


def test_rfc9068_s4_exp_is_checked_without_leeway(kit: Kit) -> None:
    """§4 (RFC 7519 §4.1.4): a token on or after its `exp` is refused."""
    header, payload = parts(kit.register().token)
    dead = kit.resign({**payload, "exp": payload["iat"], "iat": payload["iat"] - 60}, header)
    assert kit.validate(dead)["valid"] is False


def test_rfc9068_s2_2_issuer_defaults_to_the_public_url(start_broker: Any) -> None:
    """§2.2 and RFC 8414 §2: the issuer identifier is the URL the authorization server is
    known by: a broker with a `public_url` and no `issuer` set uses it as `iss`."""
    own = start_broker(
        {"TASKLEASE_ISSUER": "", "TASKLEASE_PUBLIC_URL": "https://broker.example.com/"}
    )
    answer = own.post("/v1/admin/auth", json={"secret": own.admin_secret})
    assert parts(answer.json()["access_token"])[1]["iss"] == "https://broker.example.com"
