"""A FastAPI service that accepts only tasklease agent tokens meant for it.

    TASKLEASE_BROKER_URL=http://127.0.0.1:8080 TASKLEASE_CLIENT_ID=... \
    TASKLEASE_CLIENT_SECRET=... SERVICE_AUDIENCE=svc-a PORT=8001 \
    python examples/protected_service.py

Every request is verified offline (JWKS + revocation feed, no call to the broker per
request); each route names the scope it needs. A broker with a ``public_url`` signs its
first one as its issuer: give it as ``TASKLEASE_ISSUER``.
"""

from __future__ import annotations

import os
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI

from tasklease.verify import AppCredentials, VerifiedToken, Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware, install_problem_handler, require_scope

CanRead = Annotated[VerifiedToken, Depends(require_scope("read:data:42"))]
CanWrite = Annotated[VerifiedToken, Depends(require_scope("write:data:42"))]


def build_app(verifier: Verifier) -> FastAPI:
    app = FastAPI(title="protected-service")
    app.add_middleware(TaskleaseAuthMiddleware, verifier=verifier, exempt_paths={"/health"})
    install_problem_handler(app)

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"ready": verifier.ready}

    @app.get("/data/42")
    def read_data(token: CanRead) -> dict[str, object]:
        return {"data": 42, "caller": token.sub, "delegation_depth": token.depth}

    @app.post("/data/42")
    def write_data(token: CanWrite) -> dict[str, object]:
        return {"written": True, "caller": token.sub}

    return app


def main() -> None:
    verifier = Verifier(
        os.environ["TASKLEASE_BROKER_URL"],
        audience=os.environ.get("SERVICE_AUDIENCE", "svc-a"),
        # The broker's `iss`: its first public_url when it has one (docs/configuration.md).
        issuer=os.environ.get("TASKLEASE_ISSUER", "tasklease"),
        credentials=AppCredentials(
            os.environ["TASKLEASE_CLIENT_ID"], os.environ["TASKLEASE_CLIENT_SECRET"]
        ),
    )
    port = int(os.environ.get("PORT", "8001"))
    uvicorn.run(build_app(verifier), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
