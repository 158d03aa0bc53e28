"""The metrics sink over ``ray.util.metrics``: what each node's metrics agent exports.

Ray's agent on every node serves the metrics of that node's processes in
Prometheus format on ``MetricsExportPort`` (8080 on KubeRay) and lists the
ports in ``prom_metrics_service_discovery.json`` in its session directory
(``/tmp/ray/`` links the latest), for Prometheus' file-based discovery.
Exported names get a ``ray_`` prefix, counters a ``_total`` suffix; Ray adds
its own labels (``SessionName``, ``NodeAddress``, ``WorkerId``, ...).

Metric objects are made on first use, in the process that records them
(a sink built in a driver and sent to an actor carries none of them).

Ray's agent drops a gauge value not set again within two export intervals
(20 s by default), and the worker does not resend it: a live-calls gauge
set at a call's last report would vanish. So the sink keeps its gauges'
last values and sets them again every ``GAUGE_REFRESH_S``, from a task on
the event loop that first set one (the recorder's and the pool's: both are
async actors). In a process without a running loop, call ``refresh``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

from ray.util import metrics

from actors.call_metrics import CallMetrics, EdgeMetrics, MetricKind, MetricSpec, PoolMetrics

__all__ = [
    "EXPORT_PREFIX",
    "GAUGE_REFRESH_S",
    "RayMetricsSink",
    "exported_names",
    "ray_call_metrics",
    "ray_edge_metrics",
    "ray_pool_metrics",
    "watch_pool",
]

EXPORT_PREFIX = "ray_"
GAUGE_REFRESH_S = 5.0  # well inside the agent's 20 s gauge expiry


def exported_names(spec: MetricSpec) -> tuple[str, ...]:
    """The Prometheus series names Ray exports for ``spec``."""
    base = EXPORT_PREFIX + spec.name
    match spec.kind:
        case MetricKind.COUNTER:
            return (f"{base}_total",)
        case MetricKind.GAUGE:
            return (base,)
        case MetricKind.HISTOGRAM:
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")


class RayMetricsSink:
    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._gauges: dict[tuple[MetricSpec, tuple[tuple[str, str], ...]], float] = {}
        self._refresher: asyncio.Task[None] | None = None

    def inc(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        self._metric(metric).inc(value, tags=dict(tags))

    def set(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        self._metric(metric).set(value, tags=dict(tags))
        self._gauges[metric, tuple(sorted(tags.items()))] = value
        self._keep_fresh()

    def observe(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        self._metric(metric).observe(value, tags=dict(tags))

    def refresh(self) -> None:
        """Set every gauge to its last value again, so Ray keeps exporting it."""
        for (metric, tags), value in list(self._gauges.items()):
            self._metric(metric).set(value, tags=dict(tags))

    def __getstate__(self) -> dict[str, Any]:
        return {}  # made again where the sink lands

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._made, self._gauges, self._refresher = {}, {}, None

    def _keep_fresh(self) -> None:
        if self._refresher is not None and not self._refresher.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: refresh() by hand
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)  # a period, not a synchronisation
            self.refresh()

    def _metric(self, spec: MetricSpec) -> Any:
        made = self._made.get(spec.name)
        if made is None:
            made = self._made[spec.name] = _make(spec)
        return made


def _make(spec: MetricSpec) -> Any:
    tags = spec.tags or None
    match spec.kind:
        case MetricKind.COUNTER:
            return metrics.Counter(spec.name, spec.description, tag_keys=tags)
        case MetricKind.GAUGE:
            return metrics.Gauge(spec.name, spec.description, tag_keys=tags)
        case MetricKind.HISTOGRAM:
            return metrics.Histogram(
                spec.name, spec.description, boundaries=list(spec.buckets), tag_keys=tags
            )


def ray_call_metrics() -> CallMetrics:
    """The recorder's metrics, exported by Ray: ``CallRecorder(url, ray_call_metrics())``."""
    return CallMetrics(RayMetricsSink())


def ray_pool_metrics() -> PoolMetrics:
    """The pool's gauges, exported by Ray."""
    return PoolMetrics(RayMetricsSink())


def ray_edge_metrics() -> EdgeMetrics:
    """The media edge's counters, exported by Ray (the edge's process is a driver)."""
    return EdgeMetrics(RayMetricsSink())


class PoolCounts(Protocol):
    """What ``watch_pool`` reads: ``actors.pool.CallPool`` has both."""

    @property
    def ready(self) -> int: ...

    @property
    def live(self) -> int: ...


async def watch_pool(
    pool: PoolCounts, metrics: PoolMetrics, every_s: float = GAUGE_REFRESH_S
) -> None:
    """Keep the pool's gauges current (a call ends inside the pool, unseen by its caller)."""
    while True:
        metrics.update(pool.ready, pool.live)
        await asyncio.sleep(every_s)  # a sampling period, not a synchronisation
