"""Offline emulator of the OpenAI Realtime API (GA) and two HTTP endpoints.

The official ``openai`` SDK talks to it unmodified. Start it in-process with
``sim.testing_realtime.run_realtime_emulator`` or as a server with
``switchboard sim realtime --port P``.

Modules: ``session`` (the sans-I/O per-connection state machine, assembled
from ``state`` + ``turns`` (caller audio, VAD turns) + ``replies``
(responses) + ``items`` (conversation items)), ``responses`` (one streamed
response), ``input_buffer`` and ``vad``, ``script`` (what the scenario makes
the model say and hear), ``audio`` (formats, clips), ``config`` (session
object and ``session.update``), ``validation`` (SDK-model checks, error
wording), ``server`` (the ASGI shell), ``http_api``, ``records``/``stats``
(what tests read), ``cli``.
"""

from __future__ import annotations

from sim.realtime.options import EmulatorOptions
from sim.realtime.records import SessionRecord
from sim.realtime.responses import Pacing
from sim.realtime.server import RealtimeEmulator
from sim.realtime.stats import EmulatorStats

__all__ = ["EmulatorOptions", "EmulatorStats", "Pacing", "RealtimeEmulator", "SessionRecord"]
