"""The ASGI application: one port for the WebSocket endpoint, the chat page and health.

Routes: ``/ws`` (WebSocket, RTVI), ``/`` (the chat page), ``/static/...`` (its files),
``/health`` (JSON; 503 while draining). Anything else is a 404 (no redirects: a redirect
would be built from the request's ``Host`` header).

Every HTTP answer says ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
no-referrer`` (the page's address may hold the token); the page and its files carry a
Content-Security-Policy that allows scripts, styles and connections from this server only
(no inline script). On a loopback address, requests naming another host get 421 (DNS
rebinding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .sessions import ASGIMessage, Receive, Send, SessionManager

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).with_name("static")
"""The built-in chat page."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The page's policy: its scripts, styles and WebSocket come from this server, nothing
inline, and no other site may frame it."""

_COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_PAGE_HEADERS = [
    *_COMMON_HEADERS,
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
]


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
    # Starlette answers "/health/" with a redirect to an absolute URL made from the Host
    # header; a wrong path is a 404 here.
    http.router.redirect_slashes = False
    misdirected = PlainTextResponse("misdirected request: not this server's name", 421)

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
        extra = _COMMON_HEADERS if scope["path"] == "/health" else _PAGE_HEADERS

        async def send_with_headers(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if manager.config.host_checked:
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            if not manager.config.host_allowed(host):
                await misdirected(scope, receive, send_with_headers)
                return
        await http(scope, receive, send_with_headers)

    return app
