// The audio thread of a web call, at the context's rate: 8 kHz when the
// browser allows it (Chromium does), otherwise resampled to and from 8 kHz with
// filters, as a plain pick or repeat of samples would alias (a 5 kHz tone
// heard as 3 kHz) and image (a 1 kHz tone also at 7 and 9 kHz). In: the
// microphone, low-passed, cut into 160-sample (20 ms) frames for the main
// thread. Out: the agent's audio, interpolated, played in order; a mark is
// reported when everything queued before it has played, as a phone does, and
// a clear drops the queue and reports every pending mark at once.
//
// Both directions keep time with one phase accumulator (8 kHz samples per
// context sample), so exactly 8000 samples a second go each way.

const RATE = 8000;
const FRAME = 160;
const CUTOFF = 3600; // Hz: the microphone's low-pass, half-way through its transition
const TRANSITION = 1000; // Hz: so it stops from 4.1 kHz, which folds to 3.9 kHz and above
const STOPBAND_DB = 60;
const HALF_WIDTH = 12; // playout kernel: 8 kHz samples each side of the instant played
const PHASES = 512; // playout kernel table entries per 8 kHz sample

const BETA = 0.1102 * (STOPBAND_DB - 8.7); // Kaiser's window for that stopband

/** The modified Bessel function I0, for the Kaiser window. */
function besselI0(x) {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50 && term > 1e-12 * sum; k += 1) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

/** Kaiser's window at `x` in [-1, 1]. */
function kaiser(x) {
  return besselI0(BETA * Math.sqrt(Math.max(0, 1 - x * x))) / besselI0(BETA);
}

function sinc(x) {
  return x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
}

/** A linear-phase low-pass FIR at `rate` (Kaiser-windowed sinc), unity gain at DC. */
function lowPass(rate) {
  const width = (2 * Math.PI * TRANSITION) / rate;
  let count = Math.ceil((STOPBAND_DB - 8) / (2.285 * width)) + 1;
  if (count % 2 === 0) count += 1;
  const middle = (count - 1) / 2;
  const band = (2 * CUTOFF) / rate;
  const taps = new Float32Array(count);
  let sum = 0;
  for (let k = 0; k < count; k += 1) {
    taps[k] = band * sinc(band * (k - middle)) * kaiser((k - middle) / middle);
    sum += taps[k];
  }
  for (let k = 0; k < count; k += 1) taps[k] /= sum;
  return taps;
}

/**
 * The playout kernel over (-half, half) 8 kHz samples, tabulated `PHASES` to a sample:
 * a windowed sinc cut at 4 kHz (it passes 3.4 kHz and stops the images from 4.6 kHz),
 * or for `half` 1 a triangle (at 8 kHz, where no phase falls between samples).
 */
function interpolator(half) {
  const table = new Float32Array(2 * half * PHASES + 1);
  for (let i = 0; i < table.length; i += 1) {
    const t = i / PHASES - half;
    table[i] = half === 1 ? Math.max(0, 1 - Math.abs(t)) : sinc(t) * kaiser(t / half);
  }
  return table;
}

class MediaProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = RATE / sampleRate; // 8 kHz samples per context sample
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
    this.inPhase = 0;
    // Capture: the last taps+1 samples, twice over so a window is always contiguous.
    this.taps = sampleRate > RATE ? lowPass(sampleRate) : Float32Array.of(1);
    this.span = this.taps.length + 1;
    this.heard = new Float32Array(2 * this.span);
    this.heardAt = 0;
    // Playout: the last 2*half 8 kHz samples taken from the queue, twice over likewise.
    this.half = sampleRate === RATE ? 1 : HALF_WIDTH;
    this.kernel = interpolator(this.half);
    this.played = new Float32Array(4 * this.half);
    this.playedAt = 0;
    this.ringing = 2 * this.half; // samples taken since the last of the audio (silent at 2*half)
    this.queue = []; // {samples, at} or {mark}
    this.outPhase = 0;
    this.levels = { input: 0, output: 0, quanta: 0 };
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(data) {
    if (data.type === "play") {
      if (data.samples.length) this.queue.push({ samples: data.samples, at: 0 });
    } else if (data.type === "mark") this.queue.push({ mark: data.name });
    else if (data.type === "clear") {
      const marks = this.queue.filter((item) => item.mark !== undefined).map((item) => item.mark);
      this.queue = [];
      this.played.fill(0); // what was cut stops at once, not a kernel later
      this.ringing = 2 * this.half;
      this.port.postMessage({ type: "cleared", marks });
    }
    this.echoReadyMarks();
  }

  echoReadyMarks() {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      this.port.postMessage({ type: "played", name: this.queue.shift().mark });
    }
  }

  /** The low-passed input `back` samples (0 or 1) before the newest. */
  filtered(back) {
    const taps = this.taps;
    const heard = this.heard;
    const from = this.heardAt + 1 - back;
    let sum = 0;
    for (let k = 0; k < taps.length; k += 1) sum += taps[k] * heard[from + k];
    return sum;
  }

  capture(input) {
    let energy = 0;
    const span = this.span;
    for (let i = 0; i < input.length; i += 1) {
      const x = input[i];
      energy += x * x;
      this.heard[this.heardAt] = x;
      this.heard[this.heardAt + span] = x;
      this.heardAt = this.heardAt + 1 === span ? 0 : this.heardAt + 1;
      this.inPhase += this.step;
      if (this.inPhase < 1) continue;
      const now = this.filtered(0);
      const before = this.filtered(1);
      while (this.inPhase >= 1) {
        this.inPhase -= 1;
        // The 8 kHz instant fell this far (in samples) before this one: interpolate.
        const late = this.inPhase / this.step;
        this.frame[this.filled] = now - late * (now - before);
        this.filled += 1;
        if (this.filled === FRAME) {
          this.port.postMessage({ type: "frame", samples: this.frame.slice() });
          this.filled = 0;
        }
      }
    }
    return energy / Math.max(1, input.length);
  }

  /** Take the next 8 kHz sample from the queue (silence when it has none) into the kernel. */
  take() {
    this.echoReadyMarks();
    const head = this.queue[0];
    let value = 0;
    if (head) {
      value = head.samples[head.at];
      head.at += 1;
      if (head.at >= head.samples.length) this.queue.shift();
      this.ringing = 0;
    } else {
      this.ringing += 1;
    }
    const size = 2 * this.half;
    this.played[this.playedAt] = value;
    this.played[this.playedAt + size] = value;
    this.playedAt = this.playedAt + 1 === size ? 0 : this.playedAt + 1;
  }

  /** The output at `outPhase` past the middle of the samples taken (half of them each side). */
  interpolate() {
    const size = 2 * this.half;
    const position = this.outPhase * PHASES;
    const whole = Math.floor(position);
    const part = position - whole;
    const kernel = this.kernel;
    const played = this.played;
    let sum = 0;
    // played[playedAt + k], oldest first, lies (half - 1 - k + outPhase) samples before now.
    for (let k = 0; k < size; k += 1) {
      const at = (size - 1 - k) * PHASES + whole;
      const weight = kernel[at] + part * (kernel[at + 1] - kernel[at]);
      sum += weight * played[this.playedAt + k];
    }
    return sum;
  }

  playout(output) {
    let energy = 0;
    for (let i = 0; i < output.length; i += 1) {
      this.echoReadyMarks();
      if (!this.queue.length && this.ringing >= 2 * this.half) {
        output[i] = 0; // nothing to play, nor still sounding: time stands still
        continue;
      }
      const value = this.interpolate();
      output[i] = value;
      energy += value * value;
      this.outPhase += this.step;
      while (this.outPhase >= 1) {
        this.outPhase -= 1;
        this.take();
      }
    }
    this.echoReadyMarks();
    return energy / Math.max(1, output.length);
  }

  process(inputs, outputs) {
    const input = inputs[0]?.[0];
    const output = outputs[0]?.[0];
    const inEnergy = input ? this.capture(input) : 0;
    const outEnergy = output ? this.playout(output) : 0;
    for (const channel of outputs[0]?.slice(1) ?? []) channel.set(output);
    const levels = this.levels;
    levels.input = Math.max(levels.input, inEnergy);
    levels.output = Math.max(levels.output, outEnergy);
    levels.quanta += 1;
    if (levels.quanta * 128 >= sampleRate / 10) {
      // Ten times a second: the loudest moment, as dBFS of a full-scale square wave.
      const db = (e) => (e > 0 ? Math.max(-96, 10 * Math.log10(e)) : -96);
      this.port.postMessage({ type: "levels", input: db(levels.input), output: db(levels.output) });
      this.levels = { input: 0, output: 0, quanta: 0 };
    }
    return true;
  }
}

registerProcessor("switchboard-media", MediaProcessor);
