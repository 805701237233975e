"""docs/attestation.md run as written: the Kubernetes and GitHub Actions set-ups (the
settings and policy files, the `tasklease attestor` commands, the agents' Python) and the
resource server's requirement, against a live broker and loopback issuers. Only the
hosts change (the issuer's and the broker's URLs), and the loopback issuer's CA is added
to the GitHub settings."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_support import ISSUER, make_broker
from http_support import Deployment
from issuers import (
    IssuerCA,
    OidcIssuer,
    Served,
    SigningKey,
    github_claims,
    k8s_claims,
    make_ca,
    mint,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.verify import InsufficientScope
from tasklease.verify._claims import parse_claims

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "attestation.md"
SECRET = "attestation-docs-admin-secret-0123456789"
K8S_ISSUER = "https://oidc.prod.example/clusters/7"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def block(kind: str, name: str) -> str:
    """The fenced block after ``<!-- {kind}: {name}; run by ... -->``."""
    text = DOC.read_text()
    marker = f"<!-- {kind}: {re.escape(name)}; run by tests/attestation/test_docs.py -->"
    pattern = marker + r"\n```\w+\n(.*?)```"
    found = re.search(pattern, text, re.S)
    assert found, f"no {kind} {name} in docs/attestation.md"
    return found.group(1)


def payload(token: str) -> dict[str, Any]:
    import base64

    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


@pytest.fixture
def ca(tmp_path: Path) -> IssuerCA:
    return make_ca(tmp_path)


@pytest.fixture
def broker() -> Iterator[Deployment]:
    instance = make_broker(admin_secret_hash=hash_secret(SECRET))
    served = Served(create_app(instance, background=False))
    deployment = Deployment(instance, served, httpx.Client(base_url=served.url, timeout=15))
    yield deployment
    deployment.stop()


def run_commands(commands: str, broker: Deployment, cwd: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        HOME=str(cwd),
        XDG_CONFIG_HOME=str(cwd / ".config"),
        COLUMNS="200",
        TASKLEASE_URL=broker.url,
        TASKLEASE_ADMIN_SECRET=SECRET,
    )
    outputs = []
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "tasklease"
        result = subprocess.run(
            [sys.executable, "-m", "tasklease.cli.main", *argv[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=60,
        )
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        outputs.append(result.stdout)
    return outputs


def test_the_kubernetes_set_up_as_documented(
    broker: Deployment, ca: IssuerCA, tmp_path: Path
) -> None:
    issuer = OidcIssuer(ca, keys=[SigningKey.generate("RS256")]).start()
    try:
        work = tmp_path / "work"
        work.mkdir()
        settings = block("file", "k8s-settings.json").replace(K8S_ISSUER, issuer.url)
        (work / "k8s-settings.json").write_text(settings)
        (work / "k8s-policy.json").write_text(block("file", "k8s-policy.json"))
        (work / "issuer-ca.pem").write_text(ca.pem)
        sample = mint(issuer.keys[0], k8s_claims(issuer.url, ISSUER, broker.now()))
        (work / "sample-token").write_text(sample)
        added, tested = run_commands(block("commands", "k8s"), broker, work)
        assert "attestor prod (k8s_sat) added" in added
        assert "read:invoices:*" in tested and "agent-runner" in tested
        # A fact's name longer than the column stays apart from its value.
        assert "  service_account agent-runner" in tested.splitlines()
        # The pod's token, mounted where the pod spec puts it (here: a file of the test).
        token_path = work / "token"
        token_path.write_text(mint(issuer.keys[0], k8s_claims(issuer.url, ISSUER, broker.now())))
        code = (
            block("snippet", "k8s agent")
            .replace('"https://broker.example",\n', f'"{broker.url}",\n', 1)
            .replace('"/var/run/secrets/tasklease/token"', repr(str(token_path)))
        )
        scope: dict[str, Any] = {}
        exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented snippet
        token = scope["headers"]["Authorization"].removeprefix("Bearer ")
        claims = payload(token)
        assert claims["scope"] == "read:invoices:*"
        assert claims["exp"] - claims["iat"] == 300
        assert claims["attest"]["facts"]["namespace"] == "billing"
        declared = claims["attest"]["declared"]
        assert declared["model"] == "acme/agent/3" and declared["sdk"].startswith(
            "tasklease-python"
        )
        # The resource server's requirement, as documented.
        rules: dict[str, Any] = {}
        exec(compile(block("snippet", "resource server"), str(DOC), "exec"), rules)  # noqa: S102
        rules["allow_payment"](parse_claims(claims))
        other = {**claims, "attest": {**claims["attest"], "facts": {"namespace": "ops"}}}
        with pytest.raises(InsufficientScope):
            rules["allow_payment"](parse_claims(other))
        declared_only = {**claims, "attest": {"type": "launch_token", "declared": {"model": "x"}}}
        with pytest.raises(InsufficientScope):
            rules["allow_payment"](parse_claims(declared_only))
    finally:
        issuer.stop()


def test_the_github_actions_set_up_as_documented(
    broker: Deployment, ca: IssuerCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    github = OidcIssuer(ca, keys=[SigningKey.generate("RS256")]).start()
    try:
        work = tmp_path / "work"
        work.mkdir()
        settings = json.loads(
            block("file", "github-settings.json").replace(GITHUB_ISSUER, github.url)
        )
        settings["ca_pem"] = ca.pem  # the loopback issuer's CA; GitHub's is in the system store
        (work / "github-settings.json").write_text(json.dumps(settings))
        (work / "github-policy.json").write_text(block("file", "github-policy.json"))
        (added,) = run_commands(block("commands", "github"), broker, work)
        assert "attestor github (oidc) added" in added

        async def runner(request: Request) -> Response:
            if request.headers.get("authorization") != "Bearer runner-request-token":
                return Response(status_code=401)
            claims = github_claims(
                request.query_params["audience"], broker.now(), issuer=github.url
            )
            return JSONResponse({"count": 2000, "value": mint(github.keys[0], claims, typ="JWT")})

        endpoint = Served(Starlette(routes=[Route("/_apis/token", runner)]))
        try:
            monkeypatch.setenv(
                "ACTIONS_ID_TOKEN_REQUEST_URL", f"{endpoint.url}/_apis/token?api-version=2.0"
            )
            monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
            code = block("snippet", "github agent").replace(
                '"https://broker.example",\n', f'"{broker.url}",\n', 1
            )
            scope: dict[str, Any] = {}
            exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented snippet
        finally:
            endpoint.stop()
        claims = payload(scope["headers"]["Authorization"].removeprefix("Bearer "))
        assert claims["scope"] == "deploy:staging:web"
        assert claims["exp"] - claims["iat"] == 600
        assert claims["attest"]["facts"]["repository_id"] == "74"
        assert claims["attest"]["iss"] == github.url
    finally:
        github.stop()
