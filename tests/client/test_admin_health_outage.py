"""``AdminClient.health`` (``tasklease status``) while the broker cannot sign anyone in.

Seen under faults: with PostgreSQL stopped under a running broker, ``tasklease status``
run with the admin secret configured (as an operator's shell has it) printed only
``error: storage is unavailable (service_unavailable, HTTP 503)``: it signed in first,
and a sign-in is an audited write the broker refuses while storage is away. The health
report, which anyone may read and which says ``degraded`` with every reason (storage,
revocation state, writes, signing), was never asked for. A sign-in refused as
unavailable now falls back to that anonymous report.
"""

from __future__ import annotations

import httpx

from tasklease.client import AdminClient

DEGRADED = {
    "status": "degraded",
    "version": "",
    "uptime": 0,
    "audit_events_count": 0,
    "reason": "storage is unreachable; storage is not writable: storage is unavailable",
    "db_connected": False,
    "revocations_current": True,
}


def _broker(request: httpx.Request) -> httpx.Response:
    if request.url.path in ("/v1/admin/auth", "/v1/operator/auth"):
        body = {
            "type": "urn:tasklease:error:service_unavailable",
            "status": 503,
            "detail": "storage is unavailable",
            "error_code": "service_unavailable",
            "request_id": "r1",
        }
        headers = {"content-type": "application/problem+json", "retry-after": "5"}
        return httpx.Response(503, json=body, headers=headers)
    if request.url.path == "/v1/health":
        assert "authorization" not in request.headers
        return httpx.Response(200, json=DEGRADED)
    return httpx.Response(404)


def test_health_with_credentials_gives_the_degraded_report_when_sign_in_is_unavailable() -> None:
    for admin in (
        AdminClient("https://b.test", "s" * 32, transport=httpx.MockTransport(_broker)),
        AdminClient(
            "https://b.test",
            None,
            operator="oncall",
            operator_secret="s" * 32,
            transport=httpx.MockTransport(_broker),
        ),
    ):
        with admin:
            assert admin.health() == DEGRADED
