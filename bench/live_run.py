"""One run of the live-calls benchmark: N calls at once through the whole stack.

``python -m bench.live_run N WARM`` (what ``bench.live_calls`` runs, one fresh
process per N) brings the stack up as the integration tests do: both emulators
(on a thread of their own, ``bench.emulators``), the settings exported before
Ray starts, ``local_stack`` with a warm pool of WARM call actors and N call
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
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.emulators import EmulatorThread
from bench.live_calls import RESULT_PREFIX, SCENARIO
from bench.live_summary import INSTRUCTION, analyse, number, stats
from bench.procfs import CALL_ACTOR, Sampler, pss_mb
from serve.client import SwitchboardClient
from serve.local import export_settings, free_port, local_stack
from sim.scenario import load_scenario
from sim.twilio.calls import TERMINAL, CallStatus
from sim.twilio.server import TwilioEmulator

__all__ = ["run_once"]

ACCOUNT = "AC" + "7" * 32
API_KEY = "sk-bench"
STREAMS_WAIT_S = 90.0
PSS_AFTER_S = 5.0  # into the calls: greeting played, the first caller turn under way
# Calls are placed evenly over this long, about one turn of the scenario: placed all at
# once, N calls would stream every reply in the same second (5x real time), a lockstep
# no real traffic has, and their bursts would be measured instead of the relay.
SPREAD_S = 10.0
SWITCH_INTERVAL_S = 0.001  # the edge and the emulators share the GIL: hand it over often


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No cyclic GC in this process while calls run.

    The emulators keep every frame both ways (millions of small objects at 100 calls),
    and a full collection over them stalls every thread of the process for 0.1-0.5 s
    (measured): the edge and both emulators at once, an artefact a production edge,
    with no records to scan, would not see. The Ray workers are not affected.
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


def all_streaming(twilio: TwilioEmulator, count: int) -> Callable[[], bool]:
    def check() -> bool:
        calls = list(twilio.calls.values())
        return len(calls) >= count and all(
            c.status in TERMINAL or (c.stream is not None and c.stream.started_ms is not None)
            for c in calls
        )

    return check


def all_ended(twilio: TwilioEmulator) -> Callable[[], bool]:
    return lambda: all(c.status in TERMINAL for c in twilio.calls.values())


async def wait(emus: EmulatorThread, predicate: Callable[[], bool], timeout: float) -> bool:
    try:
        await emus.run(emus.twilio.wait_until(predicate, timeout))
    except TimeoutError:
        return False
    return True


def call_actor_pids(sampler: Sampler) -> tuple[list[int], str]:
    """The live call actors' processes: from Ray's state API, else by process title."""
    try:
        from ray.util.state import list_actors

        actors = list_actors(
            filters=[("class_name", "=", "RayCallActor"), ("state", "=", "ALIVE")],
            detail=True,
            limit=10_000,
        )
        return [int(a.pid) for a in actors if a.pid], "ray state API"
    except Exception:  # the dashboard is down or refuses us: /proc tells the same
        sample = sampler.sample()
        return [p for p, (label, _) in sample.processes.items() if label == CALL_ACTOR], "/proc"


def settings(emus: EmulatorThread, auth: str, api: str, port: int, folder: Path) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": auth,
        "TWILIO_API_BASE_URL": emus.twilio.base_url,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": emus.realtime.base_url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_API_TOKEN": api,
        "DATABASE_URL": f"sqlite:///{folder / 'calls.db'}",
        "RAY_TMPDIR": str(folder),  # the session's logs go with the run
    }


def logical_cpus(calls: int) -> int:
    # Call actors ask 0.02 CPU each (pool refills included), pool and recorder 0.1, the
    # Serve replica 1: a scheduling budget only, the machine keeps its 2 cores.
    return int(np.ceil(0.02 * 2 * calls + 0.2 + 1)) + 1


async def run_calls(
    emus: EmulatorThread, url: str, api_token: str, sampler: Sampler, calls: int, max_wait_s: float
) -> tuple[dict[str, object], list[int]]:
    """Place the calls, read the call actors' PSS mid-call, wait until every call ended."""
    placed, errors = await place_all(url, api_token, calls)
    streaming = await wait(emus, all_streaming(emus.twilio, len(placed)), STREAMS_WAIT_S)
    pids, source = await asyncio.to_thread(call_actor_pids, sampler)
    await asyncio.sleep(PSS_AFTER_S)  # a measurement point, not synchronisation
    pss = [v for v in await asyncio.to_thread(lambda: [pss_mb(p) for p in pids]) if v]
    ended = await wait(emus, all_ended(emus.twilio), max_wait_s)
    return {
        "placed": len(placed),
        "place_errors": errors[:5],
        "post_ms": stats(placed),
        "all_streaming": streaming,
        "pid_source": source,
        "pss_mb": {**stats(pss), "mean": float(np.mean(pss)) if pss else 0.0},
        "all_ended": ended,
    }, pids


async def run_once(calls: int, warm: int, scenario_path: Path = SCENARIO) -> dict[str, object]:
    scenario = load_scenario(scenario_path)
    auth_token, api_token = secrets.token_hex(16), secrets.token_hex(16)
    result: dict[str, object] = {"calls": calls, "warm": warm}
    with (
        EmulatorThread(
            scenario, account_sid=ACCOUNT, auth_token=auth_token, api_key=API_KEY
        ) as emus,
        tempfile.TemporaryDirectory(prefix="bench-live-", ignore_cleanup_errors=True) as tmp,
        Sampler({"edge": threading.get_native_id(), "emulators": emus.native_id}) as sampler,
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
            with no_gc_pauses():
                measured, pids = await run_calls(
                    emus, stack.public_url, api_token, sampler, calls, scenario.max_call_s + 60
                )
        result.update(measured, run_s=time.monotonic() - began)
        result["twilio_emulator"] = emus.twilio.stats()
        result["realtime_emulator"] = asdict(emus.realtime.stats())
        twilio_calls, sessions = list(emus.twilio.calls.values()), emus.realtime.sessions
    result["completed"] = sum(c.status is CallStatus.COMPLETED for c in twilio_calls)
    result.update(analyse(twilio_calls, sessions, sampler, pids))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", type=int)
    parser.add_argument("warm", type=int)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    args = parser.parse_args(argv)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    result = asyncio.run(run_once(args.calls, args.warm, args.scenario))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
