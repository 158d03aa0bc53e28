"""Screenshots of the console's main views, for docs/.

    .venv/bin/python tests/console/make_screenshots.py docs

Stages a few calls (live and past, with an interruption and a tool call) on
the same loopback app the browser tests use, then photographs the sign-in,
the live board, the place-call form, a live call, history and a finished
call, at desktop and phone width. Not a test: it writes files.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import PHONE, WIDE, Console, launch_browser, running_console

from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    LatencyMeasured,
    PhaseChanged,
    RunTool,
    ToolReturned,
    UsageReported,
)
from switchboard.realtime_events import Usage

BOOKING = "You are Ava from Bright Smiles Dental. Book Jane Doe's cleaning; offer Monday 4 pm."
REPLY = (
    "We have openings on Monday at four, Tuesday at three thirty, and Thursday at five. "
    "Which one would you prefer?"
)


async def agent_says(
    c: Console, call_id: str, item: str, text: str, t: float, latency: str = "response"
) -> float:
    await c.act(call_id, PhaseChanged("idle", "thinking"), at=t)
    await c.act(call_id, AgentTurnStarted(item), PhaseChanged("thinking", "speaking"), at=t + 0.6)
    await c.act(call_id, LatencyMeasured(latency, 540.0 + 37 * (len(text) % 5)), at=t + 0.6)
    for n, word in enumerate(text.split(" ")):
        await c.act(call_id, AgentTranscriptGrew(item, ("" if n == 0 else " ") + word), at=t + 0.7)
    return t + 0.6


class Clock:
    """The store's clock, set back so the staged calls have a past."""

    def __init__(self) -> None:
        self.back_s = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.back_s)


async def stage(c: Console, clock: Clock) -> dict[str, str]:
    """A finished call with a barge-in and a tool, three live calls, a busy one."""
    now = time.time()
    clock.back_s = 130
    done = await c.new_call("+15551230001", instruction=BOOKING, voice="marin")
    await c.status(done.id, "ringing", now - 128)
    await c.status(done.id, "in-progress", now - 121)
    t = now - 120
    await agent_says(
        c, done.id, "a1", "Hello! This is Ava calling from Bright Smiles Dental.", t, "answer"
    )
    await c.act(
        done.id, AgentTurnFinished("a1", "Hello! This is Ava calling from Bright Smiles Dental.")
    )
    await c.act(done.id, PhaseChanged("speaking", "idle"), CallerTurnStarted("c1"), at=t + 4)
    await c.act(done.id, CallerTurnTranscribed("c1", "Hello? Who is this?"), at=t + 5)
    await agent_says(c, done.id, "a2", REPLY, t + 5.2)
    await c.act(done.id, CallerTurnStarted("c2"), AgentTurnInterrupted("a2", 2300, 6100), at=t + 8)
    await c.act(done.id, CallerTurnTranscribed("c2", "Wait, can I ask something first?"), at=t + 9)
    await c.act(
        done.id,
        RunTool("tool-1", "check_calendar", '{"day": "Monday", "time": "16:00"}'),
        ToolReturned("tool-1", '{"free": true}'),
        at=t + 9.5,
    )
    await agent_says(c, done.id, "a3", "Sure, Monday at four is free. Shall I book it?", t + 10)
    await c.act(done.id, AgentTurnFinished("a3", "Sure, Monday at four is free. Shall I book it?"))
    usage = Usage(5120, 3900, 1220, 3100, 800, 640, 1100, 120)
    await c.act(done.id, UsageReported("r1", usage), at=t + 14)
    await c.act(done.id, FinishCall("caller hung up"), at=t + 20)
    await c.status(done.id, "completed", t + 20.2)

    clock.back_s = 100
    busy = await c.new_call("+15550000002", instruction="Remind Sam of the 3 pm meeting.")
    await c.status(busy.id, "busy", now - 95)

    live = []
    for back, number in ((45, "+442071838750"), (30, "+15551230042"), (6, "+4915112345678")):
        clock.back_s = back
        call = await c.new_call(number, instruction=BOOKING)
        await c.status(call.id, "ringing", now - back + 1)
        live.append(call)
    clock.back_s = 0
    first, second = live[0].id, live[1].id
    await c.status(first, "in-progress", now - 41)
    await c.status(second, "in-progress", now - 25)
    t = now - 40
    greeting = "Hello! This is Ava calling from Bright Smiles Dental."
    await agent_says(c, first, "b1", greeting, t, "answer")
    await c.act(first, AgentTurnFinished("b1", greeting), at=t + 3)
    await c.act(first, PhaseChanged("speaking", "idle"), CallerTurnStarted("d1"), at=t + 4)
    await c.act(first, CallerTurnTranscribed("d1", "Hi Ava. Yes, I wanted to book."), at=t + 6)
    await agent_says(c, first, "b2", REPLY, t + 6.2)
    await c.act(first, CallerTurnStarted("d2"), AgentTurnInterrupted("b2", 1800, 6100), at=t + 9)
    await c.act(first, CallerTurnTranscribed("d2", "Monday at four, please."), at=t + 10)
    await c.act(
        first,
        PhaseChanged("speaking", "thinking"),
        RunTool("tool-9", "book_slot", '{"day": "Monday", "time": "16:00", "name": "Jane Doe"}'),
        at=t + 11,
    )
    await c.act(first, ToolReturned("tool-9", '{"booked": true, "ref": "BS-2291"}'), at=t + 12)
    await agent_says(c, first, "b3", "You're booked for Monday at four, reference B S", t + 12.5)
    await c.act(second, PhaseChanged("awaiting_answer", "idle"), CallerTurnStarted("e1"), at=now)
    return {"done": done.id, "live": first}


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with launch_browser() as browser:
            for size, viewport in (("", WIDE), ("-phone", PHONE)):
                db = Path(tmp) / f"calls{size}.db"
                clock = Clock()
                async with running_console(browser, db, viewport, clock.now) as c:
                    page = c.page
                    await c.open(signed_in=False)
                    if not size:
                        await page.screenshot(path=out / "console-sign-in.png")
                    await c.sign_in()
                    ids = await stage(c, clock)
                    await page.fill("#call-to", "+1 555 123")
                    await page.fill("#call-instruction", BOOKING)
                    await page.locator(".call-card").nth(2).wait_for()
                    await page.screenshot(path=out / f"console-board{size}.png", full_page=True)
                    await page.goto(f"{c.base_url}/#/calls/{ids['live']}")
                    await page.locator(".turn.interrupted").wait_for()
                    await page.screenshot(path=out / f"console-live-call{size}.png", full_page=True)
                    await page.goto(f"{c.base_url}/#/history")
                    await page.locator("#history-rows tr").nth(4).wait_for()
                    await page.screenshot(path=out / f"console-history{size}.png", full_page=True)
                    await page.goto(f"{c.base_url}/#/calls/{ids['done']}")
                    await page.locator(".tool .tool-result").wait_for()
                    await page.screenshot(path=out / f"console-past-call{size}.png", full_page=True)
                    if c.errors:
                        raise SystemExit(f"browser console errors: {c.errors}")
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
