"""What a flow is made of: nodes, their functions, actions, and what a function returns.

```python
greeting = NodeConfig(
    "greeting",
    system_prompt="You are a friendly pizza ordering assistant.",
    task_messages=["Greet the customer; use browse_menu when they want to order."],
    tools=[browse_menu_schema],
    respond_immediately=True,
)


async def browse_menu(args: str) -> TransitionResult:
    return TransitionResult.transition(MENU_JSON, "menu")
```
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs

from ..context import FunctionSchema, ToolChoice, ToolSpec
from ..services.llm.function_registry import ToolCallOutput
from ._handlers import handler_arity
from ._strategy import DEFAULT_SUMMARY_PROMPT as DEFAULT_SUMMARY_PROMPT
from ._strategy import ContextStrategy as ContextStrategy
from ._strategy import ContextStrategyConfig as ContextStrategyConfig
from ._strategy import strategy_config

if TYPE_CHECKING:
    from .call import DharaContext

__all__ = [
    "ACK",
    "TASK_ROLES",
    "ActionHandler",
    "ContextStrategy",
    "ContextStrategyConfig",
    "DharaFunction",
    "HandlerResult",
    "NodeAction",
    "NodeConfig",
    "TransitionResult",
]

#: Roles a node's task message may have (as in rustvani's dhara.json).
TASK_ROLES = frozenset({"system", "user", "assistant"})

#: What the model sees from a function that only transitions.
ACK = "OK"

ActionHandler: TypeAlias = Callable[["DharaContext"], "Awaitable[None] | None"]


@attrs.frozen(kw_only=True)
class NodeAction:
    """Something a node does before its first request (``pre_actions``) or after its first
    answer (``post_actions``).

    * ``NodeAction.say(text)`` (``tts_say``): push the line as a TextFrame (for speech or a
      chat window) and record it in the context as said by the assistant;
    * ``NodeAction.end_conversation()``: end the pipeline (an EndFrame after the answer);
    * ``NodeAction.function(handler)``: run ``handler(ctx)`` (sync or async).

    Texts may use ``{{state.x}}``.
    """

    type: Literal["tts_say", "end_conversation", "function"] = attrs.field(
        validator=attrs.validators.in_(("tts_say", "end_conversation", "function"))
    )
    text: str | None = None
    handler: ActionHandler | None = attrs.field(default=None, eq=False)
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.type == "tts_say" and not isinstance(self.text, str):
            raise ValueError("a tts_say action needs its text")
        if self.type == "function" and not callable(self.handler):
            raise ValueError("a function action needs a callable handler")

    @classmethod
    def say(cls, text: str) -> NodeAction:
        """Say ``text``."""
        return cls(type="tts_say", text=text)

    @classmethod
    def end_conversation(cls) -> NodeAction:
        """End the conversation once the node has answered."""
        return cls(type="end_conversation")

    @classmethod
    def function(cls, handler: ActionHandler, name: str | None = None) -> NodeAction:
        """Run ``handler(ctx)``."""
        return cls(
            type="function", handler=handler, name=name or getattr(handler, "__name__", None)
        )


def _task_messages(value: Iterable[str | Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str | Mapping):
        value = [value]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        message = {"role": "system", "content": item} if isinstance(item, str) else dict(item)
        if message.get("role") not in TASK_ROLES:
            raise ValueError(
                f"task message {i} has role {message.get('role')!r}; expected one of "
                f"{', '.join(sorted(TASK_ROLES))}"
            )
        if not isinstance(message.get("content"), str):
            raise ValueError(f"task message {i} needs a string 'content'")
        out.append(message)
    return tuple(out)


def _tools(value: Iterable[ToolSpec]) -> tuple[ToolSpec, ...]:
    tools = tuple(value)
    for tool in tools:
        if not isinstance(tool, FunctionSchema | Mapping):
            raise TypeError(f"a tool must be a FunctionSchema or an OpenAI tool dict, got {tool!r}")
    return tools


def _actions(value: Iterable[NodeAction]) -> tuple[NodeAction, ...]:
    actions = tuple(value)
    for action in actions:
        if not isinstance(action, NodeAction):
            raise TypeError(f"an action must be a NodeAction, got {action!r}")
    return actions


def tool_name(tool: ToolSpec) -> str:
    """The function name of a tool spec."""
    if isinstance(tool, FunctionSchema):
        return tool.name
    return str(tool.get("function", {}).get("name", ""))


@attrs.frozen
class NodeConfig:
    """One node of a flow.

    Attributes:
        name: the node's name (``register_node``'s name wins when both are given).
        system_prompt: replaces the context's system prompt on entry (``None``: keep it).
        task_messages: appended on entry; a plain string is a system message.
        tools: the functions the model may call here (FunctionSchema or OpenAI tool dicts).
        tool_choice: the context's tool_choice here (``None``: the provider's default).
        context_strategy: APPEND (default), RESET or RESET_WITH_SUMMARY (or a
            :class:`ContextStrategyConfig` with a summary prompt).
        respond_immediately: the model speaks as this node as soon as it is entered, without
            waiting for the user (the initial node too, with a Dhara processor in the
            pipeline); otherwise the turn ends and the node answers the user's next message.
        pre_actions / post_actions: :class:`NodeAction` s.
    """

    name: str | None = None
    system_prompt: str | None = attrs.field(default=None, kw_only=True)
    task_messages: tuple[dict[str, Any], ...] = attrs.field(
        default=(), converter=_task_messages, kw_only=True
    )
    tools: tuple[ToolSpec, ...] = attrs.field(default=(), converter=_tools, kw_only=True)
    tool_choice: ToolChoice = attrs.field(default=None, kw_only=True)
    context_strategy: ContextStrategyConfig = attrs.field(
        default=ContextStrategyConfig(strategy=ContextStrategy.APPEND),
        converter=strategy_config,
        kw_only=True,
    )
    respond_immediately: bool = attrs.field(default=True, kw_only=True)
    pre_actions: tuple[NodeAction, ...] = attrs.field(default=(), converter=_actions, kw_only=True)
    post_actions: tuple[NodeAction, ...] = attrs.field(default=(), converter=_actions, kw_only=True)

    def tool_names(self) -> list[str]:
        """The names of the node's tools, in order."""
        return [tool_name(t) for t in self.tools]


class _Kind(enum.Enum):
    STAY = "stay"
    TRANSITION = "transition"
    STATUS = "status"


@attrs.frozen
class TransitionResult:
    """What a Dhara function returns: the result the model sees, and where the flow goes.

    * ``TransitionResult.stay(result)``: stay in the current node;
    * ``TransitionResult.transition(result, "menu")``: move to ``menu`` once the round has
      settled;
    * ``TransitionResult.ok(result)`` / ``with_status(result, "on_error")``: let the
      function's ``transitions`` table decide (the status, else ``"default"``; a function
      with ``transition_on="field"`` reads the status from that field of the result).

    ``result`` may be a string, a :class:`ToolCallOutput`, or any JSON value (sent as JSON).
    A handler that returns a plain value means ``ok(value)``.
    """

    result: Any
    next_node: str | None = None
    status: str | None = None
    kind: _Kind = _Kind.STATUS

    @classmethod
    def stay(cls, result: Any) -> TransitionResult:
        """Stay in the current node."""
        return cls(result, kind=_Kind.STAY)

    @classmethod
    def transition(cls, result: Any, next_node: str) -> TransitionResult:
        """Move to ``next_node``."""
        if not isinstance(next_node, str) or not next_node:
            raise ValueError(f"next_node must be a node name, got {next_node!r}")
        return cls(result, next_node=next_node, kind=_Kind.TRANSITION)

    @classmethod
    def ok(cls, result: Any) -> TransitionResult:
        """The function's ``default`` transition, if it has one."""
        return cls(result, kind=_Kind.STATUS)

    @classmethod
    def with_status(cls, result: Any, status: str) -> TransitionResult:
        """The function's transition for ``status`` (else its ``default``)."""
        return cls(result, status=status, kind=_Kind.STATUS)

    @property
    def is_stay(self) -> bool:
        """Whether this result never transitions."""
        return self.kind is _Kind.STAY

    def output(self) -> ToolCallOutput:
        """The result as the model will see it."""
        value = self.result
        if isinstance(value, ToolCallOutput):
            return value
        if isinstance(value, str):
            return ToolCallOutput(value)
        if value is None:
            return ToolCallOutput(ACK)
        return ToolCallOutput(json.dumps(value, ensure_ascii=False, default=str))

    def status_for(self, field: str | None) -> str | None:
        """The status that picks the transition: explicit, or ``field`` of the result."""
        if self.status is not None or field is None:
            return self.status
        value = self.result.summary if isinstance(self.result, ToolCallOutput) else self.result
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if isinstance(value, Mapping) and field in value:
            found = value[field]
            return found if isinstance(found, str) else json.dumps(found)
        return None


#: The seed's name for a flow-file handler's result (``HandlerResult.ok``,
#: ``HandlerResult.with_status``).
HandlerResult = TransitionResult

Handler: TypeAlias = Callable[..., Any]


def _transitions(value: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(value or {})
    for status, target in out.items():
        if not isinstance(status, str) or not isinstance(target, str) or not target:
            raise ValueError(f"transitions map a status to a node name, got {status!r}: {target!r}")
    return out


@attrs.frozen(kw_only=True)
class DharaFunction:
    """A function of a flow, with its handler and its transitions.

    ``handler(args)`` or ``handler(args, ctx)`` (sync or async; ``args`` is the raw JSON text
    of the arguments, ``ctx`` a :class:`~rustvani_trio.dhara.DharaContext`) returns a
    :class:`TransitionResult` or a plain value. Without a handler the function only
    transitions: the model sees ``ack`` and the flow follows ``transitions["default"]``.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    handler: Handler | None = attrs.field(default=None, eq=False)
    schema: FunctionSchema | None = None
    transitions: dict[str, str] = attrs.field(factory=dict, converter=_transitions)
    transition_on: str | None = None
    ack: str = ACK
    timeout: float | None = None
    arity: int = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.handler is not None and not callable(self.handler):
            raise TypeError(f"the handler of {self.name!r} is not callable: {self.handler!r}")
        if self.handler is None and not self.transitions:
            raise ValueError(f"function {self.name!r} has neither a handler nor transitions")
        if self.schema is not None and self.schema.name != self.name:
            raise ValueError(f"schema name {self.schema.name!r} does not match {self.name!r}")
        object.__setattr__(
            self, "arity", 1 if self.handler is None else handler_arity(self.handler)
        )

    @classmethod
    def goto(
        cls,
        name: str,
        node: str,
        *,
        description: str = "",
        parameters: dict[str, Any] | None = None,
        ack: str = ACK,
    ) -> DharaFunction:
        """A function that only moves the flow to ``node``."""
        schema = FunctionSchema(
            name=name,
            description=description,
            parameters=parameters or {"type": "object", "properties": {}},
        )
        return cls(name=name, schema=schema, transitions={"default": node}, ack=ack)

    def target(self, result: TransitionResult) -> str | None:
        """The node ``result`` leads to, or ``None`` to stay."""
        if result.kind is _Kind.STAY:
            return None
        if result.kind is _Kind.TRANSITION:
            return result.next_node
        status = result.status_for(self.transition_on)
        if status is not None and status in self.transitions:
            return self.transitions[status]
        return self.transitions.get("default")


def as_result(value: Any) -> TransitionResult:
    """A handler's return value as a TransitionResult: a plain value means ``ok(value)``; a
    pair ``(result, "node")`` / ``(result, None)`` is pipecat-flows' form of ``transition`` /
    ``stay`` (a tuple is never a JSON result, so it is not sent to the model as one)."""
    if isinstance(value, TransitionResult):
        return value
    if isinstance(value, tuple):
        if len(value) == 2 and value[1] is None:
            return TransitionResult.stay(value[0])
        if len(value) == 2 and isinstance(value[1], str):
            return TransitionResult.transition(value[0], value[1])
        raise TypeError(
            "a handler returned a tuple that is not (result, next_node_name); return "
            "TransitionResult.transition(result, 'node') (nodes are registered up front, so "
            "a next node is named, not given as a NodeConfig)"
        )
    return TransitionResult.ok(value)
