// How a call's pieces read: transcript turns (with the cut), tool calls, timeline entries.

import { h } from "../dom.js";
import { millis, offset, phaseLabel, statusLabel } from "../format.js";

function pretty(json) {
  if (json === null || json === undefined) return "";
  if (typeof json !== "string") return JSON.stringify(json, null, 2);
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

/** The words of an entry, for change detection. */
export function signature(entry) {
  return entry.kind === "tool"
    ? `${entry.name}|${entry.arguments}|${entry.output}`
    : `${entry.state}|${entry.text}|${entry.heardText}`;
}

/** A turn; `live` false once the call has ended (a caller turn with no words then never gets them). */
export function renderTurn(entry, startIso, live = true) {
  const who = entry.role === "caller" ? "Caller" : "Agent";
  const meta = h("div", { class: "who" }, who, h("time", { datetime: entry.at }, offset(startIso, entry.at)));
  const text = entry.text ?? "";
  if (entry.state === "interrupted") {
    const heard = entry.heardText ?? "";
    const rest = text.startsWith(heard) ? text.slice(heard.length) : text;
    const unheard = rest.trimStart();
    const gap = heard && rest.length > unheard.length ? " " : "";
    const note = `Cut off: the caller heard ${millis(entry.heardMs)} of ${millis(entry.generatedMs)}`;
    return h(
      "li",
      { class: "turn agent interrupted", dataset: { itemId: entry.itemId } },
      meta,
      h(
        "p",
        { class: "text" },
        heard ? h("span", { class: "heard" }, heard) : null,
        gap,
        unheard ? h("del", { class: "unheard", title: "Never heard: the caller spoke over it" }, unheard) : null,
      ),
      h("p", { class: "cut-note" }, h("span", { "aria-hidden": "true" }, "✂ "), note),
    );
  }
  const pendingCaller = entry.role === "caller" && !text && live;
  const untranscribed = entry.role === "caller" && !text && !live;
  const streaming = entry.role === "agent" && entry.state === "speaking";
  const state = pendingCaller ? " pending" : untranscribed ? " untranscribed" : streaming ? " streaming" : "";
  return h(
    "li",
    { class: `turn ${entry.role}${state}`, dataset: { itemId: entry.itemId } },
    meta,
    h("p", { class: "text" }, pendingCaller ? "Speaking…" : untranscribed ? "Spoke (no transcript)" : text || "…"),
  );
}

export function renderTool(entry, startIso) {
  return h(
    "li",
    { class: "tool", dataset: { toolCallId: entry.toolCallId } },
    h("div", { class: "who" }, "Tool ", h("code", {}, entry.name ?? "tool"), h("time", { datetime: entry.at }, offset(startIso, entry.at))),
    entry.arguments ? h("pre", { class: "tool-args", "aria-label": "Arguments" }, pretty(entry.arguments)) : null,
    entry.output === null || entry.output === undefined
      ? h("p", { class: "tool-running" }, "Running…")
      : h("div", { class: "tool-result" }, h("span", {}, "Result"), h("pre", {}, pretty(entry.output))),
  );
}

const RENEWAL_REASONS = {
  session_cap: "the old one neared its 60-minute limit",
  session_expired: "the old one expired",
  realtime_lost: "the connection to the model dropped",
};

export function timelineLabel(item) {
  const data = item.data ?? {};
  switch (item.kind) {
    case "status":
      return `Status: ${statusLabel(data.status)}${data.applied === false ? " (late report, ignored)" : ""}`;
    case "phase":
      return `Phase: ${phaseLabel(data.new)}`;
    case "interruption":
      return `Caller interrupted the agent (heard ${millis(data.heard_ms)} of ${millis(data.generated_ms)})`;
    case "tool_call":
      return `Tool called: ${data.name ?? ""}`;
    case "tool_result":
      return "Tool returned";
    case "problem":
      return `Problem in ${data.source ?? "call"}: ${data.message ?? data.reason ?? ""}`;
    case "hangup":
      return `Hanging up: ${data.reason ?? ""}`;
    case "hangup_requested":
      return `Hang-up requested${data.by ? ` (by ${data.by})` : ""}`;
    case "finished":
      return `Call finished: ${data.reason ?? ""}`;
    case "session_renewed":
      return `Model session renewed: ${RENEWAL_REASONS[data.reason] ?? data.reason ?? ""}`;
    case "latency":
      return data.kind === "answer"
        ? `Latency: first agent audio ${millis(data.ms)} after the answer`
        : `Latency: reply audio ${millis(data.ms)} after the caller stopped`;
    case "amd":
      return `Answered by: ${data.answered_by ?? data.AnsweredBy ?? JSON.stringify(data)}`;
    default:
      return `${item.kind}: ${JSON.stringify(data)}`;
  }
}
