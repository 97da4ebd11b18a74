"""WebSocketTTSService: how a streaming TTS provider speaks an answer (private base).

Every WebSocket TTS provider speaks an answer the same way: each piece of text goes out as
the provider's text message, then its flush message; the answer is complete when the
provider says so (its ``Flushed`` or ``final`` message), when it reports an error, or when
the answer is interrupted.

A connection can end in the middle of an answer: a provider that reaps idle sockets may
close one just as the next answer's text goes out on it, and a connection can drop. The
answer's text is kept until the answer is over, so that:

* when nothing of the answer's audio had arrived yet, the whole answer (its text, and its
  flush if it was sent) goes out again on the next connection -- nothing was heard, so
  nothing is heard twice; this happens at most :data:`MAX_RESENDS` times per answer (a
  connection that ended before any of the answer went out on it is no try; such requeues are
  bounded too, at ``2 * MAX_RESENDS``), and not when the provider was given up for not
  answering (``idle_timeout``);
* otherwise part of the answer's audio is lost: the answer ends there (the rest of its text
  is not sent: the user would hear it after a gap), and a non-fatal error says so when the
  answer's end comes (sending the text again would repeat what the user already heard).
  The same holds for an answer sent again too often, for one whose provider could not be
  reached again, and for one that does not fit in ``max_queued`` while the connection is
  down (the queue's bound would drop its beginning).

Text that is not sent gets no :class:`~rustvani_trio.frames.TTSTextFrame`, and every run
starts with no answer (a pipeline cancelled in the middle of one can be run again).

A provider names its text and flush messages, calls :meth:`answer_done` on its completion
message, and says how it stops speaking.
"""

from __future__ import annotations

import abc

import trio

from ...frames import InterruptionFrame, StartFrame
from ..stt._ws import Message, WebSocketOptions, WebSocketService
from ._base import TTSService

__all__ = ["MAX_RESENDS", "WebSocketTTSService"]

#: how many times one answer is sent again after its connection ended before any audio
MAX_RESENDS = 2
# Queued again for a connection that ended before anything went out on it (no try of the
# answer's): bounded too, against a provider that ends every connection at once (reopened
# with the reconnect policy's backoff).
_MAX_REQUEUES = 2 * MAX_RESENDS

_LOST = "the connection ended before the answer's audio was complete; the rest of it is lost"


def _too_long(limit: int) -> str:
    return (
        f"the answer went past max_queued={limit} messages while the connection was down; "
        "the rest of it is not spoken"
    )


def _not_spoken(tries: int) -> str:
    times = "once" if tries == 1 else f"{tries} times"
    return (
        f"the connection ended before any of the answer's audio arrived, {times}; "
        "the answer is not spoken"
    )


class WebSocketTTSService(TTSService, WebSocketService):
    """A TTS provider over a WebSocket (see :class:`TTSService`,
    :class:`~rustvani_trio.services.stt._ws.WebSocketService` and the module docstring).

    Subclasses implement :meth:`text_message`, :meth:`flush_message`, :meth:`stop_tts`
    (which starts with :meth:`abandon_answer`) and :meth:`on_message` (which delivers audio
    with :meth:`push_audio` and calls :meth:`answer_done` when the provider has sent an
    answer's last audio, or failed).
    """

    def __init__(
        self, *, sample_rate: int, options: WebSocketOptions, name: str | None = None
    ) -> None:
        super().__init__(sample_rate=sample_rate, options=options, name=name)
        self._answer_done: trio.Event | None = None
        # The answer in progress: its text messages so far, its flush message once sent,
        # whether any of its audio arrived, how often it was sent again, whether it ended
        # early (lost with a connection: the rest of its text is dropped) and why (reported
        # when the answer's end comes).
        self._answer_texts: list[Message] = []
        self._flush: Message | None = None
        self._heard = False
        self._resends = 0
        self._requeues = 0
        self._over = False
        self._lost: str | None = None

    @abc.abstractmethod
    def text_message(self, text: str) -> Message | None:
        """The message that sends one piece of the answer's text (``None``: nothing is
        sent for it, e.g. text the provider would refuse)."""

    @abc.abstractmethod
    def flush_message(self) -> Message:
        """The message that makes the provider finish the answer's audio."""

    async def run_tts(self, text: str) -> bool:
        if self._over:
            return False  # the answer ended early: the rest of it is not spoken
        message = self.text_message(text)
        if message is None:
            return False
        if self._ends_for_want_of_room():
            return False
        self._answer_texts.append(message)
        self.send(message)
        return True

    async def flush_tts(self) -> None:
        if self._over or self._ends_for_want_of_room():
            lost = self._lost
            self._end_answer()
            if lost is not None:
                await self.report(lost)
            return
        self._answer_done = done = trio.Event()
        self._flush = self.flush_message()
        self.send(self._flush)
        self.expect_reply()
        try:
            await done.wait()
        finally:
            lost = self._lost
            self._end_answer()
        if lost is not None:
            await self.report(lost)

    async def push_audio(self, pcm: bytes, generation: int | None = None) -> bool:
        if pcm and self._in_answer() and (generation is None or generation == self.generation):
            self._heard = True
        return await super().push_audio(pcm, generation)

    def answer_done(self) -> None:
        """The answer being flushed is over (complete, failed, or lost with the
        connection): :meth:`flush_tts` returns."""
        if self._answer_done is not None:
            self._answer_done.set()

    def abandon_answer(self) -> None:
        """The answer was interrupted: nothing more is awaited, text not sent yet is not
        sent, and a flush in progress returns."""
        self.clear_queue()
        self.answer_done()
        self._end_answer()

    def _end_answer(self) -> None:
        self.reply_complete()
        self._answer_done = None
        self._answer_texts = []
        self._flush = None
        self._heard = False
        self._resends = 0
        self._requeues = 0
        self._over = False
        self._lost = None

    def _in_answer(self) -> bool:
        """Whether an answer's text or flush went out and the answer is not over."""
        return (bool(self._answer_texts) or self._flush is not None) and not self._over

    def _ends_for_want_of_room(self) -> bool:
        """While there is no connection, the queue's bound would drop the answer's beginning
        to take one more of its messages: the answer ends here instead (no gap inside an
        answer). While connected, the writer empties the queue."""
        if self.connected or self.queue_room() >= 1:
            return False
        self._lost = _too_long(self.options.max_queued)
        self._end_early()
        return True

    async def on_start(self, frame: StartFrame) -> None:
        self._end_answer()  # (a run before may have been cancelled mid-answer)
        await super().on_start(frame)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        # An answer that had already ended early (its audio lost with a connection) and is
        # now interrupted still reports the loss: the connection trouble is worth knowing.
        lost = self._lost if self._over else None
        await super().on_interruption(frame)
        if lost is not None:
            await self.report(lost)

    def set_ready(self) -> None:
        super().set_ready()
        if self._flush is not None and not self._over:
            self.expect_reply()  # the flush was sent again on this connection

    def on_disconnected(self) -> None:
        if not self._in_answer():
            return  # between answers (or the answer already ended): nothing more is lost
        if (
            not self._heard
            and not self.reply_was_late
            and not self._closing
            and self._resends < MAX_RESENDS
            and self._requeues < _MAX_REQUEUES
        ):
            # Nothing of the answer was heard: it all goes out again on the next connection
            # (if it fits in the queue: else it ends here, not spoken).
            messages = [*self._answer_texts, *([self._flush] if self._flush is not None else [])]
            tried = self.unsent(messages) < len(messages)  # some of it went out on this one
            self.clear_queue()  # the part not sent yet is in _answer_texts too
            if len(messages) > self.queue_room():
                self._lost = _too_long(self.options.max_queued)
                self._end_early()
                return
            if tried:
                self._resends += 1
            else:
                # (a connection that ended before any of the answer went out on it, one
                # closing as the answer was queued, say, is no try of the answer's)
                self._requeues += 1
            for message in messages:
                self.send(message)
            return
        # The answer ends here: what is left of it is not sent (its audio would follow a gap,
        # or come after the answer ended), and the reason is reported at the answer's end.
        if self._heard:
            self._lost = _LOST
        elif not self.reply_was_late:  # (a late reply was reported as such)
            self._lost = _not_spoken(self._resends + self._requeues + 1)
        self._end_early()

    def on_unreachable(self) -> None:
        # The provider cannot be reached: the answer ends (the give-up was reported, with the
        # messages it dropped).
        if self._in_answer():
            self._end_early()

    def _end_early(self) -> None:
        self._over = True
        self.clear_queue()
        self.answer_done()  # a flush in progress returns
