"""The WebSocket transport: one pipeline per connection, speaking RTVI.

```python
transport = WebSocketTransport(connection, WebSocketParams())
task = PipelineTask(Pipeline([transport.input(), user, llm, transport.output(), assistant]))
await transport.run(task)        # until the client leaves or the pipeline ends
```

* :meth:`WebSocketTransport.input` is the pipeline's first processor: client messages become
  frames (``send-text`` a user turn, audio :class:`~rustvani_trio.frames.InputAudioRawFrame`,
  ``client-message`` an :class:`~.rtvi.RTVIClientMessageFrame`), and upstream errors and
  server messages go to the client.
* :meth:`WebSocketTransport.output` sits after the LLM (and TTS): the answer's frames become
  RTVI messages, audio goes out paced in real time (see :class:`WebSocketParams`).
* :meth:`WebSocketTransport.run` runs the pipeline task beside a reader and a writer task. A
  client that disconnects cancels its pipeline at once; a pipeline that ends closes the socket.

The socket itself is anything with ``receive``/``send``/``close`` (:class:`WebSocketConnection`);
the server adapts its ASGI connection to it, tests use an in-memory pair.

Queues and their policy: the client's messages are read only as fast as the pipeline takes
them (the reader waits on the pipeline's backpressure, the client's socket fills, its sends
wait); audio faster than real time is read at real time (plus ``max_audio_ahead``). What goes
to the client waits in a bounded queue (``max_outbound_messages``); a client that does not
read for ``slow_client_timeout`` seconds is disconnected (close 1008), never buffered without
limit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from .._validators import positive
from ..exceptions import RustvaniError
from ..frames import EndFrame
from ..task import PipelineFatalError, PipelineTask
from ._input import WebSocketInputProcessor
from ._output import WebSocketOutputProcessor
from ._protobuf import PbMessage, encode_frame
from .rtvi import FunctionCallReport, RTVIEncoder, to_json

if TYPE_CHECKING:
    from .rtvi import RTVIClientMessageFrame

__all__ = [
    "ClientMessageHandler",
    "ConnectionClosed",
    "WebSocketConnection",
    "WebSocketInputProcessor",
    "WebSocketOutputProcessor",
    "WebSocketParams",
    "WebSocketTransport",
    "Wire",
]

logger = logging.getLogger("rustvani_trio.transport")

Wire = Literal["auto", "json", "protobuf"]
Outbound = str | bytes
"""What the writer sends: one text or binary WebSocket message."""
ClientMessageHandler = Callable[["RTVIClientMessageFrame"], Awaitable[Any]]


@attrs.frozen
class _QueuedAudio:
    """Audio waiting for the writer, tagged with the answer it belongs to: audio of an
    interrupted answer that is still queued is dropped, never sent after the interruption."""

    data: bytes
    generation: int


# Close codes (RFC 6455 and the registry's application range).
NORMAL, GOING_AWAY, POLICY, INTERNAL_ERROR = 1000, 1001, 1008, 1011


class ConnectionClosed(RustvaniError, ConnectionError):
    """The peer closed the connection (or it broke); ``code`` as the WebSocket close code."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocketConnection(Protocol):
    """What the transport needs of a WebSocket."""

    async def receive(self) -> str | bytes:
        """The next message; raises :class:`ConnectionClosed` when the peer has gone."""
        ...

    async def send(self, data: str | bytes) -> None:
        """Send one text or binary message."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason``."""
        ...


def _optional_rate(_inst: Any, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or not 8000 <= value <= 192000):
        raise ValueError(f"{attr.name} must be a sample rate in 8000..192000 Hz, got {value!r}")


@attrs.frozen(kw_only=True)
class WebSocketParams:
    """Settings of one :class:`WebSocketTransport`.

    Attributes:
        wire: ``"json"`` (RTVI as JSON text; binary messages are raw PCM), ``"protobuf"``
            (pipecat's binary frames both ways) or ``"auto"``: the client's first message
            decides (text: JSON; binary: protobuf, unless ``audio_in_sample_rate`` is set).
        audio_in_sample_rate / audio_in_channels: the format of raw PCM binary messages
            (``None``: raw PCM is refused until the client declares its rate, in the URL's
            ``sample_rate`` or in ``client-ready``'s ``data.audio_in``).
        max_audio_ahead: how far (seconds) a client's audio may run ahead of real time
            before the transport stops reading from it.
        audio_out_chunk: seconds of audio per outgoing message.
        audio_out_lead: the most unplayed audio (seconds) the client may hold: a chunk goes
            out only when the client's audio would otherwise run out within this time, so an
            interruption silences the bot within ``audio_out_lead``.
        bot_stopped_gap: seconds without audio after which the bot counts as stopped speaking.
        max_outbound_messages: the bound of the queue to the client.
        slow_client_timeout: how long the pipeline waits for room in that queue before the
            client is disconnected as too slow (close 1008).
        function_calls: how much of each tool call the client sees (see ``FunctionCallReport``).
        close_timeout: how long closing (flush, close frame) may take.
    """

    wire: Wire = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "json", "protobuf"))
    )
    audio_in_sample_rate: int | None = attrs.field(default=None, validator=_optional_rate)
    audio_in_channels: int = attrs.field(default=1, validator=attrs.validators.in_(range(1, 9)))
    max_audio_ahead: float = attrs.field(default=1.0, validator=positive)
    audio_out_chunk: float = attrs.field(default=0.02, validator=positive)
    audio_out_lead: float = attrs.field(default=0.04, validator=positive)
    bot_stopped_gap: float = attrs.field(default=0.2, validator=positive)
    max_outbound_messages: int = attrs.field(default=256, validator=positive)
    slow_client_timeout: float = attrs.field(default=5.0, validator=positive)
    function_calls: FunctionCallReport = attrs.field(
        default="full", validator=attrs.validators.in_(("full", "name", "none"))
    )
    close_timeout: float = attrs.field(default=2.0, validator=positive)


class WebSocketTransport:
    """One client connection: the input and output processors of its pipeline, and the tasks
    that move messages between the socket and the pipeline (:meth:`run`).

    Args:
        connection: the socket.
        params: settings.
        session_id: shown in logs and in ``bot-ready``'s ``about``.
        about: extra fields for ``bot-ready``'s ``about``.
    """

    def __init__(
        self,
        connection: WebSocketConnection,
        params: WebSocketParams | None = None,
        *,
        session_id: str = "",
        about: Mapping[str, Any] | None = None,
    ) -> None:
        self.connection = connection
        self.params = params or WebSocketParams()
        self.session_id = session_id
        self.about: dict[str, Any] = dict(about or {})
        self.wire: Wire = self.params.wire
        self.encoder = RTVIEncoder(function_calls=self.params.function_calls)
        self.client_message_handlers: dict[str, ClientMessageHandler] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.client_gone = False
        self._input = WebSocketInputProcessor(self, name=f"ws-input#{session_id}")
        self._output = WebSocketOutputProcessor(self, name=f"ws-output#{session_id}")
        cap = self.params.max_outbound_messages
        self._out_send, self._out_recv = trio.open_memory_channel[Outbound | _QueuedAudio](cap)
        #: bumped by an interruption: queued audio of an older generation is not sent
        self.audio_generation = 0
        #: audio messages dropped from the queue because an interruption made them stale
        self.audio_dropped = 0
        self._out_closed = False
        self._writer_done = trio.Event()
        self._task: PipelineTask | None = None
        self._scope: trio.CancelScope | None = None
        self.started = trio.Event()

    # ------------------------------------------------------------------ pipeline ends

    def input(self) -> WebSocketInputProcessor:
        """The processor that feeds the client's messages into the pipeline (put it first)."""
        return self._input

    def output(self) -> WebSocketOutputProcessor:
        """The processor that sends the pipeline's output to the client (after the LLM/TTS)."""
        return self._output

    def add_client_message_handler(self, type_: str, handler: ClientMessageHandler) -> None:
        """Answer ``client-message`` s of type ``type_`` with ``await handler(frame)``: its
        return value becomes the ``server-response`` data; an exception becomes an
        ``error-response``. Types without a handler travel down the pipeline as frames."""
        self.client_message_handlers[type_] = handler

    # ------------------------------------------------------------------ running

    async def run(
        self, task: PipelineTask, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ``task`` for this connection: returns when the pipeline has ended and the
        socket is closed (or the client has gone). A fatal pipeline error is reported to the
        client (``error``, then close 1011), not raised."""
        if self._task is not None:
            raise RuntimeError("a WebSocketTransport runs one pipeline, once")
        self._task = task
        task.add_observer(self._output.observer)
        task.add_event_handler("on_pipeline_started", lambda _task: self.started.set())
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._writer, name=f"ws-writer#{self.session_id}")
            nursery.start_soon(self._input.read_loop, name=f"ws-reader#{self.session_id}")
            nursery.start_soon(self._output.speaking_monitor, name=f"ws-speaking#{self.session_id}")
            task_status.started()
            try:
                await task.run()
            except PipelineFatalError as exc:
                logger.warning("session %s: %s", self.session_id, exc)
                self._set_close(INTERNAL_ERROR, "the pipeline failed")
            await self._close_socket()
            nursery.cancel_scope.cancel()

    async def end(self, code: int = NORMAL, reason: str = "") -> None:
        """End gracefully: an EndFrame goes in behind the data; when the pipeline has
        finished, the socket is closed with ``code``."""
        self._set_close(code, reason)
        if self._task is not None and not self._task.has_finished and not self.client_gone:
            await self._task.queue_frame(EndFrame(reason=reason or None))
        else:
            await trio.lowlevel.checkpoint()

    async def cancel(self, code: int = GOING_AWAY, reason: str = "") -> None:
        """End at once: the pipeline is cancelled, then the socket closed with ``code``."""
        self._set_close(code, reason)
        if self._task is not None:
            await self._task.cancel(reason or None)

    def _set_close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    async def client_disconnected(self, exc: ConnectionClosed) -> None:
        """Called by the reader: the client has gone, so nobody is listening any more."""
        self.client_gone = True
        self._set_close(exc.code, exc.reason or "client disconnected")
        logger.info("session %s: client disconnected (%s)", self.session_id, exc.code)
        if self._task is not None:
            await self._task.cancel("client disconnected")
        self._close_outbox()

    def _close_outbox(self) -> None:
        self._out_closed = True
        self._out_send.close()

    # ------------------------------------------------------------------ outbound

    def encode(self, msg: Mapping[str, Any]) -> str | bytes:
        """One RTVI message in the session's wire form."""
        text = to_json(msg)
        if self.wire == "protobuf":
            return encode_frame(PbMessage(data=text))
        return text

    async def send_message(self, msg: Mapping[str, Any]) -> None:
        """Queue a message for the client, waiting for room at most ``slow_client_timeout``."""
        await self.send_raw(self.encode(msg))

    async def send_raw(self, data: str | bytes) -> None:
        """Queue an already encoded message, like :meth:`send_message`."""
        await self._queue(data)

    async def send_audio(self, data: bytes) -> None:
        """Queue one encoded audio message (raw PCM, or a protobuf audio frame); it is
        dropped instead of sent if an interruption comes first (:meth:`drop_queued_audio`)."""
        await self._queue(_QueuedAudio(data, self.audio_generation))

    def drop_queued_audio(self) -> None:
        """Audio queued so far will not be sent (the answer it belongs to was interrupted)."""
        self.audio_generation += 1

    async def _queue(self, data: Outbound | _QueuedAudio) -> None:
        if self.client_gone or self._out_closed:
            await trio.lowlevel.checkpoint()
            return
        # With room in the queue (nearly always) no timer and no trip through the scheduler:
        # the writer is woken and runs at the pipeline's next checkpoint. One message per
        # token made both a measurable share of the server's CPU under load.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._out_send.send_nowait(data)
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(self.params.slow_client_timeout):
            await self._out_send.send(data)
            return
        self._too_slow()

    def send_message_nowait(self, msg: Mapping[str, Any]) -> None:
        """Queue a message without waiting (for observers); a full queue means a client that
        does not read, which is disconnected."""
        if self.client_gone or self._out_closed:
            return
        try:
            self._out_send.send_nowait(self.encode(msg))
        except trio.WouldBlock:
            self._too_slow()
        except trio.ClosedResourceError:
            pass

    def _too_slow(self) -> None:
        reason = "client is not reading: the outbound queue is full"
        logger.warning("session %s: %s; disconnecting", self.session_id, reason)
        self._set_close(POLICY, reason)
        self.client_gone = True  # it does not read: nothing more is sent, the close included
        if self._scope is not None:
            self._scope.cancel()

    async def _writer(self) -> None:
        try:
            async for item in self._out_recv:
                if isinstance(item, _QueuedAudio):
                    if item.generation != self.audio_generation:
                        self.audio_dropped += 1
                        continue
                    await self.connection.send(item.data)
                else:
                    await self.connection.send(item)
        except ConnectionClosed:
            self.client_gone = True
        finally:
            self._writer_done.set()

    async def _close_socket(self) -> None:
        """After the pipeline: let the queued messages go out, then close (all bounded)."""
        self._close_outbox()
        with trio.move_on_after(self.params.close_timeout) as scope:
            await self._writer_done.wait()
            if not self.client_gone:
                code = NORMAL if self.close_code is None else self.close_code
                with contextlib.suppress(ConnectionClosed):
                    await self.connection.close(code, self.close_reason[:120])
        if scope.cancelled_caught:
            logger.info("session %s: closing took too long; dropped", self.session_id)
