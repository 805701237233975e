"""The floor for HTTP: an empty Starlette endpoint, served exactly like the broker.

``python -m bench.emptyapp PORT WORKERS LOOP READY_DIR``: same uvicorn settings as
``tasklease.server.serve`` (httptools, no access log, no server header). Each worker
touches ``READY_DIR/<pid>`` once it serves, so the harness knows when all are up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def empty(_request: Request) -> Response:
    return Response(b'{"ok":true}\n', media_type="application/json")


@contextlib.asynccontextmanager
async def _lifespan(_app: Starlette) -> AsyncIterator[None]:
    ready = os.environ.get("BENCH_READY_DIR")
    if ready:
        (Path(ready) / str(os.getpid())).touch()
    yield


app = Starlette(routes=[Route("/empty", empty, methods=["GET"])], lifespan=_lifespan)


def main() -> None:
    import uvicorn

    from tasklease.core.config import Config
    from tasklease.http.middleware import envelope_headers
    from tasklease.http.protocol import NoDelayHttpToolsProtocol

    port, workers, loop, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ["BENCH_READY_DIR"] = ready
    uvicorn.run(
        "bench.emptyapp:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        loop=loop,
        # Served exactly like the broker: its protocol, with the headers of its own answers.
        http=functools.partial(NoDelayHttpToolsProtocol, envelope=envelope_headers(Config())),
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
