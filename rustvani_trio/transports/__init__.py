"""Transports: how a pipeline meets its client.

* :mod:`rustvani_trio.transports.websocket`: one pipeline per WebSocket connection
  (:class:`~rustvani_trio.transports.websocket.WebSocketTransport`).
* :mod:`rustvani_trio.transports.rtvi`: the RTVI client protocol it speaks (pipecat's), and
  the frames that carry client and server messages through a pipeline.

Both need only the core dependencies; the server that accepts connections is
:mod:`rustvani_trio.server` (extra ``transport-websocket``).
"""
