"""RFC 8707: Resource Indicators for OAuth 2.0.

Launch tokens name the resources their agents' tokens may be for; a registration (and a
delegation) names one; the token is for that one resource only.
"""

from __future__ import annotations

from conformance_support import DEFAULT_AUDIENCE, OTHER_AUDIENCE, Kit, parts

NOT_APPLICABLE = {
    "s2_2 resource at the authorization endpoint": "no authorization endpoint: launch "
    "tokens and registrations carry it",
}

ORDERS = "https://orders.example/api"
MAIL = "https://mail.example/mcp"


def test_rfc8707_s2_resource_must_be_an_absolute_uri(kit: Kit) -> None:
    """§2: `resource` MUST be an absolute URI: another value is `invalid_target` (400)."""
    for value in ("orders-api", "/relative/path", "//no-scheme.example"):
        answer = kit.post(
            "/v1/admin/launch-tokens",
            json={"agent_name": "a", "allowed_scope": ["read:data:42"], "resource": value},
            headers=kit.admin(),
        )
        assert answer.status_code == 400, value
        assert answer.json()["error"] == "invalid_target"


def test_rfc8707_s2_resource_must_not_have_a_fragment(kit: Kit) -> None:
    """§2: the URI MUST NOT include a fragment."""
    body, _ = kit.broker.register_body(kit.launch(resource=[ORDERS]), ["read:data:42"])
    answer = kit.post("/v1/register", json={**body, "resource": ORDERS + "#x"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_target"


def test_rfc8707_s2_the_token_is_for_the_one_resource_named(kit: Kit) -> None:
    """§2: the token is audience-restricted to the resource requested (its only `aud`)."""
    launch = kit.launch(resource=[ORDERS, MAIL], single_use=False)
    body, _ = kit.broker.register_body(launch, ["read:data:42"])
    answer = kit.post("/v1/register", json={**body, "resource": MAIL})
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert parts(token)[1]["aud"] == [MAIL]
    assert kit.validate(token, audience=MAIL)["valid"] is True
    assert kit.validate(token, audience=ORDERS)["valid"] is False


def test_rfc8707_s2_a_resource_outside_the_grant_is_invalid_target(kit: Kit) -> None:
    """§2: a resource the grant does not allow, or an ambiguous request, is
    `invalid_target`."""
    launch = kit.launch(resource=[ORDERS, MAIL], single_use=False)
    for extra in ({"resource": "https://payments.example/api"}, {}):
        body, _ = kit.broker.register_body(launch, ["read:data:42"])
        answer = kit.post("/v1/register", json={**body, **extra})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_target"


def test_rfc8707_s2_a_token_naming_no_resource_is_for_one_audience(kit: Kit) -> None:
    """§2 (threat TM-39): a token that names no resource carries one audience, the
    broker's first configured, not every configured one."""
    assert parts(kit.register().token)[1]["aud"] == [DEFAULT_AUDIENCE]
    token = kit.register().token
    assert kit.validate(token, audience=OTHER_AUDIENCE)["valid"] is False


def test_rfc8707_s2_delegation_only_narrows_the_audience(kit: Kit) -> None:
    """§2: a derived token keeps or narrows the resource, never another."""
    holder = kit.register(launch={"resource": [ORDERS]})
    delegate = kit.register()
    answer = kit.post(
        "/v1/delegate",
        json={"delegate_to": delegate.agent_id, "scope": ["read:data:42"], "resource": MAIL},
        headers=holder.bearer(),
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_target"


def test_rfc8707_s2_the_audience_alias_takes_a_logical_name(kit: Kit) -> None:
    """§2 with RFC 8693 §2.1: `audience` may name a resource logically (not a URI)."""
    launch = kit.launch(audience=["orders-api"])
    body, _ = kit.broker.register_body(launch, ["read:data:42"])
    answer = kit.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    assert parts(answer.json()["access_token"])[1]["aud"] == ["orders-api"]
