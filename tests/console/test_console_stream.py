"""The live streams: how they reconnect, and what the top bar says about them."""

from __future__ import annotations

from typing import Any

Console = Any  # the `console` fixture of conftest.py
ConsoleWith = Any  # the `console_with` fixture of conftest.py

# Drives api.js's stream against a fake WebSocket, with the timers in hand and
# Math.random() answering `random`: each socket does what `script` says, and the delay of
# each reconnect is noted. "refuse": accepted, then closed 1011 at once (the server's
# answer when its call store fails); "event": an event (its replay), then closed 1013;
# "replay": three events, then closed 1001; "stable": open until the stream counts it as
# working, then closed 1001.
BACKOFF = """
async ([script, random]) => {
  const { Api } = await import('/console/js/api.js');
  const realRandom = Math.random;
  Math.random = () => random;
  const timers = new Map();
  let nextTimer = 1;
  const realSetTimeout = window.setTimeout;
  const realClearTimeout = window.clearTimeout;
  window.setTimeout = (run, ms) => { timers.set(nextTimer, { run, ms }); return nextTimer++; };
  window.clearTimeout = (id) => { timers.delete(id); };
  const fire = () => {
    if (timers.size !== 1) throw new Error(`${timers.size} timers due, not one`);
    const [[id, timer]] = timers;
    timers.delete(id);
    timer.run();
    return timer.ms;
  };
  const sockets = [];
  window.WebSocket = class extends EventTarget {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor() { super(); this.readyState = 0; sockets.push(this); }
    send() {}
    close() { this.readyState = 3; }
  };
  const open = (socket) => { socket.readyState = 1; socket.dispatchEvent(new Event('open')); };
  const shut = (socket, code, reason) => {
    socket.readyState = 3;
    socket.dispatchEvent(new CloseEvent('close', { code, reason }));
  };
  const states = [];
  const stream = new Api('t').events(null, {
    onEvent() {},
    onState: (state, info) => states.push([state, info.reason ?? null]),
  });
  const delays = [];
  try {
    for (const step of script) {
      const socket = sockets.at(-1);
      open(socket);
      if (step === 'refuse') shut(socket, 1011, 'call store error: database is locked');
      if (step === 'event') {
        socket.dispatchEvent(new MessageEvent('message', { data: '{"type": "noise"}' }));
        shut(socket, 1013, 'subscriber dropped');
      }
      if (step === 'replay') {
        for (const n of [1, 2, 3]) {
          const data = `{"type": "noise", "n": ${n}}`;
          socket.dispatchEvent(new MessageEvent('message', { data }));
        }
        shut(socket, 1001, 'event feed closed');
      }
      if (step === 'stable') {
        fire();  // the socket has been open long enough
        shut(socket, 1001, 'event feed closed');
      }
      delays.push(fire());  // the reconnect
    }
  } finally {
    stream.stop();
    Math.random = realRandom;
    window.setTimeout = realSetTimeout;
    window.clearTimeout = realClearTimeout;
  }
  return { delays, states, sockets: sockets.length };
}
"""


async def test_a_server_that_accepts_and_closes_at_once_is_retried_backing_off(
    console: Console,
) -> None:
    """Opening is not enough to count a connection as working (the wait before the next
    one would start over, and a failing server be asked twice a second, each time read in
    full), nor is its replay: staying open a while is."""
    page = await console.open(signed_in=False)
    script = ["refuse"] * 7 + ["event", "replay", "refuse", "stable", "refuse"]
    got = await page.evaluate(BACKOFF, [script, 0])
    assert got["delays"] == [
        *[500, 1000, 2000, 4000, 8000, 10000, 10000],
        *[10000, 10000, 10000, 500, 1000],
    ]
    assert got["sockets"] == len(script) + 1
    # While it is down, the top bar can say why.
    assert ["reconnecting", "call store error: database is locked"] in got["states"]
    assert got["states"][-1] == ["reconnecting", "call store error: database is locked"]


async def test_a_server_that_replays_then_closes_is_retried_backing_off(
    console: Console,
) -> None:
    """Every socket is sent its replay at once: a server that then closes it (1013, 1001)
    is asked again later and later, not every half second with the page re-read each
    time; after a 1013 ("try again later") not within 2 s."""
    page = await console.open(signed_in=False)
    got = await page.evaluate(BACKOFF, [["event"] * 6, 0])
    assert got["delays"] == [2000, 2000, 2000, 4000, 8000, 10000]
    got = await page.evaluate(BACKOFF, [["replay"] * 6, 0])
    assert got["delays"] == [500, 1000, 2000, 4000, 8000, 10000]
    assert got["sockets"] == 7


async def test_reconnects_are_spread_out(console: Console) -> None:
    """Each wait is drawn from the last quarter below its backoff: pages that one restart
    cut off do not all come back at the same moment."""
    page = await console.open(signed_in=False)
    got = await page.evaluate(BACKOFF, [["replay"] * 6, 0.6])
    assert got["delays"] == [425, 850, 1700, 3400, 6800, 8500]  # 0.85 of 500, 1000...
    got = await page.evaluate(BACKOFF, [["event"] * 4, 0.6])
    assert got["delays"] == [2000, 2000, 2000, 3400]


async def test_a_token_a_stream_cannot_carry_says_so_where_live_would_be(
    browser: Any, console_with: ConsoleWith
) -> None:
    """A WebSocket subprotocol takes only RFC 7230 token characters: a token with others
    works for requests, and the top bar says why nothing is live, also when it was saved."""
    odd = "key/with=padding=="
    async with console_with(browser, more_tokens=[odd]) as console:
        page = await console.open(signed_in=False)
        await console.sign_in(odd)
        await page.locator("#board-title").wait_for()
        offline = "Offline (this token has characters a live stream cannot carry)"
        await page.locator("#connection", has_text=offline).wait_for()
        await page.locator(".toast.error", has_text="live updates will not work").wait_for()
        await page.reload()  # signed in with the saved token
        await page.locator("#board-title").wait_for()
        await page.locator("#connection", has_text=offline).wait_for()
        await page.locator(".toast.error", has_text="live updates will not work").wait_for()
        assert console.unexpected_errors() == []
