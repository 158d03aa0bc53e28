"""How an emulator instance behaves: keys, script, latencies, pacing, checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sim.realtime.responses import Pacing
from sim.scenario import Scenario

__all__ = ["EmulatorOptions"]


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """Settings for ``RealtimeEmulator``.

    ``api_key`` None accepts any bearer token. ``validate`` checks every
    server frame against the SDK models (on in tests; it costs CPU, so the
    benchmark can turn it off). ``record_frames`` keeps every frame in
    ``SessionRecord.frames`` (forced on when ``log_dir`` is set). ``answer``
    maps the last user text of a ``/v1/responses`` request to the reply
    (default: an echo).
    """

    api_key: str | None = "sk-test"
    scenario: Scenario | None = None
    connect_latency_ms: int = 0
    pacing: Pacing = field(default_factory=Pacing)
    transcription_delay_ms: int = 100
    max_session_s: float = 3600.0
    validate: bool = False
    record_frames: bool = True
    log_dir: Path | None = None
    seed: int | None = None
    answer: Callable[[str], str] | None = None
