"""The public port: bound before anything else starts (Ray opens ports of its own
choosing), and the URL this machine reaches it at."""

from __future__ import annotations

import errno
import socket

from switchboard.errors import ConfigError

__all__ = ["bind_public", "local_url"]


def bind_public(
    host: str, port: int, *, listen: bool = True, host_is: str = "HOST", port_is: str = "PORT"
) -> socket.socket:
    """The public listener, bound now (as ``create_server``: listening, ``SO_REUSEADDR``);
    with ``listen=False`` bound only, refusing connections until a server listens on it
    (asyncio's ``create_server(sock=...)`` does), so a probe does not pass before it.

    A port that cannot be had is a ``ConfigError`` naming it and the settings (or flags:
    ``host_is``, ``port_is``) that choose it, not an ``OSError``: the usual cause is a
    Switchboard already running there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if listen:
            return socket.create_server((host, port), family=family)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as exc:
        where = f"port {port} on {host or 'every address'}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{where} is in use: is Switchboard already running? Set {port_is} to use another"
            ) from None
        raise ConfigError(
            f"cannot listen on {where}: {exc.strerror or exc} (set {host_is} and {port_is})"
        ) from None
    except (OverflowError, ValueError) as exc:  # no port number, or a host that is none
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc} (set {host_is} and {port_is})"
        ) from None


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a listener on ``host``: loopback for a wildcard."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
