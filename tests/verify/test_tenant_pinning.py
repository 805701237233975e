# Would fail if: a verifier pinned to one tenant (its base URL and issuer) accepted a token
# of another tenant or of the default tenant, or the snippet in docs/tenants.md broke.
"""Resource servers pin the tenants they trust: docs/tenants.md's verifier snippet, run."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest
from e2e_support import RunningBroker
from verify_support import app_credentials

from tasklease.verify import InvalidToken

DOC = Path(__file__).resolve().parents[2] / "docs" / "tenants.md"
AUDIENCE = "svc-a"  # one of the verify suite's broker's audiences

pytestmark = pytest.mark.slow


def _snippet(tenant: str) -> str:
    found = re.search(r"<!-- snippet[^>]*-->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert found, "no snippet in docs/tenants.md"
    code = found.group(1).replace("/t/acme", f"/t/{tenant}")
    return code.replace('"https://orders.example"', f'"{AUDIENCE}"')


def test_the_docs_verifier_accepts_its_tenant_only(
    broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"pin-{secrets.token_hex(3)}"
    tenant = broker.create_tenant(name)
    other = broker.create_tenant(f"other-{secrets.token_hex(3)}")
    creds = app_credentials(tenant)
    monkeypatch.setenv("TASKLEASE_URL", broker.url)
    monkeypatch.setenv("ACME_CLIENT_ID", creds.client_id)
    monkeypatch.setenv("ACME_CLIENT_SECRET", creds.client_secret)
    scope: dict[str, object] = {}
    exec(compile(_snippet(name), str(DOC), "exec"), scope)  # noqa: S102 - the doc's code
    verifier = scope["verifier"]
    mine = tenant.register(["read:data:*"])
    verified = verifier.verify(mine.access_token)  # type: ignore[attr-defined]
    assert verified.sub == mine.agent_id
    for view in (other, broker):
        theirs = view.register(["read:data:*"])
        with pytest.raises(InvalidToken):
            verifier.verify(theirs.access_token)  # type: ignore[attr-defined]
    verifier.close()  # type: ignore[attr-defined]
    tenant.client.close()
    other.client.close()
    assert os.environ["TASKLEASE_URL"] == broker.url
