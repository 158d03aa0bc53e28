"""``make bench``: run the benchmarks, print them, record them in docs/benchmarks.md.

Each benchmark owns one section of the document, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; the rest is prose kept by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from pathlib import Path

from bench.frame_path import run_frame_path
from bench.machine import describe_machine

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
FRAME_TARGET_US = 30.0


def frame_path_section() -> str:
    # One core, as the target says; the other stays for the OS and emulators.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
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


def record(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOC.write_text(text)


def main() -> int:
    section = frame_path_section()
    print(section)
    record("frame-path", section)
    print(f"\nrecorded in {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
