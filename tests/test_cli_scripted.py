"""What the demo scenes share (_cli/_scripted.py): the scripted model with a config that
reaches it, and errors printed as they reach the task."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rustvani_trio import EndFrame, FrameProcessor, Pipeline, PipelineTask, TextFrame
from rustvani_trio._cli import scene_chat
from rustvani_trio._cli._scripted import open_scripted_llm, print_errors
from rustvani_trio.frames import Frame, FrameDirection
from rustvani_trio.testing import RecordedRequest, TextReply


async def test_the_config_reaches_the_scripted_model(capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[RecordedRequest] = []

    def model(request: RecordedRequest) -> TextReply:
        asked.append(request)
        return TextReply(["Hello", " there."])

    async with open_scripted_llm(model) as (server, config):
        assert config.base_url == server.base_url and config.model == "scripted-model"
        with trio.fail_after(20):
            context = await scene_chat._converse(config, ["Hi"], tools=False)
    assert len(asked) == len(server.requests) == 1
    assert context.messages[-1] == {"role": "assistant", "content": "Hello there."}
    assert "assistant> Hello there." in capsys.readouterr().out


class _Complains(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            await self.push_error(f"cannot take {frame.text!r}")
        await self.push_frame(frame, direction)


@pytest.mark.parametrize("prefix", ["\n  ", "  "])
async def test_errors_are_printed_on_stderr_as_they_come(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task = PipelineTask(Pipeline([_Complains(name="picky")]))
    print_errors(task, prefix=prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await task.queue_frames([TextFrame(text="one"), TextFrame(text="two"), EndFrame()])
    captured = capsys.readouterr()
    assert captured.err == (
        f"{prefix}[error from picky: cannot take 'one']\n"
        f"{prefix}[error from picky: cannot take 'two']\n"
    )
    assert captured.out == ""


async def test_the_demo_weather_tool_takes_a_city_or_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pune = await scene_chat.get_weather('{"city": " Pune "}')
    assert (pune.summary, pune.raw) == (
        "Pune: 31 °C, sunny",
        {"city": "Pune", "temp_c": 31, "sky": "sunny"},
    )
    for empty in ("", "{}", '{"city": ""}'):
        assert (await scene_chat.get_weather(empty)).summary == "somewhere: 21 °C, clear"
