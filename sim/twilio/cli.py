"""``switchboard sim twilio``: run the Twilio emulator until interrupted.

    switchboard sim twilio --port 8765 --account-sid AC... --auth-token T
        [--scenario F] [--host 127.0.0.1] [--cps N] [--throttle-429-every N] [--log-dir D]

Point twilio-python at it with ``client.api.base_url = "http://HOST:PORT"``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from sim.scenario import load_scenario
from switchboard.errors import ScenarioError

from .config import EmulatorConfig
from .server import TwilioEmulator

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard sim twilio",
        description="Emulate Twilio's Calls API, webhooks and Media Streams on this machine.",
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="default: $TWILIO_AUTH_TOKEN",
    )
    parser.add_argument("--scenario", type=Path, help="YAML/JSON scenario (see sim/scenario.py)")
    parser.add_argument("--cps", type=float, default=0.0, help="calls per second; 0 = no limit")
    parser.add_argument("--throttle-429-every", type=int, default=0, metavar="N")
    parser.add_argument("--log-dir", type=Path, help="JSONL journal and per-call WAVs go here")
    parser.add_argument("--log-payloads", action="store_true", help="journal media payloads too")
    parser.add_argument(
        "--no-record-frames",
        action="store_true",
        help="keep media frames out of memory (long or large runs)",
    )
    parser.add_argument(
        "--insecure-ws",
        choices=("loopback", "always", "never"),
        default="loopback",
        help="accept ws:// stream URLs (real Twilio: wss:// only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.account_sid or not args.auth_token:
        print("error: --account-sid and --auth-token are required", file=sys.stderr)
        return 2
    try:
        scenario = None if args.scenario is None else load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        scenario=scenario,
        host=args.host,
        port=args.port,
        cps=args.cps or None,
        throttle_429_every=args.throttle_429_every or None,
        allow_insecure_ws={"loopback": None, "always": True, "never": False}[args.insecure_ws],
        record_frames=not args.no_record_frames,
        log_dir=args.log_dir,
        log_payloads=args.log_payloads,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    def ready(base_url: str) -> None:
        print(f"Twilio emulator on {base_url} (account {config.account_sid})", flush=True)

    try:
        asyncio.run(TwilioEmulator(config).serve_forever(ready))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
