"""The emulator's settings, read once where it is assembled (cli.py, testing_twilio.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from sim.scenario import Scenario

__all__ = ["EmulatorConfig", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    account_sid: str
    auth_token: str = field(repr=False)
    scenario: Scenario | None = None
    host: str = "127.0.0.1"
    port: int = 0
    cps: float | None = None  # calls per second leaving the queue; None/0: unlimited
    throttle_429_every: int | None = None  # every N-th REST request gets 429 / 20429
    # ws:// stream URLs: None = allowed for loopback hosts only (real Twilio: wss only, 31922)
    allow_insecure_ws: bool | None = None
    record_frames: bool = True  # keep every media frame in StreamRecord.messages
    dtmf_audio: bool = True  # caller DTMF also as in-band tones in the inbound audio
    default_caller: bool = True  # no scenario caller turns: hello, then answer each reply
    log_dir: Path | None = None
    log_payloads: bool = False
    callback_retries: int = 2
    # False: each callback is its own request at once, as Twilio sends them (protocols.md
    # 2.5: they may arrive out of order); True: one at a time, in order.
    ordered_callbacks: bool = True

    def ws_allowed(self, scheme: str, host: str | None) -> bool:
        if scheme == "wss":
            return True
        if scheme != "ws":
            return False
        if self.allow_insecure_ws is None:
            return is_loopback(host)
        return self.allow_insecure_ws
