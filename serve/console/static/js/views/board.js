// The live board: every active call, updated from the all-calls event stream.
//
// Built for many calls at once: each call is one card whose nodes are made
// once and then only have their text and classes changed; events just mark a
// call dirty, and one animation frame applies every pending change, so a
// burst of events costs one layout. A once-a-second tick updates durations.

import { h, replace, setText } from "../dom.js";
import {
  ACTIVE_STATUSES,
  clock,
  directionLabel,
  isTerminal,
  median,
  millis,
  ms,
  party,
  phaseLabel,
  statusLabel,
} from "../format.js";
import { CallModel } from "../live_call.js";
import { placeCallForm } from "./place_call.js";

const RECENT_LIMIT = 12;
const PAGE_LIMIT = 200; // the API's largest page
const READ_AT_ONCE = 6; // re-reads of single calls in flight at a time
const RETRY_MS = 1000; // a failed read (the lists, or a re-read) is tried again after this, doubling
const RETRY_MAX_MS = 15_000; // up to this
// Among queued events, where the stream came back: what follows is its replay.
const RESUMED = Object.freeze({ type: "stream.resumed" });

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** Width of a level meter, 0..1, from a level in dBFS (-60 dBFS and below read empty). */
function meterFraction(dbfs) {
  if (typeof dbfs !== "number" || Number.isNaN(dbfs)) return 0;
  return Math.max(0, Math.min(1, (dbfs + 60) / 60));
}

// Call ids sort by creation time only to the millisecond; break ties by id.
function newestFirst(a, b) {
  const byTime = (ms(b.record.created_at) ?? 0) - (ms(a.record.created_at) ?? 0);
  return byTime || (b.id > a.id ? 1 : b.id < a.id ? -1 : 0);
}

function card(model) {
  const parts = {
    number: h("span", { class: "number" }),
    direction: h("span", { class: "direction" }),
    status: h("span", { class: "badge" }),
    phase: h("span", { class: "phase" }),
    duration: h("span", { class: "duration", title: "Duration" }),
    caller: h("span", { class: "meter-fill" }),
    agent: h("span", { class: "meter-fill" }),
    latency: h("span", { class: "latency" }),
    line: h("p", { class: "last-line" }),
  };
  const speakers = h(
    "span",
    { class: "speakers", "aria-label": "Who is speaking" },
    h("span", { class: "speaker caller" }, "Caller", h("span", { class: "meter" }, parts.caller)),
    h("span", { class: "speaker agent" }, "Agent", h("span", { class: "meter" }, parts.agent)),
  );
  parts.speakers = speakers;
  const link = h(
    "a",
    { class: "call-card", href: `#/calls/${encodeURIComponent(model.id)}`, dataset: { callId: model.id } },
    h("span", { class: "card-head" }, parts.number, parts.direction),
    h("span", { class: "card-stats" }, h("span", { class: "state" }, parts.status, parts.phase), parts.duration),
    h("span", { class: "card-stats" }, speakers, parts.latency),
    parts.line,
  );
  return { node: h("li", {}, link), link, parts, version: -1 };
}

function paint(row, model, now) {
  const { parts } = row;
  const record = model.record;
  setText(parts.number, party(record));
  setText(parts.direction, directionLabel(record.direction, true));
  setText(parts.status, statusLabel(model.status));
  parts.status.dataset.status = model.status;
  let phase = model.endReason ?? "";
  if (model.live) {
    phase = model.phase ? phaseLabel(model.phase) : model.status === "in-progress" ? "Connecting" : "Waiting for answer";
  }
  setText(parts.phase, phase);
  const speaking = model.speaking;
  for (const who of ["caller", "agent"]) {
    const level = model.levels && !model.ended ? meterFraction(model.levels[who]) : speaking === who ? 1 : 0;
    parts[who].style.transform = `scaleX(${level.toFixed(2)})`;
    parts[who].closest(".speaker").classList.toggle("active", speaking === who);
  }
  const latencies = model.latencies;
  setText(
    parts.latency,
    latencies.length
      ? `Reply ${millis(latencies[latencies.length - 1])} · median ${millis(median(latencies))}`
      : "Reply latency –",
  );
  const line = model.lastLine;
  setText(parts.line, line ? `${line.role === "caller" ? "Caller" : "Agent"}: ${line.text}` : "");
  paintDuration(row, model, now);
  row.version = model.version;
}

function paintDuration(row, model, now) {
  const answered = ms(model.answeredAt);
  const ended = ms(model.endedAt);
  let text;
  if (answered !== null) text = clock(((ended ?? now) - answered) / 1000);
  else if (model.live) text = clock((now - (ms(model.record.created_at) ?? now)) / 1000); // since placed
  else text = "–";
  setText(row.parts.duration, text);
}

export function mountBoard(container, { api, toast, setConnection, startWebCall }) {
  const models = new Map(); // call id -> CallModel
  const rows = new Map(); // call id -> card
  const waiting = new Map(); // call id -> its first read: {id, events that arrived meanwhile, done}
  const dirty = new Set();
  const ended = new Set(); // ids of the models no longer live: the newest RECENT_LIMIT are kept
  let frame = 0;
  let loaded = false; // the lists of calls are in: live events apply as they come
  let pending = []; // events that arrived while the lists were read
  let loading = null; // AbortController of the load running, if any
  const mounted = new AbortController(); // aborted when the board goes

  const activeList = h("ul", { class: "cards", id: "active-calls", "aria-live": "off" });
  const empty = h("p", { class: "empty" }, "No calls in progress. Place one, or wait for an inbound call.");
  const recentList = h("ul", { class: "recent", id: "recent-calls" });
  const count = h("span", { class: "count" });
  const form = placeCallForm({ api, toast, startWebCall, onPlaced: (call) => upsert(call) });

  replace(
    container,
    h(
      "div",
      { class: "board-layout" },
      form,
      h(
        "section",
        { class: "board", "aria-labelledby": "board-title" },
        h("h1", { id: "board-title" }, "Live calls ", count),
        empty,
        activeList,
        h("h2", {}, "Recently ended"),
        recentList,
        h("p", {}, h("a", { href: "#/history" }, "All calls in History →")),
      ),
    ),
  );

  function upsert(record) {
    let model = models.get(record.id);
    if (model) model.refresh(record);
    else {
      model = new CallModel(record);
      models.set(record.id, model);
    }
    mark(record.id);
    return model;
  }

  function mark(id) {
    dirty.add(id);
    if (models.get(id)?.live === false) {
      ended.add(id);
      if (ended.size > RECENT_LIMIT) trim();
    }
    if (!frame) frame = requestAnimationFrame(flush);
  }

  // Only the newest RECENT_LIMIT ended calls are kept, trimmed as calls end rather than
  // when painted: a hidden tab paints nothing (no animation frames) but still gets events.
  function trim() {
    const byNewest = [...ended].map((id) => models.get(id)).sort(newestFirst);
    for (const model of byNewest.slice(RECENT_LIMIT)) forget(model.id);
  }

  function flush() {
    frame = 0;
    const now = Date.now();
    let reorder = false;
    for (const id of dirty) {
      const model = models.get(id);
      if (!model) continue;
      let row = rows.get(id);
      if (!row) {
        row = card(model);
        rows.set(id, row);
        reorder = true;
      }
      const wasLive = row.live;
      if (row.version !== model.version) paint(row, model, now);
      row.live = model.live;
      if (wasLive !== row.live) reorder = true;
    }
    dirty.clear();
    if (reorder) arrange();
  }

  // Newest first in both lists (`trim` keeps the ended ones to RECENT_LIMIT).
  function arrange() {
    const byNewest = [...models.values()].sort(newestFirst);
    const active = byNewest.filter((m) => m.live);
    placeRows(activeList, active);
    placeRows(recentList, byNewest.filter((m) => !m.live));
    empty.hidden = active.length > 0;
    setText(count, active.length ? `(${active.length})` : "");
  }

  function placeRows(list, ordered) {
    // Move only the nodes that are out of place (keeps focus and avoids relayout).
    let cursor = list.firstChild;
    for (const model of ordered) {
      let row = rows.get(model.id);
      if (!row) {
        row = card(model);
        rows.set(model.id, row);
        paint(row, model, Date.now());
      }
      if (row.node === cursor) cursor = cursor.nextSibling;
      else list.insertBefore(row.node, cursor);
    }
    // What is left belongs elsewhere now (moved to the other list, or trimmed).
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
  }

  function fetchCall(id, event) {
    const read = waiting.get(id);
    if (read) read.events.push(event); // applied once the record is in
    else {
      const first = { id, events: [event] };
      waiting.set(id, first);
      first.done = readFirst(first);
    }
  }

  async function readFirst({ id, events }) {
    try {
      upsert(await api.getCall(id, { signal: mounted.signal }));
    } catch {
      // gone or unreachable: a later event will try again
    }
    waiting.delete(id);
    const model = models.get(id);
    if (!model || mounted.signal.aborted) return;
    for (const queued of events) {
      if (queued === RESUMED) model.resume();
      else if (model.apply(queued)) mark(id);
    }
  }

  function onEvent(event) {
    if (!loaded) {
      pending.push(event);
      return;
    }
    if (event === RESUMED) {
      // The replay that follows may repeat what was applied: every model follows a
      // reply again only from a replayed start (a call still being read, once read).
      for (const model of models.values()) model.resume();
      for (const read of waiting.values()) read.events.push(RESUMED);
      return;
    }
    const id = event.call_id;
    if (!id) return;
    let model = models.get(id);
    if (!model) {
      if (event.type === "call.created") {
        model = upsert({
          id,
          direction: event.direction ?? "outbound",
          to: event.to ?? "",
          from: event.from ?? "",
          status: event.status ?? "queued",
          created_at: event.at,
        });
      } else {
        // A call this page has not seen (created before it opened, or trimmed): read it.
        fetchCall(id, event);
        return;
      }
    }
    if (model.apply(event)) mark(id);
  }

  /** One live status's calls, page by page. */
  async function listStatus(status, signal) {
    const calls = [];
    let cursor = null;
    do {
      signal.throwIfAborted();
      const page = await api.listCalls({ status, limit: PAGE_LIMIT, cursor }, { signal });
      calls.push(...page.calls);
      cursor = page.next_cursor;
    } while (cursor);
    return calls;
  }

  /**
   * Every live call. `inOrder` lists each live status in turn, along a call's life
   * (lifecycle order), each list asked for once the one before is in: as a call's status
   * only moves forward, a call that existed before the first page was read and is in none
   * of these lists had ended by the time the last one was read. Lists read at once give
   * no such proof (a call can move on from a list not yet read to one already read, and
   * be in none), so they are only for a load with no card to prove ended: it concludes
   * nothing from a call's absence, and a call that moves on meanwhile comes to the board
   * with its status event.
   */
  async function listLive(signal, inOrder) {
    if (!inOrder) return (await Promise.all(ACTIVE_STATUSES.map((status) => listStatus(status, signal)))).flat();
    const calls = [];
    for (const status of ACTIVE_STATUSES) calls.push(...(await listStatus(status, signal)));
    return calls;
  }

  // Whether a call is on the board without a final status.
  const unfinished = (id) => models.has(id) && !isTerminal(models.get(id).status);

  /**
   * Re-read single calls in the order given, a few at a time, each until it is read, gone,
   * or its end came live, or the catch-up is cancelled: a failed read is tried again
   * (backing off), as a card left live would stay wrong until the next reconnect.
   */
  async function reread(ids, signal) {
    const queue = [...ids];
    let warned = false;
    async function worker() {
      while (queue.length && !signal.aborted) {
        const id = queue.shift();
        for (let attempt = 0; unfinished(id) && !signal.aborted; attempt += 1) {
          try {
            upsert(await api.getCall(id, { signal }));
            break;
          } catch (failure) {
            if (signal.aborted || failure.status === 401) return;
            if (failure.status === 404) {
              forget(id);
              break;
            }
            if (!warned) toast(`Could not re-read a call that ended while the board was offline (${failure.message}): trying again.`, "error");
            warned = true;
            await pause(Math.min(RETRY_MS * 2 ** attempt, RETRY_MAX_MS), signal);
          }
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(READ_AT_ONCE, queue.length) }, worker));
  }

  /**
   * Calls whose first read was out while the lists were read: its answer may predate them,
   * and show live a call that they prove ended. Once it is in, those it shows live are
   * re-read like the cards that ended.
   */
  async function rereadAfterFirstReads(reads, signal) {
    await Promise.all(reads.map((read) => read.done));
    if (signal.aborted) return;
    await reread(shownOnceEnded(reads.map((read) => read.id).filter(unfinished)), signal);
  }

  function forget(id) {
    rows.get(id)?.node.remove();
    rows.delete(id);
    models.delete(id);
    dirty.delete(id);
    ended.delete(id);
  }

  /**
   * Of the calls that ended unseen, those "Recently ended" will show (it keeps the newest
   * RECENT_LIMIT ended calls), newest first, to be re-read for how they ended; the others
   * would be trimmed from it anyway, so they go now, unread.
   */
  function shownOnceEnded(ended) {
    const unseen = new Set(ended);
    const byNewest = [...models.values()].filter((m) => !m.live || unseen.has(m.id)).sort(newestFirst);
    const shown = [];
    byNewest.forEach((model, index) => {
      if (!unseen.has(model.id)) return;
      if (index < RECENT_LIMIT) shown.push(model.id);
      else forget(model.id);
    });
    return shown;
  }

  // The events held while the lists were read, then every event as it comes.
  function applyPending() {
    loaded = true;
    const queued = pending;
    pending = [];
    for (const event of queued) onEvent(event);
  }

  // Every live call, and the newest ones. After a reconnect the board may hold calls
  // that ended meanwhile: a card still live that was on the board before the lists
  // were read, and that none of them holds, has ended (see listLive). Live events
  // apply again as soon as the lists are in, while those cards are re-read: a record
  // and events fold in any order (statuses only move forward; turns, tools and
  // timeline entries are matched by id). A newer load, or leaving the board, cancels it.
  // Lists that fail to load are read again, backing off (`attempt` counts the failures),
  // as a quiet live call would otherwise stay off the board until the stream reconnects.
  async function load(attempt = 0) {
    loading?.abort();
    const run = new AbortController();
    loading = run;
    const { signal } = run;
    const before = new Set([...models.keys(), ...waiting.keys()]);
    for (const event of pending) if (event.call_id) before.add(event.call_id);
    let lists = null;
    let again = false;
    try {
      // In lifecycle order only when there are cards the lists may prove ended (see listLive).
      const live = listLive(signal, before.size > 0);
      lists = await Promise.all([api.listCalls({ limit: RECENT_LIMIT }, { signal }), live]);
    } catch (failure) {
      if (signal.aborted) return;
      run.abort(); // the other lists' reads too: this catch-up is over
      again = failure.status !== 401;
      if (again && attempt === 0) toast(`Could not load calls (${failure.message}): trying again.`, "error");
    }
    const confirmed = new Set();
    if (lists) {
      const [recent, live] = lists;
      for (const call of live) {
        upsert(call);
        confirmed.add(call.id);
      }
      for (const call of recent.calls) upsert(call);
    }
    // Still being read for the first time, and in no list (a listed call has a card now).
    const firstReads = lists ? [...waiting.values()].filter((read) => !models.has(read.id)) : [];
    applyPending();
    // Not live in any list, and its card has no final status (it may have seen the call
    // end, not how: Twilio's last status may have been lost with the stream).
    const endedUnseen = lists ? [...before].filter((id) => !confirmed.has(id) && unfinished(id)) : [];
    const toRead = shownOnceEnded(endedUnseen);
    arrange();
    if (again) {
      const wait = new AbortController(); // a newer load, or leaving, cancels the retry
      loading = wait;
      await pause(Math.min(RETRY_MS * 2 ** attempt, RETRY_MAX_MS), wait.signal);
      if (!wait.signal.aborted) load(attempt + 1);
      return;
    }
    await Promise.all([reread(toRead, signal), rereadAfterFirstReads(firstReads, signal)]);
    if (!signal.aborted) loading = null;
  }

  const stream = api.events(null, {
    onEvent,
    onState: (state, info) => {
      setConnection(state, info);
      if (state === "live" && info.resumed) {
        // Catch up on what happened while the stream was down: the lists first, then
        // the replay, which follows on from what the board has only from a replayed start.
        loaded = false;
        pending.push(RESUMED);
        load();
      }
    },
  });
  load();

  const ticker = setInterval(() => {
    const now = Date.now();
    for (const [id, row] of rows) {
      const model = models.get(id);
      if (model?.live) paintDuration(row, model, now);
    }
  }, 1000);

  return () => {
    mounted.abort();
    loading?.abort();
    stream.stop();
    clearInterval(ticker);
    cancelAnimationFrame(frame);
  };
}
