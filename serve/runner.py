"""``switchboard run``: the whole system on this machine, until Ctrl-C.

Without Twilio or OpenAI credentials it starts both emulators (``sim/``) in
demo mode and points Switchboard at them, so a newcomer can place a call at
once. With credentials it uses the real services; ``PUBLIC_URL`` must then
be the https URL (a tunnel) that reaches this machine's public port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from dotenv import dotenv_values

from serve.auth import tokens_from_settings
from serve.local import bind_public, export_settings, local_stack, local_url
from switchboard.errors import ConfigError
from switchboard.settings import Settings

__all__ = ["banner", "dotenv_settings", "run_server"]

DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "sim" / "scenarios" / "demo.yaml"
DEMO_ACCOUNT = "AC" + "d" * 32
DEMO_FROM = "+15005550006"


def ensure_api_token(settings: Settings, env_file: Path, out: TextIO) -> str:
    """The API token: from the settings, or made once and kept in ``.env`` (mode 600)."""
    tokens = tokens_from_settings(settings)
    if tokens:
        return tokens[0]
    if settings.switchboard_api_token is not None:
        raise ConfigError("SWITCHBOARD_API_TOKEN is set but holds no token, only commas")
    token = secrets.token_urlsafe(24)
    # Private before the token is in it: made 600, or made so before the write.
    descriptor = os.open(env_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "a+b") as env:  # appended: every write goes to the end
        size = env.seek(0, os.SEEK_END)
        if size:
            env.seek(size - 1)
            if env.read(1) != b"\n":  # a last line with no newline is not run into
                env.write(b"\n")
        env.write(f"SWITCHBOARD_API_TOKEN={token}\n".encode())
    print(f"A new API token was written to {env_file} (SWITCHBOARD_API_TOKEN).", file=out)
    return token


@contextlib.asynccontextmanager
async def demo_services() -> AsyncIterator[dict[str, str]]:
    """Both emulators, each in a process of its own (as the real services are not in the
    media edge's), and the settings that point Switchboard at them."""
    from sim.processes import EmulatorProcesses
    from sim.scenario import load_scenario

    scenario = load_scenario(DEMO_SCENARIO)
    auth_token, api_key = secrets.token_hex(16), "sk-demo-" + secrets.token_hex(8)
    async with EmulatorProcesses(
        scenario, account_sid=DEMO_ACCOUNT, auth_token=auth_token, api_key=api_key
    ) as emulators:
        yield {
            "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_API_BASE_URL": emulators.twilio_url,
            "TWILIO_FROM_NUMBER": DEMO_FROM,
            "OPENAI_API_KEY": api_key,
            "OPENAI_BASE_URL": emulators.realtime_url,
        }


def dotenv_settings(env_file: Path) -> dict[str, str]:
    """What ``env_file`` sets and the environment does not (the environment wins, as in
    ``load_settings``). Ray workers read settings from their environment alone, so what
    came from ``.env`` must reach them through it."""
    if not env_file.is_file():
        return {}
    present = {name.upper() for name in os.environ}
    return {
        name: value
        for name, value in dotenv_values(env_file).items()
        if value is not None and name.upper() not in present
    }


CREDENTIALS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY")
_LABEL = 19  # the width of the banner's labels: "API and webhooks   "


def given_credentials(settings: Settings) -> list[str]:
    """Those of the credentials that decide demo mode which are set."""
    values = (settings.twilio_account_sid, settings.twilio_auth_token, settings.openai_api_key)
    return [name for name, value in zip(CREDENTIALS, values, strict=True) if value is not None]


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def token_source(env_file: Path) -> str:
    """Where the API token comes from, read before ``run_server`` exports it."""
    if any(name.upper() == "SWITCHBOARD_API_TOKEN" for name in os.environ):
        return "SWITCHBOARD_API_TOKEN in the environment"
    return f"SWITCHBOARD_API_TOKEN in {env_file}"


def banner(
    settings: Settings,
    *,
    demo: bool,
    public_url: str,
    dashboard_url: str | None,
    token_from: str,
) -> str:
    """What ``switchboard run`` prints once it is ready: the URLs to use, and in demo
    mode what the demo does (and which credentials it ignores)."""

    def line(label: str, *texts: str) -> list[str]:
        first, *rest = texts
        return [f"  {label:<{_LABEL}}{first}", *(" " * (_LABEL + 2) + text for text in rest)]

    mode = "demo: Twilio and OpenAI are emulated" if demo else "live Twilio and OpenAI"
    lines = [
        f"\nSwitchboard is running ({mode}).",
        *line("API and webhooks", f"{public_url}  (docs: {public_url}/docs)"),
        *line("Web console", f"{public_url}/  (sign in with the API token: {token_from})"),
        *line("Ray dashboard", f"{dashboard_url or 'not started'}  (token in ~/.ray/auth_token)"),
        *line(
            "Place a call",
            ".venv/bin/switchboard call +15551234567 "
            '"You are booking a dental cleaning for Jane Doe, any weekday after 3 pm."',
        ),
    ]
    if demo:
        scenario = DEMO_SCENARIO.relative_to(DEMO_SCENARIO.parents[2])
        lines += line(
            "Demo calls",
            "the emulated model plays the scripted demo conversation",
            f"({scenario}), whatever the instruction says",
        )
        given = given_credentials(settings)
        if given:
            missing = [name for name in CREDENTIALS if name not in given]
            lines += line(
                "Credentials",
                f"{_names(given)} {'is' if len(given) == 1 else 'are'} set but "
                f"{_names(missing)} {'is' if len(missing) == 1 else 'are'} not:",
                "live calls need all three, so both services are emulated and "
                f"{'it is' if len(given) == 1 else 'they are'} not used",
            )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


async def run_server(settings: Settings, out: TextIO, env_file: Path = Path(".env")) -> int:
    token_from = token_source(env_file)
    demo = not (settings.has_twilio_credentials and settings.has_openai_credentials)
    if not demo and settings.public_url is None:
        raise ConfigError("PUBLIC_URL must be the https URL Twilio can reach this machine at")
    real_twilio = not demo and settings.twilio_api_base_url is None
    if real_twilio and settings.public_url is not None and settings.public_url.scheme != "https":
        raise ConfigError(  # real Twilio connects media streams only over wss
            f"PUBLIC_URL must be https for real Twilio, not {settings.public_url.scheme}:"
            " media streams connect only over wss (Twilio error 31922)"
        )
    token = ensure_api_token(settings, env_file, out)  # once the settings are found usable
    public = local_url(settings.host, settings.port)
    async with contextlib.AsyncExitStack() as stack:
        # The public port first, before the emulators and Ray: one already taken (a
        # Switchboard running there) is a one-line error, not a failure after start-up.
        listener = bind_public(settings.host, settings.port)
        stack.callback(listener.close)  # local_stack closes it too; closing twice is harmless
        values = dotenv_settings(env_file) | {
            "SWITCHBOARD_API_TOKEN": token,
            "DATABASE_URL": settings.database_url,
            "PUBLIC_URL": public if demo else str(settings.public_url),
        }
        if demo:
            values |= await stack.enter_async_context(demo_services())
        export_settings(values)
        # Serve's own start-up lines name its internal port, not the one to use (below).
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        running = await stack.enter_async_context(
            local_stack(public_port=settings.port, public_host=settings.host, listener=listener)
        )
        print(
            banner(
                settings,
                demo=demo,
                public_url=running.public_url,
                dashboard_url=running.dashboard_url,
                token_from=token_from,
            ),
            file=out,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping ...", file=out, flush=True)
    return 0
