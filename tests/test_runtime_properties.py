"""Property tests of the runtime: random pipelines, random frame sequences.

Each hypothesis example runs its own ``trio.run`` under a ``MockClock`` (autojump), so virtual
sleeps cost no real time. The pipelines mix processors with lanes and inline processors (which
run in their upstream neighbour's task): the properties hold for both kinds. pytest-trio makes
trio's scheduler deterministic under hypothesis and registers its random generator, so every
example also explores a different (reproducible) order of the tasks within each scheduling
batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rustvani_trio import (
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FrameProcessor,
    InterruptionFrame,
    Pipeline,
    PipelineParams,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    UninterruptibleFrame,
)
from rustvani_trio.processor import InlineOutput, InlineProcessor
from rustvani_trio.testing import run_test
from rustvani_trio.testing.strategies import frame_sequences

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_virtual(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``fn`` in a fresh trio run with a virtual clock that jumps whenever all tasks wait."""
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run, from the root task down."""
    found: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


# --------------------------------------------------------------------------- the model


@attrs.frozen
class Spec:
    """What one random processor does to the downstream data frames it sees."""

    kind: str  # "pass" | "transform" | "split" | "drop" | "upmark"
    arg: int
    max_buffer: int
    delay: float
    inline: bool = False  # an InlineModel (no delay, no upmark: it cannot wait or push up)
    hook: bool = True  # with an interruption hook (else an interruption may pass at once)


@attrs.frozen(kw_only=True)
class Trigger(DataFrame):
    """Makes an :class:`Injector` interrupt; every model processor passes it on unchanged."""


def describe(frame: Frame) -> str:
    text = getattr(frame, "text", None)
    return f"{frame.name}:{text}" if isinstance(text, str) else frame.name


def apply(spec: Spec, name: str, frame: Frame) -> tuple[list[Frame], list[Frame]]:
    """The processor's pure function on one downstream process-lane frame:
    (frames pushed downstream, frames pushed upstream)."""
    if not isinstance(frame, DataFrame) or isinstance(frame, Trigger):
        return [frame], []
    is_text = isinstance(frame, TextFrame)
    if spec.kind == "transform" and is_text:
        assert isinstance(frame, TextFrame)
        return [attrs.evolve(frame, text=f"{frame.text}<{name}>")], []
    if spec.kind == "split" and is_text:
        assert isinstance(frame, TextFrame)
        return [
            attrs.evolve(frame, text=f"{frame.text}<{name}a>"),
            attrs.evolve(frame, text=f"{frame.text}<{name}b>"),
        ], []
    if spec.kind == "drop" and len(describe(frame)) % spec.arg == 0:
        return [], []
    if spec.kind == "upmark":
        return [frame], [TextFrame(text=f"up|{name}|{describe(frame)}")]
    return [frame], []


class HooklessModel(FrameProcessor):
    """Runs :func:`apply` on downstream process-lane frames; forwards everything else. It has
    no interruption hook, so an interruption may pass it in the pusher's task."""

    counts_interruptions = False

    def __init__(self, spec: Spec, index: int) -> None:
        super().__init__(name=f"p{index}", max_buffer=spec.max_buffer)
        self.spec = spec
        self.dropped: list[Frame] = []
        self.seen_system: list[Frame] = []
        self.interruptions = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, SystemFrame):
            self.seen_system.append(frame)
            if isinstance(frame, InterruptionFrame):
                return
            await self.push_frame(frame, direction)
            return
        if direction is UP:
            await self.push_frame(frame, direction)
            return
        if self.spec.delay:
            await trio.sleep(self.spec.delay)
        down, up = apply(self.spec, self.name, frame)
        if not down and not up:
            self.dropped.append(frame)
        for f in up:
            await self.push_frame(f, UP)
        for f in down:
            await self.push_frame(f, DOWN)


class ModelProcessor(HooklessModel):
    """:class:`HooklessModel` with an interruption hook (that counts interruptions)."""

    counts_interruptions = True

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.interruptions += 1


class InlineModel(InlineProcessor):
    """:class:`ModelProcessor`'s twin without lanes: :func:`apply` on downstream process-lane
    frames, run in the pusher's task."""

    counts_interruptions = True

    def __init__(self, spec: Spec, index: int) -> None:
        super().__init__(name=f"p{index}")
        self.spec = spec
        self.dropped: list[Frame] = []
        self.seen_system: list[Frame] = []
        self.interruptions = 0
        self.starts = 0

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if isinstance(frame, SystemFrame):
            self.seen_system.append(frame)
            return frame
        if direction is UP:
            return frame
        down, up = apply(self.spec, self.name, frame)
        assert not up
        if not down:
            self.dropped.append(frame)
        return down

    def started(self, frame: StartFrame) -> None:
        self.starts += 1

    def interrupted(self, frame: InterruptionFrame) -> None:
        self.interruptions += 1

    def cancelled(self, frame: CancelFrame) -> None:
        raise AssertionError("these runs are never cancelled")


def model(spec: Spec, index: int) -> HooklessModel | InlineModel:
    if spec.inline:
        return InlineModel(spec, index)
    return ModelProcessor(spec, index) if spec.hook else HooklessModel(spec, index)


lane_specs = st.builds(
    Spec,
    kind=st.sampled_from(["pass", "transform", "split", "drop", "upmark"]),
    arg=st.integers(min_value=2, max_value=4),
    max_buffer=st.sampled_from([1, 2, 3, 64]),
    delay=st.sampled_from([0.0, 0.0, 0.001, 0.01]),
    hook=st.booleans(),
)
inline_specs = st.builds(
    Spec,
    kind=st.sampled_from(["pass", "transform", "split", "drop"]),
    arg=st.integers(min_value=2, max_value=4),
    max_buffer=st.just(64),
    delay=st.just(0.0),
    inline=st.just(True),
)
specs = st.one_of(lane_specs, inline_specs)


@st.composite
def nestings(draw: st.DrawFn, n: int) -> list[int]:
    """Where to cut the processor list into nested sub-pipelines (sorted cut points)."""
    return sorted(draw(st.sets(st.integers(min_value=1, max_value=max(n - 1, 1)), max_size=3)))


def build(processors: list[FrameProcessor], cuts: list[int]) -> FrameProcessor:
    """Group the processors into nested Pipelines at ``cuts``; the order is unchanged."""
    bounds = [0, *[c for c in cuts if 0 < c < len(processors)], len(processors)]
    groups: list[FrameProcessor] = []
    for a, b in itertools.pairwise(bounds):
        part = processors[a:b]
        if not part:
            continue
        groups.append(Pipeline(part) if len(part) > 1 else part[0])
    # One more level: the first group inside a pipeline of its own.
    if len(groups) > 1:
        groups[0] = Pipeline([groups[0]])
    return Pipeline(groups)


def expected(
    specs_: list[Spec], names: list[str], frames: list[Frame]
) -> tuple[list[Frame], dict[str, list[Frame]], dict[str, list[Frame]]]:
    """Compose the processors' functions: (sink process-lane output, upstream per origin,
    drops per processor)."""
    current = [f for f in frames if not isinstance(f, SystemFrame)]
    upstream: dict[str, list[Frame]] = {}
    drops: dict[str, list[Frame]] = {}
    for spec, name in zip(specs_, names, strict=True):
        nxt: list[Frame] = []
        for frame in current:
            down, up = apply(spec, name, frame)
            if not down and not up:
                drops.setdefault(name, []).append(frame)
            upstream.setdefault(name, []).extend(up)
            nxt.extend(down)
        current = nxt
    return current, upstream, drops


# --------------------------------------------------------------------------- the properties


@PROPERTY_SETTINGS
@given(
    pipeline_specs=st.lists(specs, min_size=1, max_size=10),
    frames=frame_sequences(max_size=25),
    data=st.data(),
)
def test_random_pipelines_keep_order_lose_nothing_and_end_cleanly(
    pipeline_specs: list[Spec], frames: list[Frame], data: st.DataObject
) -> None:
    cuts = data.draw(nestings(len(pipeline_specs)))

    async def main() -> None:
        procs = [model(spec, i) for i, spec in enumerate(pipeline_specs)]
        names = [p.name for p in procs]
        want_down, want_up, want_drops = expected(pipeline_specs, names, frames)
        before = all_tasks()

        result = await run_test(build(list(procs), cuts), frames)

        # The run ended by its EndFrame, and every task it started is gone.
        assert result.finish_reason == "end"
        assert all_tasks() == before
        # Lifecycle: StartFrame first, EndFrame last: everything queued before the EndFrame
        # left the pipeline before it.
        assert isinstance(result.downstream[0], StartFrame)
        assert isinstance(result.downstream[-1], EndFrame)
        assert len(result.downstream_of(EndFrame)) == 1
        middle = result.downstream[1:-1]
        # Control + data frames: exactly the composition of the processors' functions, in order.
        assert [f for f in middle if not isinstance(f, SystemFrame)] == want_down
        # System frames: all of them, in their own order (they may overtake data).
        want_system = [f for f in frames if isinstance(f, SystemFrame)]
        assert [f for f in middle if isinstance(f, SystemFrame)] == want_system
        # Every processor saw every system frame once (nothing duplicated on the way).
        for p in procs:
            assert [f for f in p.seen_system if not isinstance(f, StartFrame)] == want_system
            assert not isinstance(p, InlineModel) or p.starts == 1
        # Drops are exactly the model's.
        for p in procs:
            assert p.dropped == want_drops.get(p.name, [])
        # Upstream: no errors, and each origin's markers all arrive, in order.
        assert result.upstream_of(ErrorFrame) == []
        got_up: dict[str, list[Frame]] = {}
        for f in result.upstream:
            assert isinstance(f, TextFrame), f
            origin = f.text.split("|")[1]
            got_up.setdefault(origin, []).append(f)
        assert got_up == {k: v for k, v in want_up.items() if v}

    run_virtual(main)


@PROPERTY_SETTINGS
@given(
    n_procs=st.integers(min_value=1, max_value=6),
    n_frames=st.integers(min_value=1, max_value=60),
    max_buffer=st.integers(min_value=1, max_value=3),
)
def test_bidirectional_traffic_with_tiny_buffers_never_deadlocks(
    n_procs: int, n_frames: int, max_buffer: int
) -> None:
    """Every processor answers every downstream frame with an upstream one, lanes of 1-3."""

    class Echo(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if direction is DOWN and isinstance(frame, TextFrame):
                await self.push_frame(TextFrame(text=f"echo|{self.name}|{frame.text}"), UP)
            await self.push_frame(frame, direction)

    async def main() -> None:
        procs = [Echo(name=f"e{i}", max_buffer=max_buffer) for i in range(n_procs)]
        frames = [TextFrame(text=str(i)) for i in range(n_frames)]
        with trio.fail_after(60):
            result = await run_test(list(procs), frames, params=PipelineParams())
        assert [f for f in result.downstream if isinstance(f, TextFrame)] == frames
        echoes = result.upstream_of(TextFrame)
        assert len(echoes) == n_procs * n_frames
        for p in procs:
            mine = [f.text for f in echoes if f.text.startswith(f"echo|{p.name}|")]
            assert mine == [f"echo|{p.name}|{i}" for i in range(n_frames)]

    run_virtual(main)


class Injector(FrameProcessor):
    """On a :class:`Trigger` (which it consumes): pushes an InterruptionFrame downstream, then
    the ``after`` frames, at once."""

    def __init__(self, after: list[Frame]) -> None:
        super().__init__(name="injector")
        self.after = after

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Trigger):
            await self.push_frame(InterruptionFrame())
            for f in self.after:
                await self.push_frame(f)
        else:
            await self.push_frame(frame, direction)


def transcripts(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, TranscriptionFrame)]


def is_subsequence(small: list[Frame], big: list[Frame]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


@PROPERTY_SETTINGS
@given(
    pipeline_specs=st.lists(specs, min_size=1, max_size=8),
    pre=frame_sequences(max_size=15),
    post=frame_sequences(max_size=10),
    after=st.lists(st.builds(TextFrame, text=st.text("xyz", max_size=3)), max_size=4),
    data=st.data(),
)
def test_interruption_injected_anywhere_keeps_what_comes_after_it(
    pipeline_specs: list[Spec],
    pre: list[Frame],
    post: list[Frame],
    after: list[Frame],
    data: st.DataObject,
) -> None:
    """An injector at a random place interrupts while frames are in flight everywhere.

    Downstream of it: whatever came before the interruption may be cut short or drained (what
    arrives is a subsequence of the model's output, with every user transcript), but what comes
    after it (the injector's ``after`` frames, then the frames behind the trigger) arrives
    complete, in order, after the InterruptionFrame. Upstream of it nothing is interrupted.
    """
    k = data.draw(st.integers(min_value=0, max_value=len(pipeline_specs)), label="injector at")
    cuts = data.draw(nestings(len(pipeline_specs) + 1))

    async def main() -> None:
        procs = [model(spec, i) for i, spec in enumerate(pipeline_specs)]
        names = [p.name for p in procs]
        injector = Injector(list(after))
        upper, lower = procs[:k], procs[k:]
        up_specs, low_specs = pipeline_specs[:k], pipeline_specs[k:]
        up_names, low_names = names[:k], names[k:]
        frames = [*pre, Trigger(), *post]

        # The model: the upper part sees everything; the lower part sees pre, then after+post.
        upper_out, want_up_upper, _ = expected(up_specs, up_names, frames)
        trigger_at = next(i for i, f in enumerate(upper_out) if isinstance(f, Trigger))
        lower_pre, _, _ = expected(low_specs, low_names, upper_out[:trigger_at])
        _, want_up_lower_pre, _ = expected(low_specs, low_names, upper_out[:trigger_at])
        lower_post, want_up_lower_post, _ = expected(
            low_specs, low_names, [*after, *upper_out[trigger_at + 1 :]]
        )
        before = all_tasks()

        result = await run_test(build([*upper, injector, *lower], cuts), frames)

        assert result.finish_reason == "end"
        assert all_tasks() == before
        assert isinstance(result.downstream[0], StartFrame)
        assert isinstance(result.downstream[-1], EndFrame)
        [interruption] = [
            i for i, f in enumerate(result.downstream) if isinstance(f, InterruptionFrame)
        ]
        lane = [f for f in result.downstream[1:-1] if not isinstance(f, SystemFrame)]
        # What comes after the interruption arrives complete, in order, after it; before it,
        # what came earlier may be cut short or drained, except user transcripts, which an
        # interruption never drops: those it found queued go on after it, ahead of the rest.
        got_pre = lane[: len(lane) - len(lower_post)]
        assert lane[len(got_pre) :] == lower_post
        assert is_subsequence(got_pre, lower_pre)
        assert transcripts(got_pre) == transcripts(lower_pre)
        behind = [f for f in result.downstream[interruption:-1] if not isinstance(f, SystemFrame)]
        assert (
            transcripts(behind[: len(behind) - len(lower_post)])
            == behind[: len(behind) - len(lower_post)]
        )
        want_system = [f for f in frames if isinstance(f, SystemFrame)]
        assert [
            f
            for f in result.downstream[1:-1]
            if isinstance(f, SystemFrame) and not isinstance(f, InterruptionFrame)
        ] == want_system
        # Hooks: exactly the processors below the injector were interrupted, once.
        for p in upper:
            assert p.interruptions == 0
        for p in lower:
            assert p.interruptions == (1 if p.counts_interruptions else 0)
        # Upstream: the upper part's markers all arrive; the lower part's: those of the
        # frames before the interruption may be cut, those after all arrive, in order.
        assert result.upstream_of(ErrorFrame) == []
        got_up: dict[str, list[Frame]] = {}
        for f in result.upstream:
            assert isinstance(f, TextFrame), f
            got_up.setdefault(f.text.split("|")[1], []).append(f)
        for name in up_names:
            assert got_up.get(name, []) == want_up_upper.get(name, [])
        for name in low_names:
            got = got_up.get(name, [])
            tail = want_up_lower_post.get(name, [])
            assert got[len(got) - len(tail) :] == tail
            assert is_subsequence(got[: len(got) - len(tail)], want_up_lower_pre.get(name, []))

    run_virtual(main)


# --------------------------------------------------------------------------- interruptions
# mixed with uninterruptible frames


@attrs.frozen(kw_only=True)
class Hold(DataFrame, UninterruptibleFrame):
    """An uninterruptible data frame that each relay takes a while over."""

    n: int


@attrs.frozen(kw_only=True)
class Go(DataFrame):
    """Starts the :class:`Script`."""


INTERRUPT = "interrupt"
Step = Frame | str | float


class Script(FrameProcessor):
    """On :class:`Go`, pushes its steps downstream in order: frames, InterruptionFrames
    (``INTERRUPT``) and pauses (a float: seconds)."""

    def __init__(self, steps: list[Step]) -> None:
        super().__init__(name="script")
        self.steps = steps

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, Go):
            await self.push_frame(frame, direction)
            return
        for step in self.steps:
            if step == INTERRUPT:
                await self.push_frame(InterruptionFrame())
            elif isinstance(step, float):
                if step:
                    await trio.sleep(step)
            else:
                assert isinstance(step, Frame)
                await self.push_frame(step)


class Relay(FrameProcessor):
    """Forwards everything; takes ``delay`` over each downstream text frame, ``hold`` over each
    Hold (for which it also sends a marker upstream) and ``pause`` over each interruption."""

    def __init__(self, i: int, delay: float, hold: float, pause: float, max_buffer: int) -> None:
        super().__init__(name=f"r{i}", max_buffer=max_buffer)
        self.delay, self.hold, self.pause = delay, hold, pause

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        await trio.sleep(self.pause)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is DOWN and isinstance(frame, Hold):
            await trio.sleep(self.hold)
            await self.push_frame(TextFrame(text=f"up|{self.name}|{frame.n}"), UP)
        elif direction is DOWN and isinstance(frame, TextFrame):
            await trio.sleep(self.delay)
        await self.push_frame(frame, direction)


relays = st.tuples(
    st.sampled_from([0.0, 0.001, 0.005]),
    st.sampled_from([0.0, 0.003]),
    st.sampled_from([0.0, 0.0, 0.002, 0.01]),
    st.sampled_from([1, 2, 64]),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Step]:
    """Bursts of frames, each followed by an interruption, often after a pause (so that the
    interruption finds the relays in the middle of a frame, or of a Hold)."""
    holds = itertools.count()
    kinds = st.sampled_from(["text", "text", "transcript", "hold", "hold"])
    steps: list[Step] = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        for kind in draw(st.lists(kinds, max_size=6)):
            if kind == "text":
                steps.append(TextFrame(text=draw(st.text("ab", max_size=2))))
            elif kind == "transcript":
                steps.append(TranscriptionFrame(text="said", user_id="u"))
            else:
                steps.append(Hold(n=next(holds)))
        steps.append(draw(st.sampled_from([0.0, 0.001, 0.002, 0.004])))
        if draw(st.booleans()):
            steps.append(INTERRUPT)
    for kind in draw(st.lists(kinds, max_size=4)):
        steps.append(TextFrame(text="tail") if kind == "text" else Hold(n=next(holds)))
    return steps


def keeps(frame: Frame) -> bool:
    return isinstance(frame, Hold | TranscriptionFrame)


@PROPERTY_SETTINGS
@given(relay_specs=st.lists(relays, min_size=1, max_size=5), steps=scripts())
def test_interruptions_and_uninterruptible_frames_keep_order_and_count_every_drop(
    relay_specs: list[tuple[float, float, float, int]], steps: list[Step]
) -> None:
    """Interruptions at random points among text, transcripts and uninterruptible frames:

    * per direction, frames arrive in the order they were pushed (FIFO);
    * nothing is lost but what an interruption drops, and every such drop is counted in the
      dropping processor's lane statistics;
    * transcripts and uninterruptible frames are never dropped;
    * nothing pushed after an interruption arrives before it, and nothing pushed before it
      arrives after it, except the frames it keeps.
    """

    async def main() -> None:
        procs = [Relay(i, *spec) for i, spec in enumerate(relay_specs)]
        result = await run_test([Script(steps), *procs], [Go()])
        assert result.finish_reason == "end"
        assert result.task is not None
        sent = [s for s in steps if isinstance(s, Frame)]
        epoch: dict[int, int] = {}  # frame id -> interruptions pushed before it
        seen = 0
        for step in steps:
            if step == INTERRUPT:
                seen += 1
            elif isinstance(step, Frame):
                epoch[step.id] = seen
        # Downstream: FIFO, keepers complete, and each frame on the right side of each
        # interruption.
        down = [f for f in result.downstream[1:-1] if not isinstance(f, SystemFrame)]
        assert is_subsequence(down, sent) and len({f.id for f in down}) == len(down)
        assert [f for f in down if keeps(f)] == [f for f in sent if keeps(f)]
        passed = 0
        for f in result.downstream[1:-1]:
            if isinstance(f, InterruptionFrame):
                passed += 1
            elif not isinstance(f, SystemFrame):
                assert epoch[f.id] <= passed, f"{f} overtook an interruption"
                assert epoch[f.id] == passed or keeps(f), f"{f} survived an interruption"
        assert passed == steps.count(INTERRUPT)
        # Upstream: each relay's markers in order (all of them: Holds are never cut short,
        # but a marker waiting in a lane can be drained like any frame).
        up = result.upstream_of(TextFrame)
        for p in procs:
            mine = [int(f.text.split("|")[2]) for f in up if f.text.split("|")[1] == p.name]
            assert mine == sorted(mine)
        # Every frame pushed either arrived or was dropped by an interruption, and counted.
        markers = len(procs) * sum(isinstance(f, Hold) for f in sent)
        dropped = sum(p.statistics().dropped for p in result.task.processors())
        assert len(down) + len(up) + dropped == len(sent) + markers
        assert result.upstream_of(ErrorFrame) == []

    run_virtual(main)
