// How a call's pieces read: transcript turns (with the cut), tool calls, timeline entries.

import { h, replace, setText } from "../dom.js";
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

/** A turn's item; `live` false once the call has ended. `updateTurn` keeps it up to date. */
export function renderTurn(entry, startIso, live = true) {
  const who = entry.role === "caller" ? "Caller" : "Agent";
  const node = h(
    "li",
    { dataset: { itemId: entry.itemId } },
    h("div", { class: "who" }, who, h("time", { datetime: entry.at }, offset(startIso, entry.at))),
    h("p", { class: "text" }),
  );
  updateTurn(node, entry, live);
  return node;
}

/**
 * Bring a turn's item up to date in place (a reply growing word by word changes one text
 * node, not the item): a caller turn with no words once the call ended never gets them;
 * a reply the caller interrupted shows what they heard, then the rest struck through.
 */
export function updateTurn(node, entry, live = true) {
  const paragraph = node.querySelector(".text");
  const text = entry.text ?? "";
  let className;
  if (entry.state === "interrupted" && entry.heardMs == null) {
    // Cut by the call's end (its actor died mid-reply): how much was played is unknown.
    className = "turn agent interrupted";
    if (paragraph.children.length) paragraph.replaceChildren();
    setText(paragraph, text || "…");
    let note = node.querySelector(".cut-note");
    if (!note) node.append((note = h("p", { class: "cut-note" })));
    const said = "Cut off when the call ended: how much the caller heard is not known";
    replace(note, h("span", { "aria-hidden": "true" }, "✂ "), said);
  } else if (entry.state === "interrupted") {
    className = "turn agent interrupted";
    const heard = entry.heardText ?? "";
    const rest = text.startsWith(heard) ? text.slice(heard.length) : text;
    const unheard = rest.trimStart();
    const gap = heard && rest.length > unheard.length ? " " : "";
    replace(
      paragraph,
      heard ? h("span", { class: "heard" }, heard) : null,
      gap,
      unheard ? h("del", { class: "unheard", title: "Never heard: the caller spoke over it" }, unheard) : null,
    );
    let note = node.querySelector(".cut-note");
    if (!note) node.append((note = h("p", { class: "cut-note" })));
    const said = `Cut off: the caller heard ${millis(entry.heardMs)} of ${millis(entry.generatedMs)}`;
    replace(note, h("span", { "aria-hidden": "true" }, "✂ "), said);
  } else {
    node.querySelector(".cut-note")?.remove();
    const pendingCaller = entry.role === "caller" && !text && live;
    const untranscribed = entry.role === "caller" && !text && !live;
    const streaming = entry.role === "agent" && entry.state === "speaking";
    const state = pendingCaller ? " pending" : untranscribed ? " untranscribed" : streaming ? " streaming" : "";
    className = `turn ${entry.role}${state}`;
    if (paragraph.children.length) paragraph.replaceChildren(); // it was a cut
    setText(paragraph, pendingCaller ? "Speaking…" : untranscribed ? "Spoke (no transcript)" : text || "…");
  }
  if (node.className !== className) node.className = className;
}

/** What to announce once a turn is over (said in full, or cut), or null while it is not. */
export function finishedTurn(entry) {
  if (entry.kind !== "turn") return null;
  if (entry.state === "interrupted") return `Agent, cut off: ${entry.heardText || "nothing heard"}`;
  if (entry.role === "agent" && entry.state === "finished") return `Agent: ${entry.text ?? ""}`;
  if (entry.role === "caller" && entry.state === "transcribed") return `Caller: ${entry.text ?? ""}`;
  return null;
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
    case "interruption": {
      const heard = `heard ${millis(data.heard_ms)} of ${millis(data.generated_ms)}`;
      if (data.by === "end") return `The call ended while the agent spoke (${heard})`;
      if (data.by === "session") return `The model's connection was lost mid-reply (${heard})`;
      return `Caller interrupted the agent (${heard})`;
    }
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
