"""The ``switchboard`` console command.

Subcommands are thin: they parse arguments, read settings once, and hand
over to the module that does the work. ``switchboard sim twilio|realtime``
forwards its remaining arguments to the emulator's own parser.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from switchboard import __version__
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.logs import configure_logging
from switchboard.settings import load_settings, redact_url

__all__ = ["main"]

DEMO_INSTRUCTION = "You are Ava, booking a dental cleaning for Jane Doe, any weekday after 3 pm."
EMULATORS = {"twilio": "sim.twilio.cli", "realtime": "sim.realtime.cli"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if args[:1] == ["sim"] and len(args) > 1 and args[1] in EMULATORS:
        # The emulators own their flags; hand them everything after the name.
        return _emulator_main(args[1])(args[2:])
    ns = parser.parse_args(args)
    try:
        result: int = ns.func(ns)
    except SwitchboardError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    return result


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="AI phone calls: Twilio <-> OpenAI Realtime on Ray."
    )
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run Switchboard here: Ray, the API, the media edge")
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="one offline call in one process, no Ray (a smoke test)")
    demo.add_argument("--to", default="+15551234567", help="the number to call (E.164)")
    demo.add_argument("--instruction", default=DEMO_INSTRUCTION, help="what the agent should do")
    demo.set_defaults(func=_demo)

    call = sub.add_parser("call", help="place a call through the API and follow it live")
    call.add_argument("to", help="the number to call, E.164 (+15551234567)")
    call.add_argument("instruction", help="what the agent should do on the call")
    call.add_argument("--url", default=None, help="Switchboard's URL (default: this machine)")
    call.add_argument("--voice", default=None, help="the agent's voice (marin, cedar, ...)")
    call.add_argument("--greeting", default=None, help="what the agent says first")
    call.set_defaults(func=_call)

    hangup = sub.add_parser("hangup", help="hang up a live call (by its id, as `call` prints)")
    hangup.add_argument("call_id", help="the call's id")
    hangup.add_argument("--url", default=None, help="Switchboard's URL (default: this machine)")
    hangup.set_defaults(func=_hangup)

    edge = sub.add_parser("edge", help="run one node's media edge in a running Ray cluster")
    edge.add_argument("--host", default="0.0.0.0", help="address to listen on")
    edge.add_argument("--port", type=_port, default=8000, help="the public port")
    edge.add_argument("--serve-port", type=_port, default=8001, help="this node's Serve proxy")
    edge.add_argument("--ray-address", default="auto", help="the Ray cluster to join")
    edge.add_argument(
        "--ray-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the cluster to answer before giving up",
    )
    edge.set_defaults(func=_edge)

    settings = sub.add_parser("settings", help="show the effective settings (secrets masked)")
    settings.set_defaults(func=_show_settings)

    sim = sub.add_parser("sim", help="run an offline emulator of Twilio or OpenAI Realtime")
    sim.add_argument("service", choices=sorted(EMULATORS), help="which emulator to run")
    sim.set_defaults(func=lambda ns: _emulator_main(ns.service)([]))
    return parser


def _emulator_main(service: str) -> Callable[[list[str]], int]:
    module = importlib.import_module(EMULATORS[service])
    entry: Callable[[list[str]], int] = module.main
    return entry


def _run(ns: argparse.Namespace) -> int:
    # Before Ray is imported: a local cluster stays on loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import uvloop

    from serve.runner import run_server

    settings = load_settings()
    configure_logging(settings.log_level)
    return uvloop.run(run_server(settings, sys.stdout))  # the edge: measured cheaper


def _edge(ns: argparse.Namespace) -> int:
    import uvloop

    from serve.edge_command import run_edge

    configure_logging(load_settings().log_level)
    try:
        return uvloop.run(run_edge(ns.host, ns.port, ns.serve_port, ns.ray_address, ns.ray_wait))
    except KeyboardInterrupt:  # Ctrl-C before the edge listens (it handles SIGINT after)
        return 130


def _demo(ns: argparse.Namespace) -> int:
    from actors.local_call import run_demo  # deferred: pulls in the emulators

    print("Offline demo: Twilio and OpenAI Realtime emulators, one call, live transcript.")
    reason = asyncio.run(run_demo(to=ns.to, instruction=ns.instruction))
    print(f"done ({reason}).")
    return 0


def _api(ns: argparse.Namespace) -> tuple[str, str]:
    """The API's URL and token, for the subcommands that are its clients."""
    from serve.auth import tokens_from_settings
    from serve.listener import local_url

    settings = load_settings()
    tokens = tokens_from_settings(settings)
    if not tokens:
        raise ConfigError("SWITCHBOARD_API_TOKEN is not set (switchboard run writes it to .env)")
    return ns.url or local_url(settings.host, settings.port), tokens[0]  # where `run` listens


def _call(ns: argparse.Namespace) -> int:
    try:
        from serve.call_command import follow_call

        url, token = _api(ns)
        return asyncio.run(
            follow_call(url, token, ns.to, ns.instruction, voice=ns.voice, greeting=ns.greeting)
        )
    except KeyboardInterrupt:
        # Ctrl-C: follow_call has said what became of a call it placed (it goes on).
        return 130


def _hangup(ns: argparse.Namespace) -> int:
    try:
        from serve.call_command import hang_up_call

        url, token = _api(ns)
        return asyncio.run(hang_up_call(url, token, ns.call_id))
    except KeyboardInterrupt:  # Ctrl-C: hang_up_call has said what may have happened
        return 130


def _show_settings(ns: argparse.Namespace) -> int:
    settings = load_settings()
    for name, value in sorted(settings.model_dump().items()):
        shown = "(set)" if value is not None and "secret" in type(value).__name__.lower() else value
        if name.endswith("_url") and value is not None:
            shown = redact_url(str(value))
        print(f"{name.upper()}={'' if shown is None else shown}")
    return 0
