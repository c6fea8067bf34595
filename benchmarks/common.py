"""Shared helpers for the benchmarks: a header that says what was measured where, and timing."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

import gd_lib


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    dev = gd_lib.device()
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def header(title: str, **config) -> str:
    lines = [
        f"## {title}",
        f"code {code_version()} | gd_lib {gd_lib.__version__} | torch {torch.__version__} | "
        f"python {platform.python_version()} | device {gd_lib.device()} | {machine()}",
    ]
    if config:
        lines.append("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    return "\n".join(lines)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds, synchronizing the GPU around each call."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall times of several functions measured in turns (a, b, a, b, ...), seconds per call.

    On a shared machine the load changes over a run; taking turns exposes every function to
    the same load, so that ratios of their minima (the least-disturbed calls) are fair.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize()
            t0 = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    out = [
        "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |",
        "| " + " | ".join("-" * widths[c] for c in columns) + " |",
    ]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) + " |")
    return "\n".join(out)
