"""The web call's audio thread resampling to and from 8 kHz (a browser, such as Firefox,
whose 8 kHz context cannot take the microphone): no aliasing in, no images out, and
exactly 8000 samples a second each way.

The worklet runs under Node with a stand-in for ``AudioWorkletGlobalScope`` (the base
class, ``registerProcessor``, ``sampleRate``); no browser, no server. Node is required:
the test fails, never skips, without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from serve.console import STATIC_DIR

WORKLET = STATIC_DIR / "js" / "webcall" / "worklet.js"

# Reads {rate, seconds, tones, played} on stdin; answers with what came out of the worklet.
# `gain`: each tone's RMS through the capture, in dB of its input's; `images`: for a
# 1 kHz tone played, each image's level (m*8 kHz +- 1 kHz) in dB of the tone's own, and
# `tone` its level in dB of what was queued; `rate`: 8 kHz samples taken and played per
# second of context time.
MEASURE = r"""
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const source = require("fs").readFileSync(input.worklet, "utf8");
function load(rate) {
  const posted = [];
  let Processor;
  const scope = {
    AudioWorkletProcessor: class {
      constructor() { this.port = { postMessage: (m) => posted.push(m) }; }
    },
    registerProcessor: (name, cls) => { Processor = cls; },
    sampleRate: rate,
  };
  new Function(...Object.keys(scope), source)(...Object.values(scope));
  return { processor: new Processor(), posted };
}
// A tone's amplitude at `f` (Hann-windowed, so neighbours do not leak into it).
function amplitude(x, f, rate) {
  let re = 0, im = 0, sum = 0;
  for (let n = 0; n < x.length; n += 1) {
    const w = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / x.length);
    sum += w;
    re += w * x[n] * Math.cos((2 * Math.PI * f * n) / rate);
    im -= w * x[n] * Math.sin((2 * Math.PI * f * n) / rate);
  }
  return (2 * Math.hypot(re, im)) / sum;
}
const db = (ratio) => 20 * Math.log10(ratio);
const rms = (x) => Math.sqrt(x.reduce((e, v) => e + v * v, 0) / x.length);
const { rate, seconds } = input;
const quanta = Math.round((rate * seconds) / 128);
const gain = {};
for (const tone of input.tones) {
  const { processor, posted } = load(rate);
  let n = 0;
  for (let q = 0; q < quanta; q += 1) {
    const block = new Float32Array(128);
    for (let i = 0; i < 128; i += 1, n += 1) {
      block[i] = 0.5 * Math.sin((2 * Math.PI * tone * n) / rate);
    }
    processor.process([[block]], [[new Float32Array(128)]]);
  }
  const out = posted.filter((m) => m.type === "frame").flatMap((m) => Array.from(m.samples));
  gain[tone] = db(rms(out.slice(800)) / (0.5 / Math.SQRT2)); // past the filter's start
}
const { processor } = load(rate);
const played = new Float32Array(8000 * (seconds + 1));
for (let n = 0; n < played.length; n += 1) {
  played[n] = 0.5 * Math.sin((2 * Math.PI * 1000 * n) / 8000);
}
processor.command({ type: "play", samples: played });
const out = [];
for (let q = 0; q < quanta; q += 1) {
  const block = new Float32Array(128);
  processor.process([], [[block]]);
  out.push(...block);
}
const heard = out.slice(rate / 100);
const level = amplitude(heard, 1000, rate);
const images = {};
for (let m = 1; m * 8000 - 1000 < rate / 2; m += 1) {
  for (const f of [m * 8000 - 1000, m * 8000 + 1000]) {
    if (f < rate / 2) images[f] = db(amplitude(heard, f, rate) / level);
  }
}
// Timing: a minute of silence each way.
const minute = Math.round((rate * 60) / 128);
const taker = load(rate);
for (let q = 0; q < minute; q += 1) {
  taker.processor.process([[new Float32Array(128)]], [[new Float32Array(128)]]);
}
const taken = taker.posted.filter((m) => m.type === "frame").length * 160 + taker.processor.filled;
const player = load(rate).processor;
player.command({ type: "play", samples: new Float32Array(8000 * 61) });
for (let q = 0; q < minute; q += 1) player.process([], [[new Float32Array(128)]]);
const elapsed = (minute * 128) / rate;
process.stdout.write(JSON.stringify({
  gain, tone: db(level / 0.5), images,
  rate: { taken: taken / elapsed, played: player.queue[0].at / elapsed },
}));
"""


def measure(rate: int, tones: list[int], seconds: int = 1) -> dict[str, Any]:
    node = shutil.which("node") or "/usr/bin/node"
    if not shutil.which(node):
        pytest.fail("Node.js runs the worklet here: apt-get install -y nodejs", pytrace=False)
    job = {"worklet": str(WORKLET), "rate": rate, "seconds": seconds, "tones": tones}
    done = subprocess.run(
        [node, "-e", MEASURE], input=json.dumps(job), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_the_microphone_is_low_passed_before_it_is_taken_to_8_khz(rate: int) -> None:
    """A 5 kHz tone would fold to 3 kHz at full strength: it is filtered out first, while
    speech frequencies pass."""
    gain = measure(rate, [1000, 3000, 5000, 6000])["gain"]
    assert abs(gain["1000"]) < 1
    assert abs(gain["3000"]) < 1
    assert gain["5000"] < -30
    assert gain["6000"] < -30


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_the_agent_s_audio_is_interpolated_without_images(rate: int) -> None:
    """Repeating each 8 kHz sample would also play a 1 kHz tone at 7 and 9 kHz (and
    around every multiple of 8 kHz)."""
    got = measure(rate, [])
    assert abs(got["tone"]) < 1
    assert set(got["images"]) >= {"7000", "9000", "15000", "17000"}
    assert all(level < -30 for level in got["images"].values()), got["images"]


@pytest.mark.parametrize("rate", [8000, 22_050, 44_100, 48_000, 96_000])
def test_exactly_8000_samples_a_second_go_each_way(rate: int) -> None:
    timing = measure(rate, [], seconds=0)["rate"]
    assert abs(timing["taken"] - 8000) < 0.05
    assert abs(timing["played"] - 8000) < 0.05
