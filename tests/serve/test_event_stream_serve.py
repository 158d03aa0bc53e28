"""A live event stream wired as Ray Serve 2.60 wires a replica's WebSocket, without Ray.

``UserCallableWrapper.call_http_entrypoint`` (``ray/serve/_private/replica.py``)
hands the app an ``enqueue`` closure as ASGI ``send``: it appends to a ``MessageQueue``
that ``fetch_messages_from_queue`` empties at once into the streaming generator the
proxy reads, with no backpressure (in the default separate-thread mode the queue is on
another loop). So ``send`` never waits, the replica's queue never holds more than one
turn's messages, and what a viewer has not read is held by the proxy: nothing in the
replica shows that the viewer stopped reading but its acknowledgements stopping
(``serve/event_stream.py``). ``proxy_held`` stands for the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from ray.serve._private.http_util import MessageQueue

from serve.api import build_app
from serve.event_stream import UNACKED_LIMIT
from serve.events import EventHub
from serve.ports import SUBSCRIPTION_DROPPED, AppDeps, EventFeed
from serve.testing import FakeCallControl
from switchboard.settings import Settings
from switchboard.store import CallStore

TOKEN = "serve-token"
QUEUE = 256


async def test_a_viewer_that_stops_reading_under_serve_is_closed_1013_and_bounded(
    store: CallStore,
) -> None:
    hub = EventHub(queue_size=QUEUE)
    settings = Settings.model_validate({"twilio_auth_token": "t"})
    app = build_app(AppDeps(settings, store, FakeCallControl(), hub, (TOKEN,)))
    connected = False
    stays = asyncio.Event()  # the viewer never leaves, and never reads

    async def receive() -> dict[str, object]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await stays.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    result_queue = MessageQueue()

    async def enqueue(message: dict[str, object]) -> None:  # as call_http_entrypoint's
        result_queue.put_nowait(message)

    scope = {
        "type": "websocket",
        "path": "/events",
        "raw_path": b"/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
        "subprotocols": [],
        "scheme": "ws",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 1),
        "asgi": {"version": "3.0"},
    }
    call = asyncio.ensure_future(app(scope, receive, enqueue))
    proxy_held: list[dict[str, object]] = []

    async def stream_to_proxy() -> None:
        async for messages in result_queue.fetch_messages_from_queue(call):
            proxy_held.extend(messages)

    streaming = asyncio.ensure_future(stream_to_proxy())
    try:
        await asyncio.wait_for(_subscribed(hub), 10.0)
        most_in_replica = 0
        for _ in range(30):  # a poll's worth of events every few milliseconds
            for n in range(100):
                hub.publish("CALL", {"type": "transcript.delta", "n": n})
            most_in_replica = max(most_in_replica, len(result_queue._message_queue))
            await asyncio.sleep(0.002)
        assert most_in_replica <= 100  # one turn's messages at most: no sign of the viewer
        closes = [m for m in proxy_held if m["type"] == "websocket.close"]
        assert closes and closes[0]["code"] == 1013, f"{len(proxy_held)} messages held"
        # What the proxy holds for it is bounded: the unacknowledged events, then the close.
        sent = [m for m in proxy_held if m["type"] == "websocket.send"]
        assert len(sent) == UNACKED_LIMIT + 1 and proxy_held[-1]["type"] == "websocket.close"
    finally:
        stays.set()
        call.cancel()
        streaming.cancel()
        await asyncio.gather(call, streaming, return_exceptions=True)


async def _subscribed(hub: EventHub) -> None:
    while not hub.subscribed():
        await asyncio.sleep(0.01)  # polling the hub, bounded by the caller's wait


class Viewer:
    """One WebSocket on ``/events`` driven through ASGI: what it sends, what it gets."""

    def __init__(self, store: CallStore, feed: EventFeed) -> None:
        settings = Settings.model_validate({"twilio_auth_token": "t"})
        self.app = build_app(AppDeps(settings, store, FakeCallControl(), feed, (TOKEN,)))
        self.incoming: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.got: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()

    def open(self) -> asyncio.Future[None]:
        scope = {
            "type": "websocket",
            "path": "/events",
            "raw_path": b"/events",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
            "subprotocols": [],
            "scheme": "ws",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 1),
            "asgi": {"version": "3.0"},
        }
        return asyncio.ensure_future(self.app(scope, self.incoming.get, self.got.put))

    def send_text(self, text: str) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    def received(self) -> list[MutableMapping[str, Any]]:
        out = []
        while not self.got.empty():
            out.append(self.got.get_nowait())
        return out


async def test_an_ack_below_the_last_one_closes_1007_and_takes_nothing_back(
    store: CallStore,
) -> None:
    hub = EventHub(queue_size=QUEUE)
    viewer = Viewer(store, hub)
    app = viewer.open()
    assert (await viewer.got.get())["type"] == "websocket.accept"
    for n in range(3):
        hub.publish("CALL", {"type": "tick", "n": n})
    for _ in range(3):
        assert (await viewer.got.get())["type"] == "websocket.send"
    viewer.send_text('{"ack": 3}')
    viewer.send_text('{"ack": 1}')  # a regression: 3 were acknowledged already
    viewer.leave()  # refused before this is read, or the socket just ends
    await asyncio.wait_for(app, 10.0)
    [close] = [m for m in viewer.received() if m["type"] == "websocket.close"]
    assert close["code"] == 1007
    assert close["reason"] == "ack 1 is not between 3 and the 3 events sent"


class Dropping:
    """A feed that drops its one subscriber at once, saying ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def subscribe(self, call_id: str | None) -> AsyncIterator[dict[str, object]]:
        return self._feed(call_id)

    async def _feed(self, call_id: str | None) -> AsyncIterator[dict[str, object]]:
        yield {"call_id": call_id, "type": SUBSCRIPTION_DROPPED, "reason": self.reason}

    def publish(self, call_id: str, event: dict[str, object]) -> None:
        raise AssertionError("nothing is published here")


async def test_a_close_reason_is_cut_to_123_bytes_of_utf8_between_characters(
    store: CallStore,
) -> None:
    # RFC 6455 §5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
    viewer = Viewer(store, Dropping("é" * 100))  # 200 bytes of UTF-8, 2 a character
    await asyncio.wait_for(viewer.open(), 10.0)
    [close] = [m for m in viewer.received() if m["type"] == "websocket.close"]
    assert close["code"] == 1013
    assert close["reason"] == "é" * 61  # 122 bytes: the 62nd would not fit whole
