"""The payment story end to end: a broker (its real process on SQLite, and in this process
on the memory store) and a real resource server built with ``tasklease.verify``, on
loopback HTTP.

A launch token grants "pay at most 500 EUR to payee P today"; its agent delegates "at most
100 EUR to payee P" (and not 600, not payee Q, not tomorrow); the resource server refuses
the delegate's over-limit call and the call to Q, and counts its calls at the broker until
``max_calls`` is used up; the tenant's Cedar policy, changed on disk, decides the next
delegation and names itself in the audit log; a broken policy file is refused whole, and
so is one nested too deeply for Cedar's parser, at the start and on reload, the broker's
process staying up.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, launch_broker, stop_broker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.policy import DEFAULT_POLICY
from tasklease.http.app import create_app
from tasklease.storage import open_store
from tasklease.verify import AppCredentials, Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware, require_grant

pytestmark = pytest.mark.slow

DAY = 86400
PAYEES = "https://pay.example/payees/"
# Every window is read from one time taken at import, so grants made on either side of a
# midnight in one run still compare as meant: two days from an hour ago.
START = int(time.time()) - 3600
WINDOW = 2 * DAY


def payment(
    amount: str, payee: str = "P", day: int = 0, calls: int | None = None
) -> dict[str, Any]:
    today = START + day * WINDOW
    limits: dict[str, Any] = {
        "max_amount": amount,
        "currency": "EUR",
        "not_before": today,
        "not_after": today + WINDOW,
        "allowed_values": {"payee": [payee]},
    }
    if calls is not None:
        limits["max_calls"] = calls
    return {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": [PAYEES + payee],
        "limits": limits,
    }


@pytest.fixture(params=["memory", "process"])
def broker(request: pytest.FixtureRequest, tmp_path: Path, serve: Any) -> Iterator[RunningBroker]:
    """The broker: ``tasklease serve`` on SQLite, or ``create_app`` on the memory store."""
    policies = tmp_path / "policies"
    (policies / "default").mkdir(parents=True)
    if request.param == "process":
        running = launch_broker(tmp_path / "data", {"TASKLEASE_POLICY_DIR": str(policies)})
        yield running
        stop_broker(running)
        return
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET), policy_dir=str(policies))
    core = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"n" * 32)
    served = serve(create_app(core, background=False))
    client = httpx.Client(base_url=served.url, timeout=15.0)
    # The helpers' view of a broker; no process of its own.
    yield RunningBroker(served.url, ADMIN_SECRET, tmp_path, None, tmp_path / "log", client)  # type: ignore[arg-type]
    client.close()


def register(broker: RunningBroker, launch: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    body, _ = broker.register_body(launch, [])
    body.update(requested_scope=None, authorization_details=details)
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def audit(broker: RunningBroker, event_type: str) -> list[dict[str, Any]]:
    answer = broker.get(
        f"/v1/audit/events?event_type={event_type}&limit=100", headers=broker.admin_headers()
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]  # type: ignore[no-any-return]


def pay_service(verifier: Verifier) -> Starlette:
    def the_call(request: Request) -> dict[str, Any]:
        payee = request.path_params["payee"]
        return {
            "location": PAYEES + payee,
            "amount": request.query_params["amount"],
            "currency": "EUR",
            "values": {"payee": payee},
        }

    @require_grant("resource_access", action="pay", call=the_call).guard
    async def pay(request: Request) -> Response:
        token = request.state.tasklease_token
        return JSONResponse({"paid": request.query_params["amount"], "by": token.sub})

    return Starlette(
        routes=[Route("/pay/{payee}", pay, methods=["POST"])],
        middleware=[Middleware(TaskleaseAuthMiddleware, verifier=verifier)],
    )


def test_pay_at_most_500_eur_to_p_today(broker: RunningBroker, tmp_path: Path, serve: Any) -> None:
    admin = broker.admin_headers()
    created = broker.post(
        "/v1/admin/launch-tokens",
        headers=admin,
        json={
            "agent_name": "payer",
            "authorization_details": [payment("500", calls=5)],
            "single_use": False,
            "max_uses": 2,
            "ttl": 600,
        },
    )
    assert created.status_code == 201, created.text
    launch = created.json()["launch_token"]
    payer = register(broker, launch, [payment("500", calls=5)])
    helper = register(broker, launch, [payment("500", calls=5)])
    assert payer["authorization_details"][0]["limits"]["max_amount"] == "500"

    def delegate(grant: dict[str, Any]) -> httpx.Response:
        return broker.post(
            "/v1/delegate",
            headers={"Authorization": f"Bearer {payer['access_token']}"},
            json={"delegate_to": helper["agent_id"], "authorization_details": [grant]},
        )

    handed = delegate(payment("100", calls=2))
    assert handed.status_code == 200, handed.text
    for wider in (
        payment("600", calls=2),
        payment("100", "Q", calls=2),
        payment("100", day=1, calls=2),
    ):
        refused = delegate(wider)
        assert refused.status_code == 403, refused.text
        denial = refused.json()["denial_id"]
        assert [
            e for e in audit(broker, "delegation_attenuation_violation") if denial in e["detail"]
        ]
    (created_event,) = audit(broker, "delegation_created")
    assert "policy=allow[issue-within-parent]" in created_event["detail"]

    # The resource server: verifies offline, checks the grant, has the broker count calls.
    app = broker.post(
        "/v1/admin/apps", headers=admin, json={"name": "payments-rs", "scopes": ["read:x:*"]}
    ).json()
    verifier = Verifier(
        broker.url,
        audience="tasklease",
        credentials=AppCredentials(app["client_id"], app["client_secret"]),
    )
    service = serve(pay_service(verifier))
    bearer = {"Authorization": f"Bearer {handed.json()['access_token']}"}
    with httpx.Client(base_url=service.url) as client:
        assert client.post("/pay/P?amount=80", headers=bearer).status_code == 200
        over = client.post("/pay/P?amount=150", headers=bearer)
        assert over.status_code == 403 and over.json()["error_code"] == "insufficient_scope"
        assert client.post("/pay/Q?amount=10", headers=bearer).status_code == 403
        assert client.post("/pay/P?amount=20", headers=bearer).status_code == 200
        spent = client.post("/pay/P?amount=5", headers=bearer)  # max_calls 2: used up
        assert spent.status_code == 403
    assert len(audit(broker, "grant_call_counted")) == 2
    assert len(audit(broker, "grant_calls_exhausted")) == 1

    # The tenant's policy on disk decides the next delegation, and names itself.
    folder = tmp_path / "policies" / "default"
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").write_text(
        '@id("delegations-up-to-50-eur")\n'
        'forbid (principal, action == Action::"delegate", resource)\n'
        'when { resource has max_amount && resource.max_amount.greaterThan(decimal("50.0")) };\n'
    )
    shown = broker.post("/v1/admin/policy/reload", headers=admin).json()
    assert "delegations-up-to-50-eur" in shown["policies"] and shown["failure"] is None
    capped = delegate(payment("100", calls=2))
    assert capped.status_code == 403
    (denied,) = [
        e for e in audit(broker, "delegation_denied") if capped.json()["denial_id"] in e["detail"]
    ]
    assert "policy=deny[delegations-up-to-50-eur]" in denied["detail"]
    assert delegate(payment("40", calls=1)).status_code == 200
    assert audit(broker, "policy_loaded")

    # A broken file is refused whole: the set in force stays.
    (folder / "broken.cedar").write_text(
        '@id("oops") permit (principal, action, resource) when { nope };'
    )
    shown = broker.post("/v1/admin/policy/reload", headers=admin).json()
    assert shown["failure"] and "delegations-up-to-50-eur" in shown["policies"]
    assert delegate(payment("100", calls=2)).status_code == 403
    assert audit(broker, "policy_load_failed")
    shutil.rmtree(folder)  # no directory: the default policy again
    shown = broker.post("/v1/admin/policy/reload", headers=admin).json()
    assert shown["origin"] == "built-in default"
    verifier.close()


def test_a_policy_nested_too_deeply_is_refused_whole_and_the_broker_stays_up(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "policies" / "default"
    folder.mkdir(parents=True)
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    deep = folder / "deep.cedar"
    policy = '@id("deep")\npermit (principal, action, resource) when {{ {} }};\n'
    deep.write_text(policy.format("context.depth" + " + 1" * 500 + " > 0"))
    broker = launch_broker(tmp_path / "data", {"TASKLEASE_POLICY_DIR": str(folder.parent)})
    try:
        admin = broker.admin_headers()
        launch = {"agent_name": "a", "authorization_details": [payment("5")], "ttl": 60}
        # At the start: no set in force, every decision denies.
        shown = broker.get("/v1/admin/policy", headers=admin).json()
        assert "deep.cedar: a policy has too many operators" in shown["failure"]
        assert shown["policies"] == []
        assert broker.post("/v1/admin/launch-tokens", headers=admin, json=launch).status_code == 403
        deep.unlink()
        shown = broker.post("/v1/admin/policy/reload", headers=admin).json()
        assert shown["failure"] is None and "operator-launch" in shown["policies"]

        # On reload: 800 parentheses would overflow the stack of Cedar's parser.
        deep.write_text(policy.format("(" * 800 + "context.within_ceiling" + ")" * 800))
        reloaded = broker.post("/v1/admin/policy/reload", headers=admin)
        assert reloaded.status_code == 200, reloaded.text
        shown = reloaded.json()
        assert "deep.cedar: nested too deeply" in shown["failure"]
        assert "operator-launch" in shown["policies"]  # the set in force stays
        assert broker.post("/v1/admin/launch-tokens", headers=admin, json=launch).status_code == 201
        at_start, on_reload = (e["detail"] for e in audit(broker, "policy_load_failed"))
        assert "too many operators" in at_start and "nested too deeply" in on_reload
        assert broker.proc.poll() is None and broker.get("/v1/health").status_code == 200
    finally:
        stop_broker(broker)


def test_a_path_member_narrows_at_a_slash_through_the_broker(broker: RunningBroker) -> None:
    """An operator's type whose ``folder`` narrows by ``path``: an agent granted
    ``/data/alice`` hands on ``/data/alice/reports``, never ``/data/alice-archive`` nor a
    way out through dot segments or encoded slashes; each refusal audited once."""
    admin = broker.admin_headers()
    schema = {
        "type": "object",
        "properties": {"type": {"const": "files"}, "folder": {"type": "string"}},
        "required": ["folder"],
        "additionalProperties": False,
    }
    added = broker.post(
        "/v1/admin/grant-types",
        headers=admin,
        json={"name": "files", "schema": schema, "narrowing": {"folder": "path"}},
    )
    assert added.status_code == 201, added.text
    alice = {"type": "files", "folder": "/data/alice"}
    created = broker.post(
        "/v1/admin/launch-tokens",
        headers=admin,
        json={
            "agent_name": "filer",
            "authorization_details": [alice],
            "single_use": False,
            "max_uses": 2,
            "ttl": 600,
        },
    )
    assert created.status_code == 201, created.text
    launch = created.json()["launch_token"]
    holder = register(broker, launch, [alice])
    helper = register(broker, launch, [alice])

    def delegate(folder: str) -> httpx.Response:
        return broker.post(
            "/v1/delegate",
            headers={"Authorization": f"Bearer {holder['access_token']}"},
            json={
                "delegate_to": helper["agent_id"],
                "authorization_details": [{"type": "files", "folder": folder}],
            },
        )

    handed = delegate("/data/alice/reports")
    assert handed.status_code == 200, handed.text
    assert handed.json()["authorization_details"] == [
        {"type": "files", "folder": "/data/alice/reports"}
    ]
    for wider in ("/data/alice-archive", "/data/alice/../bob", "/data/alice%2f..%2fbob"):
        refused = delegate(wider)
        assert refused.status_code == 403, (wider, refused.text)
        denial = refused.json()["denial_id"]
        events = audit(broker, "delegation_attenuation_violation")
        assert len([e for e in events if denial in e["detail"]]) == 1
