"""Run the Twilio emulator inside the current event loop, for tests and benchmarks.

.. code-block:: python

    async with run_twilio_emulator(account_sid=SID, auth_token=TOKEN) as emu:
        client = Client(SID, TOKEN, environment={})
        client.api.base_url = emu.base_url
        call = client.calls.create(to="+15551230000", from_="+15559870000", twiml=TWIML)
        await emu.wait_for_call_status(call.sid, "in-progress")
        stream = await emu.wait_for_stream(call.sid)
        ...

``emu`` is a ``sim.twilio.TwilioEmulator``: ``calls`` (records),
``wait_until``/``wait_for_call_status``/``wait_for_stream``, ``inject_audio``,
``say_clip``, ``send_dtmf``, ``hang_up`` and ``stats()``; ``ring_in(to, from_)``
for an inbound call to a number made with ``client.incoming_phone_numbers.create``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sim.scenario import Scenario
from sim.twilio.config import EmulatorConfig
from sim.twilio.server import TwilioEmulator

__all__ = ["TwilioEmulator", "run_twilio_emulator"]


@asynccontextmanager
async def run_twilio_emulator(
    *,
    account_sid: str,
    auth_token: str,
    scenario: Scenario | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    cps: float | None = None,
    throttle_429_every: int | None = None,
    allow_insecure_ws: bool | None = None,
    record_frames: bool = True,
    dtmf_audio: bool = True,
    default_caller: bool = True,
    log_dir: str | Path | None = None,
    log_payloads: bool = False,
    ordered_callbacks: bool = True,
) -> AsyncIterator[TwilioEmulator]:
    config = EmulatorConfig(
        account_sid=account_sid,
        auth_token=auth_token,
        scenario=scenario,
        host=host,
        port=port,
        cps=cps,
        throttle_429_every=throttle_429_every,
        allow_insecure_ws=allow_insecure_ws,
        record_frames=record_frames,
        dtmf_audio=dtmf_audio,
        default_caller=default_caller,
        log_dir=None if log_dir is None else Path(log_dir),
        log_payloads=log_payloads,
        ordered_callbacks=ordered_callbacks,
    )
    emulator = TwilioEmulator(config)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
