"""The console's vendored static files (script and style), served from the package."""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["static_route"]

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_FILES = {
    entry.name: entry.read_bytes()
    for entry in (files("tasklease.http.console") / "static").iterdir()
    if entry.name[entry.name.rfind(".") :] in _TYPES
}


def static_route() -> Route:
    """``/static/<name>`` for the files shipped in ``console/static`` (read once)."""

    async def serve(request: Request) -> Response:
        name = request.path_params["name"]
        body = _FILES.get(name)
        if body is None:
            return Response("not found", 404, media_type="text/plain")
        kind = _TYPES[name[name.rfind(".") :]]
        return Response(body, media_type=kind, headers={"cache-control": "max-age=300"})

    return Route("/static/{name}", serve, methods=["GET"])
