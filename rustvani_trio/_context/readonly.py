"""Read-only lists and dicts: what the context hands out, and what it stores.

They are real ``list`` and ``dict`` subclasses, so they serialise with :mod:`json`, compare
equal to plain lists and dicts, and read as fast. Every mutating method raises
:class:`TypeError` naming what to call instead, so that a change can never be silently lost
on a copy (the trap of ``context.messages.insert(...)`` in a transition hook).

They are deeply immutable (made only by :func:`.values.freeze`, which freezes every nested
value), so :func:`copy.copy` and :func:`copy.deepcopy` return the same object, and a slice is
read-only too, as for a tuple; ``list(value)``, ``dict(value)`` and the ``copy()`` methods give
editable shallow copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, NoReturn, TypeVar

__all__ = ["MessageDict", "MessageList", "ReadOnlyDict", "ReadOnlyList", "ToolList"]

_L = TypeVar("_L", bound="ReadOnlyList")
_D = TypeVar("_D", bound="ReadOnlyDict")
_R = TypeVar("_R", bound="_ReadOnly")

_OPERATIONS: Final[Mapping[str, str]] = {
    "__setitem__": "item assignment",
    "__delitem__": "item deletion",
    "__iadd__": "+=",
    "__imul__": "*=",
    "__ior__": "|=",
}


class _ReadOnly:
    """What the read-only list and dict share: no construction, copies, pickling, refusals."""

    __slots__ = ()

    _WHAT: ClassVar[str] = "a value held by an LLMContext (or a FunctionSchema)"
    _DEFAULT: ClassVar[str] = (
        "build a new value and hand it over: context.replace_message(index, "
        "{**message, 'content': ...}) for a message, set_tools() or add_tools() for a tool, "
        "set_tool_choice() for the tool choice"
    )
    _INSTEAD: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is made by LLMContext; build a plain value")

    def __copy__(self: _R) -> _R:
        return self

    def __deepcopy__(self: _R, _memo: dict[int, Any]) -> _R:
        return self

    def _refuse(self, method: str) -> NoReturn:
        operation = _OPERATIONS.get(method, f"{method}()")
        instead = self._INSTEAD.get(method, self._DEFAULT)
        raise TypeError(f"{self._WHAT} is read-only: {operation} would change nothing; {instead}")


def _refusing(name: str) -> Callable[..., NoReturn]:
    def refuse(self: _ReadOnly, *_args: Any, **_kwargs: Any) -> NoReturn:
        self._refuse(name)

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


class ReadOnlyList(_ReadOnly, list[Any]):
    """A list that refuses to change (made by :func:`.values.freeze`)."""

    __slots__ = ()

    @classmethod
    def _of(cls: type[_L], items: Iterable[Any]) -> _L:
        """The read-only list of ``items`` (already frozen: they are not checked)."""
        out = list.__new__(cls)
        list.extend(out, items)
        return out

    def __reduce_ex__(self, _protocol: Any) -> tuple[Any, ...]:
        return (_rebuild, (type(self), list(self)))

    def __getitem__(self, index: Any) -> Any:
        """An item, or for a slice a read-only list (as a tuple's slice is a tuple), so that
        ``context.messages[-3:].append(...)`` fails instead of changing a throwaway copy."""
        item = list.__getitem__(self, index)
        if isinstance(index, slice):
            return type(self)._of(item)
        return item


class ReadOnlyDict(_ReadOnly, dict[str, Any]):
    """A dict that refuses to change (made by :func:`.values.freeze`)."""

    __slots__ = ()

    @classmethod
    def _of(cls: type[_D], items: Mapping[str, Any]) -> _D:
        """The read-only dict of ``items`` (already frozen: they are not checked)."""
        out = dict.__new__(cls)
        dict.update(out, items)
        return out

    def __reduce_ex__(self, _protocol: Any) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self)))


# Every method that changes a list or a dict refuses (mypy still sees list's and dict's own
# signatures; the public types are Sequence and Mapping, which have none of them).
for _cls, _names in (
    (ReadOnlyList, "append extend insert remove pop clear sort reverse __setitem__ __delitem__"),
    (ReadOnlyList, "__iadd__ __imul__"),
    (ReadOnlyDict, "clear pop popitem setdefault update __setitem__ __delitem__ __ior__"),
):
    for _name in _names.split():
        setattr(_cls, _name, _refusing(_name))
del _cls, _names, _name


def _rebuild(cls: type[ReadOnlyList | ReadOnlyDict], items: Any) -> ReadOnlyList | ReadOnlyDict:
    return cls._of(items)


_CHANGE_MESSAGE = "context.replace_message(index, {**message, ...})"


class MessageDict(ReadOnlyDict):
    """One message as the context stores it and hands it out."""

    __slots__ = ()

    _WHAT = "a message held by an LLMContext"
    _DEFAULT = f"use {_CHANGE_MESSAGE} with a changed copy"


class MessageList(ReadOnlyList):
    """``context.messages``: a read-only snapshot of the committed messages."""

    __slots__ = ()

    _WHAT = "context.messages (a snapshot of the committed messages)"
    _DEFAULT = "use context.set_messages(new_list) (list(context.messages) is an editable copy)"
    _INSTEAD = {
        "append": "use context.add_message(message)",
        "extend": "use context.add_messages(messages)",
        "__iadd__": "use context.add_messages(messages)",
        "insert": "use context.insert_message(index, message)",
        "__setitem__": f"use {_CHANGE_MESSAGE}",
        "__delitem__": "use context.remove_message(index)",
        "pop": "use context.remove_message(index)",
        "remove": "use context.remove_message(index)",
        "clear": "use context.set_messages([])",
    }


class ToolList(ReadOnlyList):
    """``context.tools``: a read-only snapshot of the tools."""

    __slots__ = ()

    _WHAT = "context.tools (a snapshot of the tools)"
    _DEFAULT = "use context.set_tools(tools)"
    _INSTEAD = {
        "append": "use context.add_tools([tool])",
        "extend": "use context.add_tools(tools)",
        "__iadd__": "use context.add_tools(tools)",
        "insert": "use context.add_tools([tool]) (the order of tools does not matter)",
        "__setitem__": "use context.add_tools([tool]) (it replaces the tool of the same name)",
        "__delitem__": "use context.remove_tool(name)",
        "pop": "use context.remove_tool(name)",
        "remove": "use context.remove_tool(name)",
        "clear": "use context.set_tools(None)",
    }
