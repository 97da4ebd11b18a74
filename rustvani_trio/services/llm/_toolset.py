"""The built-in tools of one processor run: started, stopped and cancelled, each bounded.

Cacheable tools start together on StartFrame; a tool that is not running when one of its
functions is called (non-cacheable, added later, or whose start failed) starts before that call,
once even for parallel calls. Every hook runs under a time limit, and a failure or an overrun is
reported upstream naming the tool; the other tools go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..._text import describe, excerpt
from ...frames import ErrorFrame, FrameDirection
from ...processor import FrameProcessor
from ...tools.base import BuiltinTool

__all__ = ["Toolset"]

logger = logging.getLogger("rustvani_trio")


class Toolset:
    """Which of ``tools`` are running in ``host``'s current run, and their lifecycle hooks.

    ``tools`` is the handler's live sequence: a tool added during the run is seen at its first
    call.
    """

    def __init__(self, host: FrameProcessor, tools: Callable[[], Sequence[BuiltinTool]]) -> None:
        self._host = host
        self._tools = tools
        self._started: list[BuiltinTool] = []
        self._start_locks: dict[str, trio.Lock] = {}

    async def start_cacheable(self, limit: float) -> None:
        """Start every cacheable tool, concurrently, each under ``limit``."""
        cacheable = [t for t in self._tools() if t.is_cacheable]
        if cacheable:
            async with trio.open_nursery() as nursery:
                for tool in cacheable:
                    nursery.start_soon(self._start, tool, limit)

    async def _start(self, tool: BuiltinTool, limit: float) -> None:
        if await self._run_hook(tool, tool.on_start, limit, "start"):
            self._started.append(tool)

    async def ensure_started(self, function_name: str, limit: float) -> None:
        """Start, before its first call, the tool offering ``function_name`` if it is not
        running. Raises (``trio.TooSlowError`` past ``limit``, or the hook's exception) so that
        the call fails with it."""
        for tool in self._tools():
            if tool in self._started:
                continue
            if any(s.name == function_name for s in tool.tool_schemas()):
                async with self._start_locks.setdefault(tool.name, trio.Lock()):
                    if tool not in self._started:
                        with trio.fail_after(limit):
                            await tool.on_start()
                        self._started.append(tool)

    async def stop_all(self, limit: float) -> None:
        """Run ``on_stop`` of every started tool, concurrently, each under ``limit``."""
        tools, self._started = self._started, []
        async with trio.open_nursery() as nursery:
            for tool in tools:
                nursery.start_soon(self._run_hook, tool, tool.on_stop, limit, "stop")

    async def cancel_all(self, limit: float) -> None:
        """Run ``on_cancel`` of every started tool, concurrently, all within ``limit``."""
        tools, self._started = self._started, []
        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                for tool in tools:
                    nursery.start_soon(self._cancel, tool)

    async def _cancel(self, tool: BuiltinTool) -> None:
        try:
            await tool.on_cancel()
        except Exception as exc:
            host = self._host
            # Logged too: after a run cancelled from outside nobody reads the ErrorFrame.
            logger.warning(
                "%s: tool %r on_cancel failed: %s",
                host.name,
                tool.name,
                excerpt(str(exc), 1000),
                exc_info=exc,
            )
            host.push_frame_nowait(
                ErrorFrame(
                    error=f"tool {tool.name!r} on_cancel failed: {describe(exc)}",
                    processor=host.name,
                    exception=exc,
                ),
                FrameDirection.UPSTREAM,
            )

    async def _run_hook(
        self, tool: BuiltinTool, hook: Callable[[], Awaitable[None]], limit: float, what: str
    ) -> bool:
        """Run a tool's lifecycle hook under ``limit``; report a failure or an overrun."""
        with trio.move_on_after(limit) as scope:
            try:
                await hook()
            except Exception as exc:
                await self._host.push_error(
                    f"tool {tool.name!r} failed to {what}: {describe(exc)}",
                    exception=exc,
                )
                return False
        if scope.cancelled_caught:
            await self._host.push_error(f"tool {tool.name!r} did not {what} within {limit:g}s")
            return False
        return True
