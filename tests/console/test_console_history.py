"""History: search, filters, pages, and a past call's record with its downloads."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    UsageReported,
)
from switchboard.realtime_events import Usage
from switchboard.store import NewCall

Console = Any  # the `console` fixture of conftest.py


async def shown_ids(page: Any) -> list[str]:
    return await page.locator("#history-rows tr").evaluate_all(
        "rows => rows.map(r => r.dataset.callId)"
    )


async def test_search_filters_and_pages(console: Console) -> None:
    made = []
    for n in range(56):
        call = await console.store.create_call(
            NewCall(
                direction="inbound" if n % 7 == 0 else "outbound",
                to=f"+1555300{n:04d}",
                from_="+15005550006",
                instruction="Remind about the invoice" if n % 5 == 0 else "Book a cleaning",
            )
        )
        made.append(call)
        if n % 4 == 0:
            await console.status(call.id, "busy")
    await console.act(made[3].id, CallerTurnStarted("c1"), CallerTurnTranscribed("c1", "pineapple"))

    page = await console.open("/#/history")
    await page.locator("#history-rows tr").nth(49).wait_for()
    assert len(await shown_ids(page)) == 50
    assert await page.text_content(".summary") == "50+ calls"
    await page.click("text=Load more")
    await page.locator("#history-rows tr").nth(55).wait_for()
    assert sorted(await shown_ids(page)) == sorted(c.id for c in made)
    assert await page.locator("text=Load more").is_hidden()

    # Words the caller said are searchable.
    await page.fill("#history-search", "pineapple")
    await page.locator(".summary", has_text="1 call").wait_for()
    assert await shown_ids(page) == [made[3].id]
    assert "search=pineapple" in page.url

    await page.fill("#history-search", "invoice")
    await page.locator(".summary", has_text="12 calls").wait_for()
    await page.select_option("#history-status", "busy")
    expected = {c.id for n, c in enumerate(made) if n % 5 == 0 and n % 4 == 0}
    await page.locator(".summary", has_text=f"{len(expected)} call").wait_for()
    assert set(await shown_ids(page)) == expected
    await page.select_option("#history-direction", "inbound")
    expected = {c.id for n, c in enumerate(made) if n % 5 == 0 and n % 4 == 0 and n % 7 == 0}
    await page.locator(".summary", has_text=f"{len(expected)} call").wait_for()
    assert set(await shown_ids(page)) == expected

    # The filters live in the URL: a reload (or a shared link) shows the same list.
    await page.reload()
    await page.locator(".summary", has_text=f"{len(expected)} call").wait_for()
    assert await page.input_value("#history-search") == "invoice"
    assert await page.input_value("#history-status") == "busy"

    await page.fill("#history-search", "no such words anywhere")
    await page.locator(".summary", has_text="No calls match.").wait_for()

    # Dates: nothing was created tomorrow or later.
    await page.fill("#history-search", "")
    await page.select_option("#history-status", "")
    await page.select_option("#history-direction", "")
    await page.locator(".summary", has_text="50+ calls").wait_for()  # the filters are off
    tomorrow = await page.evaluate(
        "(() => { const d = new Date(); d.setDate(d.getDate() + 1);"
        " return d.toLocaleDateString('en-CA'); })()"
    )
    await page.fill("#history-from", tomorrow)
    await page.locator(".summary", has_text="No calls match.").wait_for()
    await page.fill("#history-from", "")
    await page.fill("#history-to", tomorrow)
    await page.locator(".summary", has_text="50+ calls").wait_for()


async def test_a_reply_cut_by_its_actors_death_says_what_was_heard_is_not_known(
    console: Console,
) -> None:
    # The recorder closed it at the call's end: nothing measured, nothing struck through.
    call = await console.new_call("+15551230010", instruction="Book a cleaning.")
    await console.status(call.id, "in-progress")
    said = "Your cleaning is booked for Monday"
    await console.act(
        call.id,
        AgentTurnStarted("a1"),
        AgentTranscriptGrew("a1", said),
        FinishCall("actor_failed"),
    )
    page = await console.open(f"/#/calls/{call.id}")
    cut = page.locator(".turn.interrupted")
    await cut.locator(".cut-note", has_text="how much the caller heard is not known").wait_for()
    assert await cut.locator(".text").text_content() == said
    assert await cut.locator("del.unheard").count() == 0


async def test_a_past_call_has_its_record_and_downloads(console: Console, tmp_path: Path) -> None:
    call = await console.new_call("+15551230009", instruction="Book a cleaning.", voice="sage")
    await console.status(call.id, "in-progress")
    long = "We have openings on Monday at four and Tuesday at three."
    await console.act(
        call.id,
        AgentTurnStarted("a1"),
        AgentTranscriptGrew("a1", long),
        CallerTurnStarted("c1"),
        AgentTurnInterrupted("a1", 1000, 4000),
        CallerTurnTranscribed("c1", "Monday works."),
        AgentTurnStarted("a2"),
        AgentTranscriptGrew("a2", "Booked."),
        AgentTurnFinished("a2", "Booked."),
        UsageReported("r1", Usage(2000, 1500, 500, 1400, 100, 0, 450, 50)),
        FinishCall("agent said goodbye"),
    )
    await console.status(call.id, "completed")

    page = await console.open("/#/history")
    await page.locator(f'#history-rows tr[data-call-id="{call.id}"] a').click()
    await page.locator("h1", has_text="Call to +15551230009").wait_for()
    await page.locator(".turn.interrupted .cut-note").wait_for()
    assert await page.locator(".call-stats .badge").text_content() == "Completed"
    assert await page.locator("#connection").text_content() == ""  # nothing live to stream

    async with httpx.AsyncClient(base_url=console.base_url) as http:
        api = (
            await http.get(
                f"/calls/{call.id}", headers={"Authorization": f"Bearer {console.token}"}
            )
        ).json()
    usage = dict(
        zip(
            await page.locator("#usage dt").all_text_contents(),
            await page.locator("#usage dd").all_text_contents(),
            strict=True,
        )
    )
    assert usage["Total tokens"] == "2000"
    shown_cost = usage["Estimated cost"]
    assert shown_cost.startswith("$") and float(api["cost_usd"]) > 0
    assert abs(float(shown_cost[1:]) - float(api["cost_usd"])) < 0.005
    details = await page.locator("#details").text_content()
    assert "sage" in details and "Book a cleaning." in details

    async with page.expect_download() as info:
        await page.click("text=Download JSON")
    saved = tmp_path / "call.json"
    await (await info.value).save_as(saved)
    assert (await info.value).suggested_filename == f"call-{call.id}.json"
    assert json.loads(saved.read_text()) == api

    async with page.expect_download() as info:
        await page.click("text=Download text")
    saved = tmp_path / "call.txt"
    await (await info.value).save_as(saved)
    text = saved.read_text()
    heard = api["transcript"][0]["heard_text"]
    assert f"Agent: {heard} [cut off; never heard: " in text
    assert "] Caller: Monday works." in text
    assert "] Agent: Booked." in text
    assert "Tokens: 2000 total, 1500 in, 500 out" in text
    assert text.index("Caller: Monday works.") < text.index("Agent: Booked.")


@pytest.mark.parametrize("leave", ["sign out", "go to the board"])
async def test_leaving_history_cancels_its_reads(console: Console, leave: str) -> None:
    await console.track_fetches()
    page = await console.open()
    await page.locator("#connection", has_text="Live").wait_for()
    asked, release = asyncio.Event(), asyncio.Event()

    async def fail_late(route: Any) -> None:
        asked.set()
        await release.wait()
        await route.fulfill(status=500, json={"detail": "the database went away"})

    await page.route(re.compile(r"/calls\?limit=50$"), fail_late)
    since = await console.fetch_count()
    await page.evaluate("location.hash = '#/history'")
    async with asyncio.timeout(15):
        await asked.wait()
    if leave == "sign out":
        await page.click("#sign-out")
        next_view = page.locator("#token")
    else:
        await page.evaluate("location.hash = '#/'")
        next_view = page.locator("#board-title")
    await next_view.wait_for()
    release.set()  # its failure, too late
    await console.wait_settled(["/calls?limit=50"], since)
    assert await next_view.count() == 1
    assert await page.locator(".toast.error").count() == 0
