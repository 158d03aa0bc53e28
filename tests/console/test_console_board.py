"""The live board: every active call, kept current from the all-calls stream."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    LatencyMeasured,
    PhaseChanged,
)
from switchboard.store import NewCall

Console = Any  # the `console` fixture of conftest.py


def card(page: Any, call_id: str) -> Any:
    return page.locator(f'.call-card[data-call-id="{call_id}"]')


async def test_a_call_is_followed_from_creation_to_its_end(console: Console) -> None:
    page = await console.open()
    await page.locator("#active-calls").wait_for(state="attached")
    assert await page.locator(".empty", has_text="No calls in progress").is_visible()

    call = await console.new_call("+15551230001")
    row = card(page, call.id)
    await row.locator(".badge", has_text="Queued").wait_for()
    assert await page.locator("#active-calls .call-card").count() == 1
    assert await page.text_content("#board-title .count") == "(1)"

    await console.status(call.id, "ringing")
    await row.locator(".badge", has_text="Ringing").wait_for()
    t = time.time()
    await console.status(call.id, "in-progress", at=t)
    await row.locator(".badge", has_text="In progress").wait_for()

    # Who is speaking, and the reply latency the call measured.
    await console.act(call.id, PhaseChanged("awaiting_answer", "idle"), at=t + 0.1)
    await console.act(call.id, CallerTurnStarted("c1"), at=t + 0.2)
    await row.locator(".speaker.caller.active").wait_for()
    assert await row.locator(".speaker.agent.active").count() == 0
    await console.act(call.id, CallerTurnTranscribed("c1", "Hello?"), at=t + 1.0)
    await console.act(call.id, PhaseChanged("idle", "thinking"), at=t + 1.1)
    await console.act(
        call.id,
        PhaseChanged("thinking", "speaking"),
        LatencyMeasured("response", 750.4),
        at=t + 1.85,
    )
    await console.act(call.id, AgentTurnStarted("a1"), AgentTranscriptGrew("a1", "Hi there"))
    await row.locator(".speaker.agent.active").wait_for()
    assert await row.locator(".speaker.caller.active").count() == 0
    await row.locator(".latency", has_text="Reply 750 ms · median 750 ms").wait_for()
    await row.locator(".phase", has_text="Agent speaking").wait_for()
    await row.locator(".last-line", has_text="Agent: Hi there").wait_for()

    # Ended: off the active list, into "Recently ended".
    await console.act(call.id, FinishCall("caller hung up"))
    await console.status(call.id, "completed")
    await page.locator(f'#recent-calls .call-card[data-call-id="{call.id}"]').wait_for()
    assert await page.locator("#active-calls .call-card").count() == 0
    await page.locator(".empty", has_text="No calls in progress").wait_for()


async def test_calls_live_before_the_page_opened_are_listed(console: Console) -> None:
    ringing = await console.new_call("+15551230002")
    await console.status(ringing.id, "ringing")
    talking = await console.new_call("+15551230003")
    await console.status(talking.id, "in-progress")
    over = await console.new_call("+15551230004")
    await console.status(over.id, "busy")
    page = await console.open()
    await card(page, talking.id).wait_for()
    active = await page.locator("#active-calls .call-card").evaluate_all(
        "cards => cards.map(c => c.dataset.callId)"
    )
    assert sorted(active) == sorted([talking.id, ringing.id])
    assert await page.locator(f'#recent-calls [data-call-id="{over.id}"]').count() == 1


async def test_events_of_a_call_the_page_has_not_seen_fetch_it(console: Console) -> None:
    page = await console.open()
    await page.locator("#active-calls").wait_for(state="attached")
    # Created without a call.created event (say, the stream was down then).
    call = await console.store.create_call(
        NewCall(direction="inbound", to="+15005550006", from_="+15557654321")
    )
    await console.status(call.id, "in-progress")
    row = card(page, call.id)
    await row.locator(".badge", has_text="In progress").wait_for()
    assert await row.locator(".number").text_content() == "+15557654321"  # the caller
    assert "in" in await row.locator(".direction").text_content()


async def test_many_calls_and_a_burst_of_events_all_land(console: Console) -> None:
    page = await console.open()
    await page.locator("#active-calls").wait_for(state="attached")
    calls = [await console.new_call(f"+1555200{n:04d}") for n in range(120)]
    start = datetime.now(UTC)

    def at(ms: int) -> str:
        return (start + timedelta(milliseconds=ms)).isoformat()

    # One synchronous burst: 120 calls x 14 events, no awaits in between. Each
    # call's replies take n+10, n+30, n+20 and n ms: median n+15, last n.
    for n, call in enumerate(calls):
        console.publish(call.id, type="call.status", status="in-progress", at=at(0))
        for k, extra in enumerate((10, 30, 20, 0)):
            console.publish(call.id, type="call.phase", old="idle", new="thinking", at=at(k * 1000))
            console.publish(
                call.id, type="call.phase", old="thinking", new="speaking", at=at(k * 1000 + 500)
            )
            console.publish(
                call.id, type="latency", kind="response", ms=n + extra, at=at(k * 1000 + 500)
            )
        console.publish(call.id, type="transcript.agent_started", item_id=f"i{n}", at=at(6000))
    await page.locator("#board-title .count", has_text="(120)").wait_for()
    last = card(page, calls[-1].id)
    await last.locator(".latency", has_text="Reply 119 ms · median 134 ms").wait_for()
    stats = await page.locator("#active-calls .call-card").evaluate_all(
        """cards => cards.map(c => [c.dataset.callId, c.querySelector('.badge').textContent,
                                   c.querySelector('.latency').textContent])"""
    )
    shown = {call_id: (badge, latency) for call_id, badge, latency in stats}
    assert len(stats) == len(shown) == 120
    for n, call in enumerate(calls):
        assert shown[call.id] == ("In progress", f"Reply {n} ms · median {n + 15} ms"), n

    for call in calls[:100]:
        console.publish(call.id, type="call.ended", reason="done")
    await page.locator("#board-title .count", has_text="(20)").wait_for()
    assert await page.locator("#recent-calls .call-card").count() == 12  # the newest ended


async def test_a_dropped_stream_reconnects_and_catches_up(console: Console) -> None:
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    call = await console.new_call("+15551230005")
    await card(page, call.id).wait_for()
    # More events than the subscriber's queue holds, in one go: the hub drops
    # the browser's subscription (close 1013); the page reconnects and re-reads.
    console.drop_stream(call.id)
    await console.status(call.id, "in-progress")
    await card(page, call.id).locator(".badge", has_text="In progress").wait_for()
    await page.locator("#connection", has_text="Live").wait_for()


async def test_live_levels_drive_the_speaker_meters_when_the_server_sends_them(
    console: Console,
) -> None:
    """``levels`` events (caller and agent dBFS) are optional; with them the meters move."""
    page = await console.open()
    call = await console.new_call("+15551230006")
    await console.status(call.id, "in-progress")
    row = card(page, call.id)
    await row.wait_for()
    console.publish(call.id, type="levels", caller_dbfs=-15.0, agent_dbfs=-90.0)
    caller = row.locator(".speaker.caller .meter-fill")
    agent = row.locator(".speaker.agent .meter-fill")
    await page.wait_for_function(
        "el => el.style.transform === 'scaleX(0.75)'", arg=await caller.element_handle()
    )
    assert await agent.evaluate("el => el.style.transform") == "scaleX(0)"


async def test_after_a_reconnect_only_calls_still_live_stay_on_the_live_list(
    console: Console,
) -> None:
    """Calls that ended while the stream was down leave the live list, however old they are."""
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    old = [await console.new_call(f"+155524{n:05d}") for n in range(3)]
    for call in old:
        await console.status(call.id, "in-progress")
    # Newer than the old ones and more than the board's page of recent calls.
    newer = [await console.new_call(f"+155525{n:05d}") for n in range(14)]
    for call in newer:
        await console.status(call.id, "ringing")
    await page.locator("#board-title .count", has_text="(17)").wait_for()
    detail_reads: list[str] = []
    page.on(
        "request",
        lambda r: detail_reads.append(r.url.rsplit("/", 1)[1]) if "/calls/" in r.url else None,
    )

    # Two old calls end while the page's stream is dropped (more events at once than
    # its queue holds): their status events go with the queue and out of the replay.
    ended = {old[0].id: "completed", old[1].id: "busy"}
    moment = datetime.now(UTC)
    for call_id, status in ended.items():
        await console.store.update_status(call_id, status, moment)
    for call_id, status in ended.items():
        console.publish(call_id, type="call.status", status=status, at=moment.isoformat())
    console.drop_stream(old[2].id)

    recent = page.locator("#recent-calls")
    await recent.locator(f'[data-call-id="{old[0].id}"] .badge', has_text="Completed").wait_for()
    await recent.locator(f'[data-call-id="{old[1].id}"] .badge', has_text="Busy").wait_for()
    await page.locator("#board-title .count", has_text="(15)").wait_for()
    active = await page.locator("#active-calls .call-card").evaluate_all(
        "cards => cards.map(c => c.dataset.callId)"
    )
    assert sorted(active) == sorted([old[2].id, *(c.id for c in newer)])
    # Re-read one by one: only the cards no list of live calls confirmed.
    assert sorted(detail_reads) == sorted(ended)


async def test_the_page_acknowledges_the_events_it_receives(console: Console) -> None:
    """The server lets a viewer go that leaves too many events unacknowledged
    (serve/event_stream.py): the page says every 100 how many it has received."""
    acked = asyncio.Event()
    frames: list[str] = []

    def on_frame(payload: str | bytes) -> None:
        frames.append(str(payload))
        if payload == '{"ack":100}':
            acked.set()

    console.page.on("websocket", lambda ws: ws.on("framesent", on_frame))
    page = await console.open()
    call = await console.new_call("+15551230001")
    await card(page, call.id).wait_for()  # the stream is live: it brought the new call
    for n in range(150):  # under the hub's queue: one burst the page can take
        console.publish(call.id, type="noise", n=n)
    await asyncio.wait_for(acked.wait(), 15)
    assert frames == ['{"ack":100}']


RECENT_LIMIT = 12  # ended calls the board keeps (board.js)

# A tab the browser paints nothing in (hidden): animation frames wait, queued, until
# `window.showTab()`. Counts the live stream's messages the page has received.
HIDDEN_TAB = """
(() => {
  const frames = [];
  window.requestAnimationFrame = (callback) => frames.push(callback);
  window.cancelAnimationFrame = () => {};
  window.showTab = () => { for (const callback of frames.splice(0)) callback(performance.now()); };
  const Real = window.WebSocket;
  window.received = 0;
  window.WebSocket = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => { window.received += 1; });
    }
  };
})();
"""


async def call_models_alive(console: Console, page: Any) -> int:
    """How many CallModel objects the page holds (after a garbage collection)."""
    cdp = await console.context.new_cdp_session(page)
    proto = await cdp.send(
        "Runtime.evaluate",
        {
            "expression": "import('/console/js/live_call.js').then((m) => m.CallModel.prototype)",
            "awaitPromise": True,
        },
    )
    await cdp.send("HeapProfiler.collectGarbage")
    found = await cdp.send(
        "Runtime.queryObjects", {"prototypeObjectId": proto["result"]["objectId"]}
    )
    count = await cdp.send(
        "Runtime.callFunctionOn",
        {
            "objectId": found["objects"]["objectId"],
            "functionDeclaration": "function () { return this.length; }",
            "returnByValue": True,
        },
    )
    await cdp.detach()
    alive: int = count["result"]["value"]
    return alive


async def test_a_hidden_tab_lets_go_of_calls_that_ended(console: Console) -> None:
    """Ended calls beyond those "Recently ended" shows are let go as they end, not when
    the board is painted: a hidden tab paints nothing for as long as it stays hidden."""
    await console.context.add_init_script(HIDDEN_TAB)
    live = await console.new_call("+15552810000")
    await console.status(live.id, "in-progress")
    page = await console.open()
    await card(page, live.id).wait_for()  # the lists are in: events apply as they come
    baseline = await page.evaluate("window.received")
    ended = []
    for n in range(1, 31):
        call = await console.new_call(f"+1555281{n:04d}")
        await console.status(call.id, "in-progress")
        await console.status(call.id, "completed")
        ended.append(call.id)
    await page.wait_for_function(
        f"() => window.received >= {baseline + 3 * len(ended)}", polling=100
    )
    assert await call_models_alive(console, page) == RECENT_LIMIT + 1

    # Shown again, the board has the newest ended calls, and the one still live.
    await page.evaluate("window.showTab()")
    shown = await page.locator("#recent-calls .call-card").evaluate_all(
        "cards => cards.map((c) => c.dataset.callId)"
    )
    assert shown == ended[::-1][:RECENT_LIMIT]
    assert await page.locator("#active-calls .call-card").evaluate_all(
        "cards => cards.map((c) => c.dataset.callId)"
    ) == [live.id]


async def test_a_first_load_that_failed_is_tried_again(console: Console) -> None:
    """A quiet live call (no event to bring it) reaches the board once the lists load."""
    console.expect_error("503")
    quiet = await console.new_call("+15552820001")
    await console.status(quiet.id, "in-progress")
    failed = 0

    async def fail_once(route: Any) -> None:
        nonlocal failed
        if failed:
            await route.continue_()
            return
        failed += 1
        await route.fulfill(status=503, json={"detail": "call store error: database is locked"})

    await console.page.route(re.compile(rf"/calls\?limit={RECENT_LIMIT}$"), fail_once)
    page = await console.open()
    await page.locator(
        ".toast.error", has_text="Could not load calls (call store error: database is locked)"
    ).wait_for()
    await card(page, quiet.id).locator(".badge", has_text="In progress").wait_for()
    assert failed == 1
