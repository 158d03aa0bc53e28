"""A web call: the browser's microphone speaks Media Streams to a call actor on Ray.

Runs against the whole stack (``world``: a local Ray cluster, the Serve
ingress, the media edge, both emulators). The page asks ``POST /calls/web``
for a call actor, then opens the media URL through the edge, exactly where
Twilio's stream would land, and speaks the protocol a phone does: `start`
with the one-time token and CallSid, 20 ms mu-law frames, mark echoes.
Chromium's fake microphone plays a caller clip from a WAV file.

Checks: the agent's greeting plays in the page (its level meter moves), the
agent hears the caller (the emulator's VAD fires on the browser's audio, the
caller's turn is transcribed in the store) and answers, the page's call view
shows it, the caller hangs up from the page, and the call is recorded as a
completed web call with no protocol problem.

Signing out (by the button, or because the server refused the token) hangs a
running web call up: that one needs no stack, as the page's media socket is
answered by Playwright in the media edge's place.
"""

from __future__ import annotations

import asyncio
import json
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.auth import TokenChecker
from sim.testing_realtime import clip_bytes
from switchboard.codec import mulaw_decode, mulaw_encode
from switchboard.errors import RealtimeServiceError

pytestmark = pytest.mark.integration

Console = Any  # conftest.Console
World = Any  # the `world` fixture of tests/conftest.py
CALL_MS = 60_000
GREETING = "Hello! This is Ava calling from Bright Smiles Dental."
CALLER = "Hello? Who is this?"
REPLY_START = "We have openings on Monday at four"  # the world's scenario's second reply


def caller_wav(path: Path) -> Path:
    """The caller's side: quiet while the greeting plays, "Hello? Who is this?", then quiet."""
    hello = mulaw_decode(clip_bytes("caller_hello"))
    silence = np.zeros(8000 * 8, dtype=np.int16)  # the greeting (3.5 s) plays meanwhile
    samples = np.concatenate([silence, hello, np.zeros(8000 * 40, dtype=np.int16)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="module")
async def mic_browser(
    tmp_path_factory: pytest.TempPathFactory, browser_launcher: Any
) -> AsyncIterator[Any]:
    wav = caller_wav(tmp_path_factory.mktemp("mic") / "caller.wav")
    fake_mic = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with browser_launcher(fake_mic) as browser:
        yield browser


async def test_a_web_call_reaches_the_agent_and_plays_its_reply(
    world: World, mic_browser: Any
) -> None:
    base = world.stack.public_url
    context = await mic_browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    await context.grant_permissions(["microphone"], origin=base)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        await page.goto(base + "/")
        await page.fill("#token", world.api_token)
        await page.click("button[type=submit]")
        await page.locator("#connection", has_text="Live").wait_for()

        talk = page.get_by_role("button", name="Talk from this browser")
        await talk.wait_for()
        await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
        await talk.click()
        bar = page.locator("#webcall")
        await bar.locator(".webcall-state", has_text="Live").wait_for()
        # The greeting plays in the page: the agent's level meter moves.
        await page.wait_for_function(
            """() => {
                const fill = document.querySelector('#webcall .speaker.agent .meter-fill');
                return fill && fill.style.transform && fill.style.transform !== 'scaleX(0)'
                    && fill.style.transform !== 'scaleX(0.00)';
            }"""
        )
        # The call is on the board as a web call; its live view streams the conversation.
        open_link = bar.get_by_role("link", name="Open")
        call_id = ((await open_link.get_attribute("href")) or "").removeprefix("#/calls/")
        card = page.locator(f'.call-card[data-call-id="{call_id}"]')
        await card.locator(".direction", has_text="web").wait_for()
        await open_link.click()
        await page.locator("h1", has_text="Web call").wait_for()
        await page.locator(".turn.caller .text", has_text=CALLER).wait_for(timeout=CALL_MS)
        await page.locator(".turn.agent .text", has_text=REPLY_START).wait_for(timeout=CALL_MS)

        await bar.get_by_role("button", name="Hang up").click()
        await bar.locator(".webcall-state", has_text="Ended").wait_for()
        await page.locator(".call-stats .badge", has_text="Completed").wait_for(timeout=CALL_MS)

        async with world.client() as client:
            call = await client.get_call(call_id)
        assert (call.direction, call.status) == ("web", "completed")
        said = [(t.role, t.text) for t in call.transcript]
        assert said[:2] == [("agent", GREETING), ("caller", CALLER)]
        assert said[2][0] == "agent" and (said[2][1] or "").startswith(REPLY_START)
        # The Twilio core took every frame of the browser's as a phone's.
        assert [e for e in call.timeline if e.kind == "problem"] == []
        assert errors == []
    finally:
        await context.close()


# Keeps every microphone stream the page is given, to check that it is let go.
KEEP_MICROPHONES = """
(() => {
  const devices = navigator.mediaDevices;
  const ask = devices.getUserMedia.bind(devices);
  window.microphones = [];
  devices.getUserMedia = async (constraints) => {
    const stream = await ask(constraints);
    window.microphones.push(stream);
    return stream;
  };
})();
"""
MEDIA_WAIT_S = 15


@pytest.mark.parametrize("how", ["sign-out button", "token refused"])
async def test_signing_out_hangs_up_the_web_call(
    mic_browser: Any, console_with: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    async with console_with(mic_browser) as console:
        await console.context.grant_permissions(["microphone"], origin=console.base_url)
        await console.context.add_init_script(KEEP_MICROPHONES)
        sent: list[dict[str, Any]] = []
        closes: list[int | None] = []
        started, closed = asyncio.Event(), asyncio.Event()

        def media_edge(socket: Any) -> None:
            """The page's media socket, answered here: what it sends, and when it closes."""

            def on_message(text: str | bytes) -> None:
                sent.append(json.loads(text))
                if sent[-1]["event"] == "start":
                    started.set()

            def on_close(code: int | None, reason: str | None) -> None:
                closes.append(code)
                closed.set()

            socket.on_message(on_message)
            socket.on_close(on_close)

        await console.page.route_web_socket(re.compile(r"/media/"), media_edge)
        page = await console.open()
        await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
        await page.get_by_role("button", name="Talk from this browser").click()
        bar = page.locator("#webcall")
        await bar.locator(".webcall-state", has_text="Live").wait_for()
        await asyncio.wait_for(started.wait(), MEDIA_WAIT_S)
        tracks = "microphones.flatMap((s) => s.getTracks()).map((t) => t.readyState)"
        assert await page.evaluate(tracks) == ["live"]

        if how == "sign-out button":
            await page.click("#sign-out")
        else:  # the server restarts with other tokens: the streams' reconnect hears 401
            console.expect_error(r"401|WebSocket")
            monkeypatch.setattr(TokenChecker, "accepts", lambda self, presented: False)
            console.hub.close()
        await page.locator("#token").wait_for()

        # Hung up as the bar's button does: `stop`, the socket closed, the microphone let go.
        await asyncio.wait_for(closed.wait(), MEDIA_WAIT_S)
        assert closes == [1000]
        assert sent[-1]["event"] == "stop"
        assert sent[-1]["stop"]["callSid"] == sent[1]["start"]["callSid"]
        # A function, not an expression: the page's CSP refuses to eval one when polled.
        await page.wait_for_function(f"() => {tracks}.every((state) => state === 'ended')")
        await bar.locator(".webcall-state", has_text="Ended").wait_for()
        assert console.unexpected_errors() == []


async def test_a_web_call_the_server_starts_as_the_user_signs_out_is_hung_up(
    console: Console,
) -> None:
    """The call is recorded and its actor reserved: with the token still good, the page
    hangs it up rather than leave it waiting for a browser that will never come."""
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    minted = await console.hold(re.compile(r"/calls/web$"))
    await talk.click()
    await minted.wait_held()
    await page.click("#sign-out")
    await page.locator("#token").wait_for()

    async with page.expect_response(re.compile(r"/hangup$")) as hung_up:
        await minted.release()
    assert (await hung_up.value).status == 202
    [call] = console.control.web
    assert console.control.hung_up == [call.id]
    assert await page.locator("#webcall").is_hidden()  # no bar: the microphone was not asked for


# A microphone prompt the user never answers.
UNANSWERED_PROMPT = """
(() => {
  window.asked = 0;
  navigator.mediaDevices.getUserMedia = () => {
    window.asked += 1;
    return new Promise(() => {});
  };
})();
"""


async def test_a_web_call_hung_up_at_the_microphone_prompt_is_hung_up_on_the_server(
    console: Console,
) -> None:
    await console.context.add_init_script(UNANSWERED_PROMPT)
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    await talk.click()
    await page.wait_for_function("() => window.asked === 1")
    async with page.expect_response(re.compile(r"/hangup$")) as hung_up:
        await page.click("#sign-out")
    assert (await hung_up.value).status == 202
    [call] = console.control.web
    assert console.control.hung_up == [call.id]


async def test_the_mute_button_keeps_its_name_and_says_whether_it_is_pressed(
    console: Console,
) -> None:
    """A toggle button that also changed its name would be read as "Unmute, pressed"."""
    await console.context.add_init_script(UNANSWERED_PROMPT)
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    await talk.click()
    await page.wait_for_function("() => window.asked === 1")
    mute = page.locator("#webcall").get_by_role("button", name="Mute", exact=True)
    assert await mute.get_attribute("aria-pressed") == "false"
    await mute.click()
    assert await mute.get_attribute("aria-pressed") == "true"
    assert (await mute.text_content()) == "Mute"
    await mute.click()
    assert await mute.get_attribute("aria-pressed") == "false"


async def test_mu_law_tables_match_the_codec(console: Console) -> None:
    page = await console.open()
    encode, decode = await page.evaluate(
        """async () => {
            const { ENCODE, DECODE } = await import('/console/js/webcall/mulaw.js');
            return [Array.from(ENCODE), Array.from(DECODE)];
        }"""
    )
    assert bytes(encode) == mulaw_encode(np.arange(65536, dtype=np.uint16).view(np.int16))
    assert decode == mulaw_decode(bytes(range(256))).tolist()


async def test_a_web_call_takes_the_form_s_time_limit(console: Console) -> None:
    await console.context.add_init_script(UNANSWERED_PROMPT)
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    await page.click("summary")
    await page.fill("#call-max-duration", "90")
    await page.fill("#call-metadata", '{"customer": "C-1042"}')
    await talk.click()
    await page.wait_for_function("() => window.asked === 1")  # the call is started
    [call] = console.control.web
    assert (call.max_duration_s, call.metadata) == (90, {"customer": "C-1042"})


async def test_a_web_call_that_cannot_start_says_why_and_is_listed_as_failed(
    console: Console,
) -> None:
    """As a phone call that cannot be placed: the server recorded it, so it is on the board."""
    console.control.web_error = RealtimeServiceError("the model is not reachable")
    console.expect_error("502")
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    await talk.click()
    await page.locator(".form-error", has_text="the model is not reachable").wait_for()
    [call] = console.control.web
    failed = page.locator(f'#recent-calls .call-card[data-call-id="{call.id}"]')
    await failed.locator(".badge", has_text="Failed").wait_for()
    assert await page.locator("#webcall").is_hidden()


async def test_a_web_call_s_time_limit_the_server_refuses_lands_on_the_field(
    console: Console,
) -> None:
    console.expect_error("422")
    page = await console.open()
    talk = page.get_by_role("button", name="Talk from this browser")
    await talk.wait_for()
    await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
    await page.click("summary")
    await page.fill("#call-max-duration", "3600")  # over the server's 1800 s
    await talk.click()
    await page.locator("#call-max-duration-error", has_text="must be at most").wait_for()
    assert await page.get_attribute("#call-max-duration", "aria-invalid") == "true"
    assert console.control.web == []
