"""The console against the whole stack: a local Ray cluster, the media edge, both emulators.

Uses ``world`` from tests/integration/conftest.py (one cluster per session,
shared with the integration tests). The emulated phone answers, hears the
agent's greeting, speaks, barges in on the long reply, and hangs up after the
goodbye; the page must show all of it live, in order, with the cut marked,
and then find the call in History.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.integration

World = Any  # the `world` fixture of tests/integration/conftest.py
CALL_MS = 90_000
NUMBER = "+15551239001"

# Every transcript entry the page shows, the moment it first shows it, and
# whether an agent turn was ever seen mid-stream: proof the words arrived live.
WATCH = """() => {
    window.__seen = [];
    window.__streamed = new Set();
    const note = () => {
        for (const li of document.querySelectorAll('#transcript > li.turn')) {
            const id = li.dataset.itemId;
            if (!window.__seen.includes(id)) window.__seen.push(id);
            if (li.classList.contains('streaming')) window.__streamed.add(id);
        }
    };
    new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
    note();
}"""


async def test_a_call_placed_from_the_console_streams_live_and_lands_in_history(
    world: World, browser: Any
) -> None:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        base = world.stack.public_url
        await page.goto(base + "/")
        await page.fill("#token", world.api_token)
        await page.click("button[type=submit]")
        await page.locator("#connection", has_text="Live").wait_for()

        await page.fill("#call-to", NUMBER)
        await page.fill("#call-instruction", "You are Ava, booking a dental cleaning for Jane Doe.")
        await page.click("text=Place call")
        card = page.locator(".call-card", has_text=NUMBER)
        await card.wait_for()
        call_id = await card.get_attribute("data-call-id")
        assert call_id

        await card.click()
        await page.locator("h1", has_text=f"Call to {NUMBER}").wait_for()
        await page.evaluate(WATCH)
        # The whole goodbye, not a part of it: its words and the Completed badge come by
        # different paths (the call actor's reports, the ingress's status callback).
        goodbye = page.locator(
            ".turn.agent .text",
            has_text=re.compile(r"^Perfect, you are booked for Monday at four\. Goodbye!$"),
        )
        await goodbye.wait_for(timeout=CALL_MS)
        await page.locator(".call-stats .badge", has_text="Completed").wait_for(timeout=CALL_MS)

        turns = await page.locator("#transcript > li.turn").evaluate_all(
            "items => items.map(li => [li.classList.contains('caller') ? 'caller' : 'agent',"
            " li.querySelector('.text').textContent, li.classList.contains('interrupted')])"
        )
        said = [(role, text) for role, text, _ in turns]
        assert said[0] == ("agent", "Hello! This is Ava calling from Bright Smiles Dental.")
        assert said[1] == ("caller", "Hello? Who is this?")
        assert ("caller", "Wait, sorry, can I ask something first?") in said
        assert said[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")
        cut = [text for role, text, interrupted in turns if interrupted]
        assert len(cut) == 1 and cut[0].startswith("We have openings on Monday")
        cut_turn = page.locator(".turn.interrupted")
        assert await cut_turn.locator("del.unheard").count() == 1
        assert "Cut off: the caller heard" in await cut_turn.locator(".cut-note").text_content()
        # Live: turns appeared one after another in conversation order, and at
        # least one agent reply was on screen while it was still being spoken.
        seen = await page.evaluate("window.__seen")
        on_screen = await page.locator("#transcript > li.turn").evaluate_all(
            "items => items.map(li => li.dataset.itemId)"
        )
        assert seen == on_screen
        assert await page.evaluate("window.__streamed.size") >= 1

        await page.click("nav >> text=History")
        await page.fill("#history-search", NUMBER)
        row = page.locator(f'#history-rows tr[data-call-id="{call_id}"]')
        await row.wait_for()
        assert await row.locator(".badge").text_content() == "Completed"
        await row.locator("a").click()
        await page.locator(".turn.interrupted .cut-note").wait_for()
        assert await page.locator("#transcript > li.turn").count() == len(turns)
        assert errors == []
    finally:
        await context.close()
