"""An RTVI voice client for tests and benchmarks: it speaks PCM into a WebSocket session in
real time (a :class:`~.scenario.Microphone`) and records what comes back, messages and bot
audio, with the time each arrived (the clock of the run: virtual under a MockClock).

```python
client = VoiceClient.over_memory(conn)            # or: async with open_voice_client(url)
nursery.start_soon(client.read)
await client.connect()
await client.say([Silence(0.3), Speech(question, "question"), Until(client.first_audio)])
```
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .scenario import Microphone, Silence, Speech, Until

if TYPE_CHECKING:
    from ...transports.memory import MemoryConnection

__all__ = ["Received", "VoiceClient", "open_voice_client"]


@attrs.frozen
class Received:
    """One message from the server: an RTVI message (``message``) or bot audio (``audio``,
    with the rate announced before it)."""

    time: float
    message: dict[str, Any] | None = None
    audio: bytes = b""
    sample_rate: int = 0

    @property
    def type(self) -> str:
        return "<audio>" if self.message is None else str(self.message.get("type"))

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


class VoiceClient:
    """Talks to one session over ``send`` / ``receive`` (JSON RTVI, binary PCM both ways).

    ``receive`` returns a text or binary message, or a parsed dict, and raises
    :class:`trio.EndOfChannel` when the connection is gone.
    """

    def __init__(
        self,
        send: Callable[[str | bytes], Awaitable[None]],
        receive: Callable[[], Awaitable[str | bytes | dict[str, Any]]],
        *,
        sample_rate: int = 16000,
    ) -> None:
        self._send = send
        self._receive = receive
        self.mic = Microphone(sample_rate=sample_rate)
        self.received: list[Received] = []
        self.first_audio = trio.Event()
        self.closed = trio.Event()
        self._rate = 0
        self._changed = trio.Event()
        self._ids = 0

    @classmethod
    def over_memory(cls, conn: MemoryConnection, *, sample_rate: int = 16000) -> VoiceClient:
        """A client of an in-memory connection (the test is the client)."""

        async def send(data: str | bytes) -> None:
            conn.client_send(data)
            await trio.lowlevel.checkpoint()

        return cls(send, conn.client_receive, sample_rate=sample_rate)

    # ------------------------------------------------------------------ running

    async def read(self) -> None:
        """Record what the server sends until the connection ends (run it in a task)."""
        try:
            while True:
                data = await self._receive()
                self._record(data)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self._notify()

    def _record(self, data: str | bytes | dict[str, Any]) -> None:
        now = trio.current_time()
        if isinstance(data, bytes):
            self.received.append(Received(now, audio=data, sample_rate=self._rate))
            self.first_audio.set()
        else:
            msg = json.loads(data) if isinstance(data, str) else data
            fmt = msg.get("data") if msg.get("type") == "server-message" else None
            if isinstance(fmt, dict) and fmt.get("type") == "audio-format":
                self._rate = int(fmt["sample_rate"])
            self.received.append(Received(now, message=msg))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def send_message(self, type_: str, data: Any = None) -> str:
        """Send an RTVI message; returns its id."""
        self._ids += 1
        msg: dict[str, Any] = {"label": "rtvi-ai", "type": type_, "id": f"c{self._ids}"}
        if data is not None:
            msg["data"] = data
        await self._send(json.dumps(msg))
        return str(msg["id"])

    async def connect(self, within: float = 10.0) -> dict[str, Any]:
        """``client-ready`` declaring the microphone's format; returns ``bot-ready``."""
        audio_in = {"sample_rate": self.mic.sample_rate, "num_channels": 1}
        await self.send_message("client-ready", {"version": "2.2.0", "audio_in": audio_in})
        await self.wait_for(lambda: bool(self.of("bot-ready")), within)
        ready = self.of("bot-ready")[0].message
        assert ready is not None
        return ready

    async def say(self, segments: list[Speech | Silence | Until]) -> None:
        """Speak ``segments`` in real time (marks in ``self.mic``)."""
        await self.mic.play(self._send, segments)

    async def wait_for(self, condition: Callable[[], bool], within: float = 30.0) -> None:
        """Wait until ``condition()`` holds (checked whenever something arrives)."""
        with trio.fail_after(within):
            while not condition():
                if self.closed.is_set():
                    raise ConnectionError(f"the server closed the connection: {self.summary()}")
                await self._changed.wait()

    # ------------------------------------------------------------------ what happened

    def of(self, type_: str) -> list[Received]:
        """The messages of RTVI type ``type_`` (``"<audio>"``: the bot audio)."""
        return [r for r in self.received if r.type == type_]

    def transcripts(self) -> list[str]:
        """The final user transcriptions."""
        out = []
        for r in self.of("user-transcription"):
            data = (r.message or {}).get("data") or {}
            if data.get("final"):
                out.append(str(data.get("text")))
        return out

    def summary(self) -> list[str]:
        """The types received, runs of audio collapsed (for failure messages)."""
        out: list[str] = []
        for r in self.received:
            if not (r.type == "<audio>" and out and out[-1] == "<audio>"):
                out.append(r.type)
        return out

    @property
    def voice_to_voice(self) -> float:
        """The question's last audible sample to the first bot audio after it."""
        end = self.mic.speech_end["question"]
        return min(r.time for r in self.of("<audio>") if r.time > end) - end

    @property
    def barge_in(self) -> float:
        """The barge-in's first audible sample to the last bot audio that arrived before
        ``bot-interrupted``."""
        start = self.mic.speech_start["barge-in"]
        interrupted = min(r.time for r in self.of("bot-interrupted") if r.time >= start)
        last = max(r.time for r in self.of("<audio>") if r.time <= interrupted)
        return last - start

    def audio_after_interruption(self) -> list[Received]:
        """Bot audio that arrived after the first ``bot-interrupted`` and before the bot
        started speaking again (there should be none)."""
        kinds = [r.type for r in self.received]
        at = kinds.index("bot-interrupted")
        out = []
        for r in self.received[at + 1 :]:
            if r.type == "bot-started-speaking":
                break
            if r.type == "<audio>":
                out.append(r)
        return out


@contextlib.asynccontextmanager
async def open_voice_client(url: str, *, sample_rate: int = 16000) -> AsyncIterator[VoiceClient]:
    """A :class:`VoiceClient` over a real WebSocket (trio-websocket), reading in a task."""
    import trio_websocket

    async with trio_websocket.open_websocket_url(url) as ws, trio.open_nursery() as nursery:

        async def receive() -> str | bytes:
            try:
                return await ws.get_message()
            except trio_websocket.ConnectionClosed:
                raise trio.EndOfChannel from None

        client = VoiceClient(ws.send_message, receive, sample_rate=sample_rate)
        nursery.start_soon(client.read)
        yield client
        nursery.cancel_scope.cancel()
