"""The frame root: Frame, FrameDirection, the system / control / data categories, the
uninterruptible marker, and TextFrame (the base of every text frame). Public through
:mod:`rustvani_trio.frames`."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

__all__ = [
    "ControlFrame",
    "DataFrame",
    "Frame",
    "FrameDirection",
    "SystemFrame",
    "TextFrame",
    "UninterruptibleFrame",
    "as_tuple",
    "is_bool",
    "is_instance",
    "is_int",
    "is_number",
    "is_optional_str",
    "is_str",
    "is_tuple_of",
    "text_maker",
]

# --------------------------------------------------------------------------- field checks
# Frames are on the hot path (one per token), so each check is one type test in the common
# case; the message, built only on failure, names the frame, the field and what was expected.

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _refuse(inst: Any, attr: attrs.Attribute[Any], value: Any, wanted: str) -> None:
    raise TypeError(f"{type(inst).__name__}.{attr.name} must be {wanted}, got {value!r:.60}")


def is_str(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A ``str``."""
    if type(value) is not str and not isinstance(value, str):
        _refuse(inst, attr, value, "a str")


def is_optional_str(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A ``str`` or ``None``."""
    if value is not None and not isinstance(value, str):
        _refuse(inst, attr, value, "a str or None")


def is_bool(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """``True`` or ``False``."""
    if value is not True and value is not False:
        _refuse(inst, attr, value, "a bool")


def is_int(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """An ``int`` (not a ``bool``)."""
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        _refuse(inst, attr, value, "an int")


def is_number(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """An ``int`` or ``float`` (not a ``bool``)."""
    if type(value) is not float and (not isinstance(value, int | float) or isinstance(value, bool)):
        _refuse(inst, attr, value, "a number")


def is_instance(cls: type | tuple[type, ...], wanted: str, *, optional: bool = False) -> Validator:
    """An instance of ``cls`` (or ``None`` when ``optional``), described as ``wanted``."""

    def check(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, cls) and not (optional and value is None):
            _refuse(inst, attr, value, wanted)

    return check


def is_tuple_of(cls: type | tuple[type, ...], wanted: str) -> Validator:
    """A tuple whose items are instances of ``cls``, described as ``wanted``."""

    def check(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple) or not all(isinstance(item, cls) for item in value):
            _refuse(inst, attr, value, f"a tuple of {wanted}")

    return check


def as_tuple(value: Any) -> Any:
    """A list given for a tuple field becomes a tuple (a frame holds no mutable sequence)."""
    return tuple(value) if isinstance(value, list) else value


class FrameDirection(enum.Enum):
    """Which way a frame travels: towards the sink (downstream) or the source (upstream)."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


_ids = itertools.count(1)
_next_id = _ids.__next__  # a C call: frames are created per token


def _now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # no trio run active (a frame built at import time or in sync code)
        return None


@attrs.frozen(kw_only=True)
class Frame:
    """The base of every frame.

    Attributes:
        id: process-unique, strictly increasing in creation order.
        created: ``trio.current_time()`` at creation, or ``None`` outside a trio run.
    """

    id: int = attrs.field(factory=_next_id, init=False, eq=False)
    created: float | None = attrs.field(factory=_now, init=False, eq=False, repr=False)

    @property
    def name(self) -> str:
        """The frame's class name, e.g. ``"LLMText"``."""
        return type(self).__name__


class UninterruptibleFrame:
    """Marker mixin: the frame is kept when an interruption drains a process lane."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class SystemFrame(Frame):
    """Handled at once in the system lane, overtaking queued control and data frames."""


@attrs.frozen(kw_only=True)
class ControlFrame(Frame):
    """In-band control, ordered with the data in the process lane."""


@attrs.frozen(kw_only=True)
class DataFrame(Frame):
    """Content, ordered in the process lane."""


@attrs.frozen(kw_only=True)
class TextData(DataFrame):
    """A data frame carrying one piece of text (not exported: :class:`TextFrame` is the text
    to speak, show or collect; the model's reasoning and refusals derive from this instead)."""

    text: str = attrs.field(validator=is_str)


@attrs.frozen(kw_only=True)
class TextFrame(TextData):
    """A piece of text."""


# --------------------------------------------------------------------------- fast construction

_T = TypeVar("_T", bound=TextData)


def _slot(cls: type, name: str) -> Any:
    """The slot descriptor of field ``name`` on ``cls`` (defined on one of its bases)."""
    for klass in cls.__mro__:
        descriptor = vars(klass).get(name)
        if descriptor is not None:
            return descriptor
    raise AttributeError(name)  # pragma: no cover


def text_maker(cls: type[_T]) -> Callable[[str], _T]:
    """A constructor for ``cls``, a text frame class without fields of its own, equal to
    ``cls(text=text)`` and about 40% cheaper: the LLM builds one frame per token, and attrs'
    generic ``__init__`` of a frozen class binds a setter and sets each field through it.

    The frame gets its ``id`` and ``created`` as any frame does, and a ``text`` that is not a
    ``str`` goes through ``cls(text=...)``, which refuses it. A class that differs from that
    shape (more fields, another check, a post-init hook) gets ``cls(text=...)`` always.
    """
    fields = attrs.fields(cls)
    text = attrs.fields_dict(cls).get("text")
    if (
        tuple(f.name for f in fields) != ("id", "created", "text")
        or text is None
        or text.validator is not is_str
        or text.converter is not None
        or hasattr(cls, "__attrs_pre_init__")
        or hasattr(cls, "__attrs_post_init__")
        or "__slots__" not in vars(cls)
    ):
        return lambda value: cls(text=value)
    new = object.__new__
    set_id = _slot(cls, "id").__set__
    set_created = _slot(cls, "created").__set__
    set_text = _slot(cls, "text").__set__
    next_id = _next_id
    current_time = trio.current_time

    def make(value: str) -> _T:
        if type(value) is not str:
            return cls(text=value)
        frame = new(cls)
        set_id(frame, next_id())
        try:  # (what _now does, without its call)
            set_created(frame, current_time())
        except RuntimeError:
            set_created(frame, None)
        set_text(frame, value)
        return frame

    return make
