"""One run of the live-calls benchmark: N calls at once through the whole stack.

``python -m bench.live_run N WARM`` (what ``bench.live_calls`` runs, one fresh
process per N) brings the stack up as the integration tests do: both emulators
(each in a child process of its own, ``sim.processes``), the settings exported
before Ray starts, ``local_stack`` with a warm pool of WARM call actors and N call
slots. It places N calls through the API (spread over ``SPREAD_S``), samples the CPU of every
process and thread once a second (``bench.procfs``), reads each call actor's
PSS mid-call, waits until every call has ended by itself, and prints one JSON
line (prefixed ``RESULT_PREFIX``) with the timings of ``bench.call_metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import get_args

import numpy as np
import uvloop

from actors.ray_wiring import CALL_CPUS
from bench.live_calls import RESULT_PREFIX, SCENARIO
from bench.live_summary import INSTRUCTION, analyse, number, stats
from bench.procfs import CALL_ACTOR, Sampler, pss_mb
from serve.client import SwitchboardClient
from serve.deployment import SERVICE_CPUS
from serve.local import export_settings, free_port, local_stack
from sim.processes import DEFAULT_LOOP, EmulatorProcesses, LoopName
from sim.scenario import load_scenario
from sim.twilio.calls import CallStatus

__all__ = ["run_once"]

ACCOUNT = "AC" + "7" * 32
API_KEY = "sk-bench"
STREAMS_WAIT_S = 90.0
PSS_AFTER_S = 5.0  # into the calls: greeting played, the first caller turn under way
# Calls are placed evenly over this long, about one turn of the scenario: placed all at
# once, N calls would stream every reply in the same second (5x real time), a lockstep
# no real traffic has, and their bursts would be measured instead of the relay.
SPREAD_S = 10.0


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No cyclic GC in this process while the records arrive (after the calls: while they
    run, the edge's process is as ``switchboard run``'s, ``settle_edge_process``).

    The records (every frame both ways, millions of small objects at 100 calls) live in
    the emulators' processes, which never collect (``sim.processes``); this process
    unpickles them at the end, which collections over them would slow down.
    """
    gc.freeze()  # what start-up made is never scanned again
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def place_all(url: str, token: str, count: int) -> tuple[list[float], list[str]]:
    """Place ``count`` calls, spread over ``SPREAD_S``; each one's API latency (ms), errors."""
    async with SwitchboardClient(url, token, timeout=60.0) as client:

        async def place(index: int) -> float:
            await asyncio.sleep(index * SPREAD_S / count)  # the placing schedule
            start = time.monotonic()
            await client.place_call(number(index), INSTRUCTION.format(index))
            return (time.monotonic() - start) * 1000

        results = await asyncio.gather(*(place(i) for i in range(count)), return_exceptions=True)
    latencies = [r for r in results if isinstance(r, float)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return latencies, errors


def call_actor_pids(sampler: Sampler) -> list[int]:
    """The call actors' processes, by process title. Not Ray's state API: a query through
    the dashboard and the GCS is a burst of CPU in the middle of the calls it measures."""
    sample = sampler.sample()
    return [pid for pid, (label, _) in sample.processes.items() if label == CALL_ACTOR]


def settings(
    emus: EmulatorProcesses, auth: str, api: str, port: int, folder: Path
) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": auth,
        "TWILIO_API_BASE_URL": emus.twilio_url,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": emus.realtime_url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_API_TOKEN": api,
        "DATABASE_URL": f"sqlite:///{folder / 'calls.db'}",
        "RAY_TMPDIR": str(folder),  # the session's logs go with the run
    }


def logical_cpus(calls: int) -> int:
    # N calls and N warm actors waiting (the bench's pool, for the warm setup) at CALL_CPUS
    # each, the replica, pool and recorder at SERVICE_CPUS: a scheduling budget only, the
    # machine keeps its 2 cores. (`switchboard run` here budgets 2 CPUs: 85 call actors.)
    return int(np.ceil(CALL_CPUS * 2 * calls + 3 * SERVICE_CPUS)) + 1


async def run_calls(
    emus: EmulatorProcesses,
    url: str,
    api_token: str,
    sampler: Sampler,
    calls: int,
    max_wait_s: float,
) -> tuple[dict[str, object], list[int]]:
    """Place the calls, read the call actors' PSS mid-call, wait until every call ended."""
    placed, errors = await place_all(url, api_token, calls)
    streaming = await emus.wait_streaming(len(placed), STREAMS_WAIT_S)
    pids = await asyncio.to_thread(call_actor_pids, sampler)
    await asyncio.sleep(PSS_AFTER_S)  # a measurement point, not synchronisation
    pss = [v for v in await asyncio.to_thread(lambda: [pss_mb(p) for p in pids]) if v]
    ended = await emus.wait_ended(max_wait_s)
    return {
        "placed": len(placed),
        "place_errors": errors[:5],
        "post_ms": stats(placed),
        "all_streaming": streaming,
        "pss_mb": {**stats(pss), "mean": float(np.mean(pss)) if pss else 0.0},
        "all_ended": ended,
    }, pids


async def run_once(
    calls: int, warm: int, scenario_path: Path = SCENARIO, loop: LoopName = DEFAULT_LOOP
) -> dict[str, object]:
    scenario = load_scenario(scenario_path)
    auth_token, api_token = secrets.token_hex(16), secrets.token_hex(16)
    result: dict[str, object] = {"calls": calls, "warm": warm, "emulator_loop": loop}
    async with EmulatorProcesses(
        scenario, account_sid=ACCOUNT, auth_token=auth_token, api_key=API_KEY, loop=loop
    ) as emus:
        with (
            tempfile.TemporaryDirectory(prefix="bench-live-", ignore_cleanup_errors=True) as tmp,
            Sampler({"edge": threading.get_native_id()}, {"emulators": emus.pids}) as sampler,
        ):
            port = free_port()
            export_settings(settings(emus, auth_token, api_token, port, Path(tmp)))
            began = time.monotonic()
            async with local_stack(
                public_port=port,
                warm_actors=warm,
                call_slots=calls,
                num_cpus=logical_cpus(calls),
            ) as stack:
                result["stack_ready_s"] = time.monotonic() - began
                measured, pids = await run_calls(
                    emus, stack.public_url, api_token, sampler, calls, scenario.max_call_s + 60
                )
            result.update(measured, run_s=time.monotonic() - began)
        fetching = time.monotonic()
        with no_gc_pauses():
            records = await emus.records()
        result["records_s"] = time.monotonic() - fetching  # shipped from both emulators
    result["twilio_emulator"] = records.twilio_stats
    result["realtime_emulator"] = asdict(records.realtime_stats)
    result["completed"] = sum(c.status is CallStatus.COMPLETED for c in records.calls)
    result.update(analyse(records.calls, records.sessions, sampler, pids))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", type=int)
    parser.add_argument("warm", type=int)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument(
        "--emulator-loop", choices=get_args(LoopName), default=DEFAULT_LOOP,
        help="the emulator processes' event loop",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # uvloop, as `switchboard run` serves the edge from this process's loop.
    result = uvloop.run(run_once(args.calls, args.warm, args.scenario, args.emulator_loop))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
