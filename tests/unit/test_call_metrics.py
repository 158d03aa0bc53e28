"""Reported actions -> metric updates, read back from an isolated Prometheus registry."""

from __future__ import annotations

import asyncio
import pickle
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from actors import call_metrics as cm
from actors import ray_metrics
from actors import recorder as recorder_module
from actors.call_metrics import CallMetrics, LabelValues, MetricKind, MetricSpec, PoolMetrics
from actors.recorder import CallRecorder
from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnTranscribed,
    CallStatusChanged,
    FinishCall,
    HangUp,
    LatencyMeasured,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    UsageReported,
)
from switchboard.errors import StoreError
from switchboard.realtime_events import Usage
from switchboard.store import NewCall

T0 = 1_800_000_000.0


class RegistrySink:
    """A ``MetricsSink`` over its own prometheus_client registry, held to Ray's contract."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._made: dict[str, Any] = {}

    def inc(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        assert metric.kind is MetricKind.COUNTER
        assert value > 0, "ray.util.metrics.Counter.inc refuses values <= 0"
        self._series(metric, tags).inc(value)

    def set(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        assert metric.kind is MetricKind.GAUGE
        self._series(metric, tags).set(value)

    def observe(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        assert metric.kind is MetricKind.HISTOGRAM
        self._series(metric, tags).observe(value)

    def value(self, sample: str, **labels: str) -> float:
        found = self.registry.get_sample_value(sample, labels)
        return 0.0 if found is None else found

    def _series(self, spec: MetricSpec, tags: Mapping[str, str]) -> Any:
        assert set(tags) == set(spec.tags), f"{spec.name}: tags {sorted(tags)}"
        metric = self._made.get(spec.name)
        if metric is None:
            kwargs: dict[str, Any] = {"labelnames": spec.tags, "registry": self.registry}
            if spec.kind is MetricKind.COUNTER:
                metric = Counter(spec.name, spec.description, **kwargs)
            elif spec.kind is MetricKind.GAUGE:
                metric = Gauge(spec.name, spec.description, **kwargs)
            else:
                metric = Histogram(spec.name, spec.description, buckets=spec.buckets, **kwargs)
            self._made[spec.name] = metric
        return metric.labels(**tags) if spec.tags else metric


def usage(**fields: int) -> Usage:
    return Usage(total_tokens=0, input_tokens=0, output_tokens=0, **fields)


@pytest.fixture
def sink() -> RegistrySink:
    return RegistrySink()


def test_a_whole_call_becomes_counts_latencies_and_a_duration(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink)
    metrics.reported("call-1", [(PhaseChanged("awaiting_answer", "idle"), T0)], now=T0 + 0.1)
    assert sink.value("switchboard_calls_started_total") == 1
    assert sink.value("switchboard_live_calls") == 1
    metrics.reported(
        "call-1",
        [
            (AgentTurnStarted("item_a"), T0 + 1),
            (LatencyMeasured("answer", 420.0), T0 + 1),
            (AgentTranscriptGrew("item_a", "Hello"), T0 + 1.1),
            (CallerTurnTranscribed("item_c", "Hi"), T0 + 2),
            (AgentTurnStarted("item_b"), T0 + 3),
            (LatencyMeasured("response", 730.5), T0 + 3),
            (AgentTurnInterrupted("item_b", heard_ms=900, generated_ms=2400), T0 + 4),
            (RunTool("tc_1", "book_slot", "{}"), T0 + 5),
            (RunTool("tc_2", "book_slot", "{}"), T0 + 6),
            (ProblemNoted("realtime", "rate_limited", "slow down"), T0 + 7),
            (RenewSession("session_cap"), T0 + 7.5),
            # Tried again after the new session failed to connect: the same move.
            (RenewSession("session_cap", attempt=2), T0 + 7.8),
            (
                UsageReported("resp_1", usage(input_audio_tokens=120, output_audio_tokens=80)),
                T0 + 8,
            ),
            (UsageReported("resp_2", usage(input_text_tokens=30, input_cached_tokens=10)), T0 + 9),
        ],
        now=T0 + 9.2,
    )
    metrics.reported(
        "call-1",
        [
            (AgentTurnInterrupted("item_d", 300, 800, by="end"), T0 + 65),
            (HangUp("caller_silence"), T0 + 65),
            (FinishCall("caller_silence"), T0 + 65),
        ],
        now=T0 + 65.1,
    )

    assert sink.value("switchboard_calls_started_total") == 1
    assert sink.value("switchboard_calls_ended_total", reason="caller_silence") == 1
    assert sink.value("switchboard_live_calls") == 0
    assert sink.value("switchboard_call_duration_s_sum") == pytest.approx(65)
    assert sink.value("switchboard_call_duration_s_bucket", le="60.0") == 0
    assert sink.value("switchboard_call_duration_s_bucket", le="120.0") == 1
    assert sink.value("switchboard_latency_ms_sum", kind="answer") == 420.0
    assert sink.value("switchboard_latency_ms_bucket", kind="answer", le="400.0") == 0
    assert sink.value("switchboard_latency_ms_bucket", kind="answer", le="500.0") == 1
    assert sink.value("switchboard_latency_ms_count", kind="response") == 1
    assert sink.value("switchboard_agent_turns_total") == 2
    assert sink.value("switchboard_interruptions_total", by="caller") == 1
    assert sink.value("switchboard_interruptions_total", by="end") == 1
    assert sink.value("switchboard_tool_calls_total", tool="book_slot") == 2
    problem = {"source": "realtime", "reason": "rate_limited", "fatal": "false"}
    assert sink.value("switchboard_problems_total", **problem) == 1
    assert sink.value("switchboard_responses_total") == 2
    assert sink.value("switchboard_session_renewals_total", reason="session_cap") == 1
    tokens = {
        kind: sink.value("switchboard_tokens_total", kind=kind)
        for kind in ("input_audio", "output_audio", "input_text", "input_cached", "output_text")
    }
    assert tokens == {
        "input_audio": 120,
        "output_audio": 80,
        "input_text": 30,
        "input_cached": 10,
        "output_text": 0,
    }


def test_each_batch_counts_its_size_and_the_lag_of_its_oldest_action(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink)
    batch: list[tuple[Action, float]] = [
        (AgentTurnStarted("a"), T0 + 0.05),
        (AgentTurnStarted("b"), T0),
        (AgentTurnStarted("c"), T0 + 0.1),
    ]
    metrics.reported("call-1", batch, now=T0 + 0.25)
    metrics.reported("call-1", [], now=T0 + 1)  # nothing to count
    assert sink.value("switchboard_recorder_batch_size_count") == 1
    assert sink.value("switchboard_recorder_batch_size_sum") == 3
    assert sink.value("switchboard_recorder_lag_ms_sum") == pytest.approx(250)
    # A recorder whose clock is behind the actor's records no negative lag.
    metrics.reported("call-1", [(AgentTurnStarted("d"), T0 + 10)], now=T0 + 9)
    assert sink.value("switchboard_recorder_lag_ms_bucket", le="10.0") == 1


def test_reports_after_the_end_do_not_start_the_call_again(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink)
    metrics.reported("call-1", [(FinishCall("busy"), T0)], now=T0 + 0.1)
    usage_after_end = UsageReported("resp_1", usage(output_text_tokens=5))
    metrics.reported(
        "call-1", [(usage_after_end, T0 + 0.2), (FinishCall("busy"), T0 + 0.2)], T0 + 1
    )
    assert sink.value("switchboard_calls_started_total") == 1
    assert sink.value("switchboard_calls_ended_total", reason="busy") == 1
    assert sink.value("switchboard_live_calls") == 0
    assert sink.value("switchboard_tokens_total", kind="output_text") == 5


def test_fatal_problems_are_counted_apart_for_the_alert(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink)
    batch: list[tuple[Action, float]] = [
        (ProblemNoted("twilio", "stream_lost", "gone", fatal=True), T0),
        (ProblemNoted("twilio", "stream_lost", "gone"), T0),
        (ProblemNoted("twilio", "stream_lost", "gone", fatal=True), T0),
    ]
    metrics.reported("call-1", batch, now=T0)
    problem = {"source": "twilio", "reason": "stream_lost"}
    assert sink.value("switchboard_problems_total", **problem, fatal="true") == 2
    assert sink.value("switchboard_problems_total", **problem, fatal="false") == 1


def test_an_end_stamped_before_the_first_report_is_no_negative_duration(
    sink: RegistrySink,
) -> None:
    metrics = CallMetrics(sink)
    metrics.reported("call-1", [(AgentTurnStarted("a"), T0 + 5)], now=T0 + 5)
    metrics.reported("call-1", [(FinishCall("completed"), T0 + 4)], now=T0 + 6)  # clock stepped
    assert sink.value("switchboard_call_duration_s_sum") == 0
    assert sink.value("switchboard_call_duration_s_count") == 1


def test_calls_never_heard_from_again_are_ended_as_lost(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink, stale_after_s=100, sweep_every_s=10, remember_ended_s=50)
    metrics.reported("quiet", [(AgentTurnStarted("a"), T0)], now=T0)
    metrics.reported("busy", [(AgentTurnStarted("a"), T0)], now=T0)
    for step in range(1, 12):  # "busy" keeps talking; "quiet" died at T0
        metrics.reported("busy", [(AgentTurnStarted(f"b{step}"), T0 + step * 10)], T0 + step * 10)
    assert sink.value("switchboard_calls_ended_total", reason="lost") == 1
    assert sink.value("switchboard_live_calls") == 1
    assert metrics.live == 1
    # Within remember_ended_s a late word from the lost call starts nothing.
    metrics.reported("quiet", [(AgentTurnStarted("z"), T0 + 115)], now=T0 + 115)
    assert sink.value("switchboard_calls_started_total") == 2


def test_a_lost_call_is_given_up_on_when_due_though_no_call_reports(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink, stale_after_s=100, sweep_every_s=10)
    metrics.reported("quiet", [(AgentTurnStarted("a"), T0)], now=T0)
    metrics.tick(T0 + 60)
    assert sink.value("switchboard_live_calls") == 1  # not yet silent long enough
    metrics.tick(T0 + 101)
    assert sink.value("switchboard_calls_ended_total", reason="lost") == 1
    assert sink.value("switchboard_live_calls") == 0
    assert metrics.live == 0


async def test_the_recorder_ticks_its_metrics_while_nothing_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticked = asyncio.Event()

    class Ticks:
        def reported(self, *args: Any) -> None:
            pass

        def tick(self, now: float) -> None:
            ticked.set()

    monkeypatch.setattr(recorder_module, "TICK_S", 0.01)
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}", Ticks())
    await recorder.open()
    try:
        await asyncio.wait_for(ticked.wait(), 10)
    finally:
        await recorder.close()
    assert recorder._ticker is None


def test_label_values_are_cleaned_and_bounded() -> None:
    values = LabelValues(limit=2, max_length=8)
    assert values("stream_stopped") == "stream_s"
    assert values("a b/c\n") == "a_b/c"
    assert values("stream_stopped") == "stream_s"  # seen: still itself
    assert values("third") == "other"
    assert values("   ") == "other"
    assert LabelValues()("   ") == "unknown"


def test_peer_chosen_reasons_cannot_grow_the_series_without_bound(sink: RegistrySink) -> None:
    metrics = CallMetrics(sink, label_limit=3)
    for n in range(10):
        metrics.reported(f"call-{n}", [(ProblemNoted("realtime", f"code_{n}", "?"), T0)], T0)
    reasons = {
        sample.labels["reason"]
        for family in sink.registry.collect()
        if family.name == "switchboard_problems"
        for sample in family.samples
    }
    assert reasons == {"code_0", "code_1", "code_2", "other"}
    assert (
        sink.value("switchboard_problems_total", source="realtime", reason="other", fatal="false")
        == 7
    )


def test_a_failing_sink_never_reaches_the_recorder() -> None:
    class Broken:
        def inc(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
            raise RuntimeError("exporter down")

        set = observe = inc

    metrics = CallMetrics(Broken())
    metrics.reported("call-1", [(FinishCall("done"), T0)], T0)
    metrics.reported("call-2", [(FinishCall("done"), T0)], T0)
    assert metrics.failures == 2


def test_pool_gauges(sink: RegistrySink) -> None:
    PoolMetrics(sink).update(ready=3, live=7)
    assert (sink.value("switchboard_pool_ready"), sink.value("switchboard_pool_live")) == (3, 7)


def test_the_edges_refusals_are_counted_by_reason(sink: RegistrySink) -> None:
    metrics = cm.EdgeMetrics(sink)
    for reason in ("unknown_call", "head_timeout", "unknown_call"):
        metrics.refused(reason)
    assert sink.value("switchboard_media_refused_total", reason="unknown_call") == 2
    assert sink.value("switchboard_media_refused_total", reason="head_timeout") == 1


def test_every_metric_is_listed_and_valid_for_ray_and_prometheus() -> None:
    defined = [v for v in vars(cm).values() if isinstance(v, MetricSpec)]
    assert sorted(s.name for s in defined) == sorted(s.name for s in cm.METRICS)
    assert len({s.name for s in cm.METRICS}) == len(cm.METRICS)
    for spec in cm.METRICS:
        assert re.fullmatch(r"switchboard_[a-z0-9_]+", spec.name), spec.name
        assert not spec.name.endswith("_total"), "Ray adds _total to counters"
        assert all(re.fullmatch(r"[a-z_]+", tag) for tag in spec.tags)
        if spec.kind is MetricKind.HISTOGRAM:
            assert spec.buckets and spec.buckets[0] > 0, "Ray wants positive boundaries"
            assert list(spec.buckets) == sorted(set(spec.buckets))
        else:
            assert spec.buckets == ()
    sink = RegistrySink()  # prometheus_client accepts every definition too
    for spec in cm.METRICS:
        sink._series(spec, {tag: "x" for tag in spec.tags})


def test_a_call_taken_over_after_a_recorder_restart_is_not_started_twice(
    sink: RegistrySink,
) -> None:
    # The recorder that counted the call's start died; this one hears it mid-call.
    metrics = CallMetrics(sink)
    metrics.reported("call-1", [(AgentTurnStarted("a"), T0 + 30)], now=T0 + 30.1, first=False)
    assert sink.value("switchboard_calls_started_total") == 0
    assert sink.value("switchboard_live_calls") == 1
    metrics.reported("call-1", [(FinishCall("completed"), T0 + 60)], now=T0 + 60.1, first=False)
    assert sink.value("switchboard_calls_ended_total", reason="completed") == 1
    assert sink.value("switchboard_live_calls") == 0
    assert sink.value("switchboard_call_duration_s_count") == 0  # its start is not known here


async def test_an_actor_that_died_after_its_call_ended_starts_no_call_in_the_metrics(
    tmp_path: Path, sink: RegistrySink
) -> None:
    # The end was recorded by the shard before this one (restarted since): this one
    # counts the problem, and no call started or live.
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    before = CallRecorder(url)
    await before.open()
    assert before.store is not None
    call = await before.store.create_call(NewCall("outbound", "+15551234567", "+15005550006"))
    await before.report(call.id, [(FinishCall("stream_stopped"), T0)], seq=0, sender="a-1")
    await before.close()
    after = CallRecorder(url, CallMetrics(sink))
    await after.actor_died(call.id, "ActorDiedError", T0 + 5)
    assert sink.value("switchboard_calls_started_total") == 0
    assert sink.value("switchboard_live_calls") in (None, 0)
    problem = {"source": "switchboard", "reason": "actor_failed", "fatal": "false"}
    assert sink.value("switchboard_problems_total", **problem) == 1
    after.metrics.tick(T0 + 4000)  # no "lost" call an hour on
    assert sink.value("switchboard_calls_ended_total", reason="lost") in (None, 0)
    await after.close()


async def test_a_wrap_up_report_to_a_restarted_recorder_after_the_end_makes_no_live_call(
    tmp_path: Path, sink: RegistrySink
) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    before = CallRecorder(url)
    await before.open()
    assert before.store is not None
    call = await before.store.create_call(NewCall("web", "+15551234567", "+15005550006"))
    await before.report(call.id, [(FinishCall("stream_stopped"), T0)], seq=0, sender="a-1")
    await before.close()
    after = CallRecorder(url, CallMetrics(sink))
    # The actor's wrap-up, its next numbered action: the web call's own final status.
    await after.report(call.id, [(CallStatusChanged("completed"), T0 + 1)], seq=1, sender="a-1")
    after.metrics.tick(T0 + 4000)
    assert sink.value("switchboard_live_calls") == 0
    assert sink.value("switchboard_calls_ended_total", reason="lost") in (None, 0)
    await after.close()


async def test_the_recorder_hands_every_batch_to_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, float, bool]] = []

    class Spy:
        def reported(
            self,
            call_id: str,
            batch: Sequence[tuple[Action, float]],
            now: float,
            first: bool,
            over: bool = False,
        ) -> None:
            seen.append((call_id, len(batch), now, first))

        def tick(self, now: float) -> None:
            pass

    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}", Spy())
    await recorder.open()
    assert recorder.store is not None
    call = await recorder.store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    before = time.time()
    await recorder.report(call.id, [(AgentTurnStarted("a"), T0)], seq=0, sender="actor-1")
    batch = [(AgentTurnStarted("b"), T0), (FinishCall("done"), T0 + 1)]

    async def database_away(*args: Any) -> None:
        raise StoreError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(recorder_module, "record_batch", database_away)
        with pytest.raises(StoreError):
            await recorder.report(call.id, batch, seq=1, sender="actor-1")
    await recorder.report(call.id, batch, seq=1, sender="actor-1")  # counted once recorded
    # Sent again: nothing new to count.
    await recorder.report(call.id, batch, seq=1, sender="actor-1")
    after = time.time()
    await recorder.close()
    assert [(c, n, first) for c, n, _, first in seen] == [
        (call.id, 1, True),
        (call.id, 2, False),
        (call.id, 0, False),
    ]
    assert before <= seen[0][2] <= after  # the recorder's own clock, not the actions' times


# -- the Ray sink, over fake ray.util.metrics objects ---------------------------


class FakeRayMetric:
    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("inc", value, tags))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("set", value, tags))

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("observe", value, tags))


@pytest.fixture
def fake_ray_metrics(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeRayMetric]:
    made: dict[str, FakeRayMetric] = {}

    def make(spec: MetricSpec) -> FakeRayMetric:
        made[spec.name] = FakeRayMetric(spec)
        return made[spec.name]

    monkeypatch.setattr(ray_metrics, "_make", make)
    return made


async def test_the_ray_sink_sets_its_gauges_again_so_ray_keeps_them(
    fake_ray_metrics: dict[str, FakeRayMetric],
) -> None:
    sink = ray_metrics.RayMetricsSink()
    metrics = CallMetrics(sink)
    metrics.reported("call-1", [(AgentTurnStarted("a"), T0)], T0)
    metrics.reported("call-1", [(FinishCall("done"), T0 + 1)], T0 + 1)
    live = fake_ray_metrics["switchboard_live_calls"]
    assert [value for _, value, _ in live.calls] == [1, 0]
    assert sink._refresher is not None and not sink._refresher.done()  # on this loop
    try:
        sink.refresh()
        assert live.calls[-1] == ("set", 0, {})  # the last value, not the first
        assert len(fake_ray_metrics["switchboard_calls_started"].calls) == 1  # counters alone
        # Sent to an actor, the sink carries no metric objects and no task.
        copy = pickle.loads(pickle.dumps(sink))
        assert (copy._made, copy._gauges, copy._refresher) == ({}, {}, None)
    finally:
        sink._refresher.cancel()


async def test_watch_pool_samples_the_pools_counts(
    fake_ray_metrics: dict[str, FakeRayMetric],
) -> None:
    class Pool:
        ready, live = 2, 5

    sink = ray_metrics.RayMetricsSink()
    watcher = asyncio.ensure_future(ray_metrics.watch_pool(Pool(), PoolMetrics(sink), 3600))
    await asyncio.sleep(0)  # let it take its first sample
    watcher.cancel()
    assert sink._refresher is not None
    sink._refresher.cancel()
    assert fake_ray_metrics["switchboard_pool_ready"].calls == [("set", 2, {})]
    assert fake_ray_metrics["switchboard_pool_live"].calls == [("set", 5, {})]


def test_exported_names_follow_rays_prometheus_naming() -> None:
    assert ray_metrics.exported_names(cm.CALLS_STARTED) == ("ray_switchboard_calls_started_total",)
    assert ray_metrics.exported_names(cm.LIVE_CALLS) == ("ray_switchboard_live_calls",)
    assert ray_metrics.exported_names(cm.LATENCY) == (
        "ray_switchboard_latency_ms_bucket",
        "ray_switchboard_latency_ms_sum",
        "ray_switchboard_latency_ms_count",
    )
