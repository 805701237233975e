"""No answer names a host the request's ``Host`` header chose: a trailing slash is not
redirected away (404), and ``/console`` goes on to ``/console/`` by path alone, at the
root and under a tenant."""

from __future__ import annotations

from e2e_support import RunningBroker

_FORGED = {"Host": "evil.example"}


def test_a_trailing_slash_is_not_found_and_names_no_host(broker: RunningBroker) -> None:
    for path in ("/v1/health/live/", "/v1/health/", "//evil.example/v1/health/live/"):
        answer = broker.client.get(path, headers=_FORGED, follow_redirects=False)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "location" not in answer.headers
        assert "evil.example" not in answer.text


def test_the_console_redirect_is_by_path(broker: RunningBroker) -> None:
    answer = broker.client.get("/console", headers=_FORGED, follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/console/"
    tenant = broker.create_tenant("slashes")
    inner = tenant.client.get("/console", headers=_FORGED, follow_redirects=False)
    assert inner.status_code == 307
    assert inner.headers["location"] == "/t/slashes/console/"
    landed = tenant.client.get("/console", follow_redirects=True)
    assert landed.status_code == 200
    assert str(landed.url).endswith("/t/slashes/console/login")
    tail = tenant.client.get("/v1/health/", headers=_FORGED, follow_redirects=False)
    assert tail.status_code == 404
    assert "location" not in tail.headers
