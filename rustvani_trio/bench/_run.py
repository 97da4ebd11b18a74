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
from ._load import LevelRun, Session, run_level
from ._progress import Progress
from ._records import Redactor, redact_url
from ._report import build_report
from ._scripted import open_instant_endpoint, open_scripted_endpoint
from ._wire import StreamLimits, WireLog, WireTap

__all__ = ["run_bench"]


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


async def _overhead(session: Session) -> list[LevelRun]:
    config = session.config
    quiet = attrs.evolve(config, tools=False, interrupt_after_ms=None)
    plain = attrs.evolve(session, config=quiet)
    runs = []
    async with open_instant_endpoint(config.max_tokens) as url:
        for users in _overhead_levels(config):
            runs.append(
                await run_level(
                    plain,
                    url,
                    Level("concurrency", float(users)),
                    key=f"overhead-c{users}",
                    count=max(config.overhead_requests, 2 * users),
                    duration=None,
                    warmup=max(2, users),
                    label=f"overhead c={users}",
                )
            )
    return runs


async def run_bench(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark ``config`` describes and return the report (see ``docs/bench.md``).

    With ``base_url="scripted"`` the scripted server runs in this trio run. The API key is
    used for the requests only: it is in no part of the report, and it is removed from every
    error message the report keeps.
    """
    redact = Redactor.of([config.api_key, *_url_secrets(config.base_url)])
    progress = progress or Progress(None)
    with _redacted_logs(redact):
        return await _run(config, redact, progress, command)


async def _run(
    config: BenchConfig,
    redact: Redactor,
    progress: Progress,
    command: Sequence[str] | None,
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        base_url = config.base_url
        endpoint = redact_url(base_url)
        if config.scripted:
            base_url = await stack.enter_async_context(
                open_scripted_endpoint(
                    first_token_ms=config.scripted_first_token_ms,
                    token_interval_ms=config.scripted_token_interval_ms,
                    error_rate=config.scripted_error_rate,
                    seed=config.seed,
                )
            )
            endpoint = (
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
            overhead = await _overhead(session) if config.overhead else []
            runs = []
            for number, level in enumerate(config.levels()):
                runs.append(
                    await run_level(
                        session,
                        base_url,
                        level,
                        key=f"L{number}",
                        count=config.requests,
                        duration=config.duration,
                        warmup=config.warmup_for(level),
                    )
                )
            nursery.cancel_scope.cancel()
    return build_report(config, runs, overhead, endpoint=endpoint, command=command)
