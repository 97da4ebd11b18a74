"""Hostile tests of the runtime core's fast paths: they must keep the slow paths' semantics.

The fast paths under test (see docs/architecture.md, the concurrency model):

1. the task's sink takes a frame nobody watches at once, in the sender's task, when it is idle
   (``_SinkRun.put`` / ``PipelineTask._leaves_at_once``);
2. an InterruptionFrame passes a processor that does nothing with it (the base class's
   ``on_interruption`` and ``push_frame``) and whose system loop is idle in the sender's task,
   on down a chain of such processors (a loop: ``processor._push_on``); an idle process
   loop is not woken by an interruption;
3. ``queue_frame`` pushes a frame past the source at once when nothing queued before it is
   still on its way in, the source is idle and the first processor has lanes
   (``TaskEdge._takes_past_at_once``);
4. ``push_frame``'s first case: down, to a processor with lanes.

Most tests here do *not* watch ``on_frame_reached_downstream`` (a handler there turns the sink's
fast path off): what leaves the pipeline is recorded by a tail processor and by observers.

The tests after "Found by these tests" each showed a place where a fast path did not keep the
slow path's semantics (they passed before the commit that brought it, and failed on it): observers
told of a forwarded interruption deepest first, a RecursionError down a long chain of plain
processors, a hook set on the instance skipped, a push_frame override not seeing the
interruption it forwards, queue_frame waiting behind (and interleaving the outputs of) an inline
processor at the head, and a processor's first frame, queued before its process task first
ran, not starting a burst. Each is fixed; the tests keep them fixed.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_runtime_properties import all_tasks, run_virtual

from rustvani_trio import (
    BaseObserver,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FrameProcessor,
    FramePushed,
    InterruptionFrame,
    Pipeline,
    PipelineParams,
    PipelineTask,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)
from rustvani_trio.processor import InlineOutput, InlineProcessor

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# =========================================================================== helpers


@attrs.frozen(kw_only=True)
class Probe(DataFrame):
    """A data frame whose class name is its own (the undelivered report lists class names)."""

    tag: str = ""


@attrs.frozen(kw_only=True)
class ProbeSignal(SystemFrame):
    """A system frame of its own class, for the same reason."""

    tag: str = ""


class Relay(FrameProcessor):
    """Forwards everything; takes ``delay`` (virtual) seconds over each downstream text frame
    before forwarding it. The base class's hooks: an interruption may pass it at once."""

    def __init__(self, name: str, *, max_buffer: int = 64, delay: float = 0.0) -> None:
        super().__init__(name=name, max_buffer=max_buffer)
        self.delay = delay
        self.interruptions = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self.delay and direction is DOWN and isinstance(frame, TextFrame):
            await trio.sleep(self.delay)
        await self.push_frame(frame, direction)


class HookedRelay(Relay):
    """A :class:`Relay` with an ``on_interruption`` of its own (counts; may take a while)."""

    def __init__(
        self, name: str, *, max_buffer: int = 64, delay: float = 0.0, pause: float = 0.0
    ) -> None:
        super().__init__(name, max_buffer=max_buffer, delay=delay)
        self.pause = pause

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.interruptions += 1
        if self.pause:
            await trio.sleep(self.pause)


class InlinePass(InlineProcessor):
    """Forwards every frame unchanged (one out for one in), counting interruptions."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.interruptions = 0

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        return frame

    def interrupted(self, frame: InterruptionFrame) -> None:
        self.interruptions += 1


class Tail(FrameProcessor):
    """The last processor: forwards everything, and records each downstream text frame once it
    was delivered past it (so a frame is either recorded here or counted as dropped by an
    interruption, never both), and the system frames and interruptions it sees, in order."""

    def __init__(self, name: str = "tail", *, max_buffer: int = 64) -> None:
        super().__init__(name=name, max_buffer=max_buffer)
        self.got: list[TextFrame] = []
        self.signals: list[Frame] = []
        self.order: list[Frame] = []  # both, in the order they passed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, SystemFrame):
            self.signals.append(frame)
            self.order.append(frame)
        await self.push_frame(frame, direction)
        if direction is DOWN and isinstance(frame, TextFrame | Probe):
            self.got.append(frame)  # type: ignore[arg-type]
            self.order.append(frame)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.signals.append(frame)
        self.order.append(frame)


class PushLog(BaseObserver):
    """Every push, in the order observers are told of them; and any push that left more
    downstream frames waiting in the receiver's lane than its ``max_buffer`` (backpressure)."""

    def __init__(self) -> None:
        self.pushes: list[FramePushed] = []
        self.overfull: list[tuple[str, int]] = []

    def on_push_frame(self, event: FramePushed) -> None:
        self.pushes.append(event)
        stats = event.destination.statistics()
        if stats.downstream_waiting > stats.max_buffer:
            self.overfull.append((event.destination.name, stats.downstream_waiting))

    def edges(self, frame: Frame) -> list[tuple[str, str]]:
        return [(e.source.name, e.destination.name) for e in self.pushes if e.frame is frame]

    def into(self, name: str) -> list[Frame]:
        return [e.frame for e in self.pushes if e.destination.name == name]


def path(task: PipelineTask) -> list[tuple[str, str]]:
    """The pushes a frame makes from the source to the sink."""
    return list(itertools.pairwise(p.name for p in task.processors()))


def nest(processors: list[FrameProcessor], cuts: list[int]) -> Pipeline:
    """The processors in nested Pipelines cut at ``cuts`` (the order is unchanged)."""
    bounds = [0, *[c for c in cuts if 0 < c < len(processors)], len(processors)]
    groups: list[Any] = []
    for a, b in itertools.pairwise(bounds):
        part = processors[a:b]
        if part:
            groups.append(Pipeline(part) if len(part) > 1 else part[0])
    if len(groups) > 1:
        groups[0] = Pipeline([groups[0]])
    return Pipeline(groups)


def undelivered_report(caplog: pytest.LogCaptureFixture) -> str:
    """The text of the 'never delivered' warnings logged so far."""
    return "\n".join(r.getMessage() for r in caplog.records if "never delivered" in r.getMessage())


@asynccontextmanager
async def running(task: PipelineTask, *, end: bool = True) -> AsyncIterator[trio.Nursery]:
    """Run ``task`` for the body (once it has started), without watching the sink; on leaving,
    queue an EndFrame (with ``end``) and wait for the run to finish."""
    started = trio.Event()
    task.add_event_handler("on_pipeline_started", lambda _t: started.set())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(task.run)
        await started.wait()
        yield nursery
        if end and not task.has_finished:
            await task.queue_frame(EndFrame())


class Steps(trio.abc.Instrument):
    """Counts the steps of the tasks whose names end with ``suffix``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.steps += 1


# =========================================================================== the properties


@attrs.frozen
class Spec:
    kind: str  # "plain" | "hooked" | "inline"
    max_buffer: int
    delay: float
    pause: float


specs = st.builds(
    Spec,
    kind=st.sampled_from(["plain", "plain", "hooked", "inline"]),
    max_buffer=st.sampled_from([1, 2, 64]),
    delay=st.sampled_from([0.0, 0.0, 0.001, 0.01]),
    pause=st.sampled_from([0.0, 0.0, 0.002]),
)

Step = tuple[str, float]  # ("text" | "transcript" | "interrupt", 0) or ("sleep", seconds)
steps_st = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["text", "text", "text", "transcript"]), st.just(0.0)),
        st.tuples(st.just("interrupt"), st.just(0.0)),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.001, 0.003, 0.02])),
    ),
    max_size=14,
)


def make(spec: Spec, i: int) -> FrameProcessor:
    if spec.kind == "inline":
        return InlinePass(f"i{i}")
    if spec.kind == "hooked":
        return HookedRelay(f"h{i}", max_buffer=spec.max_buffer, delay=spec.delay, pause=spec.pause)
    return Relay(f"r{i}", max_buffer=spec.max_buffer, delay=spec.delay)


@PROPERTY_SETTINGS
@given(
    pipeline_specs=st.lists(specs, min_size=1, max_size=6),
    scripts=st.lists(steps_st, min_size=1, max_size=3),
    tail_buffer=st.sampled_from([1, 64]),
    cuts=st.lists(st.integers(min_value=1, max_value=6), max_size=2),
    watched=st.sampled_from([False, False, True]),
)
def test_concurrent_callers_through_every_fast_path_keep_order_and_lose_nothing(
    pipeline_specs: list[Spec],
    scripts: list[list[Step]],
    tail_buffer: int,
    cuts: list[int],
    watched: bool,
) -> None:
    """Several tasks queue text, user transcripts and interruptions at random moments into a
    random mix of plain processors (interruptions pass them at once), hooked ones (slow or
    not), inline ones and nested pipelines, with tiny lanes and slow processors, and nobody
    watches the sink (frames leave it at once). Then:

    * ``queue_frame`` never blocks (no virtual time passes in it);
    * per caller, frames arrive in the order they were queued;
    * every text frame either arrives or is counted in some processor's ``dropped``;
      transcripts always arrive; frames queued after the last interruption all arrive;
    * each interruption reaches every processor (hooks run once each) and the sink;
    * observers see each frame's pushes along the pipeline, in order (for an interruption:
      each push once);
    * the run ends with "end", without errors, and leaves no task behind;
    * with a handler watching the sink (no fast path there), it sees what was pushed into
      the sink, in order, but for what an interruption drained from the sink's lane.
    """

    async def main() -> None:
        procs = [make(spec, i) for i, spec in enumerate(pipeline_specs)]
        tail = Tail(max_buffer=tail_buffer)
        log = PushLog()
        task = PipelineTask(nest([*procs, tail], sorted(set(cuts))), observers=[log])
        errors: list[ErrorFrame] = []
        task.add_event_handler("on_error", lambda _t, f: errors.append(f))
        seen: list[Frame] = []
        if watched:
            task.add_event_handler("on_frame_reached_downstream", lambda _t, f: seen.append(f))
        before = all_tasks()

        counter = itertools.count()
        queued: list[tuple[int, Frame]] = []  # (call index, frame), texts and transcripts
        interrupt_calls: list[int] = []
        interruptions: list[InterruptionFrame] = []
        stalled: list[tuple[Frame, float]] = []

        async def queue(frame: Frame) -> None:
            # (Recorded as the call starts: what it does happens before its first yield.)
            at = next(counter)
            if isinstance(frame, InterruptionFrame):
                interrupt_calls.append(at)
                interruptions.append(frame)
            else:
                queued.append((at, frame))
            t0 = trio.current_time()
            await task.queue_frame(frame)
            if trio.current_time() != t0:
                stalled.append((frame, trio.current_time() - t0))

        async def caller(c: int, script: list[Step]) -> None:
            for n, (kind, seconds) in enumerate(script):
                if kind == "sleep":
                    await trio.sleep(seconds)
                elif kind == "interrupt":
                    await queue(InterruptionFrame())
                elif kind == "transcript":
                    await queue(TranscriptionFrame(text=f"c{c}.{n}", user_id="u"))
                else:
                    await queue(TextFrame(text=f"c{c}.{n}"))

        with trio.fail_after(60):
            async with running(task), trio.open_nursery() as callers:
                for c, script in enumerate(scripts):
                    callers.start_soon(caller, c, script)

        assert task.finish_reason == "end"
        assert errors == []
        assert all_tasks() == before
        assert stalled == []  # queue_frame never waited
        assert log.overfull == []  # the fast paths respect backpressure

        got = tail.got
        assert len({f.id for f in got}) == len(got)  # nothing twice
        order = {f.id: at for at, f in queued}
        for c in range(len(scripts)):
            mine = [order[f.id] for f in got if f.text.startswith(f"c{c}.")]
            assert mine == sorted(mine), f"caller {c}'s frames out of order"
        got_ids = {f.id for f in got}
        transcripts = [f for _, f in queued if isinstance(f, TranscriptionFrame)]
        assert {f.id for f in transcripts} <= got_ids, "a transcript was dropped"
        last_interrupt = max(interrupt_calls, default=-1)
        after = [f for at, f in queued if at > last_interrupt]
        assert {f.id for f in after} <= got_ids, "lost after the last interruption"
        # Nothing queued after an interruption overtakes it.
        passed: set[int] = set()
        for f in tail.order:
            if isinstance(f, InterruptionFrame):
                passed.add(f.id)
            else:
                ahead = {
                    i.id
                    for at, i in zip(interrupt_calls, interruptions, strict=True)
                    if at < order[f.id]
                }
                assert ahead <= passed, f"{f} overtook an interruption queued before it"
        dropped = sum(p.statistics().dropped for p in task.processors()[:-1])
        assert len(got) + dropped == len(queued)
        if not interruptions:
            assert dropped == 0

        full = path(task)
        for proc in procs:
            if isinstance(proc, HookedRelay | InlinePass):
                assert proc.interruptions == len(interruptions)
        assert [f for f in tail.signals if isinstance(f, InterruptionFrame)] == interruptions
        sink = task.processors()[-1].name
        assert [f for f in log.into(sink) if isinstance(f, InterruptionFrame)] == interruptions
        for frame in interruptions:
            assert sorted(log.edges(frame)) == sorted(full)
        for _, frame in queued:
            edges = log.edges(frame)
            assert edges == full[: len(edges)], f"{frame} pushed out of order: {edges}"
            if frame.id in got_ids:
                assert edges == full
        if watched:
            into = [f for f in log.into(sink) if isinstance(f, TextFrame)]
            seen_texts = [f for f in seen if isinstance(f, TextFrame)]
            assert seen_texts == [f for f in into if f in seen_texts]
            assert len(into) == len(seen_texts) + task.processors()[-1].statistics().dropped

    run_virtual(main)


@PROPERTY_SETTINGS
@given(
    pipeline_specs=st.lists(specs, min_size=1, max_size=5),
    burst=st.integers(min_value=0, max_value=30),
    cancel_after=st.sampled_from([0.0, 0.0005, 0.001, 0.004, 0.02]),
    late=st.integers(min_value=0, max_value=3),
    interrupt_every=st.sampled_from([0, 3, 7]),
)
def test_a_cancel_racing_with_the_fast_paths_ends_the_run_and_reports_what_did_not_go_in(
    pipeline_specs: list[Spec], burst: int, cancel_after: float, late: int, interrupt_every: int
) -> None:
    """A caller queues a burst (with interruptions, which pass these processors at once)
    while the run is cancelled at a random moment, then queues more after the cancel began.
    The run ends with the cancel's reason; every processor that started gets its cancel hook
    once; no frame passes the tail after the CancelFrame; the frames queued after the cancel
    began never enter and are reported as never delivered."""

    class Counted(Relay):
        def __init__(self, name: str, spec: Spec) -> None:
            super().__init__(name, max_buffer=spec.max_buffer, delay=spec.delay)
            self.cancels = 0

        async def on_cancel(self, frame: Any) -> None:
            self.cancels += 1

    reports: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "never delivered" in record.getMessage():
                reports.append(record.getMessage())

    async def main() -> None:
        procs: list[FrameProcessor] = [
            InlinePass(f"i{i}") if spec.kind == "inline" else Counted(f"r{i}", spec)
            for i, spec in enumerate(pipeline_specs)
        ]
        tail = Tail()
        log = PushLog()
        task = PipelineTask(
            Pipeline([*procs, tail]), params=PipelineParams(cancel_timeout=1.0), observers=[log]
        )
        late_frames = [Probe(tag=str(i)) for i in range(late)]
        accepted: list[Frame] = []
        with trio.fail_after(30):
            async with running(task, end=False) as nursery:

                async def cancel() -> None:
                    await trio.sleep(cancel_after)
                    await task.cancel("race")
                    for frame in late_frames:
                        try:
                            await task.queue_frame(frame)
                        except RuntimeError:  # the run has finished: refused loudly
                            break
                        accepted.append(frame)

                nursery.start_soon(cancel)
                for i in range(burst):
                    if task.has_finished:
                        break
                    await task.queue_frame(TextFrame(text=str(i)))
                    if interrupt_every and i % interrupt_every == 0 and not task.has_finished:
                        await task.queue_frame(InterruptionFrame())
        assert task.finish_reason == "cancel: race"
        assert log.overfull == []
        for p in procs:
            if isinstance(p, Counted):
                assert p.cancels == 1
        sink = task.processors()[-1].name
        into_sink = log.into(sink)
        cancels = [i for i, f in enumerate(into_sink) if isinstance(f, CancelFrame)]
        assert len(cancels) <= 1
        if cancels:
            assert not any(isinstance(f, TextFrame) for f in into_sink[cancels[0] :])
        assert not any(isinstance(f, Probe) for f in tail.got)
        if accepted:
            assert reports, "frames queued after the cancel were not reported"
            [report] = reports
            found = re.search(r"ended with (\d+) queued", report)
            assert found is not None
            assert int(found.group(1)) >= len(accepted)
            assert "Probe" in report

    handler = Catch()
    logger = logging.getLogger("rustvani_trio")
    logger.addHandler(handler)
    try:
        run_virtual(main)
    finally:
        logger.removeHandler(handler)


# =========================================================================== interruptions


class Holder(FrameProcessor):
    """Holds a text frame whose text is its own name (until an interruption cuts it short);
    forwards everything else at once."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.interruptions = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == self.name:
            await trio.sleep_forever()
        await self.push_frame(frame, direction)


class HookedHolder(Holder):
    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.interruptions += 1


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooked"])
@pytest.mark.parametrize("watched", [False, True], ids=["unwatched", "watched"])
@pytest.mark.parametrize("inline", [False, True], ids=["lanes", "inline-between"])
async def test_an_interruption_drops_and_counts_the_same_through_fast_and_slow_paths(
    hooked: bool, watched: bool, inline: bool
) -> None:
    # The same settled scenario through processors the interruption passes at once (plain)
    # or through their system loops (hooked), with the sink watched (queued) or not (taken at
    # once): each holder is busy with a frame, the first one has two more queued; the
    # interruption cuts all three holds short and drains the queue, and what comes after it
    # arrives. Drops, hooks and outputs must be identical.
    kind = HookedHolder if hooked else Holder
    h0, h1, h2 = kind("h0"), kind("h1"), kind("h2")
    tail = Tail()
    middle: list[FrameProcessor] = [InlinePass("x")] if inline else []
    log = PushLog()
    task = PipelineTask(Pipeline([h0, *middle, h1, h2, tail]), observers=[log])
    seen: list[Frame] = []
    if watched:
        task.add_event_handler("on_frame_reached_downstream", lambda _t, f: seen.append(f))
    settle = trio.testing.wait_all_tasks_blocked
    with trio.fail_after(5):
        async with running(task):
            for text in ("h2", "h1", "h0", "d1", "d2"):
                await task.queue_frame(TextFrame(text=text))
                await settle()
            assert [p.statistics().process for p in (h0, h1, h2)] == [2, 0, 0]
            interruption = InterruptionFrame()
            await task.queue_frame(interruption)
            await settle()
            await task.queue_frame(TextFrame(text="after"))
            await settle()
    assert task.finish_reason == "end"
    assert [f.text for f in tail.got] == ["after"]
    assert [p.statistics().dropped for p in (h0, h1, h2, tail)] == [3, 1, 1, 0]
    assert [p.interruptions for p in (h0, h1, h2)] == [int(hooked)] * 3
    assert tail.signals == [interruption]
    assert sorted(log.edges(interruption)) == sorted(path(task))
    if watched:
        assert [f.name for f in seen] == [
            "StartFrame",
            "InterruptionFrame",
            "TextFrame",
            "EndFrame",
        ]


async def test_an_interruption_does_not_overtake_a_system_frame_a_plain_processor_holds() -> None:
    # The plain processor's system loop is busy with a speaking signal: the interruption
    # behind it waits its turn there (it is not forwarded at once), downstream too.
    release = trio.Event()

    class BusySignals(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, UserStartedSpeakingFrame):
                await release.wait()
            await self.push_frame(frame, direction)

    tail = Tail()
    task = PipelineTask(Pipeline([BusySignals(name="busy"), Relay("r"), tail]))
    with trio.fail_after(5):
        async with running(task):
            await task.queue_frame(UserStartedSpeakingFrame())
            await trio.testing.wait_all_tasks_blocked()
            await task.queue_frame(InterruptionFrame())
            await task.queue_frame(TextFrame(text="after"))
            await trio.testing.wait_all_tasks_blocked()
            assert tail.signals == []
            release.set()
            await trio.testing.wait_all_tasks_blocked()
    assert [f.name for f in tail.signals] == ["UserStartedSpeakingFrame", "InterruptionFrame"]
    assert [f.text for f in tail.got] == ["after"]


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooked"])
async def test_a_frame_that_already_woke_an_idle_process_loop_is_drained_by_an_interruption(
    hooked: bool,
) -> None:
    # A frame woke the idle process loop (it is rescheduled, not yet run) when the
    # interruption arrives: the loop counts as busy, so that frame is drained and counted;
    # the frame pushed right after the interruption is kept and handled after it.
    class Sender(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                self.push_frame_nowait(TextFrame(text="before"))  # (no schedule point)
                self.push_frame_nowait(InterruptionFrame())
                await self.push_frame(TextFrame(text="after"))
                return
            await self.push_frame(frame, direction)

    relay = HookedRelay("relay") if hooked else Relay("relay")
    tail = Tail()
    task = PipelineTask(Pipeline([Sender(name="sender"), relay, tail]))
    with trio.fail_after(5):
        async with running(task):
            await task.queue_frame(TextFrame(text="go"))
            await trio.testing.wait_all_tasks_blocked()
    assert [f.text for f in tail.got] == ["after"]
    assert relay.statistics().dropped == 1
    assert [f.name for f in tail.signals] == ["InterruptionFrame"]
    assert relay.interruptions == int(hooked)


# =========================================================================== queue_frame


@pytest.mark.parametrize("state", ["idle", "first-full", "source-busy"])
@pytest.mark.parametrize("frame_kind", ["data", "system"])
async def test_a_frame_queued_from_a_cancelled_scope_is_not_queued(
    state: str, frame_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Whichever path the frame would take (at once past the source, or through the feed), a
    # caller that is cancelled by the time it queues gets trio.Cancelled and the frame does not
    # go in (trio's rule: an operation that raised Cancelled did not happen), so it is not
    # reported as undelivered at the run's end either.
    caplog.set_level(logging.WARNING, logger="rustvani_trio")
    release = trio.Event()

    class First(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "hold":
                await release.wait()
            await self.push_frame(frame, direction)

    tail = Tail()
    first = First(name="first", max_buffer=1)
    task = PipelineTask(Pipeline([first, tail]))
    probe: Frame = Probe(tag="x") if frame_kind == "data" else ProbeSignal(tag="x")
    with trio.fail_after(5):
        async with running(task):
            if state in ("source-busy", "first-full"):
                await task.queue_frame(TextFrame(text="hold"))
                await task.queue_frame(TextFrame(text="filler"))
                await trio.testing.wait_all_tasks_blocked()
                if state == "source-busy":
                    await task.queue_frame(TextFrame(text="filler2"))  # the source waits
                    await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await task.queue_frame(probe)
            assert scope.cancelled_caught
            release.set()
    delivered = probe in tail.got or probe in tail.signals
    reported = type(probe).__name__ in undelivered_report(caplog)
    assert not delivered and not reported, (state, delivered, reported)
    assert task.finish_reason == "end"


@pytest.mark.parametrize("pause", [False, True], ids=["at-once", "after-a-checkpoint"])
async def test_a_frame_queued_right_after_the_end_frame_is_refused_and_reported(
    pause: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Neither path may take a frame past an EndFrame queued before it: it is refused and
    # reported (an ErrorFrame naming the refusing processor) or reported as never delivered.
    caplog.set_level(logging.WARNING, logger="rustvani_trio")
    tail = Tail()
    task = PipelineTask(Pipeline([Relay("r"), tail]))
    errors: list[ErrorFrame] = []
    task.add_event_handler("on_error", lambda _t, f: errors.append(f))
    with trio.fail_after(5):
        async with running(task, end=False):
            await task.queue_frame(EndFrame())
            if pause:
                await trio.lowlevel.checkpoint()
            await task.queue_frame(Probe(tag="late"))
    assert task.finish_reason == "end"
    assert not any(isinstance(f, Probe) for f in tail.got)
    refused = [e.error for e in errors if "received Probe after EndFrame" in e.error]
    reported = "Probe" in undelivered_report(caplog)
    assert len(refused) + reported == 1, (refused, reported)


async def test_frames_queued_upstream_keep_their_order_and_reach_the_source_before_the_end() -> (
    None
):
    # Upstream frames queued to the task go past the sink at once when it is idle, or through
    # the feed: per caller in order, all of them before the run ends (they are ahead of the
    # upstream flush in every lane).
    reached: list[Frame] = []
    relays = [Relay(f"r{i}", max_buffer=1, delay=0.001) for i in range(3)]
    task = PipelineTask(Pipeline(relays))
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: reached.append(f))

    async def caller(c: int) -> None:
        for i in range(20):
            await task.queue_frame(TextFrame(text=f"{c}.{i}"), UP)
            if i % 5 == 0:
                await trio.sleep(0.001)

    with trio.fail_after(30):
        async with running(task, end=False):
            async with trio.open_nursery() as callers:
                for c in range(3):
                    callers.start_soon(caller, c)
            await task.queue_frame(EndFrame())
    assert task.finish_reason == "end"
    texts = [f.text for f in reached if isinstance(f, TextFrame)]
    assert len(texts) == 60
    for c in range(3):
        assert [t for t in texts if t.startswith(f"{c}.")] == [f"{c}.{i}" for i in range(20)]


# =========================================================================== the sink


async def test_a_handler_added_mid_run_sees_a_suffix_of_what_reached_the_sink() -> None:
    # Frames stream into the sink (at once while it is idle and unwatched); a handler is
    # registered in the middle of the stream, from the pipeline's own task. It sees each frame
    # pushed into the sink from then on, once, in order, and nothing pushed into it before
    # (except frames still queued there).
    marks: dict[str, int] = {}
    reached: list[Frame] = []
    log = PushLog()

    class Streamer(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for i in range(200):
                    if i == 77:
                        marks["at"] = len(log.pushes)
                        self.pipeline_task.add_event_handler(  # type: ignore[union-attr]
                            "on_frame_reached_downstream", lambda _t, f: reached.append(f)
                        )
                    await self.push_frame(TextFrame(text=str(i)))
                    if i % 10 == 0:
                        await trio.lowlevel.checkpoint()
                return
            await self.push_frame(frame, direction)

    task = PipelineTask(Pipeline([Streamer(name="streamer")]), observers=[log])
    sink = task.processors()[-1].name
    with trio.fail_after(5):
        async with running(task):
            await task.queue_frame(TextFrame(text="go"))
    assert task.finish_reason == "end"
    pushed = [f for f in log.into(sink) if isinstance(f, TextFrame) and f.text != "go"]
    seen = [f for f in reached if isinstance(f, TextFrame) and f.text != "go"]
    assert len({f.id for f in seen}) == len(seen)
    assert seen == pushed[len(pushed) - len(seen) :]  # a suffix, in order
    after = [
        e.frame
        for e in log.pushes[marks["at"] :]
        if e.destination.name == sink and isinstance(e.frame, TextFrame)
    ]
    assert len(after) >= 200 - 77
    assert {f.id for f in after} <= {f.id for f in seen}


async def test_frames_leaving_at_once_keep_an_idle_timeout_from_firing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The only activity is frames a processor pushes on its own (nobody queues anything, and
    # nobody watches the sink, so they leave in the sender's task): each counts as activity.
    # The timeout fires once they stop, not before.
    class Ticker(FrameProcessor):
        async def on_start(self, frame: StartFrame) -> None:
            self.start_task_soon(self.tick)

        async def tick(self) -> None:
            for i in range(10):
                await trio.sleep(1)
                await self.push_frame(TextFrame(text=f"tick {i}"))

    steps = Steps(".sink.process")
    fired: list[float] = []
    task = PipelineTask(Pipeline([Ticker(name="ticker")]), params=PipelineParams(idle_timeout=3.0))
    task.add_event_handler("on_idle_timeout", lambda _t: fired.append(trio.current_time()))
    t0 = trio.current_time()
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(60):
            async with running(task, end=False):
                await trio.sleep(0.5)
                base = steps.steps
                await trio.sleep(9)
                assert steps.steps == base  # the frames did leave at once
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert task.finish_reason == "cancel: idle timeout"
    assert len(fired) == 1
    assert fired[0] - t0 == pytest.approx(13.0, abs=0.1)


async def test_heartbeats_and_errors_still_go_through_an_unwatched_sink(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Heartbeats are never taken at once (their latency is measured by the sink's task), and
    # an error pushed upstream while data leaves at once reaches the source before the end.
    class Mixed(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text.endswith("3"):
                raise ValueError(f"bad {frame.text}")
            await self.push_frame(frame, direction)

        async def on_stop(self, frame: EndFrame) -> None:
            await self.push_error("stopping")

    beats: list[float] = []
    errors: list[str] = []
    tail = Tail()
    task = PipelineTask(
        Pipeline([Mixed(name="mixed"), tail]),
        params=PipelineParams(enable_heartbeats=True, heartbeats_period=0.5),
    )
    task.add_event_handler("on_heartbeat", lambda _t, latency: beats.append(latency))
    task.add_event_handler("on_error", lambda _t, f: errors.append(f.error))
    with trio.fail_after(60):
        async with running(task):
            for i in range(20):
                await task.queue_frame(TextFrame(text=str(i)))
                await trio.sleep(0.2)
    assert task.finish_reason == "end"
    assert len(beats) >= 5
    assert task.heartbeat_latencies
    assert [f.text for f in tail.got] == [str(i) for i in range(20) if not str(i).endswith("3")]
    assert len([e for e in errors if "bad" in e]) == 2
    assert errors[-1].endswith("stopping")


# =========================================================================== what differs
# Found by these tests (each failed on the fast path it names before the fix). They run their
# own trio.run (not pytest-trio's), so that a failed assertion reaches pytest as an
# AssertionError, not wrapped in an exception group.


def test_observers_see_an_interruption_pass_plain_processors_in_order() -> None:
    log = PushLog()
    task = PipelineTask(Pipeline([Relay("a"), Relay("b"), Relay("c")]), observers=[log])
    interruption = InterruptionFrame()

    async def main() -> None:
        with trio.fail_after(5):
            async with running(task):
                await trio.testing.wait_all_tasks_blocked()
                await task.queue_frame(interruption)
                await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert task.finish_reason == "end"
    assert log.edges(interruption) == path(task)


def test_an_interruption_passes_a_long_chain_of_plain_processors() -> None:
    tail = Tail()
    task = PipelineTask(Pipeline([*[Relay(f"r{i}") for i in range(500)], tail]))
    interruption = InterruptionFrame()
    raised: list[BaseException] = []

    async def main() -> None:
        with trio.fail_after(30):
            async with running(task):
                await trio.testing.wait_all_tasks_blocked()
                try:
                    await task.queue_frame(interruption)
                except RecursionError as exc:
                    raised.append(exc)
                await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert task.finish_reason == "end"
    assert raised == []
    assert tail.signals == [interruption]


async def _interrupt_once(task: PipelineTask) -> None:
    """Run ``task``, queue one InterruptionFrame once it is settled, and end it."""
    with trio.fail_after(5):
        async with running(task):
            await trio.testing.wait_all_tasks_blocked()
            await task.queue_frame(InterruptionFrame())
            await trio.testing.wait_all_tasks_blocked()


def test_an_on_interruption_set_on_the_instance_is_called() -> None:
    relay = Relay("r")
    task = PipelineTask(Pipeline([relay, Tail()]))
    with mock.patch.object(relay, "on_interruption", new=mock.AsyncMock()) as hook:
        trio.run(_interrupt_once, task)
    assert task.finish_reason == "end"
    assert hook.await_count == 1


def test_a_push_frame_override_sees_the_interruption_it_forwards() -> None:
    class Tagging(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="tagging")
            self.pushed: list[str] = []

        async def push_frame(self, frame: Frame, direction: FrameDirection = DOWN) -> None:
            self.pushed.append(frame.name)
            await super().push_frame(frame, direction)

    tagging = Tagging()
    task = PipelineTask(Pipeline([tagging, Tail()]))
    trio.run(_interrupt_once, task)
    assert task.finish_reason == "end"
    assert tagging.pushed == ["StartFrame", "InterruptionFrame", "EndFrame", "UpstreamFlush"]


class Split(InlineProcessor):
    """Turns each downstream text frame (or Probe) into ``n`` text frames: an inline
    processor at the head of the pipeline, fed by queue_frame's fast path."""

    def __init__(self, n: int) -> None:
        super().__init__(name="split")
        self.n = n

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if isinstance(frame, TextFrame | Probe) and direction is DOWN:
            tag = frame.text if isinstance(frame, TextFrame) else "p"
            return [TextFrame(text=f"{tag}{i}") for i in range(self.n)]
        return frame


class Gate(FrameProcessor):
    """A lane of one; holds each text frame until ``open`` is set."""

    def __init__(self) -> None:
        super().__init__(name="gate", max_buffer=1)
        self.open = trio.Event()
        self.seen: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            self.seen.append(frame.text)
            await self.open.wait()
        await self.push_frame(frame, direction)


def test_queue_frame_does_not_block_behind_an_inline_processor_that_splits() -> None:
    gate = Gate()
    task = PipelineTask(Pipeline([Split(3), gate]))
    returned: list[bool] = []

    async def main() -> None:
        with trio.fail_after(30):
            async with running(task):
                with trio.move_on_after(1):
                    await task.queue_frame(TextFrame(text="a"))
                    returned.append(True)
                gate.open.set()

    run_virtual(main)
    assert task.finish_reason == "end"
    assert returned == [True]


def test_a_caller_cancelled_behind_an_inline_splitter_delivers_all_or_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rustvani_trio")
    gate = Gate()
    task = PipelineTask(Pipeline([Split(3), gate]))

    async def main() -> None:
        with trio.fail_after(30):
            async with running(task):
                with trio.move_on_after(1):
                    await task.queue_frame(Probe(tag="a"))
                gate.open.set()

    run_virtual(main)
    assert task.finish_reason == "end"
    reported = "Probe" in undelivered_report(caplog)
    assert (gate.seen, reported) in ((["p0", "p1", "p2"], False), ([], True))


def test_the_outputs_of_frames_queued_one_after_another_do_not_interleave() -> None:
    gate = Gate()
    task = PipelineTask(Pipeline([Split(4), gate]))

    async def main() -> None:
        with trio.fail_after(5):
            async with running(task) as nursery:
                nursery.start_soon(task.queue_frame, TextFrame(text="a"))
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(task.queue_frame, TextFrame(text="b"))
                await trio.testing.wait_all_tasks_blocked()
                gate.open.set()
                await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert task.finish_reason == "end"
    assert gate.seen == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]


def test_the_first_frame_queued_after_the_start_finds_an_idle_process_loop() -> None:
    from conftest import live

    from rustvani_trio.processor import YIELD_EVERY

    class Armed(FrameProcessor):
        """Records whether its next push is a schedule point, for each frame it handles."""

        def __init__(self) -> None:
            super().__init__(name="armed")
            self.armed: list[bool] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            self.armed.append(self._unyielded == YIELD_EVERY - 1)
            await self.push_frame(frame, direction)

    firsts: list[bool] = []

    async def main() -> None:
        for _ in range(300):  # (about one run in ten shows it)
            armed = Armed()
            async with live([armed]) as run:
                await run.send(TextFrame(text="a"), settle=True)
            firsts.append(armed.armed[0])
            if not armed.armed[0]:
                return

    trio.run(main)
    assert all(firsts), f"run {len(firsts)}: the first push was not a schedule point"
