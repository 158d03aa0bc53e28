"""How the console is served, and how it holds up at phone width and from the keyboard."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import websockets

from serve.console import STATIC_DIR
from switchboard.call_actions import AgentTranscriptGrew, AgentTurnInterrupted, AgentTurnStarted
from switchboard.session_config import VOICES

Console = Any  # the `console` fixture of conftest.py
PHONE = {"width": 390, "height": 844}


async def test_the_page_and_its_files_are_served_without_shadowing_the_api(
    console: Console,
) -> None:
    async with httpx.AsyncClient(base_url=console.base_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        script = await http.get("/console/js/main.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == csp
        assert (await http.get("/console/js/nope.js")).status_code == 404
        assert (await http.get("/console/../serve/api.py")).status_code == 404
        # The API is untouched: still authenticated, and the console is not in its schema.
        assert (await http.get("/calls")).status_code == 401
        assert (await http.post("/calls", json={})).status_code == 401
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/" not in paths and not any(p.startswith("/console") for p in paths)
    # A stray WebSocket under /console is refused cleanly, not with a server error.
    url = console.base_url.replace("http", "ws", 1) + "/console/js/main.js"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass  # pragma: no cover - the handshake fails
    assert refused.value.response.status_code == 403


def test_the_page_offers_exactly_the_voices_the_api_accepts() -> None:
    source = (STATIC_DIR / "js" / "voices.js").read_text()
    listed = re.search(r"VOICES = \[(.*?)\]", source, re.S)
    assert listed is not None
    assert tuple(re.findall(r'"([^"]+)"', listed.group(1))) == VOICES


def test_no_markup_is_built_from_strings() -> None:
    """Every API string reaches the page as text: no innerHTML, no eval, no inline handlers."""
    for path in STATIC_DIR.rglob("*.js"):
        source = path.read_text()
        for risky in (".innerHTML", ".outerHTML", ".insertAdjacentHTML", "eval(", "new Function"):
            assert risky not in source, f"{path.name} uses {risky}"
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"\son\w+=", html) and "<script>" not in html


@pytest.mark.parametrize("console", [PHONE], indirect=True)
async def test_every_view_fits_a_phone_screen(console: Console) -> None:
    call = await console.new_call("+4915112345678", instruction="x" * 400)
    await console.status(call.id, "in-progress")
    await console.act(
        call.id,
        AgentTurnStarted("a1"),
        AgentTranscriptGrew("a1", "Averyveryverylongwordwithoutanyspaces" * 5 + " and more words"),
        AgentTurnInterrupted("a1", 100, 1000),
    )
    page = await console.open()
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    # The card with its long last line (it comes with the live replay, after the list).
    await page.locator(".call-card .last-line", has_text="Averyveryverylong").wait_for()
    assert await page.evaluate(overflow) <= 0, "the board scrolls sideways"
    await page.goto(f"{console.base_url}/#/calls/{call.id}")
    await page.locator(".turn.interrupted").wait_for()
    assert await page.evaluate(overflow) <= 0, "the call view scrolls sideways"
    await page.goto(f"{console.base_url}/#/history")
    await page.locator("#history-rows tr").first.wait_for()
    assert await page.evaluate(overflow) <= 0, "history scrolls sideways"


async def test_the_console_works_from_the_keyboard(console: Console) -> None:
    call = await console.new_call("+15551230007")
    await console.status(call.id, "in-progress")
    page = await console.open()
    await page.locator(".call-card").first.wait_for()

    async def tab_to(selector: str, limit: int = 40) -> None:
        for _ in range(limit):
            await page.keyboard.press("Tab")
            if await page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    # Sign-in, board, call: all by keys.
    await tab_to(f'.call-card[data-call-id="{call.id}"]')
    await page.keyboard.press("Enter")
    await page.locator("h1", has_text="Call to +15551230007").wait_for()
    await tab_to(".call-actions .button.danger")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")
    await page.locator(".toast", has_text="Hang-up requested").wait_for()
    assert console.control.hung_up == [call.id]

    await page.goto(f"{console.base_url}/#/history")
    await page.locator("#history-rows tr").first.wait_for()
    await tab_to("#history-rows a")
    await page.keyboard.press("Enter")
    await page.locator("h1", has_text="Call to +15551230007").wait_for()
    # Focus is visible wherever it lands.
    await tab_to("a[href='#/history']")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


async def test_the_api_docs_run_from_this_origin_alone(console: Console) -> None:
    """Swagger UI's scripts come from this origin (the console's token lives here), and
    the page works under its Content-Security-Policy: no request leaves, no violation."""
    page = console.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{console.base_url}/docs")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "frame-ancestors 'none'" in csp
    await page.get_by_text("/calls/{call_id}/hangup").first.wait_for()  # rendered from the schema
    assert requested and all(url.startswith(console.base_url) for url in requested)


async def test_the_skip_link_goes_to_the_content_and_keeps_the_view(console: Console) -> None:
    """The route lives in the URL's fragment: the skip link must not replace it (History's
    filters would be lost to the board)."""
    page = await console.open("/#/history?status=completed")
    await page.locator("#history-title").wait_for()
    await page.focus(".skip-link")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    assert await page.evaluate("location.hash") == "#/history?status=completed"
    assert await page.locator("#history-title").count() == 1
    assert await page.input_value("#history-status") == "completed"
    # An in-page anchor reached some other way leaves the view be, too (this listener
    # runs after the page's own).
    await page.evaluate(
        """() => new Promise((done) => {
            window.addEventListener('hashchange', done, { once: true });
            location.hash = '#main';
        })"""
    )
    assert await page.locator("#history-title").count() == 1


async def test_a_new_view_starts_at_its_heading(console: Console) -> None:
    call = await console.new_call("+15551230008")
    await console.status(call.id, "in-progress")
    page = await console.open()
    await page.locator("#board-title").wait_for()
    assert await page.evaluate("document.activeElement.id") == "board-title"
    await page.locator(f'.call-card[data-call-id="{call.id}"]').focus()
    await page.keyboard.press("Enter")
    heading = page.locator("main h1", has_text="Call to +15551230008")
    await heading.wait_for()
    assert await heading.evaluate("(h1) => h1 === document.activeElement")
    await page.keyboard.press("Tab")  # on from the heading: what follows it
    assert await page.evaluate("document.activeElement.textContent") == "Hang up"


async def test_an_address_with_a_malformed_escape_says_not_found(console: Console) -> None:
    page = await console.open()
    await page.locator("#board-title").wait_for()
    await page.evaluate("location.hash = '#/calls/%E0%A4%A'")
    await page.locator("main h1", has_text="Page not found").wait_for()
    assert await page.title() == "Not found · Switchboard"
    await page.get_by_role("link", name="Live calls").last.click()
    await page.locator("#board-title").wait_for()
