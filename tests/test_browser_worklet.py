"""The chat page's microphone worklet (``static/mic-worklet.js``) run by Node.js with a stand-in
for the AudioWorklet globals: whatever the device's rate, it sends 16 kHz PCM in 20 ms frames,
keeps a tone's level and frequency, and filters out what 16 kHz cannot hold (no aliasing)."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

WORKLET = Path(__file__).resolve().parents[1] / "rustvani_trio/server/static/mic-worklet.js"

HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const [file, rateIn, freq, seconds] = process.argv.slice(1).map((v, i) => (i ? +v : v));
const posted = [];
let Processor = null;
const sandbox = {
  sampleRate: rateIn, Math, Float32Array, Int16Array,
  AudioWorkletProcessor: class {
    constructor() { this.port = { postMessage: (buf) => posted.push(new Int16Array(buf)) }; }
  },
  registerProcessor: (name, cls) => { Processor = cls; },
};
vm.runInNewContext(fs.readFileSync(file, "utf8"), sandbox);
const node = new Processor({ processorOptions: { targetRate: 16000, frameMs: 20 } });
const total = Math.round(rateIn * seconds);
for (let at = 0; at < total; at += 128) {
  const block = new Float32Array(128);
  for (let i = 0; i < 128; i++) block[i] = 0.5 * Math.sin((2 * Math.PI * freq * (at + i)) / rateIn);
  node.process([[block, block]]);  // stereo in: mixed to mono
}
const samples = [];
for (const frame of posted) samples.push(...frame);
process.stdout.write(JSON.stringify({ frames: posted.map((f) => f.length), samples }));
"""


def capture(rate: int, freq: float, seconds: float = 0.5) -> tuple[list[int], list[int]]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js is missing in CI (tests/setup.sh installs it)")
        pytest.skip("needs Node.js")
    out = subprocess.run(
        [node, "-e", HARNESS, str(WORKLET), str(rate), str(freq), str(seconds)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    )
    result = json.loads(out.stdout)
    return result["frames"], result["samples"]


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000, 96000])
def test_a_tone_keeps_its_level_and_frequency(rate: int) -> None:
    frames, samples = capture(rate, 1000.0)
    assert set(frames) == {320}  # 20 ms at 16 kHz
    assert abs(len(samples) - 0.5 * 16000) <= 2 * 320  # all but the last partial frame
    steady = samples[200:]  # past the filter's start
    level_db = 20 * math.log10(rms(steady) / (0.5 / math.sqrt(2)))
    assert abs(level_db) < 0.2
    crossings = sum(1 for a, b in itertools.pairwise(steady) if a < 0 <= b)
    assert crossings == pytest.approx(1000 * len(steady) / 16000, abs=2)


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
def test_what_16k_cannot_hold_is_filtered_out(rate: int) -> None:
    _, samples = capture(rate, 8500.0)  # above the new Nyquist frequency (8 kHz)
    level_db = 20 * math.log10(max(rms(samples[200:]), 1e-9) / (0.5 / math.sqrt(2)))
    assert level_db < -35  # not folded back down as an audible 7.5 kHz alias
