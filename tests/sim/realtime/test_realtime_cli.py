"""``switchboard sim realtime`` as a separate process, driven by the SDK."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from sim.realtime.cli import main

pytestmark = pytest.mark.integration

RUN = "import sys; from sim.realtime.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broken_scenario_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("assistant: [{say: hi, tool_call: {name: x}}]")
    assert main(["--port", "1", "--scenario", str(bad)]) == 2
    assert "assistant[0]" in capsys.readouterr().err


async def test_the_server_process_serves_the_sdk(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"assistant": [{"say": "Custom hello there."}]}))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN,
        "--port",
        str(port),
        "--api-key",
        "sk-cli",
        "--scenario",
        str(scenario),
        "--first-audio-ms",
        "10",
        "--speed",
        "50",
        "--log-dir",
        str(tmp_path / "logs"),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while b"Uvicorn running on" not in (line := await proc.stderr.readline()):
                assert line, "the emulator exited before it listened"
        client = AsyncOpenAI(api_key="sk-cli", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        texts = []
        async with client.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.response.create(response={"output_modalities": ["text"]})
            async for event in conn:
                if event.type == "response.output_text.done":
                    texts.append(event.text)
                if event.type == "response.done":
                    break
        assert texts == ["Custom hello there."]  # the scenario given on the command line
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    (log,) = (tmp_path / "logs").glob("sess_*.jsonl")
    assert '"response.done"' in log.read_text()
