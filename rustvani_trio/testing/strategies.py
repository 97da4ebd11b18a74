"""Hypothesis strategies for property-testing processors and pipelines.

Import this module explicitly (``from rustvani_trio.testing import strategies``); it needs
`hypothesis <https://hypothesis.readthedocs.io>`_, which is a development dependency only and is
not imported by :mod:`rustvani_trio.testing` itself.

```python
from hypothesis import given
from rustvani_trio.testing.strategies import frame_sequences

@given(frame_sequences(max_size=30))
def test_my_processor_keeps_order(frames): ...
```

Every strategy builds *fresh* frames on each draw (frames are immutable, each with a new
:attr:`~rustvani_trio.frames.Frame.id`), so a drawn list may be queued into a pipeline as it is.
Lifecycle frames (Start, End, Stop, Cancel, Interruption, Error) are never generated: the task
and the test decide when a run starts and ends.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from ..frames import (
    ControlFrame,
    DataFrame,
    Frame,
    FunctionCallEnd,
    FunctionCallInProgress,
    FunctionCallResult,
    FunctionCallStart,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    MetricsFrame,
    ProcessingMetricsData,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    TTFBMetricsData,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

__all__ = [
    "chunk_splits",
    "control_frames",
    "data_frames",
    "frame_sequences",
    "process_lane_frames",
    "system_frames",
    "text_frames",
    "texts",
]


def texts(max_size: int = 16) -> st.SearchStrategy[str]:
    """Short text, any Unicode (surrogates excluded, so it always encodes to UTF-8)."""
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)


def _identifiers() -> st.SearchStrategy[str]:
    return st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)


def text_frames() -> st.SearchStrategy[TextFrame]:
    """:class:`TextFrame`, :class:`LLMText` and :class:`TranscriptionFrame` (final or interim)."""
    return st.one_of(
        st.builds(TextFrame, text=texts()),
        st.builds(LLMText, text=texts()),
        st.builds(
            TranscriptionFrame,
            text=texts(),
            user_id=_identifiers() | st.just(""),
            finalized=st.booleans(),
        ),
    )


def data_frames() -> st.SearchStrategy[DataFrame]:
    """Content frames: the text frames plus reasoning, refusal and function-call data frames.

    LLM contexts are not generated (they carry mutable state owned by the aggregators).
    """
    calls = st.builds(
        FunctionCallInProgress,
        tool_call_id=_identifiers(),
        function_name=_identifiers(),
        arguments=st.just("{}") | texts(),
    )
    results = st.builds(
        FunctionCallResult,
        tool_call_id=_identifiers(),
        function_name=_identifiers(),
        result=texts(),
    )
    others: st.SearchStrategy[DataFrame] = st.one_of(
        st.builds(LLMReasoningText, text=texts()),
        st.builds(LLMRefusalText, text=texts()),
        calls,
        results,
    )
    # Text frames are the common case: weight them up.
    return st.one_of(text_frames(), text_frames(), others)


def control_frames() -> st.SearchStrategy[ControlFrame]:
    """Non-lifecycle control frames: response and tool-round boundaries.

    EndFrame, StopFrame and HeartbeatFrame are left out: they belong to the task.
    """
    rounds = st.integers(min_value=1, max_value=5)
    return st.one_of(
        st.builds(LLMFullResponseStart),
        st.builds(LLMFullResponseEnd),
        st.builds(FunctionCallStart, calls=st.just(()), round=rounds),
        st.builds(FunctionCallEnd, round=rounds),
    )


def _metrics_data() -> st.SearchStrategy[MetricsData]:
    values = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)
    counts = st.integers(min_value=0, max_value=100_000)
    usage = st.builds(
        LLMTokenUsage, prompt_tokens=counts, completion_tokens=counts, total_tokens=counts
    )
    return st.one_of(
        st.builds(TTFBMetricsData, processor=_identifiers(), value=values),
        st.builds(ProcessingMetricsData, processor=_identifiers(), value=values),
        st.builds(
            LLMUsageMetricsData,
            processor=_identifiers(),
            value=usage,
            model=st.none() | _identifiers(),
            interrupted=st.booleans(),
        ),
    )


def system_frames() -> st.SearchStrategy[SystemFrame]:
    """Non-lifecycle system frames: user speaking signals and metrics.

    These travel in the system lane and may overtake queued control and data frames.
    """
    return st.one_of(
        st.builds(UserStartedSpeakingFrame),
        st.builds(UserStoppedSpeakingFrame),
        st.builds(MetricsFrame, data=st.tuples(_metrics_data()) | st.tuples()),
    )


def process_lane_frames() -> st.SearchStrategy[Frame]:
    """Frames of the process lane (ordered with each other): data and non-lifecycle control."""
    return st.one_of(data_frames(), data_frames(), data_frames(), control_frames())


def frame_sequences(
    min_size: int = 0, max_size: int = 20, *, include_system: bool = True
) -> st.SearchStrategy[list[Frame]]:
    """Lists of non-lifecycle frames, as a test would queue them before an EndFrame.

    Args:
        min_size: the fewest frames in a list.
        max_size: the most frames in a list.
        include_system: also draw system frames (see :func:`system_frames`), which a pipeline
            does not keep in order with the others.
    """
    if min_size < 0 or max_size < min_size:
        raise ValueError(f"need 0 <= min_size <= max_size, got {min_size} and {max_size}")
    element: st.SearchStrategy[Frame] = process_lane_frames()
    if include_system:
        element = st.one_of(element, element, element, system_frames())
    return st.lists(element, min_size=min_size, max_size=max_size)


def chunk_splits(
    data: bytes, *, allow_empty: bool = False, max_chunks: int | None = None
) -> st.SearchStrategy[list[bytes]]:
    """Lists of byte chunks that join back to ``data``, split at arbitrary points.

    Use it to feed a streaming decoder (SSE, JSON lines) the way a network would: one byte at
    a time, all at once, or cut inside a multi-byte character or a line ending. It shrinks
    towards fewer cuts (``[data]``).

    Args:
        data: the bytes to split; ``b"".join(chunks) == data`` always holds.
        allow_empty: also produce empty chunks (a read that returned nothing).
        max_chunks: the most chunks in a split (``None``: up to one per byte).

    An empty ``data`` gives ``[]`` (or lists of empty chunks when ``allow_empty``).
    """
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    n = len(data)
    cuts: st.SearchStrategy[list[int]]
    if allow_empty:
        limit = 2 * max(n, 1) if max_chunks is None else max_chunks - 1
        cuts = st.lists(st.integers(min_value=0, max_value=n), max_size=limit)
    elif n <= 1:
        return st.just([data] if data else [])
    else:
        limit = n - 1 if max_chunks is None else min(max_chunks - 1, n - 1)
        cuts = st.lists(st.integers(min_value=1, max_value=n - 1), unique=True, max_size=limit)

    def split(points: list[int]) -> list[bytes]:
        bounds = [0, *sorted(points), n]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    return cuts.map(split)
