// A call record as plain text: who said what, what was cut, tools, timeline, usage.

import { offset, party, usd, when } from "./format.js";

export function transcriptText(detail) {
  const lines = [
    `Switchboard call ${detail.id}`,
    `${detail.direction === "inbound" ? "From" : "To"}: ${party(detail)}`,
    `Status: ${detail.status}`,
    `Created: ${when(detail.created_at)}`,
    `Duration: ${detail.duration_s === null ? "–" : `${detail.duration_s.toFixed(1)} s`}`,
    `Instruction: ${detail.instruction}`,
    "",
    "Transcript",
    "----------",
  ];
  for (const turn of detail.transcript) {
    const who = turn.role === "caller" ? "Caller" : "Agent";
    const at = offset(detail.created_at, turn.started_at);
    if (turn.interrupted && turn.heard_ms === null) {
      lines.push(`[${at}] ${who}: ${turn.text ?? ""} [cut off when the call ended; how much was heard is not known]`);
    } else if (turn.interrupted) {
      const heard = turn.heard_text ?? "";
      const text = turn.text ?? "";
      const unheard = text.startsWith(heard) ? text.slice(heard.length).trim() : text;
      lines.push(`[${at}] ${who}: ${heard} [cut off; never heard: ${unheard}]`);
    } else if (turn.role === "caller" && !turn.text) {
      lines.push(`[${at}] ${who}: (spoke; no transcript${turn.state === "pending" && detail.ended_at === null ? " yet" : ""})`);
    } else {
      lines.push(`[${at}] ${who}: ${turn.text ?? ""}`);
    }
  }
  lines.push("", "Timeline", "--------");
  for (const event of detail.timeline) {
    lines.push(`[${offset(detail.created_at, event.at)}] ${event.kind} ${JSON.stringify(event.data)}`);
  }
  const u = detail.usage;
  lines.push(
    "",
    `Tokens: ${u.total_tokens} total, ${u.input_tokens} in, ${u.output_tokens} out`,
    `Estimated cost: ${usd(detail.cost_usd)}`,
    "",
  );
  return lines.join("\n");
}
