"""``make bench``: run the benchmarks, print them, record them in docs/benchmarks.md.

Each benchmark owns one section of the document, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; the rest is prose kept by hand.

    python -m bench                                   # every section
    python -m bench --only live-calls --max-calls 40  # one section, N up to 40
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.frame_path import run_frame_path
from bench.live_calls import run_live_calls_bench
from bench.live_report import render_live_calls
from bench.machine import describe_machine
from bench.ray_floor import WINDOW_S, run_ray_floor
from bench.recorder_load import REPORTS, ROUNDS, SHARDED_CALLS, run_recorder_load, run_sharded_load

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
FRAME_TARGET_US = 30.0


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin this process to one core for the block, then give the others back."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def frame_path_section(args: argparse.Namespace) -> str:
    # One core, as the target says; the other stays for the OS and emulators.
    with one_core():
        results = run_frame_path()
    path = sum(v for k, v in results.items() if not k.startswith("codec"))
    lines = [
        f"Measured {dt.date.today().isoformat()} on {describe_machine()}, pinned to one core.",
        "",
        "| per 20 ms frame | µs |",
        "|---|---:|",
        *(f"| {name} | {value:.2f} |" for name, value in results.items()),
        f"| **whole relay path (the three rows above)** | **{path:.2f}** |",
        "",
        f"Target: the whole per-frame path under {FRAME_TARGET_US:.0f} µs on one core: "
        + ("met." if path < FRAME_TARGET_US else "**not met**."),
    ]
    return "\n".join(lines)


def live_calls_section(args: argparse.Namespace) -> str:
    results = run_live_calls_bench(
        args.max_calls, cold_calls=args.cold_calls, keep_going=args.keep_going
    )
    if args.raw is not None:
        args.raw.write_text(json.dumps(results, indent=2))
    return render_live_calls(results)


def ray_floor_section(args: argparse.Namespace) -> str:
    rows = run_ray_floor()
    return "\n".join([
        f"Measured {dt.date.today().isoformat()} on {describe_machine()}: idle processes "
        f"over {WINDOW_S:.0f} s (code: `bench/ray_floor.py`).",
        "",
        "| idle process | CPU, % of a core | wake-ups / s |",
        "|---|---:|---:|",
        *(f"| {r.label} | {r.cpu_percent:.2f} | {r.wakeups_per_s:.0f} |" for r in rows),
    ])  # fmt: skip


def recorder_section(args: argparse.Namespace) -> str:
    rows = run_recorder_load()
    return "\n".join([
        f"Measured {dt.date.today().isoformat()} on {describe_machine()}: {REPORTS} reports "
        f"per row, the median of {ROUNDS} rounds, SQLite (code: `bench/recorder_load.py`).",
        "",
        "| calls reporting at once | reports / s | CPU per report, ms | commits per report |",
        "|---:|---:|---:|---:|",
        *(
            f"| {r.calls} | {r.reports_per_s:.0f} | {r.cpu_ms_per_report:.2f} "
            f"| {r.commits_per_report:.2f} |"
            for r in rows
        ),
        "",
        f"Shards: {SHARDED_CALLS} calls over S recorders, one process each; the PostgreSQL "
        "server is local, on a Unix socket, fsync on.",
        "",
        "| store | recorders | reports / s | recorders' CPU per report, ms "
        "| PostgreSQL's CPU per report, ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r.backend} | {r.shards} | {r.reports_per_s:.0f} "
            f"| {r.recorder_cpu_ms_per_report:.2f} | "
            + ("-" if r.server_cpu_ms_per_report is None else f"{r.server_cpu_ms_per_report:.2f}")
            + " |"
            for r in run_sharded_load()
        ),
    ])  # fmt: skip


SECTIONS: dict[str, Callable[[argparse.Namespace], str]] = {
    "frame-path": frame_path_section,
    "live-calls": live_calls_section,
    "ray-floor": ray_floor_section,
    "recorder": recorder_section,
}


def record(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOC.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="run the benchmarks")
    parser.add_argument(
        "--only", action="append", choices=sorted(SECTIONS), help="run this section (repeatable)"
    )
    parser.add_argument(
        "--max-calls", type=int, default=None, help="live-calls: raise N up to this (default 100)"
    )
    parser.add_argument(
        "--cold-calls",
        type=int,
        default=10,
        help="live-calls: calls without a warm actor (0: skip)",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="live-calls: every N, even past a broken target"
    )
    parser.add_argument("--raw", type=Path, help="live-calls: also write every figure as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.only or list(SECTIONS):
        section = SECTIONS[name](args)
        print(section)
        record(name, section)
        print(f"\nrecorded {name} in {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
