"""RFC 9457: Problem Details for HTTP APIs.

Every refusal of the running broker, on its own routes and on paths it does not serve.
"""

from __future__ import annotations

from typing import Any

import httpx
from conformance_support import Kit

NOT_APPLICABLE = {
    "s3_1_4 title localisation": "titles are HTTP status phrases in English",
    "s5 XML format": "JSON only (application/problem+json)",
}


def _problems(kit: Kit) -> list[httpx.Response]:
    return [
        kit.post("/v1/register", json={}),  # 400
        kit.post("/v1/token/renew"),  # 401
        kit.post("/v1/revoke", json={"level": "x"}, headers={"Authorization": "Bearer a.b.c"}),
        kit.get("/v1/no-such-route"),  # 404
        kit.broker.client.delete("/v1/challenge"),  # 405
    ]


def test_rfc9457_s3_media_type_is_problem_json(kit: Kit) -> None:
    """§3 and §6.1: problems are `application/problem+json`."""
    for answer in _problems(kit):
        assert answer.headers["content-type"] == "application/problem+json", answer.url


def test_rfc9457_s3_1_members_and_status_match(kit: Kit) -> None:
    """§3.1: `type` (a URI reference), `title`, `status` (the HTTP status), `detail` and
    `instance` (the request's path)."""
    for answer in _problems(kit):
        body: dict[str, Any] = answer.json()
        assert body["status"] == answer.status_code
        assert body["type"].startswith("urn:tasklease:error:")
        assert isinstance(body["title"], str) and body["title"]
        assert isinstance(body["detail"], str)
        assert body["instance"] == answer.request.url.path


def test_rfc9457_s3_1_1_type_names_the_problem_and_title_is_constant(kit: Kit) -> None:
    """§3.1.1 and §3.1.3: the same problem type keeps its `title` (the status phrase)."""
    first, second = kit.post("/v1/token/renew"), kit.post("/v1/delegate", json={})
    assert first.json()["type"] == second.json()["type"] == "urn:tasklease:error:unauthorized"
    assert first.json()["title"] == second.json()["title"] == "Unauthorized"


def test_rfc9457_s3_2_extension_members_leave_the_standard_ones_alone(kit: Kit) -> None:
    """§3.2: extensions (`error_code`, `request_id`, `denial_id`, RFC 6749's `error`) sit
    beside the standard members; a client that ignores them reads a plain problem."""
    answer = kit.post("/v1/token/renew", headers={"Authorization": "Bearer a.b.c"})
    body = answer.json()
    assert body["error_code"] == "unauthorized" and body["request_id"]
    assert body["denial_id"].startswith("den_") and body["error"] == "invalid_token"
    assert {"type", "title", "status", "detail", "instance"} <= set(body)


def test_rfc9457_s4_405_carries_allow(kit: Kit) -> None:
    """§4 (RFC 9110 §15.5.6): a 405 problem still carries `Allow`."""
    answer = kit.broker.client.delete("/v1/challenge")
    assert answer.status_code == 405 and "GET" in answer.headers["allow"]
