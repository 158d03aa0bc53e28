"""``switchboard call``: place a call through the API and print it as it happens."""

from __future__ import annotations

import sys
from typing import TextIO

from serve.client import SwitchboardClient

__all__ = ["follow_call"]

FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def describe(event: dict[str, object]) -> str | None:
    """One line for a live event, or ``None`` for the ones a person need not see."""
    match event.get("type"):
        case "transcript.caller":
            return f"caller: {event['text']}"
        case "transcript.agent_done":
            return f"agent:  {event['text']}"
        case "transcript.agent_interrupted":
            return f"agent:  (cut off after {event['heard_ms']} ms of {event['generated_ms']} ms)"
        case "tool.called":
            return f"tool:   {event['name']}({event['arguments']})"
        case "latency":
            return f"wait:   {event['kind']} {event['ms']} ms"
        case "call.status":
            return f"status: {event.get('status')}"
        case "problem":
            return f"note:   {event.get('source')} {event.get('reason')}: {event.get('message')}"
        case "call.ended":
            return f"ended:  {event['reason']}"
        case _:
            return None


async def follow_call(
    url: str,
    token: str,
    to: str,
    instruction: str,
    *,
    voice: str | None = None,
    greeting: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    async with SwitchboardClient(url, token, timeout=60.0) as client:
        call = await client.place_call(to, instruction, voice=voice, greeting=greeting)
        print(f"call {call.id} to {call.to}: {call.status}", file=out, flush=True)
        ended = status_final = False
        async for event in client.stream_events(call.id):
            line = describe(event)
            if line is not None:
                print(line, file=out, flush=True)
            ended = ended or event.get("type") == "call.ended"
            status_final = status_final or (
                event.get("type") == "call.status" and event.get("status") in FINAL
            )
            if ended and status_final:
                break
        detail = await client.get_call(call.id)
    print(f"final status: {detail.status}, cost ~${detail.cost_usd}", file=out)
    return 0 if detail.status == "completed" else 1
