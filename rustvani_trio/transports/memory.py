"""An in-memory WebSocket for testing pipelines that use the WebSocket transport.

```python
conn = MemoryConnection()
transport = WebSocketTransport(conn)
nursery.start_soon(transport.run, task)
conn.client_send({"label": "rtvi-ai", "type": "client-ready", "id": "1", "data": {...}})
reply = await conn.client_receive()          # {"label": "rtvi-ai", "type": "bot-ready", ...}
```
Works under ``trio.testing.MockClock``: nothing here touches the network.
"""

from __future__ import annotations

import json
import math
from typing import Any

import trio

from .websocket import ConnectionClosed

__all__ = ["MemoryConnection"]


class MemoryConnection:
    """Both ends of a WebSocket in memory. The server side is the transport's connection; the
    test is the client (``client_send`` / ``client_receive``). ``capacity`` bounds what the
    server may send before the client reads (0: every send waits for the client)."""

    def __init__(self, capacity: float = math.inf) -> None:
        self._in_send, self._in_recv = trio.open_memory_channel[Any](math.inf)
        self._out_send, self._out_recv = trio.open_memory_channel[str | bytes](capacity)
        self.closed: tuple[int, str] | None = None

    # server side
    async def receive(self) -> str | bytes:
        item = await self._in_recv.receive()
        if isinstance(item, ConnectionClosed):
            raise item
        return item  # type: ignore[no-any-return]

    async def send(self, data: str | bytes) -> None:
        if self.closed is not None:
            raise ConnectionClosed(1006, "closed")
        await self._out_send.send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self._out_send.close()
        await trio.lowlevel.checkpoint()

    # client side
    def client_send(self, data: str | bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data)
        self._in_send.send_nowait(data)

    def client_disconnect(self, code: int = 1001) -> None:
        self._in_send.send_nowait(ConnectionClosed(code, "bye"))

    async def client_receive(self) -> Any:
        """The next message: a dict for JSON text, bytes for binary; raises EndOfChannel
        after the server closed."""
        data = await self._out_recv.receive()
        return json.loads(data) if isinstance(data, str) else data

    async def client_until(self, type_: str) -> list[Any]:
        """Every message up to and including the first of RTVI type ``type_``."""
        seen: list[Any] = []
        while True:
            msg = await self.client_receive()
            seen.append(msg)
            if isinstance(msg, dict) and msg.get("type") == type_:
                return seen
