"""DharaManager: the seed's imperative API for conversation flows (one engine for both APIs).

```python
context = LLMContext()
registry = FunctionRegistry()
dhara = DharaManager(context, registry)
dhara.register_node("greeting", greeting_node, [("browse_menu", browse_menu)])
dhara.register_node_no_tools("farewell", farewell_node)
dhara.set_initial_node("greeting")

llm = OpenAILLMHandler.with_registry(config, registry)  # shares the manager's registry
llm.set_transition_hook(dhara.create_transition_hook())
user, assistant = create_context_aggregators(context)
pipeline = Pipeline([user, dhara.processor(), llm.into_processor(), assistant])
```

The processor is optional for transitions; it is what lets the initial node speak first,
announces the initial node, runs post actions, settles a transition whose turn was interrupted
before the next turn, and saves the conversation to a session store after every turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..context import FunctionSchema, LLMContext, ToolSpec
from ..frames import FrameDirection
from ..services.llm.function_registry import FunctionRegistry
from ..services.llm.openai import TransitionHook
from ._engine import DharaError, _Engine, _Node
from ._frames import DharaNodeChanged
from ._wiring import _TransitionHook
from .node import DharaFunction, NodeConfig, tool_name
from .state import FlowState, StateField

if TYPE_CHECKING:
    from .processor import DharaProcessor
    from .store import SessionStore
    from .summary import Summarizer

__all__ = ["SNAPSHOT_FORMAT", "DharaError", "DharaManager"]

logger = logging.getLogger("rustvani_trio.dhara")

#: The ``format`` field of a snapshot.
SNAPSHOT_FORMAT = "rustvani-trio.dhara/1"

HandlerSpec = tuple[str, Any] | DharaFunction


def _schema_of(tool: ToolSpec) -> FunctionSchema:
    if isinstance(tool, FunctionSchema):
        return tool
    function = tool.get("function", {})
    return FunctionSchema(
        name=function.get("name", ""),
        description=function.get("description", ""),
        parameters=function.get("parameters") or {"type": "object", "properties": {}},
    )


class DharaManager(_Engine):
    """Moves a conversation between nodes: each node has a prompt, task messages and the
    functions the model may call there; a function's result says whether to stay or move.

    Args:
        context: the conversation's LLMContext (the one the aggregators use).
        registry: the FunctionRegistry the LLM handler uses (created when omitted: then build
            the handler with ``OpenAILLMHandler.with_registry(config, dhara.registry)``). Dhara
            only touches the names it registered: built-in tools and other functions survive
            node changes.
        global_functions: :class:`DharaFunction` s (with schemas) offered in every node.
        state / state_fields: initial values and declared (typed) fields of :attr:`state`.
        summarizer: ``async (messages, instruction) -> str`` for RESET_WITH_SUMMARY nodes.
        summary_timeout: the bound of one summary request (then: plain reset, reported).
        flow_id / flow_version: recorded in snapshots and checked on restore.
    """

    def __init__(
        self,
        context: LLMContext,
        registry: FunctionRegistry | None = None,
        *,
        global_functions: Iterable[DharaFunction] = (),
        state: Mapping[str, Any] | None = None,
        state_fields: Mapping[str, StateField] | None = None,
        summarizer: Summarizer | None = None,
        summary_timeout: float = 10.0,
        flow_id: str = "dhara",
        flow_version: str = "1",
    ) -> None:
        if not isinstance(context, LLMContext):
            raise TypeError(f"context must be an LLMContext, got {type(context).__name__}")
        if not summary_timeout > 0:
            raise ValueError(f"summary_timeout must be positive, got {summary_timeout!r}")
        self.context = context
        self.registry = registry if registry is not None else FunctionRegistry()
        self.state = FlowState(state_fields, state)
        self.summarizer = summarizer
        self.summary_timeout = summary_timeout
        self.flow_id = flow_id
        self.flow_version = str(flow_version)
        #: Every node change so far, as announced.
        self.history: list[DharaNodeChanged] = []
        self._nodes = {}
        self._globals = {}
        self._current = None
        self._generation = 0
        self._ours = set()
        self._pending = {}
        self._outbox = []
        self._processor = None
        self._post_next_turn = None
        self._initial_due = False
        self._ran = set()
        self._told_no_processor = False
        self._revision = 0
        self._hook_fn = _TransitionHook(self)
        for fn in global_functions:
            self.register_global_function(fn)

    # ------------------------------------------------------------------ building

    def register_node(
        self, name: str, config: NodeConfig, handlers: Iterable[HandlerSpec] = ()
    ) -> None:
        """Register node ``name``: its config and its functions, as ``(function_name,
        handler)`` pairs (each named in ``config.tools``) or :class:`DharaFunction` s (whose
        schemas are added to the node's tools)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a node name must be a non-empty string, got {name!r}")
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, got {type(config).__name__}")
        tools = {tool_name(t): t for t in config.tools}
        if len(tools) != len(config.tools):
            raise ValueError(f"node {name!r}: two tools have the same name")
        functions: dict[str, DharaFunction] = {}
        extra: list[ToolSpec] = []
        for spec in handlers:
            if isinstance(spec, DharaFunction):
                fn = spec
            else:
                fn_name, handler = spec
                if fn_name not in tools:
                    raise ValueError(
                        f"node {name!r}: function {fn_name!r} has a handler but no schema in the "
                        "node's tools; add it to NodeConfig.tools"
                    )
                fn = (
                    handler
                    if isinstance(handler, DharaFunction)
                    else DharaFunction(
                        name=fn_name, handler=handler, schema=_schema_of(tools[fn_name])
                    )
                )
            if fn.name in functions:
                raise ValueError(f"node {name!r}: function {fn.name!r} is given twice")
            functions[fn.name] = fn
            if fn.name not in tools:
                if fn.schema is None:
                    raise ValueError(f"node {name!r}: function {fn.name!r} has no schema")
                extra.append(fn.schema)
        unbound = [t for t in tools if t not in functions]
        if unbound:
            raise ValueError(
                f"node {name!r}: tool(s) {', '.join(unbound)} have no handler; give one per tool "
                "(or DharaFunction.goto for a function that only transitions)"
            )
        if extra:
            config = NodeConfig(
                config.name,
                system_prompt=config.system_prompt,
                task_messages=config.task_messages,
                tools=(*config.tools, *extra),
                tool_choice=config.tool_choice,
                context_strategy=config.context_strategy,
                respond_immediately=config.respond_immediately,
                pre_actions=config.pre_actions,
                post_actions=config.post_actions,
            )
        if name == self._current:
            raise DharaError(f"node {name!r} is the current node; it cannot be replaced now")
        if name in self._nodes:
            logger.warning("dhara: node %r registered again; replacing it", name)
        self._nodes[name] = _Node(name=name, config=config, functions=functions)

    def register_node_no_tools(self, name: str, config: NodeConfig) -> None:
        """Register a node whose model has no functions (an end node, for instance)."""
        if config.tools:
            raise ValueError(f"node {name!r} has tools; use register_node with their handlers")
        self.register_node(name, config, ())

    def register_global_function(self, function: DharaFunction) -> None:
        """Offer ``function`` in every node (before or during the conversation)."""
        if not isinstance(function, DharaFunction) or function.schema is None:
            raise TypeError("a global function must be a DharaFunction with a schema")
        name = function.name
        if name in self._globals:
            raise ValueError(f"global function {name!r} is registered already")
        if name in self.registry and name not in self._ours:
            raise DharaError(
                f"global function {name!r} clashes with a function registered outside Dhara "
                "(a built-in tool?); rename one of them"
            )
        self._globals[name] = function
        node = self._nodes[self._current] if self._current is not None else None
        if node is not None and name not in node.functions:  # the node's own one wins
            self.context.set_tools(self._tools_for(node))
            self.registry.register(name, self._entry(function), rich=True, timeout=function.timeout)
            self._ours.add(name)

    def set_initial_node(self, name: str) -> None:
        """Enter node ``name`` now (its prompt, task messages, tools and functions). Its
        announcement, pre actions and (with ``respond_immediately``) first answer come when
        the pipeline starts, from the Dhara processor."""
        if name not in self._nodes:
            raise DharaError(
                f"node {name!r} is not registered (nodes: {', '.join(self._nodes) or 'none'})"
            )
        if self._processor is not None and self._processor.can_push:
            raise DharaError(
                "set_initial_node() is for before the pipeline starts; in a conversation, "
                "nodes change through the functions' transitions"
            )
        self._pending.clear()
        frame = self._apply(name, "initial")
        self._outbox.append((frame, FrameDirection.DOWNSTREAM))
        self._initial_due = True

    def _adopt_registry(self, registry: FunctionRegistry) -> None:
        """Move Dhara's functions into ``registry`` (the LLM handler's own) and use it from
        now on: the seed's ``OpenAILLMHandler(config)`` wiring works as written."""
        clash = [n for n in self._ours if n in registry]
        if clash:
            raise DharaError(
                f"the LLM handler's registry already has {', '.join(sorted(clash))}; give the "
                "handler the Dhara registry: OpenAILLMHandler.with_registry(config, dhara.registry)"
            )
        for name in sorted(self._ours):
            entry = self.registry.get(name)
            if entry is not None:
                registry.register(name, entry.handler, rich=True, timeout=entry.timeout)
                self.registry.unregister(name)
        self.registry = registry
        logger.info("dhara: using the LLM handler's function registry")

    def create_transition_hook(self) -> TransitionHook:
        """The hook for ``OpenAILLMHandler.set_transition_hook``: after each committed tool
        round it applies the transition the round asked for, and ends the turn when the new
        node does not respond immediately. (Always the same object: the processor finds the
        LLM that runs it.)"""
        return self._hook_fn

    def processor(
        self,
        *,
        store: SessionStore | None = None,
        session_id: str | None = None,
        save_timeout: float = 5.0,
        name: str | None = None,
    ) -> DharaProcessor:
        """The Dhara processor, for between the user aggregator and the LLM. With ``store``
        and ``session_id`` it saves a snapshot after every turn."""
        from .processor import DharaProcessor

        return DharaProcessor(
            self, store=store, session_id=session_id, save_timeout=save_timeout, name=name
        )

    # ------------------------------------------------------------------ reading

    @property
    def current_node(self) -> str | None:
        """The node the conversation is in (always the one whose prompt and tools the next
        request carries)."""
        return self._current

    @property
    def node_names(self) -> list[str]:
        """The registered nodes, in registration order."""
        return list(self._nodes)

    def node(self, name: str) -> NodeConfig:
        """The config of node ``name``."""
        return self._nodes[name].config

    def function_names(self, node: str | None = None) -> list[str]:
        """The functions offered in ``node`` (default: the current node), globals included."""
        which = node if node is not None else self._current
        if which is None:
            return list(self._globals)
        return list(self._functions_for(self._nodes[which]))

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable record to continue this conversation elsewhere: the flow's id
        and version, the current node, the state, the context's messages and the revision
        (counted by every save, so a store keeps the newest)."""
        if self._current is None:
            raise DharaError("there is nothing to snapshot before set_initial_node()")
        record = {
            "format": SNAPSHOT_FORMAT,
            "flow_id": self.flow_id,
            "flow_version": self.flow_version,
            "revision": self._revision,
            "node": self._current,
            "state": self.state.to_json(),
            "messages": self.context.messages,
        }
        try:
            json.dumps(record, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DharaError(f"the conversation cannot be saved as JSON: {exc}") from None
        return record

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from ``snapshot``: its messages, state and node (the node's tools and
        functions are set; its task messages are not added again). All-or-nothing; refused
        while a turn is running."""
        if not isinstance(snapshot, Mapping) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise DharaError(f"not a Dhara snapshot (expected format {SNAPSHOT_FORMAT!r})")
        flow = (snapshot.get("flow_id"), str(snapshot.get("flow_version")))
        if flow != (self.flow_id, self.flow_version):
            raise DharaError(
                f"the snapshot is of flow {flow[0]!r} version {flow[1]!r}; this manager runs "
                f"{self.flow_id!r} version {self.flow_version!r}"
            )
        self._check_between_turns("restore()")
        node = snapshot.get("node")
        if not isinstance(node, str) or node not in self._nodes:
            raise DharaError(f"the snapshot's node {node!r} is not registered")
        revision = snapshot.get("revision", 0)
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise DharaError(f"the snapshot's revision {revision!r} is not a count")
        messages = snapshot.get("messages")
        if not isinstance(messages, list):
            raise DharaError("the snapshot has no message list")
        try:
            LLMContext(messages).validate()
        except ValueError as exc:
            raise DharaError(f"the snapshot's messages are invalid: {exc}") from None
        values = snapshot.get("state")
        if not isinstance(values, Mapping):
            raise DharaError(f"the snapshot's state is not an object: {values!r:.60}")
        try:
            FlowState(self.state.fields, values)  # before any change
        except (TypeError, ValueError) as exc:
            raise DharaError(f"the snapshot's state is invalid: {exc}") from None
        unseen = [f for f, _ in self._outbox if isinstance(f, DharaNodeChanged)]
        frame = self._apply(node, "restored", messages=messages)
        if unseen:
            # Announcements nobody has seen describe what the restore replaced: the first
            # announcement the pipeline sees starts where the last one it saw ended.
            frame = DharaNodeChanged(previous=unseen[0].previous, current=node, reason="restored")
            self.history[-1] = frame
            self._outbox = [(f, d) for f, d in self._outbox if not isinstance(f, DharaNodeChanged)]
        self.state.replace(values)
        self._revision = revision
        self._pending.clear()
        self._initial_due = False
        self._send_nowait(frame, FrameDirection.DOWNSTREAM)

    def _check_between_turns(self, what: str) -> None:
        processor = self._processor
        if self.context.open_round is not None or (
            processor is not None and processor.turn_running
        ):
            raise DharaError(
                f"{what} while a turn is running would mix two conversations; call it before "
                "the pipeline starts (or between turns)"
            )

    async def save(self, store: SessionStore, session_id: str) -> None:
        """Write :meth:`snapshot` to ``store`` under ``session_id`` (as a new revision)."""
        self._revision += 1
        await store.save(session_id, self.snapshot())

    async def load(self, store: SessionStore, session_id: str) -> bool:
        """Restore from ``store``; ``False`` when it has no snapshot for ``session_id``."""
        snapshot = await store.load(session_id)
        if snapshot is None:
            return False
        self.restore(snapshot)
        return True
