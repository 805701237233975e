"""A program as a new user writes it from README.md, docs/agents.md and docs/verifier.md:
an app launches an agent, which calls a resource, renews, delegates and releases; a
resource server checks tokens with ``tasklease.verify`` (sync, async, ASGI and MCP).

Never run: ``test_public_api.py`` type-checks it with ``mypy --strict``, so that every
name and signature a user touches is fully typed.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from tasklease.client import (
    AdminClient,
    Agent,
    AppClient,
    AsyncAgent,
    AsyncDelegatedToken,
    DelegatedToken,
    RateLimited,
    RenewalLimitReached,
    Retry,
    ScopeViolation,
    TaskleaseError,
    TransportError,
)
from tasklease.client.testing import BrokerForTests
from tasklease.verify import (
    AppCredentials,
    InsufficientScope,
    InvalidToken,
    VerificationError,
    VerifiedToken,
    Verifier,
    VerifierUnavailable,
)
from tasklease.verify.asgi import TaskleaseAuthMiddleware, install_problem_handler, require_scope
from tasklease.verify.mcp import TaskleaseTokenVerifier, auth_settings


def launch(broker: str, secret: str) -> str:
    with AdminClient(broker, secret) as admin:
        made = admin.create_launch_token(
            "support", ["read:tickets:1"], single_use=False, max_uses=2, principal="user:a"
        )
        launch_token: str = made["launch_token"]
        return launch_token


def agent_side(broker: str, launch_token: str, service: str) -> str:
    with Agent.register(broker, launch_token, "support", "t1", ["read:tickets:1"]) as agent:
        with httpx.Client() as http:
            http.get(service, auth=agent.auth)
        helper = Agent.register(broker, launch_token, "support", "t1", ["read:tickets:1"])
        try:
            child: DelegatedToken = agent.delegate(helper.agent_id, ["read:tickets:1"], ttl=30)
            seconds_left: float = child.expires_at - agent.expires_at
            print(seconds_left, child.scope[0].upper(), child.bearer_header["Authorization"])
        except ScopeViolation as exc:
            denial: str | None = exc.denial_id
            print(exc.code, exc.status, denial, exc.request_id, exc.detail, exc.hint)
        except RateLimited as exc:
            wait: int | None = exc.retry_after
            print(wait)
        except TransportError:
            pass
        finally:
            helper.close()
        with contextlib.suppress(RenewalLimitReached):
            agent.renew()
        agent.ensure_fresh()
        unreachable: float | None = agent.broker_unreachable_for
        print(unreachable, agent.scope, agent.agent_id)
        return agent.token


async def async_agent_side(broker: str, launch_token: str, service: str) -> None:
    agent = await AsyncAgent.register(broker, launch_token, "o", "t", ["read:a:b"], timeout=5.0)
    async with agent:
        async with httpx.AsyncClient(auth=agent.auth) as http:
            await http.get(service)
        await agent.renew()
        child: AsyncDelegatedToken = await agent.delegate("spiffe://x/agent/o/t/i", ["read:a:b"])
        await child.release()


def app_side(broker: str, client_id: str, client_secret: str) -> None:
    with AppClient(broker, client_id, client_secret, retry=Retry(attempts=1)) as app:
        agent = app.create_agent("orch", "task", ["read:a:b"])
        try:
            agent.release()
        except TaskleaseError as exc:
            print(exc.code)
        finally:
            agent.close()


def resource_side(broker: str, client_id: str, client_secret: str, bearer: str) -> None:
    credentials = AppCredentials(client_id, client_secret)
    with Verifier(broker, audience="api", credentials=credentials) as verifier:
        try:
            token: VerifiedToken = verifier.verify(bearer)
            verifier.require_scope(token, "read:tickets:1")
        except (InvalidToken, InsufficientScope) as exc:
            print(exc.reason)
            return
        except VerifierUnavailable:
            return
        depth: int = token.depth
        print(token.sub, token.scope, token.task_id, depth, token.principal, token.actors)


async def async_resource_side(broker: str, bearer: str) -> VerifiedToken | None:
    async with Verifier(broker, audience="api", feed=False) as verifier:
        try:
            return await verifier.averify(bearer)
        except VerificationError:
            return None


def asgi_app(verifier: Verifier) -> Starlette:
    @require_scope("read:data:42")
    async def read(request: Request) -> JSONResponse:
        token: VerifiedToken = request.state.tasklease_token
        return JSONResponse({"sub": token.sub})

    app = Starlette()
    app.add_route("/data/42", read)
    app.add_middleware(TaskleaseAuthMiddleware, verifier=verifier, exempt_paths={"/health"})
    install_problem_handler(app)
    return app


async def mcp_side(verifier: Verifier, broker: str) -> None:
    resource = "https://tools.example/mcp"
    settings = auth_settings(broker, resource)
    access = await TaskleaseTokenVerifier(verifier).verify_token("token")
    print(settings.resource_server_url, None if access is None else access.subject)


def in_tests() -> None:
    with BrokerForTests() as broker, broker.agent(["read:a:b"]) as agent:
        print(agent.agent_id, broker.url)


if __name__ == "__main__":
    asyncio.run(async_resource_side("https://broker.example", "token"))
