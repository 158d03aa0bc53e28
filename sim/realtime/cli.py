"""``switchboard sim realtime``: serve the OpenAI Realtime GA emulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvicorn

from sim.realtime.options import EmulatorOptions
from sim.realtime.responses import Pacing
from sim.realtime.server import RealtimeEmulator, uvicorn_config
from sim.scenario import load_scenario
from switchboard.errors import ScenarioError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard sim realtime",
        description="Offline emulator of the OpenAI Realtime API (GA) and /v1/embeddings, "
        "/v1/responses. Point the SDK at it with websocket_base_url=ws://HOST:PORT/v1.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--scenario", type=Path, help="YAML/JSON scenario (sim/scenario.py)")
    parser.add_argument(
        "--api-key", default="sk-test", help="accepted bearer key (default: %(default)s; '' = any)"
    )
    parser.add_argument("--connect-latency-ms", type=int, default=0)
    parser.add_argument("--first-audio-ms", type=int, default=300)
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per delta")
    parser.add_argument("--speed", type=float, default=5.0, help="generation vs real time")
    parser.add_argument("--log-dir", type=Path, help="write one JSONL file per session here")
    parser.add_argument("--validate", action="store_true", help="check every server frame")
    parser.add_argument("--max-session-s", type=float, default=3600.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario) if args.scenario else None
    except ScenarioError as exc:
        print(f"switchboard sim realtime: {exc}", file=sys.stderr)
        return 2
    options = EmulatorOptions(
        api_key=args.api_key or None,
        scenario=scenario,
        connect_latency_ms=args.connect_latency_ms,
        pacing=Pacing(first_audio_ms=args.first_audio_ms, chunk_ms=args.chunk_ms, speed=args.speed),
        validate=args.validate,
        record_frames=args.log_dir is not None,
        log_dir=args.log_dir,
        max_session_s=args.max_session_s,
    )
    config = uvicorn_config(RealtimeEmulator(options), args.host, args.port, log_level="info")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger(__name__).info(
        "realtime emulator on ws://%s:%d/v1 (scenario: %s)",
        args.host,
        args.port,
        scenario.name if scenario else "default",
    )
    # uvicorn re-raises the SIGTERM it handled once it has shut down; make that
    # a clean exit so process managers see status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        asyncio.run(uvicorn.Server(config).serve())
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
