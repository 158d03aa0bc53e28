"""``switchboard sim twilio`` (``sim.twilio.cli.main``) as a command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from sim.twilio.cli import main

TOKEN = "cli-token"
SID = "AC" + "6" * 32


def test_main_rejects_missing_credentials_and_bad_scenarios(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    env = {
        k: os.environ.pop(k) for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if k in os.environ
    }
    try:
        assert main(["--port", "0"]) == 2
        bad = tmp_path / "bad.yaml"
        bad.write_text("numbers: {default: {outcome: maybe}}")
        assert main(["--account-sid", SID, "--auth-token", TOKEN, "--scenario", str(bad)]) == 2
    finally:
        os.environ.update(env)
    err = capsys.readouterr().err
    assert "required" in err and "outcome" in err and TOKEN not in err


async def test_command_serves_the_api_until_interrupted(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("numbers: {default: {outcome: busy, answer_after_s: 0.05}}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sim.twilio.cli",
        "--port",
        "0",
        "--account-sid",
        SID,
        "--auth-token",
        TOKEN,
        "--scenario",
        str(scenario),
        "--log-dir",
        str(tmp_path / "logs"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("Twilio emulator on http://127.0.0.1:"), line
        base = line.split()[3]
        async with httpx.AsyncClient(base_url=base, auth=(SID, TOKEN)) as client:
            created = await client.post(
                f"/2010-04-01/Accounts/{SID}/Calls.json",
                data={"To": "+15551230000", "From": "+15559870000", "Twiml": "<Response/>"},
            )
            assert created.status_code == 201 and created.json()["status"] == "queued"
            sid = created.json()["sid"]
            unauthorized = await client.get(
                f"/2010-04-01/Accounts/{SID}/Calls.json", auth=(SID, "wrong")
            )
            assert unauthorized.status_code == 401 and unauthorized.json()["code"] == 20003
            assert (await client.get("/_sim/stats/reset")).json() == {"reset": True}
            stats = (await client.get("/_sim/stats")).json()
            assert {"frame_lateness_ms", "emulator_cpu_s", "process_cpu_s"} <= set(stats)
            assert stats["frames_sent"] == 0 and stats["frame_lateness_ms"]["count"] == 0
            calls = (await client.get("/_sim/calls")).json()
            assert [c["sid"] for c in calls] == [sid]
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert list((tmp_path / "logs").glob("twilio-emulator-*.jsonl"))
