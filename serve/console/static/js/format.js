// How times, durations, numbers and statuses read on the screen.

export const ACTIVE_STATUSES = ["queued", "initiated", "ringing", "in-progress"];
export const TERMINAL_STATUSES = ["completed", "busy", "no-answer", "failed", "canceled"];
const RANK = { queued: 0, initiated: 1, ringing: 2, "in-progress": 3 };

/** Rank along a call's life: statuses only move forward (terminal ones rank 4). */
export function statusRank(status) {
  return RANK[status] ?? (TERMINAL_STATUSES.includes(status) ? 4 : -1);
}

export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(status);
}

/** Milliseconds since the epoch of an ISO 8601 time, or null. */
export function ms(iso) {
  if (!iso) return null;
  const value = Date.parse(iso);
  return Number.isNaN(value) ? null : value;
}

/** "0:07", "12:03", "1:02:03" */
export function clock(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** "850 ms", "1.4 s" */
export function millis(value) {
  if (value === null || value === undefined) return "–";
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

/** A local date and time, e.g. "3 Mar 2026, 14:05:09". */
export function when(iso) {
  const value = ms(iso);
  if (value === null) return "–";
  return new Date(value).toLocaleString(undefined, {
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** Seconds from `start` to `end` (ISO strings), "+3.2 s" style. */
export function offset(startIso, iso) {
  const a = ms(startIso);
  const b = ms(iso);
  if (a === null || b === null) return "";
  const seconds = (b - a) / 1000;
  return `${seconds < 0 ? "−" : "+"}${Math.abs(seconds).toFixed(1)} s`;
}

export function statusLabel(status) {
  return (
    {
      queued: "Queued",
      initiated: "Dialling",
      ringing: "Ringing",
      "in-progress": "In progress",
      completed: "Completed",
      busy: "Busy",
      "no-answer": "No answer",
      failed: "Failed",
      canceled: "Canceled",
    }[status] ?? status
  );
}

export function phaseLabel(phase) {
  return (
    {
      awaiting_answer: "Waiting for answer",
      idle: "Listening",
      thinking: "Thinking",
      speaking: "Agent speaking",
      tool_wait: "Running a tool",
      ended: "Ended",
    }[phase] ?? phase ?? ""
  );
}

export function usd(decimal) {
  const value = Number(decimal);
  if (!Number.isFinite(value)) return "–";
  return `$${value.toFixed(value !== 0 && value < 0.01 ? 4 : 2)}`;
}

export function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Who is on the other end of a call: the number dialled, the caller, or the browser. */
export function party(record) {
  if (record.direction === "web") return "Web call";
  return record.direction === "inbound" ? record.from : record.to;
}

/** A call's direction in words ("Outbound"), or short with an arrow ("↗ out"). */
export function directionLabel(direction, short = false) {
  const labels = {
    outbound: ["Outbound", "↗ out"],
    inbound: ["Inbound", "↙ in"],
    web: ["Web", "◉ web"],
  };
  const label = labels[direction] ?? [direction, direction];
  return short ? label[1] : label[0];
}
