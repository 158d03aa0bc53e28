"""Assemble Switchboard on one machine: a local Ray cluster, the Serve app, the edge.

``async with local_stack(settings) as stack:`` starts, in order:

1. a local Ray cluster on loopback with ``call_slot`` resources (or, given
   ``ray_address``, it joins a running one: the suite's has two nodes);
2. the recorder shards and the warm call pool (detached actors in the app's namespace);
3. the Serve ingress (the HTTP API and Twilio webhooks) on ``serve_port``;
4. the media edge on the public port, in this process's event loop: media
   upgrades go to the call actors, everything else to Serve.

Ray workers read their settings from the environment they inherit from this
process, so ``export_settings`` puts them there before the cluster starts.
On leaving, everything is shut down again (Serve, the detached actors, Ray).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from actors.ray_metrics import ray_edge_metrics
from actors.ray_wiring import CALL_SLOT, NAMESPACE, Handle
from serve.deployment import app, ensure_call_actors, url_for_recorder
from serve.edge_command import PoolResolver
from serve.listener import bind_public, local_url
from serve.media_edge import MediaEdge, settle_edge_process
from switchboard.errors import ConfigError
from switchboard.settings import load_settings

__all__ = ["LocalStack", "bind_public", "free_port", "local_stack", "local_url"]

log = logging.getLogger("switchboard.local")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    public_url: str
    serve_port: int
    edge: MediaEdge
    pool: Handle
    recorders: list[Handle]
    dashboard_url: str | None


def ray_token_file() -> Path:
    """Where ``ray.init`` keeps a new local cluster's token (Ray 2.60: ``~/.ray/auth_token``)."""
    return Path.home() / ".ray" / "auth_token"


def keep_private(path: Path) -> None:
    """Ray writes its token with the umask's mode (0644, often): whoever reads it may run
    code in the cluster, with every secret of its processes."""
    with contextlib.suppress(FileNotFoundError):
        path.chmod(0o600)


def export_settings(values: Mapping[str, str]) -> None:
    """Put settings in this process's environment, for the Ray workers to inherit."""
    os.environ.update(values)


@contextlib.asynccontextmanager
async def local_stack(
    *,
    public_port: int,
    public_host: str = "127.0.0.1",
    serve_port: int | None = None,
    call_slots: int = 100,
    warm_actors: int | None = None,
    num_cpus: int | None = None,
    ray_address: str | None = None,
    listener: socket.socket | None = None,
) -> AsyncIterator[LocalStack]:
    """The whole system in this process, on a local Ray cluster it starts, or on the
    running cluster at ``ray_address`` (the caller's: its nodes bring their own call
    slots, and their workers' environment is theirs). ``listener``: the public port,
    already bound by ``bind_public`` (it is closed on leaving)."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError(
            "a local stack must stay on loopback: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
            "in the environment before Ray is imported"
        )
    # The public port is bound before Ray starts, and Serve's port chosen just before
    # Serve binds it: Ray's processes open listeners on ports of their own choosing, and
    # one could take a port that was only chosen, not held.
    if listener is None:
        listener = bind_public(public_host, public_port)
    edge: MediaEdge | None = None
    pool: Handle | None = None
    recorders: list[Handle] = []
    settings = load_settings(None)  # what the Ray workers will read: the same environment
    if ray_address is None:
        # Before the cluster starts, so its call actors inherit it: they listen on loopback.
        os.environ.setdefault("SWITCHBOARD_MEDIA_HOST", "127.0.0.1")
    try:
        url_for_recorder(settings.database_url)  # a malformed one: ConfigError, before Ray
        if ray_address is None:
            context = ray.init(
                address="local",  # a cluster of its own, not one RAY_ADDRESS or a `ray start` names
                namespace=NAMESPACE,
                _node_ip_address="127.0.0.1",  # keep every Ray socket on loopback
                resources={CALL_SLOT: call_slots},
                num_cpus=num_cpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
            )
            keep_private(ray_token_file())
        else:
            context = ray.init(address=ray_address, namespace=NAMESPACE, log_to_driver=False)
        recorders, pool = await ensure_call_actors(
            settings.database_url,
            settings.warm_call_actors if warm_actors is None else warm_actors,
            settings.recorder_shards,
        )
        serve_port = serve_port or free_port()
        # One proxy, on the head: the edge here sends it the API's traffic (the default,
        # one per node, would have every node of a one-machine cluster bind this port).
        serve.start(
            proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": serve_port}
        )
        serve.run(app, name="switchboard", route_prefix="/")
        edge = MediaEdge(
            PoolResolver(pool), ("127.0.0.1", serve_port), on_refused=ray_edge_metrics().refused
        )
        await edge.start(sock=listener)
        settle_edge_process()  # this process relays every live call's audio from here on
        dashboard = getattr(context, "dashboard_url", None)
        yield LocalStack(
            public_url=local_url(public_host, public_port),
            serve_port=serve_port,
            edge=edge,
            pool=pool,
            recorders=recorders,
            dashboard_url=f"http://{dashboard}" if dashboard else None,
        )
    finally:
        if edge is not None and edge.started:
            await edge.stop()  # closes the listener too
        else:
            listener.close()
        if ray.is_initialized():
            if ray_address is not None:  # a cluster of our own goes, Serve with it
                # (there serve.shutdown() only adds Ray's error line "graceful_shutdown
                # failed ... will be retried": the controller kills itself mid-call)
                with contextlib.suppress(Exception):
                    serve.shutdown()  # type: ignore[no-untyped-call]
            for handle in [pool, *recorders]:
                if handle is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(handle.close.remote(), timeout=10)
                    ray.kill(handle, no_restart=True)
            ray.shutdown()
