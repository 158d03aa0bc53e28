"""Media edge benchmark: N phone-call-like WebSockets at 50 messages/s, direct vs via the edge.

Three processes on 127.0.0.1, so each one's CPU can be read apart: an echo server
standing in for the call actors (websockets or picows), the media edge (default
asyncio loop or uvloop) and a client holding N connections, each sending a
Twilio-like media message (216 base64 characters of payload) every 20 ms and
timing the echo. The orchestrator (this process) reads each process's CPU time
from /proc/<pid>/stat at the start and the end of the measured window.

    python -m bench.media_edge                  # N = 10 25 50 100, 15 s each
    python -m bench.media_edge --n 50 --seconds 5 --variants edge-uvloop
    python -m bench.media_edge --write-doc      # also record docs/media-path.md
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VARIANTS", "Variant", "run_media_edge_bench"]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "media-path.md"
INTERVAL_S = 0.020
CALL_ID = "CA" + "0" * 32


@dataclass(frozen=True)
class Variant:
    name: str
    echo: str  # "websockets" | "picows"
    edge_loop: str | None  # None: the client talks to the echo server directly


VARIANTS = {
    "direct-websockets": Variant("direct, websockets echo", "websockets", None),
    "direct-picows": Variant("direct, picows echo", "picows", None),
    "edge-asyncio": Variant("edge (asyncio), websockets echo", "websockets", "asyncio"),
    "edge-uvloop": Variant("edge (uvloop), websockets echo", "websockets", "uvloop"),
    "edge-asyncio-picows": Variant("edge (asyncio), picows echo", "picows", "asyncio"),
    "edge-uvloop-picows": Variant("edge (uvloop), picows echo", "picows", "uvloop"),
}


def media_message(seq: int) -> str:
    payload = base64.b64encode(os.urandom(160)).decode()  # 20 ms of 8 kHz mu-law
    media = {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20), "payload": payload}
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "media": media,
                       "streamSid": "MZ" + "1" * 32})  # fmt: skip


# -- roles, each run in its own process -----------------------------------------


def _run(main: object, loop: str) -> None:
    factory = None
    if loop == "uvloop" and _has("uvloop"):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)  # type: ignore[arg-type]


async def _echo(impl: str) -> None:
    if impl == "picows":
        from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

        class Echo(WSListener):
            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                    return
                transport.send(frame.msg_type, frame.get_payload_as_bytes())

        server = await ws_create_server(lambda _request: Echo(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        from websockets.asyncio.server import ServerConnection, serve

        async def handler(ws: ServerConnection) -> None:
            async for message in ws:
                await ws.send(message)

        ws_server = await serve(handler, "127.0.0.1", 0, compression=None)
        port = next(iter(ws_server.sockets)).getsockname()[1]
    print("PORT", port, flush=True)
    await asyncio.Event().wait()


async def _edge(upstream_port: int) -> None:
    from serve.media_edge import MediaEdge

    class AllToEcho:
        async def resolve(self, call_id: str) -> tuple[str, int] | None:
            return ("127.0.0.1", upstream_port)

    edge = MediaEdge(AllToEcho(), ("127.0.0.1", upstream_port))
    await edge.start("127.0.0.1", 0)
    print("PORT", edge.port, flush=True)
    await asyncio.Event().wait()


async def _client(port: int, n: int, seconds: float, warmup_s: float) -> None:
    """N connections (picows if installed, else websockets); prints START, STOP, JSON."""
    window = [float("inf"), float("inf")]
    rtts: list[float] = []
    lags: list[float] = []
    connect = _picows_caller if _has("picows") else _websockets_caller

    def on_echo(sent: collections.deque[float]) -> None:
        if not sent:
            return
        now, sent_at = time.perf_counter(), sent.popleft()
        if window[0] <= sent_at < window[1]:
            rtts.append(now - sent_at)

    async def call(index: int) -> int:
        url = f"ws://127.0.0.1:{port}/media/{CALL_ID[:-4]}{index:04d}"
        sent: collections.deque[float] = collections.deque()
        send, close = await connect(url, lambda: on_echo(sent))
        message = media_message(index)
        await asyncio.sleep(random.random() * INTERVAL_S)  # calls are not in phase
        due = time.perf_counter()
        try:
            while due < window[1]:
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                    now = time.perf_counter()
                if window[0] <= now < window[1]:
                    lags.append(now - due)
                sent.append(now)
                await send(message)
                due += INTERVAL_S
            await asyncio.sleep(0.5)  # let the last echoes land
        finally:
            await close()
        return len(sent)

    tasks = [asyncio.create_task(call(i)) for i in range(n)]
    await asyncio.sleep(warmup_s)
    window[0] = time.perf_counter()
    window[1] = window[0] + seconds
    print("START", flush=True)
    await asyncio.sleep(seconds)
    print("STOP", flush=True)
    unanswered = await asyncio.gather(*tasks)
    rtts.sort()
    lags.sort()
    result = {
        "client": "picows" if connect is _picows_caller else "websockets",
        "rtt_p50_ms": 1000 * _pct(rtts, 0.50),
        "rtt_p99_ms": 1000 * _pct(rtts, 0.99),
        "send_lag_p99_ms": 1000 * _pct(lags, 0.99),
        "echoed_fraction": len(rtts) / (n * seconds / INTERVAL_S),
        "unanswered": sum(unanswered),
    }
    print(json.dumps(result), flush=True)


Send = Callable[[str], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


async def _picows_caller(url: str, on_echo: Callable[[], None]) -> tuple[Send, Close]:
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Caller(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                on_echo()

    transport, _ = await ws_connect(Caller, url, extra_headers={"X-Twilio-Signature": "bench"})

    async def send(text: str) -> None:
        transport.send(WSMsgType.TEXT, text.encode())

    async def close() -> None:
        transport.send_close(WSCloseCode.OK)
        transport.disconnect()

    return send, close


async def _websockets_caller(url: str, on_echo: Callable[[], None]) -> tuple[Send, Close]:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, additional_headers={"X-Twilio-Signature": "bench"})

    async def receive() -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                on_echo()

    reader = asyncio.create_task(receive())

    async def close() -> None:
        await ws.close()
        await reader

    return ws.send, close


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# -- the orchestrator ----------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.media_edge", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"benchmark process {proc.args!r} exited early")
    return line.strip()


def _measure(variant: Variant, n: int, seconds: float, warmup_s: float) -> dict[str, object]:
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        procs["echo"] = _spawn("echo", "--impl", variant.echo)
        port = int(_line(procs["echo"]).split()[1])
        if variant.edge_loop is not None:
            procs["edge"] = _spawn("edge", "--loop", variant.edge_loop, "--port", str(port))
            port = int(_line(procs["edge"]).split()[1])
        client = procs["client"] = _spawn(
            "client", "--port", str(port), "--n", str(n),
            "--seconds", str(seconds), "--warmup", str(warmup_s),
        )  # fmt: skip
        if _line(client) != "START":
            raise RuntimeError("client did not start")
        t0, cpu0, m0 = (
            time.monotonic(),
            {k: _cpu_seconds(p.pid) for k, p in procs.items()},
            _machine_busy(),
        )
        if _line(client) != "STOP":
            raise RuntimeError("client did not stop")
        t1, cpu1, m1 = (
            time.monotonic(),
            {k: _cpu_seconds(p.pid) for k, p in procs.items()},
            _machine_busy(),
        )
        result: dict[str, object] = json.loads(_line(client))
        client.wait(10)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
    wall = t1 - t0
    cores = os.cpu_count() or 1
    result.update(
        variant=variant.name, n=n,
        cpu={k: (cpu1[k] - cpu0[k]) / wall for k in procs},
        machine_busy=(m1[0] - m0[0]) / (m1[1] - m0[1]) * cores,
    )  # fmt: skip
    return result


def run_media_edge_bench(
    ns: tuple[int, ...] = (10, 25, 50, 100),
    *,
    seconds: float = 15.0,
    warmup_s: float = 2.0,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> dict[str, object]:
    """Run every variant at every N; the dict has the conditions and one row per run."""
    from bench.machine import describe_machine

    load_before = os.getloadavg()
    rows = [_measure(VARIANTS[v], n, seconds, warmup_s) for v in variants for n in ns]
    return {
        "date": dt.date.today().isoformat(),
        "machine": describe_machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "seconds": seconds,
        "rows": rows,
    }


def render(results: dict[str, object]) -> str:
    rows = results["rows"]
    assert isinstance(rows, list)
    load_b, load_a = results["load_before"], results["load_after"]
    lines = [
        f"Measured {results['date']} on {results['machine']}; {results['seconds']:.0f} s per row; "
        f"load average before/after {load_b[0]:.2f}/{load_a[0]:.2f} (shared machine).",  # type: ignore[index]
        "",
        "| path | N | RTT p50 ms | RTT p99 ms | echoed | client send lag p99 ms "
        "| echo CPU | edge CPU | client CPU | machine busy (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = r["cpu"]
        edge = f"{cpu['edge']:.3f}" if "edge" in cpu else "-"
        lines.append(
            f"| {r['variant']} | {r['n']} | {r['rtt_p50_ms']:.2f} | {r['rtt_p99_ms']:.2f} "
            f"| {r['echoed_fraction']:.3f} | {r['send_lag_p99_ms']:.2f} | {cpu['echo']:.3f} "
            f"| {edge} | {cpu['client']:.3f} | {r['machine_busy']:.2f} |"
        )
    lines += ["", "CPU columns are CPU-seconds per second of the process (1.0 = one core)."]
    return "\n".join(lines)


def record(body: str) -> None:
    start, end = "<!-- bench:media-edge -->", "<!-- /bench:media-edge -->"
    text = DOC.read_text() if DOC.exists() else "# The media path\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "role", nargs="?", default="bench", choices=["bench", "echo", "edge", "client"]
    )
    parser.add_argument("--impl", default="websockets")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args(argv)
    match args.role:
        case "echo":
            _run(_echo(args.impl), "asyncio")
        case "edge":
            _run(_edge(args.port), args.loop)
        case "client":
            _run(_client(args.port, args.n[0], args.seconds, args.warmup), "uvloop")
        case _:
            results = run_media_edge_bench(
                tuple(args.n), seconds=args.seconds, warmup_s=args.warmup,
                variants=tuple(args.variants),
            )  # fmt: skip
            body = render(results)
            print(body)
            if args.write_doc:
                record(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
