"""The ASGI application: one port for the WebSocket endpoint, the chat page and health.

Routes: ``/ws`` (WebSocket, RTVI), ``/`` (the chat page), ``/static/...`` (its files),
``/health`` (JSON; 503 while draining).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .sessions import Receive, Send, SessionManager

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).with_name("static")
"""The built-in chat page."""


def create_app(manager: SessionManager, static_dir: str | Path | None = None) -> Any:
    """The ASGI app serving ``manager``'s sessions on ``/ws`` and the page from
    ``static_dir`` (default: the built-in chat page)."""
    static = Path(static_dir) if static_dir is not None else STATIC_DIR

    async def health(_request: Request) -> Response:
        stats = manager.stats()
        return JSONResponse(stats, status_code=503 if manager.draining else 200)

    async def index(_request: Request) -> Response:
        return FileResponse(static / "index.html", headers={"cache-control": "no-cache"})

    http = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ]
    )

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Nothing to set up or tear down: the server's resources live in serve()'s
            # nursery. (Starlette's handler would report the server's final cancel as a
            # lifespan failure.)
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            if scope["path"] in ("/ws", "/ws/"):
                await manager.websocket(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})  # 403 before accept
            return
        await http(scope, receive, send)

    return app
