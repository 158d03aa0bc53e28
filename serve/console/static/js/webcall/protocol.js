// The phone's side of Twilio Media Streams, as the browser speaks it: the
// messages a Twilio call would send (connected, start, 20 ms media frames,
// mark echoes, stop) and the reading of what the server sends back (media,
// mark, clear). Pure: `send` is whatever puts text on the socket.

const HEX = "0123456789abcdef";

function randomHex(n) {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => HEX[b & 15]).join("");
}

export const FRAME_BYTES = 160; // 20 ms of mu-law at 8 kHz

export class MediaStreamsClient {
  /**
   * @param {{callSid: string, accountSid?: string, token: string, send: (text: string) => void}} options
   */
  constructor({ callSid, accountSid = `AC${"0".repeat(32)}`, token, send }) {
    this.callSid = callSid;
    this.accountSid = accountSid;
    this.streamSid = `MZ${randomHex(32)}`;
    this.token = token;
    this.send = send;
    this.sequence = 0;
    this.chunk = 0;
    this.stopped = false;
  }

  #next() {
    this.sequence += 1;
    return String(this.sequence);
  }

  open() {
    this.send(JSON.stringify({ event: "connected", protocol: "Call", version: "1.0.0" }));
    this.send(
      JSON.stringify({
        event: "start",
        sequenceNumber: this.#next(),
        start: {
          accountSid: this.accountSid,
          streamSid: this.streamSid,
          callSid: this.callSid,
          tracks: ["inbound"],
          customParameters: { token: this.token },
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
        },
        streamSid: this.streamSid,
      }),
    );
  }

  /** One frame of caller audio, base64 mu-law. */
  media(payload) {
    if (this.stopped) return;
    this.chunk += 1;
    this.send(
      JSON.stringify({
        event: "media",
        sequenceNumber: this.#next(),
        media: { track: "inbound", chunk: String(this.chunk), timestamp: String((this.chunk - 1) * 20), payload },
        streamSid: this.streamSid,
      }),
    );
  }

  /** Echo a mark: its audio played, or a clear dropped it. */
  mark(name) {
    if (this.stopped) return;
    this.send(JSON.stringify({ event: "mark", sequenceNumber: this.#next(), streamSid: this.streamSid, mark: { name } }));
  }

  stop() {
    if (this.stopped) return;
    this.send(
      JSON.stringify({
        event: "stop",
        sequenceNumber: this.#next(),
        stop: { accountSid: this.accountSid, callSid: this.callSid },
        streamSid: this.streamSid,
      }),
    );
    this.stopped = true;
  }

  /** What the server asked for: {kind: "media", payload} | {kind: "mark", name} | {kind: "clear"} | null. */
  static read(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return null;
    }
    switch (message?.event) {
      case "media":
        return typeof message.media?.payload === "string" ? { kind: "media", payload: message.media.payload } : null;
      case "mark":
        return typeof message.mark?.name === "string" ? { kind: "mark", name: message.mark.name } : null;
      case "clear":
        return { kind: "clear" };
      default:
        return null;
    }
  }
}
