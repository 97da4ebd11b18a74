"""The values a context accepts: JSON, checked at the door and stored read-only.

Everything handed to the context (messages, tool results, tools, the tool choice) is copied
with :func:`freeze`, which accepts only what a request can carry and the server can read:
``str`` (valid Unicode: no lone surrogates), ``int``, finite ``float``, ``bool``, ``None``,
lists/tuples and mappings with ``str`` keys, nested at most :data:`MAX_DEPTH` levels. Anything
else (bytes, NaN, a set, an object, ...) is refused then and there, with an error naming
where it is and what is wrong, instead of being stored and failing every later request.

:func:`thaw` makes the plain, mutable deep copy that goes into a request.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from .readonly import MessageDict, ReadOnlyDict, ReadOnlyList

__all__ = ["MAX_DEPTH", "freeze", "freeze_message", "short", "thaw", "type_name"]

MAX_DEPTH: Final = 64
"""How deeply lists and dicts may nest in one message, tool or tool choice."""

_D = TypeVar("_D", bound=ReadOnlyDict)

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SHORT: Final = 60
_MAX_PATH: Final = 12


class _ShortRepr(reprlib.Repr):
    """:mod:`reprlib` limits, plus integers too long to print and bytes cut before
    printing."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = self.maxlong = _SHORT
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() refuses beyond 4,300 digits; the digits say nothing
            return f"<int of {x.bit_length():,} bits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        if len(x) <= _SHORT:
            return repr(x)
        return f"{repr(x[: _SHORT // 2])[:-1]}...' ({len(x):,} bytes)"

    # The read-only containers print as the plain ones (reprlib dispatches on the type name).
    def repr_ReadOnlyList(self, x: list[Any], level: int) -> str:
        return self.repr_list(x, level)

    repr_MessageList = repr_ToolList = repr_ReadOnlyList

    def repr_ReadOnlyDict(self, x: dict[str, Any], level: int) -> str:
        return self.repr_dict(x, level)

    repr_MessageDict = repr_ReadOnlyDict


_SHORT_REPR: Final = _ShortRepr()


def type_name(value: object) -> str:
    """The name of ``value``'s type for an error message (a read-only list or dict is a
    ``list`` or a ``dict``)."""
    if isinstance(value, ReadOnlyList):
        return "list"
    if isinstance(value, ReadOnlyDict):
        return "dict"
    return type(value).__name__


def short(value: object) -> str:
    """A short ``repr`` of ``value`` for an error message: strings cut to a few dozen
    characters, containers to a few items and levels (deep and self-referencing ones
    included); never raises (a failing ``__repr__`` gives ``<Type instance at ...>``)."""
    try:
        return _SHORT_REPR.repr(value)
    except Exception:  # reprlib guards instances; this guards the built-in types' paths
        return f"<{type(value).__name__} object>"


class _Refused(Exception):
    """A value that is not JSON; ``path`` collects the keys down to it while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []


def _check_text(text: str) -> None:
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            raise _Refused(
                f"a lone surrogate {found.group()!r} at index {found.start():,} of "
                f"{len(text):,} characters (text must be valid Unicode; decode input with "
                "errors='replace')"
            )


def _freeze(value: Any, depth: int) -> Any:
    """``value`` checked, with its lists and dicts copied read-only (:class:`_Refused`).

    Subclasses of ``str``, ``int`` and ``float`` are stored as the plain value (an enum
    member or a user's ``str`` subclass could carry state, or override ``isascii``).
    """
    kind = type(value)
    if kind is str:  # the common cases first, by exact type
        if not value.isascii():
            _check_text(value)
        return value
    if kind is dict:
        return _freeze_mapping(value, depth, ReadOnlyDict)
    if kind is list or kind is tuple:
        return _freeze_sequence(value, depth)
    if value is None or kind is bool:
        return value
    if isinstance(value, str):
        plain = str.__str__(value)
        _check_text(plain)
        return plain
    if isinstance(value, ReadOnlyDict | ReadOnlyList):
        # Read-only values were checked when they were made, but only as deep as they were
        # then: nested in something else, they must still fit.
        if depth:
            _check_nesting(value, depth)
        return value
    if isinstance(value, int):
        if value.bit_length() > 64:
            try:
                str(value)
            except ValueError:
                raise _Refused(
                    f"an integer of {value.bit_length():,} bits is too large for JSON"
                ) from None
        return value if kind is int else int.__int__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{value!r} is not a JSON number (NaN and infinity are refused)")
        return value if kind is float else float.__float__(value)
    if isinstance(value, Mapping):
        return _freeze_mapping(value, depth, ReadOnlyDict)
    if isinstance(value, list | tuple):
        return _freeze_sequence(value, depth)
    hint = " (decode it to str)" if isinstance(value, bytes | bytearray | memoryview) else ""
    raise _Refused(f"{type(value).__name__} is not a JSON value{hint}")


def _too_deep() -> _Refused:
    return _Refused(f"lists and dicts nest more than {MAX_DEPTH} levels deep")


def _check_nesting(value: list[Any] | dict[str, Any], depth: int) -> None:
    """Check that the read-only ``value``, placed at ``depth``, nests at most
    :data:`MAX_DEPTH` levels (its items are read-only too)."""
    if depth >= MAX_DEPTH:
        raise _too_deep()
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, list | dict):
            try:
                _check_nesting(item, depth + 1)
            except _Refused as refused:
                refused.path.append(key)
                raise


def _freeze_mapping(value: Mapping[Any, Any], depth: int, kind: type[_D]) -> _D:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    out = dict.__new__(kind)
    for key, item in value.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise _Refused(f"a key must be a string, got {type(key).__name__} {short(key)}")
            key = str.__str__(key)
        try:
            if not key.isascii():
                _check_text(key)
            if type(item) is str and item.isascii():
                dict.__setitem__(out, key, item)
            else:
                dict.__setitem__(out, key, _freeze(item, depth + 1))
        except _Refused as refused:
            refused.path.append(key)
            raise
    return out


def _freeze_sequence(value: list[Any] | tuple[Any, ...], depth: int) -> ReadOnlyList:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    items: list[Any] = []
    for index, item in enumerate(value):
        try:
            items.append(_freeze(item, depth + 1))
        except _Refused as refused:
            refused.path.append(index)
            raise
    return ReadOnlyList._of(items)


def _where(where: str, path: list[str | int], name: str) -> str:
    parts = [name]
    for key in reversed(path):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{short(key)}]")
    if len(parts) > _MAX_PATH:  # a path 64 levels deep says no more than its ends
        parts[_MAX_PATH // 2 : -_MAX_PATH // 2] = [f"...({len(parts) - _MAX_PATH} more)..."]
    located = "".join(parts).lstrip(".")
    return f"{where} at {located}" if located else where


def freeze(value: Any, where: str, error: type[Exception], *, name: str = "") -> Any:
    """A read-only deep copy of the JSON value ``value``; ``error`` if it is not JSON.

    The message of ``error`` starts with ``where`` and names the path to the bad value from
    ``value`` (called ``name``, when given).
    """
    try:
        return _freeze(value, 0)
    except _Refused as refused:
        raise error(f"{_where(where, refused.path, name)}: {refused.reason}") from None


def freeze_message(
    message: Mapping[str, Any], where: Callable[[], str], error: type[Exception]
) -> MessageDict:
    """:func:`freeze` for one message (a mapping whose shape was checked); ``where()`` is
    called only to report an error."""
    if isinstance(message, MessageDict):
        return message
    try:
        return _freeze_mapping(message, 0, MessageDict)
    except _Refused as refused:
        raise error(f"{_where(where(), refused.path, '')}: {refused.reason}") from None


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (frozen or plain) JSON value."""
    if type(value) is str:
        return value
    if isinstance(value, dict):
        return {key: item if type(item) is str else thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value
