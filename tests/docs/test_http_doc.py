"""The HTTP routes, statuses and error codes README.md and docs/*.md name exist.

docs/api.md is generated from the routes (tests/http/test_openapi.py holds it to them);
the other documents are written by hand, and this file holds them to the application:

* every ``METHOD /path`` (or bare ``/v1/...`` path) they name is a route of the app, a
  tenant's ``/t/<name>/...`` being the same route under its prefix;
* every ``<status> `error_code``` pair they write is the status the broker answers that
  code with (``tasklease.http.problems.STATUS_BY_CODE``), or a verifier's code with the
  verifier's status.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.http.problems import STATUS_BY_CODE
from tasklease.storage import open_store
from tasklease.verify import _errors

ROOT = Path(__file__).resolve().parents[2]

# Generated, or a record of the past rather than a description of the product.
SKIPPED = {"api.md", "decisions.md", "performance-history.md"}
# Paths that name something other than the broker: a resource server's example route.
NOT_BROKER = {"/v1/orders/42"}

_MENTION = re.compile(
    r"(?:\b(GET|POST|PUT|DELETE|PATCH|HEAD)\s+`?|(?<![\w/.]))"
    r"(/(?:v1|\.well-known)(?:/[A-Za-z0-9_{}<>.\-*:]*)*|/t/[^/\s`]+/(?:v1|\.well-known)[^\s`]*)"
)


def _documents() -> list[Path]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [p for p in paths if p.name not in SKIPPED]


def _routes() -> list[tuple[str, re.Pattern[str]]]:
    # Every optional route served (/v1/metrics on the broker's port too).
    broker = Broker(
        Config(metrics_public="token"),
        open_store("memory://"),
        KeyRing.generate(),
        nonce_secret=b"x" * 32,
    )
    app = create_app(broker, background=False)
    found = []
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        template = re.escape(re.sub(r"\{[^}]*\}", "\0", route.path)).replace("\0", "[^/]+")
        # A {name:path} convertor spans slashes.
        if ":path}" in route.path:
            template = template.replace("[^/]+", ".+")
        for method in route.methods or {"GET"}:
            found.append((method, re.compile(f"^{template}$")))
    return found


def _normal(path: str) -> str:
    path = path.split("?", maxsplit=1)[0].replace("...", "X").rstrip(".,;:)")
    path = re.sub(r"^/t/[^/]+(?=/)", "", path)  # a tenant's prefix
    path = re.sub(r"<[^>]+>|\{[^}]+\}|\.\.\.|\*", "X", path)
    return path.rstrip("/") or "/"


def test_every_route_the_documents_name_exists() -> None:
    routes = _routes()
    wrong = []
    checked = 0
    for document in _documents():
        for match in _MENTION.finditer(document.read_text(encoding="utf-8")):
            checked += 1
            method, path = match[1], _normal(match[2])
            if match[2] in NOT_BROKER or path in ("/v1", "/t"):
                continue
            if path.endswith("/X"):  # "/v1/mutual/...": any route below it
                stem = path[: -len("/X")]
                if any(p.pattern.startswith(f"^{re.escape(stem)}/") for _, p in routes):
                    continue
            if not any(
                pattern.match(path) and method in (None, verb, "HEAD" if verb == "GET" else "")
                for verb, pattern in routes
            ):
                wrong.append(f"{document.name}: {method or ''} {match[2]}".replace("  ", " "))
    assert checked > 150, "the documents' routes were not found"
    assert wrong == [], "routes the documents name that the broker does not serve"


def _verifier_codes() -> dict[str, int]:
    """The codes a resource server's verifier answers 503 with: its VerifierUnavailable
    refusals (tasklease.verify.asgi)."""
    codes = {}
    for value in vars(_errors).values():
        if isinstance(value, type) and issubclass(value, _errors.VerifierUnavailable):
            code = getattr(value, "code", None)
            if isinstance(code, str):
                codes[code] = 503
    return codes


def test_every_status_and_error_code_pair_is_the_brokers() -> None:
    verifier = _verifier_codes()
    # OAuth's error codes (RFC 6750 section 3.1) in WWW-Authenticate, not problem codes.
    oauth = {"invalid_token": 401}
    wrong = []
    checked = 0
    for document in _documents():
        text = document.read_text(encoding="utf-8")
        for match in re.finditer(r"\b([1-5]\d\d)\s+`([a-z_]+)`", text):
            checked += 1
            status, code = int(match[1]), match[2]
            known = STATUS_BY_CODE.get(code) or verifier.get(code) or oauth.get(code)
            if known != status:
                wrong.append(f"{document.name}: {status} `{code}` (the code's status: {known})")
    assert checked > 40, "the documents' error codes were not found"
    assert wrong == []
