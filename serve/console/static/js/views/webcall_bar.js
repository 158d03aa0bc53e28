// The web call bar: one call from this browser's microphone at a time, kept
// at the bottom of every view (a call must survive moving between views).

import { ApiError } from "../api.js";
import { h, replace, setText } from "../dom.js";
import { clock } from "../format.js";
import { WebCall } from "../webcall/session.js";

function meter(label) {
  const fill = h("span", { class: "meter-fill" });
  const node = h("span", { class: `speaker ${label.toLowerCase()}` }, label, h("span", { class: "meter" }, fill));
  return { node, fill };
}

function level(dbfs) {
  return Math.max(0, Math.min(1, (dbfs + 60) / 60));
}

/**
 * Returns `start(body)`, which places a web call with the form's fields (resolving to
 * the call's record, or null if none was started; rejecting with the API's error other
 * than 401, for the form to show as it does a phone call's), and
 * `close(detail, {tokenWorks})`, which hangs up the running one (if any) and
 * refuses new ones: signing out ends what was started under the token.
 */
export function webCallBar(bar, { api, toast }) {
  let current = null;
  let closed = false;
  let tokenWorks = false; // when closed: whether the token can still hang a call up

  async function start(body) {
    if (closed) return null;
    if (current) {
      toast("A web call is already running: hang it up first.", "error");
      return null;
    }
    let minted;
    try {
      minted = await api.startWebCall(body);
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 401) return null; // signing out
      throw failure;
    }
    const call = minted.call;
    if (closed) {
      // Signed out meanwhile: the microphone is not opened for it. The server has recorded
      // the call and holds an actor for it, though: hang it up while the token still works.
      if (tokenWorks) api.hangUp(call.id).catch(() => {});
      return null;
    }
    const state = h("span", { class: "webcall-state", role: "status" }, "Starting…");
    const timer = h("span", { class: "duration" });
    const caller = meter("You");
    const agent = meter("Agent");
    const mute = h("button", { class: "button", type: "button", "aria-pressed": "false" }, "Mute");
    const end = h("button", { class: "button danger", type: "button" }, "Hang up");
    const session = new WebCall({
      mediaUrl: minted.media_url,
      callSid: minted.call_sid,
      streamToken: minted.stream_token,
      onState: (name, detail) => {
        setText(state, { starting: "Connecting…", live: "Live", ended: "Ended", failed: "Failed" }[name] ?? name);
        bar.dataset.state = name;
        if (name === "live") started = Date.now();
        if (name === "ended" || name === "failed") finish(detail, name === "failed");
      },
      onLevels: ({ caller: you, agent: them }) => {
        caller.fill.style.transform = `scaleX(${level(you).toFixed(2)})`;
        agent.fill.style.transform = `scaleX(${level(them).toFixed(2)})`;
      },
    });
    let started = 0;
    const ticker = setInterval(() => started && setText(timer, clock((Date.now() - started) / 1000)), 1000);
    mute.addEventListener("click", () => {
      session.setMuted(!session.muted);
      // A toggle button keeps its name: its pressed state says whether it is on.
      mute.setAttribute("aria-pressed", String(session.muted));
    });
    end.addEventListener("click", () => session.hangUp());
    replace(
      bar,
      h("strong", {}, "Web call"),
      state,
      timer,
      h("span", { class: "speakers" }, caller.node, agent.node),
      h("a", { href: `#/calls/${encodeURIComponent(call.id)}` }, "Open"),
      mute,
      end,
    );
    bar.hidden = false;
    current = session;

    function finish(detail, failed) {
      clearInterval(ticker);
      current = null;
      // Over before the page joined it (hung up at the microphone prompt, a refused
      // handshake): the server would hold the call's actor for a browser that never
      // comes, until it gives up. A refused token makes this a 401, which is ignored.
      if (!started) api.hangUp(call.id).catch(() => {});
      toast(detail || "The web call ended.", failed ? "error" : "info");
      mute.disabled = true;
      end.disabled = true;
      setTimeout(() => {
        if (!current && bar.contains(end)) bar.hidden = true; // unless another call took the bar
      }, 4000);
    }

    await session.start();
    return call;
  }

  /** `tokenWorks`: signed out by the user (not refused), so a call minted late can be hung up. */
  function close(detail, { tokenWorks: works = false } = {}) {
    closed = true;
    tokenWorks = works;
    current?.hangUp(detail);
  }

  return { start, close };
}
