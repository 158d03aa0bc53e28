"""CPU and memory of the benchmark's processes and threads, read from /proc.

``Sampler`` is a thread that, every ``interval_s``, reads the CPU time of every
process descended from this one (the local Ray cluster: GCS, raylet, dashboard,
Serve, the call actors...) labelled by what it runs, of this process's named
threads, of named child processes (the emulators: by pid, summed per name and kept
out of the labelled processes), and of the whole machine. ``usage(t0, t1)`` turns
the samples nearest inside a window into cores (CPU-seconds per second). Times are
``time.monotonic()``, the event loops' clock. psutil is not needed.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["Sample", "Sampler", "Usage", "process_label", "pss_mb", "tree_cpu_s"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
CALL_ACTOR = "call actors"


def _cpu_from_stat(path: Path) -> float | None:
    try:
        fields = path.read_text().rpartition(")")[2].split()
    except OSError:  # the process or thread is gone
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pss_mb(pid: int) -> float | None:
    """The process's proportional set size (shared pages split among their users), in MB
    (10^6 bytes, the target's unit; /proc counts KiB)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def process_label(pid: int) -> str:
    """What a process runs: a Ray actor's class, or the program's name."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    first = args[0].decode(errors="replace")
    if first.startswith("ray::"):  # Ray sets a worker's title to ray::Class(.method)
        name = first[5:].split(".")[0].split(":")[0].split()[0] if first[5:] else "worker"
        # A named call actor may carry its name (``call-<hex>``) as its title.
        is_call = name == "RayCallActor" or name.startswith("call-")
        return CALL_ACTOR if is_call else f"ray::{name}"
    words = [a.decode(errors="replace") for a in args if a]
    scripts = [w for w in words[1:] if w.endswith(".py")]
    program = scripts[0] if scripts else (words[0] if words else "?")
    return program.split()[0].rsplit("/", 1)[-1]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds of process ``root`` and all its descendants, the ended ones too (a
    reaped child's CPU is in its parent's ``cutime``/``cstime``)."""
    total = 0.0
    for pid in [root, *_descendants(root)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone since the scan: its parent has its CPU now
            continue
        total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def _cpu_pressure_s() -> float:
    """Seconds in which some runnable task waited for a CPU (Linux PSI), since boot."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    return int(first.rsplit("total=", 1)[1]) / 1e6


def _machine_busy_s() -> float:
    """CPU-seconds the whole machine (all cores) spent busy since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    processes: Mapping[int, tuple[str, float]]  # pid -> (label, CPU s), named children aside
    threads: Mapping[str, float]  # this process: named threads and "total", CPU s
    children: Mapping[str, float]  # named child processes, CPU s summed per name
    machine_busy_s: float
    cpu_pressure_s: float


@dataclass(frozen=True, slots=True)
class Usage:
    """Cores (CPU-s per s) used over ``seconds`` from ``start``: by process label, by thread
    of this process, by named child process."""

    start: float
    seconds: float
    by_label: Mapping[str, float]
    threads: Mapping[str, float]
    children: Mapping[str, float]
    machine_busy: float
    cpu_pressure: float  # share of the time some task waited for a CPU (others' load too)
    pids: Mapping[int, float]


class Sampler:
    def __init__(
        self,
        threads: Mapping[str, int],
        children: Mapping[str, Collection[int]] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.pid = os.getpid()
        self.threads = dict(threads)  # name -> native thread id, in this process
        self.children = {name: set(pids) for name, pids in (children or {}).items()}
        self._named = set().union(*self.children.values())
        self._named_cpu: dict[int, float] = {}  # pid -> CPU s when last seen
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def sample(self) -> Sample:
        processes: dict[int, tuple[str, float]] = {}
        for pid in _descendants(self.pid):
            if pid in self._named:
                continue
            cpu = _cpu_from_stat(Path(f"/proc/{pid}/stat"))
            if cpu is not None:  # labelled each time: an idle worker may become an actor
                processes[pid] = (process_label(pid), cpu)
        task = Path(f"/proc/{self.pid}/task")
        threads = {name: _cpu_from_stat(task / str(tid) / "stat") or 0.0
                   for name, tid in self.threads.items()}  # fmt: skip
        threads["total"] = _cpu_from_stat(Path(f"/proc/{self.pid}/stat")) or 0.0
        for pid in self._named:  # one that has exited keeps what it used
            cpu = _cpu_from_stat(Path(f"/proc/{pid}/stat"))
            if cpu is not None:
                self._named_cpu[pid] = cpu
        children = {name: sum(self._named_cpu.get(pid, 0.0) for pid in pids)
                    for name, pids in self.children.items()}  # fmt: skip
        return Sample(
            time.monotonic(), processes, threads, children, _machine_busy_s(), _cpu_pressure_s()
        )

    def usage(self, t0: float, t1: float, only: Collection[int] = ()) -> Usage | None:
        """Use between the first sample at or after ``t0`` and the last at or before ``t1``.

        ``only``: restrict ``pids`` (per-process cores) to these processes.
        """
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        seconds = b.t - a.t
        by_label: dict[str, float] = defaultdict(float)
        pids: dict[int, float] = {}
        for pid, (label, cpu) in b.processes.items():
            before = a.processes.get(pid, (label, 0.0))[1]  # born inside: all of it counts
            by_label[label] += (cpu - before) / seconds
            if not only or pid in only:
                pids[pid] = (cpu - before) / seconds
        threads = {name: (cpu - a.threads[name]) / seconds for name, cpu in b.threads.items()}
        children = {name: (cpu - a.children[name]) / seconds for name, cpu in b.children.items()}
        busy = (b.machine_busy_s - a.machine_busy_s) / seconds
        pressure = (b.cpu_pressure_s - a.cpu_pressure_s) / seconds
        return Usage(a.t, seconds, dict(by_label), threads, children, busy, pressure, pids)
