// The audio thread of a web call, at the context's rate (8 kHz when the
// browser allows it, as Chromium does; otherwise linear resampling to and
// from 8 kHz). In: the microphone, cut into 160-sample (20 ms) frames for the
// main thread. Out: the agent's audio, played in order; a mark is reported
// when everything queued before it has played, as a phone does, and a clear
// drops the queue and reports every pending mark at once.

const RATE = 8000;
const FRAME = 160;

class MediaProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = RATE / sampleRate; // 8 kHz samples per context sample
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
    this.inPhase = 0;
    this.queue = []; // {samples, at} or {mark}
    this.outPhase = 0;
    this.levels = { input: 0, output: 0, quanta: 0 };
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(data) {
    if (data.type === "play") this.queue.push({ samples: data.samples, at: 0 });
    else if (data.type === "mark") this.queue.push({ mark: data.name });
    else if (data.type === "clear") {
      const marks = this.queue.filter((item) => item.mark !== undefined).map((item) => item.mark);
      this.queue = [];
      this.port.postMessage({ type: "cleared", marks });
    }
    this.echoReadyMarks();
  }

  echoReadyMarks() {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      this.port.postMessage({ type: "played", name: this.queue.shift().mark });
    }
  }

  capture(input) {
    let energy = 0;
    for (let i = 0; i < input.length; i += 1) {
      energy += input[i] * input[i];
      this.inPhase += this.step;
      while (this.inPhase >= 1) {
        this.inPhase -= 1;
        this.frame[this.filled] = input[i];
        this.filled += 1;
        if (this.filled === FRAME) {
          this.port.postMessage({ type: "frame", samples: this.frame.slice() });
          this.filled = 0;
        }
      }
    }
    return energy / Math.max(1, input.length);
  }

  playout(output) {
    let energy = 0;
    for (let i = 0; i < output.length; i += 1) {
      this.echoReadyMarks();
      const head = this.queue[0];
      if (!head) {
        output[i] = 0;
        continue;
      }
      const value = head.samples[head.at];
      output[i] = value;
      energy += value * value;
      this.outPhase += this.step;
      while (this.outPhase >= 1 && this.queue[0] === head) {
        this.outPhase -= 1;
        head.at += 1;
        if (head.at >= head.samples.length) this.queue.shift();
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
