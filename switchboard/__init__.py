"""Switchboard: AI phone calls, Twilio Media Streams bridged to the OpenAI Realtime API."""

from __future__ import annotations

__version__ = "0.1.0"
