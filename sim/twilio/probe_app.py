"""A probe "app" for checking the Twilio emulator in isolation: webhooks + Media Streams.

``ProbeApp(auth_token)`` runs a Starlette app on uvicorn (127.0.0.1,
ephemeral port) in the current loop. It validates every request with
twilio's own ``RequestValidator`` (so an emulator signing bug shows up as
``valid=False``) and records it; ``/twiml/{name}`` serves TwiML the test set
in ``probe.twiml[name]``; ``/hook/{name}`` answers any webhook with 200;
``/media`` accepts the emulator's WebSocket and hands the test a
``MediaSession`` to read from and write to.

.. code-block:: python

    async with ProbeApp(token).running() as probe:
        twiml = stream_twiml(probe.ws_url)
        ...
        session = await probe.next_session()
        start = await session.next("start")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from sim.listener import tcp_listener

__all__ = ["Hit", "MediaSession", "ProbeApp", "stream_twiml"]


@dataclass
class Hit:
    path: str
    method: str
    params: dict[str, str]
    valid: bool


@dataclass
class MediaSession:
    websocket: WebSocket
    signature_valid: bool
    received: asyncio.Queue[dict[str, object]] = field(default_factory=asyncio.Queue)
    log: list[dict[str, object]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_now: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, event: str | None = None, timeout: float = 10.0) -> dict[str, object]:
        """The next message (of that event type, skipping others)."""
        while True:
            message = await asyncio.wait_for(self.received.get(), timeout)
            if event is None or message.get("event") == event:
                return message

    async def send(self, message: dict[str, object]) -> None:
        await self.websocket.send_text(json.dumps(message))

    def close(self) -> None:
        self.close_now.set()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ProbeApp:
    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)
        self.hits: list[Hit] = []
        self.twiml: dict[str, str] = {}
        self.sessions: asyncio.Queue[MediaSession] = asyncio.Queue()
        self.base_url = ""
        self.ws_url = ""
        self._changed = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/twiml/{name}", self._twiml, methods=["GET", "POST"]),
                Route("/hook/{name}", self._hook, methods=["GET", "POST"]),
                WebSocketRoute("/media", self._media),
            ]
        )

    async def _params(self, request: Request) -> tuple[dict[str, str], bool]:
        url = str(request.url)
        signature = request.headers.get("x-twilio-signature", "")
        if request.method == "POST":
            body = (await request.body()).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            return params, self.validator.validate(url, params, signature)
        params = dict(request.query_params)
        return params, self.validator.validate(url, {}, signature)

    def _record(self, request: Request, params: dict[str, str], valid: bool) -> None:
        self.hits.append(Hit(request.url.path, request.method, params, valid))
        self._changed.set()

    async def _twiml(self, request: Request) -> Response:
        params, valid = await self._params(request)
        self._record(request, params, valid)
        name = request.path_params["name"]
        if name not in self.twiml:
            return PlainTextResponse("no such twiml", status_code=404)
        return Response(self.twiml[name], media_type="application/xml")

    async def _hook(self, request: Request) -> Response:
        params, valid = await self._params(request)
        self._record(request, params, valid)
        return PlainTextResponse("ok")

    async def _media(self, websocket: WebSocket) -> None:
        signature = websocket.headers.get("x-twilio-signature", "")
        valid = self.validator.validate(self.ws_url, {}, signature)
        await websocket.accept()
        session = MediaSession(websocket, valid)
        self.sessions.put_nowait(session)

        async def reader() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = json.loads(await websocket.receive_text())
                    session.log.append(message)
                    session.received.put_nowait(message)

        task = asyncio.get_running_loop().create_task(reader())
        closer = asyncio.get_running_loop().create_task(session.close_now.wait())
        await asyncio.wait([task, closer], return_when=asyncio.FIRST_COMPLETED)
        closer.cancel()
        if not task.done():
            with contextlib.suppress(Exception):
                await websocket.close()
            task.cancel()
        session.closed.set()

    async def next_session(self, timeout: float = 10.0) -> MediaSession:
        return await asyncio.wait_for(self.sessions.get(), timeout)

    def hits_for(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def wait_hits(self, path: str, count: int, timeout: float = 10.0) -> list[Hit]:
        async def until() -> list[Hit]:
            while len(self.hits_for(path)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.hits_for(path)

        return await asyncio.wait_for(until(), timeout)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProbeApp]:
        sock = tcp_listener("127.0.0.1", backlog=128)  # with TCP_NODELAY
        port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/media"
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", ws="websockets-sansio"
        )
        server = _Server(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        try:
            yield self
        finally:
            server.should_exit = True
            await task


def stream_twiml(
    ws_url: str, *, extra: str = "", params: dict[str, str] | None = None, status_callback: str = ""
) -> str:
    parameters = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in (params or {}).items())
    cb = f' statusCallback="{status_callback}"' if status_callback else ""
    return (
        f'<Response><Connect><Stream url="{ws_url}"{cb}>{parameters}</Stream></Connect>'
        f"{extra}</Response>"
    )
