"""Every connection the emulators accept runs with TCP_NODELAY (Nagle off).

With Nagle on, a frame written while the previous one is unacknowledged waits
1-20 ms for the peer's next packet or delayed ACK, which the benchmark would
charge to the relay. asyncio's default loop sets the option only on sockets
made with proto ``IPPROTO_TCP``; the emulators' listeners come from
``sim.listener.tcp_listener``. The server side of each connection is found
among this process's file descriptors (Linux ``/proc``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import suppress

import httpx
from websockets.asyncio.client import connect

from sim.listener import tcp_listener
from sim.testing_realtime import run_realtime_emulator
from sim.testing_twilio import run_twilio_emulator
from sim.twilio.probe_app import ProbeApp

ACCOUNT = "AC" + "5" * 32


def accepted_nodelay(port: int) -> list[int]:
    """TCP_NODELAY of each connection this process accepted on ``port``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            # fromfd dup()s the fd and leaks the copy when it is no socket: a leaked
            # copy of a pipe's write end keeps its reader (Playwright's driver) waiting.
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        with suppress(OSError), socket.fromfd(int(fd), socket.AF_INET, socket.SOCK_STREAM) as sock:
            local = sock.getsockname()
            if (
                isinstance(local, tuple)
                and local[1] == port
                and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            ):
                found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return found


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def test_a_tcp_listener_serves_connections_with_nodelay() -> None:
    sock = tcp_listener("127.0.0.1")
    options: asyncio.Queue[int] = asyncio.Queue()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        options.put_nowait(
            writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        )
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname())
        assert await options.get() != 0
        writer.close()


async def test_the_realtime_emulator_serves_with_nodelay() -> None:
    async with run_realtime_emulator() as emulator, httpx.AsyncClient() as client:
        await client.get(f"{emulator.base_url}/models")  # kept alive in the client's pool
        nodelay = accepted_nodelay(emulator.port)
    assert nodelay and all(nodelay), nodelay


async def test_the_twilio_emulator_serves_with_nodelay() -> None:
    async with (
        run_twilio_emulator(account_sid=ACCOUNT, auth_token="token") as emulator,
        httpx.AsyncClient() as client,
    ):
        await client.get(f"{emulator.base_url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
        nodelay = accepted_nodelay(port_of(emulator.base_url))
    assert nodelay and all(nodelay), nodelay


async def test_the_probe_app_serves_websockets_with_nodelay() -> None:
    probe = ProbeApp("token")
    async with probe.running(), connect(probe.ws_url) as phone:
        nodelay = accepted_nodelay(port_of(probe.base_url))
        # The phone's side (websockets' client) has it from asyncio already.
        client = phone.transport.get_extra_info("socket")
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert nodelay and all(nodelay), nodelay
