"""serve.client against the real app served by uvicorn on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio

from serve import event_stream
from serve.api import build_app
from serve.call_command import follow_call
from serve.client import ApiError, SwitchboardClient
from serve.events import EventHub, Subscription
from serve.ports import SUBSCRIPTION_DROPPED, AppDeps
from serve.testing import FakeCallControl, serve_on_loopback, twilio_headers
from switchboard.errors import ServiceError, TwilioServiceError
from switchboard.settings import Settings
from switchboard.store import CallStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.asyncio(loop_scope="function"),
]

TOKEN = "client-token"
TWILIO_TOKEN = "twilio-secret"
TO = "+15551234567"


class WatchedHub(EventHub):
    """An EventHub that says when a subscription goes away."""

    def __init__(self) -> None:
        super().__init__(queue_size=4, replay=3)
        self.left = asyncio.Event()

    def _remove(self, sub: Subscription) -> None:
        super()._remove(sub)
        self.left.set()


@dataclass
class Server:
    base_url: str
    store: CallStore
    control: FakeCallControl
    hub: WatchedHub

    def client(self, token: str = TOKEN) -> SwitchboardClient:
        return SwitchboardClient(self.base_url, token, timeout=10)


@pytest_asyncio.fixture(loop_scope="function")
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    store = await CallStore.open(f"sqlite:///{tmp_path}/calls.db")
    control, hub = FakeCallControl(), WatchedHub()
    settings = Settings.model_validate(
        {
            "twilio_auth_token": TWILIO_TOKEN,
            "twilio_from_number": "+15550001111",
            "public_url": None,
        }
    )
    app = build_app(AppDeps(settings, store, control, hub, (TOKEN,)))
    try:
        async with serve_on_loopback(app) as base_url:
            yield Server(base_url, store, control, hub)
    finally:
        hub.close()
        await store.close()


async def test_place_get_list_and_hang_up(server: Server) -> None:
    async with server.client() as client:
        call = await client.place_call(
            TO, "Book a cleaning", voice="coral", metadata={"ticket": 7}, max_duration_s=300
        )
        assert (call.to, call.from_, call.voice, call.status) == (
            TO,
            "+15550001111",
            "coral",
            "queued",
        )
        assert server.control.placed[0].id == call.id
        detail = await client.get_call(call.id)
        assert detail.id == call.id and detail.metadata == {"ticket": 7}
        assert detail.transcript == [] and detail.usage.total_tokens == 0
        page = await client.list_calls(status="queued", limit=10, created_after=call.created_at)
        assert [c.id for c in page.calls] == [call.id] and page.next_cursor is None
        later = await client.list_calls(created_after=call.created_at + timedelta(seconds=1))
        assert later.calls == []
        hangup = await client.hang_up(call.id)
        assert hangup.id == call.id and server.control.hung_up == [call.id]


async def test_http_errors_become_api_errors(server: Server) -> None:
    async with server.client("wrong") as client:
        with pytest.raises(ApiError) as refused:
            await client.list_calls()
    assert refused.value.status == 401 and "invalid bearer token" in str(refused.value)
    async with server.client() as client:
        with pytest.raises(ApiError) as invalid:
            await client.place_call("555-1234", "hi")
        assert invalid.value.status == 422
        assert "HTTP 422: to must start with + and the country code" in str(invalid.value)
        with pytest.raises(ApiError) as missing:
            await client.get_call("01NOPE")
        assert missing.value.status == 404 and "unknown call id" in str(missing.value)


async def test_a_failed_placement_is_a_502_carrying_the_failed_call(server: Server) -> None:
    server.control.place_error = TwilioServiceError("Twilio said no")
    async with server.client() as client:
        with pytest.raises(ApiError) as failed:
            await client.place_call(TO, "hi")
    error = failed.value
    assert isinstance(error, ServiceError) and error.status == 502
    assert "Twilio said no" in str(error)
    assert isinstance(error.body, dict) and error.body["call"]["status"] == "failed"


async def test_unreachable_server() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with SwitchboardClient(f"http://127.0.0.1:{port}", TOKEN, timeout=5) as client:
        with pytest.raises(ApiError) as rest:
            await client.list_calls()
        assert rest.value.status is None and "cannot reach" in str(rest.value)
        with pytest.raises(ApiError) as stream:
            await anext(client.stream_events())
        assert stream.value.status is None and "cannot open the event stream" in str(stream.value)


async def test_stream_replays_then_follows_one_call_until_the_feed_closes(server: Server) -> None:
    async with server.client() as client:
        call = await client.place_call(TO, "hi")
        other = await client.place_call(TO, "hello")
        events = client.stream_events(call.id)
        first = await anext(events)  # replayed: the stream is live once this arrives
        assert (first["type"], first["call_id"]) == ("call.created", call.id)
        server.hub.publish(other.id, {"type": "not.mine"})
        server.hub.publish(call.id, {"type": "transcript.caller", "text": "hi there"})
        live = await anext(events)
        assert (live["type"], live["text"]) == ("transcript.caller", "hi there")
        server.hub.close()
        with pytest.raises(StopAsyncIteration):
            await anext(events)


async def test_all_calls_stream_sees_a_signed_webhook(server: Server) -> None:
    async with server.client() as client:
        call = await client.place_call(TO, "hi")
        events = client.stream_events()
        assert (await anext(events))["type"] == "call.created"
        # A status callback over real HTTP, signed for the URL this server is reached at.
        path = f"/twilio/status/{call.id}"
        form = {"CallSid": "CA" + "e" * 32, "CallStatus": "ringing", "SequenceNumber": "1"}
        headers = twilio_headers(TWILIO_TOKEN, server.base_url + path, form)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.post(path, content=urlencode(form), headers=headers)
        assert r.status_code == 204, r.text
        status = await anext(events)
        assert (status["type"], status["call_id"], status["status"]) == (
            "call.status",
            call.id,
            "ringing",
        )
        await events.aclose()
    assert (await server.store.get_call(call.id)).call.status == "ringing"  # type: ignore[union-attr]


async def test_a_client_hang_up_frees_its_subscription_while_no_events_flow(
    server: Server,
) -> None:
    # The server's sender is parked waiting for the next event, so only its
    # receive loop can notice the client leaving (ray-notes: Serve pitfalls).
    async with server.client() as client:
        call = await client.place_call(TO, "hi")
        events = client.stream_events(call.id)
        assert (await anext(events))["type"] == "call.created"
        assert server.hub.subscriber_count(call.id) == 1
        await events.aclose()
        await asyncio.wait_for(server.hub.left.wait(), timeout=10)
    assert server.hub.subscriber_count(call.id) == 0


async def test_stream_of_an_unknown_call_is_404(server: Server) -> None:
    async with server.client() as client:
        with pytest.raises(ApiError) as missing:
            await anext(client.stream_events("01NOPE"))
    assert missing.value.status == 404 and "unknown call id" in str(missing.value)


async def test_stream_with_a_bad_token_is_refused(server: Server) -> None:
    async with server.client("wrong") as client:
        with pytest.raises(ApiError) as refused:
            await anext(client.stream_events())
    assert refused.value.status == 403
    assert server.hub.subscriber_count() == 0


async def test_a_dropped_stream_ends_after_saying_why(server: Server) -> None:
    async with server.client() as client:
        call = await client.place_call(TO, "hi")
        events = client.stream_events(call.id)
        assert (await anext(events))["type"] == "call.created"
        for n in range(10):  # synchronous: the server's sender cannot drain in between
            server.hub.publish(call.id, {"type": "tick", "n": n})
        dropped = await anext(events)
        assert dropped["type"] == SUBSCRIPTION_DROPPED and "too slow" in str(dropped["reason"])
        with pytest.raises(StopAsyncIteration):
            await anext(events)


# -- a client that is not talking to Switchboard, or told nonsense -------------------


def answering(response: httpx.Response, seen: list[httpx.Request]) -> SwitchboardClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return SwitchboardClient(
        "http://switchboard.test", TOKEN, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("url", "token", "says"),
    [
        ("http://[::1", TOKEN, "is not a URL"),
        ("ftp://example.com", TOKEN, "not an http:// or https:// URL"),
        ("127.0.0.1:8000", TOKEN, "not an http:// or https:// URL"),
        ("http://127.0.0.1:8000", "tökén", "printable ASCII"),
        # httpx takes any number as a port; connecting with it raised OverflowError.
        ("http://127.0.0.1:99999", TOKEN, r"99999 is not a port number \(1-65535\)"),
        ("https://example.com:0", TOKEN, r"0 is not a port number \(1-65535\)"),
    ],
)
async def test_a_bad_url_or_token_is_an_api_error(url: str, token: str, says: str) -> None:
    with pytest.raises(ApiError, match=says):
        SwitchboardClient(url, token)


@pytest.mark.parametrize(
    ("response", "says"),
    [
        (httpx.Response(200, text="<html>a login page</html>"), "other than the call API's JSON"),
        (httpx.Response(200, json=[1, 2]), "other than the call API's JSON"),
        (httpx.Response(200, json={"id": 5}), "a shape this client does not know"),
        (
            httpx.Response(307, headers={"location": "https://switchboard.test/calls/x"}),
            "HTTP 307.*redirected to 'https://switchboard.test/calls/x'",
        ),
    ],
)
async def test_an_answer_that_is_not_the_apis_is_an_api_error(
    response: httpx.Response, says: str
) -> None:
    async with answering(response, []) as client:
        with pytest.raises(ApiError, match=says):
            await client.get_call("01M8FDWVQ9E5J2R2W3ERB7ERP9")


async def test_a_call_id_stays_one_path_segment() -> None:
    seen: list[httpx.Request] = []
    async with answering(httpx.Response(404, json={"detail": "unknown"}), seen) as client:
        for odd in ("#x", "x?y", "a/b"):
            with pytest.raises(ApiError) as info:
                await client.hang_up(odd)
            assert info.value.status == 404
    assert [r.url.raw_path for r in seen] == [
        b"/calls/%23x/hangup",
        b"/calls/x%3Fy/hangup",
        b"/calls/a%2Fb/hangup",
    ]


async def test_the_client_acknowledges_so_a_long_stream_is_not_let_go(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream, "UNACKED_LIMIT", 150)  # one ack (every 100) is due
    async with server.client() as client:
        call = await client.place_call(TO, "hi")
        events = client.stream_events(call.id)
        assert (await anext(events))["type"] == "call.created"
        for n in range(400):  # one at a time: the hub's queue here holds 4
            server.hub.publish(call.id, {"type": "tick", "n": n})
            assert (await anext(events))["n"] == n
        await events.aclose()


# -- switchboard call, on the real app ------------------------------------------------


class Lines(StringIO):
    """Output a test can wait on: ``shows(text)`` returns once ``text`` was written."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[str, asyncio.Event]] = []

    def write(self, text: str) -> int:
        written = super().write(text)
        for wanted, shown in self._waiting:
            if wanted in self.getvalue():
                shown.set()
        return written

    async def shows(self, wanted: str) -> None:
        shown = asyncio.Event()
        self._waiting.append((wanted, shown))
        if wanted in self.getvalue():
            shown.set()
        await asyncio.wait_for(shown.wait(), 30)


async def test_the_call_command_follows_a_call_again_when_its_replicas_feed_closes(
    server: Server,
) -> None:
    # The replica's feed closes (1001: shut down, redeployed) while the call goes on in
    # its actor. The command follows it again; the replay brings no line twice.
    out, err = Lines(), Lines()
    following = asyncio.create_task(
        follow_call(server.base_url, TOKEN, TO, "hi", out=out, err=err, backoff_s=(0,))
    )
    await out.shows(": queued")
    call_id = server.control.placed[0].id
    await server.store.update_status(call_id, "in-progress", datetime.now(UTC), {})
    server.hub.publish(call_id, {"type": "call.status", "status": "in-progress"})
    server.hub.publish(call_id, {"type": "transcript.caller", "text": "Hello?"})
    await out.shows("caller: Hello?")  # its viewer is subscribed
    server.hub.close()
    await err.shows("following call")
    # One at a time, each once shown: the hub here queues 4 for a viewer, 3 of them replay.
    server.hub.publish(call_id, {"type": "transcript.agent_done", "text": "Hi, this is Ava."})
    await out.shows("agent:  Hi, this is Ava.")
    await server.store.update_status(call_id, "completed", datetime.now(UTC), {})
    server.hub.publish(call_id, {"type": "call.status", "status": "completed"})
    await out.shows("status: completed")
    server.hub.publish(call_id, {"type": "call.ended", "reason": "caller hung up"})
    assert await asyncio.wait_for(following, 30) == 0
    assert out.getvalue().splitlines() == [
        f"call {call_id} to {TO}: queued",
        "status: in-progress",
        "caller: Hello?",
        "agent:  Hi, this is Ava.",
        "status: completed",
        "ended:  caller hung up",
        "final status: completed, cost ~$0.00",
    ]
    assert err.getvalue() == (
        "switchboard: the event stream ended while the call is in-progress; "
        f"following call {call_id} again in 0 s\n"
    )
