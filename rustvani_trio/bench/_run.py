"""``run_bench``: the whole run (overhead levels, then the load levels) as one report."""

from __future__ import annotations

import base64
import contextlib
import logging
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx
import trio

from ._config import BenchConfig, Level
from ._levels import LevelRun, run_level
from ._load import Session
from ._progress import Progress
from ._records import Redactor, redact_url
from ._report import build_report
from ._scripted import open_instant_endpoint, open_scripted_endpoint
from ._wire import StreamLimits, WireLog, WireTap

__all__ = ["run_bench"]

_TEARDOWN = 5.0  # after a stop: the longest wait for connections and servers to close


class _RedactingFilter(logging.Filter):
    """Removes the run's secrets from log records (httpx logs each request's URL, with any
    password it holds, at INFO)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


@contextlib.contextmanager
def _redacted_logs(redact: Redactor) -> Iterator[None]:
    if not redact.secrets:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("httpx", "rustvani_trio")]
    log_filter = _RedactingFilter(redact)
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)


def _limits(config: BenchConfig) -> httpx.Limits:
    if config.rate:
        return httpx.Limits(max_connections=None, max_keepalive_connections=64)
    most = max(config.concurrency) + 4
    return httpx.Limits(max_connections=most, max_keepalive_connections=most)


def _url_secrets(url: str) -> list[str]:
    """A URL's password, and the Basic credentials httpx makes of its user info."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    if parts.password is None:
        return []
    password = urllib.parse.unquote(parts.password)
    userinfo = f"{urllib.parse.unquote(parts.username or '')}:{password}"
    # As written in the URL, as decoded (a server may echo either), and as Basic credentials.
    return [parts.password, password, base64.b64encode(userinfo.encode()).decode("ascii")]


def _overhead_levels(config: BenchConfig) -> list[int]:
    levels = [1]
    if not config.rate and max(config.concurrency) > 1:
        levels.append(max(config.concurrency))
    return levels


async def _overhead(session: Session, runs: list[LevelRun]) -> None:
    config = session.config
    quiet = attrs.evolve(config, tools=False, interrupt_after_ms=None)
    plain = attrs.evolve(session, config=quiet)
    async with open_instant_endpoint(config.max_tokens) as url:
        for users in _overhead_levels(config):
            level = Level("concurrency", float(users))
            run = LevelRun(level, key=f"overhead-c{users}", label=f"overhead c={users}")
            runs.append(run)
            count = max(config.overhead_requests, 2 * users)
            await run_level(plain, url, run, count=count, duration=None, warmup=max(2, users))


async def run_bench(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    command: Sequence[str] | None = None,
    stop: trio.Event | None = None,
) -> dict[str, Any]:
    """Run the benchmark ``config`` describes and return the report (see ``docs/bench.md``).

    With ``base_url="scripted"`` the scripted server runs in this trio run. The API key is
    used for the requests only: it is in no part of the report, and it is removed from every
    error message the report keeps.

    Setting ``stop`` ends the run early: the requests in flight are cancelled (and left out
    of the figures, counted as aborted), the measured span of the current level ends there,
    and the report of what was measured comes back marked ``partial``. Closing the
    connections and servers after a stop is bounded by a few seconds.
    """
    redact = Redactor.of([config.api_key, *_url_secrets(config.base_url)])
    progress = progress or Progress(None)
    stop = trio.Event() if stop is None else stop
    runs: list[LevelRun] = []
    overhead: list[LevelRun] = []
    endpoint = [redact_url(config.base_url)]
    stopped_at: float | None = None
    with _redacted_logs(redact), trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal stopped_at
                await stop.wait()
                stopped_at = trio.current_time()
                for run in (*overhead, *runs):
                    run.stop(stopped_at)
                measuring.cancel()
                everything.deadline = stopped_at + _TEARDOWN

            measuring = trio.CancelScope()  # around the levels only: teardown stays outside
            nursery.start_soon(watch)
            await _run(config, redact, progress, measuring, runs, overhead, endpoint)
            nursery.cancel_scope.cancel()
    started = [r for r in runs if r.measuring_began]
    report = build_report(
        config,
        started,
        [r for r in overhead if r.measuring_began],
        endpoint=endpoint[0],
        command=command,
    )
    if stopped_at is not None:
        current = None
        for run in (*overhead, *runs):
            if run.end is None or run.end == stopped_at:  # the level that was running
                current = run.label if run.measuring_began else f"{run.label} warm-up"
        report["partial"] = {
            "reason": "the run was stopped before it was complete",
            "during": current,
            "levels_done": sum(1 for r in started if r.end != stopped_at),
            "levels_planned": len(config.levels()),
        }
    return report


async def _run(
    config: BenchConfig,
    redact: Redactor,
    progress: Progress,
    measuring: trio.CancelScope,
    runs: list[LevelRun],
    overhead: list[LevelRun],
    endpoint: list[str],
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        base_url = config.base_url
        if config.scripted:
            base_url = await stack.enter_async_context(
                open_scripted_endpoint(
                    first_token_ms=config.scripted_first_token_ms,
                    token_interval_ms=config.scripted_token_interval_ms,
                    error_rate=config.scripted_error_rate,
                    seed=config.seed,
                )
            )
            endpoint[0] = (
                f"the scripted server (in-process; first token after "
                f"{config.scripted_first_token_ms:g} ms, then one every "
                f"{config.scripted_token_interval_ms:g} ms"
                + (
                    f"; {config.scripted_error_rate:.0%} of requests fail"
                    if config.scripted_error_rate
                    else ""
                )
                + ")"
            )
        wire = WireLog()
        limits = StreamLimits.for_tokens(config.output_limit, max_line_bytes=config.max_line_bytes)
        inner = httpx.AsyncHTTPTransport(limits=_limits(config), retries=0)
        transport = WireTap(inner, wire, limits)
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(
                    connect=config.connect_timeout,
                    read=None,  # first token / next chunk: bounded by the bench's own scopes
                    write=config.connect_timeout,
                    pool=None,
                ),
            )
        )
        session = Session(config, client, wire, redact, progress)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress.run)
            with measuring:
                await _levels(session, base_url, runs, overhead)
            nursery.cancel_scope.cancel()


async def _levels(
    session: Session, base_url: str, runs: list[LevelRun], overhead: list[LevelRun]
) -> None:
    """The overhead levels, then the load levels, each appended before it runs."""
    config = session.config
    if config.overhead:
        await _overhead(session, overhead)
    for number, level in enumerate(config.levels()):
        run = LevelRun(level, key=f"L{number}", label=level.label)
        runs.append(run)
        warmup = config.warmup_for(level)
        await run_level(
            session, base_url, run, count=config.requests, duration=config.duration, warmup=warmup
        )
