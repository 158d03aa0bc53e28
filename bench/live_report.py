"""Render the live-calls results (``run_live_calls_bench``) as the docs section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_live_calls"]

Result = Mapping[str, Any]


def _ms(stats: Mapping[str, float] | None, key: str = "p99") -> str:
    if not stats or not stats.get("count"):
        return "-"
    return f"{stats[key]:.1f}"


def _pair(stats: Mapping[str, float] | None) -> str:
    return f"{_ms(stats, 'p50')} / {_ms(stats, 'p99')}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _latency_row(r: Result) -> str:
    if "error" in r:
        return f"| {r['calls']} | {r['error']} |" + " |" * 9
    return (
        f"| {r['calls']} | {r.get('placed', 0)} / {r.get('measured_calls', 0)} "
        f"| {_pair(r.get('setup_ms'))} | {_pair(r.get('setup_system_ms'))} "
        f"| {_pair(r.get('caller_to_model_ms'))} | {_pair(r.get('model_to_caller_ms'))} "
        f"| {r.get('max_gap_ms', 0):.1f} ({r.get('max_sent_gap_ms', 0):.1f}) "
        f"| {r.get('max_underrun_ms', 0):.1f} ({r.get('underruns', 0)}) "
        f"| {_pair(r.get('barge_in_ms'))} "
        f"| {r.get('caller_unmatched', 0)} / {r.get('replies_lost', 0)} / "
        f"{r.get('no_greeting', 0)} "
        f"| {', '.join(r.get('broken', [])) or 'all met'} |"
    )


def _cost_row(r: Result) -> str:
    cpu, pss = r.get("cpu") or {}, r.get("pss_mb") or {}
    if "error" in r or not cpu:
        return f"| {r['calls']} |" + " - |" * 9
    return (
        f"| {r['calls']} | {pss.get('mean', 0):.1f} ({pss.get('max', 0):.1f}) "
        f"| {100 * cpu['per_call_cores']:.2f} | {_cores(cpu['call_actors_cores'])} "
        f"| {_cores(cpu['edge_cores'])} | {_cores(cpu['emulators_cores'])} "
        f"| {_cores(cpu['other_ray_cores'])} | {_cores(cpu['machine_busy_cores'])} "
        f"| {100 * cpu.get('cpu_pressure', 0.0):.0f}% | {_pair(r.get('post_ms'))} |"
    )


def _by_process(r: Result) -> list[str]:
    cpu = r.get("cpu") or {}
    if not cpu:
        return []
    bench_rest = cpu["bench_process_cores"] - cpu["edge_cores"]
    rows = {
        **cpu["by_process"],
        "emulators (two processes: Twilio, Realtime)": cpu["emulators_cores"],
        "bench process: main thread (media edge, Ray driver, API client)": cpu["edge_cores"],
        "bench process: other threads (Ray driver's, sampler)": bench_rest,
    }
    top = sorted(rows.items(), key=lambda kv: -kv[1])
    return [
        f"CPU by process at N = {r['calls']}, over {cpu['window_s']:.0f} s from half the calls "
        f"up to half ended ({cpu['live_calls']:.0f} calls up on average; machine busy "
        f"{cpu['machine_busy_cores']:.2f} of 2 cores):",
        "",
        "| process | cores |",
        "|---|---:|",
        *(f"| {name} | {value:.3f} |" for name, value in top if value >= 0.005),
    ]


def _setup_parts(r: Result) -> str:
    parts = [
        ("answer -> stream `start`", r.get("connect_ms")),
        ("`start` -> greeting's response.create at the model", r.get("start_to_create_ms")),
        ("model's time to first audio (emulated)", r.get("model_first_audio_ms")),
    ]
    text = "; ".join(f"{name} {_ms(stats, 'p50')} ms" for name, stats in parts)
    return f"Setup at N = {r['calls']}, medians: {text}; the rest is the first delta's relay."


def _warm_cold(rows: list[Result], cold: Result | None) -> list[str]:
    if not cold or "error" in cold:
        return []
    warm = next((r for r in rows if r["calls"] == cold["calls"] and "error" not in r), None)
    lines = [
        "| pool | N | API place p50 / p99 ms | setup p50 / p99 ms (answer -> first frame) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in (("warm (N ready actors)", warm), ("cold (no ready actor)", cold)):
        if r is not None:
            lines.append(
                f"| {name} | {r['calls']} | {_pair(r.get('post_ms'))} "
                f"| {_pair(r.get('setup_ms'))} |"
            )
    return lines


def render_live_calls(results: Result) -> str:
    rows: list[Result] = results["rows"]
    t = results["targets"]
    measured = [r for r in rows if "error" not in r and r.get("cpu")]
    lines = [
        f"Measured {results['date']} on {results['machine']}. Scenario `bench/live_calls.yaml` "
        "(about 33 s per call), the N calls placed evenly over 10 s; emulated model: 300 ms to "
        "first audio, audio at 5x real time in 100 ms deltas."
        + (" Every N measured (`--keep-going`)." if results.get("keep_going") else ""),
        "",
        "| N | placed / measured | setup p50 / p99 ms | system part p50 / p99 ms "
        "| caller->model p50 / p99 ms | model->caller p50 / p99 ms "
        "| longest arrival gap ms (as sent) | longest silence heard ms (underruns) "
        "| barge-in p50 / p99 ms "
        "| lost: appends / replies / greetings "
        "| targets missed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(_latency_row(r) for r in rows),
        "",
        "| N | PSS per call actor MB, mean (max) | CPU per call, % of a core (actor + edge) "
        "| call actors, cores | edge (main thread), cores | emulators, cores "
        "| rest of Ray, cores | machine busy, cores | CPU pressure | API place p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_cost_row(r) for r in rows),
        "",
        f"**Largest N holding every target: {results['largest_n'] or 'none'}; every target "
        f"but PSS: {results.get('largest_n_but_pss') or 'none'}** (relay p99 <= "
        f"{t['relay_p99_ms']:.0f} ms both ways, no audio lost, no gap over {t['gap_ms']:.0f} ms "
        "between frames of a reply as the phone received them, every call greeted and setup "
        f"p99 <= {t['setup_p99_ms']:.0f} ms for the system's part, "
        f"barge-in p99 <= {t['barge_in_p99_ms']:.0f} ms, PSS <= {t['pss_mb']:.0f} MB "
        "(10^6 bytes) for every call actor; the largest N below which every N held too).",
    ]
    if measured:
        top = measured[-1]
        lines += ["", _setup_parts(top), "", *_by_process(top)]
    cold_lines = _warm_cold(rows, results.get("cold"))
    if cold_lines:
        lines += ["", *cold_lines]
    return "\n".join(lines)
