// Past calls: search and filters (kept in the URL), newest first, a page at a time.

import { h, replace, setText } from "../dom.js";
import { ACTIVE_STATUSES, TERMINAL_STATUSES, clock, directionLabel, party, statusLabel, when } from "../format.js";

const PAGE = 50;
const SEARCH_DELAY_MS = 300;

/** The start of a local calendar day ("2026-03-01") as an aware ISO time; `plusDays` shifts it. */
function dayStart(value, plusDays = 0) {
  if (!value) return undefined;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

export function mountHistory(container, { api, toast, navigate }, params) {
  const search = h("input", { id: "history-search", type: "search", name: "search", placeholder: "Number, instruction or words said", value: params.get("search") ?? "" });
  const status = h(
    "select",
    { id: "history-status", name: "status" },
    h("option", { value: "" }, "Any status"),
    [...TERMINAL_STATUSES, ...ACTIVE_STATUSES].map((s) => h("option", { value: s }, statusLabel(s))),
  );
  const direction = h(
    "select",
    { id: "history-direction", name: "direction" },
    h("option", { value: "" }, "All directions"),
    h("option", { value: "outbound" }, "Outbound"),
    h("option", { value: "inbound" }, "Inbound"),
    h("option", { value: "web" }, "Web"),
  );
  const after = h("input", { id: "history-from", type: "date", name: "from" });
  const before = h("input", { id: "history-to", type: "date", name: "to" });
  status.value = params.get("status") ?? "";
  direction.value = params.get("direction") ?? "";
  after.value = params.get("from") ?? "";
  before.value = params.get("to") ?? "";

  const rows = h("tbody", { id: "history-rows" });
  const summary = h("p", { class: "summary", role: "status" });
  const more = h("button", { class: "button", type: "button", hidden: true }, "Load more");
  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter calls" },
    h("div", { class: "field grow" }, h("label", { for: "history-search" }, "Search"), search),
    h("div", { class: "field" }, h("label", { for: "history-status" }, "Status"), status),
    h("div", { class: "field" }, h("label", { for: "history-direction" }, "Direction"), direction),
    h("div", { class: "field" }, h("label", { for: "history-from" }, "From"), after),
    h("div", { class: "field" }, h("label", { for: "history-to" }, "To"), before),
  );
  replace(
    container,
    h(
      "section",
      { class: "history", "aria-labelledby": "history-title" },
      h("h1", { id: "history-title" }, "History"),
      filters,
      summary,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "calls-table" },
          h("thead", {}, h("tr", {}, ["When", "Number", "Direction", "Status", "Duration", "Instruction"].map((c) => h("th", { scope: "col" }, c)))),
          rows,
        ),
      ),
      more,
    ),
  );

  let cursor = null;
  let shown = 0;
  let timer = 0;
  // The read in flight: a newer search, or leaving the page (signing out too), cancels it,
  // so a late answer or failure lands nowhere (no toast over the next view).
  let loading = null;

  function query() {
    return {
      search: search.value.trim() || undefined,
      status: status.value || undefined,
      direction: direction.value || undefined,
      created_after: dayStart(after.value),
      created_before: dayStart(before.value, 1),
      limit: PAGE,
    };
  }

  function row(call) {
    const href = `#/calls/${encodeURIComponent(call.id)}`;
    const tr = h(
      "tr",
      { dataset: { callId: call.id } },
      h("td", { "data-label": "When" }, h("time", { datetime: call.created_at }, when(call.created_at))),
      h("td", { "data-label": "Number" }, h("a", { href }, party(call))),
      h("td", { "data-label": "Direction" }, directionLabel(call.direction)),
      h("td", { "data-label": "Status" }, h("span", { class: "badge", dataset: { status: call.status } }, statusLabel(call.status))),
      h("td", { "data-label": "Duration" }, call.duration_s === null ? "–" : clock(call.duration_s)),
      h("td", { "data-label": "Instruction", class: "instruction-cell" }, call.instruction),
    );
    tr.addEventListener("click", (event) => {
      if (!event.target.closest("a")) navigate(href);
    });
    return tr;
  }

  async function load(reset) {
    if (!reset && loading) return; // the next page follows the read still out
    loading?.abort();
    const run = new AbortController();
    loading = run;
    const params = query();
    if (!reset && cursor) params.cursor = cursor;
    more.disabled = true;
    try {
      const page = await api.listCalls(params, { signal: run.signal });
      if (reset) {
        rows.replaceChildren();
        shown = 0;
      }
      rows.append(...page.calls.map(row));
      shown += page.calls.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      setText(summary, shown ? `${shown}${cursor ? "+" : ""} call${shown === 1 ? "" : "s"}` : "No calls match.");
    } catch (failure) {
      if (!run.signal.aborted && failure.status !== 401) {
        setText(summary, `Could not load calls: ${failure.message}`);
        toast(failure.message, "error");
      }
    } finally {
      if (loading === run) {
        loading = null;
        more.disabled = false;
      }
    }
  }

  function changed() {
    // Keep the filters in the URL (without a new history entry per keystroke).
    const keep = new URLSearchParams();
    if (search.value.trim()) keep.set("search", search.value.trim());
    if (status.value) keep.set("status", status.value);
    if (direction.value) keep.set("direction", direction.value);
    if (after.value) keep.set("from", after.value);
    if (before.value) keep.set("to", before.value);
    const suffix = keep.toString();
    history.replaceState(null, "", `#/history${suffix ? `?${suffix}` : ""}`);
    load(true);
  }

  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(changed, SEARCH_DELAY_MS);
  });
  for (const control of [status, direction, after, before]) control.addEventListener("change", changed);
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    changed();
  });
  more.addEventListener("click", () => load(false));
  load(true);

  return () => {
    clearTimeout(timer);
    loading?.abort();
  };
}
