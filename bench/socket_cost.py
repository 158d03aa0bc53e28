"""WebSocket library cost in the call actor: websockets (and the openai SDK) vs picows.

Two processes on 127.0.0.1, both on uvloop as in a Ray actor. The *measured*
process holds N sockets as the call actor does, each a ``TextSocket``: one
task reads and counts, one sends a Twilio-media-like JSON text (~400 bytes)
every 20 ms, each connection in its own phase. The *peer* (raw picows, cheap)
does the same on the other end. Two sides of the actor are measured:

- ``media``: the measured process serves (the media server Twilio's stream
  is spliced to): ``websockets.serve`` + ``WebsocketsSocket``, as
  ``CallActor`` does today, vs ``serve_media`` + ``PicowsSocket``;
- ``floor``: no sockets, each "connection" a pipe to itself: what the pacing
  and the reader/writer tasks cost alone, to subtract from the others;
- ``realtime``: the measured process dials (the Realtime session): the openai
  SDK's connection + ``RealtimeSocket`` as today, a bare ``websockets``
  client, vs ``connect_realtime``.

CPU is ``time.process_time()`` of each process over the measured window,
read when the orchestrator (this process) writes ``mark`` to its stdin.

    python -m bench.socket_cost                         # every variant, N = 50, 15 s
    python -m bench.socket_cost --n 20 --seconds 5 --variants media-picows media-websockets
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

__all__ = ["VARIANTS", "run_socket_cost"]

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_S = 0.020
KEY = "sk-bench"


@dataclass(frozen=True)
class Variant:
    side: str  # "media": the measured process serves; "realtime": it dials
    lib: str
    label: str


VARIANTS = {
    "floor": Variant("floor", "memory", "no socket: in-process pipes (the pacing and tasks alone)"),
    "media-websockets": Variant("media", "websockets", "media server, websockets (today)"),
    "media-picows": Variant("media", "picows", "media server, picows"),
    "media-picows-aiofastnet": Variant(
        "media", "picows-aiofastnet", "media server, picows on aiofastnet transports"
    ),
    "realtime-openai": Variant("realtime", "openai", "Realtime client, openai SDK (today)"),
    "realtime-websockets": Variant("realtime", "websockets", "Realtime client, bare websockets"),
    "realtime-picows": Variant("realtime", "picows", "Realtime client, picows"),
}


class TextSocket(Protocol):
    async def send(self, text: str) -> None: ...

    async def recv(self) -> str | bytes: ...


class Counts:
    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def mark(self) -> str:
        times = os.times()
        return json.dumps(
            {"cpu": time.process_time(), "sys": times.system, "sent": self.sent,
             "received": self.received}
        )  # fmt: skip


async def _pace(counts: Counts, send: Callable[[str], Awaitable[None]], index: int) -> None:
    from bench.media_edge import media_message

    message = media_message(index)
    await asyncio.sleep(random.random() * INTERVAL_S)  # calls are not in phase
    due = time.monotonic()
    while True:
        await send(message)
        counts.sent += 1
        due += INTERVAL_S
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _drive(counts: Counts, sock: TextSocket, index: int) -> None:
    """What the call shell does with a socket: read it, and write to it at 50/s."""

    async def read() -> None:
        while True:
            await sock.recv()
            counts.received += 1

    with contextlib.suppress(Exception):
        await asyncio.gather(read(), _pace(counts, sock.send, index))


async def _serve_marks(counts: Counts) -> None:
    """Answer each ``mark`` line on stdin with the counters; return at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"mark":
            print(counts.mark(), flush=True)


# -- the measured process ---------------------------------------------------------


async def _measured_media(lib: str, counts: Counts) -> None:
    accepted = itertools.count()
    if lib.startswith("picows"):
        from actors.picows_sockets import PicowsSocket, serve_media

        async def on_socket(sock: PicowsSocket) -> None:
            await _drive(counts, sock, next(accepted))

        server = await serve_media(
            "127.0.0.1",
            0,
            lambda path, headers: None,
            on_socket,
            use_aiofastnet=lib == "picows-aiofastnet",
        )
        port = server.address[1]
    else:
        import websockets
        from websockets.asyncio.server import ServerConnection
        from websockets.http11 import Request, Response

        from actors.sockets import WebsocketsSocket

        def check(connection: ServerConnection, request: Request) -> Response | None:
            return None

        async def handler(connection: ServerConnection) -> None:
            await _drive(counts, WebsocketsSocket(connection), next(accepted))

        ws_server = await websockets.serve(
            handler, "127.0.0.1", 0, process_request=check, max_size=2**20
        )
        port = next(iter(ws_server.sockets)).getsockname()[1]
    print("PORT", port, flush=True)
    await _serve_marks(counts)


async def _measured_realtime(lib: str, port: int, n: int, counts: Counts) -> None:
    base = f"http://127.0.0.1:{port}/v1"
    if lib == "picows":
        from actors.realtime_connect import connect_realtime, realtime_url

        async def dial() -> TextSocket:
            return await connect_realtime(realtime_url(base, "gpt-realtime"), KEY)
    elif lib == "openai":
        from openai import AsyncOpenAI

        from actors.sockets import RealtimeSocket

        client = AsyncOpenAI(api_key=KEY, base_url=base, max_retries=1)

        async def dial() -> TextSocket:
            connection = await client.realtime.connect(model="gpt-realtime").enter()
            return RealtimeSocket(connection)
    else:
        import websockets

        from actors.sockets import WebsocketsSocket

        async def dial() -> TextSocket:
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
            auth = {"Authorization": f"Bearer {KEY}"}
            ws = await websockets.connect(
                url, additional_headers=auth, compression=None, max_size=None
            )
            return WebsocketsSocket(ws)

    socks = [await dial() for _ in range(n)]
    tasks = [asyncio.ensure_future(_drive(counts, s, i)) for i, s in enumerate(socks)]
    print("READY", flush=True)
    await _serve_marks(counts)
    for task in tasks:
        task.cancel()


class MemorySocket:
    """A socket that receives what it sends: the floor's stand-in, no I/O at all."""

    def __init__(self) -> None:
        self.inbox: collections.deque[str] = collections.deque()
        self.reader: asyncio.Future[None] | None = None

    async def send(self, text: str) -> None:
        self.inbox.append(text)
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)

    async def recv(self) -> str:
        while not self.inbox:
            self.reader = asyncio.get_running_loop().create_future()
            await self.reader
        return self.inbox.popleft()


async def _measured_floor(n: int, counts: Counts) -> None:
    tasks = [asyncio.ensure_future(_drive(counts, MemorySocket(), i)) for i in range(n)]
    print("READY", flush=True)
    await _serve_marks(counts)
    for task in tasks:
        task.cancel()


# -- the peer (raw picows, as cheap as it gets) -------------------------------------


class Peer(WSListener):
    """Counts what arrives and sends at 50/s from the moment it connects."""

    def __init__(self, counts: Counts, tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self.counts = counts
        self.tasks = tasks

    def on_ws_connected(self, transport: WSTransport) -> None:
        async def send(text: str) -> None:
            transport.send(WSMsgType.TEXT, text)

        self.tasks.add(asyncio.ensure_future(_pace(self.counts, send, len(self.tasks))))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT:
            self.counts.received += 1


async def _peer_caller(port: int, n: int, counts: Counts) -> None:
    tasks: set[asyncio.Task[None]] = set()
    url = f"ws://127.0.0.1:{port}/media/CA{'0' * 32}"
    for _ in range(n):
        await ws_connect(lambda: Peer(counts, tasks), url)
    print("READY", flush=True)
    await _serve_marks(counts)


async def _peer_server(counts: Counts) -> None:
    tasks: set[asyncio.Task[None]] = set()
    server = await ws_create_server(lambda _request: Peer(counts, tasks), "127.0.0.1", 0)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await _serve_marks(counts)


def _run(main: Coroutine[object, object, None]) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


# -- the orchestrator ----------------------------------------------------------------


class Proc:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.socket_cost", *args],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def line(self) -> str:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark process {self.popen.args!r} exited early")
        return line.strip()

    def mark(self) -> dict[str, float]:
        assert self.popen.stdin is not None
        self.popen.stdin.write("mark\n")
        self.popen.stdin.flush()
        return dict(json.loads(self.line()))

    def stop(self) -> None:
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.terminate()
            self.popen.wait(5)


def _measure(variant: Variant, n: int, seconds: float, warmup_s: float) -> dict[str, object]:
    procs: list[Proc] = []
    peer: Proc | None = None
    try:
        if variant.side == "floor":
            measured = Proc("measured-floor", "--n", str(n))
            procs.append(measured)
            ready = measured.line()
        elif variant.side == "media":
            measured = Proc("measured-media", "--lib", variant.lib)
            procs.append(measured)
            port = measured.line().split()[1]
            peer = Proc("peer-caller", "--port", port, "--n", str(n))
            procs.append(peer)
            ready = peer.line()
        else:
            peer = Proc("peer-server")
            procs.append(peer)
            port = peer.line().split()[1]
            measured = Proc(
                "measured-realtime", "--lib", variant.lib, "--port", port, "--n", str(n)
            )
            procs.append(measured)
            ready = measured.line()
        if ready != "READY":
            raise RuntimeError(f"expected READY, got {ready!r}")
        time.sleep(warmup_s)  # the orchestrator's window, not synchronisation
        t0, m0, p0 = time.monotonic(), measured.mark(), peer.mark() if peer else {"cpu": 0.0}
        time.sleep(seconds)
        t1, m1, p1 = time.monotonic(), measured.mark(), peer.mark() if peer else {"cpu": 0.0}
        # (both marks are read right after each other, so the peer's window is the same)
    finally:
        for proc in procs:
            proc.stop()
    wall = t1 - t0
    cores = (m1["cpu"] - m0["cpu"]) / wall
    messages = (m1["sent"] - m0["sent"]) + (m1["received"] - m0["received"])
    return {
        "variant": variant.label,
        "n": n,
        "cores": cores,
        "per_conn_pct": 100 * cores / n,
        "us_per_msg": 1e6 * (m1["cpu"] - m0["cpu"]) / max(1.0, messages),
        "sys_share": (m1["sys"] - m0["sys"]) / max(1e-9, m1["cpu"] - m0["cpu"]),
        "sent_per_s": (m1["sent"] - m0["sent"]) / wall,
        "received_per_s": (m1["received"] - m0["received"]) / wall,
        "peer_cores": (p1["cpu"] - p0["cpu"]) / wall,
    }


def run_socket_cost(
    n: int = 50, seconds: float = 15.0, warmup_s: float = 3.0, variants: tuple[str, ...] = ()
) -> list[dict[str, object]]:
    return [_measure(VARIANTS[v], n, seconds, warmup_s) for v in variants or tuple(VARIANTS)]


def render(rows: list[dict[str, object]], seconds: float) -> str:
    load = os.getloadavg()[0]
    lines = [
        f"{seconds:.0f} s per row, 50 msgs/s each way per connection, uvloop; "
        f"load average after: {load:.2f} (shared 2-core machine)",
        "",
        "| variant | N | CPU (cores) | CPU per connection | us per message | of it in the kernel "
        "| sent/s | received/s | peer CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['n']} | {r['cores']:.3f} | {r['per_conn_pct']:.2f}% "
            f"| {r['us_per_msg']:.1f} | {100 * r['sys_share']:.0f}% "  # type: ignore[operator]
            f"| {r['sent_per_s']:.0f} | {r['received_per_s']:.0f} "
            f"| {r['peer_cores']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    roles = ["bench", "measured-floor", "measured-media", "measured-realtime"]
    roles += ["peer-caller", "peer-server"]
    parser.add_argument("role", nargs="?", default="bench", choices=roles)
    parser.add_argument("--lib", default="picows")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    counts = Counts()
    match args.role:
        case "measured-floor":
            _run(_measured_floor(args.n, counts))
        case "measured-media":
            _run(_measured_media(args.lib, counts))
        case "measured-realtime":
            _run(_measured_realtime(args.lib, args.port, args.n, counts))
        case "peer-caller":
            _run(_peer_caller(args.port, args.n, counts))
        case "peer-server":
            _run(_peer_server(counts))
        case _:
            rows = run_socket_cost(args.n, args.seconds, args.warmup, tuple(args.variants))
            print(render(rows, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
