"""Operational metrics from what calls report: the mapping, pure, over a small sink port.

The recorder hands every batch a call actor reports (``(action, unix time)``
pairs) to :meth:`CallMetrics.reported`; it turns them into counter
increments, gauge values and histogram observations on a :class:`MetricsSink`.
Nothing here imports Ray or touches a clock: the Ray sink
(``actors/ray_metrics.py``) writes through ``ray.util.metrics`` (exported
by each node's metrics agent, scraped by Prometheus), tests use an
isolated registry.

Label values are bounded: a call id is never a label, and values that
come from peers or models (finish and problem reasons, tool names,
latency kinds) pass through :class:`LabelValues`, which keeps the first
``limit`` distinct values of each label and folds the rest into
``"other"``, so a misbehaving peer cannot explode the series count.

Which calls are live is known from the reports alone: a call is live from
its first report until its ``FinishCall``; a call not heard from for
``stale_after_s`` (its actor died without a word) is counted as ended
with reason ``"lost"``.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from switchboard.call_actions import (
    Action,
    AgentTurnInterrupted,
    AgentTurnStarted,
    FinishCall,
    LatencyMeasured,
    ProblemNoted,
    RenewSession,
    RunTool,
    UsageReported,
)

__all__ = [
    "AGENT_TURNS",
    "CALLS_ENDED",
    "CALLS_STARTED",
    "CALL_DURATION",
    "INTERRUPTIONS",
    "LATENCY",
    "LIVE_CALLS",
    "MEDIA_REFUSED",
    "METRICS",
    "NO_METRICS",
    "POOL_LIVE",
    "POOL_READY",
    "PROBLEMS",
    "RECORDER_BATCH_SIZE",
    "RECORDER_LAG",
    "RESPONSES",
    "SESSION_RENEWALS",
    "TICK_S",
    "TOKENS",
    "TOOL_CALLS",
    "CallMetrics",
    "EdgeMetrics",
    "LabelValues",
    "MetricKind",
    "MetricSpec",
    "MetricsSink",
    "NoMetrics",
    "PoolMetrics",
    "RecorderMetrics",
]

log = logging.getLogger(__name__)

OTHER = "other"
LOST = "lost"
TICK_S = 60.0  # how often the recorder calls ``tick``: as often as ``_sweep`` acts


class MetricKind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its name (before Ray's ``ray_`` prefix), kind, labels and buckets."""

    name: str
    kind: MetricKind
    description: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


_C, _G, _H = MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.HISTOGRAM

CALLS_STARTED = MetricSpec(
    "switchboard_calls_started", _C, "Calls whose first report reached the recorder."
)
CALLS_ENDED = MetricSpec(
    "switchboard_calls_ended", _C, "Calls that ended, by FinishCall reason.", ("reason",)
)
LIVE_CALLS = MetricSpec("switchboard_live_calls", _G, "Calls started and not yet ended.")
CALL_DURATION = MetricSpec(
    "switchboard_call_duration_s",
    _H,
    "From a call's first report (dialing) to its end, in seconds.",
    buckets=(5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600),
)
LATENCY = MetricSpec(
    "switchboard_latency_ms",
    _H,
    "How long the caller waited for agent audio, by kind (answer, response), in ms.",
    ("kind",),
    (50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 1000, 1250, 1500, 2000, 3000, 5000),
)
AGENT_TURNS = MetricSpec("switchboard_agent_turns", _C, "Agent turns started.")
INTERRUPTIONS = MetricSpec(
    "switchboard_interruptions",
    _C,
    "Agent turns cut off, by: caller (a barge-in), end (the call ended mid-reply), session "
    "(the Realtime session was lost mid-reply).",
    ("by",),
)
TOOL_CALLS = MetricSpec("switchboard_tool_calls", _C, "Tool calls the model made.", ("tool",))
PROBLEMS = MetricSpec(
    "switchboard_problems",
    _C,
    "Problems noted by the call policy, by source, reason and fatality.",
    ("source", "reason", "fatal"),
)
SESSION_RENEWALS = MetricSpec(
    "switchboard_session_renewals",
    _C,
    "Calls moved to a new Realtime session, by reason: session_cap, session_expired, "
    "realtime_lost.",
    ("reason",),
)
RESPONSES = MetricSpec("switchboard_responses", _C, "Realtime responses that reported usage.")
TOKENS = MetricSpec(
    "switchboard_tokens",
    _C,
    "Realtime tokens by kind: input_text, input_audio, input_cached, output_text, output_audio.",
    ("kind",),
)
RECORDER_BATCH_SIZE = MetricSpec(
    "switchboard_recorder_batch_size",
    _H,
    "Actions per batch a call actor reported.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
RECORDER_LAG = MetricSpec(
    "switchboard_recorder_lag_ms",
    _H,
    "From the oldest action of a batch to the recorder receiving it, in ms.",
    buckets=(10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000),
)
POOL_READY = MetricSpec("switchboard_pool_ready", _G, "Warm call actors waiting for a call.")
POOL_LIVE = MetricSpec("switchboard_pool_live", _G, "Call actors serving a call.")
MEDIA_REFUSED = MetricSpec(
    "switchboard_media_refused",
    _C,
    "Connections the media edge refused, by reason: unknown_call (no such live call); "
    "no_credentials (neither a Twilio signature nor a token offered); busy (too many "
    "lookups at once); bad_head, bad_call_id, bad_websocket_key, head_timeout, ... (a "
    "malformed request); resolver_error, resolver_timeout, upstream_unreachable, "
    "default_unreachable (our side failed).",
    ("reason",),
)

METRICS: tuple[MetricSpec, ...] = (
    CALLS_STARTED,
    CALLS_ENDED,
    LIVE_CALLS,
    CALL_DURATION,
    LATENCY,
    AGENT_TURNS,
    INTERRUPTIONS,
    TOOL_CALLS,
    PROBLEMS,
    SESSION_RENEWALS,
    RESPONSES,
    TOKENS,
    RECORDER_BATCH_SIZE,
    RECORDER_LAG,
    POOL_READY,
    POOL_LIVE,
    MEDIA_REFUSED,
)

# Usage fields counted as tokens, and the `kind` label each gets.
_TOKEN_KINDS = (
    ("input_text_tokens", "input_text"),
    ("input_audio_tokens", "input_audio"),
    ("input_cached_tokens", "input_cached"),
    ("output_text_tokens", "output_text"),
    ("output_audio_tokens", "output_audio"),
)


class MetricsSink(Protocol):
    """Where metric updates go. Every call names all of the metric's ``tags``."""

    def inc(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        """Add ``value`` (> 0) to a counter."""

    def set(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        """Set a gauge."""

    def observe(self, metric: MetricSpec, value: float, tags: Mapping[str, str]) -> None:
        """Put one observation in a histogram."""


class RecorderMetrics(Protocol):
    """What the recorder calls with every batch it receives."""

    def reported(
        self,
        call_id: str,
        batch: Sequence[tuple[Action, float]],
        now: float,
        first: bool = True,
        over: bool = False,
    ) -> None:
        """A call actor reported ``batch``; ``now`` is the recorder's unix time. ``first``
        is False when the call reported before (to a recorder that has since restarted);
        ``over`` when the call had ended before: its actions count, no call is live."""

    def tick(self, now: float) -> None:
        """Called every ``TICK_S`` whether or not anything reported: a call whose actor
        died is given up on when due, not at the next report of another call."""


class NoMetrics:
    """The recorder's default: metrics off."""

    def reported(
        self,
        call_id: str,
        batch: Sequence[tuple[Action, float]],
        now: float,
        first: bool = True,
        over: bool = False,
    ) -> None:
        pass

    def tick(self, now: float) -> None:
        pass


NO_METRICS = NoMetrics()

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


class LabelValues:
    """One label's values, kept to ``limit`` distinct ones; later newcomers become "other"."""

    def __init__(self, limit: int = 50, max_length: int = 48) -> None:
        self.limit = limit
        self.max_length = max_length
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        clean = _UNSAFE.sub("_", value.strip())[: self.max_length] or "unknown"
        if clean in self._seen:
            return clean
        if len(self._seen) < self.limit:
            self._seen.add(clean)
            return clean
        return OTHER


@dataclass(slots=True)
class _Live:
    started_at: float | None  # the first action's time; None for a call taken over
    heard_at: float  # when the recorder last got a batch for it


class CallMetrics:
    """Maps reported actions to metric updates on ``sink``.

    ``reported`` never raises: a metrics fault must not cost the call record.
    """

    def __init__(
        self,
        sink: MetricsSink,
        *,
        label_limit: int = 50,
        stale_after_s: float = 3600.0,
        sweep_every_s: float = 60.0,
        remember_ended_s: float = 600.0,
    ) -> None:
        self.sink = sink
        self.stale_after_s = stale_after_s
        self.sweep_every_s = sweep_every_s
        self.remember_ended_s = remember_ended_s
        self._labels: dict[tuple[str, str], LabelValues] = {}
        self._label_limit = label_limit
        self._live: dict[str, _Live] = {}
        self._ended: dict[str, float] = {}  # call id -> when it ended, oldest first
        self._next_sweep: float | None = None
        self.failures = 0

    @property
    def live(self) -> int:
        return len(self._live)

    def reported(
        self,
        call_id: str,
        batch: Sequence[tuple[Action, float]],
        now: float,
        first: bool = True,
        over: bool = False,
    ) -> None:
        try:
            self._reported(call_id, batch, now, first, over)
        except Exception:
            self.failures += 1
            if self.failures == 1:  # once: a broken sink would otherwise log every batch
                log.exception("metrics update failed; the call record is unaffected")

    def tick(self, now: float) -> None:
        try:
            self._sweep(now)
            self.sink.set(LIVE_CALLS, len(self._live), {})
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("metrics update failed; the call record is unaffected")

    def observe(self, call_id: str, action: Action, at: float) -> None:
        """One action of call ``call_id`` at unix time ``at``."""
        match action:
            case FinishCall(reason=reason):
                self._finish(call_id, reason, at)
            case LatencyMeasured(kind=kind, ms=ms):
                self.sink.observe(LATENCY, ms, {"kind": self._label(LATENCY, "kind", kind)})
            case AgentTurnStarted():
                self.sink.inc(AGENT_TURNS, 1, {})
            case AgentTurnInterrupted(by=by):
                self.sink.inc(INTERRUPTIONS, 1, {"by": self._label(INTERRUPTIONS, "by", by)})
            case RunTool(name=name):
                self.sink.inc(TOOL_CALLS, 1, {"tool": self._label(TOOL_CALLS, "tool", name)})
            case ProblemNoted(source=source, reason=reason, fatal=fatal):
                tags = {
                    "source": self._label(PROBLEMS, "source", source),
                    "reason": self._label(PROBLEMS, "reason", reason),
                    "fatal": "true" if fatal else "false",
                }
                self.sink.inc(PROBLEMS, 1, tags)
            case RenewSession(reason=reason, attempt=1):  # its tries again are one move
                reason = self._label(SESSION_RENEWALS, "reason", reason)
                self.sink.inc(SESSION_RENEWALS, 1, {"reason": reason})
            case UsageReported(usage=usage):
                self.sink.inc(RESPONSES, 1, {})
                for field, kind in _TOKEN_KINDS:
                    count = getattr(usage, field)
                    if count > 0:  # a counter only ever grows; 0 is no update
                        self.sink.inc(TOKENS, count, {"kind": kind})
            case _:
                pass

    # -- internals ---------------------------------------------------------

    def _reported(
        self,
        call_id: str,
        batch: Sequence[tuple[Action, float]],
        now: float,
        first: bool,
        over: bool,
    ) -> None:
        if not batch:
            return
        if over:  # its end was counted (by a recorder before this one, perhaps): not live
            self._live.pop(call_id, None)
            self._ended.setdefault(call_id, now)
        oldest = min(at for _, at in batch)
        self.sink.observe(RECORDER_BATCH_SIZE, len(batch), {})
        self.sink.observe(RECORDER_LAG, max(0.0, (now - oldest) * 1000.0), {})
        if call_id not in self._live and call_id not in self._ended:
            # Not `first`: started under a recorder that has since restarted, which counted
            # it; this one takes it over, not knowing when it began.
            self._live[call_id] = _Live(started_at=oldest if first else None, heard_at=now)
            if first:
                self.sink.inc(CALLS_STARTED, 1, {})
        elif call_id in self._live:
            self._live[call_id].heard_at = now
        for action, at in batch:
            self.observe(call_id, action, at)
        self._sweep(now)
        self.sink.set(LIVE_CALLS, len(self._live), {})

    def _finish(self, call_id: str, reason: str, at: float) -> None:
        call = self._live.pop(call_id, None)
        if call is None:  # a second FinishCall, or an end after the call was given up
            return
        self._ended[call_id] = at
        self.sink.inc(CALLS_ENDED, 1, {"reason": self._label(CALLS_ENDED, "reason", reason)})
        if call.started_at is not None:
            self.sink.observe(CALL_DURATION, max(0.0, at - call.started_at), {})

    def _sweep(self, now: float) -> None:
        """Give up on calls not heard from for ``stale_after_s``; forget old endings."""
        if self._next_sweep is None:
            self._next_sweep = now + self.sweep_every_s
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_every_s
        for call_id in [
            c for c, call in self._live.items() if now - call.heard_at > self.stale_after_s
        ]:
            del self._live[call_id]
            self._ended[call_id] = now
            self.sink.inc(CALLS_ENDED, 1, {"reason": LOST})
        for call_id in [
            c for c, ended in self._ended.items() if now - ended > self.remember_ended_s
        ]:
            del self._ended[call_id]

    def _label(self, metric: MetricSpec, tag: str, value: str) -> str:
        values = self._labels.get((metric.name, tag))
        if values is None:
            values = self._labels[metric.name, tag] = LabelValues(self._label_limit)
        return values(value)


class PoolMetrics:
    """The warm pool's two gauges; call ``update`` whenever the counts may have changed."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def update(self, ready: int, live: int) -> None:
        self.sink.set(POOL_READY, ready, {})
        self.sink.set(POOL_LIVE, live, {})


class EdgeMetrics:
    """The media edge's refusals (its reasons are its own few: no label limit)."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def refused(self, reason: str) -> None:
        self.sink.inc(MEDIA_REFUSED, 1, {"reason": reason})
