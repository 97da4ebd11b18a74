"""The token budget of a context: estimates, calibration against real usage, trimming."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

from .estimate import MESSAGE_OVERHEAD, REPLY_PRIMING, message_tokens
from .tools import ToolChoice, Toolset, ToolSpec
from .values import short

if TYPE_CHECKING:
    from .history import History

__all__ = ["MAX_CALIBRATION", "MIN_CALIBRATION", "TokenBudget"]

MIN_CALIBRATION: Final[float] = 0.25
"""Lowest calibration factor :meth:`LLMContext.calibrate` will set."""
MAX_CALIBRATION: Final[float] = 4.0
"""Highest calibration factor :meth:`LLMContext.calibrate` will set."""

_MIN_RATIO: Final = Fraction(MIN_CALIBRATION)
_MAX_RATIO: Final = Fraction(MAX_CALIBRATION)

_HEAD_ROLES: Final[frozenset[str]] = frozenset({"system", "developer"})


def _protected_start(roles: Sequence[str]) -> int:
    """Where the tail that :meth:`LLMContext.trim` must keep starts, in a body of ``roles``.

    The last user message; without one, the last non-tool message; without that, nothing.
    """
    fallback = len(roles)
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            return i
        if roles[i] != "tool" and fallback == len(roles):
            fallback = i
    return fallback


class TokenBudget(Toolset):
    """The token estimate, calibration and trimming of an :class:`LLMContext` (its second
    layer, over the tools and the messages; see :mod:`.llm_context`)."""

    __slots__ = ("_factor", "_last_request_raw")

    _entries: History  # the messages belong to the last layer, LLMContext

    def __init__(self, tools: Iterable[ToolSpec] | None, tool_choice: ToolChoice) -> None:
        super().__init__(tools, tool_choice)
        self._factor: float = 1.0
        self._last_request_raw: int | None = None

    @property
    def calibration_factor(self) -> float:
        """The factor applied to heuristic estimates (1.0 until :meth:`calibrate`)."""
        return self._factor

    def reset_calibration(self) -> None:
        """Forget the calibration (factor back to 1.0)."""
        self._factor = 1.0

    def _raw_total(self, *, include_tools: bool) -> int:
        total = REPLY_PRIMING + self._entries.tokens
        if include_tools:
            total += sum(tool.tokens for tool in self._tools)
        return total

    def _scale(self, raw: int) -> int:
        return math.floor(raw * self._factor + 0.5)

    def estimate_tokens(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        include_tools: bool = True,
        calibrated: bool = True,
    ) -> int:
        """Estimate the prompt tokens of a request with ``messages`` (default: the committed
        messages) and, unless ``include_tools=False``, the current tools.

        The heuristic is ``ceil(chars / 4)`` per message plus per-message, per-tool-call and
        per-request overheads, a fixed cost per non-text content part, and each tool's JSON
        size / 4.  The result is multiplied by :attr:`calibration_factor` unless
        ``calibrated=False`` (the raw figure :meth:`calibrate` expects).
        """
        if messages is None:
            raw = self._raw_total(include_tools=include_tools)
        else:
            raw = REPLY_PRIMING + sum(
                message_tokens(m) if isinstance(m, Mapping) else MESSAGE_OVERHEAD for m in messages
            )
            if include_tools:
                raw += sum(tool.tokens for tool in self._tools)
        return self._scale(raw) if calibrated else raw

    def calibrate(self, prompt_tokens: int, sent_messages_estimate: int) -> float:
        """Learn the ratio real / estimated tokens; return the new calibration factor.

        ``prompt_tokens`` is the server's ``usage.prompt_tokens`` for a request whose
        *uncalibrated* estimate was ``sent_messages_estimate`` (i.e.
        ``estimate_tokens(sent, calibrated=False)``).  The factor becomes the ratio, clamped to
        [:data:`MIN_CALIBRATION`, :data:`MAX_CALIBRATION`].  A zero on either side (a server
        that reports no usage) leaves it unchanged; anything but a non-negative ``int`` (a
        float, NaN, ``None``, a negative count) raises :class:`ValueError` and changes
        nothing.
        """
        for name, value in (
            ("prompt_tokens", prompt_tokens),
            ("sent_messages_estimate", sent_messages_estimate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"calibrate() needs non-negative int token counts, got {name}={short(value)}"
                )
        if prompt_tokens and sent_messages_estimate:
            # Exact arithmetic: a float ratio of huge counts overflows
            ratio = Fraction(prompt_tokens, sent_messages_estimate)
            self._factor = float(min(max(ratio, _MIN_RATIO), _MAX_RATIO))
        return self._factor

    def calibrate_from_usage(
        self,
        prompt_tokens: int,
        sent_messages: Iterable[Mapping[str, Any]] | None = None,
    ) -> float:
        """:meth:`calibrate` from the usage of a response; return the new factor.

        ``sent_messages`` are the messages of that request (the current tools are counted
        too).  When omitted, the estimate remembered by the last :meth:`to_request_messages`
        is used; :class:`ValueError` if there was none.
        """
        if sent_messages is not None:
            raw = self.estimate_tokens(sent_messages, calibrated=False)
        elif self._last_request_raw is not None:
            raw = self._last_request_raw
        else:
            raise ValueError(
                "calibrate_from_usage() without sent_messages needs a prior to_request_messages()"
            )
        return self.calibrate(prompt_tokens, raw)

    def trim(self, max_tokens: int, *, budget: float = 0.8) -> int:
        """Drop the oldest messages until ``estimate_tokens() <= max_tokens * budget``.

        Returns the number of messages removed (0 when the context already fits).

        * The leading run of system/developer messages is never removed.
        * An assistant message with tool calls and the tool messages after it go as a unit, and
          the remaining conversation never starts (after that leading run) with a tool message.
        * The most recent user message and everything after it are always kept, even if that
          stays over budget (without a user message: the last non-tool message onwards).
        * Only as many messages as needed are removed; interruption marks stay with their
          messages.

        Staged round content is not counted.  ``max_tokens`` must be positive and ``budget``
        in (0, 1].
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive int, got {short(max_tokens)}")
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {short(budget)}")
        limit = max_tokens * budget
        if self.estimate_tokens() <= limit:
            return 0
        entries = self._entries
        head = 0
        while head < len(entries) and entries[head].message["role"] in _HEAD_ROLES:
            head += 1
        roles = entries.roles()[head:]
        keep_from = _protected_start(roles)
        rest = sum(entries[i].tokens for i in range(head, len(entries)))
        fixed = self._raw_total(include_tools=True) - rest
        cut = keep_from
        for i in range(1, keep_from + 1):
            rest -= entries[head + i - 1].tokens
            if (i == len(roles) or roles[i] != "tool") and self._scale(fixed + rest) <= limit:
                cut = i
                break
        entries.delete(head, head + cut)
        return cut
