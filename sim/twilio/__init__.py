"""A Twilio emulator: Calls REST API, signed callbacks and a Media Streams phone.

Start it in-process with ``sim.testing_twilio.run_twilio_emulator`` or as a
command with ``switchboard sim twilio`` (``sim.twilio.cli.main``).
"""

from __future__ import annotations

from .config import EmulatorConfig
from .server import TwilioEmulator

__all__ = ["EmulatorConfig", "TwilioEmulator"]
