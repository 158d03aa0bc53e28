"""`switchboard demo`: one call through both emulators and the real SDKs, in one process."""

from __future__ import annotations

import io
import re

from actors.local_call import run_demo


async def test_demo_call_holds_a_conversation_with_an_interruption() -> None:
    out = io.StringIO()
    reason = await run_demo(out=out)
    assert reason == "stream_stopped"  # the caller hung up, as scripted
    lines = [re.sub(r"^\[\s*[\d.]+s\] ", "", line) for line in out.getvalue().splitlines()]
    said = [line for line in lines if line.startswith(("agent:", "caller:"))]
    assert said[0] == "agent:  Hello! This is Ava calling from Bright Smiles Dental."
    assert said[1] == "caller: Hello? Who is this?"
    interrupted = [line for line in said if "(interrupted after" in line]
    assert len(interrupted) == 1
    heard, generated = map(int, re.findall(r"\d+", interrupted[0]))
    assert 0 < heard < generated
    assert said.index(interrupted[0]) < said.index(
        "caller: Wait, sorry, can I ask something first?"
    )
    assert said[-1] == "agent:  Perfect, you are booked for Monday at four. Goodbye!"
    assert lines[-1] == "call ended: stream_stopped"
