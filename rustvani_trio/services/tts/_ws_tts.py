"""WebSocketTTSService: how a streaming TTS provider finishes an answer (private base).

Every WebSocket TTS provider ends an answer the same way: the provider's flush message goes
out, and the answer is complete when the provider says so (its ``Flushed`` or ``final``
message), when it reports an error, when the connection ends, or when the answer is
interrupted. This base holds that wait; a provider names its flush message, calls
:meth:`answer_done` on its completion message, and says how it stops speaking.
"""

from __future__ import annotations

import abc

import trio

from ..stt._ws import Message, WebSocketOptions, WebSocketService
from ._base import TTSService

__all__ = ["WebSocketTTSService"]


class WebSocketTTSService(TTSService, WebSocketService):
    """A TTS provider over a WebSocket (see :class:`TTSService` and
    :class:`~rustvani_trio.services.stt._ws.WebSocketService`).

    Subclasses implement :meth:`flush_message`, :meth:`run_tts`, :meth:`stop_tts` (which
    starts with :meth:`abandon_answer`) and :meth:`on_message` (which calls
    :meth:`answer_done` when the provider has sent an answer's last audio, or failed).
    """

    def __init__(
        self, *, sample_rate: int, options: WebSocketOptions, name: str | None = None
    ) -> None:
        super().__init__(sample_rate=sample_rate, options=options, name=name)
        self._answer_done: trio.Event | None = None

    @abc.abstractmethod
    def flush_message(self) -> Message:
        """The message that makes the provider finish the answer's audio."""

    async def flush_tts(self) -> None:
        self._answer_done = done = trio.Event()
        self.send(self.flush_message())
        self.expect_reply()
        await done.wait()
        self.reply_complete()

    def answer_done(self) -> None:
        """The answer being flushed is over (complete, failed, or lost with the
        connection): :meth:`flush_tts` returns."""
        if self._answer_done is not None:
            self._answer_done.set()

    def abandon_answer(self) -> None:
        """The answer was interrupted: nothing more is awaited, text not sent yet is not
        sent, and a flush in progress returns."""
        self.reply_complete()
        self.clear_queue()
        self.answer_done()

    def on_disconnected(self) -> None:
        self.answer_done()  # the answer cannot complete on this connection
