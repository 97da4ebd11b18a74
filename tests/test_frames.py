"""The frame contract (issue 2) and the public hypothesis strategies.

Every frame class that ``rustvani_trio.frames`` exports is checked, not a hand-picked few: the
parametrization is built from ``frames.__all__``, so a frame class added later is covered (and
must be given a category below, or :func:`test_every_concrete_frame_has_a_category` fails).

Clocks: the tests that look at :attr:`Frame.created` use pytest-trio's ``autojump_clock``, so
``trio.current_time()`` only moves when the test sleeps and the comparison can be exact. The
property test runs each example in its own ``trio.run`` under a ``MockClock``.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rustvani_trio import frames as frames_module
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    CancelFrame,
    ControlFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    HeartbeatFrame,
    InterruptionFrame,
    StartFrame,
    StopFrame,
    SystemFrame,
    TextFrame,
    UninterruptibleFrame,
)
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.testing import run_test
from rustvani_trio.testing.strategies import (
    chunk_splits,
    control_frames,
    data_frames,
    frame_sequences,
    system_frames,
    text_frames,
)

# --------------------------------------------------------------------------- the classes

EXPORTED_FRAME_CLASSES: list[type[Frame]] = [
    obj
    for name in frames_module.__all__
    if isinstance(obj := getattr(frames_module, name), type) and issubclass(obj, Frame)
]
CATEGORY_BASES = (Frame, SystemFrame, ControlFrame, DataFrame)
CONCRETE = [cls for cls in EXPORTED_FRAME_CLASSES if cls not in CATEGORY_BASES]

# The category of every frame, as issue 2 says (system: Start, Cancel, Error, Interruption,
# speaking signals; control: End, LLMFullResponseStart/End, FunctionCallStart/End; data: the
# rest), plus the task requests, metrics, Stop and Heartbeat as the runtime implements them.
CATEGORY: dict[str, type[Frame]] = {
    "StartFrame": SystemFrame,
    "CancelFrame": SystemFrame,
    "ErrorFrame": SystemFrame,
    "InterruptionFrame": SystemFrame,
    "UserStartedSpeakingFrame": SystemFrame,
    "UserStoppedSpeakingFrame": SystemFrame,
    "EndTaskFrame": SystemFrame,
    "CancelTaskFrame": SystemFrame,
    "InterruptionTaskFrame": SystemFrame,
    "MetricsFrame": SystemFrame,
    "BotStartedSpeakingFrame": SystemFrame,
    "BotStoppedSpeakingFrame": SystemFrame,
    "VADUserStartedSpeakingFrame": SystemFrame,
    "VADUserStoppedSpeakingFrame": SystemFrame,
    "InputAudioRawFrame": SystemFrame,
    "TTSStartedFrame": ControlFrame,
    "TTSStoppedFrame": ControlFrame,
    "TTSTextFrame": DataFrame,
    "OutputAudioRawFrame": DataFrame,
    "EndFrame": ControlFrame,
    "StopFrame": ControlFrame,
    "HeartbeatFrame": ControlFrame,
    "LLMFullResponseStart": ControlFrame,
    "LLMFullResponseEnd": ControlFrame,
    "FunctionCallStart": ControlFrame,
    "FunctionCallEnd": ControlFrame,
    "TextFrame": DataFrame,
    "LLMText": DataFrame,
    "LLMReasoningText": DataFrame,
    "LLMRefusalText": DataFrame,
    "TranscriptionFrame": DataFrame,
    "LLMContextFrame": DataFrame,
    "LLMMessagesAppendFrame": DataFrame,
    "FunctionCallInProgress": DataFrame,
    "FunctionCallResult": DataFrame,
    "FunctionCallRawResult": DataFrame,
}

# A value for every mandatory field of an exported frame (by field name).
SAMPLE_VALUES: dict[str, Any] = {
    "error": "boom",
    "timestamp": 1.5,
    "text": "hello",
    "context": LLMContext(),
    "messages": ({"role": "user", "content": "hi"},),
    "tool_call_id": "call_1",
    "function_name": "get_weather",
    "arguments": "{}",
    "result": "sunny",
    "raw": {"temp": 21},
    "data": (),
    "audio": b"\x00\x01" * 160,
}

# Frames the task owns: the strategies never generate them.
LIFECYCLE = (StartFrame, EndFrame, StopFrame, CancelFrame, InterruptionFrame, ErrorFrame)


def init_fields(cls: type[Frame]) -> list[attrs.Attribute[Any]]:
    return [f for f in attrs.fields(cls) if f.init]


def required_kwargs(cls: type[Frame]) -> dict[str, Any]:
    """The mandatory fields of ``cls`` filled with sample values."""
    kwargs: dict[str, Any] = {}
    for field in init_fields(cls):
        if field.default is attrs.NOTHING:
            assert field.name in SAMPLE_VALUES, (
                f"add a sample value for {cls.__name__}.{field.name} to SAMPLE_VALUES"
            )
            kwargs[field.name] = SAMPLE_VALUES[field.name]
    return kwargs


def make(cls: type[Frame]) -> Frame:
    return cls(**required_kwargs(cls))


def by_name(classes: list[type[Frame]]) -> Any:
    return pytest.mark.parametrize("cls", classes, ids=[c.__name__ for c in classes])


# =========================================================================== the contract


def test_every_exported_frame_class_is_covered() -> None:
    # The issue's classes are all there (a sanity check of the parametrization itself).
    names = {cls.__name__ for cls in EXPORTED_FRAME_CLASSES}
    for required in (
        "StartFrame",
        "EndFrame",
        "CancelFrame",
        "ErrorFrame",
        "LLMText",
        "FunctionCallRawResult",
        "TranscriptionFrame",
        "MetricsFrame",
    ):
        assert required in names
    assert set(CATEGORY_BASES) <= set(EXPORTED_FRAME_CLASSES)


def test_every_concrete_frame_has_a_category() -> None:
    assert {cls.__name__ for cls in CONCRETE} == set(CATEGORY)


@by_name(CONCRETE)
def test_category_is_exactly_the_one_the_issue_says(cls: type[Frame]) -> None:
    expected = CATEGORY[cls.__name__]
    for base in (SystemFrame, ControlFrame, DataFrame):
        assert issubclass(cls, base) is (base is expected), (cls.__name__, base.__name__)


def test_end_and_stop_are_the_uninterruptible_frames() -> None:
    uninterruptible = {
        cls for cls in EXPORTED_FRAME_CLASSES if issubclass(cls, UninterruptibleFrame)
    }
    assert uninterruptible == {EndFrame, StopFrame}
    assert isinstance(EndFrame(), UninterruptibleFrame)
    assert isinstance(StopFrame(), UninterruptibleFrame)


@by_name(EXPORTED_FRAME_CLASSES)
def test_name_is_the_class_name(cls: type[Frame]) -> None:
    frame = make(cls)
    assert frame.name == type(frame).__name__ == cls.__name__


@by_name(EXPORTED_FRAME_CLASSES)
def test_frozen_every_field(cls: type[Frame]) -> None:
    frame = make(cls)
    for field in attrs.fields(cls):  # id and created included
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(frame, field.name, getattr(frame, field.name))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        frame.not_a_field = 1  # type: ignore[attr-defined]


@by_name(EXPORTED_FRAME_CLASSES)
def test_slotted(cls: type[Frame]) -> None:
    frame = make(cls)
    assert not hasattr(frame, "__dict__")
    # every class of the MRO declares slots (one without would bring a __dict__ back)
    for klass in cls.__mro__[:-1]:
        assert "__slots__" in vars(klass), klass


@by_name(EXPORTED_FRAME_CLASSES)
def test_keyword_only(cls: type[Frame]) -> None:
    kwargs = required_kwargs(cls)
    positional = [kwargs.get(f.name, SAMPLE_VALUES.get(f.name)) for f in init_fields(cls)]
    with pytest.raises(TypeError):
        cls(*(positional or ["positional"]))
    if init_fields(cls):
        # attrs itself says so: every field that can be set is keyword-only
        assert all(f.kw_only for f in init_fields(cls))
    # id and created are the framework's: they cannot be passed in
    for private in ("id", "created"):
        with pytest.raises(TypeError):
            cls(**kwargs, **{private: 1})


@by_name(EXPORTED_FRAME_CLASSES)
def test_ids_strictly_increase_in_creation_order(cls: type[Frame]) -> None:
    a, b, c = make(cls), make(cls), make(cls)
    assert isinstance(a.id, int)
    assert a.id < b.id < c.id


def test_ids_increase_across_every_class() -> None:
    made = [make(cls) for cls in EXPORTED_FRAME_CLASSES * 3]
    ids = [f.id for f in made]
    assert all(x < y for x, y in itertools.pairwise(ids))


@by_name(EXPORTED_FRAME_CLASSES)
def test_created_is_none_outside_a_trio_run(cls: type[Frame]) -> None:
    assert make(cls).created is None


@by_name(EXPORTED_FRAME_CLASSES)
async def test_created_is_the_trio_clock_inside_a_run(
    cls: type[Frame], autojump_clock: trio.testing.MockClock
) -> None:
    first = make(cls)
    assert first.created == trio.current_time()
    await trio.sleep(12.25)  # virtual: the clock moves by exactly this much
    second = make(cls)
    assert second.created == trio.current_time()
    assert second.created - first.created == pytest.approx(12.25)


def test_equal_fields_compare_equal_whatever_the_id() -> None:
    # id and created are excluded from equality: two frames with the same content are equal.
    a, b = TextFrame(text="x"), TextFrame(text="x")
    assert a.id != b.id and a == b
    assert HeartbeatFrame(timestamp=1.0) != HeartbeatFrame(timestamp=2.0)


# =========================================================================== the strategies

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=64), st.data())
def test_chunk_splits_always_join_back(data: bytes, pick: st.DataObject) -> None:
    chunks = pick.draw(chunk_splits(data))
    assert b"".join(chunks) == data
    assert all(chunks), "no empty chunk unless allow_empty"
    with_empty = pick.draw(chunk_splits(data, allow_empty=True))
    assert b"".join(with_empty) == data
    limit = pick.draw(st.integers(min_value=1, max_value=5))
    bounded = pick.draw(chunk_splits(data, max_chunks=limit))
    assert b"".join(bounded) == data
    assert len(bounded) <= limit


def test_chunk_splits_rejects_a_bad_max_chunks() -> None:
    with pytest.raises(ValueError, match="max_chunks"):
        chunk_splits(b"abc", max_chunks=0)


@FAST
@given(text_frames())
def test_text_frames_are_text_data_frames(frame: Frame) -> None:
    assert isinstance(frame, TextFrame) and isinstance(frame, DataFrame)
    assert isinstance(frame.text, str)


@FAST
@given(data_frames())
def test_data_frames_are_data_frames(frame: Frame) -> None:
    assert isinstance(frame, DataFrame)
    assert not isinstance(frame, SystemFrame | ControlFrame)


@FAST
@given(control_frames())
def test_control_frames_are_non_lifecycle_control_frames(frame: Frame) -> None:
    assert isinstance(frame, ControlFrame)
    assert not isinstance(frame, EndFrame | StopFrame | HeartbeatFrame | UninterruptibleFrame)


@FAST
@given(system_frames())
def test_system_frames_are_non_lifecycle_system_frames(frame: Frame) -> None:
    assert isinstance(frame, SystemFrame)
    assert not isinstance(frame, LIFECYCLE)


@FAST
@given(st.data())
def test_frame_sequences_hold_fresh_non_lifecycle_frames(pick: st.DataObject) -> None:
    low = pick.draw(st.integers(min_value=0, max_value=5))
    high = pick.draw(st.integers(min_value=low, max_value=low + 10))
    frames = pick.draw(frame_sequences(min_size=low, max_size=high))
    assert low <= len(frames) <= high
    assert all(isinstance(f, SystemFrame | ControlFrame | DataFrame) for f in frames)
    assert not any(isinstance(f, LIFECYCLE) for f in frames)
    assert len({f.id for f in frames}) == len(frames)  # a new frame per element
    without = pick.draw(frame_sequences(max_size=high, include_system=False))
    assert not any(isinstance(f, SystemFrame) for f in without)


def test_frame_sequences_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        frame_sequences(min_size=3, max_size=2)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame_sequences(max_size=25), st.integers(min_value=1, max_value=4))
def test_pass_through_keeps_the_order_of_non_system_frames(frames: list[Frame], hops: int) -> None:
    """A user's property test, written with the public API only."""

    async def check() -> None:
        procs = [FrameProcessor(max_buffer=2) for _ in range(hops)]
        result = await run_test(procs, frames)
        out = result.downstream
        assert isinstance(out[0], StartFrame) and isinstance(out[-1], EndFrame)
        ordered_in = [f.id for f in frames if not isinstance(f, SystemFrame)]
        ordered_out = [f.id for f in out[1:-1] if not isinstance(f, SystemFrame)]
        assert ordered_out == ordered_in
        # system frames may overtake, but each arrives exactly once
        system_in = sorted(f.id for f in frames if isinstance(f, SystemFrame))
        system_out = sorted(f.id for f in out[1:-1] if isinstance(f, SystemFrame))
        assert system_out == system_in
        assert result.upstream == []
        assert result.finish_reason == "end"

    trio.run(check, clock=trio.testing.MockClock(autojump_threshold=0))


# =========================================================================== audio frames


@pytest.mark.parametrize(
    "cls", [frames_module.InputAudioRawFrame, frames_module.OutputAudioRawFrame]
)
def test_audio_frames_check_their_pcm_where_they_are_built(cls: Any) -> None:
    frame = cls(audio=b"\x00\x00" * 320, sample_rate=16000, num_channels=2)
    assert frame.num_frames == 160 and frame.duration == pytest.approx(0.01)
    assert "bytes>" in repr(frame)  # the audio itself is not dumped into logs
    with pytest.raises(TypeError, match="must be bytes"):
        cls(audio=[0, 0])
    with pytest.raises(ValueError, match="whole number of 16-bit samples"):
        cls(audio=b"\x00\x00\x00", num_channels=1)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        cls(audio=b"", sample_rate=0)
    with pytest.raises(ValueError, match="num_channels must be a positive int"):
        cls(audio=b"", num_channels=True)
