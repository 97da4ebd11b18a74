"""The chat server: one pipeline per WebSocket connection, a chat page, health, on one port.

```python
from rustvani_trio.server import ServerConfig, serve

async def make_pipeline(session):             # any pipeline: chat, a Dhara flow, tools
    ...
    return PipelineTask(Pipeline([session.input(), ..., session.output(), ...]))

trio.run(serve, make_pipeline, ServerConfig(port=8765))
```
or from the command line: ``python -m rustvani_trio serve-chat``. Needs the
``transport-websocket`` extra (anycorn, Starlette). See ``docs/transport.md``.
"""

from __future__ import annotations

try:
    import anycorn as _anycorn  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "rustvani_trio.server needs the transport-websocket extra: "
        "pip install 'rustvani-trio[transport-websocket]'"
    ) from exc

from .app import STATIC_DIR, create_app
from .config import ServerConfig, ServerConfigError, is_loopback
from .runner import RunningServer, load_factory, run, serve
from .sessions import PipelineFactory, Session, SessionManager

__all__ = [
    "STATIC_DIR",
    "PipelineFactory",
    "RunningServer",
    "ServerConfig",
    "ServerConfigError",
    "Session",
    "SessionManager",
    "create_app",
    "is_loopback",
    "load_factory",
    "run",
    "serve",
]
