"""The chat page and pipecat's own JavaScript client in a real browser (Debian's chromium,
driven by playwright through ``executable_path``: no browser download). One browser for the
module; the servers run as ``serve-chat`` processes, as a user would start them. The browser's
microphone is chromium's fake device playing a recording made with espeak-ng.

Skipped, with the reason, where chromium or the playwright package is missing (``.ci/run``
installs both)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from rustvani_trio.frames import DataFrame, Frame, FrameDirection, TranscriptionFrame
from rustvani_trio.processor import FrameProcessor

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JS_DIR = Path(__file__).with_name("js")
ROOT = Path(__file__).resolve().parents[1]

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it)", allow_module_level=True
    )


# --------------------------------------------------------------------------- a factory


@attrs.frozen(kw_only=True)
class DharaNodeChanged(DataFrame):
    """Shaped like the flow engine's node-change frame."""

    previous: str | None
    current: str
    reason: str = "test"


class NodeSwitch(FrameProcessor):
    """Announces a node change when the user says "next node"."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame) and "next node" in frame.text:
            await self.push_frame(DharaNodeChanged(previous="greeting", current="menu"))
        await self.push_frame(frame, direction)


def open_test_factory() -> Any:
    """The default chat with a NodeSwitch after the transport's input (for serve-chat
    --factory test_browser:open_test_factory)."""
    from rustvani_trio.server.chat import open_chat_factory

    return open_chat_factory(extra=lambda session: [NodeSwitch()])


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OPENAI_API_KEY": ""}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rustvani_trio", "serve-chat", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:
            if "chat server:" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("serve-chat did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess("--factory", "test_browser:open_test_factory")
    yield proc
    proc.stop()


QUESTION = "what is the weather in paris"
BARGE_IN_AFTER = 6.0  # seconds from the question's end to "stop": the bot is answering then


@pytest.fixture(scope="module")
def talk_wav(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """What the fake microphone says: the question, then "stop" while the bot answers it,
    then a long silence (chromium plays the file in a loop). ``None`` without espeak-ng."""
    from rustvani_trio.audio.pcm import silence, write_wav
    from rustvani_trio.testing._speech.audio import espeak_available, speak

    if not espeak_available():
        return None
    pcm = (
        silence(1.0, 16000)
        + speak(QUESTION)
        + silence(BARGE_IN_AFTER, 16000)
        + speak("stop")
        + silence(60.0, 16000)
    )
    path = tmp_path_factory.mktemp("voice") / "talk.wav"
    write_wav(path, pcm, 16000)
    return path


@pytest.fixture(scope="module")
def browser(talk_wav: Path | None) -> Iterator[Any]:
    args = list(ARGS)
    if talk_wav is not None:
        args += [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",  # the microphone permission is granted
            f"--use-file-for-fake-audio-capture={talk_wav}",
            "--autoplay-policy=no-user-gesture-required",
        ]
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 900, "height": 700})
    tab = context.new_page()
    yield tab
    context.close()


def chat_ready(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid=status][data-state=ready]", timeout=10000)


def say(page: Any, text: str) -> None:
    page.fill("[data-testid=input]", text)
    page.click("[data-testid=send]")


# --------------------------------------------------------------------------- the page


def test_the_page_streams_an_answer(page: Any, server: ServerProcess, tmp_path: Path) -> None:
    chat_ready(page, server.url + "/")
    # Every length the answer's bubble had, recorded by the page itself as it changed (polling
    # from here could miss the growth on a loaded machine).
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const bubbles = document.querySelectorAll('[data-testid=bot-message]');
                const last = bubbles[bubbles.length - 1];
                if (last) window.__lengths.push(last.textContent.length);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    say(page, "hello")
    bubble = page.locator("[data-testid=bot-message]").last
    page.wait_for_selector("[data-testid=bot-message]")
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('[data-testid=bot-message]')].pop();"
        " return b && !b.classList.contains('streaming'); }"
    )
    assert "You said: 'hello'" in bubble.inner_text()
    lengths = page.evaluate("() => window.__lengths")
    assert len(set(lengths)) > 2  # it grew token by token, not all at once
    stats = page.locator("[data-testid=stats]")
    assert "TTFB" in stats.inner_text() and "tok/s" in stats.inner_text()
    assert int(stats.get_attribute("data-tokens")) > 5
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert (tmp_path / "chat.png").stat().st_size > 10_000


def test_a_tool_call_shows_as_a_card(page: Any, server: ServerProcess) -> None:
    chat_ready(page, server.url + "/")
    say(page, "What's the weather in Pune?")
    card = page.locator("[data-testid=tool-card]")
    card.wait_for(timeout=10000)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=tool-card] .state').textContent === 'done'"
    )
    text = card.inner_text()
    assert "get_weather" in text and "31" in text and "sunny" in text
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=bot-message]')].some("
        "e => e.textContent.includes('Pune: 31') && !e.classList.contains('streaming'))"
    )


def test_the_interrupt_button_stops_the_stream(page: Any, server: ServerProcess) -> None:
    chat_ready(page, server.url + "/")
    say(page, "tell me a story")
    bubble = page.locator("[data-testid=bot-message]").last
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=bot-message]')?.textContent.length ?? 0) > 20"
    )
    page.click("[data-testid=interrupt]")
    page.wait_for_selector("[data-testid=bot-message].interrupted", timeout=5000)
    stopped_at = bubble.inner_text()
    page.wait_for_timeout(800)  # ten story tokens' worth: none may arrive
    assert bubble.inner_text() == stopped_at
    assert len(stopped_at) < 200  # the story is far longer
    assert page.locator("[data-testid=interrupt]").is_disabled()


def test_node_changes_are_shown(page: Any, server: ServerProcess) -> None:
    chat_ready(page, server.url + "/")
    say(page, "next node please")
    page.wait_for_selector("[data-testid=node-change]", timeout=10000)
    assert page.locator("[data-testid=node]").inner_text() == "node: menu"
    assert "greeting → menu" in page.locator("[data-testid=node-change]").inner_text()


def test_wrong_token_and_reconnect_after_a_drop(browser: Any) -> None:
    first = ServerProcess("--token", "s3cret")
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(first.url + "/")
        notice = page.locator("[data-testid=notice]")
        notice.wait_for(timeout=10000)
        assert "Wrong or missing token" in notice.inner_text()
        chat_ready(page, first.url + "/?token=s3cret")
        assert first.stop() == 0  # graceful: the page is told, then reconnects
        page.wait_for_function(
            "() => document.querySelector('[data-testid=notice]')"
            ".textContent.includes('shutting down')"
        )
        assert page.locator("[data-testid=status]").get_attribute("data-state") == "error"
        second = ServerProcess("--token", "s3cret", port=first.port)
        try:
            page.wait_for_selector("[data-testid=status][data-state=ready]", timeout=15000)
            say(page, "are you back?")
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=bot-message]')].some("
                "e => e.textContent.includes('are you back?'))"
            )
        finally:
            second.stop()
    finally:
        first.stop()
        context.close()


# --------------------------------------------------------------------------- voice


def test_talking_to_the_voice_page(page: Any, talk_wav: Path | None) -> None:
    """serve-chat --voice: the microphone's question is transcribed, the scripted model's
    answer comes back as audio and plays; "stop", said during the answer, interrupts it:
    the page stops playing at once, no audio of the old answer follows, and the bot answers
    the new request aloud."""
    from rustvani_trio.server.voice import missing_engines

    missing = missing_engines()
    if talk_wav is None or missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the offline voice engines are missing in CI: {missing}")
        pytest.skip(f"needs the offline voice engines: {missing or 'espeak-ng'}")
    server = ServerProcess("--voice")
    stats = "window.voice.stats"
    try:
        chat_ready(page, server.url + "/")
        assert "tell me a joke" in page.locator("[data-testid=voice-hint]").inner_text()
        page.click("[data-testid=mic]")  # the fake microphone starts its recording now
        page.wait_for_selector(
            f"[data-testid=user-transcript]:has-text('{QUESTION}')", timeout=60000
        )
        # The answer comes back as audio and plays (chunks played to their end) before the
        # second utterance.
        page.wait_for_function(f"() => {stats}.played >= 5", timeout=60000)
        assert page.evaluate(f"{stats}.interruptions") == 0
        assert page.evaluate(f"{stats}.micFrames") > 50  # 20 ms frames of 16 kHz PCM sent
        # "stop" interrupts the answer: the page silences the bot at once.
        page.wait_for_function(f"() => {stats}.interruptions >= 1", timeout=60000)
        assert page.evaluate("window.voice.playing()") is False
        played_before = page.evaluate(f"{stats}.played")
        bubble = page.locator("[data-testid=bot-message].interrupted").first
        bubble.wait_for(timeout=10000)
        assert bubble.inner_text().startswith("In Paris it is")
        # The second utterance is heard and answered aloud.
        page.wait_for_selector("[data-testid=user-transcript]:has-text('stop')", timeout=60000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=bot-message]')].some("
            "e => e.textContent.includes('Okay, I will stop.'))",
            timeout=60000,
        )
        page.wait_for_function(f"() => {stats}.played > {played_before}", timeout=60000)
        # No audio of the interrupted answer arrived after bot-interrupted.
        assert page.evaluate(f"{stats}.afterInterruption") == 0
    finally:
        server.stop()


# --------------------------------------------------------------------------- pipecat's client


def test_pipecat_js_client_talks_to_our_server(page: Any, server: ServerProcess) -> None:
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("tests/js/node_modules is missing: run `npm ci` in tests/js (.ci/run does)")
    subprocess.run(["npm", "run", "--silent", "bundle"], cwd=JS_DIR, check=True, timeout=120)
    bundle = (JS_DIR / "dist" / "client.bundle.js").read_text()
    page.goto(server.url + "/health")
    page.add_script_tag(content=bundle)
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    result = page.evaluate(
        "([url, text]) => window.runPipecat(url, text)", [ws_url, "hello from pipecat"]
    )
    events = [e[0] for e in result["events"]]
    assert events[0] == "bot-ready", result
    assert "user-transcription" in events and "bot-llm-stopped" in events, result
    assert "error" not in events, result
    assert "hello from pipecat" in result["answer"]
