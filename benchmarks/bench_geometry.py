"""Newton–Schulz vs SVD for orthogonalization, and Muon's step time vs AdamW's.

CPU: NS (5 quintic steps, float32) against ``torch.linalg.svd`` (+ U Vᵀ) on n×n matrices,
as a ratio SVD time / NS time, fastest calls of the two measured in turns (n = 1024, 4096;
``--quick``: 1024 only).
GPU (when CUDA is available): NS in bfloat16 as achieved TFLOP/s and % of the GPU's dense
bf16 peak, counting per step X Xᵀ (2n³), A·A (2n³) and B·X (2n³) — see
``gd_lib.linalg.newton_schulz_flops``.
Both devices: one Muon step vs one torch.optim.AdamW step on the same MLP with the same
gradients (the baseline AdamW is measured in the same run).
"""

from __future__ import annotations

import torch
from torch import nn

import gd_lib
from benchmarks.common import header, interleaved_times, median_time, table
from gd_lib.linalg import newton_schulz, newton_schulz_flops, polar_factor
from gd_lib.optim import Muon, muon_param_groups

SEED = 0
#: dense bfloat16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' datasheets
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
}


def bf16_peak(name: str) -> tuple[str, float] | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return key, BF16_PEAK_TFLOPS[key]
    return None


def print_rows_as_measured(rows_iter) -> None:
    """Print a table one row at a time (flushing), so a long run that is cut off keeps its rows."""
    columns = None
    for row in rows_iter:
        lines = table([row], columns or list(row)).splitlines()
        if columns is None:
            columns = list(row)
            print("\n".join(lines[:2]), flush=True)
        print(lines[2], flush=True)


def cpu_orthogonalization(sizes, repeats):
    """NS and SVD measured in turns; the ratio of the fastest calls (least disturbed by other load)."""
    for n in sizes:
        G = torch.randn(n, n, generator=torch.Generator().manual_seed(SEED))
        reps = repeats if n <= 1024 else 1
        warm = 1 if n <= 1024 else 0
        times = interleaved_times(
            {"ns": lambda G=G: newton_schulz(G, 5), "svd": lambda G=G: polar_factor(G)}, repeats=reps, warmup=warm
        )
        t_ns, t_svd = min(times["ns"]), min(times["svd"])
        yield {
            "n": n,
            "dtype": "float32",
            "NS5 (s)": f"{t_ns:.3f}",
            "SVD U Vᵀ (s)": f"{t_svd:.3f}",
            "SVD / NS": f"{t_svd / t_ns:.1f}x",
            "NS GFLOP/s": f"{newton_schulz_flops(n, n, 5) / t_ns / 1e9:.0f}",
            "repeats (min of)": reps,
        }


def gpu_newton_schulz(sizes, repeats) -> list[dict]:
    name = torch.cuda.get_device_name()
    peak = bf16_peak(name)
    rows = []
    for n in sizes:
        G = torch.randn(n, n, device="cuda", generator=torch.Generator("cuda").manual_seed(SEED))
        t = median_time(lambda G=G: newton_schulz(G, 5, dtype=torch.bfloat16), repeats=repeats, warmup=3)
        tflops = newton_schulz_flops(n, n, 5) / t / 1e12
        t_svd = median_time(lambda G=G: polar_factor(G), repeats=max(3, repeats // 4), warmup=1)
        rows.append(
            {
                "n": n,
                "dtype": "bfloat16",
                "NS5 (ms)": f"{t * 1e3:.2f}",
                "TFLOP/s": f"{tflops:.0f}",
                "% of bf16 peak": f"{100 * tflops / peak[1]:.0f}% of {peak[1]:.0f} ({peak[0]})" if peak else "n/a",
                "SVD fp32 (ms)": f"{t_svd * 1e3:.1f}",
                "SVD / NS": f"{t_svd / t:.0f}x",
            }
        )
    return rows


def optimizer_steps(width: int, depth: int, device, repeats: int) -> list[dict]:
    torch.manual_seed(SEED)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    muon = Muon(muon_param_groups(model, head=None), lr=0.02)
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = interleaved_times({"adamw": adamw.step, "muon": muon.step}, repeats=repeats, warmup=2)
    t_adamw, t_muon = min(times["adamw"]), min(times["muon"])  # fastest of the calls taken in turns
    return [
        {
            "model": f"MLP {depth}×Linear({width},{width})",
            "device": str(device),
            "AdamW step (ms)": f"{t_adamw * 1e3:.2f}",
            "Muon step (ms)": f"{t_muon * 1e3:.2f}",
            "Muon / AdamW": f"{t_muon / t_adamw:.1f}x",
        }
    ]


def main(args) -> None:
    quick = bool(getattr(args, "quick", False))
    sizes = [1024] if quick else [1024, 4096]
    repeats = 3 if quick else 5
    print(
        header(
            "Geometry: Newton–Schulz orthogonalization and Muon step time",
            seed=SEED,
            quick=quick,
            ns_steps=5,
            coefficients="(3.4445, -4.7750, 2.0315)",
        )
    )
    print("\nCPU: Newton–Schulz (5 steps, float32) vs exact SVD polar factor U Vᵀ (baseline)")
    print_rows_as_measured(cpu_orthogonalization(sizes, repeats))
    device = gd_lib.device()
    if device.type == "cuda":
        print("\nGPU: Newton–Schulz in bfloat16 (FLOPs per step: X Xᵀ 2n³ + A·A 2n³ + B·X 2n³)")
        rows = gpu_newton_schulz([1024, 4096] if quick else [1024, 2048, 4096, 8192], 10 if quick else 30)
        print(table(rows, list(rows[0])))
    print("\nOptimizer step (gradients fixed, step only): Muon vs torch.optim.AdamW (baseline)")
    width, depth = (256, 4) if quick or device.type != "cuda" else (4096, 8)
    if device.type != "cuda" and not quick:
        width = 1024
    rows = optimizer_steps(width, depth, device, repeats=5 if quick else 10)
    print(table(rows, list(rows[0])))
