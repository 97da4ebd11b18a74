"""The chat page against hostile text: markup in a model's answer, a tool's result, an error
and a flow node's name is shown as text, never run (the page builds its DOM with textContent
only, and its Content-Security-Policy forbids inline script besides). In Debian's chromium,
like tests/test_browser.py (skipped where it or playwright is missing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from test_browser import ARGS, CHROMIUM, ServerProcess, chat_ready, playwright_api, say

from rustvani_trio.frames import (
    DataFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallRawResult,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    TranscriptionFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.task import PipelineTask

IMG = '<img src=x onerror="window.__xss=(window.__xss||0)+1">'
SCRIPT = "<script>window.__xss=(window.__xss||0)+1</script>"


@attrs.frozen(kw_only=True)
class DharaNodeChanged(DataFrame):
    previous: str | None
    current: str
    reason: str = "test"


class Hostile(FrameProcessor):
    """Answers every message with markup everywhere the page shows server text."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, TranscriptionFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStart())
        await self.push_frame(LLMText(text=f"answer {IMG} {SCRIPT}"))
        await self.push_frame(LLMFullResponseEnd())
        raw = {IMG: SCRIPT, "city": IMG}
        await self.push_frame(FunctionCallRawResult(tool_call_id="c1", function_name=IMG, raw=raw))
        await self.push_frame(DharaNodeChanged(previous=SCRIPT, current=IMG))
        await self.push_frame(ErrorFrame(error=f"failed: {IMG}"), FrameDirection.UPSTREAM)


async def hostile_factory(session: Any) -> PipelineTask:
    return PipelineTask(Pipeline([session.input(), Hostile(), session.output()]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def test_markup_from_the_server_is_shown_as_text(browser: Any) -> None:
    server = ServerProcess("--factory", "test_browser_hostile:hostile_factory")
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security" in msg.text else None,
    )
    try:
        chat_ready(page, server.url + "/")  # the page works under its CSP
        say(page, "hello")
        page.wait_for_selector("[data-testid=error]", timeout=10000)
        page.wait_for_selector("[data-testid=node-change]", timeout=10000)
        page.wait_for_selector("[data-testid=tool-card] dd", timeout=10000)
        page.wait_for_timeout(300)  # an onerror would have fired by now
        assert page.evaluate("window.__xss") is None
        assert page.locator("#log img, #log script, header img").count() == 0
        assert IMG in page.locator("[data-testid=bot-message]").last.inner_text()
        assert IMG in page.locator("[data-testid=error]").last.inner_text()
        card = page.locator("[data-testid=tool-card]").last.inner_text()
        assert IMG in card and SCRIPT in card
        assert page.locator("[data-testid=node]").inner_text() == f"node: {IMG}"
        assert violations == []  # nothing the page itself does is blocked
    finally:
        context.close()
        server.stop()


def test_the_policy_blocks_inline_script(browser: Any) -> None:
    server = ServerProcess()
    context = browser.new_context()
    page = context.new_page()
    try:
        chat_ready(page, server.url + "/")
        # What an injection would amount to: inline script in the page does not run.
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__inline = 1'; document.body.append(s); }"
        )
        assert page.evaluate("window.__inline") is None
    finally:
        context.close()
        server.stop()
