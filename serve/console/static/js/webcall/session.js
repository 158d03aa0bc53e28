// A web call: the browser's microphone and speakers on the same media path as
// a phone call. The server gives a media URL, a call SID and a one-time
// stream token; the page then behaves exactly like Twilio's side of a Media
// Streams socket (protocol.js), with the audio thread (worklet.js) doing the
// 20 ms framing, the playout and the mark timing.

import { decode, encode, fromBase64, toBase64 } from "./mulaw.js";
import { MediaStreamsClient } from "./protocol.js";

const WORKLET_URL = new URL("./worklet.js", import.meta.url);

/**
 * The media URL on this page's own origin. The console is served through the same
 * edge as the media path, and its CSP allows connections to 'self' only, whatever
 * host PUBLIC_URL names (a tunnel's, while the page was opened at 127.0.0.1).
 */
function onThisOrigin(mediaUrl) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${new URL(mediaUrl).pathname}`;
}

export class WebCall {
  /**
   * @param {{mediaUrl: string, callSid: string, streamToken: string,
   *          onState?: (state: string, detail?: string) => void,
   *          onLevels?: (levels: {caller: number, agent: number}) => void}} options
   * States: "starting", "live", "ended" (detail says why), "failed" (detail says why).
   */
  constructor({ mediaUrl, callSid, streamToken, onState = () => {}, onLevels = () => {} }) {
    this.mediaUrl = mediaUrl;
    this.callSid = callSid;
    this.streamToken = streamToken;
    this.onState = onState;
    this.onLevels = onLevels;
    this.muted = false;
    this.state = "idle";
    this.stats = { framesSent: 0, framesReceived: 0, marksEchoed: 0, clears: 0 };
  }

  #set(state, detail = "") {
    if (this.state === "ended" || this.state === "failed") return;
    this.state = state;
    this.onState(state, detail);
  }

  async start() {
    this.#set("starting");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (failure) {
      this.#set("failed", `The microphone is not available: ${failure.message}`);
      return;
    }
    try {
      if (this.#over()) return; // hung up while the browser asked for the microphone
      await this.#connectAudio();
      if (this.#over()) return;
      this.#openSocket();
    } catch (failure) {
      this.#release();
      this.#set("failed", `The web call could not start: ${failure.message}`);
    }
  }

  /** Hung up (or failed) meanwhile: let go of what was taken so far. */
  #over() {
    if (this.state !== "ended" && this.state !== "failed") return false;
    this.#release();
    return true;
  }

  async #connectAudio() {
    // 8 kHz spares the worklet resampling; a browser that cannot mix a microphone into
    // such a context (Firefox) gets one at its own rate, and the worklet resamples.
    for (const options of [{ sampleRate: 8000 }, {}]) {
      this.#releaseAudio();
      let context;
      try {
        context = new AudioContext({ ...options, latencyHint: "interactive" });
      } catch {
        continue;
      }
      this.context = context;
      try {
        const source = context.createMediaStreamSource(this.stream);
        await context.audioWorklet.addModule(WORKLET_URL);
        this.node = new AudioWorkletNode(context, "switchboard-media", {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          outputChannelCount: [1],
        });
        source.connect(this.node);
      } catch (failure) {
        if (options.sampleRate === undefined) throw failure;
        continue;
      }
      this.node.connect(context.destination);
      this.node.port.onmessage = (event) => this.#fromAudio(event.data);
      await context.resume();
      return;
    }
    throw new Error("no audio context could take the microphone");
  }

  #openSocket() {
    // The one-time token is checked at the handshake too: a browser cannot sign it.
    const socket = new WebSocket(onThisOrigin(this.mediaUrl), [`token.${this.streamToken}`]);
    this.socket = socket;
    this.protocol = new MediaStreamsClient({
      callSid: this.callSid,
      token: this.streamToken,
      send: (text) => socket.readyState === WebSocket.OPEN && socket.send(text),
    });
    socket.addEventListener("open", () => {
      if (this.state === "ended" || this.state === "failed") {
        socket.close(1000, "caller hung up"); // hung up while it connected: never start
        return;
      }
      this.protocol.open();
      this.#set("live");
    });
    socket.addEventListener("message", (message) => this.#fromServer(message.data));
    socket.addEventListener("close", (closed) => {
      const why = closed.code === 1000 ? "The call ended." : `The media connection closed (${closed.code}${closed.reason ? `: ${closed.reason}` : ""}).`;
      this.#release();
      this.#set(this.state === "starting" ? "failed" : "ended", why);
    });
  }

  #fromAudio(data) {
    switch (data.type) {
      case "frame":
        if (this.state !== "live") return;
        this.protocol.media(toBase64(encode(this.muted ? new Float32Array(data.samples.length) : data.samples)));
        this.stats.framesSent += 1;
        break;
      case "played":
        this.protocol?.mark(data.name);
        this.stats.marksEchoed += 1;
        break;
      case "cleared":
        for (const name of data.marks) this.protocol?.mark(name);
        this.stats.marksEchoed += data.marks.length;
        break;
      case "levels":
        this.onLevels({ caller: this.muted ? -96 : data.input, agent: data.output });
        break;
      default:
        break;
    }
  }

  #fromServer(text) {
    if (typeof text !== "string") return;
    const message = MediaStreamsClient.read(text);
    if (!message || !this.node) return;
    if (message.kind === "media") {
      this.node.port.postMessage({ type: "play", samples: decode(fromBase64(message.payload)) });
      this.stats.framesReceived += 1;
    } else if (message.kind === "mark") {
      this.node.port.postMessage({ type: "mark", name: message.name });
    } else {
      this.node.port.postMessage({ type: "clear" });
      this.stats.clears += 1;
    }
  }

  setMuted(muted) {
    this.muted = muted;
  }

  /**
   * Hang up from the browser: `stop`, as a phone that hangs up sends it, then close
   * and let go of the microphone. `detail` says why, to whoever follows the states.
   */
  hangUp(detail = "You hung up.") {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.protocol.stop();
      this.socket.close(1000, "caller hung up");
    }
    // Still connecting: the open handler closes it (closing now would fail the handshake).
    this.#release();
    this.#set("ended", detail);
  }

  #release() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.#releaseAudio();
  }

  #releaseAudio() {
    this.node?.disconnect();
    if (this.context && this.context.state !== "closed") this.context.close();
    this.node = null;
    this.context = null;
  }
}
