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

from ray.serve._private.http_util import MessageQueue

from serve.api import build_app
from serve.event_stream import UNACKED_LIMIT
from serve.events import EventHub
from serve.ports import AppDeps
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
