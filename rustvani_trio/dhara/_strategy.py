"""What happens to the conversation's messages when a node is entered: the context strategy
(re-exported by :mod:`rustvani_trio.dhara.node` and :mod:`rustvani_trio.dhara`)."""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "DEFAULT_SUMMARY_PROMPT",
    "ContextStrategy",
    "ContextStrategyConfig",
    "strategy_config",
]

DEFAULT_SUMMARY_PROMPT = (
    "Summarise the conversation so far in a few sentences: what the user wants, what was "
    "decided and any facts (names, numbers, choices) needed to continue."
)


class ContextStrategy(enum.Enum):
    """What happens to the conversation's messages when a node is entered."""

    #: Keep every message; the node's task messages are appended.
    APPEND = "append"
    #: Keep only the system prompt (the persona); drop the rest.
    RESET = "reset"
    #: Like RESET, plus a summary of the dropped conversation (a bounded request; on timeout
    #: or failure it falls back to RESET and reports it).
    RESET_WITH_SUMMARY = "reset_with_summary"

    @classmethod
    def parse(cls, value: str | ContextStrategy) -> ContextStrategy:
        """``"append"``, ``"Reset"``, ``"reset_with_summary"``, ``"ResetWithSummary"``, ...
        (case, ``-`` and ``_`` do not matter)."""
        if isinstance(value, ContextStrategy):
            return value
        key = str(value).replace("-", "").replace("_", "").lower()
        for member in cls:
            if member.value.replace("_", "") == key:
                return member
        raise ValueError(
            f"unknown context strategy {value!r}; expected append, reset or reset_with_summary"
        )


def _parse_strategy(value: str | ContextStrategy) -> ContextStrategy:
    return ContextStrategy.parse(value)


@attrs.frozen(kw_only=True)
class ContextStrategyConfig:
    """A context strategy with its summary instruction (used by RESET_WITH_SUMMARY)."""

    strategy: ContextStrategy = attrs.field(converter=_parse_strategy)
    summary_prompt: str = DEFAULT_SUMMARY_PROMPT


def strategy_config(
    value: ContextStrategy | ContextStrategyConfig | str,
) -> ContextStrategyConfig:
    """A node's ``context_strategy`` as given (a strategy, its name, or a config) as a config."""
    if isinstance(value, ContextStrategyConfig):
        return value
    return ContextStrategyConfig(strategy=ContextStrategy.parse(value))
