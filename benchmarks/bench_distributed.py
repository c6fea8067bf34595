"""Per-rank preconditioner work of Muon/Shampoo/SOAP/KFAC on 1, 2 and 4 processes (gloo on CPU, nccl on GPUs).

The model is a square MLP whose optimizer step is dominated by its matrix functions
(Newton–Schulz, inverse roots, eigh/QR, factor inversions, refreshed every step). The
figure of merit is ``ratio``: the busiest rank's CPU seconds in that work per step (the
fastest step: every step computes the same units) divided by the 1-process value (target
≤ 0.6 at 2 ranks; ideal 1/world).
Ranks that share a CPU also share its caches and memory bandwidth, so the ratio on one
machine sits a little above 1/world. ``step`` is the median wall time
of a whole optimizer step on the slowest rank, communication included: on one shared CPU
the ranks compete for the same cores, so it does not shrink; it would on separate devices.
"""

from __future__ import annotations

import torch

from benchmarks.common import header, table
from gd_lib.experiments.distributed import OPTIMIZERS, work_scaling


def main(args) -> None:
    quick = bool(getattr(args, "quick", False))
    gpus = torch.cuda.device_count()
    result = work_scaling(quick=quick)
    settings = dict(result["settings"])
    backend = settings.pop("backend")
    print(
        header(
            "distributed: per-rank preconditioner work, 1 vs 2 vs 4 processes",
            backend="nccl, one GPU per rank" if backend == "nccl" else "gloo, CPU processes",
            gpus=gpus,
            **settings,
        )
    )
    if backend != "nccl":
        print(
            f"(this machine has {gpus} GPU(s), fewer than {max(result['world_sizes'])} ranks"
            f"{' or quick mode' if quick else ''}: every run used CPU processes with gloo; no GPU figures)"
        )
    rows = []
    for name in OPTIMIZERS:
        base_step = max(result["step_seconds"][name][1])
        for world in result["world_sizes"]:
            rows.append(
                {
                    "optimizer": name,
                    "ranks": world,
                    "work per rank": "/".join(str(c) for c in result["work_counts"][name][world]),
                    "busiest rank work ms/step": f"{1e3 * max(result['work_seconds'][name][world]):.1f}",
                    "ratio vs 1 process": f"{result['ratio'][name][world]:.2f}",
                    "step ms (slowest rank)": f"{1e3 * max(result['step_seconds'][name][world]):.1f}",
                    "step ratio": f"{max(result['step_seconds'][name][world]) / base_step:.2f}",
                }
            )
    print(table(rows, list(rows[0])))
