"""What a process costs doing nothing: the floor under every call actor's CPU.

Every Ray worker process wakes 100 times a second: ``CoreWorker::RunTaskExecutionLoop``
checks for signals on a hard-coded 10 ms timer (it takes the GIL and calls
``PyErr_CheckSignals``), whatever the actor does. On a virtual machine a wake-up is
not free, so this floor is paid once per call actor, before any audio moves. Measured
here, idle, over ``WINDOW_S``:

- a plain Python process sleeping 10 ms in a loop (the machine's price of 100
  wake-ups a second, no Ray);
- an idle sync Ray actor, an idle async Ray actor;
- an idle warm call actor (``RayCallActor`` after ``start``: media server open).

For each: CPU in % of a core (``/proc/PID/stat``) and wake-ups a second (voluntary
context switches summed over the process's threads).

    python -m bench.ray_floor
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Idle", "run_ray_floor"]

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 20.0
SETTLE_S = 3.0  # after start-up, before the window: start-up's own work is not idling
ACTORS = 3  # of each kind; the figure is their mean
CLK_TCK = os.sysconf("SC_CLK_TCK")
_KEEP: list[object] = []  # the holder's actor handles, for as long as it runs
SLEEPER = "import time\nwhile True: time.sleep(0.01)\n"


@dataclass(frozen=True)
class Idle:
    label: str
    cpu_percent: float  # of one core, mean per process
    wakeups_per_s: float  # voluntary context switches of all its threads, mean per process


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _wakeups(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def measure(groups: dict[str, Sequence[int]], window_s: float = WINDOW_S) -> list[Idle]:
    """Each group's mean CPU and wake-ups over one shared window."""
    before = {pid: (_cpu_s(pid), _wakeups(pid)) for pids in groups.values() for pid in pids}
    time.sleep(window_s)  # the measurement window itself
    rows = []
    for label, pids in groups.items():
        cpu = [(_cpu_s(p) - before[p][0]) / window_s * 100 for p in pids]
        wakes = [(_wakeups(p) - before[p][1]) / window_s for p in pids]
        rows.append(Idle(label, sum(cpu) / len(cpu), sum(wakes) / len(wakes)))
    return rows


@contextmanager
def sleepers(count: int) -> Iterator[list[int]]:
    procs = [subprocess.Popen([sys.executable, "-c", SLEEPER]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_ray_floor() -> list[Idle]:
    """Start the idle processes (a local Ray cluster for the actors) and measure them."""
    script = textwrap.dedent(f"""
        import json, sys
        from bench.ray_floor import ray_groups
        print(json.dumps(ray_groups({ACTORS})), flush=True)
        sys.stdin.read()  # hold the cluster until the parent has measured
    """)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    try:
        groups: dict[str, list[int]] = json.loads(holder.stdout.readline())
        with sleepers(ACTORS) as plain:
            time.sleep(SETTLE_S)  # let start-up work finish before the window
            return measure({"plain Python, sleeping 10 ms in a loop": plain, **groups})
    finally:
        holder.stdin.close()  # the holder shuts its cluster down and exits
        holder.wait(timeout=120)


def ray_groups(count: int) -> dict[str, list[int]]:
    """In the holder process: a local cluster with idle actors; their pids by kind."""
    import asyncio
    import atexit

    import ray

    from actors.ray_wiring import CALL_SLOT, NAMESPACE, RayCallActor, recorder_name

    os.environ.update(
        TWILIO_AUTH_TOKEN="0" * 32,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        OPENAI_API_KEY="sk-floor",
        PUBLIC_URL="http://127.0.0.1:9",
        SWITCHBOARD_API_TOKEN="floor",
    )
    ray.init(
        namespace=NAMESPACE,
        _node_ip_address="127.0.0.1",
        resources={CALL_SLOT: count},
        include_dashboard=False,
        log_to_driver=False,
    )
    atexit.register(ray.shutdown)

    @ray.remote(num_cpus=0.01)
    class SyncIdle:
        def pid(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0.01)
    class AsyncIdle:
        async def pid(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0.01)
    class NoRecorder:  # call actors look the recorder up by name; idle ones never call it
        async def report(self, *_: object) -> None:
            return None

    recorder = NoRecorder.options(name=recorder_name(0)).remote()  # type: ignore[attr-defined]
    sync = [SyncIdle.remote() for _ in range(count)]  # type: ignore[attr-defined]
    concurrent = [AsyncIdle.remote() for _ in range(count)]  # type: ignore[attr-defined]
    calls = [
        RayCallActor.options(num_cpus=0.01, resources={CALL_SLOT: 1}).remote(f"floor-{i}")  # type: ignore[attr-defined]
        for i in range(count)
    ]

    async def start_all() -> None:
        await asyncio.gather(*(actor.start.remote("127.0.0.1") for actor in calls))

    asyncio.run(start_all())
    _KEEP.extend([recorder, *sync, *concurrent, *calls])  # dropped handles end their actors
    return {
        "idle sync Ray actor": ray.get([a.pid.remote() for a in sync]),
        "idle async Ray actor": ray.get([a.pid.remote() for a in concurrent]),
        "idle warm call actor (media server open)": _pids_titled("ray::RayCallActor"),
    }


def _pids_titled(title: str) -> list[int]:
    """This process's descendants (its Ray cluster) whose title starts with ``title``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue  # gone meanwhile
            ppid = next(line for line in status.splitlines() if line.startswith("PPid:"))
            parents[int(entry.name)] = int(ppid.split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in filter(ours, parents):
        with suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                found.append(pid)
    return found


def main() -> int:
    for row in run_ray_floor():
        print(f"{row.label}: {row.cpu_percent:.2f}% of a core, {row.wakeups_per_s:.0f} wake-ups/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
