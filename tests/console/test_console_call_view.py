"""The live call view: the transcript as it streams, cuts, tools, timeline, hang-up."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    LatencyMeasured,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolReturned,
    UsageReported,
)
from switchboard.live_events import live_event
from switchboard.realtime_events import Usage
from switchboard.store import record
from switchboard.store.buffer import TranscriptBuffer
from switchboard.transcript import heard_prefix

Console = Any  # the `console` fixture of conftest.py

GREETING = "Hello! This is Ava calling from Bright Smiles Dental."
LONG = "We have openings on Monday at four, Tuesday at three thirty, and Thursday at five."


def growing(item_id: str, *pieces: str, start: int = 0) -> list[AgentTranscriptGrew]:
    """A reply's ``pieces`` as the call policy reports them: each with its offset in the
    reply's text (code points, from ``start``)."""
    grown = []
    for piece in pieces:
        grown.append(AgentTranscriptGrew(item_id, piece, start))
        start += len(piece)
    return grown


async def turns(page: Any) -> list[tuple[str, str]]:
    """(kind, text) of every transcript entry, in screen order."""
    got = await page.locator("#transcript > li").evaluate_all(
        """items => items.map(li => [li.className.split(' ').slice(0, 2).join(' '),
                                     li.querySelector('.text, pre')?.textContent ?? ''])"""
    )
    return [(kind, text) for kind, text in got]


async def live_call(console: Console) -> Any:
    call = await console.new_call("+15551230001", instruction="Book a cleaning.")
    await console.status(call.id, "ringing")
    await console.status(call.id, "in-progress")
    return call


async def test_a_conversation_streams_in_order_with_the_cut_and_a_tool(console: Console) -> None:
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("h1", has_text="Call to +15551230001").wait_for()
    await page.locator("#transcript-title").wait_for()
    await page.locator("#connection", has_text="Live").wait_for()

    await console.act(call.id, PhaseChanged("idle", "thinking"), AgentTurnStarted("a1"))
    await console.act(call.id, LatencyMeasured("answer", 420.0))
    words = GREETING.split(" ")
    for n, word in enumerate(words[:4]):
        await console.act(call.id, AgentTranscriptGrew("a1", ("" if n == 0 else " ") + word))
    streaming = page.locator('.turn.agent.streaming[data-item-id="a1"] .text')
    await streaming.filter(has_text="Hello! This is Ava").wait_for()  # mid-reply, live
    for word in words[4:]:
        await console.act(call.id, AgentTranscriptGrew("a1", " " + word))
    await console.act(call.id, AgentTurnFinished("a1", GREETING))
    await page.locator('.turn.agent:not(.streaming)[data-item-id="a1"]').wait_for()

    # The caller starts before the transcript of what they said arrives: the
    # turn holds its place, and the agent's reply comes after it.
    await console.act(call.id, CallerTurnStarted("c1"))
    await page.locator('.turn.caller.pending[data-item-id="c1"]').wait_for()
    await console.act(call.id, AgentTurnStarted("a2"), AgentTranscriptGrew("a2", LONG))
    await console.act(call.id, LatencyMeasured("response", 612.3))
    await console.act(call.id, CallerTurnTranscribed("c1", "Hello? Who is this?"))
    # Barge-in: the caller heard 2.3 s of 6.1 s.
    await console.act(call.id, CallerTurnStarted("c2"), AgentTurnInterrupted("a2", 2300, 6100))
    await console.act(call.id, AgentTranscriptGrew("a2", " (never played)"))  # dropped after a cut
    await console.act(call.id, CallerTurnTranscribed("c2", "Wait, can I ask something?"))
    await console.act(
        call.id,
        RunTool("t1", "check_calendar", '{"day": "Monday"}'),
        ToolReturned("t1", '{"free": true}'),
    )
    await console.act(call.id, RenewSession("session_cap"))
    await console.act(call.id, AgentTurnStarted("a3"), AgentTranscriptGrew("a3", "Monday is free."))
    await console.act(call.id, AgentTurnFinished("a3", "Monday is free."))

    await page.locator('.tool[data-tool-call-id="t1"] .tool-result').wait_for()
    await page.locator('.turn[data-item-id="a3"]:not(.streaming)').wait_for()
    heard = heard_prefix(LONG, 2300, 6100)
    assert await turns(page) == [
        ("turn agent", GREETING),
        ("turn caller", "Hello? Who is this?"),
        ("turn agent", f"{heard} {LONG[len(heard) :].strip()}"),
        ("turn caller", "Wait, can I ask something?"),
        ("tool", '{\n  "day": "Monday"\n}'),
        ("turn agent", "Monday is free."),
    ]
    cut = page.locator('.turn.interrupted[data-item-id="a2"]')
    assert await cut.locator(".heard").text_content() == heard
    assert await cut.locator("del.unheard").text_content() == LONG[len(heard) :].strip()
    assert await cut.locator(".cut-note").text_content() == (
        "✂ Cut off: the caller heard 2.3 s of 6.1 s"
    )
    tool = page.locator('.tool[data-tool-call-id="t1"]')
    assert "check_calendar" in await tool.locator(".who").text_content()
    assert "true" in await tool.locator(".tool-result pre").text_content()

    assert await page.text_content(".call-stats .latency") == (
        "First words 420 ms after answer · Reply latency 612 ms (median 612 ms, 1 reply)"
    )
    timeline = await page.locator("#timeline li span").all_text_contents()
    assert "Latency: reply audio 612 ms after the caller stopped" in timeline
    assert "Status: Ringing" in timeline and "Status: In progress" in timeline
    assert "Caller interrupted the agent (heard 2.3 s of 6.1 s)" in timeline
    assert "Tool called: check_calendar" in timeline and "Tool returned" in timeline
    assert "Model session renewed: the old one neared its 60-minute limit" in timeline
    await page.uncheck("#show-phases")
    assert await page.locator("#timeline li.phase").first.is_hidden()
    # A reply the call's end cut is no barge-in.
    await console.act(call.id, AgentTurnStarted("a4"), AgentTranscriptGrew("a4", "Goodbye"))
    await console.act(call.id, AgentTurnInterrupted("a4", 500, 1000, by="end"))
    ended = "The call ended while the agent spoke (heard 500 ms of 1.0 s)"
    await page.locator("#timeline li span", has_text=ended).wait_for()


async def test_hang_up_asks_for_confirmation_then_ends_the_call(console: Console) -> None:
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    button = page.get_by_role("button", name="Hang up")
    await button.click()
    assert console.control.hung_up == []
    await page.get_by_role("button", name="Confirm hang-up").click()
    await page.locator(".toast", has_text="Hang-up requested").wait_for()
    assert console.control.hung_up == [call.id]
    await page.locator("#timeline li span", has_text="Hang-up requested (by api)").wait_for()

    # The call actor reports the end; the page shows it ended and stops offering a hang-up.
    await console.act(call.id, FinishCall("hung up by api"))
    await console.status(call.id, "completed")
    await page.locator(".call-stats .badge", has_text="Completed").wait_for()
    await page.locator(".phase", has_text="Ended: hung up by api").wait_for()
    assert await page.locator(".call-actions .button.danger").is_hidden()


async def test_a_hang_up_twilio_refused_can_be_asked_again(console: Console) -> None:
    """The request was taken, but the call actor could not end the call (it notes a
    hangup_failed problem): the call goes on, and so does the button."""
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    await page.get_by_role("button", name="Hang up").click()
    await page.get_by_role("button", name="Confirm hang-up").click()
    await page.locator(".toast", has_text="Hang-up requested").wait_for()
    waiting = page.get_by_role("button", name="Hanging up…")
    assert await waiting.is_disabled()

    refused = "Twilio refused the hang-up: 503 Service Unavailable"
    await console.act(call.id, ProblemNoted("twilio", "hangup_failed", refused))
    await page.locator(".toast.error", has_text=refused).wait_for()
    again = page.get_by_role("button", name="Hang up")
    assert await again.is_enabled()
    await again.click()
    async with page.expect_response(re.compile(r"/hangup$")) as answer:
        await page.get_by_role("button", name="Confirm hang-up").click()
    assert (await answer.value).status == 202
    assert console.control.hung_up == [call.id, call.id]
    await waiting.wait_for()


async def test_distinct_events_in_one_millisecond_are_each_on_the_timeline_once(
    console: Console,
) -> None:
    """Problems (and other events named by nothing but their content) a fraction of a
    millisecond apart are two entries; each one's live event and stored record, which
    the page reads both of, are one."""
    call = await live_call(console)
    at = int(time.time() * 1000) / 1000 + 0.0001
    await console.act(call.id, ProblemNoted("policy", "tool_failed", "lookup failed"), at=at)
    await console.act(
        call.id, ProblemNoted("realtime", "rate_limited", "429 from model"), at=at + 0.0003
    )
    # The record of a renewal has its attempt; the live event does not.
    await console.act(call.id, RenewSession("session_cap", attempt=2), at=at + 0.0005)
    await console.act(call.id, RenewSession("realtime_lost", attempt=3), at=at + 0.0006)
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("#details dd", has_text=call.id).wait_for()  # the record is in
    # After the replay on the stream, in order: then every copy of each has come.
    await console.act(call.id, LatencyMeasured("answer", 1234))
    await page.locator(".call-stats .latency", has_text="First words").wait_for()
    problems = await page.locator("#timeline li.problem span").all_text_contents()
    assert len(problems) == 2, problems
    assert any("lookup failed" in p for p in problems)
    assert any("429 from model" in p for p in problems)
    assert await page.locator("#timeline li.session_renewed").count() == 2


async def test_opening_a_call_mid_reply_shows_each_word_once(console: Console) -> None:
    call = await live_call(console)
    await console.act(call.id, AgentTurnStarted("a1"), AgentTranscriptGrew("a1", "Hello!"))
    await console.act(call.id, AgentTranscriptGrew("a1", " This is"))
    await console.act(call.id, CallerTurnStarted("c1"), CallerTurnTranscribed("c1", "Hi."))
    await console.act(call.id, AgentTurnStarted("a2"), AgentTranscriptGrew("a2", "Sure"))
    await console.act(call.id, UsageReported("r1", Usage(1000, 600, 400, 500, 100, 0, 350, 50)))
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator('.turn[data-item-id="a2"] .text', has_text="Sure").wait_for()
    await console.act(
        call.id, AgentTranscriptGrew("a1", " Ava."), AgentTurnFinished("a1", "Hello! This is Ava.")
    )
    await console.act(call.id, AgentTranscriptGrew("a2", ", one moment."))
    await page.locator('.turn[data-item-id="a2"] .text', has_text="Sure, one moment.").wait_for()
    assert await turns(page) == [
        ("turn agent", "Hello! This is Ava."),
        ("turn caller", "Hi."),
        ("turn agent", "Sure, one moment."),
    ]
    usage = dict(
        zip(
            await page.locator("#usage dt").all_text_contents(),
            await page.locator("#usage dd").all_text_contents(),
            strict=True,
        )
    )
    assert usage["Total tokens"] == "1000" and usage["Output tokens"] == "400"


async def hold_reads(page: Any, call_id: str) -> asyncio.Event:
    """Hold the page's reads of the call (``GET /calls/{id}``) until the event returned is set."""
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route(f"**/calls/{call_id}", hold)
    return release


async def open_live_call(console: Console) -> tuple[Any, Any]:
    """A live call, and a page on it whose stream is up."""
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("#connection", has_text="Live").wait_for()
    return call, page


async def drop_the_page_s_stream(
    console: Console,
    call_id: str,
    gap: Sequence[tuple[Action, float]],
    after: Sequence[tuple[Action, float]],
) -> None:
    """Record ``gap`` and ``after``, then publish them in one go with enough noise between
    to drop the page's subscription: ``gap``'s events go with its queue and out of the replay,
    which ends with ``after``'s."""
    for action, at in [*gap, *after]:
        await record(console.store, call_id, action, datetime.fromtimestamp(at, UTC))
    events = [live_event(call_id, action, at) for action, at in gap]
    events += [{"type": "noise", "n": n} for n in range(console.hub._queue_size + 10)]
    events += [live_event(call_id, action, at) for action, at in after]
    dropped = console.hub.dropped_total
    for event in events:
        assert event is not None
        console.hub.publish(call_id, event)
    assert console.hub.dropped_total == dropped + 1


async def test_after_a_reconnect_the_transcript_is_in_conversation_order(
    console: Console,
) -> None:
    call, page = await open_live_call(console)
    t = time.time()
    await console.act(call.id, AgentTurnStarted("a1"), AgentTurnFinished("a1", GREETING), at=t)
    await page.locator('.turn[data-item-id="a1"]:not(.streaming)').wait_for()

    # The page re-reads the call when its stream is back; here that answer comes
    # after the replay (held until the replayed turn is on screen).
    release = await hold_reads(page, call.id)
    try:
        gap = [
            (CallerTurnStarted("c2"), t + 1),
            (CallerTurnTranscribed("c2", "Hello? Who is this?"), t + 2),
            (AgentTurnStarted("a3"), t + 3),
            (AgentTurnFinished("a3", LONG), t + 4),
        ]
        after = [
            (CallerTurnStarted("c4"), t + 5),
            (CallerTurnTranscribed("c4", "Thursday."), t + 6),
        ]
        await drop_the_page_s_stream(console, call.id, gap, after)
        await page.locator('.turn[data-item-id="c4"] .text', has_text="Thursday.").wait_for()
    finally:
        release.set()
    await page.locator('.turn[data-item-id="a3"]').wait_for()
    await page.locator('.turn[data-item-id="c2"]').wait_for()
    assert await turns(page) == [
        ("turn agent", GREETING),
        ("turn caller", "Hello? Who is this?"),
        ("turn agent", LONG),
        ("turn caller", "Thursday."),
    ]
    # And the conversation goes on where it should.
    await console.act(call.id, AgentTurnStarted("a5"), AgentTurnFinished("a5", "Five it is."))
    await page.locator('.turn[data-item-id="a5"]:not(.streaming)').wait_for()
    assert [text for _, text in await turns(page)] == [
        GREETING,
        "Hello? Who is this?",
        LONG,
        "Thursday.",
        "Five it is.",
    ]


async def test_after_a_reconnect_a_reply_being_spoken_has_no_words_missing(
    console: Console,
) -> None:
    call, page = await open_live_call(console)
    t = time.time()
    await console.act(call.id, AgentTurnStarted("a1"), AgentTranscriptGrew("a1", "Hello!"), at=t)
    text = page.locator('.turn[data-item-id="a1"] .text')
    await text.filter(has_text="Hello!").wait_for()

    # " This is" is lost with the stream; " Ava." comes again in the replay, but
    # does not follow on from what the page has: the re-read record has every word.
    release = await hold_reads(page, call.id)
    try:
        gap = [(AgentTranscriptGrew("a1", " This is"), t + 1)]
        after = [
            (AgentTranscriptGrew("a1", " Ava."), t + 2),
            (LatencyMeasured("answer", 420.0), t + 2),
        ]
        await drop_the_page_s_stream(console, call.id, gap, after)
        await page.locator(".call-stats .latency", has_text="First words 420 ms").wait_for()
    finally:
        release.set()
    await page.locator(
        '.turn.streaming[data-item-id="a1"] .text', has_text="Hello! This is Ava."
    ).wait_for()
    assert await text.text_content() == "Hello! This is Ava."
    await console.act(call.id, AgentTranscriptGrew("a1", " How can I help?"))
    await console.act(call.id, AgentTurnFinished("a1", "Hello! This is Ava. How can I help?"))
    await page.locator('.turn[data-item-id="a1"]:not(.streaming)').wait_for()
    assert await text.text_content() == "Hello! This is Ava. How can I help?"


async def test_after_a_reconnect_mid_reply_its_words_keep_coming(console: Console) -> None:
    call, page = await open_live_call(console)
    t = time.time()
    await console.act(call.id, AgentTurnStarted("a1"), AgentTranscriptGrew("a1", "Hello!"), at=t)
    text = page.locator('.turn[data-item-id="a1"] .text')
    await text.filter(has_text="Hello!").wait_for()

    # The stream comes back mid-reply, its replay short of the reply's start.
    gap = [(AgentTranscriptGrew("a1", " This is"), t + 1)]
    after = [(AgentTranscriptGrew("a1", " Ava."), t + 2)]
    await drop_the_page_s_stream(console, call.id, gap, after)
    speaking = page.locator('.turn.streaming[data-item-id="a1"] .text')
    await speaking.filter(has_text="Hello! This is Ava.").wait_for()

    # Words said from then on show as they come, before the reply is done.
    await console.act(call.id, AgentTranscriptGrew("a1", " How can I help"))
    await speaking.filter(has_text="Ava. How can I help").wait_for()
    await console.act(call.id, AgentTranscriptGrew("a1", " you today?"))
    await speaking.filter(has_text="help you today?").wait_for()
    said = "Hello! This is Ava. How can I help you today?"
    assert await text.text_content() == said

    # Cut: what was heard is the store's cut of everything said.
    await console.act(call.id, CallerTurnStarted("c1"), AgentTurnInterrupted("a1", 1500, 4000))
    cut = page.locator('.turn.interrupted[data-item-id="a1"]')
    heard = heard_prefix(said, 1500, 4000)
    await cut.locator(".heard", has_text=heard).wait_for()
    assert await cut.locator(".heard").text_content() == heard
    assert await cut.locator("del.unheard").text_content() == said[len(heard) :].strip()


async def test_transcript_text_is_shown_as_text_never_as_markup(console: Console) -> None:
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("#connection", has_text="Live").wait_for()
    evil = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    await console.act(call.id, CallerTurnStarted("c1"), CallerTurnTranscribed("c1", evil))
    await page.locator('.turn[data-item-id="c1"] .text', has_text="<img").wait_for()
    assert await page.locator("#transcript img, #transcript b").count() == 0
    assert "pwned" not in await page.title()


async def test_an_unknown_call_says_so(console: Console) -> None:
    console.expect_error("404")
    page = await console.open("/#/calls/01NOSUCHCALL")
    await page.locator("h1", has_text="Call not found").wait_for()
    assert await page.text_content("#connection") == ""  # no stream: nothing is live
    assert await page.evaluate("document.activeElement.textContent") == "Call not found"


async def test_a_call_that_cannot_be_read_says_so_and_is_read_again(console: Console) -> None:
    """Only a 404 is "not found": the server or its store down a moment is said, and the
    call read again (backing off) until it is."""
    console.expect_error("503")
    call = await live_call(console)
    failed = 0

    async def fail_twice(route: Any) -> None:
        nonlocal failed
        if failed == 2:
            await route.continue_()
            return
        failed += 1
        await route.fulfill(status=503, json={"detail": "call store error: database is locked"})

    await console.page.route(re.compile(rf"/calls/{call.id}$"), fail_twice)
    page = await console.open(f"/#/calls/{call.id}")
    error = page.locator(".load-error")
    await error.filter(
        has_text="Could not load this call: call store error: database is locked. Trying again"
    ).wait_for()
    await page.locator("h1", has_text="Call to +15551230001").wait_for()
    assert failed == 2
    assert await error.is_hidden()
    assert await page.get_by_text("Call not found").count() == 0
    await page.locator("#connection", has_text="Live").wait_for()
    await console.act(call.id, AgentTurnStarted("a1"), *growing("a1", "Hello", " again."))
    await page.locator('.turn[data-item-id="a1"] .text', has_text="Hello again.").wait_for()


async def test_focus_on_the_retry_button_goes_to_the_call_once_it_is_read(
    console: Console,
) -> None:
    """A keyboard user on "Try again now" is not dropped to the page's start when the
    panel holding the button goes away."""
    console.expect_error("503")
    call = await live_call(console)
    failed = 0
    focused = asyncio.Event()

    async def fail_once(route: Any) -> None:
        nonlocal failed
        if failed:
            await focused.wait()  # the next read (the timer's) waits for the keyboard user
            await route.continue_()
            return
        failed += 1
        await route.fulfill(status=503, json={"detail": "call store error: database is locked"})

    await console.page.route(re.compile(rf"/calls/{call.id}$"), fail_once)
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator(".load-error").wait_for()
    await page.get_by_role("button", name="Try again now").focus()
    assert await page.evaluate("document.activeElement.textContent") == "Try again now"
    focused.set()
    await page.locator("h1", has_text="Call to +15551230001").wait_for()
    assert await page.evaluate("document.activeElement.tagName") == "H1"


# Counts the nodes put into, or taken out of, each of the call view's lists.
WATCH_LISTS = """
() => {
  window.changed = { timeline: 0, usage: 0, transcript: 0 };
  for (const name of Object.keys(window.changed)) {
    new MutationObserver((records) => {
      for (const r of records) window.changed[name] += r.addedNodes.length + r.removedNodes.length;
    }).observe(document.getElementById(name), { childList: true });
  }
}
"""


async def test_a_long_call_redraws_only_what_changed(console: Console) -> None:
    """A reply streaming word by word changes its own turn's words: the timeline (thousands
    of entries on a long call) and the usage are left alone, and the turn is not redrawn."""
    call = await live_call(console)
    base = datetime.now(UTC)
    phases = ["idle", "thinking", "speaking"]
    entries = 600
    await console.store.append_events(
        call.id,
        [
            (
                "phase",
                base + timedelta(milliseconds=n),
                {"old": phases[n % 3], "new": phases[(n + 1) % 3]},
            )
            for n in range(entries)
        ],
    )
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("#connection", has_text="Live").wait_for()
    await page.locator("#timeline li").nth(entries + 1).wait_for(state="attached")  # and 2 statuses
    await page.locator("#usage dd").first.wait_for()
    await page.evaluate(WATCH_LISTS)

    words = [f"{' ' if n else ''}word{n}" for n in range(30)]
    await console.act(call.id, AgentTurnStarted("a1"), *growing("a1", words[0]))
    reply = page.locator('.turn[data-item-id="a1"]')
    await reply.locator(".text", has_text="word0").wait_for()
    await reply.evaluate("(li) => { li.seen = true; }")
    for grown in growing("a1", *words[1:], start=len(words[0])):
        await console.act(call.id, grown)
    await console.act(call.id, AgentTurnFinished("a1", "".join(words)))
    await (
        page.locator('.turn.agent:not(.streaming)[data-item-id="a1"] .text')
        .filter(has_text="word29")
        .wait_for()
    )
    assert await reply.evaluate("(li) => li.seen === true")  # the same item, its words updated
    assert await reply.locator(".text").text_content() == "".join(words)
    assert await page.evaluate("window.changed") == {"timeline": 0, "usage": 0, "transcript": 1}

    # What is new on the timeline is added to it.
    await console.act(call.id, PhaseChanged("speaking", "idle"))
    await page.locator("#timeline li").nth(entries + 2).wait_for(state="attached")
    assert await page.evaluate("window.changed") == {"timeline": 1, "usage": 0, "transcript": 1}


async def test_each_turn_is_announced_once_it_is_over(console: Console) -> None:
    """The transcript is no live region (a screen reader would read a reply again for each
    of its words): each turn is announced once, when it is said in full, or cut."""
    call = await live_call(console)
    await console.act(call.id, AgentTurnStarted("a0"), AgentTurnFinished("a0", GREETING))
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("#connection", has_text="Live").wait_for()
    await page.locator('.turn[data-item-id="a0"]').wait_for()
    assert await page.get_attribute("#transcript", "aria-live") is None
    announcer = page.locator("#transcript-announcer")
    assert await announcer.get_attribute("aria-live") == "polite"

    async def announced() -> list[str]:
        said: list[str] = await announcer.locator("p").all_text_contents()
        return said

    assert await announced() == []  # what was said before the page opened is read, not announced
    await console.act(call.id, AgentTurnStarted("a1"), *growing("a1", "Sure,", " one", " moment."))
    await page.locator(
        '.turn.streaming[data-item-id="a1"] .text', has_text="Sure, one moment."
    ).wait_for()
    assert await announced() == []
    await console.act(call.id, AgentTurnFinished("a1", "Sure, one moment."))
    await page.locator('.turn.agent:not(.streaming)[data-item-id="a1"]').wait_for()
    assert await announced() == ["Agent: Sure, one moment."]

    await console.act(call.id, CallerTurnStarted("c1"))
    await page.locator('.turn.caller.pending[data-item-id="c1"]').wait_for()
    await console.act(call.id, CallerTurnTranscribed("c1", "Is Monday free?"))
    await page.locator('.turn[data-item-id="c1"] .text', has_text="Is Monday free?").wait_for()
    await console.act(call.id, AgentTurnStarted("a2"), *growing("a2", LONG))
    await console.act(call.id, AgentTurnInterrupted("a2", 2300, 6100))
    await page.locator('.turn.interrupted[data-item-id="a2"]').wait_for()
    heard = heard_prefix(LONG, 2300, 6100)
    assert await announced() == [
        "Agent: Sure, one moment.",
        "Caller: Is Monday free?",
        f"Agent, cut off: {heard}",
    ]

    # Its words are written before they are heard: a reply done but still playing is not
    # announced as said, and a cut after its end is announced as the cut.
    await console.act(call.id, PhaseChanged("idle", "speaking"), AgentTurnStarted("a3"))
    await console.act(call.id, *growing("a3", LONG), AgentTurnFinished("a3", LONG))
    await page.locator('.turn.agent:not(.streaming)[data-item-id="a3"]').wait_for()
    await console.act(call.id, AgentTurnStarted("a4"), AgentTurnFinished("a4", LONG))
    await page.locator('.turn.agent:not(.streaming)[data-item-id="a4"]').wait_for()
    # a3 is over (a reply after it began): announced as said; a4 still plays.
    assert (await announced())[-1] == f"Agent: {LONG}"
    await console.act(call.id, AgentTurnInterrupted("a4", 1000, 6100))
    await page.locator('.turn.interrupted[data-item-id="a4"]').wait_for()
    assert (await announced())[-2:] == [
        f"Agent: {LONG}",
        f"Agent, cut off: {heard_prefix(LONG, 1000, 6100)}",
    ]
    await console.act(call.id, AgentTurnStarted("a5"), AgentTurnFinished("a5", "Goodbye."))
    await page.locator('.turn.agent:not(.streaming)[data-item-id="a5"]').wait_for()
    assert "Agent: Goodbye." not in await announced()  # still playing
    await console.act(call.id, PhaseChanged("speaking", "idle"))  # played out
    await page.locator("#transcript-announcer p", has_text="Agent: Goodbye.").wait_for()


async def test_the_heard_cut_matches_the_store_s(console: Console) -> None:
    """The page's estimate of what was heard is the store's, character for character."""
    page = await console.open()
    rng = random.Random(5)
    texts = [
        LONG,
        "One two three",
        "  spaced   out  words ",
        "Ünïcödé wörds — and emoji 🎉 too, naïve café",
        "nowhitespaceatall",
        "好的，我帮您查一下。您的订单号是 A12345，明天就会发货，请注意查收。",  # noqa: RUF001
        "はい、かしこまりました。カタカナ ㄅㄆㄇ 㐀豈 ＡＢＣ１２３ 𠀀𠀁 and English words",  # noqa: RUF001
        "안녕하세요 예약을 도와드릴게요",
        "",
    ]
    cases = []
    for text in texts:
        for _ in range(25):
            generated = rng.randint(0, 8000)
            heard = rng.randint(-100, generated + 100)
            cases.append((text, heard, generated))
    got = await page.evaluate(
        """async (cases) => {
            const { heardPrefix } = await import('/console/js/live_call.js');
            return cases.map(([t, h, g]) => heardPrefix(t, h, g));
        }""",
        cases,
    )
    assert got == [heard_prefix(t, h, g) for t, h, g in cases]


@pytest.mark.parametrize("leave", ["sign out", "go to the board"])
async def test_a_late_answer_does_not_paint_over_the_next_view(
    console: Console, leave: str
) -> None:
    await console.track_fetches()
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    held = await console.hold(re.compile(r"/calls/NOSUCHCALL$"))
    since = await console.fetch_count()
    await page.evaluate("location.hash = '#/calls/NOSUCHCALL'")
    await held.wait_held()
    if leave == "sign out":
        await page.click("#sign-out")
        next_view = page.locator("#token")
    else:
        await page.evaluate("location.hash = '#/'")
        next_view = page.locator("#board-title")
    await next_view.wait_for()
    await held.release()  # its 404, too late
    await console.wait_settled(held.urls, since)
    assert await next_view.count() == 1
    assert await page.get_by_text("Call not found").count() == 0


async def test_a_delta_sent_twice_is_shown_once(console: Console) -> None:
    call, page = await open_live_call(console)
    hello, this_is, ava = growing("a1", "Hello 🎉!", " This is", " Ava.")
    await console.act(call.id, AgentTurnStarted("a1"), hello, this_is)
    text = page.locator('.turn[data-item-id="a1"] .text')
    await text.filter(has_text="Hello 🎉! This is").wait_for()

    # A recorder restarted: the report is sent again, and its live events reach the page twice.
    await console.act(call.id, AgentTurnStarted("a1"), hello, this_is)
    await console.act(call.id, this_is, ava)
    speaking = page.locator('.turn.streaming[data-item-id="a1"] .text')
    await speaking.filter(has_text="Ava.").wait_for()
    assert await text.text_content() == "Hello 🎉! This is Ava."
    await console.act(call.id, ava, AgentTurnFinished("a1", "Hello 🎉! This is Ava."))
    await page.locator('.turn[data-item-id="a1"]:not(.streaming)').wait_for()
    assert await turns(page) == [("turn agent", "Hello 🎉! This is Ava.")]


async def test_after_a_reconnect_a_reply_whose_start_was_not_replayed_follows_its_offsets(
    console: Console,
) -> None:
    call, page = await open_live_call(console)
    t = time.time()
    await console.act(call.id, CallerTurnStarted("c1"), CallerTurnTranscribed("c1", "Hi."), at=t)
    await page.locator('.turn[data-item-id="c1"] .text', has_text="Hi.").wait_for()

    # The reply's start goes with the stream; its deltas, replayed, say where they fit.
    # The page's reads are held: the words can only come from the stream.
    hello, this_is, ava = growing("a2", "Hello!", " This is", " Ava.")
    release = await hold_reads(page, call.id)
    try:
        gap = [(AgentTurnStarted("a2"), t + 1)]
        after = [(hello, t + 2), (this_is, t + 2)]
        await drop_the_page_s_stream(console, call.id, gap, after)
        speaking = page.locator('.turn.streaming[data-item-id="a2"] .text')
        await speaking.filter(has_text="Hello! This is").wait_for()
        await console.act(call.id, ava)
        await speaking.filter(has_text="This is Ava.").wait_for()
        assert await speaking.text_content() == "Hello! This is Ava."
    finally:
        release.set()
    await console.act(call.id, AgentTurnFinished("a2", "Hello! This is Ava."))
    await page.locator('.turn[data-item-id="a2"]:not(.streaming)').wait_for()
    assert await turns(page) == [("turn caller", "Hi."), ("turn agent", "Hello! This is Ava.")]


async def test_deltas_are_placed_by_offset_as_the_store_places_them(console: Console) -> None:
    """Sent twice, overlapping, from a start not seen: the page's text of a reply is the
    store's, character for character (offsets count code points, as Python does)."""
    page = await console.open()
    rng = random.Random(7)
    words = ["Hello", "Ünïcödé", "🎉", "naïve", "café", "𝄞𝄞", "—", "ok", "👋🏽", "wörds"]
    runs = []
    for _ in range(30):
        reply = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(1, len(reply)), min(len(reply) - 1, rng.randint(0, 6))))
        bounds = [0, *cuts, len(reply)]
        sent: list[tuple[str, int]] = []
        length = 0  # of the text so far: always the reply's start
        for a, b in itertools.pairwise(bounds):
            while sent and rng.random() < 0.4:  # sent again, or overlapping what came
                start = rng.randint(0, length)
                end = rng.randint(start, len(reply))
                sent.append((reply[start:end], start))
                length = max(length, end)
            sent.append((reply[a:b], a))
            length = max(length, b)
        runs.append(sent)
    got = await page.evaluate(
        """async (runs) => {
            const { CallModel } = await import('/console/js/live_call.js');
            return runs.map((deltas) => {
                const model = new CallModel({ id: "c", status: "in-progress" });
                const texts = deltas.map(([delta, offset]) => {
                    model.apply({ type: "transcript.agent_delta", item_id: "a", delta, offset });
                    return model.turns.get("a").text;
                });
                return [texts, model.missed];
            });
        }""",
        runs,
    )
    for sent, (texts, missed) in zip(runs, got, strict=True):
        buffer = TranscriptBuffer(1.0)
        buffer.open(("c", "a"), "", 0.0)
        expected = []
        for delta, offset in sent:
            buffer.grow(("c", "a"), delta, 0.0, offset)
            expected.append(buffer.text(("c", "a")))
        assert (texts, missed) == (expected, False)


async def test_what_a_delta_s_offset_decides(console: Console) -> None:
    page = await console.open()
    got = await page.evaluate(
        """async () => {
            const { CallModel } = await import('/console/js/live_call.js');
            const model = new CallModel({ id: "c", status: "in-progress" });
            const steps = [];
            const apply = (event) => {
                const changed = model.apply({ item_id: "a", ...event });
                const turn = model.turns.get(event.item_id ?? "a");
                steps.push([changed, turn?.text ?? null, turn?.state ?? null, model.missed]);
                model.missed = false;
            };
            const delta = (text, offset, item_id = "a") =>
                apply({ type: "transcript.agent_delta", item_id, delta: text, offset });
            delta("Hello", 0); // no start seen: followed from 0
            delta("Hello", 0); // again: nothing changes
            delta("lo there", 3); // overlapping the end
            delta("!", 20); // past the end: a gap, for the record to fill
            delta(" you", 11); // where the text ends: followed on
            apply({ type: "transcript.agent_done", text: "Hello there you!" });
            delta(" more", 16); // after the end of the reply
            delta("Hi", undefined, "b"); // no offset (an older server), no start seen
            apply({ type: "transcript.agent_started", item_id: "b" });
            delta("Hi", undefined, "b"); // no offset: appended, as it comes
            delta("Hi", undefined, "b");
            return steps;
        }"""
    )
    assert got == [
        [True, "Hello", "speaking", False],
        [False, "Hello", "speaking", False],
        [True, "Hello there", "speaking", False],
        [False, "Hello there", "speaking", True],
        [True, "Hello there you", "speaking", False],
        [True, "Hello there you!", "finished", False],
        [False, "Hello there you!", "finished", False],
        [True, "", None, True],
        [True, "", "speaking", False],
        [True, "Hi", "speaking", False],
        [True, "HiHi", "speaking", False],
    ]


async def test_a_caller_turn_never_transcribed_says_so_once_the_call_ends(
    console: Console, tmp_path: Any
) -> None:
    call = await live_call(console)
    page = await console.open(f"/#/calls/{call.id}")
    await console.act(call.id, CallerTurnStarted("c1"))  # the caller spoke...
    words = page.locator('.turn[data-item-id="c1"] .text')
    await words.filter(has_text="Speaking…").wait_for()
    await console.act(call.id, FinishCall("caller hung up"))  # ...and hung up before its words
    await console.status(call.id, "completed")
    await words.filter(has_text="Spoke (no transcript)").wait_for()
    async with page.expect_download() as info:
        await page.click("text=Download text")
    saved = tmp_path / "call.txt"
    await (await info.value).save_as(saved)
    assert "Caller: (spoke; no transcript)" in saved.read_text()
