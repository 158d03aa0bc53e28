"""The emulators' listening sockets: TCP, with Nagle's algorithm off.

The emulators bind their socket themselves and hand it to uvicorn
(``sockets=[sock]``), so ``base_url`` is known before serving starts, even
with port 0. asyncio's default loop turns ``TCP_NODELAY`` on for a connection
only when its socket's ``proto`` is ``IPPROTO_TCP``, and a socket made with
``socket.socket(AF_INET, SOCK_STREAM)`` has proto 0, as do the connections
accepted from it. Those connections then run Nagle's algorithm: a frame
written while the previous one is unacknowledged waits for the peer's next
packet or its delayed ACK, 1-20 ms on loopback (measured), which shows up as
relay latency. uvloop sets the option on every connection; the default loop
does not. Client sockets (websockets' ``connect``, httpx) come from
``loop.create_connection`` with proto ``IPPROTO_TCP`` and already have it.

:func:`tcp_listener` makes the socket with proto ``IPPROTO_TCP`` (so asyncio
sets the option on each accepted connection) and also sets it on the
listener (Linux copies it to accepted connections, whatever the loop).
"""

from __future__ import annotations

import socket

__all__ = ["tcp_listener"]


def tcp_listener(host: str, port: int = 0, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (``port=0``: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
