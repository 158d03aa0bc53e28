// One call as the console sees it: its record from the API folded together
// with its live events, in the same terms as the call store.
//
// A page opened mid-call reads the record (GET /calls/{id}) and the stream's
// replay of recent events, which overlap. Every fold here is therefore
// idempotent: timeline entries are keyed (kind, time, subject), turns by item
// id, tools by tool call id, and an agent's transcript delta by where it starts
// in the reply's text (its `offset`): a delta sent twice (a report sent again
// after a recorder restart) lands where it did, one that overlaps the end
// replaces it, and a reply can be followed from any delta that starts within
// what this model has of it (from 0: with no start seen). A delta starting past
// that leaves a gap: the turn takes its words from the record (`missed` asks
// for a re-read). A delta without an offset (an older server) is only applied
// to a turn whose start this model saw (the replay is a contiguous suffix, so
// then it also has every later delta); otherwise the turn takes its words from
// the record until its final transcript.

import { isTerminal, ms, statusRank } from "./format.js";

// A delta's offset counts code points, as Python does; a string's length here counts UTF-16 units.
const PAIRS = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;

function codePoints(text) {
  return text.length - (text.match(PAIRS)?.length ?? 0);
}

/** Where code point `points` of `text` starts, in UTF-16 units (`points` at most its count). */
function unitIndex(text, points) {
  let index = 0;
  for (const char of text) {
    if (points <= 0) break;
    index += char.length;
    points -= 1;
  }
  return index;
}

// Scripts written without spaces between words: every character is a word of its own
// (the store's UNSPACED_RANGES in switchboard/transcript.py).
const UNSPACED = /[\u3000-\u30ff\u3100-\u312f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uffef\u{20000}-\u{3ffff}]/u;

/** A word ends on either side of `char` (the store's _breaks). */
const breaks = (char) => /\s/u.test(char) || UNSPACED.test(char);

/**
 * What the caller heard of a reply cut after `heardMs` of `generatedMs`: the
 * proportional prefix snapped back to a whole word (the store's heard_prefix).
 */
export function heardPrefix(text, heardMs, generatedMs) {
  if (heardMs <= 0 || generatedMs <= 0) return "";
  if (heardMs >= generatedMs) return text;
  const chars = Array.from(text); // code points, as Python counts them
  let cut = Math.floor((chars.length * heardMs) / generatedMs);
  if (cut < chars.length && !breaks(chars[cut])) {
    while (cut > 0 && !breaks(chars[cut - 1])) cut -= 1;
  }
  return chars.slice(0, cut).join("").trimEnd();
}

// Live event type -> the store's timeline kind.
const TIMELINE_KIND = {
  "call.status": "status",
  "call.phase": "phase",
  "call.amd": "amd",
  "transcript.agent_interrupted": "interruption",
  "tool.called": "tool_call",
  "tool.returned": "tool_result",
  problem: "problem",
  "call.hanging_up": "hangup",
  "call.hangup_requested": "hangup_requested",
  "call.ended": "finished",
  "session.renewed": "session_renewed",
  latency: "latency",
};
const NOT_DATA = new Set(["call_id", "type", "at"]);

function subject(kind, data) {
  switch (kind) {
    case "status":
      return data.status ?? "";
    case "phase":
      return data.new ?? "";
    case "interruption":
      return data.item_id ?? "";
    case "tool_call":
    case "tool_result":
      return data.tool_call_id ?? "";
    case "latency":
      return data.kind ?? "";
    // Kinds with nothing to name them by: their content tells two in one millisecond apart.
    // Only fields the live event and the stored record both carry (a renewal's record also
    // has its attempt), so each still meets its other copy.
    case "problem":
      return `${data.source ?? ""}|${data.reason ?? ""}|${data.message ?? ""}`;
    case "hangup":
    case "finished":
    case "session_renewed":
      return data.reason ?? "";
    case "hangup_requested":
      return data.by ?? "";
    default:
      return stableJson(data);
  }
}

/** `value` as JSON with every object's keys sorted: the same content, the same text. */
function stableJson(value) {
  return JSON.stringify(value, (key, inner) =>
    inner && typeof inner === "object" && !Array.isArray(inner)
      ? Object.fromEntries(Object.keys(inner).sort().map((name) => [name, inner[name]]))
      : inner,
  );
}

export class CallModel {
  /** `record` is a call from the API: CallOut, or CallDetailOut with transcript and timeline. */
  constructor(record) {
    this.id = record.id;
    this.record = record;
    this.status = record.status;
    this.answeredAt = record.answered_at ?? null;
    this.endedAt = record.ended_at ?? null;
    this.entries = []; // transcript turns and tool calls, in conversation order
    this.turns = new Map(); // item id -> turn entry
    this.tools = new Map(); // tool call id -> tool entry
    this.timeline = []; // {kind, at, data}, sorted by time
    this.timelineKeys = new Set();
    this.callerSpeaking = false;
    this.levels = null;
    this.liveUsage = new Map(); // response id -> usage, from `usage` events
    this.usage = record.usage ?? null;
    this.costUsd = record.cost_usd ?? null;
    this.version = 0; // bumped on every change, for cheap re-render checks
    // Words of a reply came that this model could not place (it missed the reply's start,
    // or words before them): the record has them. Whoever re-reads it clears this first.
    this.missed = false;
    this.#derive();
    if (record.timeline) this.#loadDetail(record);
  }

  /** Take a fresher record (e.g. re-read after a reconnect); keeps live-only state. */
  refresh(record) {
    this.record = { ...this.record, ...record };
    this.#moveStatus(record.status, null);
    this.answeredAt = record.answered_at ?? this.answeredAt;
    this.endedAt = record.ended_at ?? this.endedAt;
    if (record.usage) this.usage = record.usage;
    if (record.cost_usd !== undefined) this.costUsd = record.cost_usd;
    if (record.timeline) this.#loadDetail(record);
    this.version += 1;
    this.#derive();
  }

  // The record's turns are in conversation order (the store's), and the entries are
  // rebuilt in that order: turns it does not have yet were told of by the stream
  // after it was read, so they follow, in the order they came; tools sit by time.
  #loadDetail(detail) {
    for (const event of detail.timeline) this.#addTimeline(event.kind, event.at, event.data ?? {});
    const ordered = [];
    for (const turn of detail.transcript) {
      let entry = this.turns.get(turn.item_id);
      if (!entry) {
        entry = { kind: "turn", role: turn.role, itemId: turn.item_id, at: turn.started_at };
        this.#fillFromStore(entry, turn);
        this.turns.set(turn.item_id, entry);
      } else if (turn.state !== "speaking" && turn.state !== "pending") {
        this.#fillFromStore(entry, turn);
      } else if (turn.state === "speaking" && this.#catchUp(entry, turn)) {
        this.#fillFromStore(entry, turn);
      }
      ordered.push(entry);
    }
    const inRecord = new Set(ordered);
    const tools = this.entries.filter((entry) => entry.kind === "tool");
    this.entries = [...ordered, ...this.entries.filter((entry) => entry.kind === "turn" && !inRecord.has(entry))];
    for (const tool of tools) this.#insertByTime(tool);
    for (const event of detail.timeline) {
      if (event.kind === "tool_call") this.#toolCalled(event.data, event.at);
      if (event.kind === "tool_result") this.#toolReturned(event.data, event.at);
    }
  }

  // A reply still being spoken takes the record's words only while this model is
  // not following its deltas (their start was missed), and only if they are more.
  #catchUp(entry, turn) {
    if (entry.sawStart || (entry.state !== undefined && entry.state !== "speaking")) return false;
    return (turn.text ?? "").length >= (entry.text ?? "").length;
  }

  /**
   * The stream is back after a gap: deltas it replays may not follow on from what
   * this model has, so a reply is only followed again from a replayed start, or a
   * delta whose offset places it within what this model has (else it waits for the
   * record or its final transcript), as on a page first opened.
   */
  resume() {
    for (const turn of this.turns.values()) turn.sawStart = false;
  }

  #fillFromStore(entry, turn) {
    entry.text = turn.text ?? "";
    entry.state = turn.interrupted ? "interrupted" : turn.state;
    entry.heardText = turn.heard_text;
    entry.heardMs = turn.heard_ms;
    entry.generatedMs = turn.generated_ms;
  }

  #insertByTime(entry) {
    // A snapshot's turns come in conversation order; tools go after the last
    // entry that started no later than they did.
    const at = ms(entry.at) ?? Infinity;
    let index = this.entries.length;
    if (entry.kind === "tool") {
      while (index > 0 && (ms(this.entries[index - 1].at) ?? 0) > at) index -= 1;
    }
    this.entries.splice(index, 0, entry);
  }

  /** Fold one live event in; returns whether anything changed. */
  apply(event) {
    const before = this.version;
    const at = event.at;
    const kind = TIMELINE_KIND[event.type];
    if (kind) {
      const data = {};
      for (const [key, value] of Object.entries(event)) if (!NOT_DATA.has(key)) data[key] = value;
      this.#addTimeline(kind, at, data);
    }
    switch (event.type) {
      case "call.created":
        this.#moveStatus(event.status, at);
        break;
      case "call.status":
        this.#moveStatus(event.status, at);
        break;
      case "transcript.caller_started":
        this.#turn("caller", event.item_id, at).state ??= "pending";
        this.callerSpeaking = true;
        this.version += 1;
        break;
      case "transcript.caller": {
        const turn = this.#turn("caller", event.item_id, at);
        turn.text = event.text ?? "";
        turn.state = "transcribed";
        this.callerSpeaking = false;
        this.version += 1;
        break;
      }
      case "transcript.agent_started": {
        const turn = this.#turn("agent", event.item_id, at);
        if (!turn.sawStart && turn.state !== "finished" && turn.state !== "interrupted") {
          turn.text = ""; // rebuilt from the deltas that follow in order
          turn.state = "speaking";
        }
        turn.sawStart = true;
        this.callerSpeaking = false;
        this.version += 1;
        break;
      }
      case "transcript.agent_delta": {
        const turn = this.#turn("agent", event.item_id, at);
        if (turn.state === "finished" || turn.state === "interrupted") break;
        if (Number.isInteger(event.offset) && event.offset >= 0) {
          this.#place(turn, event.offset, event.delta ?? "");
        } else if (turn.sawStart && turn.state === "speaking") {
          turn.text = (turn.text ?? "") + (event.delta ?? "");
          this.version += 1;
        } else {
          this.missed = true;
        }
        break;
      }
      case "transcript.agent_done": {
        const turn = this.#turn("agent", event.item_id, at);
        turn.text = event.text ?? turn.text ?? "";
        if (turn.state !== "interrupted") turn.state = "finished";
        this.version += 1;
        break;
      }
      case "transcript.agent_interrupted": {
        const turn = this.#turn("agent", event.item_id, at);
        // Not following the reply, its text may be short of what was said: the record's cut is right.
        if (!turn.sawStart && turn.state !== "finished" && turn.state !== "interrupted") this.missed = true;
        if (turn.state !== "interrupted") {
          turn.state = "interrupted";
          turn.heardMs = event.heard_ms;
          turn.generatedMs = event.generated_ms;
          turn.heardText = heardPrefix(turn.text ?? "", event.heard_ms, event.generated_ms);
          this.version += 1;
        }
        break;
      }
      case "tool.called":
        this.#toolCalled(event, at);
        break;
      case "tool.returned":
        this.#toolReturned(event, at);
        break;
      case "usage":
        if (event.response_id && event.usage) {
          this.liveUsage.set(event.response_id, event.usage);
          this.version += 1;
        }
        break;
      case "levels":
        this.levels = { caller: event.caller_dbfs, agent: event.agent_dbfs, at };
        this.version += 1;
        break;
      default:
        break;
    }
    if (this.version !== before) this.#derive();
    return this.version !== before;
  }

  /**
   * Put a reply's `delta` at code point `offset` of its text (as the store does): a
   * delta already there (sent twice) changes nothing, one that overlaps the end
   * replaces what it covers. The text this model has of a reply is always its start
   * (live deltas placed so, or the record's), so from then on the reply is followed,
   * its start seen or not. A delta past the end leaves a gap: the record has the
   * words in between (`missed`), and is to be taken even if this model follows.
   */
  #place(turn, offset, delta) {
    const text = turn.text ?? "";
    const length = turn.counted === text ? turn.points : codePoints(text);
    if (offset > length) {
      turn.sawStart = false;
      this.missed = true;
      return;
    }
    let placed;
    if (offset === length) {
      placed = text + delta;
    } else {
      const at = length === text.length ? offset : unitIndex(text, offset);
      placed = text.startsWith(delta, at) ? text : text.slice(0, at) + delta;
    }
    turn.counted = placed;
    turn.points = placed === text ? length : offset + codePoints(delta);
    if (placed === text && turn.state === "speaking") return; // already in place: a repeat
    turn.text = placed;
    turn.state = "speaking";
    turn.sawStart = true;
    this.version += 1;
  }

  #turn(role, itemId, at) {
    let turn = this.turns.get(itemId);
    if (!turn) {
      turn = { kind: "turn", role, itemId, at, text: role === "agent" ? "" : null, state: undefined };
      this.turns.set(itemId, turn);
      this.entries.push(turn);
      this.version += 1;
    }
    return turn;
  }

  #toolCalled(data, at) {
    let tool = this.tools.get(data.tool_call_id);
    if (!tool) {
      tool = { kind: "tool", toolCallId: data.tool_call_id, at, output: null };
      this.tools.set(data.tool_call_id, tool);
      this.#insertByTime(tool);
    }
    tool.name = data.name;
    tool.arguments = data.arguments;
    this.version += 1;
  }

  #toolReturned(data, at) {
    let tool = this.tools.get(data.tool_call_id);
    if (!tool) {
      tool = { kind: "tool", toolCallId: data.tool_call_id, at, name: "tool", arguments: null };
      this.tools.set(data.tool_call_id, tool);
      this.#insertByTime(tool);
    }
    if (tool.output !== data.output) {
      tool.output = data.output;
      tool.returnedAt = at;
      this.version += 1;
    }
  }

  #moveStatus(status, at) {
    if (!status || statusRank(status) <= statusRank(this.status)) return;
    this.status = status;
    if (status === "in-progress" && !this.answeredAt && at) this.answeredAt = at;
    if (isTerminal(status) && !this.endedAt && at) this.endedAt = at;
    this.version += 1;
  }

  #addTimeline(kind, at, data) {
    const when = ms(at);
    const key = `${kind}|${when}|${subject(kind, data)}`;
    if (this.timelineKeys.has(key)) return;
    this.timelineKeys.add(key);
    const item = { kind, at, data };
    let index = this.timeline.length;
    while (index > 0 && (ms(this.timeline[index - 1].at) ?? 0) > (when ?? 0)) index -= 1;
    this.timeline.splice(index, 0, item);
    this.version += 1;
  }

  // Phase, ended and latency follow from the timeline, so replays and
  // snapshots cannot double count them. Latencies are the call's own
  // measurements: "answer" (stream start to the first agent audio) and
  // "response" (the caller stopped speaking to the first audio of the reply).
  #derive() {
    let phase = null;
    const latencies = [];
    let answerLatency = null;
    let ended = isTerminal(this.status);
    let endReason = null;
    for (const item of this.timeline) {
      if (item.kind === "phase") {
        phase = item.data.new;
      } else if (item.kind === "latency") {
        if (item.data.kind === "answer") answerLatency = item.data.ms;
        else if (item.data.kind === "response") latencies.push(item.data.ms);
      } else if (item.kind === "finished") {
        ended = true;
        endReason = item.data.reason ?? null;
      }
    }
    this.phase = ended ? "ended" : phase;
    this.ended = ended;
    this.endReason = endReason;
    this.latencies = latencies;
    this.answerLatency = answerLatency;
    this.speaking = ended ? null : this.phase === "speaking" ? "agent" : this.callerSpeaking ? "caller" : null;
  }

  /** Whether the call can still be hung up from here. */
  get live() {
    return !this.ended && !isTerminal(this.status);
  }

  /** Token counts: the record's, or the live `usage` events' sum while no record has them. */
  get tokens() {
    if (this.usage && (this.usage.total_tokens > 0 || this.liveUsage.size === 0)) return this.usage;
    const sum = {};
    for (const usage of this.liveUsage.values()) {
      for (const [key, value] of Object.entries(usage)) sum[key] = (sum[key] ?? 0) + (Number(value) || 0);
    }
    return this.liveUsage.size ? sum : this.usage;
  }

  /** The last words spoken, for the board. */
  get lastLine() {
    for (let i = this.entries.length - 1; i >= 0; i -= 1) {
      const entry = this.entries[i];
      if (entry.kind === "turn" && entry.text) return { role: entry.role, text: entry.text };
    }
    return null;
  }
}
