"""A real recorder actor's metrics, and the media edge's, reach the node's Prometheus
endpoint.

Runs on the suite's one Ray cluster (the ``world`` fixture of conftest.py).
Ray exports metrics periodically (every 10 s by default), so the test polls
the endpoint until the series appear, within a bounded deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import websockets
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from ray.util.state import get_actor

from actors.ray_metrics import ray_call_metrics
from actors.ray_wiring import NAMESPACE
from actors.recorder import CallRecorder
from switchboard.call_actions import FinishCall, LatencyMeasured, ProblemNoted
from switchboard.store import CallStore, NewCall

World = Any  # the `world` fixture of conftest.py
EXPORT_DEADLINE_S = 90.0
POLL_EVERY_S = 0.5


async def scrape_until(
    url: str, done: Callable[[list[Sample]], bool], deadline_s: float
) -> list[Sample]:
    """Samples of ``url`` once ``done`` holds for them; fails at the deadline."""
    give_up = time.monotonic() + deadline_s
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            response = await client.get(url)
            response.raise_for_status()
            samples = [
                sample
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
            ]
            if done(samples):
                return samples
            assert time.monotonic() < give_up, f"metrics did not appear at {url} in time"
            await asyncio.sleep(POLL_EVERY_S)  # the next poll, not a synchronisation


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


async def test_a_reported_batch_reaches_the_nodes_metrics_endpoint(
    world: World, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    store = await CallStore.open(url)
    call = await store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    await store.close()
    tag = f"t{uuid.uuid4().hex[:12]}"  # this test's label value: no other series has it
    actor_class: Any = ray.remote(CallRecorder)
    recorder = actor_class.options(namespace=NAMESPACE, num_cpus=0).remote(url, ray_call_metrics())
    try:
        now = time.time()
        await recorder.report.remote(
            call.id,
            [
                (LatencyMeasured(tag, 640.0), now),
                (ProblemNoted("policy", tag, "a test problem"), now),
                (FinishCall(tag), now + 1),
            ],
        )
        # The endpoint of the node the recorder runs on (the world's cluster has two).
        here = await asyncio.to_thread(get_actor, recorder._actor_id.hex())
        assert here is not None
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        (node,) = [n for n in nodes if n["Alive"] and n["NodeID"] == here.node_id]
        endpoint = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"

        def exported(samples: list[Sample]) -> bool:
            return (
                value(samples, "ray_switchboard_calls_ended_total", reason=tag) is not None
                and value(samples, "ray_switchboard_latency_ms_count", kind=tag) is not None
            )

        samples = await scrape_until(f"http://{endpoint}/metrics", exported, EXPORT_DEADLINE_S)
    finally:
        await recorder.close.remote()
        ray.kill(recorder)

    assert value(samples, "ray_switchboard_calls_ended_total", reason=tag) == 1
    assert value(samples, "ray_switchboard_latency_ms_bucket", kind=tag, le="600.0") == 0
    assert value(samples, "ray_switchboard_latency_ms_bucket", kind=tag, le="700.0") == 1
    problem = {"source": "policy", "reason": tag, "fatal": "false"}
    assert value(samples, "ray_switchboard_problems_total", **problem) == 1
    # The same worker's call-level series: one call started, none live.
    worker = next(
        s.labels["WorkerId"]
        for s in samples
        if s.name == "ray_switchboard_calls_ended_total" and s.labels.get("reason") == tag
    )
    assert value(samples, "ray_switchboard_calls_started_total", WorkerId=worker) == 1
    assert value(samples, "ray_switchboard_live_calls", WorkerId=worker) == 0

    # monitoring/prometheus.yml finds that endpoint through Ray's service-discovery file.
    ray_node = ray._private.worker._global_node
    assert ray_node is not None
    session = Path(ray_node.get_session_dir_path())
    targets = json.loads((session / "prom_metrics_service_discovery.json").read_text())
    assert any(endpoint in group["targets"] for group in targets)


async def test_the_edges_refusals_reach_its_nodes_metrics_endpoint(world: World) -> None:
    # The edge runs in this process (a Ray driver, as `switchboard run` and `switchboard
    # edge` are): a stream for no live call is refused, and counted.
    no_call = "0" * 26  # a well-formed call id no call has
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            world.stack.public_url.replace("http", "ws", 1) + f"/media/{no_call}",
            additional_headers={"X-Twilio-Signature": "x"},  # one is looked up with one
        ):
            pass
    assert refused.value.response.status_code == 404
    here = ray.get_runtime_context().get_node_id()
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    (node,) = [n for n in nodes if n["Alive"] and n["NodeID"] == here]
    endpoint = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"

    def exported(samples: list[Sample]) -> bool:
        count = value(samples, "ray_switchboard_media_refused_total", reason="unknown_call")
        return count is not None and count >= 1

    await scrape_until(f"http://{endpoint}/metrics", exported, EXPORT_DEADLINE_S)
