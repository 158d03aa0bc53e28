// G.711 mu-law, bit for bit as switchboard.codec does it (a test compares the tables).

export const DECODE = (() => {
  const table = new Int16Array(256);
  for (let i = 0; i < 256; i += 1) {
    const code = i ^ 0xff; // code words are stored complemented
    const t = (((code & 0x0f) << 3) + 0x84) << ((code & 0x70) >> 4);
    table[i] = code & 0x80 ? 0x84 - t : t - 0x84;
  }
  return table;
})();

// Entry i is the code of the int16 whose bit pattern is i.
export const ENCODE = (() => {
  const table = new Uint8Array(65536);
  const segmentEnds = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
  for (let i = 0; i < 65536; i += 1) {
    const pcm = ((i << 16) >> 16) >> 2;
    const mask = pcm < 0 ? 0x7f : 0xff;
    const magnitude = Math.min(Math.abs(pcm), 8159) + 0x21;
    let segment = 0;
    while (segment < 8 && segmentEnds[segment] < magnitude) segment += 1;
    const step = (magnitude >> Math.min(segment + 1, 8)) & 0x0f;
    const code = segment >= 8 ? 0x7f : (segment << 4) | step;
    table[i] = (code ^ mask) & 0xff;
  }
  return table;
})();

/** Float samples in [-1, 1] to mu-law bytes. */
export function encode(samples) {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i += 1) {
    const s = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768)));
    out[i] = ENCODE[s & 0xffff];
  }
  return out;
}

/** Mu-law bytes to float samples in [-1, 1). */
export function decode(bytes) {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 1) out[i] = DECODE[bytes[i]] / 32768;
  return out;
}

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 1) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}
