"""Offline attenuation end to end: a broker process, agents registered with the SDK, a
resource server behind the ASGI middleware on loopback. Agents hand authority on with no
broker call; the resource server verifies the chains with no broker call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.signing
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_VERIFY_TESTS = str(Path(__file__).resolve().parents[1] / "verify")
if _VERIFY_TESTS not in sys.path:
    sys.path.insert(0, _VERIFY_TESTS)

from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker  # noqa: E402
from verify_support import Served, app_credentials, dpop_proof, poll, serve_app  # noqa: E402

from tasklease.client import Agent, OfflineCredential, ScopeViolation  # noqa: E402
from tasklease.rules.attenuation import decode  # noqa: E402
from tasklease.verify import Verifier  # noqa: E402
from tasklease.verify.asgi import TaskleaseAuthMiddleware, require_scope  # noqa: E402

pytestmark = pytest.mark.slow

RS = "https://orders.example"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    env = {**SHARED_ENV, "TASKLEASE_AUDIENCE": f"tasklease,{RS}"}
    running = launch_broker(tmp_path_factory.mktemp("offline-broker"), env)
    yield running
    stop_broker(running)


def _app(verifier: Verifier) -> Starlette:
    @require_scope("read:orders:42")
    async def read(request: Request) -> Response:
        token = request.state.tasklease_token
        chain = token.offline
        return JSONResponse(
            {
                "sub": token.sub,
                "scope": list(token.scope),
                "holders": [] if chain is None else list(chain.agents),
                "depth": token.depth,
            }
        )

    @require_scope("write:orders:42")
    async def write(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/orders/42", read), Route("/orders/42", write, methods=["POST"])],
        middleware=[Middleware(TaskleaseAuthMiddleware, verifier=verifier)],
    )


@pytest.fixture(scope="module")
def service(broker: RunningBroker) -> Iterator[tuple[Served, Verifier]]:
    verifier = Verifier(broker.url, audience=RS, credentials=app_credentials(broker))
    served = serve_app(_app(verifier))
    yield served, verifier
    served.stop()
    verifier.close()


def _agent(broker: RunningBroker, scope: list[str]) -> Agent:
    launch = broker.launch_token(scope)
    return Agent.register(
        broker.url, launch, "orch-1", "task-offline", scope, resource=RS, dpop=True
    )


def _delegate_id(holder: str, *labels: str) -> str:
    """A delegate's name: under its delegator's (docs/formats.md, ``sub``)."""
    return "/".join((holder, *labels))


def test_agents_hand_authority_on_offline_and_a_resource_server_accepts_it(
    broker: RunningBroker, service: tuple[Served, Verifier]
) -> None:
    served, _ = service
    alice = _agent(broker, ["read:orders:*", "write:orders:42"])
    bob_key, carol_key = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    bob_id = _delegate_id(alice.agent_id, "bob")
    carol_id = _delegate_id(bob_id, "carol")
    with alice, httpx.Client(base_url=served.url) as http:
        chain = alice.attenuate("bob", bytes(bob_key.verify_key), scope=["read:orders:*"])
        bob = OfflineCredential(chain, bob_key)
        assert bob.holder == bob_id and bob.scope == ("read:orders:*",)
        carol_chain = bob.attenuate(carol_id, bytes(carol_key.verify_key), ttl=60,
                                    scope=["read:orders:42"])  # fmt: skip
        carol = OfflineCredential(carol_chain, carol_key)
        assert len(decode(carol_chain).blocks) == 2 and carol.depth == 2

        ok = http.get("/orders/42", auth=carol.auth)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "sub": carol_id,
            "scope": ["read:orders:42"],
            "holders": [alice.agent_id, bob_id, carol_id],
            "depth": 2,
        }
        assert http.get("/orders/42", auth=bob.auth).status_code == 200
        # Narrowed away: write was alice's, not bob's nor carol's.
        assert http.post("/orders/42", auth=carol.auth).status_code == 403


def test_what_a_resource_server_refuses(
    broker: RunningBroker, service: tuple[Served, Verifier]
) -> None:
    served, _ = service
    alice = _agent(broker, ["read:orders:*"])
    bob_key, mallory = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    with alice, httpx.Client(base_url=served.url) as http:
        chain = alice.attenuate("bob", bytes(bob_key.verify_key))
        # As a bearer token, or with a proof of another key: refused.
        assert (
            http.get("/orders/42", headers={"Authorization": f"Bearer {chain}"}).status_code == 401
        )
        url = f"{served.url}/orders/42"
        proof = dpop_proof(mallory, htm="GET", htu=url, token=chain)
        refused = http.get("/orders/42", headers={"Authorization": f"DPoP {chain}", "DPoP": proof})
        assert refused.status_code == 401 and "DPoP" in refused.headers["www-authenticate"]
        # A proof used twice: refused the second time.
        bob = OfflineCredential(chain, bob_key)
        headers = bob.headers("GET", f"{served.url}/orders/42")
        assert http.get("/orders/42", headers=headers).status_code == 200
        assert http.get("/orders/42", headers=headers).status_code == 401
        # The SDK refuses to widen before signing anything.
        with pytest.raises(ScopeViolation):
            bob.attenuate("carol", bytes(mallory.verify_key), scope=["write:orders:42"])
        # Nor will it name another agent (a sibling of alice's, or alice herself).
        for other in (alice.agent_id.rsplit("/", 1)[0] + "/carol", alice.agent_id):
            with pytest.raises(ValueError, match="nested"):
                bob.attenuate(other, bytes(mallory.verify_key))


def test_revoking_the_middle_holder_on_the_broker_ends_the_chain_at_the_resource_server(
    broker: RunningBroker, service: tuple[Served, Verifier]
) -> None:
    served, _ = service
    alice = _agent(broker, ["read:orders:*"])
    keys = [nacl.signing.SigningKey.generate() for _ in range(3)]
    names = [
        _delegate_id(alice.agent_id, *labels)
        for labels in (("bob",), ("bob", "carol"), ("bob", "carol", "dave"))
    ]
    with alice, httpx.Client(base_url=served.url) as http:
        chain = alice.attenuate(names[0], bytes(keys[0].verify_key))
        holder = OfflineCredential(chain, keys[0])
        for name, key in zip(names[1:], keys[1:], strict=True):
            holder = OfflineCredential(holder.attenuate(name, bytes(key.verify_key)), key)
        assert http.get("/orders/42", auth=holder.auth).status_code == 200
        answer = broker.post(
            "/v1/revoke", json={"level": "agent", "target": names[1]},
            headers=broker.admin_headers(),
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        poll(lambda: http.get("/orders/42", auth=holder.auth).status_code == 401, timeout=5)
