"""Dhara: conversation flows whose functions move the conversation between nodes.

Two ways in, one engine:

* the seed's imperative API: :class:`DharaManager` with :class:`NodeConfig` and handlers
  returning :class:`TransitionResult`;
* a flow file (rustvani's ``dhara.json`` format, extended): :class:`DharaFlow`, with handlers
  bound by name.

See ``docs/dhara.md`` for the rules the engine keeps. ``PostgresSessionStore`` needs the
``db-postgres`` extra and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from ._frames import DharaNodeChanged
from ._validate import FlowError, validate_flow
from .call import DharaContext, DharaFunctionRegistry
from .loader import Dhara, DharaFlow, FlowValidationError
from .manager import SNAPSHOT_FORMAT, DharaError, DharaManager
from .node import (
    ContextStrategy,
    ContextStrategyConfig,
    DharaFunction,
    HandlerResult,
    NodeAction,
    NodeConfig,
    TransitionResult,
)
from .processor import DharaProcessor
from .schema import SCHEMA_PATH, flow_json_schema
from .state import FlowState, StateField
from .store import InMemorySessionStore, SessionStore, SessionStoreError
from .summary import OpenAISummarizer, Summarizer, SummaryError

if TYPE_CHECKING:
    from .postgres import PostgresSessionStore

__all__ = [
    "SCHEMA_PATH",
    "SNAPSHOT_FORMAT",
    "ContextStrategy",
    "ContextStrategyConfig",
    "Dhara",
    "DharaContext",
    "DharaError",
    "DharaFlow",
    "DharaFunction",
    "DharaFunctionRegistry",
    "DharaManager",
    "DharaNodeChanged",
    "DharaProcessor",
    "FlowError",
    "FlowState",
    "FlowValidationError",
    "HandlerResult",
    "InMemorySessionStore",
    "NodeAction",
    "NodeConfig",
    "OpenAISummarizer",
    "PostgresSessionStore",
    "SessionStore",
    "SessionStoreError",
    "StateField",
    "Summarizer",
    "SummaryError",
    "TransitionResult",
    "flow_json_schema",
    "validate_flow",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresSessionStore":
        from . import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
