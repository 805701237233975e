# Would fail if: a tenant's broker accepted a token, launch token, app credential, operator
# credential or admin secret of another tenant (or of the default tenant), answered it
# differently from an unknown one, or showed another tenant's agents, revocations or audit
# events; or if a removed tenant were still served.
"""TM-36 — cross-tenant access, between tenants of one broker (tenants: docs/tenants.md).

Two tenants, ``blue`` and ``red``, each with an app and an agent, plus the default
tenant's own. Every credential of one tenant is presented everywhere in the other: each is
refused exactly as an unknown credential is (same status, code and detail: no tenant
enumeration), and nothing of one tenant is visible through the other's validation,
introspection, revocation, feed or audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem, jwt_parts
from threat_support import bearer

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.storage import MemoryStore
from tasklease.tenancy import Tenancy

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


class Side:
    """One tenant (or the default one) with an app, its token, a launch token and an agent."""

    def __init__(self, view: RunningBroker) -> None:
        self.view = view
        self.app = view.create_app(SCOPE)
        self.app_token = view.app_token(self.app)
        self.launch = view.launch_token(SCOPE, max_uses=5, single_use=False)
        self.agent = view.register(SCOPE, launch_token=self.launch)
        self.operator = view.admin_token()


@pytest.fixture(scope="module")
def sides(broker: RunningBroker) -> Iterator[tuple[Side, Side, Side]]:
    suffix = secrets.token_hex(3)
    blue = Side(broker.create_tenant(f"blue-{suffix}"))
    red = Side(broker.create_tenant(f"red-{suffix}"))
    yield blue, red, Side(broker)
    blue.view.client.close()
    red.view.client.close()


def _problem(resp: httpx.Response) -> tuple[int, str, str]:
    body = resp.json()
    return resp.status_code, body["error_code"], body["detail"]


def test_each_tenant_is_its_own_trust_domain_issuer_and_key(sides: tuple[Side, ...]) -> None:
    kids, issuers, domains = set(), set(), set()
    for side in sides:
        _, claims = jwt_parts(side.agent.access_token)
        issuers.add(claims["iss"])
        domains.add(claims["sub"].split("/")[2])
        kids.add(side.view.get("/.well-known/jwks.json").json()["keys"][0]["kid"])
        assert side.view.validate(side.agent.access_token)["valid"] is True
    assert len(kids) == len(issuers) == len(domains) == 3


@pytest.mark.parametrize("direction", ["blue->red", "red->blue", "default->blue", "blue->default"])
def test_another_tenants_credentials_are_refused_like_unknown_ones(
    sides: tuple[Side, Side, Side], direction: str
) -> None:
    names = dict(zip(("blue", "red", "default"), sides, strict=True))
    source, target = (names[n] for n in direction.split("->"))
    here = target.view
    forged = source.agent.access_token[:-4] + "AAAA"

    # Validation: another tenant's token is invalid, as a garbage one is.
    assert here.validate(source.agent.access_token) == here.validate(forged)
    assert here.validate(source.agent.access_token)["valid"] is False

    # Bearer use of an agent token (renew), of an app token and of an operator token.
    for token, method, path, body in (
        (source.agent.access_token, "POST", "/v1/token/renew", None),
        (
            source.app_token,
            "POST",
            "/v1/app/launch-tokens",
            {"agent_name": "x", "allowed_scope": SCOPE},
        ),
        (source.operator, "GET", "/v1/admin/apps", None),
        (source.operator, "GET", "/v1/audit/events", None),
        (source.operator, "POST", "/v1/revoke", {"level": "task", "target": target.agent.task_id}),
    ):
        theirs = here.client.request(method, path, json=body, headers=bearer(token))
        unknown = here.client.request(method, path, json=body, headers=bearer(forged))
        assert theirs.status_code == 401, theirs.text
        assert _problem(theirs) == _problem(unknown)
        assert "denial_id" in theirs.json()

    # Delegation with another tenant's token as the delegator.
    resp = here.delegate(source.agent.access_token, target.agent.agent_id, SCOPE)
    assert resp.status_code == 401 and _problem(resp) == _problem(
        here.delegate(forged, target.agent.agent_id, SCOPE)
    )

    # The app credential and the launch token do not exist here.
    creds = {"client_id": source.app["client_id"], "client_secret": source.app["client_secret"]}
    theirs = here.post("/v1/app/auth", json=creds)
    unknown = here.post("/v1/app/auth", json={**creds, "client_id": "app-" + secrets.token_hex(8)})
    assert theirs.status_code == 401 and _problem(theirs) == _problem(unknown)
    body, _ = here.register_body(source.launch, SCOPE)
    theirs = here.post("/v1/register", json=body)
    body, _ = here.register_body("x" * len(source.launch), SCOPE)
    unknown = here.post("/v1/register", json=body)
    assert theirs.status_code == unknown.status_code == 401
    assert _problem(theirs) == _problem(unknown)

    # Introspection by this tenant's app: inactive, as for any unknown token.
    resp = here.post(
        "/v1/introspect",
        json={"token": source.agent.access_token},
        headers=bearer(target.app_token),
    )
    assert resp.status_code == 200 and resp.json() == {"active": False}

    # RFC 7009 revocation of another tenant's token here does nothing there.
    here.post(
        "/v1/token/revoke",
        json={"token": source.agent.access_token},
        headers=bearer(target.app_token),
    )
    assert source.view.validate(source.agent.access_token)["valid"] is True


def test_the_default_admin_secret_does_not_open_a_tenant(
    broker: RunningBroker, sides: tuple[Side, Side, Side]
) -> None:
    blue = sides[0].view
    theirs = blue.post("/v1/admin/auth", json={"secret": broker.admin_secret})
    unknown = blue.post("/v1/admin/auth", json={"secret": "not-the-secret-" + "x" * 20})
    assert theirs.status_code == 401 and _problem(theirs) == _problem(unknown)
    # Nor may a tenant's admin manage tenants (the registry is the default tenant's).
    resp = blue.get("/v1/admin/tenants", headers=blue.admin_headers())
    assert resp.status_code == 404


def test_a_tenant_sees_only_its_own_revocations_and_audit_events(
    sides: tuple[Side, Side, Side],
) -> None:
    blue, red, default = sides
    task = red.agent.task_id
    resp = red.view.revoke("task", task)
    assert resp.status_code == 200, resp.text
    assert red.view.validate(red.agent.access_token)["valid"] is False
    for other in (blue, default):
        feed = other.view.get("/v1/revocations", headers=bearer(other.operator))
        assert feed.status_code == 200, feed.text
        assert task not in feed.text
        events = other.view.get(
            "/v1/audit/events", params={"limit": "1000"}, headers=bearer(other.operator)
        ).json()["events"]
        text = repr(events)
        assert red.agent.agent_id not in text and task not in text
    own = red.view.get(
        "/v1/audit/events", params={"task_id": task}, headers=bearer(red.operator)
    ).json()
    assert own["total"] >= 1
    # Each tenant's chain is its own, starting at 1.
    first = red.view.get(
        "/v1/audit/events", params={"limit": "1"}, headers=bearer(red.operator)
    ).json()["events"][0]
    assert first["prev_hash"] == "0" * 64


def test_a_tenants_feed_does_not_count_another_tenants_revocations(
    sides: tuple[Side, Side, Side],
) -> None:
    """Each tenant numbers its own feed: red's revocations between two of blue's leave no
    gap in blue's numbers, so blue cannot tell how busy red is."""
    blue, red, _ = sides

    def cursor(side: Side) -> int:
        feed = side.view.get("/v1/revocations", headers=bearer(side.operator)).json()
        return int(feed["cursor"])

    start = cursor(blue)
    assert blue.view.revoke("task", f"blue-a-{secrets.token_hex(3)}").status_code == 200
    for _ in range(3):
        assert red.view.revoke("task", f"red-{secrets.token_hex(3)}").status_code == 200
    assert blue.view.revoke("task", f"blue-b-{secrets.token_hex(3)}").status_code == 200
    feed = blue.view.get(
        "/v1/revocations", params={"cursor": str(start)}, headers=bearer(blue.operator)
    ).json()
    assert [entry["seq"] for entry in feed["revocations"]] == [start + 1, start + 2]
    assert feed["cursor"] == start + 2


def test_an_unknown_and_a_removed_tenant_answer_alike(broker: RunningBroker) -> None:
    view = broker.create_tenant(f"gone-{secrets.token_hex(3)}")
    agent = view.register(SCOPE)
    assert view.validate(agent.access_token)["valid"] is True
    name = view.url.rsplit("/", 1)[1]
    resp = broker.client.delete(f"/v1/admin/tenants/{name}", headers=broker.admin_headers())
    assert resp.status_code == 200, resp.text
    for path in (f"/t/{name}/v1/health", f"/t/no-such-{secrets.token_hex(3)}/v1/health"):
        gone = broker.get(path)
        assert_problem(gone, 404, "not_found", instance=path)
    gone = broker.post(f"/t/{name}/v1/token/validate", json={"token": agent.access_token})
    assert gone.status_code == 404
    # Its name is never given again.
    again = broker.post("/v1/admin/tenants", json={"name": name}, headers=broker.admin_headers())
    assert again.status_code == 409
    view.client.close()


def test_a_strangers_request_for_a_name_does_not_break_its_creation(
    broker: RunningBroker,
) -> None:
    """Anyone may ask for /t/<name>/... (404 for no tenant, remembered for a second): the
    tenant's creation right after must not fail half-done (recorded, without its admin)."""
    name = f"asked-{secrets.token_hex(3)}"
    assert_problem(broker.get(f"/t/{name}/v1/health"), 404, "not_found")
    view = broker.create_tenant(name)  # 201, with its admin's secret
    assert view.get("/v1/health").status_code == 200  # served at once, not 404 for a second
    assert view.admin_token()  # its admin signs in
    view.client.close()


def test_a_stale_miss_racing_a_creation_does_not_stop_the_new_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stranger's lookup that read "no such tenant" just before the tenant was created,
    and answers after the creation set its broker up, must not stop that broker nor hide
    the tenant for a second (in process: the race is too narrow to aim at over HTTP)."""
    secret = "stale miss admin secret " + "x" * 20
    default = Broker(
        Config(admin_secret_hash=hash_secret(secret)),
        MemoryStore(),
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )
    tenancy = Tenancy(default)
    ctx = RequestContext(request_id="req-stale-miss", remote="127.0.0.1")
    admin = default.admin_auth(secret, ctx).claims
    read_tenant = default.get_tenant
    made: list[str] = []

    def read_then_the_tenant_is_created(name: str) -> Any:
        record = read_tenant(name)  # None: not created yet ...
        if not made:  # ... and created before this read's answer is acted on
            made.append("")
            _, _, made[0] = tenancy.create(admin, name="acme", trust_domain=None, ctx=ctx)
        return record

    monkeypatch.setattr(default, "get_tenant", read_then_the_tenant_is_created)
    tenancy.broker("acme")
    monkeypatch.setattr(default, "get_tenant", read_tenant)
    served = tenancy.broker("acme")
    assert served is not None, "the stale miss hid the tenant just created"
    issued, _ = served.operator_auth(
        name="admin", secret=made[0], nonce=None, signature=None, ctx=ctx
    )
    assert issued.claims.sub == "operator:admin"
    tenancy.close()
    default.audit.close()


def test_the_default_tenant_is_not_served_again_under_t_default(broker: RunningBroker) -> None:
    """``default`` is no tenant name: /t/default/... answers as an unknown tenant does, not
    as a second copy of the default tenant's API with rate limits of its own."""
    unknown = f"/t/no-such-{secrets.token_hex(3)}"
    for path in ("/v1/health", "/v1/admin/auth", "/.well-known/jwks.json", "/console/login"):
        for base in ("/t/default", unknown):
            if path == "/v1/admin/auth":
                resp = broker.post(base + path, json={"secret": "x" * 40})
            else:
                resp = broker.get(base + path)
            assert_problem(resp, 404, "not_found", instance=base + path)


def _events(view: RunningBroker, token: str, **params: Any) -> list[dict[str, Any]]:
    resp = view.get("/v1/audit/events", params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["events"])
