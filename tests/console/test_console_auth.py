"""Signing in: nothing works without the token; it is asked for once and kept only as typed."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from serve.auth import TokenChecker

Console = Any  # the `console` fixture of conftest.py


async def test_nothing_loads_before_sign_in_and_a_wrong_token_is_refused(console: Console) -> None:
    requested: list[str] = []
    console.page.on("request", lambda r: requested.append(r.url))
    page = await console.open(signed_in=False)
    await page.locator("#token").wait_for()
    assert await page.locator("#nav").is_hidden()
    assert not [u for u in requested if "/calls" in u or "/events" in u]

    # An empty form says what is missing; a wrong token is refused by the server.
    await page.click("button[type=submit]")
    assert await page.text_content("#token-error") == "Enter the API token."
    console.expect_error(r"401")
    await page.fill("#token", "not-the-token")
    await page.click("button[type=submit]")
    await page.locator("#token-error", has_text="refused this token").wait_for()
    assert await page.get_attribute("#token", "aria-invalid") == "true"
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0

    await console.sign_in()
    await page.locator("#board-title").wait_for()


async def test_a_token_with_characters_no_token_has_says_so(console: Console) -> None:
    """A zero-width space pasted with the token cannot go in a header (fetch refuses the
    request as it would a network failure): the form says what is wrong with the token."""
    requested: list[str] = []
    console.page.on("request", lambda r: requested.append(r.url))
    page = await console.open(signed_in=False)
    await page.fill("#token", f"{console.token}\u200b")
    await page.click("button[type=submit]")
    error = page.locator("#token-error", has_text="characters an API token cannot have")
    await error.wait_for()
    assert "reach" not in (await error.text_content() or "")
    assert await page.get_attribute("#token", "aria-invalid") == "true"
    assert not [u for u in requested if "/calls" in u]
    await console.sign_in()  # the token as it should be
    await page.locator("#board-title").wait_for()


async def test_the_token_is_remembered_and_is_the_only_thing_stored(console: Console) -> None:
    page = await console.open()
    stored = await page.evaluate("Object.assign({}, localStorage)")
    assert stored == {"switchboard.token": console.token}
    assert await page.evaluate("sessionStorage.length") == 0
    # Never in the page itself, nor in a URL.
    assert console.token not in await page.content()
    assert console.token not in page.url

    await page.reload()
    await page.locator("#board-title").wait_for()  # no second sign-in
    assert await page.locator("#nav").is_visible()

    await page.click("#sign-out")
    await page.locator("#token").wait_for()
    assert await page.evaluate("localStorage.length") == 0
    await page.reload()
    await page.locator("#token").wait_for()


async def test_not_remembering_keeps_the_token_for_this_tab_only(console: Console) -> None:
    page = await console.open(signed_in=False)
    await page.uncheck("#remember")
    await console.sign_in()
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("sessionStorage.getItem('switchboard.token')") == console.token
    other = await console.context.new_page()  # a new tab starts signed out
    await other.goto(console.base_url + "/")
    await other.locator("#token").wait_for()
    await other.close()


async def test_a_token_revoked_while_signed_in_sends_the_user_back_to_sign_in(
    console: Console,
) -> None:
    page = await console.open()
    console.expect_error(r"401|WebSocket")
    await page.evaluate("localStorage.setItem('switchboard.token', 'revoked')")
    await page.reload()
    await page.locator("#token-error", has_text="refused the API token").wait_for()
    assert await page.evaluate("localStorage.length") == 0


async def test_a_token_revoked_while_a_live_stream_reconnects_signs_the_user_out(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The board's stream is live; the server restarts with other tokens. The stream's
    # reconnect is refused at the handshake (403), which the browser only sees as 1006:
    # the page asks over HTTP, hears 401, and signs out rather than retrying forever.
    page = await console.open()
    await page.locator("#nav").wait_for(state="visible")
    console.expect_error(r"401|WebSocket")
    monkeypatch.setattr(TokenChecker, "accepts", lambda self, presented: False)
    console.hub.close()  # every live stream ends (a restart)
    await page.locator("#token-error", has_text="refused the API token").wait_for()
    assert await page.evaluate("localStorage.length") == 0


async def test_a_late_refusal_of_a_signed_out_token_signs_no_one_out(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request made before a sign-out answers 401 after the next user signed in: the
    page it was made for is gone, and so is its token; the new user stays signed in.
    (A view's reads are cancelled when it goes, a download's too: a hang-up is not.)"""
    await console.track_fetches()
    call = await console.new_call("+15551230010")
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("h1", has_text="Call to +15551230010").wait_for()
    hang_up = await console.hold(re.compile(rf"/calls/{call.id}/hangup$"))
    await page.get_by_role("button", name="Hang up").click()
    await page.get_by_role("button", name="Confirm hang-up").click()
    await hang_up.wait_held()
    stale = hang_up.routes[0].request

    # The server now takes only the next user's token; the user signs out, the next signs in.
    console.expect_error(r"401")
    monkeypatch.setattr(TokenChecker, "accepts", lambda self, presented: presented == "token-b")
    await page.click("#sign-out")
    await page.locator("#token").wait_for()
    await console.sign_in("token-b")
    await page.locator("h1", has_text="Call to +15551230010").wait_for()

    await hang_up.release()
    assert (await stale.response()).status == 401
    await console.wait_settled([stale.url])
    assert await page.locator("#token").count() == 0
    assert await page.locator("#nav").is_visible()
    assert await page.evaluate("localStorage.getItem('switchboard.token')") == "token-b"


async def test_a_download_asked_for_before_a_sign_out_is_not_offered_after_it(
    console: Console,
) -> None:
    """The record read for a download comes back after the user signed out: it is not
    handed to whoever uses the browser next."""
    call = await console.new_call("+15551230011")
    page = await console.open(f"/#/calls/{call.id}")
    await page.locator("h1", has_text="Call to +15551230011").wait_for()
    downloads: list[object] = []
    page.on("download", lambda download: downloads.append(download))
    read = await console.hold(re.compile(rf"/calls/{call.id}$"))
    await page.click("text=Download JSON")
    await read.wait_held()
    await page.click("#sign-out")
    await page.locator("#token").wait_for()
    failed = asyncio.Event()
    page.on("requestfailed", lambda request: failed.set())
    await read.release()
    if read.routes[0].request.failure is None:  # not seen failing yet: it will be
        await asyncio.wait_for(failed.wait(), 15)
    assert read.routes[0].request.failure is not None  # aborted: the view went with the user
    assert downloads == []


async def test_an_error_page_that_is_not_the_api_s_is_not_shown(console: Console) -> None:
    """A proxy in front of the server answers with its own HTML page: the user is told
    the status, not shown the markup."""
    console.expect_error("502")
    proxy_page = (
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
        "</body>\r\n</html>\r\n"
    )

    async def bad_gateway(route: Any) -> None:
        await route.fulfill(status=502, content_type="text/html", body=proxy_page)

    page = await console.open(signed_in=False)
    await page.route(re.compile(r"/calls\?limit=1$"), bad_gateway)
    await page.fill("#token", console.token)
    await page.click("button[type=submit]")
    error = page.locator("#token-error")
    await error.filter(has_text="502").wait_for()
    assert await error.text_content() == "the server answered 502 (Bad Gateway)"
