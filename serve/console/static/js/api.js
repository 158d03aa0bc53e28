// The call API and its live event streams, with the user's bearer token.
//
// HTTP requests carry `Authorization: Bearer <token>`. Browsers cannot set
// headers on a WebSocket, so the streams offer the token as the subprotocol
// `bearer.<token>` (never in the URL, which would land in logs and history).

export class ApiError extends Error {
  /** `status` 0 means the server could not be reached. `fields` maps a body field to its message. */
  constructor(status, message, { fields = {}, body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.fields = fields;
    this.body = body;
  }
}

// RFC 7230 token characters: what a WebSocket subprotocol may contain.
const SUBPROTOCOL = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function tokenWorksForStreams(token) {
  return SUBPROTOCOL.test(`bearer.${token}`);
}

// What an HTTP header can carry of a token: visible ASCII. Anything else (a zero-width
// space pasted with it, a letter with an accent) makes fetch refuse the request itself.
const HEADER_TOKEN = /^[\x21-\x7e]+$/;
const NOT_A_TOKEN = "This token has characters an API token cannot have (only visible ASCII: letters, digits, punctuation). Check what was pasted.";

/** Why `token` cannot be sent at all, or "" if it can. */
export function tokenProblem(token) {
  return HEADER_TOKEN.test(token) ? "" : NOT_A_TOKEN;
}

// Error text from a server is shown to the user: kept to a readable length.
const MESSAGE_MAX = 300;
// Reason phrases for when the response has none (HTTP/2 sends no status text).
const REASONS = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  408: "Request Timeout",
  409: "Conflict",
  413: "Content Too Large",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

function capped(text) {
  return text.length > MESSAGE_MAX ? `${text.slice(0, MESSAGE_MAX - 1)}…` : text;
}

/** "the server answered 502 (Bad Gateway)": for an answer with no JSON body to say more. */
function answered(response) {
  const reason = capped(response.statusText || REASONS[response.status] || "");
  return `the server answered ${response.status}${reason ? ` (${reason})` : ""}`;
}

function describe(response, body) {
  const detail = body?.detail;
  const fields = {};
  if (Array.isArray(detail)) {
    const lines = detail.map((error) => {
      const loc = (error.loc ?? []).filter((part) => part !== "body" && part !== "query");
      const field = loc.length ? String(loc[0]) : "";
      const message = capped(String(error.msg ?? "is invalid").replace(/^Value error, /, ""));
      if (field && !(field in fields)) fields[field] = message;
      return field ? `${field}: ${message}` : message;
    });
    return { message: capped(lines.join("; ")) || `request refused (${response.status})`, fields };
  }
  if (typeof detail === "string" && detail.trim()) return { message: capped(detail), fields };
  return { message: answered(response), fields };
}

export class Api {
  /**
   * @param {string} token the API token the user typed
   * @param {{onUnauthorized?: (message: string) => void}} hooks
   */
  constructor(token, { onUnauthorized = () => {} } = {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /**
   * `signal` (an AbortSignal) cancels the request: it then rejects with the signal's
   * reason, and an answer it was too late to stop signs no one out.
   */
  async request(method, path, body, { signal } = {}) {
    // fetch would throw as it does for a network failure: say what is wrong instead.
    if (tokenProblem(this.token)) throw new ApiError(0, tokenProblem(this.token));
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal,
      });
    } catch {
      if (signal?.aborted) throw signal.reason;
      throw new ApiError(0, "Cannot reach the Switchboard server. Check your connection and try again.");
    }
    const text = await response.text();
    signal?.throwIfAborted();
    // Only a JSON body is the API's: anything else (a proxy's HTML error page) is not shown.
    let parsed = null;
    let json = true;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      json = false;
    }
    if (response.ok && json) return parsed;
    if (response.ok) throw new ApiError(response.status, `${answered(response)}, but not with JSON`);
    const { message, fields } = describe(response, parsed);
    const error = new ApiError(response.status, message, { fields, body: parsed });
    if (response.status === 401) this.onUnauthorized("The server refused the API token. Sign in again.");
    throw error;
  }

  listCalls(params = {}, { signal } = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
    }
    const suffix = query.toString();
    return this.request("GET", `/calls${suffix ? `?${suffix}` : ""}`, undefined, { signal });
  }

  getCall(id, { signal } = {}) {
    return this.request("GET", `/calls/${encodeURIComponent(id)}`, undefined, { signal });
  }

  placeCall(body) {
    return this.request("POST", "/calls", body);
  }

  hangUp(id) {
    return this.request("POST", `/calls/${encodeURIComponent(id)}/hangup`);
  }

  /** Whether this server offers web calls (POST /calls/web), read from its open API schema. */
  async webCallsOffered() {
    this.offered ??= fetch("/openapi.json", { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : {}))
      .then((schema) => Boolean(schema?.paths?.["/calls/web"]?.post))
      .catch(() => false);
    return this.offered;
  }

  /** Start a web call: {call, media_url, call_sid, stream_token}. */
  startWebCall(body) {
    return this.request("POST", "/calls/web", body);
  }

  /**
   * Live events of one call (`callId`) or of every call (null).
   * `onEvent(message)` for each event; `onState(state, info)` with state one of
   * "connecting", "live" (info.resumed after a reconnect), "reconnecting", "gone";
   * info.reason says why it is not live, when known (the server's close reason).
   */
  events(callId, { onEvent, onState = () => {} }) {
    const path = callId === null ? "/events" : `/calls/${encodeURIComponent(callId)}/events`;
    return new LiveStream(this, path, onEvent, onState);
  }
}

const CLOSE_POLICY = 1008;
const CLOSE_TRY_LATER = 1013;
const CLOSE_UNKNOWN_CALL = 4404;
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
// Waits are drawn from [1 - JITTER, 1] of the backoff: pages a restart cut off together
// do not all come back in the same instant.
const JITTER = 0.25;
// The server said "try again later" (it let this page go for falling behind): not sooner.
const TRY_LATER_MS = 2000;
// A socket counts as a working connection (the wait before the next one starts over)
// once it stayed open this long. Events are no sign: every socket the server accepts
// is sent its replay at once, also by a server that then closes it (1011 when its call
// store fails, 1013, 1001), and each reconnect re-reads the board or the call.
const STABLE_MS = 10_000;
// Events received before telling the server so (serve/event_stream.py: ACK_EVERY).
const ACK_EVERY = 100;

/** One WebSocket, reopened with backoff until `stop()`; a refused token stops it. */
class LiveStream {
  constructor(api, path, onEvent, onState) {
    this.api = api;
    this.path = path;
    this.onEvent = onEvent;
    this.onState = onState;
    this.stopped = false;
    this.opened = 0;
    this.backoff = FIRST_BACKOFF_MS;
    this.timer = null;
    this.stableTimer = null;
    this.reason = ""; // the last close's, until a connection works
    this.socket = null;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.onState(this.opened ? "reconnecting" : "connecting", this.reason ? { reason: this.reason } : {});
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}${this.path}`, [`bearer.${this.api.token}`]);
    } catch {
      this.stopped = true;
      this.onState("gone", { reason: "this token has characters a live stream cannot carry" });
      return;
    }
    this.socket = socket;
    let opened = false;
    let received = 0; // acknowledged every ACK_EVERY: the server lets a silent viewer go
    const working = () => {
      clearTimeout(this.stableTimer);
      this.backoff = FIRST_BACKOFF_MS;
      this.reason = "";
    };
    socket.addEventListener("open", () => {
      opened = true;
      if (this.stopped) return;
      this.stableTimer = setTimeout(working, STABLE_MS);
      this.onState("live", { resumed: this.opened > 0 });
      this.opened += 1;
    });
    socket.addEventListener("message", (message) => {
      if (this.stopped) return;
      received += 1;
      if (received % ACK_EVERY === 0 && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ ack: received }));
      }
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // not ours to interpret
      }
      if (event && typeof event.type === "string") this.onEvent(event);
    });
    socket.addEventListener("close", (closed) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      clearTimeout(this.stableTimer);
      if (closed.code === CLOSE_POLICY) {
        this.stopped = true;
        this.onState("gone", { reason: "token refused" });
        this.api.onUnauthorized("The server refused the API token. Sign in again.");
        return;
      }
      if (closed.code === CLOSE_UNKNOWN_CALL) {
        this.stopped = true;
        this.onState("gone", { reason: "unknown call" });
        return;
      }
      if (!opened) {
        // A refused token never shows here as 1008: the server refuses the handshake
        // (403), which a browser reports as 1006. HTTP says 401, and signs out.
        this.api.request("GET", "/calls?limit=1").then(
          () => this.#retry(),
          (failure) => {
            if (this.stopped) return; // signed out meanwhile (the 401 does that): not ours
            if (failure instanceof ApiError && failure.status === 401) {
              this.stopped = true;
              this.onState("gone", { reason: "token refused" });
            } else this.#retry();
          },
        );
        return;
      }
      this.#retry(closed.reason, closed.code === CLOSE_TRY_LATER ? TRY_LATER_MS : 0);
    });
  }

  /** `reason`: why the server closed the last socket, if it said; `atLeast`: its wait. */
  #retry(reason = "", atLeast = 0) {
    if (this.stopped) return;
    if (reason) this.reason = reason;
    this.onState("reconnecting", this.reason ? { reason: this.reason } : {});
    const wait = Math.max(atLeast, Math.round(this.backoff * (1 - JITTER * Math.random())));
    this.timer = setTimeout(() => this.connect(), wait);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      if (socket.readyState === WebSocket.CONNECTING) {
        socket.addEventListener("open", () => socket.close(1000));
      } else {
        socket.close(1000);
      }
    }
  }
}
