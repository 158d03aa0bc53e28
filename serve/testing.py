"""Test helpers for the ingress: a fake ``CallControl``, signed Twilio requests, loopback serving.

.. code-block:: python

    control = FakeCallControl()
    app = build_app(AppDeps(settings, store, control, EventHub(), ("token",)))
    async with serve_on_loopback(app) as base_url:
        ...

``twilio_headers(token, url, params)`` signs a webhook with twilio-python's
own ``RequestValidator``, the way Twilio does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from serve.ports import WebCallTicket
from switchboard.store import CallRecord

__all__ = ["FakeCallControl", "serve_on_loopback", "twilio_headers"]

FORM = "application/x-www-form-urlencoded"


@dataclass
class FakeCallControl:
    """Records every call; ``*_error`` fields make the matching method raise."""

    placed: list[CallRecord] = field(default_factory=list)
    hung_up: list[str] = field(default_factory=list)
    hung_up_placing: list[bool] = field(default_factory=list)  # ``placing`` of each
    statuses: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    amd_results: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    answered: list[tuple[CallRecord, str]] = field(default_factory=list)
    web: list[CallRecord] = field(default_factory=list)
    place_error: BaseException | None = None
    answer_error: BaseException | None = None
    web_error: BaseException | None = None
    hang_up_error: BaseException | None = None
    live: bool = True
    serving: set[str] = field(default_factory=set)  # calls an actor serves (``is_live``)
    unsure: bool = False  # ``is_live`` cannot tell (running actors not all known yet)
    at_carrier: dict[str, str] = field(default_factory=dict)  # Twilio sid -> its status
    ended_at_carrier: list[str] = field(default_factory=list)
    is_ready: bool = True
    ready_error: BaseException | None = None
    twiml: str = '<Response><Connect><Stream url="wss://example.com/media"/></Connect></Response>'
    problems: list[tuple[str, str, bool]] = field(default_factory=list)  # ``noted``

    def noted(self, source: str, reason: str, fatal: bool) -> None:
        self.problems.append((source, reason, fatal))

    async def place(self, call: CallRecord) -> None:
        self.placed.append(call)
        if self.place_error is not None:
            raise self.place_error

    async def hang_up(self, call_id: str, placing: bool = False) -> bool:
        self.hung_up.append(call_id)
        self.hung_up_placing.append(placing)
        if self.hang_up_error is not None:
            raise self.hang_up_error
        return self.live

    async def on_twilio_status(self, call_id: str, status: str, params: Mapping[str, str]) -> None:
        self.statuses.append((call_id, status, dict(params)))

    async def on_amd_result(
        self, call_id: str, answered_by: str, params: Mapping[str, str]
    ) -> None:
        self.amd_results.append((call_id, answered_by, dict(params)))

    async def answer_inbound(self, call: CallRecord, call_sid: str) -> str:
        self.answered.append((call, call_sid))
        if self.answer_error is not None:
            raise self.answer_error
        return self.twiml

    async def start_web(self, call: CallRecord) -> WebCallTicket:
        self.web.append(call)
        if self.web_error is not None:
            raise self.web_error
        return WebCallTicket(f"ws://127.0.0.1/media/{call.id}", "CA" + "0" * 32, "web-token")

    async def ready(self) -> bool:
        if self.ready_error is not None:
            raise self.ready_error
        return self.is_ready

    async def is_live(self, call_id: str) -> bool | None:
        return None if self.unsure else call_id in self.serving

    async def carrier_status(self, call: CallRecord) -> str | None:
        return None if call.twilio_sid is None else self.at_carrier.get(call.twilio_sid)

    async def end_at_carrier(self, call: CallRecord) -> None:
        self.ended_at_carrier.append(call.id)


def twilio_headers(
    auth_token: str,
    url: str,
    params: Mapping[str, str],
    *,
    algorithm: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of a form POST to ``url`` signed the way Twilio signs it."""
    signature = RequestValidator(auth_token).compute_signature(url, dict(params), algorithm)
    headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
    if algorithm is not None:
        headers["X-Twilio-Webhooks-Signature-Settings"] = f"key=test,algorithm={algorithm}"
    return headers | dict(extra or {})


@asynccontextmanager
async def serve_on_loopback(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on an ephemeral 127.0.0.1 port; yields the base URL.

    The socket is bound and listening before this yields, so clients can
    connect at once (the kernel queues them until uvicorn accepts).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
