"""Every request: one access log record (method, route template, status, duration,
request id, never a token), counted and timed by route template and status; a
well-formed ``X-Request-ID`` is kept, echoed and written to the audit events, any other
replaced by a generated one."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
from e2e_support import RunningBroker, metrics_url, stop_broker


def _access_records(log: str) -> list[dict[str, object]]:
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "access":
                records.append(record)
    return records


def test_access_log_metrics_and_request_ids(start_broker: Callable[..., RunningBroker]) -> None:
    running = start_broker(env={"TASKLEASE_LOG_LEVEL": "info"})
    admin = running.admin_token()
    secret_in_query = "tl-query-secret-" + "q" * 20

    kept = running.get("/v1/health", headers={"X-Request-ID": "trace-4711.a:b"})
    assert kept.headers["x-request-id"] == "trace-4711.a:b"
    for bad in ("has space", "x" * 129, "semi;colon"):
        replaced = running.get("/v1/health", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["x-request-id"]), bad
    signed = running.post(
        "/v1/admin/auth",
        json={"secret": running.admin_secret},
        headers={"X-Request-ID": "audit-me-1"},
    )
    assert signed.status_code == 200
    events = running.get(
        "/v1/audit/events?event_type=admin_auth&limit=50",
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["events"]
    assert any(event["request_id"] == "audit-me-1" for event in events)

    app = running.create_app(["read:data:*"])
    assert running.get(f"/v1/admin/apps/{app['app_id']}", headers=running.admin_headers())
    assert running.get(f"/nowhere?token={secret_in_query}").status_code == 404
    tenant = running.create_tenant("acme")
    assert tenant.get("/v1/health").status_code == 200
    # A tenant's app asking beyond its ceiling: a scope rejection of the tenant's route.
    tenant_app = tenant.app_token(tenant.create_app(["read:data:*"]))
    beyond = tenant.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "a", "allowed_scope": ["write:data:*"]},
        headers={"Authorization": f"Bearer {tenant_app}"},
    )
    assert beyond.status_code == 403, beyond.text
    assert running.post("/v1/register", json={"nonce": "00"}).status_code == 400
    agent = running.register(["read:data:*"])
    for probe in ("probe-one", "probe-two"):  # an agent may not read apps: 403 each
        refused = running.get(
            f"/v1/admin/apps/{probe}", headers={"Authorization": f"Bearer {agent.access_token}"}
        )
        assert refused.status_code == 403, refused.text

    scrape = httpx.get(metrics_url(running), timeout=10).text
    stop_broker(running)
    log = running.log()
    assert secret_in_query not in log and admin not in log
    assert app["client_secret"] not in log

    records = _access_records(log)
    by_route = {(r["method"], r["route"], r["status"]) for r in records}
    assert ("GET", "/v1/health", 200) in by_route
    assert ("GET", "/v1/admin/apps/{app_id}", 200) in by_route
    assert ("GET", "unmatched", 404) in by_route
    assert ("GET", "/t/{tenant}/v1/health", 200) in by_route
    assert ("POST", "/v1/register", 400) in by_route
    [traced] = [r for r in records if r["request_id"] == "trace-4711.a:b"]
    assert traced["route"] == "/v1/health" and traced["client"] == "127.0.0.1"
    assert isinstance(traced["duration_ms"], float) and traced["duration_ms"] >= 0

    def sample(series: str) -> float:
        match = re.search(rf"^{re.escape(series)} (\S+)$", scrape, re.M)
        assert match, f"no {series}"
        return float(match[1])

    assert (
        sample('tasklease_http_requests_total{method="GET",route="/v1/health",status="200"}') >= 5
    )
    assert sample('tasklease_http_requests_total{method="GET",route="unmatched",status="404"}') == 1
    tenant_health = (
        'tasklease_http_requests_total{method="GET",route="/t/{tenant}/v1/health",status="200"}'
    )
    assert sample(tenant_health) == 1
    count = (
        "tasklease_http_request_duration_seconds_count"
        '{method="POST",route="/v1/register",status="400"}'
    )
    assert sample(count) == 1
    assert not re.search(r"^\w+_created[{ ]", scrape, re.M)  # one series per figure
    assert re.search(r"^process_resident_memory_bytes \S+$", scrape, re.M)
    assert secret_in_query not in scrape and "/nowhere" not in scrape
    # Scope rejections by route template too: a label never grows with what callers send.
    assert sample('tasklease_scope_rejections_total{endpoint="/v1/admin/apps/{app_id}"}') == 2
    assert "probe-one" not in scrape
    # ... whatever the tenant is called: labels stay bounded, and name no tenant.
    tenant_launch = 'tasklease_scope_rejections_total{endpoint="/t/{tenant}/v1/app/launch-tokens"}'
    assert sample(tenant_launch) == 1
    assert "/t/acme/" not in scrape
