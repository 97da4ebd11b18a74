"""The scenarios of a benchmark run: what each measures, its configurations, contestants and
repetitions (full size, or tiny with ``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.contestants._pg_tool import TOOL_CALL as PG_TOOL_CALL

__all__ = ["FRAMEWORKS", "LLM4", "Config", "Scenario", "build_scenarios"]

LLM4 = ("httpx", "openai", "rustvani", "pipecat")
FRAMEWORKS = ("rustvani", "pipecat")
#: The tool of the tool round, as the frameworks send it (built from the function they have
#: registered: name, the description "A trivial tool.", no parameters).
GET_TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "A trivial tool.",
        "parameters": {"type": "object", "properties": {}},
    },
}


@dataclass
class Config:
    label: str
    params: dict[str, Any]
    contestants: tuple[str, ...]


@dataclass
class Scenario:
    key: str
    title: str
    description: str
    configs: list[Config]
    reps: int
    metrics: dict[str, str]
    """metric name -> unit/explanation, in table order."""
    timeout: float = 120.0
    default: bool = True
    """Run without ``--scenarios`` (the others: by name, or with ``--scenarios all``)."""


def build_scenarios(quick: bool) -> list[Scenario]:
    """The scenarios of issue 5, full size or tiny (``quick``)."""
    q = quick

    def pick(full: Any, small: Any) -> Any:
        return small if q else full

    stream_metrics = {
        "ttft_ms": "ms to the first text frame at the sink",
        "total_ms": "ms to the last text frame at the sink",
        "cpu_ms": "the client process's CPU time for the turn, ms",
    }
    burst_k = pick((0, 5, 10), (0, 2))
    hop_k = pick((0, 1, 5, 10, 20), (0, 2))
    conv = pick((50, 200), (4,))
    return [
        Scenario(
            "burst",
            "Burst TTFT and total time",
            f"{pick(200, 20)} tokens streamed with no delay; K extra pass-through processors "
            "between the LLM and the sink (the raw clients have no pipeline: K=0 only); "
            "'inline': rustvani-trio's pass-throughs are inline processors.",
            [
                *(
                    Config(
                        f"K={k}",
                        {"tokens": pick(200, 20), "token_delay": 0.0, "k": k, "turns": pick(5, 1)},
                        LLM4 if k == 0 else FRAMEWORKS,
                    )
                    for k in burst_k
                ),
                Config(
                    f"K={burst_k[-1]} inline",
                    {
                        "tokens": pick(200, 20),
                        "token_delay": 0.0,
                        "k": burst_k[-1],
                        "inline": True,
                        "turns": pick(5, 1),
                    },
                    ("rustvani",),
                ),
            ],
            reps=pick(16, 2),  # (the headline: its ratio to the floor is a goal)
            metrics=stream_metrics,
        ),
        Scenario(
            "paced",
            "Paced TTFT",
            f"{pick(50, 5)} tokens at {pick(2, 1)} ms each, K=0: the framework's added TTFT over "
            "its own raw floor (rustvani-trio over httpx-sse, pipecat over the openai SDK).",
            [
                Config(
                    "K=0",
                    {
                        "tokens": pick(50, 5),
                        "token_delay": pick(0.002, 0.001),
                        "k": 0,
                        "turns": pick(3, 1),
                    },
                    LLM4,
                )
            ],
            reps=pick(8, 2),
            metrics=stream_metrics,
        ),
        Scenario(
            "hop",
            "Hop cost",
            f"{pick(20000, 300)} TextFrames pushed by a generator processor through K "
            "pass-through processors to a sink; the floor is a bare chain of trio memory "
            "channels (buffer 64) with one task per hop. µs/hop is the slope over K; "
            "'inline': rustvani-trio's pass-throughs are inline processors.",
            [
                *(
                    Config(
                        f"K={k}",
                        {
                            "frames": pick(20000, 300),
                            "warmup_frames": pick(2000, 50),
                            "k": k,
                            "buffer": 64,
                        },
                        ("channels", *FRAMEWORKS),
                    )
                    for k in hop_k
                ),
                Config(
                    f"K={hop_k[-2]} inline",
                    {
                        "frames": pick(20000, 300),
                        "warmup_frames": pick(2000, 50),
                        "k": hop_k[-2],
                        "inline": True,
                        "buffer": 64,
                    },
                    ("rustvani",),
                ),
            ],
            reps=pick(3, 1),
            metrics={
                "us_per_frame": "µs per frame, end to end",
                "frames_per_s": "frames per second",
            },
        ),
        Scenario(
            "interrupt",
            "Interruption",
            f"Tokens paced at 5 ms, interrupted {pick(200, 50)} ms in (frameworks: "
            f"InterruptionFrame queued to the task, K={pick(5, 1)} pass-through processors; raw "
            "clients: the stream's task/scope is cancelled).",
            [
                Config(
                    f"K={pick(5, 1)}",
                    {
                        "tokens": pick(1000, 100),
                        "token_delay": 0.005,
                        "interrupt_after": pick(0.2, 0.05),
                        "settle": pick(0.3, 0.1),
                        "k": pick(5, 1),
                        "turns": 1,
                    },
                    LLM4,
                )
            ],
            reps=pick(24, 1),  # (noisy: the server's noticing varies more than this)
            metrics={
                "stop_ms": "ms from the interruption to the last text frame at the sink",
                "interrupt_at_sink_ms": "ms until the InterruptionFrame reached the sink",
                "disconnect_ms": "ms until the server saw the client disconnect",
                "leaked_frames": "text frames at the sink after the InterruptionFrame (must be 0)",
                "frames_before": "text frames at the sink before the interruption",
            },
        ),
        Scenario(
            "tool",
            "Tool round trip",
            f"One tool call, a trivial handler, a {pick(20, 5)}-token second answer "
            "(frameworks: with their assistant aggregator, which pipecat needs to re-invoke).",
            [
                Config(
                    "1 call",
                    {
                        "tokens": pick(20, 5),
                        "token_delay": 0.0,
                        "turns": pick(5, 1),
                        "tool_call": {"name": "get_time", "arguments": "{}"},
                        # What every contestant sends: the frameworks build it from their
                        # registered function; the raw clients send this.
                        "tools": [GET_TIME_TOOL],
                    },
                    LLM4,
                ),
                # The same round with a real query through the Postgres tool (see
                # benchmarks/contestants/_pg_tool.py): rustvani-trio only.
                Config(
                    "1 pg_query",
                    {
                        "tokens": pick(20, 5),
                        "token_delay": 0.0,
                        "turns": pick(5, 1),
                        "tool_call": PG_TOOL_CALL,
                        "postgres": True,
                    },
                    ("rustvani",),
                ),
            ],
            reps=pick(24, 1),  # (noisy on a shared machine at 6)
            metrics={
                "total_ms": "ms from the user turn to the answer's last text frame",
                "ttft_answer_ms": "ms from the user turn to the answer's first text frame",
                "cpu_ms": "the client process's CPU time for the turn, ms",
            },
        ),
        Scenario(
            "concurrency",
            "Concurrency",
            f"N conversations at once in one process, {pick(50, 5)} tokens paced at "
            f"{pick(20, 5)} ms (frameworks: one pipeline per conversation, started and ended "
            "inside the measurement).",
            [
                Config(
                    f"N={n}",
                    {"conversations": n, "tokens": pick(50, 5), "token_delay": pick(0.02, 0.005)},
                    LLM4,
                )
                for n in conv
            ],
            reps=pick(3, 1),
            metrics={
                "cpu_ms_per_conv": "process CPU ms per conversation",
                "itd_p95_ms": "p95 inter-token delay at the sinks, ms",
                "itd_median_ms": "median inter-token delay at the sinks, ms",
                "peak_rss_mb": "peak RSS growth, MiB",
                "wall_s": "wall time of the whole batch, s",
            },
        ),
        Scenario(
            "slowsink",
            "Slow sink",
            f"The server bursts {pick(5000, 200)} tokens; the sink takes {pick(5, 1)} ms per "
            f"frame. Measured over a {pick(3.0, 0.3)} s window: a bounded pipeline stops "
            "reading the socket, an unbounded one buffers the whole answer.",
            [
                Config(
                    "burst→slow",
                    {
                        "tokens": pick(5000, 200),
                        "token_delay": 0.0,
                        "sink_delay": pick(0.005, 0.001),
                        "window": pick(3.0, 0.3),
                        "sample_every": pick(0.01, 0.01),
                    },
                    ("httpx", *FRAMEWORKS),
                )
            ],
            reps=pick(2, 1),
            metrics={
                "peak_rss_mb": "peak RSS growth over the window, MiB",
                "max_backlog_frames": "most text frames between the LLM and the sink",
                "frames_at_sink": "text frames the sink consumed in the window",
            },
            timeout=60.0,
        ),
        Scenario(
            "voice",
            "Voice-agent token path",
            "user aggregator -> LLM -> text filter -> sentence aggregator -> fake TTS (each "
            "sentence becomes 20 ms audio frames) -> output sink -> assistant aggregator, one "
            "user message per turn; the filter and the sentence aggregator are inline "
            "processors in rustvani-trio ('lanes': processors with lanes), pipecat "
            "FrameProcessors in pipecat; the raw client does the same work in its callback.",
            [
                Config(
                    "burst",
                    {"tokens": pick(200, 24), "token_delay": 0.0, "turns": pick(5, 1)},
                    ("httpx", *FRAMEWORKS),
                ),
                Config(
                    "burst lanes",
                    {
                        "tokens": pick(200, 24),
                        "token_delay": 0.0,
                        "turns": pick(5, 1),
                        "inline": False,
                    },
                    ("rustvani",),
                ),
                Config(
                    "paced 2 ms",
                    {"tokens": pick(100, 24), "token_delay": 0.002, "turns": pick(3, 1)},
                    ("httpx", *FRAMEWORKS),
                ),
            ],
            reps=pick(6, 1),
            metrics={
                "cpu_us_per_token": "the client process's CPU time per token, µs",
                "ttfa_ms": "ms from the user message to the first audio frame at the sink",
                "total_ms": "ms from the user message to the last audio frame at the sink",
                "audio_frames": "audio frames at the sink per turn (the same for all)",
            },
        ),
    ]
