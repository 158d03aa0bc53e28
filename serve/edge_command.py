"""``switchboard edge``: the media edge of one node, joined to a running Ray cluster.

For a cluster deployed with ``serve deploy serve/serve_config.yaml``: run one edge per
node, in front of that node's Serve proxy; it asks the call pool (one Ray call per
stream) where each call's actor listens. ``switchboard run`` runs its own edge.
"""

from __future__ import annotations

import asyncio
import signal

import ray
from ray._private.services import canonicalize_bootstrap_address

from actors.ray_metrics import ray_edge_metrics
from actors.ray_wiring import NAMESPACE, POOL_NAME, Handle, through_restarts
from serve.listener import bind_public
from serve.media_edge import MediaEdge, settle_edge_process
from switchboard.errors import ConfigError

__all__ = ["PoolResolver", "await_ray", "run_edge"]

RAY_WAIT_S = 30.0  # a node's GCS starting beside the edge; Ray's own retries take minutes


class PoolResolver:
    """The edge's question, answered by the pool actor (one Ray call per stream).

    Without a handle the pool is found by name at a stream, until it exists: an edge
    starts before Serve's ingress has made the pool (on Kubernetes its readiness gates
    the head pod's, which gates Serve's deployment), and no pool means no live call.
    """

    def __init__(self, pool: Handle | None = None, name: str = POOL_NAME) -> None:
        self.pool = pool
        self.name = name

    async def resolve(self, call_id: str) -> tuple[str, int] | None:
        pool = self.pool or await self._find_pool()
        if pool is None:
            return None
        address: tuple[str, int] | None = await through_restarts(
            lambda: pool.locate.remote(call_id)
        )
        return None if address is None else (str(address[0]), int(address[1]))

    async def _find_pool(self) -> Handle | None:
        try:  # a GCS lookup: off the loop that relays the audio
            self.pool = await asyncio.to_thread(ray.get_actor, self.name, namespace=NAMESPACE)
        except ValueError:  # not made yet
            return None
        return self.pool


async def await_ray(ray_address: str, wait_s: float = RAY_WAIT_S) -> None:
    """Return once the cluster's GCS takes a TCP connection; ConfigError after ``wait_s``.

    ``ray.init`` to an address where nothing listens retries for minutes with log lines
    that never say it gave up; an operator who mistyped the address deserves one line.
    """
    if ray_address.startswith("ray://"):
        return  # Ray Client: its server, not a GCS, answers there
    try:  # "auto": RAY_ADDRESS, else the node's address file (Ray's own rules)
        address = canonicalize_bootstrap_address(ray_address)
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(f"--ray-address {ray_address!r}: {exc}") from None
    if address is None:
        raise ConfigError(f"--ray-address {ray_address!r}: name a running cluster, not 'local'")
    host, _, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address, as Ray writes one
    if not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(f"--ray-address {ray_address!r}: {port_text!r} is not a port number")
    port = int(port_text)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        timeout = min(5.0, max(0.5, deadline - loop.time()))
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            if loop.time() >= deadline:
                reason = type(exc).__name__ if not str(exc) else str(exc)
                named = address if address == ray_address else f"{ray_address} ({address})"
                raise ConfigError(
                    f"no Ray cluster answers at {named} after {wait_s:g} s ({reason});"
                    " check --ray-address or RAY_ADDRESS"
                ) from None
            await asyncio.sleep(1.0)
        else:
            writer.close()
            return


async def run_edge(
    host: str, port: int, serve_port: int, ray_address: str = "auto", ray_wait_s: float = RAY_WAIT_S
) -> int:
    # Bound first: a port that cannot be had is one line, not a traceback after Ray. Not
    # listening yet: a readiness probe passes once the edge serves, as before.
    listener = bind_public(host, port, listen=False, host_is="--host", port_is="--port")
    edge = MediaEdge(
        PoolResolver(), ("127.0.0.1", serve_port), on_refused=ray_edge_metrics().refused
    )
    try:
        await await_ray(ray_address, ray_wait_s)
        ray.init(address=ray_address, namespace=NAMESPACE, log_to_driver=False)
        await edge.start(sock=listener)  # the resolver finds the pool at the first stream
        settle_edge_process()  # as local_stack
        where = f"{host}:{edge.port}, other traffic to 127.0.0.1:{serve_port}"
        print(f"media edge on {where}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if edge.started:
            await edge.stop()  # closes the listener too
        else:
            listener.close()
        if ray.is_initialized():
            ray.shutdown()
    return 0
