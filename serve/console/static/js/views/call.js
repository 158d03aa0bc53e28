// One call: its transcript as it streams, tool calls inline, its timeline,
// usage and cost, the hang-up button while it is live, and downloads.

import { ApiError } from "../api.js";
import { download, focusHeading, h, replace, setText } from "../dom.js";
import { clock, median, millis, ms, offset, phaseLabel, statusLabel, usd, when } from "../format.js";
import { CallModel } from "../live_call.js";
import { transcriptText } from "../transcript_text.js";
import { finishedTurn, renderTool, renderTurn, signature, timelineLabel, updateTurn } from "./call_parts.js";

const USAGE_REFRESH_MS = 2000;
const CATCH_UP_MS = 500; // a reply the stream cannot be followed for is re-read at most this often
const RETRY_MS = 1000; // a call that could not be read is read again after this, doubling
const RETRY_MAX_MS = 15_000; // up to this
const ANNOUNCED_KEPT = 3; // finished turns left in the announcer (older ones are removed)

export function mountCall(container, { api, toast, setConnection }, id) {
  let model = null;
  let stream = null;
  let pending = [];
  let frame = 0;
  let painted = -1;
  let usageTimer = 0;
  let catchUpTimer = 0;
  let retryTimer = 0;
  let failures = 0; // reads of the call that failed in a row, before it was first read
  let reading = false; // the first read is out
  const turnNodes = new Map(); // entry -> {node, signature, announced}
  const timelineNodes = new WeakMap(); // timeline item -> its <li>
  let transcriptShown = false;
  let timelineShown = 0; // timeline items on screen (the model only ever adds some)
  let usageShown = ""; // the usage rows on screen, as text

  const title = h("h1", {}, "Call");
  const status = h("span", { class: "badge" });
  const phase = h("span", { class: "phase" });
  const duration = h("span", { class: "duration" });
  const latency = h("span", { class: "latency" });
  const hangup = h("button", { class: "button danger", type: "button", hidden: true }, "Hang up");
  // Not a live region: a reply grows word by word. Each turn is announced once, when it
  // is over (said in full, or cut), by the announcer.
  const transcript = h("ol", { class: "transcript", id: "transcript" });
  const announcer = h("div", { class: "visually-hidden", id: "transcript-announcer", "aria-live": "polite" });
  const loadErrorText = h("p", {});
  const retryButton = h("button", { class: "button", type: "button" }, "Try again now");
  const loadError = h("div", { class: "panel load-error", role: "alert", hidden: true }, loadErrorText, retryButton);
  const transcriptEmpty = h("p", { class: "empty" }, "Nothing said yet.");
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const showPhases = h("input", { type: "checkbox", id: "show-phases", checked: true });
  const usage = h("dl", { class: "usage", id: "usage" });
  const details = h("dl", { class: "details", id: "details" });
  const downloads = h(
    "div",
    { class: "downloads" },
    h("button", { class: "button", type: "button", onclick: () => save("json") }, "Download JSON"),
    h("button", { class: "button", type: "button", onclick: () => save("text") }, "Download text"),
  );
  const scroller = h("div", { class: "transcript-box" }, transcriptEmpty, transcript);

  replace(
    container,
    h(
      "div",
      { class: "call-view" },
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Live calls"), " · ", h("a", { href: "#/history" }, "History")),
      loadError,
      h(
        "header",
        { class: "call-head" },
        h("div", {}, title, h("p", { class: "call-stats" }, status, phase, duration, latency)),
        h("div", { class: "call-actions" }, hangup, downloads),
      ),
      h(
        "div",
        { class: "call-columns" },
        h("section", { class: "panel", "aria-labelledby": "transcript-title" }, h("h2", { id: "transcript-title" }, "Transcript"), scroller, announcer),
        h(
          "div",
          { class: "side" },
          h("section", { class: "panel", "aria-labelledby": "timeline-title" },
            h("h2", { id: "timeline-title" }, "Timeline"),
            h("label", { class: "check" }, showPhases, " Show phase changes"),
            timeline),
          h("section", { class: "panel", "aria-labelledby": "usage-title" }, h("h2", { id: "usage-title" }, "Usage and cost"), usage),
          h("section", { class: "panel", "aria-labelledby": "details-title" }, h("h2", { id: "details-title" }, "Details"), details),
        ),
      ),
    ),
  );

  showPhases.addEventListener("change", () => {
    timeline.classList.toggle("hide-phases", !showPhases.checked);
  });

  let confirmTimer = 0;
  hangup.addEventListener("click", async () => {
    if (!hangup.classList.contains("confirm")) {
      hangup.classList.add("confirm");
      setText(hangup, "Confirm hang-up");
      confirmTimer = setTimeout(() => {
        hangup.classList.remove("confirm");
        setText(hangup, "Hang up");
      }, 5000);
      return;
    }
    clearTimeout(confirmTimer);
    hangup.disabled = true;
    setText(hangup, "Hanging up…");
    try {
      await api.hangUp(id);
      toast("Hang-up requested.");
    } catch (failure) {
      if (failure instanceof ApiError && failure.status !== 401) toast(failure.message, "error");
      hangup.disabled = false;
    }
    hangup.classList.remove("confirm");
    setText(hangup, hangup.disabled ? "Hanging up…" : "Hang up");
  });

  async function save(kind) {
    let detail;
    try {
      detail = await api.getCall(id, { signal: mounted.signal });
    } catch (failure) {
      if (mounted.signal.aborted) return; // left, or signed out: nothing is saved
      if (failure.status !== 401) toast(`Could not read the call: ${failure.message}`, "error");
      return;
    }
    if (mounted.signal.aborted) return; // the record came after a sign-out: it is not offered
    if (kind === "json") {
      download(`call-${id}.json`, `${JSON.stringify(detail, null, 2)}\n`, "application/json");
    } else {
      download(`call-${id}.txt`, transcriptText(detail), "text/plain;charset=utf-8");
    }
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(paint);
  }

  function paint() {
    frame = 0;
    if (!model || painted === model.version) return;
    painted = model.version;
    const record = model.record;
    const titles = { inbound: `Call from ${record.from}`, web: "Web call" };
    setText(title, titles[record.direction] ?? `Call to ${record.to}`);
    setText(status, statusLabel(model.status));
    status.dataset.status = model.status;
    setText(phase, model.live ? phaseLabel(model.phase) : model.endReason ? `Ended: ${model.endReason}` : "");
    phase.dataset.speaking = model.speaking ?? "";
    const latencies = model.latencies;
    const parts = [];
    if (model.answerLatency !== null) parts.push(`First words ${millis(model.answerLatency)} after answer`);
    if (latencies.length) {
      const replies = `${latencies.length} repl${latencies.length === 1 ? "y" : "ies"}`;
      parts.push(`Reply latency ${millis(latencies.at(-1))} (median ${millis(median(latencies))}, ${replies})`);
    }
    setText(latency, parts.join(" · "));
    hangup.hidden = !model.live;
    paintDuration();
    paintTranscript();
    paintTimeline();
    paintUsage();
  }

  function paintDuration() {
    if (!model) return;
    const answered = ms(model.answeredAt);
    const end = ms(model.endedAt) ?? (model.live ? Date.now() : null);
    setText(duration, answered !== null && end !== null ? clock((end - answered) / 1000) : "");
  }

  function paintTranscript() {
    const start = model.record.created_at;
    const box = scroller;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const first = !transcriptShown; // what the call had when opened is read, not announced
    // Generation runs ahead of playback: a reply whose transcript is done may still be
    // playing, and may yet be cut. The last one is announced once it is played out.
    const lastAgent = model.entries.findLast((e) => e.kind === "turn" && e.role === "agent");
    const playing = model.live && model.speaking === "agent" ? lastAgent : null;
    let cursor = transcript.firstChild;
    for (const entry of model.entries) {
      const sig = `${signature(entry)}|${model.live}`;
      let known = turnNodes.get(entry);
      if (!known) {
        const node = entry.kind === "tool" ? renderTool(entry, start) : renderTurn(entry, start, model.live);
        known = { node, signature: sig, announced: false };
        turnNodes.set(entry, known);
      } else if (known.signature !== sig) {
        if (entry.kind === "tool") {
          const node = renderTool(entry, start);
          known.node.replaceWith(node);
          if (cursor === known.node) cursor = node;
          known.node = node;
        } else {
          updateTurn(known.node, entry, model.live);
        }
        known.signature = sig;
      }
      if (!known.announced && !(entry === playing && entry.state === "finished")) {
        const said = finishedTurn(entry);
        if (said !== null) {
          known.announced = true;
          if (!first) announce(said);
        }
      }
      if (known.node === cursor) cursor = cursor.nextSibling;
      else transcript.insertBefore(known.node, cursor);
    }
    transcriptEmpty.hidden = model.entries.length > 0;
    transcriptShown = true;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function announce(text) {
    announcer.append(h("p", {}, text));
    while (announcer.childElementCount > ANNOUNCED_KEPT) announcer.firstElementChild.remove();
  }

  // Items are only ever added to a call's timeline (in time order, mostly at the end):
  // only new ones are drawn.
  function paintTimeline() {
    if (model.timeline.length === timelineShown) return;
    const start = model.record.created_at;
    const atBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
    let cursor = timeline.firstChild;
    for (const item of model.timeline) {
      let node = timelineNodes.get(item);
      if (!node) {
        node = h(
          "li",
          { class: `event ${item.kind}`, dataset: { kind: item.kind } },
          h("time", { datetime: item.at, title: when(item.at) }, offset(start, item.at)),
          h("span", {}, timelineLabel(item)),
        );
        timelineNodes.set(item, node);
      }
      if (node === cursor) cursor = cursor.nextSibling;
      else timeline.insertBefore(node, cursor);
    }
    timelineShown = model.timeline.length;
    if (atBottom) timeline.scrollTop = timeline.scrollHeight; // follow a live call
  }

  function paintUsage() {
    const tokens = model.tokens ?? {};
    const rows = [
      ["Total tokens", tokens.total_tokens],
      ["Input tokens", tokens.input_tokens],
      ["  audio / text / cached", [tokens.input_audio_tokens, tokens.input_text_tokens, tokens.input_cached_tokens].map((n) => n ?? 0).join(" / ")],
      ["Output tokens", tokens.output_tokens],
      ["  audio / text", [tokens.output_audio_tokens, tokens.output_text_tokens].map((n) => n ?? 0).join(" / ")],
      ["Estimated cost", model.costUsd === null ? "–" : usd(model.costUsd)],
    ].map(([label, value]) => [label.trim(), String(value ?? 0)]);
    const shown = JSON.stringify(rows);
    if (shown === usageShown) return;
    usageShown = shown;
    replace(usage, rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
  }

  function paintDetails() {
    const r = model.record;
    const rows = [
      ["Call id", r.id],
      ["Direction", r.direction],
      ["To", r.to],
      ["From", r.from],
      ["Created", when(r.created_at)],
      ["Answered", when(r.answered_at)],
      ["Ended", when(r.ended_at)],
      ["Voice", r.voice ?? "server default"],
      ["Greeting", r.greeting ?? "–"],
      ["Twilio call SID", r.twilio_sid ?? "–"],
    ];
    replace(
      details,
      rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]),
      h("dt", {}, "Instruction"),
      h("dd", {}, h("pre", { class: "instruction" }, r.instruction || "–")),
      Object.keys(r.metadata ?? {}).length ? [h("dt", {}, "Metadata"), h("dd", {}, h("pre", {}, JSON.stringify(r.metadata, null, 2)))] : null,
    );
  }

  async function reload() {
    const detail = await api.getCall(id, { signal: mounted.signal });
    if (model) model.refresh(detail);
    else model = new CallModel(detail);
    paintDetails();
    schedule();
  }

  // A reply whose start the stream did not replay (it came back mid-reply): its words are
  // re-read from the record while it is spoken, a burst of them in one read.
  function catchUp() {
    if (catchUpTimer) return;
    catchUpTimer = setTimeout(async () => {
      model.missed = false; // words that come from now on may not be in this read: read again
      let read = true;
      try {
        await reload();
      } catch {
        read = false;
        model.missed = true; // the next event (or the reconnect's re-read) tries again
      }
      catchUpTimer = 0;
      if (read && model.missed) catchUp();
    }, CATCH_UP_MS);
  }

  function onEvent(event) {
    if (!model) {
      pending.push(event);
      return;
    }
    if (model.apply(event)) schedule();
    if (model.missed) catchUp();
    if (event.type === "usage") {
      // The record has the authoritative totals and cost: re-read, at most every couple of seconds.
      clearTimeout(usageTimer);
      usageTimer = setTimeout(() => reload().catch(() => {}), USAGE_REFRESH_MS);
    }
    // Twilio refused the hang-up (the call actor notes it): the call goes on, so it can
    // be asked again.
    if (event.type === "problem" && event.reason === "hangup_failed" && hangup.disabled && model.live) {
      hangup.disabled = false;
      setText(hangup, "Hang up");
      toast(`The call could not be hung up: ${event.message ?? "Twilio refused"}`, "error");
    }
    if (event.type === "call.ended" || (event.type === "call.status" && model.ended)) {
      reload().catch(() => {});
    }
  }

  // The first read of the call. Only a 404 means there is no such call: any other failure
  // (the server or its store briefly down) is said, and the read tried again, backing off.
  async function start() {
    if (reading || model) return;
    reading = true;
    clearTimeout(retryTimer);
    let detail;
    try {
      detail = await api.getCall(id, { signal: mounted.signal });
    } catch (failure) {
      reading = false;
      if (mounted.signal.aborted || failure.status === 401) return; // another view's now, or signing out
      if (failure.status === 404) {
        stream.stop();
        setConnection(null);
        const focused = container.contains(document.activeElement);
        replace(
          container,
          h(
            "div",
            { class: "panel" },
            h("h1", {}, "Call not found"),
            h("p", {}, "There is no call with this id."),
            h("p", {}, h("a", { href: "#/history" }, "Back to History")),
          ),
        );
        if (focused) focusHeading(container);
        return;
      }
      setText(loadErrorText, `Could not load this call: ${failure.message}. Trying again…`);
      loadError.hidden = false;
      retryTimer = setTimeout(start, Math.min(RETRY_MS * 2 ** failures, RETRY_MAX_MS));
      failures += 1;
      return;
    }
    reading = false;
    const retried = loadError.contains(document.activeElement); // "Try again now" pressed
    loadError.hidden = true;
    if (model) model.refresh(detail); // a reconnect's re-read came first
    else model = new CallModel(detail);
    paintDetails();
    if (retried) focusHeading(container); // not lost to the page with the hidden button
    for (const event of pending) model.apply(event);
    pending = [];
    if (model.missed) catchUp();
    if (!model.live) {
      // A finished call has nothing more to stream.
      stream.stop();
      setConnection(null);
    }
    schedule();
  }
  retryButton.addEventListener("click", start);

  // Leaving the view cancels its reads: a late answer must not paint over the next view.
  const mounted = new AbortController();
  // Open the stream first: its replay overlaps the record, and nothing falls in between.
  stream = api.events(id, {
    onEvent,
    onState: (state, info) => {
      setConnection(state, info);
      if (state === "live" && info.resumed) {
        if (!model) {
          start(); // not read yet: now, rather than when the retry was due
          return;
        }
        model.resume(); // before the replay comes in
        reload().catch(() => {});
      }
    },
  });
  start();
  const ticker = setInterval(() => model?.live && paintDuration(), 1000);

  return () => {
    mounted.abort();
    stream.stop();
    clearInterval(ticker);
    clearTimeout(usageTimer);
    clearTimeout(catchUpTimer);
    clearTimeout(confirmTimer);
    clearTimeout(retryTimer);
    cancelAnimationFrame(frame);
  };
}
