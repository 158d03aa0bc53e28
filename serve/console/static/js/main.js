// The console's entry point: sign-in gate, routing between views, the top bar.
//
// Routes live in the URL's fragment, so views can be bookmarked and the back
// button works without server routes: #/ (live calls), #/history?…, #/calls/<id>.

import { Api, ApiError, tokenProblem, tokenWorksForStreams } from "./api.js";
import { focusHeading, h, replace } from "./dom.js";
import { clearToken, loadToken, saveToken } from "./store.js";
import { mountBoard } from "./views/board.js";
import { mountCall } from "./views/call.js";
import { mountHistory } from "./views/history.js";
import { webCallBar } from "./views/webcall_bar.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("sign-out");
const connection = document.getElementById("connection");
const toasts = document.getElementById("toasts");
const webcall = document.getElementById("webcall");

let api = null;
let webCalls = null;
let startWebCall = null;
let dispose = () => {};

/** A short message that goes away by itself; `kind` is "info" or "error". */
export function toast(message, kind = "info") {
  const note = h("div", { class: `toast ${kind}` }, message);
  toasts.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

/** The live stream's state in the top bar; `info.reason` says why it is not live. */
function setConnection(state, info = {}) {
  const labels = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", gone: "Offline" };
  const label = labels[state] ?? "";
  const reason = state && state !== "live" ? info?.reason : "";
  connection.textContent = reason ? `${label} (${reason})` : label;
  connection.dataset.state = state ?? "";
}

function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const params = new URLSearchParams(query);
  const call = path.match(/^\/calls\/([^/]+)$/);
  if (call) {
    try {
      return { name: "call", id: decodeURIComponent(call[1]), params };
    } catch {
      return { name: "unknown" }; // a malformed escape: no call has that id
    }
  }
  if (path === "/history") return { name: "history", params };
  return { name: "board", params };
}

function mountUnknown(container) {
  replace(
    container,
    h(
      "div",
      { class: "panel" },
      h("h1", {}, "Page not found"),
      h("p", {}, "This console has no page at this address."),
      h("p", {}, h("a", { href: "#/" }, "Live calls"), " · ", h("a", { href: "#/history" }, "History")),
    ),
  );
  return () => {};
}

function route() {
  if (!api) return;
  const current = parseRoute();
  dispose();
  dispose = () => {};
  setConnection(null);
  for (const link of nav.querySelectorAll("a")) {
    const active = link.dataset.route === current.name;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const context = { api, toast, setConnection, startWebCall, navigate: (hash) => (location.hash = hash) };
  replace(main);
  if (current.name === "call") dispose = mountCall(main, context, current.id);
  else if (current.name === "history") dispose = mountHistory(main, context, current.params);
  else if (current.name === "board") dispose = mountBoard(main, context);
  else dispose = mountUnknown(main);
  const title = { call: "Call", history: "History", board: "Live calls", unknown: "Not found" }[current.name];
  document.title = `${title} · Switchboard`;
  focusHeading(main);
}

// Routes are fragments that start with "/": any other (an in-page anchor) leaves the view be.
function onHashChange() {
  if (location.hash.length > 1 && !location.hash.startsWith("#/")) return;
  route();
}

/**
 * Back to the sign-in form. `from` is the Api whose token the server refused (none for
 * the button): only the current one counts, as a late answer to a request made before
 * a sign-out must not sign out whoever signed in since.
 */
function signOut(message, from = null) {
  if (!api || (from && from !== api)) return;
  // A web call runs under the token too: hang it up (its microphone and media socket with it).
  webCalls.close("You signed out, so the web call was hung up.", { tokenWorks: !from });
  webCalls = null;
  startWebCall = null;
  dispose();
  dispose = () => {};
  api = null;
  clearToken();
  showSignIn(message);
}

function start(token) {
  const current = new Api(token, { onUnauthorized: (message) => signOut(message, current) });
  api = current;
  webCalls = webCallBar(webcall, { api, toast });
  startWebCall = webCalls.start;
  nav.hidden = false;
  signOutButton.hidden = false;
  route();
  if (!tokenWorksForStreams(token)) {
    toast("This token has characters a live stream cannot carry: live updates will not work.", "error");
  }
}

function showSignIn(message = "") {
  nav.hidden = true;
  signOutButton.hidden = true;
  setConnection(null);
  document.title = "Sign in · Switchboard";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "token-help token-error",
  });
  const remember = h("input", { id: "remember", type: "checkbox", checked: true });
  const error = h("p", { id: "token-error", class: "field-error", role: "alert" }, message);
  const submit = h("button", { class: "button primary", type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "panel sign-in", novalidate: true, "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to Switchboard"),
    h(
      "p",
      {},
      "Place AI phone calls, watch them live and read their records. ",
      "Enter the API token your server was started with (SWITCHBOARD_API_TOKEN).",
    ),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "Sent only to this server, as a bearer token; kept in this browser only as you choose below.",
    ),
    h("label", { class: "check" }, remember, " Remember on this device"),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter the API token.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    if (tokenProblem(token)) {
      error.textContent = tokenProblem(token);
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Checking…";
    error.textContent = "";
    try {
      await new Api(token).listCalls({ limit: 1 });
    } catch (failure) {
      const refused = failure instanceof ApiError && failure.status === 401;
      error.textContent = refused ? "The server refused this token. Check it and try again." : failure.message;
      input.setAttribute("aria-invalid", "true");
      submit.disabled = false;
      submit.textContent = "Sign in";
      input.focus();
      return;
    }
    saveToken(token, remember.checked);
    start(token);
  });
  replace(main, form);
  input.focus();
}

signOutButton.addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", onHashChange);
// The skip link goes to the content without touching the fragment, which holds the route.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

const saved = loadToken();
if (saved) start(saved);
else showSignIn();
