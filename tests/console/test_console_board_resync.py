"""The board catching up after its stream came back: what ended meanwhile, live events
applied all along, cancelled when something newer takes over, no word said twice, a
reply it came back in the middle of followed on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnStarted,
    FinishCall,
)
from switchboard.live_events import live_event
from switchboard.store import NewCall, record

Console = Any  # the `console` fixture of conftest.py

RECENT_LIMIT = 12  # ended calls the board shows (board.js)
READ_AT_ONCE = 6  # re-reads the board has in flight at a time (board.js)
DETAIL = re.compile(r"/calls/[0-9A-Z]{26}$")  # GET /calls/{id}: a call re-read
LIVE_LIST = re.compile(r"/calls\?status=")  # a page of calls in one (live) status
LIVE_STATUSES = ["queued", "initiated", "ringing", "in-progress"]
WAIT_S = 15  # as conftest's DEFAULT_TIMEOUT_MS

# Keeps every WebSocket the page opens, so a test can close one as a network blip does.
KEEP_SOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.sockets = [];
  window.WebSocket = class extends Real {
    constructor(...args) { super(...args); window.sockets.push(this); }
  };
})();
"""


def card(page: Any, call_id: str) -> Any:
    return page.locator(f'.call-card[data-call-id="{call_id}"]')


async def board_of_live_calls(console: Console, count: int) -> tuple[Any, list[str]]:
    """The board showing ``count`` calls in progress; their ids newest first, as it orders them."""
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    for n in range(count):
        call = await console.new_call(f"+1555270{n:04d}")
        await console.status(call.id, "in-progress")
    await page.locator("#board-title .count", has_text=f"({count})").wait_for()
    ids: list[str] = await page.locator("#active-calls .call-card").evaluate_all(
        "cards => cards.map((c) => c.dataset.callId)"
    )
    return page, ids


async def end_unseen(console: Console, call_ids: list[str]) -> None:
    """The calls end in the store only, as if their events had gone with a dropped stream."""
    moment = datetime.now(UTC)
    for call_id in call_ids:
        await console.store.update_status(call_id, "completed", moment)


async def ended_shown(page: Any, call_ids: list[str]) -> None:
    """Until "Recently ended" holds exactly these calls, newest first, each as completed."""
    done = page.locator('#recent-calls .badge[data-status="completed"]')
    await done.nth(len(call_ids) - 1).wait_for()
    shown = await page.locator("#recent-calls .call-card").evaluate_all(
        "cards => cards.map((c) => c.dataset.callId)"
    )
    assert shown == call_ids


def growing(item_id: str, *pieces: str, start: int = 0) -> list[AgentTranscriptGrew]:
    """A reply's ``pieces`` as the call policy reports them: each with its offset in the
    reply's text (code points, from ``start``)."""
    grown = []
    for piece in pieces:
        grown.append(AgentTranscriptGrew(item_id, piece, start))
        start += len(piece)
    return grown


async def drop_with(
    console: Console, call_id: str, gap: Sequence[Action], after: Sequence[Action]
) -> None:
    """Record ``gap`` and ``after``, then publish them with enough noise between to drop
    the page's subscription: ``gap``'s events go with its queue and out of the replay,
    which ends with ``after``'s."""
    moment = datetime.now(UTC)
    for action in [*gap, *after]:
        await record(console.store, call_id, action, moment)
    at = moment.timestamp()
    events = [live_event(call_id, action, at) for action in gap]
    events += [{"type": "noise", "n": n} for n in range(console.hub._queue_size + 10)]
    events += [live_event(call_id, action, at) for action in after]
    dropped = console.hub.dropped_total
    for event in events:
        assert event is not None
        console.hub.publish(call_id, event)
    assert console.hub.dropped_total == dropped + 1


def read_ids(urls: list[str]) -> list[str]:
    return [url.rsplit("/", 1)[1] for url in urls]


async def test_live_events_apply_while_the_calls_that_ended_are_re_read_newest_first(
    console: Console,
) -> None:
    page, newest = await board_of_live_calls(console, 40)
    live, ended = newest[:20], newest[20:]  # the newest RECENT_LIMIT calls are all live
    await end_unseen(console, ended)
    reads = await console.hold(DETAIL, READ_AT_ONCE)
    console.drop_stream(live[0])
    await reads.wait_held()

    # Only the ended calls "Recently ended" can show are re-read, newest first; the
    # older ones leave the board at once.
    shown = ended[:RECENT_LIMIT]
    assert sorted(read_ids(reads.seen)) == sorted(shown[:READ_AT_ONCE])
    await page.locator("#board-title .count", has_text=f"({len(live) + RECENT_LIMIT})").wait_for()
    for call_id in ended[RECENT_LIMIT:]:
        assert await card(page, call_id).count() == 0

    # While those reads are out, live events apply: a new call, a status, a meter.
    fresh = await console.new_call("+15552800000")
    await console.status(fresh.id, "ringing")
    console.publish(live[0], type="levels", caller_dbfs=-15.0, agent_dbfs=-90.0)
    await card(page, fresh.id).locator(".badge", has_text="Ringing").wait_for()
    meter = card(page, live[0]).locator(".speaker.caller .meter-fill")
    await page.wait_for_function(
        "el => el.style.transform === 'scaleX(0.75)'", arg=await meter.element_handle()
    )

    await reads.release()
    await ended_shown(page, shown)
    assert sorted(read_ids(reads.seen)) == sorted(shown)
    active = await page.locator("#active-calls .call-card").evaluate_all(
        "cards => cards.map((c) => c.dataset.callId)"
    )
    assert active == [fresh.id, *live]


async def test_a_call_that_moves_on_while_the_lists_are_read_stays_live(
    console: Console,
) -> None:
    """The board drops, unread, ended calls "Recently ended" would not show: never a live one."""
    await console.track_fetches()
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    moving = await console.new_call("+15552810000")  # older than RECENT_LIMIT ended calls
    for n in range(RECENT_LIMIT):
        call = await console.new_call(f"+1555282{n:04d}")
        await console.status(call.id, "completed")
    await page.locator('#recent-calls .badge[data-status="completed"]').nth(11).wait_for()

    async def ring_meanwhile(route: Any) -> None:
        if "status=queued" in route.request.url:  # the call rings once that list is read
            await console.status(moving.id, "ringing")
        await route.continue_()

    await page.route(LIVE_LIST, ring_meanwhile)
    since = await console.fetch_count()
    console.drop_stream(moving.id)
    # Once the last list is in, the board knows which calls ended (none did).
    await console.wait_settled(["/calls?status=in-progress&limit=200"], since)
    await card(page, moving.id).locator(".badge", has_text="Ringing").wait_for()
    assert await page.locator("#active-calls .call-card").count() == 1
    assert not [f for f in (await console.fetches())[since:] if DETAIL.search(f["url"])]


@pytest.mark.parametrize(
    ("how", "stage"),
    [
        ("leaving the board", "lists"),
        ("leaving the board", "re-reads"),
        ("signing out", "re-reads"),
        ("a second reconnect", "re-reads"),
    ],
)
async def test_a_catch_up_stops_when_something_newer_takes_over(
    console: Console, how: str, stage: str
) -> None:
    await console.track_fetches()
    page, newest = await board_of_live_calls(console, 40)
    live, ended = newest[:20], newest[20:]
    await end_unseen(console, ended)
    pattern, count = (LIVE_LIST, 1) if stage == "lists" else (DETAIL, READ_AT_ONCE)
    held = await console.hold(pattern, count)
    since = await console.fetch_count()
    console.drop_stream(live[0])
    await held.wait_held()

    if how == "leaving the board":
        await page.evaluate("location.hash = '#/history'")
        await page.locator("h1", has_text="History").wait_for()
    elif how == "signing out":
        await page.click("#sign-out")
        await page.locator("#token").wait_for()
    else:
        console.drop_stream(live[0])

    # What the first catch-up had asked for is cancelled, and it asks for nothing more.
    await console.wait_settled(held.urls, since)
    if how == "a second reconnect":
        shown = ended[:RECENT_LIMIT]
        await ended_shown(page, shown)
        assert sorted(read_ids(held.seen[READ_AT_ONCE:])) == sorted(shown)
    else:
        made = [f["url"] for f in (await console.fetches())[since:]]
        assert [url for url in made if pattern.search(url)] == held.urls
        if stage == "lists":
            assert not [url for url in made if DETAIL.search(url)]
    assert not await page.locator(".toast.error").count()


async def test_words_the_replay_repeats_are_not_added_twice(console: Console) -> None:
    await console.context.add_init_script(KEEP_SOCKETS)
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    call = await console.new_call("+15552830000")
    await console.status(call.id, "in-progress")
    await console.act(
        call.id,
        AgentTurnStarted("a1"),
        AgentTranscriptGrew("a1", "Hello"),
        AgentTranscriptGrew("a1", " there."),
    )
    line = card(page, call.id).locator(".last-line")
    await line.filter(has_text="Agent: Hello there.").wait_for()

    # A blip: the stream closes and comes back; the hub replays its recent events.
    async with page.expect_websocket(lambda socket: socket.url.endswith("/events")):
        await page.evaluate(
            "window.sockets.filter((s) => s.url.endsWith('/events')).at(-1).close()"
        )
    await page.locator("#connection", has_text="Live").wait_for()
    await console.act(call.id, AgentTranscriptGrew("a1", " Bye."))  # after the replay
    await line.filter(has_text="Bye.").wait_for()
    assert await line.text_content() == "Agent: Hello there. Bye."


async def test_words_sent_twice_are_not_added_twice(console: Console) -> None:
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    call = await console.new_call("+15552840000")
    await console.status(call.id, "in-progress")
    hello, there, bye = growing("a1", "Hello", " there.", " Bye.")
    await console.act(call.id, AgentTurnStarted("a1"), hello, there)
    line = card(page, call.id).locator(".last-line")
    await line.filter(has_text="Agent: Hello there.").wait_for()

    # A recorder restarted: the report is sent again, and its live events come twice.
    await console.act(call.id, AgentTurnStarted("a1"), hello, there)
    await console.act(call.id, there, bye)
    await line.filter(has_text="Bye.").wait_for()
    assert await line.text_content() == "Agent: Hello there. Bye."


async def test_a_reply_the_stream_dropped_in_keeps_coming_on_its_card(console: Console) -> None:
    await console.track_fetches()
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    call = await console.new_call("+15552850000")
    await console.status(call.id, "in-progress")
    await console.act(call.id, AgentTurnStarted("a1"), *growing("a1", "Hello", " there."))
    line = card(page, call.id).locator(".last-line")
    await line.filter(has_text="Agent: Hello there.").wait_for()
    since = await console.fetch_count()

    # Back after a drop, its replay has nothing of the reply: the words that follow
    # say where they fit, after what the card has.
    console.drop_stream(call.id)
    await console.act(call.id, *growing("a1", " How are", " you?", start=12))
    await line.filter(has_text="you?").wait_for()
    assert await line.text_content() == "Agent: Hello there. How are you?"

    # The next reply starts while the stream is down, its deltas replayed from 0.
    said = "Hello there. How are you?"
    await drop_with(
        console,
        call.id,
        gap=[AgentTurnFinished("a1", said), AgentTurnStarted("a2")],
        after=growing("a2", "Good", "bye"),
    )
    await console.act(call.id, *growing("a2", " now.", start=7))
    await line.filter(has_text="now.").wait_for()
    assert await line.text_content() == "Agent: Goodbye now."
    # From the stream alone: the board read no single call.
    assert not [f for f in (await console.fetches())[since:] if DETAIL.search(f["url"])]


async def test_a_card_seen_ending_gets_the_final_status_it_missed(console: Console) -> None:
    # The call's end came live, Twilio's `completed` went with a dropped stream: the
    # card is in "Recently ended" without a final status, and too old for the list of
    # the newest calls to bring it. The catch-up reads it.
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    call = await console.new_call("+15552910000")
    await console.status(call.id, "in-progress")
    await console.act(call.id, FinishCall("agent hung up"))
    await page.locator(f'#recent-calls [data-call-id="{call.id}"]').wait_for()
    for n in range(RECENT_LIMIT):
        newer = await console.new_call(f"+1555292{n:04d}")
        await console.status(newer.id, "in-progress")
    await page.locator("#board-title .count", has_text=f"({RECENT_LIMIT})").wait_for()
    await end_unseen(console, [call.id])
    console.drop_stream(call.id)
    badge = page.locator(f'#recent-calls [data-call-id="{call.id}"] .badge')
    await badge.filter(has_text="Completed").wait_for()


async def test_a_catch_up_whose_list_failed_stops_reading_the_others(console: Console) -> None:
    await console.track_fetches()
    console.expect_error(r"500")
    page, [call_id] = await board_of_live_calls(console, 1)

    async def fail(route: Any) -> None:
        await route.fulfill(status=500, json={"detail": "the database went away"})

    await page.route(re.compile(rf"/calls\?limit={RECENT_LIMIT}$"), fail)
    since = await console.fetch_count()
    held = await console.hold(LIVE_LIST)  # the first live status's page, unanswered
    console.drop_stream(call_id)
    await held.wait_held()
    await page.locator(".toast.error", has_text="Could not load calls").wait_for()
    # Cancelled without an answer: nothing more of this catch-up is read.
    await console.wait_settled(held.urls, since)


async def test_the_first_load_asks_for_every_live_status_at_once(console: Console) -> None:
    made = {}
    for n, status in enumerate(LIVE_STATUSES):
        call = await console.new_call(f"+1555293{n:04d}")
        if status != "queued":
            await console.status(call.id, status)
        made[status] = call.id
    # Nothing to prove ended on a first load: no list waits for the one before.
    held = await console.hold(LIVE_LIST, len(LIVE_STATUSES))
    page = await console.open()
    await held.wait_held()
    assert sorted(held.urls) == sorted(f"/calls?status={s}&limit=200" for s in LIVE_STATUSES)
    await held.release()
    await page.locator("#board-title .count", has_text=f"({len(LIVE_STATUSES)})").wait_for()
    for status, call_id in made.items():
        await card(page, call_id).locator(f'.badge[data-status="{status}"]').wait_for()


async def test_a_call_whose_first_read_was_out_when_the_stream_dropped_gets_its_end(
    console: Console,
) -> None:
    await console.track_fetches()
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    # A call the board hears of from its status, not its creation, so it reads it; older
    # than the RECENT_LIMIT calls after it, so the list of the newest does not bring it.
    call = await console.store.create_call(
        NewCall(direction="outbound", to="+15552940000", from_="+15005550006")
    )
    for n in range(RECENT_LIMIT):
        newer = await console.new_call(f"+1555295{n:04d}")
        await console.status(newer.id, "in-progress")
    await page.locator("#board-title .count", has_text=f"({RECENT_LIMIT})").wait_for()

    answered, release = asyncio.Event(), asyncio.Event()
    reads = 0

    async def late(route: Any) -> None:
        # The first read's answer is the call in progress; it reaches the page only
        # after the catch-up's lists, which show the call ended.
        nonlocal reads
        reads += 1
        if reads > 1:
            await route.continue_()
            return
        response = await route.fetch()
        answered.set()
        await release.wait()
        await route.fulfill(response=response)

    await page.route(re.compile(rf"/calls/{call.id}$"), late)
    await console.status(call.id, "in-progress")
    async with asyncio.timeout(WAIT_S):
        await answered.wait()
    await end_unseen(console, [call.id])
    since = await console.fetch_count()
    console.drop_stream(call.id)
    await console.wait_settled([f"/calls?status={s}&limit=200" for s in LIVE_STATUSES], since)
    release.set()
    badge = page.locator(f'#recent-calls [data-call-id="{call.id}"] .badge')
    await badge.filter(has_text="Completed").wait_for()
    assert await page.locator("#board-title .count").text_content() == f"({RECENT_LIMIT})"


async def test_a_re_read_that_fails_is_tried_again(console: Console) -> None:
    console.expect_error(r"500")
    page, newest = await board_of_live_calls(console, RECENT_LIMIT + 1)
    oldest = newest[-1]  # not among the newest calls, so only its own read can end it
    await end_unseen(console, [oldest])
    reads = 0

    async def fail_once(route: Any) -> None:
        nonlocal reads
        reads += 1
        if reads == 1:
            await route.fulfill(status=500, json={"detail": "the database went away"})
        else:
            await route.continue_()

    await page.route(re.compile(rf"/calls/{oldest}$"), fail_once)
    console.drop_stream(newest[0])
    await page.locator(".toast.error", has_text="trying again").wait_for()
    badge = page.locator(f'#recent-calls [data-call-id="{oldest}"] .badge')
    await badge.filter(has_text="Completed").wait_for()
    assert reads == 2
