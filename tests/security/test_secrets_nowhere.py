"""No secret reaches what a broker shows to whoever reads it: its service log (at debug),
the audit log (every field of every event), the metrics, the answers' error bodies and
headers, and the CLI's output. A real ``tasklease serve`` is driven through the
ceremonies, successful and refused, and through requests that carry secrets in odd
places; every byte of what it wrote is then searched for each secret and for its
base64, hex and URL-encoded forms. A secret a caller puts where a name belongs and that
comes back to that caller alone (a console filter's field, a CLI usage error) is not
probed: it goes nowhere the caller's own request did not."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from e2e_support import (
    ADMIN_SECRET,
    TASKLEASE,
    RunningBroker,
    dpop_proof,
    free_port,
    init_data_dir,
    launch_broker,
    metrics_url,
    run_cli,
    stop_broker,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


class Seen:
    """What the broker showed: answers (status, headers, body) and CLI outputs."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.secrets: dict[str, str] = {}

    def secret(self, name: str, value: str) -> str:
        self.secrets[f"{name}#{len(self.secrets)}"] = value
        return value

    def answer(self, label: str, resp: httpx.Response, *, shows: tuple[str, ...] = ()) -> None:
        """An answer; ``shows``: secrets the answer is meant to hand over (removed)."""
        text = f"{resp.status_code} {dict(resp.headers)} {resp.text}"
        for value in shows:
            text = text.replace(value, "<handed-over>")
        self.texts.append((label, text))


def _forms(value: str) -> list[str]:
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        raw.hex(),
    }
    if value.count(".") == 2 and value.startswith("eyJ"):  # a JWS: its signature alone
        forms.add(value.rsplit(".", 1)[1])
    return [f for f in forms if len(f) >= 12]


def _leaks(seen: Seen, where: list[tuple[str, str]]) -> list[str]:
    found = []
    for name, value in seen.secrets.items():
        for form in _forms(value):
            for label, text in where:
                if form in text:
                    at = text.index(form)
                    found.append(f"{name} in {label}: ...{text[max(0, at - 160) : at + 40]!r}")
                    break
    return found


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, Seen]]:
    env = {
        "TASKLEASE_LOG_LEVEL": "debug",
        "TASKLEASE_ADMIN_AUTH_BURST": "1000",
        "TASKLEASE_APP_AUTH_BURST": "1000",
        "TASKLEASE_METRICS_PUBLIC": "token",
    }
    broker = launch_broker(tmp_path_factory.mktemp("secrets-broker"), env)
    seen = Seen()
    try:
        _drive(broker, seen)
        yield broker, seen
    finally:
        stop_broker(broker)


def _drive(broker: RunningBroker, seen: Seen) -> None:  # noqa: PLR0915 - one long ceremony
    s = seen.secret
    s("admin-secret", broker.admin_secret)
    s("key-passphrase", (broker.data_dir / "key-passphrase").read_text().strip())
    for path in (broker.data_dir / "keys").glob("**/*"):
        if path.is_file() and "nonce" in path.name:
            s("nonce-secret", path.read_bytes().hex())
    _, signing = broker.signing_key()
    raw = signing.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    s("signing-key", base64.urlsafe_b64encode(raw).decode().rstrip("="))
    s("signing-key-b64", base64.b64encode(raw).decode())
    post, get = broker.post, broker.get

    # Admin sign-in: wrong, wrong type, overlong, right.
    wrong_admin = s("wrong-admin-secret", "not-the-admin-secret-" + secrets.token_hex(8))
    seen.answer("admin wrong", post("/v1/admin/auth", json={"secret": wrong_admin}))
    seen.answer("admin list", post("/v1/admin/auth", json={"secret": [broker.admin_secret]}))
    seen.answer("admin int", post("/v1/admin/auth", json={"secret": {"x": broker.admin_secret}}))
    seen.answer("admin long", post("/v1/admin/auth", json={"secret": broker.admin_secret * 500}))
    seen.answer(
        "admin v1", post("/v1/admin/auth", json={"client_id": "x", "client_secret": wrong_admin})
    )
    seen.answer(
        "admin form", post("/v1/admin/auth", content=f"secret={wrong_admin}".encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    )  # fmt: skip
    seen.answer(
        "admin broken json", post("/v1/admin/auth", content=b'{"secret": "' + wrong_admin.encode(),
                                  headers={"content-type": "application/json"})
    )  # fmt: skip
    seen.answer(
        "admin bad utf8",
        post("/v1/admin/auth", content=b'{"secret": "\xff' + wrong_admin.encode() + b'"}',
             headers={"content-type": "application/json"}),
    )  # fmt: skip
    seen.answer("admin query", post(f"/v1/admin/auth?secret={wrong_admin}", json={}))
    resp = post("/v1/admin/auth", json={"secret": broker.admin_secret})
    admin = s("admin-token", resp.json()["access_token"])
    seen.answer("admin ok", resp, shows=(admin,))
    ah = {"Authorization": f"Bearer {admin}"}

    # Operators: create, sign in wrong and right, rotate.
    resp = post("/v1/admin/operators", json={"name": "olga", "role": "operator"}, headers=ah)
    op_secret = s("operator-secret", resp.json()["secret"])
    seen.answer("operator create", resp, shows=(op_secret,))
    seen.answer(
        "operator wrong",
        post("/v1/operator/auth", json={"name": "olga", "secret": op_secret[:-2] + "zz"}),
    )
    seen.answer("operator nobody", post("/v1/operator/auth", json={"name": op_secret}))
    seen.answer(
        "operator type", post("/v1/operator/auth", json={"name": "olga", "secret": [op_secret]})
    )
    resp = post("/v1/operator/auth", json={"name": "olga", "secret": op_secret})
    op_token = s("operator-token", resp.json()["access_token"])
    seen.answer("operator ok", resp, shows=(op_token,))
    resp = post("/v1/admin/operators/olga/rotate", json={}, headers=ah)
    if resp.status_code == 200:
        s("operator-rotated", resp.json()["secret"])
        seen.answer("operator rotate", resp, shows=(resp.json()["secret"],))
    else:
        seen.answer("operator rotate", resp)

    # A tenant: its first admin's secret, signed in with wrongly and rightly.
    resp = post("/v1/admin/tenants", json={"name": "acme"}, headers=ah)
    assert resp.status_code == 201, resp.text
    tenant_secret = s("tenant-admin-secret", resp.json()["admin_secret"])
    seen.answer("tenant create", resp, shows=(tenant_secret,))
    seen.answer(
        "tenant wrong",
        post("/t/acme/v1/operator/auth", json={"name": "admin", "secret": wrong_admin}),
    )
    seen.answer(
        "tenant secret elsewhere",
        post("/v1/operator/auth", json={"name": "admin", "secret": tenant_secret}),
    )
    resp = post("/t/acme/v1/operator/auth", json={"name": "admin", "secret": tenant_secret})
    tenant_token = s("tenant-token", resp.json()["access_token"])
    seen.answer("tenant ok", resp, shows=(tenant_token,))
    seen.answer(
        "tenant token at default",
        get("/v1/admin/agents", headers={"Authorization": f"Bearer {tenant_token}"}),
    )

    # Apps: create, sign in wrong and right, client credentials, launch tokens.
    resp = post("/v1/admin/apps", json={"name": "leaky", "scopes": ["read:data:*"]}, headers=ah)
    app = resp.json()
    client_secret = s("client-secret", app["client_secret"])
    seen.answer("app create", resp, shows=(client_secret,))
    cid = app["client_id"]
    wrong_client = s("wrong-client-secret", secrets.token_hex(32))
    seen.answer(
        "app wrong", post("/v1/app/auth", json={"client_id": cid, "client_secret": wrong_client})
    )
    seen.answer(
        "app unknown",
        post("/v1/app/auth", json={"client_id": client_secret, "client_secret": client_secret}),
    )
    seen.answer(
        "app type",
        post("/v1/app/auth", json={"client_id": cid, "client_secret": {"s": client_secret}}),
    )
    seen.answer(
        "app secret as id",
        post("/v1/app/auth", json={"client_id": f"x{client_secret}", "client_secret": "x"}),
    )
    seen.answer(
        "cc wrong basic",
        post("/v1/oauth/token", data={"grant_type": "client_credentials"},
             auth=(cid, wrong_client)),
    )  # fmt: skip
    seen.answer(
        "cc bad basic",
        post("/v1/oauth/token", data={"grant_type": "client_credentials"},
             headers={"Authorization": "Basic " + base64.b64encode(
                 f"{cid}{client_secret}".encode()).decode() + "!"}),
    )  # fmt: skip
    seen.answer(
        "cc both",
        post("/v1/oauth/token", data={"grant_type": "client_credentials", "client_id": cid,
             "client_secret": client_secret}, auth=(cid, client_secret)),
    )  # fmt: skip
    seen.answer(
        "cc wrong grant",
        post("/v1/oauth/token", data={"grant_type": client_secret, "client_id": cid,
             "client_secret": client_secret}),
    )  # fmt: skip
    seen.answer(
        "cc assertion",
        post("/v1/oauth/token", data={"grant_type": "client_credentials",
             "client_assertion": admin, "client_assertion_type":
             "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
    )  # fmt: skip
    resp = post(
        "/v1/oauth/token", data={"grant_type": "client_credentials"}, auth=(cid, client_secret)
    )
    seen.answer("cc ok", resp, shows=(resp.json().get("access_token", "-"),))
    resp = post("/v1/app/auth", json={"client_id": cid, "client_secret": client_secret})
    app_token = s("app-token", resp.json()["access_token"])
    seen.answer("app ok", resp, shows=(app_token,))
    apph = {"Authorization": f"Bearer {app_token}"}
    resp = post(
        "/v1/app/launch-tokens",
        json={
            "agent_name": "a",
            "allowed_scope": ["read:data:*"],
            "max_uses": 5,
            "single_use": False,
        },
        headers=apph,
    )
    assert resp.status_code == 201, resp.text
    launch = s("launch-token", resp.json()["launch_token"])
    seen.answer("launch create", resp, shows=(launch,))

    # Registration: wrong launch token, right one, with DPoP.
    body, key = broker.register_body(secrets.token_hex(32), ["read:data:x"])
    s("wrong-launch", body["launch_token"])
    seen.answer("register wrong launch", post("/v1/register", json=body))
    body, key = broker.register_body(launch, ["read:data:x"])
    body["task_id"] = launch  # a secret where a name belongs
    seen.answer("register launch as task", post("/v1/register", json=body))
    body, key = broker.register_body(launch, ["write:data:x"])
    seen.answer("register wider", post("/v1/register", json=body))
    body, key = broker.register_body(launch, ["read:data:x"])
    body["launch_token"] = [launch]
    seen.answer("register launch type", post("/v1/register", json=body))
    body, key = broker.register_body(launch, ["read:data:x"])
    proof = s("dpop-proof", dpop_proof(key, "POST", f"{broker.url}/v1/register"))
    resp = post("/v1/register", json=body, headers={"DPoP": proof})
    agent = s("agent-token", resp.json()["access_token"])
    agent_id = resp.json()["agent_id"]
    seen.answer("register ok", resp, shows=(agent,))

    def dp(method: str, path: str, token: str) -> dict[str, str]:
        proof = s("dpop-proof", dpop_proof(key, method, f"{broker.url}{path}", token))
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    # A second agent, bearer, to delegate to.
    body2, key2 = broker.register_body(launch, ["read:data:x"])
    resp = post("/v1/register", json=body2)
    agent2 = s("agent2-token", resp.json()["access_token"])
    agent2_id = resp.json()["agent_id"]
    seen.answer("register2 ok", resp, shows=(agent2,))

    # Renewal: as bearer (refused: bound), with a stale proof, right.
    seen.answer(
        "renew as bearer", post("/v1/token/renew", headers={"Authorization": f"Bearer {agent}"})
    )
    seen.answer(
        "renew proof replay", post("/v1/token/renew", headers={"Authorization": f"DPoP {agent}",
                                                                "DPoP": proof})
    )  # fmt: skip
    resp = post("/v1/token/renew", headers=dp("POST", "/v1/token/renew", agent))
    renewed = s("renewed-token", resp.json()["access_token"])
    seen.answer("renew ok", resp, shows=(renewed,))
    seen.answer(
        "renew spent", post("/v1/token/renew", headers=dp("POST", "/v1/token/renew", agent))
    )

    # Delegation, exchange, validation, introspection, revocation.
    resp = post(
        "/v1/delegate", json={"delegate_to": agent2_id, "scope": ["read:data:x"]},
        headers=dp("POST", "/v1/delegate", renewed),
    )  # fmt: skip
    if resp.status_code == 200:
        s("delegated-token", resp.json()["access_token"])
        seen.answer("delegate ok", resp, shows=(resp.json()["access_token"],))
    else:
        seen.answer("delegate", resp)
    seen.answer(
        "delegate to token",
        post("/v1/delegate", json={"delegate_to": renewed, "scope": ["read:data:x"]},
             headers=dp("POST", "/v1/delegate", renewed)),
    )  # fmt: skip
    seen.answer(
        "delegate scope token",
        post("/v1/delegate", json={"delegate_to": agent2_id, "scope": [renewed]},
             headers=dp("POST", "/v1/delegate", renewed)),
    )  # fmt: skip
    resp = post(
        "/v1/oauth/token",
        data={"grant_type": EXCHANGE, "subject_token": agent2, "subject_token_type": ACCESS,
              "scope": "read:data:x"},
        headers={"Authorization": f"Bearer {agent2}"},
    )  # fmt: skip
    if resp.status_code == 200:
        s("exchanged", resp.json()["access_token"])
        seen.answer("exchange ok", resp, shows=(resp.json()["access_token"],))
    else:
        seen.answer("exchange", resp)
    seen.answer(
        "exchange bad type",
        post("/v1/oauth/token", data={"grant_type": EXCHANGE, "subject_token": agent2,
             "subject_token_type": agent2}),
    )  # fmt: skip
    seen.answer(
        "exchange actor bad",
        post("/v1/oauth/token", data={"grant_type": EXCHANGE, "subject_token": agent2 + "x",
             "subject_token_type": ACCESS, "actor_token": renewed, "actor_token_type": ACCESS,
             "resource": f"https://x/{agent2}"}),
    )  # fmt: skip
    seen.answer(
        "exchange scope",
        post("/v1/oauth/token", data={"grant_type": EXCHANGE, "subject_token": agent2,
             "subject_token_type": ACCESS, "scope": agent2}),
    )  # fmt: skip
    seen.answer("validate ok", post("/v1/token/validate", json={"token": agent2}))
    seen.answer(
        "validate tampered", post("/v1/token/validate", json={"token": agent2[:-3] + "AAA"})
    )
    seen.answer("validate admin", post("/v1/token/validate", json={"token": [admin]}))
    seen.answer("introspect", post("/v1/introspect", data={"token": agent2}, headers=apph))
    seen.answer("introspect anon", post("/v1/introspect", data={"token": agent2}))
    seen.answer(
        "introspect aud",
        post("/v1/introspect", data={"token": agent2, "audience": agent2}, headers=apph),
    )
    seen.answer(
        "token revoke other",
        post("/v1/token/revoke", data={"token": renewed},
             headers={"Authorization": f"Bearer {agent2}"}),
    )  # fmt: skip
    seen.answer("revoke token target", post("/v1/revoke", json={"level": "token", "target": agent2},
                                            headers=ah))  # fmt: skip
    seen.answer("revoke agent", post("/v1/revoke", json={"level": "agent", "target": agent2_id},
                                     headers=ah))  # fmt: skip
    seen.answer("revoke level", post("/v1/revoke", json={"level": admin, "target": agent2_id},
                                     headers=ah))  # fmt: skip

    # Tokens where they do not belong.
    seen.answer("token in query", get(f"/v1/audit/events?access_token={admin}"))
    seen.answer("token in query2", get(f"/v1/admin/agents?token={admin}&x={client_secret}"))
    seen.answer("token in path", get(f"/v1/admin/apps/{admin}", headers=ah))
    seen.answer("secret in path", get(f"/v1/admin/apps/{client_secret}", headers=ah))
    seen.answer("token in unrouted path", get(f"/v1/nothing/{admin}/{client_secret}"))
    seen.answer("token in tenant path", get(f"/t/{client_secret}/v1/health"))
    seen.answer(
        "token in tenant path2", post(f"/t/{admin}/v1/admin/auth", json={"secret": wrong_admin})
    )
    seen.answer("token as request id", get("/v1/health", headers={"X-Request-ID": launch}))
    seen.answer("token in traceparent", get("/v1/health", headers={"traceparent": admin}))
    seen.answer(
        "broken bearer", get("/v1/admin/agents", headers={"Authorization": f"Bearer {admin}x y"})
    )
    seen.answer(
        "basic where bearer", get("/v1/admin/agents", headers={"Authorization": f"Basic {admin}"})
    )
    seen.answer(
        "bearer truncated",
        get("/v1/admin/agents", headers={"Authorization": f"Bearer {admin[:-10]}"}),
    )
    seen.answer(
        "bearer secret",
        get("/v1/admin/agents", headers={"Authorization": f"Bearer {client_secret}"}),
    )
    seen.answer(
        "bearer overlong",
        get("/v1/admin/agents", headers={"Authorization": f"Bearer {admin * 3}"}),
    )
    seen.answer(
        "dpop garbage", post("/v1/token/renew", headers={"Authorization": f"DPoP {renewed}",
                                                        "DPoP": admin})
    )  # fmt: skip
    seen.answer(
        "dpop twice", post("/v1/token/renew", headers=[("Authorization", f"DPoP {renewed}"),
                           ("DPoP", proof), ("DPoP", proof)])
    )  # fmt: skip
    seen.answer(
        "two authorizations",
        get("/v1/admin/agents", headers=[("Authorization", f"Bearer {admin}"),
                                         ("Authorization", f"Bearer {app_token}")]),
    )  # fmt: skip
    seen.answer("audit filter token", get("/v1/audit/events", params={"agent_id": admin,
                "task_id": client_secret, "event_type": launch}, headers=ah))  # fmt: skip
    seen.answer("audit bad since", get("/v1/audit/events", params={"since": admin}, headers=ah))
    seen.answer("audit bad limit", get("/v1/audit/events", params={"limit": admin}, headers=ah))
    seen.answer(
        "app put secret",
        broker.client.put(f"/v1/admin/apps/{app['app_id']}", json={"name": client_secret},
                          headers=ah),
    )  # fmt: skip
    seen.answer(
        "app create secret name",
        post("/v1/admin/apps", json={"name": launch, "scopes": [admin]}, headers=ah),
    )
    seen.answer(
        "launch secret name",
        post("/v1/admin/launch-tokens", json={"agent_name": client_secret,
             "allowed_scope": [f"read:data:{admin}"]}, headers=ah),
    )  # fmt: skip
    seen.answer(
        "attestation evidence",
        post("/v1/register", json={**broker.register_body("", ["read:data:x"])[0],
             "launch_token": None, "attestation": {"type": "oidc", "evidence": admin}}),
    )  # fmt: skip
    seen.answer(
        "attestation attestor",
        post("/v1/register", json={**broker.register_body("", ["read:data:x"])[0],
             "launch_token": None, "attestation": {"type": "oidc", "evidence": admin,
             "attestor": client_secret}}),
    )  # fmt: skip
    seen.answer("heartbeat", post("/v1/heartbeat", json={"agent_id": admin},
                                  headers={"Authorization": f"Bearer {agent2}"}))  # fmt: skip
    seen.answer("discovery", get(f"/v1/discovery/{admin}"))
    seen.answer(
        "federation add",
        post("/v1/admin/federations", json={"trust_domain": "peer.example",
             "bundle_endpoint": f"https://user:{client_secret}@127.0.0.1:1/b",
             "client_id": "x", "client_secret": client_secret}, headers=ah),
    )  # fmt: skip
    seen.answer(
        "attestor add",
        post("/v1/admin/attestors", json={"name": "o", "type": "oidc",
             "issuer": f"https://user:{client_secret}@127.0.0.1:1/", "audience": "x"},
             headers=ah),
    )  # fmt: skip
    seen.answer("admin release", post("/v1/token/release", headers=ah))
    seen.answer("admin after release", get("/v1/admin/agents", headers=ah))

    # Metrics (both doors) and the audit log, read by a fresh admin.
    resp = post("/v1/admin/auth", json={"secret": broker.admin_secret})
    admin2 = s("admin2-token", resp.json()["access_token"])
    ah2 = {"Authorization": f"Bearer {admin2}"}
    seen.answer("metrics listener", httpx.get(metrics_url(broker)))
    seen.answer("metrics public", get("/v1/metrics", headers=ah2))
    events: list[Any] = []
    offset = 0
    while True:
        page = get("/v1/audit/events", params={"offset": offset, "limit": 1000}, headers=ah2)
        assert page.status_code == 200, page.text
        got = page.json()["events"]
        events += got
        offset += len(got)
        if not got or offset >= page.json()["total"]:
            break
    seen.texts.append(("audit events", json.dumps(events)))
    tenant_events = get(
        "/t/acme/v1/audit/events",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {tenant_token}"},
    )
    assert tenant_events.status_code == 200, tenant_events.text
    seen.texts.append(("tenant audit events", tenant_events.text))
    seen.texts.append(("audit events raw", page.text))

    # The console: a wrong sign-in, a right one, and every page, with a secret in the
    # names and queries it takes.
    with httpx.Client(base_url=broker.url, timeout=15) as console:

        def signed(operator: str, secret: str) -> httpx.Response:
            form = console.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            return console.post(
                "/console/login",
                data={"csrf": csrf[1], "operator": operator, "secret": secret},
                headers={"origin": broker.url},
            )

        seen.answer("console wrong", signed("", wrong_admin))
        seen.answer("console secret as name", signed(client_secret, op_secret))
        answer = signed("", broker.admin_secret)
        assert answer.status_code == 303, answer.text
        session = s("console-session", console.cookies["tasklease_console"])
        seen.answer("console signed in", answer, shows=(session,))
        for path in (
            "/console/", "/console/live/overview", "/console/agents", "/console/live/agents",
            f"/console/agents/{agent_id}", f"/console/agents/{admin}",
            f"/console/tasks/{body['task_id']}", f"/console/tasks/{launch}",
            f"/console/tokens/{client_secret}", f"/console/tokens/{admin}",
            "/console/launch-tokens", "/console/apps", "/console/revocations",
            "/console/audit",
            "/console/audit/export",
            f"/console/revoke?level=agent&target={agent_id}", "/console/keys",
            f"/console/keys/retire?kid={client_secret}", f"/console/login?denial={admin}",
        ):  # fmt: skip
            seen.answer(f"console {path[:40]}", console.get(path))
        seen.answer(
            "console revoke form",
            console.post("/console/revoke", data={"csrf": admin, "level": "token",
                         "target": client_secret}, headers={"origin": broker.url}),
        )  # fmt: skip

    # The CLI, with wrong and right credentials.
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    cli_runs = [
        (["audit", "events", "--url", broker.url, "--limit", "5"],
         {"TASKLEASE_ADMIN_SECRET": wrong_admin}),
        (["audit", "events", "--url", broker.url, "--limit", "500"],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["token", "inspect", agent2, "--url", broker.url], {}),
        (["token", "inspect", admin + "x", "--url", broker.url], {}),
        (["token", "inspect", client_secret, "--url", broker.url], {}),
        (["revoke", "--url", broker.url, "--level", "token", "--target", admin + "x"],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["audit", "events", "--url", broker.url, "--agent-id", admin, "--since", client_secret],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["audit", "events", "--url", "http://127.0.0.1:1", "--limit", "1"],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["audit", "events", "--url", broker.url, "--admin-secret", wrong_admin], {}),
        (["status", "--url", broker.url], {"TASKLEASE_ADMIN_SECRET": wrong_admin}),
        (["app", "list", "--url", broker.url], {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["app", "show", client_secret, "--url", broker.url],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["operator", "list", "--url", broker.url],
         {"TASKLEASE_ADMIN_SECRET": broker.admin_secret}),
        (["operator", "list", "--url", broker.url],
         {"TASKLEASE_OPERATOR": "olga", "TASKLEASE_OPERATOR_SECRET": op_secret[:-1] + "q"}),
        (["doctor", "--data-dir", str(broker.data_dir)], {}),
        (["doctor", "--data-dir", str(broker.data_dir), "--json"], {}),
    ]  # fmt: skip
    home = broker.data_dir / "cli-home"
    home.mkdir(exist_ok=True)
    for args, extra in cli_runs:
        # In this process (its output captured at fds 1 and 2): what the command says is
        # what is searched, and 16 interpreters would spend most of this test importing.
        done = run_cli(args, {**base, "HOME": str(home), **extra})
        seen.texts.append((f"cli {' '.join(args[:2])} rc={done.returncode}",
                           done.stdout + "\n" + done.stderr))  # fmt: skip


def test_no_secret_in_the_service_log(driven: tuple[RunningBroker, Seen]) -> None:
    broker, seen = driven
    leaks = _leaks(seen, [("service log", broker.log())])
    assert not leaks, "\n".join(leaks)


def test_no_secret_in_answers_audit_metrics_or_cli(driven: tuple[RunningBroker, Seen]) -> None:
    _, seen = driven
    leaks = _leaks(seen, seen.texts)
    assert not leaks, "\n".join(leaks)


def test_the_drive_did_what_it_meant(driven: tuple[RunningBroker, Seen]) -> None:
    _, seen = driven
    labels = dict(seen.texts)
    assert labels["register ok"].startswith("200"), labels["register ok"]
    assert labels["renew ok"].startswith("200"), labels["renew ok"]
    assert labels["app ok"].startswith("200")
    assert labels["operator rotate"].startswith("200"), labels["operator rotate"]
    assert labels["tenant ok"].startswith("200"), labels["tenant ok"]
    assert labels["delegate ok"].startswith("200"), labels["delegate ok"]
    assert labels["exchange ok"].startswith("200"), labels["exchange ok"]
    assert labels["metrics listener"].startswith("200")
    assert any(label.startswith("cli audit") and "rc=0" in label for label in labels)


# Would fail if: a name typed at an operator sign-in that names no operator (the admin
# secret typed, or filled in by a password manager, into the name field) were written to
# the audit log, where an auditor, who may not hold the admin secret, reads it.
PASSPHRASE = "tidal-marsh-copper-violin-97-quartz"  # noqa: S105 - an admin secret shaped as a name
PASSPHRASE_CAPS = "Tidal Marsh Copper Violin 97 Quartz"  # noqa: S105 - one that is no name


@pytest.mark.parametrize("admin_secret", [PASSPHRASE, PASSPHRASE_CAPS])
def test_a_secret_typed_as_an_operator_name_is_not_audited(
    tmp_path: Path, admin_secret: str
) -> None:
    env = {"TASKLEASE_ADMIN_SECRET": admin_secret}
    broker = launch_broker(tmp_path / "broker", env, admin_secret=admin_secret)
    try:
        auditor = broker.operator_token("auditor")
        # The API's sign-in, with a secret and with a key's proof.
        tried = broker.post("/v1/operator/auth", json={"name": admin_secret, "secret": "x" * 30})
        nonce = broker.nonce()
        by_key = broker.post(
            "/v1/operator/auth",
            json={"name": admin_secret, "nonce": nonce, "signature": "A" * 86 + "=="},
        )
        # The console's sign-in form, the secret in the name field and nothing else.
        with httpx.Client(base_url=broker.url, timeout=15) as client:
            form = client.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            console = client.post(
                "/console/login",
                data={"csrf": csrf[1], "operator": admin_secret, "secret": ""},
                headers={"origin": broker.url},
            )
            # An operator's own name, no secret: the name is kept, as a wrong secret's.
            created = broker.post(
                "/v1/admin/operators",
                json={"name": "olga", "role": "operator"},
                headers=broker.admin_headers(),
            )
            assert created.status_code == 201, created.text
            form = client.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            known = client.post(
                "/console/login",
                data={"csrf": csrf[1], "operator": "olga", "secret": ""},
                headers={"origin": broker.url},
            )
        events = broker.get(
            "/v1/audit/events",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {auditor}"},
        )
    finally:
        stop_broker(broker)
    assert console.status_code == 401, console.text
    assert known.status_code == 401, known.text
    refusals = [tried, by_key]
    assert all(r.status_code in (400, 401) for r in refusals), [r.text for r in refusals]
    assert events.status_code == 200, events.text
    failed = [e for e in events.json()["events"] if e["event_type"] == "operator_auth_failed"]
    # Each refusal is audited (the API answers a name that is no name 400, unaudited).
    assert len(failed) == (3 if admin_secret == PASSPHRASE else 1) + 1, failed
    *failed, olga = failed
    assert "operator=olga " in olga["detail"] and olga["agent_id"] == "operator:olga", olga
    details = [(e["detail"], e["agent_id"]) for e in failed]
    assert all("operator=<unknown>" in d and not agent for d, agent in details), details
    for where in (events.text, broker.log(), console.text, *(r.text for r in refusals)):
        for form in _forms(admin_secret):
            assert form not in where, where


# Would fail if: a database setting whose password no URL redaction finds (a libpq
# keyword=value string, taken for a SQLite path; a PostgreSQL URL with parameters after
# a space) were named in full when serve refused it, or if one that does not parse
# (by Python's URL parser or by libpq's) stopped serve with a traceback.
DB_PASSWORD = "db-Pa55word-not-for-logs"  # noqa: S105 - the secret that must not leak


@pytest.mark.parametrize(
    "database",
    [
        f"host=127.0.0.1 port=1 user=tasklease password={DB_PASSWORD} dbname=tasklease",
        f"postgresql://tasklease@127.0.0.1:1/tasklease password={DB_PASSWORD}",
        f"postgresql://tasklease:{DB_PASSWORD}@[127.0.0.1:1/tasklease",
        # URLs a URL parser reads but libpq does not (a query parameter libpq has no
        # keyword for, a stray % in the password): libpq's parser refuses them when the
        # store is opened, after the configuration's check.
        f"postgresql://tasklease:{DB_PASSWORD}@127.0.0.1:1/tasklease?no_such_keyword=1",
        f"postgresql://tasklease:{DB_PASSWORD}%zz@127.0.0.1:1/tasklease",
    ],
)
def test_serve_refuses_a_database_setting_without_naming_its_password(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env["TASKLEASE_ADMIN_SECRET"] = ADMIN_SECRET
    init_data_dir(data, env)
    env["TASKLEASE_DATABASE"] = database
    env["TASKLEASE_LOG_LEVEL"] = "debug"
    done = subprocess.run(
        [TASKLEASE, "serve", "--data-dir", str(data), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "Traceback" not in said, said
    assert "database:" in said, said
    for form in _forms(DB_PASSWORD):
        assert form not in said, said
