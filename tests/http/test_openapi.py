"""The OpenAPI document: generated from the wire declarations, complete, structurally
valid, served as built, true to the handlers, and described by docs/api.md."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import msgspec
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.routing import Route

from tasklease.client._holder import DPoPKey
from tasklease.core.broker import VERSION, Broker
from tasklease.core.config import DEFAULT_ISSUER, Config
from tasklease.core.discovery import statement
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.mutual import transcript
from tasklease.core.passwords import hash_secret
from tasklease.http import wire
from tasklease.http.app import create_app
from tasklease.http.openapi import WWW_AUTHENTICATE, openapi_document, openapi_json
from tasklease.http.problems import STATUS_BY_CODE
from tasklease.http.wire import ERROR_CODES, OPERATIONS, SHAPES, TAGS
from tasklease.rules import jws as _jws
from tasklease.rules.chainverify import derive
from tasklease.rules.messages import operator_sign_in_input
from tasklease.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
ADMIN_SECRET = "s" * 40
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


BASE = "http://testserver:8000"  # a port of its own: the origin DPoP proofs name


def _new_broker() -> Broker:
    # /v1/metrics served on this listener too (to operators' tokens), so it can be called;
    # the walk below signs an app in four times, each an attempt at the sign-in limit.
    config = Config(
        admin_secret_hash=hash_secret(ADMIN_SECRET), metrics_public="token", app_auth_burst=4
    )
    return Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"x" * 32)


@pytest.fixture
def doc() -> dict[str, Any]:
    return openapi_document()


class Client:
    """A synchronous face on httpx's ASGI transport (starlette's TestClient wants httpx2)."""

    def __init__(self) -> None:
        self.app = create_app(_new_broker(), background=False)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


@pytest.fixture
def client() -> Client:
    return Client()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# --- completeness ------------------------------------------------------------------------


def test_every_route_is_documented_and_every_documented_route_exists(doc: dict[str, Any]) -> None:
    app = create_app(_new_broker(), background=False)
    # Starlette's path convertors ({agent_id:path}) are OpenAPI templates ({agent_id}).
    routed = {
        (method, re.sub(r":\w+}", "}", route.path))
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema  # not: /console's redirect
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(method, path) for method, path, _ in _operations(doc)}
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented operations that are not routed"


def test_route_table_has_no_duplicates() -> None:
    keys = [(op.method, op.path) for op in OPERATIONS]
    assert len(keys) == len(set(keys))
    ids = [op.operation_id for op in OPERATIONS]
    assert len(ids) == len(set(ids))
    assert {op.tag for op in OPERATIONS} == set(TAGS)


# --- structure ------------------------------------------------------------------------------


def test_document_header(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    # The API's version, never the release's (anonymous callers read this document).
    assert doc["info"]["version"] == "v1" != VERSION
    assert doc["info"]["title"]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == scheme | {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = [node["$ref"] for node in _walk(doc) if "$ref" in node]
    assert refs
    for ref in refs:
        _resolve(doc, ref)


def test_every_path_parameter_is_declared(doc: dict[str, Any]) -> None:
    for method, path, op in _operations(doc):
        templated = set(re.findall(r"{([^}]+)}", path))
        params = op.get("parameters", []) + doc["paths"][path].get("parameters", [])
        declared = {p["name"] for p in params if p["in"] == "path"}
        assert templated == declared, f"{method} {path}"
        for p in params:
            assert p["in"] in ("path", "query", "header", "cookie")
            assert "schema" in p
            if p["in"] == "path":
                assert p["required"] is True, f"{method} {path}: {p['name']}"


def test_operations_are_well_formed(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    for method, path, op in _operations(doc):
        where = f"{method} {path}"
        assert op["summary"] and op["description"] and op["operationId"], where
        assert "**Authentication:**" in op["description"], where
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), where
        statuses = list(op["responses"])
        assert all(re.fullmatch(r"[1-5]\d\d", s) for s in statuses), where
        assert sum(s.startswith("2") for s in statuses) == 1, where
        assert "500" in statuses, where
        for status, response in op["responses"].items():
            assert response["description"], where
            if status[0] in "45":
                content = response["content"]
                assert content == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, where
                codes = [f["error_code"] for f in response["x-error-codes"]]
                assert codes and len(codes) == len(set(codes)), where
                for code in codes:
                    assert STATUS_BY_CODE[code] == int(status), f"{where}: {code}"
        if "requestBody" in op:
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert "413" in statuses and "400" in statuses, where
        if op["security"]:
            assert "401" in statuses, where


def test_problem_schema_lists_every_error_code(doc: dict[str, Any]) -> None:
    assert set(ERROR_CODES) == set(STATUS_BY_CODE)
    problem = doc["components"]["schemas"]["Problem"]
    fields = ["type", "title", "status", "detail", "instance", "error_code", "request_id", "hint"]
    fields += ["error", "error_description"]  # RFC 6749 section 5.2 members
    fields.append("denial_id")  # why-denied tracing (docs/security.md)
    assert list(problem["properties"]) == fields
    assert set(problem["required"]) == set(fields) - {
        "hint",
        "error",
        "error_description",
        "denial_id",
    }
    codes = [c["const"] for c in problem["properties"]["error_code"]["oneOf"]]
    assert codes == list(STATUS_BY_CODE)


def _without(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in keys}


def test_schemas_are_generated_from_the_wire_structs(doc: dict[str, Any]) -> None:
    _, generated = msgspec.json.schema_components(SHAPES, ref_template=wire.REF)
    schemas = doc["components"]["schemas"]
    for shape in SHAPES:
        name = shape.__name__
        ours, theirs = schemas[name], generated[name]
        assert _without(ours, "properties", "required") == _without(
            theirs, "properties", "required"
        ), name
        fields = msgspec.structs.fields(shape)
        assert list(ours["properties"]) == [f.encode_name for f in fields], name
        for field in fields:
            prop = ours["properties"][field.encode_name]
            made = theirs["properties"][field.encode_name]
            if "$ref" in made:  # a mapping documented by a Struct: only the reference stays
                assert prop == _without(made, "type", "default"), f"{name}.{field.name}"
            elif issubclass(shape, wire.Response):
                assert prop == _without(made, "default"), f"{name}.{field.name}"
            else:
                assert prop == made, f"{name}.{field.name}"
            if issubclass(shape, wire.Request):
                assert prop.get("description"), f"{name}.{field.name} is not described"
        if issubclass(shape, wire.Response):
            sent = [f.encode_name for f in fields if f.default is not msgspec.UNSET]
            assert ours["required"] == sent, name
    # Every body a route takes or answers is one of the wire Structs, and every Struct is
    # reachable from a route.
    requests = {op.request for op in OPERATIONS if op.request is not None}
    assert requests == {s for s in SHAPES if issubclass(s, wire.Request)}
    reachable: set[str] = set()
    pending = [
        ref
        for _, _, op in _operations(doc)
        for node in _walk(op)
        if isinstance(ref := node.get("$ref"), str)
    ]
    while pending:
        ref = pending.pop()
        if ref in reachable:
            continue
        reachable.add(ref)
        pending += [n["$ref"] for n in _walk(_resolve(doc, ref)) if "$ref" in n]
    named = {wire.REF.format(name=s.__name__) for s in SHAPES}
    assert named - reachable == set(), "schemas no route uses"


# --- serving -----------------------------------------------------------------------------


def test_served_document_equals_the_built_one(client: Client, doc: dict[str, Any]) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == doc
    assert response.content == openapi_json()


def test_document_is_a_fresh_copy() -> None:
    first = openapi_document()
    first["paths"].clear()
    assert openapi_document()["paths"]


# --- the document against the handlers ---------------------------------------------------


def _errors(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str) -> list[str]:
    """A small JSON Schema check: the keywords this document uses, strictly."""
    if "$ref" in schema:
        return _errors(doc, _resolve(doc, schema["$ref"]), value, at)
    if "oneOf" in schema and "type" not in schema:
        ok = [s for s in schema["oneOf"] if not _errors(doc, s, value, at)]
        return [] if len(ok) == 1 else [f"{at}: matches {len(ok)} of oneOf"]
    if "anyOf" in schema:
        some = any(not _errors(doc, s, value, at) for s in schema["anyOf"])
        return [] if some else [f"{at}: matches none of anyOf"]
    problems: list[str] = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{at}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: {value!r} not in {schema['enum']}")
    if "oneOf" in schema and not any(value == s.get("const") for s in schema["oneOf"]):
        problems.append(f"{at}: {value!r} is not one of the listed values")
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    if kind is not None and not checks[kind](value):
        return [*problems, f"{at}: {value!r} is not {kind}"]
    if kind == "array":
        for i, item in enumerate(value):
            problems += _errors(doc, schema.get("items", {}), item, f"{at}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{at}: missing {name}")
        for name, item in value.items():
            if name in props:
                problems += _errors(doc, props[name], item, f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{at}: undocumented field {name}")
    return problems


class Recorder:
    """Calls the app and holds every answer to what the document says of that route."""

    def __init__(self, client: Client, doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(
        self,
        method: str,
        template: str,
        *,
        path: str | None = None,
        token: str | None = None,
        expect: int,
        **kwargs: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        response = self.client.request(method, path or template, headers=headers, **kwargs)
        where = f"{method} {template} -> {response.status_code}"
        assert response.status_code == expect, f"{where}: {response.text}"
        op = self.doc["paths"][template][method.lower()]
        documented = op["responses"].get(str(response.status_code))
        assert documented is not None, f"{where}: status not documented"
        if response.status_code == 401 or "www-authenticate" in response.headers:
            pattern = self.doc["components"]["headers"]["WWWAuthenticate"]["schema"]["pattern"]
            assert pattern == WWW_AUTHENTICATE, where
            assert re.fullmatch(pattern, response.headers["www-authenticate"]), where
        self.seen.add((method, template, response.status_code))
        content = documented.get("content")
        if content is None:
            assert response.content == b"", where
            return None
        media, spec = next(iter(content.items()))
        assert response.headers["content-type"].startswith(media), where
        if not media.endswith("json"):
            return response.text
        body = response.json()
        problems = _errors(self.doc, spec["schema"], body, "body")
        assert problems == [], f"{where}: {problems}"
        if response.status_code >= 400:
            codes = [f["error_code"] for f in documented["x-error-codes"]]
            assert body["error_code"] in codes, f"{where}: {body['error_code']} not documented"
        return body


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _register(
    call: Recorder,
    launch_token: str,
    task: str,
    key: nacl.signing.SigningKey | None = None,
    details: list[dict[str, Any]] | None = None,
    dpop: DPoPKey | None = None,
) -> dict[str, Any]:
    key = key or nacl.signing.SigningKey.generate()
    nonce = call("GET", "/v1/challenge", expect=200)["nonce"]
    body = {
        "launch_token": launch_token,
        "nonce": nonce,
        "public_key": base64.b64encode(bytes(key.verify_key)).decode(),
        "signature": base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
        "orch_id": "orch-1",
        "task_id": task,
        "requested_scope": ["read:data:x"],
    }
    if details is not None:
        body.update(requested_scope=None, authorization_details=details)
    bound = {"DPoP": dpop.proof("POST", f"{BASE}/v1/register")} if dpop else {}
    result: dict[str, Any] = call("POST", "/v1/register", json=body, headers=bound, expect=200)
    return result


def _handshake_signature(key: nacl.signing.SigningKey, role: str, ticket: str, nb: str) -> str:
    """Sign a handshake transcript (docs/agents.md) from a broker ticket's claims."""
    claims = _jws.decode_unverified(ticket)[1]
    message = transcript(role, claims["hid"], claims["ini"], claims["rsp"], claims["na"], nb)
    return _b64(key.sign(message).signature)


def _heartbeat(key: nacl.signing.SigningKey, agent_id: str, token: str) -> dict[str, Any]:
    """A signed heartbeat body for ``token`` (its `jti` is part of the statement)."""
    token_jti = _jws.decode_unverified(token)[1]["jti"]
    ts, jti = int(time.time()), secrets.token_urlsafe(16)
    message = heartbeat_signing_input(agent_id, token_jti, ts, jti, False)
    return {"timestamp": ts, "jti": jti, "signature": _b64(key.sign(message).signature)}


def _stream_until_sync(client: Client, path: str, token: str) -> tuple[int, str, bytes]:
    """Read a server-sent event stream until its `sync` event, then hang up.

    (httpx's ASGI transport waits for a response to end, and this one does not.)
    """

    async def run() -> tuple[int, str, bytes]:
        synced = asyncio.Event()
        requested = False
        status, media, body = 0, "", b""

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await synced.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            nonlocal status, media, body
            if message["type"] == "http.response.start":
                status = message["status"]
                media = dict(message["headers"]).get(b"content-type", b"").decode()
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")
                if b"event: sync" in body:
                    synced.set()

        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
        }
        await asyncio.wait_for(client.app(scope, receive, send), 10)
        return status, media, body

    return asyncio.run(run())


def test_responses_match_the_document(client: Client, doc: dict[str, Any]) -> None:
    call = Recorder(client, doc)
    call("GET", "/v1/health", expect=200)
    call("GET", "/v1/health/live", expect=200)
    call("GET", "/v1/health/ready", expect=200)
    call("GET", "/v1/metrics", expect=401)
    call("GET", "/.well-known/jwks.json", expect=200)
    call("GET", "/v1/openapi.json", expect=200)

    call("POST", "/v1/admin/auth", json={"secret": "wrong"}, expect=401)
    call("POST", "/v1/admin/auth", json={"client_id": "a", "client_secret": "b"}, expect=400)
    admin = call("POST", "/v1/admin/auth", json={"secret": ADMIN_SECRET}, expect=200)[
        "access_token"
    ]
    call("GET", "/v1/metrics", token=admin, expect=200)
    detailed = call("GET", "/v1/health", token=admin, expect=200)
    assert detailed["signing_kid"] and detailed["version"]

    new_app = {"name": "demo-app", "scopes": ["read:data:*"]}
    app = call("POST", "/v1/admin/apps", token=admin, json=new_app, expect=201)
    call("POST", "/v1/admin/apps", token=admin, json=new_app, expect=409)
    call("POST", "/v1/admin/apps", token=admin, json={**new_app, "token_ttl": 5}, expect=400)
    call("GET", "/v1/admin/apps", token=admin, expect=200)
    one = f"/v1/admin/apps/{app['app_id']}"
    call("GET", "/v1/admin/apps/{app_id}", path=one, token=admin, expect=200)
    call("GET", "/v1/admin/apps/{app_id}", path=one + "x", token=admin, expect=404)
    call(
        "PUT", "/v1/admin/apps/{app_id}", path=one, token=admin, json={"token_ttl": 600}, expect=200
    )

    tenant = call("POST", "/v1/admin/tenants", token=admin, json={"name": "acme"}, expect=201)
    assert tenant["admin_secret"] and tenant["base_path"] == "/t/acme"
    taken = {"name": "acme", "trust_domain": "elsewhere.example"}
    call("POST", "/v1/admin/tenants", token=admin, json=taken, expect=409)
    call("POST", "/v1/admin/tenants", token=admin, json={"name": "default"}, expect=400)
    call("GET", "/v1/admin/tenants", token=admin, expect=200)
    # RFC 8414 metadata: the default tenant's, and a tenant's where section 3.1 puts it.
    for well_known in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ):
        meta = call("GET", well_known, expect=200)
        assert meta["issuer"] == "tasklease" and meta["token_endpoint"].endswith("/v1/oauth/token")
        inserted = f"{well_known}/t/{{tenant}}"
        acme = call("GET", inserted, path=f"{well_known}/t/acme", expect=200)
        assert acme["issuer"] == "tasklease/t/acme"
        call("GET", inserted, path=f"{well_known}/t/nobody", expect=404)
    call(
        "DELETE", "/v1/admin/tenants/{name}", path="/v1/admin/tenants/acme", token=admin, expect=200
    )
    call(
        "DELETE", "/v1/admin/tenants/{name}", path="/v1/admin/tenants/acme", token=admin, expect=404
    )

    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    app_token = call("POST", "/v1/app/auth", json=creds, expect=200)["access_token"]
    lt = {"agent_name": "worker", "allowed_scope": ["read:data:*"]}
    from_app = call("POST", "/v1/app/launch-tokens", token=app_token, json=lt, expect=201)
    from_admin = call("POST", "/v1/admin/launch-tokens", token=admin, json=lt, expect=201)
    call("POST", "/v1/admin/launch-tokens", token=app_token, json=lt, expect=403)
    call("POST", "/v1/admin/launch-tokens", json=lt, expect=401)

    first_key = nacl.signing.SigningKey.generate()
    first = _register(call, from_app["launch_token"], "task-1", first_key)
    second = _register(call, from_admin["launch_token"], "task-2")
    call("POST", "/v1/register", json={"nonce": "00"}, expect=400)

    call("POST", "/v1/token/validate", json={"token": first["access_token"]}, expect=200)
    call("POST", "/v1/token/validate", json={"token": "not-a-token"}, expect=200)
    call("POST", "/v1/token/validate", content=b"{", expect=400)

    renewed = call("POST", "/v1/token/renew", token=first["access_token"], expect=200)
    call("POST", "/v1/token/renew", token=first["access_token"], expect=401)
    call("POST", "/v1/token/renew", token=admin, expect=403)

    # Offline work reported late (docs/audit.md): a derivation, by an agent of its chain,
    # from a token bound to its key (a chain's root always is).
    holder_key = nacl.signing.SigningKey.generate()
    holder_dpop = DPoPKey(holder_key)
    lt_bound = call("POST", "/v1/admin/launch-tokens", token=admin, json=lt, expect=201)
    holder = _register(call, lt_bound["launch_token"], "task-3", holder_key, dpop=holder_dpop)
    offline = derive(
        holder["access_token"],
        holder_key,
        delegate=holder["agent_id"] + "/offline",
        delegate_key=bytes(nacl.signing.SigningKey.generate().verify_key),
        now=int(time.time()),
        ttl=60,
    )
    late = {"derivations": [{"chain": offline}]}
    report_url = f"{BASE}/v1/audit/offline"
    as_holder = {
        "Authorization": f"DPoP {holder['access_token']}",
        "DPoP": holder_dpop.proof("POST", report_url, holder["access_token"]),
    }
    reported = call("POST", "/v1/audit/offline", headers=as_holder, json=late, expect=200)
    assert reported["accepted"] == 1
    call("POST", "/v1/audit/offline", token=admin, json=late, expect=403)
    call("POST", "/v1/audit/offline", token=renewed["access_token"], json={}, expect=400)

    hop = {"delegate_to": second["agent_id"], "scope": ["read:data:x"]}
    delegated = call("POST", "/v1/delegate", token=renewed["access_token"], json=hop, expect=200)
    wide = {**hop, "scope": ["write:data:x"]}
    call("POST", "/v1/delegate", token=renewed["access_token"], json=wide, expect=403)

    # RFC 8693: an agent narrows its own token (a form, as OAuth clients send it).
    narrowing = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": second["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "scope": "read:data:x",
        "audience": "https://orders.example",
    }
    narrowed = call("POST", "/v1/oauth/token", data=narrowing, expect=200)
    assert narrowed["scope"] == "read:data:x" and narrowed["token_type"] == "Bearer"
    call("POST", "/v1/oauth/token", data={**narrowing, "scope": "write:data:x"}, expect=400)
    call("POST", "/v1/oauth/token", data={**narrowing, "grant_type": "password"}, expect=400)
    call("POST", "/v1/oauth/token", json={**narrowing, "subject_token": "x.y.z"}, expect=400)
    # RFC 6749 section 4.4: an app's client credentials, in the body or as HTTP Basic.
    cc = {"grant_type": "client_credentials"}
    pair = (app["client_id"], app["client_secret"])
    call("POST", "/v1/oauth/token", data={**cc, "scope": "read:data:x"}, auth=pair, expect=400)
    issued = call("POST", "/v1/oauth/token", data={**cc, **creds}, expect=200)
    assert issued["token_type"] == "Bearer" and "app:launch-tokens:*" in issued["scope"]
    wrong = (app["client_id"], "wrong")  # the app sign-in limit's fourth attempt
    refused = call("POST", "/v1/oauth/token", data=cc, auth=wrong, expect=401)
    assert refused["error"] == "invalid_client"

    revoke = {"level": "agent", "target": second["agent_id"]}
    call("POST", "/v1/revoke", token=admin, json=revoke, expect=200)
    call("POST", "/v1/revoke", token=app_token, json=revoke, expect=403)

    call("GET", "/v1/audit/events", path="/v1/audit/events?limit=3", token=admin, expect=200)
    call("GET", "/v1/audit/events", path="/v1/audit/events?limit=x", token=admin, expect=400)
    nope = "/v1/audit/events?outcome=nope"
    call("GET", "/v1/audit/events", path=nope, token=admin, expect=400)

    # The transparent audit log (docs/audit.md): nothing is final before a checkpoint.
    call("GET", "/v1/audit/checkpoint", token=admin, expect=404)
    client.app.state.broker.transparency.sign_if_due(force=True)
    call("GET", "/v1/audit/checkpoint", token=admin, expect=200)
    call("GET", "/v1/audit/checkpoint", token=app_token, expect=403)
    call("GET", "/v1/audit/log-keys", token=admin, expect=200)
    inclusion = "/v1/audit/proof/inclusion"
    call("GET", inclusion, path=f"{inclusion}?index=0&size=2", token=admin, expect=200)
    call("GET", inclusion, path=f"{inclusion}?index=2&size=2", token=admin, expect=400)
    consistency = "/v1/audit/proof/consistency"
    call("GET", consistency, path=f"{consistency}?first=1&second=2", token=admin, expect=200)
    call("GET", consistency, path=f"{consistency}?first=0&second=2", token=admin, expect=400)
    call("POST", "/v1/admin/audit/log-key/rotate", token=admin, expect=200)
    call("POST", "/v1/admin/audit/log-key/rotate", token=app_token, expect=403)

    # What operators see: agents, launch tokens, revocations, delegation trees, tasks.
    agents = call(
        "GET", "/v1/admin/agents", path="/v1/admin/agents?limit=1", token=admin, expect=200
    )
    assert len(agents["agents"]) == 1 and agents["next_cursor"]
    more = f"/v1/admin/agents?limit=1&cursor={agents['next_cursor']}"
    call("GET", "/v1/admin/agents", path=more, token=admin, expect=200)
    call("GET", "/v1/admin/agents", path="/v1/admin/agents?state=x", token=admin, expect=400)
    call("GET", "/v1/admin/launch-tokens", token=admin, expect=200)
    bad = "/v1/admin/launch-tokens?cursor=x"
    call("GET", "/v1/admin/launch-tokens", path=bad, token=admin, expect=400)
    call("GET", "/v1/admin/revocations", token=admin, expect=200)
    call(
        "GET",
        "/v1/admin/revocations",
        path="/v1/admin/revocations?level=x",
        token=admin,
        expect=400,
    )
    jti = _jws.decode_unverified(delegated["access_token"])[1]["jti"]
    tree = call(
        "GET",
        "/v1/admin/delegations/{jti}",
        path=f"/v1/admin/delegations/{jti}",
        token=admin,
        expect=200,
    )
    assert tree["token"]["operation"] == "delegate" and len(tree["chain"]) == 2
    unknown = "/v1/admin/delegations/" + "0" * 32
    call("GET", "/v1/admin/delegations/{jti}", path=unknown, token=admin, expect=404)
    call("GET", "/v1/admin/delegations/{jti}", path=unknown[:-1], token=admin, expect=400)
    task = call(
        "GET", "/v1/admin/tasks/{task_id}", path="/v1/admin/tasks/task-1", token=admin, expect=200
    )
    assert task["agents"] and task["tokens"]
    call("GET", "/v1/admin/tasks/{task_id}", path="/v1/admin/tasks/none", token=admin, expect=404)

    feed = call("GET", "/v1/revocations", token=app_token, expect=200)
    call("GET", "/v1/revocations", path=f"/v1/revocations?cursor={feed['cursor']}", expect=401)
    call("GET", "/v1/revocations", path="/v1/revocations?cursor=x", token=admin, expect=400)
    call("GET", "/v1/revocations", token=renewed["access_token"], expect=403)
    call("GET", "/v1/revocations/stream", token=renewed["access_token"], expect=403)
    status, media, events = _stream_until_sync(client, "/v1/revocations/stream?cursor=0", admin)
    stream_doc = doc["paths"]["/v1/revocations/stream"]["get"]["responses"]["200"]
    assert status == 200 and media.startswith(next(iter(stream_doc["content"])))
    assert b"event: revocation" in events and b"event: sync" in events
    call.seen.add(("GET", "/v1/revocations/stream", status))

    holder = renewed["access_token"]
    call("POST", "/v1/introspect", token=admin, json={"token": holder}, expect=200)
    call("POST", "/v1/introspect", token=app_token, json={"token": "x"}, expect=200)
    call("POST", "/v1/introspect", token=holder, json={"token": holder}, expect=401)
    call("POST", "/v1/token/revoke", token=holder, json={"token": "unknown"}, expect=200)
    call("POST", "/v1/token/revoke", token=holder, json={"token_type_hint": "x"}, expect=400)
    call("POST", "/v1/token/revoke", json={"token": holder}, expect=401)

    # Agents that trust each other: handshake, heartbeat, resume, discovery.
    a_key, b_key = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    lt_a = call("POST", "/v1/admin/launch-tokens", token=admin, json=lt, expect=201)
    lt_b = call("POST", "/v1/admin/launch-tokens", token=admin, json=lt, expect=201)
    a = _register(call, lt_a["launch_token"], "task-a", a_key)
    b = _register(call, lt_b["launch_token"], "task-b", b_key)
    a_token, b_token = a["access_token"], b["access_token"]
    call("GET", "/v1/metrics", token=a_token, expect=403)
    call("GET", "/v1/health", token=a_token, expect=403)
    na, nb = secrets.token_hex(16), secrets.token_hex(16)

    start = {"responder_id": b["agent_id"], "initiator_nonce": na}
    offer = call("POST", "/v1/mutual/initiate", token=a_token, json=start, expect=200)
    call("POST", "/v1/mutual/initiate", token=a_token, json={"initiator_nonce": na}, expect=400)
    reflected = {**start, "responder_id": a["agent_id"]}
    call("POST", "/v1/mutual/initiate", token=a_token, json=reflected, expect=401)
    call("POST", "/v1/mutual/initiate", token=admin, json=start, expect=403)
    reply = {
        "offer": offer["offer"],
        "responder_nonce": nb,
        "signature": _handshake_signature(b_key, "responder", offer["offer"], nb),
    }
    call("POST", "/v1/mutual/respond", token=a_token, json=reply, expect=401)
    answer = call("POST", "/v1/mutual/respond", token=b_token, json=reply, expect=200)
    call("POST", "/v1/mutual/respond", token=b_token, json=reply, expect=401)
    assert answer["initiator"]["agent_id"] == a["agent_id"]
    finish = {
        "answer": answer["answer"],
        "signature": _handshake_signature(a_key, "initiator", answer["answer"], nb),
    }
    forged = {**finish, "signature": _handshake_signature(b_key, "initiator", answer["answer"], nb)}
    call("POST", "/v1/mutual/complete", token=a_token, json=forged, expect=401)
    receipt = call("POST", "/v1/mutual/complete", token=a_token, json=finish, expect=200)
    call("POST", "/v1/mutual/complete", token=a_token, json=finish, expect=401)
    assert receipt["responder"]["agent_id"] == b["agent_id"]

    beat = _heartbeat(a_key, a["agent_id"], a_token)
    call("POST", "/v1/heartbeat", token=a_token, json=beat, expect=200)
    call("POST", "/v1/heartbeat", token=a_token, json=beat, expect=401)
    call("POST", "/v1/heartbeat", token=a_token, json={"timestamp": 1}, expect=400)

    endpoint, issued_at = "https://a.internal:8443/agent", int(time.time())
    signed = a_key.sign(statement(a["agent_id"], endpoint, issued_at)).signature
    binding = {"endpoint": endpoint, "issued_at": issued_at, "signature": _b64(signed)}
    call("POST", "/v1/discovery/bind", token=a_token, json=binding, expect=200)
    call("POST", "/v1/discovery/bind", token=a_token, json=binding, expect=401)
    call("POST", "/v1/discovery/bind", token=a_token, json={**binding, "endpoint": "x"}, expect=400)
    where = f"/v1/discovery/{a['agent_id']}"
    found = call("GET", "/v1/discovery/{agent_id}", path=where, token=b_token, expect=200)
    assert found["endpoint"] == endpoint and found["public_key"] == _b64(bytes(a_key.verify_key))
    unbound = f"/v1/discovery/{b['agent_id']}"
    call("GET", "/v1/discovery/{agent_id}", path=unbound, token=a_token, expect=404)
    call("GET", "/v1/discovery/{agent_id}", path=where, expect=401)

    identity = call("POST", "/v1/workload/identity", token=a_token, expect=200)
    assert identity["workload_identity_token"].count(".") == 2
    call("POST", "/v1/workload/identity", token=admin, expect=403)
    call("POST", "/v1/workload/identity", expect=401)

    nonce = call("GET", "/v1/challenge", expect=200)["nonce"]
    resume = {
        "agent_id": b["agent_id"],
        "nonce": nonce,
        "signature": _b64(b_key.sign(bytes.fromhex(nonce)).signature),
    }
    impostor = {**resume, "signature": _b64(a_key.sign(bytes.fromhex(nonce)).signature)}
    call("POST", "/v1/resume", json=impostor, expect=401)
    nonce = call("GET", "/v1/challenge", expect=200)["nonce"]
    resume = {**resume, "nonce": nonce}
    resume["signature"] = _b64(b_key.sign(bytes.fromhex(nonce)).signature)
    resumed = call("POST", "/v1/resume", json=resume, expect=200)
    call("POST", "/v1/resume", json=resume, expect=401)
    call("POST", "/v1/resume", json={"agent_id": b["agent_id"]}, expect=400)
    assert resumed["agent_id"] == b["agent_id"]

    call("POST", "/v1/token/release", token=renewed["access_token"], expect=204)
    rotate_secret = "/v1/admin/apps/{app_id}/rotate-secret"
    call("POST", rotate_secret, path=f"{one}/rotate-secret", token=app_token, expect=403)
    rotated_app = call("POST", rotate_secret, path=f"{one}/rotate-secret", token=admin, expect=200)
    assert rotated_app["client_secret"] != app["client_secret"]
    call("POST", rotate_secret, path=f"{one}x/rotate-secret", token=admin, expect=404)
    call("DELETE", "/v1/admin/apps/{app_id}", path=one, token=admin, expect=200)
    call("DELETE", "/v1/admin/apps/{app_id}", path=one, token=admin, expect=409)
    call("POST", rotate_secret, path=f"{one}/rotate-secret", token=admin, expect=409)

    # Named operators: added with a secret or a key, signed in both ways, rotated, removed.
    alice = call(
        "POST",
        "/v1/admin/operators",
        token=admin,
        json={"name": "alice", "role": "operator"},
        expect=201,
    )
    call("POST", "/v1/admin/operators", token=admin, json={"name": "alice"}, expect=400)
    call(
        "POST",
        "/v1/admin/operators",
        token=admin,
        json={"name": "alice", "role": "auditor"},
        expect=409,
    )
    op_key = nacl.signing.SigningKey.generate()
    keyed = {"name": "bob", "role": "auditor", "public_key": _b64(bytes(op_key.verify_key))}
    call("POST", "/v1/admin/operators", token=admin, json=keyed, expect=201)
    call("GET", "/v1/admin/operators", token=admin, expect=200)
    sign_in = {"name": "alice", "secret": alice["secret"]}
    operator = call("POST", "/v1/operator/auth", json=sign_in, expect=200)["access_token"]
    call("POST", "/v1/operator/auth", json={**sign_in, "secret": "x" * 64}, expect=401)
    call("POST", "/v1/operator/auth", json={"name": "alice"}, expect=400)
    nonce = call("GET", "/v1/challenge", expect=200)["nonce"]
    proof = _b64(op_key.sign(operator_sign_in_input("bob", nonce)).signature)
    by_key = {"name": "bob", "nonce": nonce, "signature": proof}
    call("POST", "/v1/operator/auth", json=by_key, expect=200)
    call("GET", "/v1/admin/operators", token=operator, expect=403)
    alice_path = "/v1/admin/operators/alice"
    rotate = "/v1/admin/operators/{name}/rotate"
    call("POST", rotate, path=f"{alice_path}/rotate", token=admin, json={}, expect=200)
    bad_key = {"public_key": "x"}
    call("POST", rotate, path=f"{alice_path}/rotate", token=admin, json=bad_key, expect=400)
    call("DELETE", "/v1/admin/operators/{name}", path=alice_path, token=admin, expect=200)
    call("DELETE", "/v1/admin/operators/{name}", path=alice_path, token=admin, expect=404)
    call("POST", rotate, path=f"{alice_path}/rotate", token=admin, json={}, expect=404)

    # Federation: this broker's trust bundle; a federated domain declared (a static bundle:
    # no peer to fetch from here), listed, shown, removed.
    own = call("GET", "/v1/federation/bundle", expect=200)
    assert own["spiffe_sequence"] >= 1 and own["keys"]
    static = msgspec.json.encode({"keys": own["keys"], "spiffe_sequence": 1}).decode()
    declared = {"trust_domain": "peer.example", "bundle": static, "scope_ceiling": ["read:x:*"]}
    federations, peer = "/v1/admin/federations", "/v1/admin/federations/peer.example"
    added = call("POST", federations, token=admin, json=declared, expect=201)
    assert added["status"] == "trusted" and added["replaced"] is False
    call("POST", federations, token=admin, json={"trust_domain": "peer.example"}, expect=400)
    call("POST", federations, token=a_token, json=declared, expect=403)
    call("POST", federations, json=declared, expect=401)
    call("GET", federations, token=admin, expect=200)
    one_domain = "/v1/admin/federations/{trust_domain}"
    call("GET", one_domain, path=peer, token=admin, expect=200)
    call("DELETE", one_domain, path=peer, token=admin, expect=200)
    call("DELETE", one_domain, path=peer, token=admin, expect=404)
    call("GET", one_domain, path=peer, token=admin, expect=404)

    # Attestation: an attestor configured (a JWK Set given: no issuer to fetch from here),
    # listed, shown, tested with sample evidence, removed.
    attestors, prod = "/v1/admin/attestors", "/v1/admin/attestors/prod"
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(sa_key.public_key())), "kid": "sa-1"}
    attestor = {
        "name": "prod",
        "type": "k8s_sat",
        "settings": {"issuer": "https://k8s.example", "jwks": json.dumps({"keys": [jwk]})},
        "policy": [{"match": {"namespace": "billing"}, "scope": ["read:data:*"], "ttl": 60}],
    }
    added = call("POST", attestors, token=admin, json=attestor, expect=201)
    assert added["replaced"] is False and added["policy"][0]["ttl"] == 60
    call("POST", attestors, token=admin, json={**attestor, "type": "magic"}, expect=400)
    call("POST", attestors, token=a_token, json=attestor, expect=403)
    call("GET", attestors, token=admin, expect=200)
    one_attestor = "/v1/admin/attestors/{name}"
    call("GET", one_attestor, path=prod, token=admin, expect=200)
    now = int(time.time())
    sa_claims = {
        "iss": "https://k8s.example", "aud": [DEFAULT_ISSUER], "exp": now + 600, "iat": now,
        "sub": "system:serviceaccount:billing:runner",
        "kubernetes.io": {
            "namespace": "billing", "serviceaccount": {"name": "runner", "uid": "u1"},
            "pod": {"name": "runner-1", "uid": "p1"},
        },
    }  # fmt: skip
    evidence = pyjwt.encode(sa_claims, sa_key, algorithm="RS256", headers={"kid": "sa-1"})
    test = "/v1/admin/attestors/{name}/test"
    tested = call(
        "POST", test, path=f"{prod}/test", token=admin, json={"evidence": evidence}, expect=200
    )
    assert tested["matched"] is True and tested["scope"] == ["read:data:*"]
    call("POST", test, path=f"{prod}/test", token=admin, json={"evidence": "a.b.c"}, expect=400)
    call("DELETE", one_attestor, path=prod, token=admin, expect=200)
    call("DELETE", one_attestor, path=prod, token=admin, expect=404)
    call("GET", one_attestor, path=prod, token=admin, expect=404)

    # Structured grants (docs/grants.md): an operator's type; a payment grant launched,
    # registered, delegated narrower (not wider) and counted; the issuance policy.
    types, dq = "/v1/admin/grant-types", "/v1/admin/grant-types/dataset_query"
    dataset = {
        "name": "dataset_query",
        "schema": {"type": "object", "properties": {"datasets": {"type": "array"}}},
        "narrowing": {"datasets": "subset"},
    }
    call("POST", types, token=admin, json=dataset, expect=201)
    call("POST", types, token=admin, json=dataset, expect=409)
    call("POST", types, token=admin, json={**dataset, "name": "scope"}, expect=400)
    call("POST", types, token=a_token, json=dataset, expect=403)
    call("GET", types, token=admin, expect=200)
    one_type = "/v1/admin/grant-types/{name}"
    call("GET", one_type, path=dq, token=admin, expect=200)
    call("DELETE", one_type, path=dq, token=admin, expect=200)
    call("DELETE", one_type, path=dq, token=admin, expect=404)
    pay = {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": ["https://pay.example/payees/P"],
        "limits": {"max_amount": "500", "currency": "EUR", "max_calls": 2},
    }
    lt_pay = {"agent_name": "payer", "authorization_details": [pay], "single_use": False}
    lt_pay = call("POST", "/v1/admin/launch-tokens", token=admin, json=lt_pay, expect=201)
    assert lt_pay["policy"]["authorization_details"][0]["limits"]["max_amount"] == "500"
    call(
        "POST",
        "/v1/admin/launch-tokens",
        token=admin,
        json={"agent_name": "x", "authorization_details": [{"type": "nope"}]},
        expect=400,
    )
    payer = _register(call, lt_pay["launch_token"], "task-pay", details=[pay])
    payee = _register(call, lt_pay["launch_token"], "task-payee", details=[pay])
    assert payer["authorization_details"][0]["limits"]["max_calls"] == 2
    small = {**pay, "limits": {**pay["limits"], "max_amount": "100"}}
    hop = {"delegate_to": payee["agent_id"], "authorization_details": [small]}
    handed = call("POST", "/v1/delegate", token=payer["access_token"], json=hop, expect=200)
    assert handed["authorization_details"][0]["limits"]["max_amount"] == "100"
    big = {
        **hop,
        "authorization_details": [{**pay, "limits": {**pay["limits"], "max_amount": "600"}}],
    }
    call("POST", "/v1/delegate", token=payer["access_token"], json=big, expect=403)
    one_call = {
        "token": handed["access_token"],
        "type": "resource_access",
        "action": "pay",
        "location": "https://pay.example/payees/P",
        "amount": "80",
        "currency": "EUR",
    }
    counted = call("POST", "/v1/token/calls", json=one_call, expect=200)
    assert counted["counted"] is True and counted["remaining"] == 1
    call("POST", "/v1/token/calls", json={**one_call, "amount": "101"}, expect=403)
    call("POST", "/v1/token/calls", json={**one_call, "token": "x"}, expect=401)
    call("POST", "/v1/token/calls", json={"token": "x"}, expect=400)
    shown = call("GET", "/v1/admin/policy", token=admin, expect=200)
    assert (
        shown["policies"] == ["app-launch-within-ceiling", "operator-launch", "issue-within-parent"]
        and shown["failure"] is None
    )
    call("GET", "/v1/admin/policy", token=a_token, expect=403)
    call("POST", "/v1/admin/policy/reload", token=admin, expect=200)

    # Last: rotating the signing key must not matter to anything above.
    call("POST", "/v1/admin/keys/rotate", token=a_token, expect=403)
    call("POST", "/v1/admin/keys/rotate", expect=401)
    rotated = call("POST", "/v1/admin/keys/rotate", token=admin, expect=200)
    assert rotated["previous_kid"] in rotated["kids"] and rotated["kids"][0] == rotated["kid"]
    check = {"token": resumed["access_token"]}  # signed by the previous key
    assert call("POST", "/v1/token/validate", json=check, expect=200)["valid"] is True
    # Retiring the previous key ends what it signed; the active one is refused.
    retire = "/v1/admin/keys/{kid}/retire"
    previous, active = rotated["previous_kid"], rotated["kid"]
    call("POST", retire, path=f"/v1/admin/keys/{previous}/retire", token=a_token, expect=403)
    call("POST", retire, path=f"/v1/admin/keys/{active}/retire", token=admin, expect=409)
    call("POST", retire, path="/v1/admin/keys/no-such-kid/retire", token=admin, expect=404)
    retired = call(
        "POST", retire, path=f"/v1/admin/keys/{previous}/retire", token=admin, expect=200
    )
    assert retired == {"kid": previous, "kids": [active]}
    assert call("POST", "/v1/token/validate", json=check, expect=200)["valid"] is False

    # The flow reached every documented operation's success answer.
    succeeded = {(m, p) for m, p, status in call.seen if status < 300}
    assert succeeded == {(m, p) for m, p, _ in _operations(doc)}


# --- docs/api.md ---------------------------------------------------------------------------


def _docs_script() -> Any:
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts/gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_docs_are_current() -> None:
    script = _docs_script()
    assert script.main(["--check"]) == 0, "docs/api.md is stale: run python scripts/gen_api_docs.py"


def test_api_docs_check_notices_a_change(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = _docs_script()
    stale = tmp_path / "api.md"
    stale.write_text(script.render(openapi_document()) + "drift\n", encoding="utf-8")
    monkeypatch.setattr(script, "DOC_PATH", stale)
    assert script.main(["--check"]) == 1
    assert script.main([]) == 0
    assert script.main(["--check"]) == 0


def test_api_docs_describe_the_document(doc: dict[str, Any]) -> None:
    """docs/api.md names no endpoint, status, code, parameter or field the document lacks,
    and describes every one it has."""
    text = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    assert _docs_script().check(doc, text) == []
    for op in OPERATIONS:
        assert f"### `{op.method} {op.path}`" in text


def _drop_line(text: str, start: str) -> str:
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith(start))
    return "".join(lines[:index] + lines[index + 1 :])


def _add_after(text: str, anchor: str, line: str) -> str:
    head, sep, tail = text.partition(anchor)
    assert sep, anchor
    rest = tail.split("\n", 1)
    return f"{head}{sep}{rest[0]}\n{line}\n{rest[1]}"


_HEALTH_FIELDS = "| `status` | `ok` \\| `degraded` |"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: t + "\n### `GET /v1/nowhere`\n",
            "sections: GET /v1/nowhere is not in the document",
        ),
        (
            lambda t: _drop_line(t, "### `GET /v1/challenge`"),
            "sections: GET /v1/challenge is not described",
        ),
        (
            lambda t: _drop_line(t, "| GET | `/v1/health` |"),
            "endpoint table: GET /v1/health is not described",
        ),
        (
            lambda t: _add_after(t, _HEALTH_FIELDS, "| `colour` | string | required | x |"),
            "GET /v1/health: field `colour` is not in the document",
        ),
        (
            lambda t: _drop_line(t, _HEALTH_FIELDS),
            "GET /v1/health: field `status` is not described",
        ),
        (
            lambda t: _add_after(t, "| 500 | `internal_error` |", "| 418 | `teapot` | x |"),
            "GET /v1/challenge: status 418 is not in the document",
        ),
        (
            lambda t: _drop_line(t, "| 413 | `payload_too_large` |"),
            "POST /v1/register: 413 `payload_too_large` is not described",
        ),
        (
            lambda t: _add_after(t, "| `app_id` | path |", "| `colour` | query | x | x | x |"),
            "GET /v1/admin/apps/{app_id}: parameter `colour` is not in the document",
        ),
        (
            lambda t: t.replace("| `conflict` | 409 |", "| `conflict` | 400 |"),
            "error codes: `conflict` is 409, not 400",
        ),
    ],
)
def test_api_docs_check_finds_drift(doc: dict[str, Any], change: Any, expected: str) -> None:
    text = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    changed = change(text)
    assert changed != text
    assert expected in _docs_script().check(doc, changed)
