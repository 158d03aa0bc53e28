"""The console in a real browser: headless Debian Chromium driven by Playwright.

Each test gets the ingress app (``build_app``) served by uvicorn on 127.0.0.1
with a real SQLite call store, a ``FakeCallControl`` and an in-process
``EventHub``, all on the test's event loop, so a test drives a call's life by
hand: :meth:`Console.act` writes a call policy action to the store and
publishes its live event exactly as the recorder does, and
:meth:`Console.status` does what a Twilio status callback does.

Nothing is skipped: without ``/usr/bin/chromium`` (Debian package
``chromium``) or the ``playwright`` package the tests fail and say what to
install. The registry browser download (``playwright install``) is never used.
Every page records console errors and uncaught exceptions; a test fails if
any appeared that it did not expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from serve.api import build_app
from serve.events import EventHub
from serve.ports import AppDeps
from serve.testing import FakeCallControl, serve_on_loopback
from switchboard.call_actions import Action
from switchboard.live_events import live_event
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore, NewCall, record

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
# As the machine notes say: no sandbox as root, and no background traffic
# (this machine has no network but loopback).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-test-token"
FROM = "+15005550006"
WIDE = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}
DEFAULT_TIMEOUT_MS = 15_000  # a wait that long means it is not coming

# Every fetch a page makes, in order, in `window.fetches`: {url (as the page gave it),
# auth (its Authorization header), settled}. `settled` turns true a task after the
# answer's body (or the failure) reached the page: once the page's own code has reacted.
TRACK_FETCHES = """
(() => {
  const fetch = window.fetch;
  const text = Response.prototype.text;
  const entries = new WeakMap();
  const settle = (entry) => setTimeout(() => { entry.settled = true; });
  window.fetches = [];
  window.fetch = function (input, init = {}) {
    const entry = { url: String(input), auth: init.headers?.Authorization ?? null, settled: false };
    window.fetches.push(entry);
    const answer = fetch.call(this, input, init);
    answer.then((response) => entries.set(response, entry), () => settle(entry));
    return answer;
  };
  Response.prototype.text = function () {
    const body = text.call(this);
    const entry = entries.get(this);
    if (entry) body.then(() => settle(entry), () => settle(entry));
    return body;
  };
})();
"""


@contextlib.asynccontextmanager
async def launch_browser(extra_args: Sequence[str] = ()) -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright; fails (never skips) when either is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install -y chromium) or set SWITCHBOARD_CHROMIUM",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install playwright", pytrace=False)
    async with async_playwright() as pw:
        # launch() gives every browser a fresh temporary profile (--user-data-dir).
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with launch_browser() as launched:
        yield launched


def relative(url: str) -> str:
    """A request's URL as the page's fetch named it: path and query."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


class Held:
    """Holds the first ``count`` requests of a page that a route matched, unanswered until
    :meth:`release`, and lets the others through; ``seen`` lists every one it matched."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen: list[str] = []
        self.routes: list[Any] = []
        self.released = False
        self._more = asyncio.Event()

    @property
    def urls(self) -> list[str]:
        """The held requests' URLs, as the page's fetch named them."""
        return [relative(route.request.url) for route in self.routes]

    async def handle(self, route: Any) -> None:
        self.seen.append(relative(route.request.url))
        if self.released or len(self.routes) >= self.count:
            await route.continue_()
            return
        self.routes.append(route)
        self._more.set()

    async def wait_held(self) -> None:
        """Until ``count`` requests are held."""
        async with asyncio.timeout(DEFAULT_TIMEOUT_MS / 1000):
            while len(self.routes) < self.count:
                self._more.clear()
                await self._more.wait()

    async def release(self) -> None:
        """Let the held requests go on to the server, and every later one."""
        self.released = True
        for route in self.routes:
            await route.continue_()


@dataclass
class Console:
    """One app on loopback and one browser page pointed at it."""

    base_url: str
    app: FastAPI
    store: CallStore
    hub: EventHub
    control: FakeCallControl
    context: Any
    page: Any
    token: str = TOKEN
    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_error(self, pattern: str) -> None:
        """A console error matching ``pattern`` is part of what the test checks."""
        self.expected.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]

    async def open(self, path: str = "/", *, signed_in: bool = True) -> Any:
        await self.page.goto(self.base_url + path)
        if signed_in:
            await self.sign_in()
        return self.page

    async def sign_in(self, token: str = TOKEN) -> None:
        page = self.page
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        await page.locator("#nav").wait_for(state="visible")

    async def new_call(
        self, to: str = "+15551234567", direction: str = "outbound", **extra: Any
    ) -> CallRecord:
        call = await self.store.create_call(
            NewCall(direction=direction, to=to, from_=FROM, **extra)  # type: ignore[arg-type]
        )
        self.hub.publish(
            call.id,
            {
                "type": "call.created",
                "at": call.created_at,
                "direction": call.direction,
                "to": call.to,
                "from": call.from_,
                "status": call.status,
            },
        )
        return call

    async def status(self, call_id: str, status: str, at: float | None = None) -> None:
        """What a signed Twilio status callback does: store, then publish."""
        at_ = datetime.fromtimestamp(time.time() if at is None else at, UTC)
        await self.store.update_status(call_id, status, at_)
        detail = await self.store.get_call(call_id)
        assert detail is not None
        applied = detail.call.status == status
        self.hub.publish(
            call_id, {"type": "call.status", "at": at_, "status": status, "applied": applied}
        )

    async def act(self, call_id: str, *actions: Action, at: float | None = None) -> None:
        """What the recorder does with a call actor's report: store, then publish."""
        for action in actions:
            when = time.time() if at is None else at
            await record(self.store, call_id, action, datetime.fromtimestamp(when, UTC))
            event = live_event(call_id, action, when)
            if event is not None:
                self.hub.publish(call_id, event)

    def publish(self, call_id: str, **event: object) -> None:
        self.hub.publish(call_id, event)

    def drop_stream(self, call_id: str) -> None:
        """More events of ``call_id`` at once than a page's queue holds: the hub drops its
        subscription (close 1013), and its replay then holds only these; the page
        reconnects and catches up."""
        dropped = self.hub.dropped_total
        for n in range(self.hub._queue_size + 10):
            self.publish(call_id, type="noise", n=n)
        assert self.hub.dropped_total == dropped + 1

    async def hold(self, pattern: re.Pattern[str], count: int = 1) -> Held:
        """Hold the first ``count`` requests of the page to URLs matching ``pattern``."""
        held = Held(count)
        await self.page.route(pattern, held.handle)
        return held

    async def track_fetches(self) -> None:
        """Pages opened from now on keep a log of their fetches (``TRACK_FETCHES``)."""
        await self.context.add_init_script(TRACK_FETCHES)

    async def fetches(self) -> list[dict[str, Any]]:
        """The page's fetches so far (``track_fetches``)."""
        entries: list[dict[str, Any]] = await self.page.evaluate(
            "window.fetches.map((f) => ({ ...f }))"
        )
        return entries

    async def fetch_count(self) -> int:
        count: int = await self.page.evaluate("window.fetches.length")
        return count

    async def wait_settled(self, urls: Sequence[str], since: int = 0) -> None:
        """Until the page has reacted to the answer (or failure) of every fetch of each of
        ``urls`` (absolute, or as the page names them) it made from its ``since``-th fetch
        on (at least one each)."""
        urls = [url.removeprefix(self.base_url) for url in urls]
        await self.page.wait_for_function(
            """([urls, since]) => urls.every((url) => {
                const made = window.fetches.slice(since).filter((f) => f.url === url);
                return made.length > 0 && made.every((f) => f.settled);
            })""",
            arg=[urls, since],
        )


def settings() -> Settings:
    return Settings.model_validate({"twilio_auth_token": "t", "twilio_from_number": FROM})


@contextlib.asynccontextmanager
async def running_console(
    browser: Any,
    database: Path,
    viewport: dict[str, int] = WIDE,
    now: Callable[[], datetime] | None = None,
    more_tokens: Sequence[str] = (),
) -> AsyncIterator[Console]:
    """The app on loopback over a fresh store (clock ``now``) accepting ``TOKEN`` and
    ``more_tokens``, a new browser context and page."""
    store = await CallStore.open(f"sqlite:///{database}", **({"now": now} if now else {}))
    hub = EventHub(queue_size=4096, replay=200)
    control = FakeCallControl()
    app = build_app(AppDeps(settings(), store, control, hub, (TOKEN, *more_tokens)))
    try:
        async with serve_on_loopback(app) as base_url:
            context = await browser.new_context(viewport=viewport, accept_downloads=True)
            context.set_default_timeout(DEFAULT_TIMEOUT_MS)
            page = await context.new_page()
            console = Console(base_url, app, store, hub, control, context, page)
            page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
            page.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
            try:
                yield console
            finally:
                await context.close()
                hub.close()
    finally:
        await store.close()


@pytest.fixture
async def console(
    browser: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Console]:
    """Wide by default; parametrize indirectly with a viewport for phone width."""
    async with running_console(
        browser, tmp_path / "calls.db", getattr(request, "param", WIDE)
    ) as c:
        yield c
        assert c.unexpected_errors() == [], "errors in the browser console"


ConsoleFactory = Callable[..., contextlib.AbstractAsyncContextManager[Console]]


@pytest.fixture
def console_with(tmp_path: Path) -> ConsoleFactory:
    """``async with console_with(browser) as c``: a console on a browser the test launched
    (``console_with(browser, more_tokens=[...])``: accepting more tokens)."""
    return lambda browser, **options: running_console(browser, tmp_path / "calls.db", **options)


@pytest.fixture(scope="session")
def browser_launcher() -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """``launch_browser``, for a test that needs Chromium started with its own flags."""
    return launch_browser
