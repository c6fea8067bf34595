"""Step time of gd_lib's first-order optimizers against torch.optim on one ~10M-parameter MLP.

Baselines, measured in the same run on the same parameters and gradients:
- torch.optim with its default implementation (``foreach=None``: the for-loop path on
  the CPU, the foreach path on CUDA),
- torch.optim with ``foreach=True``.
gd_lib is timed with its default (``foreach=None``: the foreach path for one device and
dtype) and with ``foreach=False`` (the readable per-tensor path). Gradients are filled
once; only ``step()`` is timed. Variants are interleaved step by step so that load
from other processes hits them alike; the figure is the median over the timed steps.
Target: gd_lib ≤ 1.10× torch's default.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

import gd_lib
import gd_lib.optim as gd
from benchmarks.common import header, median_time, table

SEED = 0

# name -> (gd_lib class, torch class, hyperparameters shared by both)
OPTIMIZERS = {
    "SGD (momentum 0.9)": (gd.SGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
    "Adam": (gd.Adam, torch.optim.Adam, dict(lr=1e-3)),
    "AdamW": (gd.AdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
    "NAdam": (gd.NAdam, torch.optim.NAdam, dict(lr=1e-3)),
    "RMSprop": (gd.RMSprop, torch.optim.RMSprop, dict(lr=1e-3)),
    "Adagrad": (gd.Adagrad, torch.optim.Adagrad, dict(lr=1e-3)),
}


def mlp_with_grads(width: int, depth: int, device: torch.device) -> nn.Module:
    """``depth`` Linear(width, width) layers in float32, every ``.grad`` pre-filled."""
    torch.manual_seed(SEED)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return model


def time_variants(optimizers: dict, rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median step time per variant over ``rounds`` rounds of one timed step each.

    The variants take turns within every round, so that load from other processes on a
    shared machine falls on all of them alike instead of on whichever ran last.
    """
    for opt in optimizers.values():  # creates the state, warms the allocator
        for _ in range(warmup):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            times[name].append(median_time(opt.step, repeats=1, warmup=0))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(args) -> None:
    quick = bool(getattr(args, "quick", False))
    width, depth = (800, 4) if quick else (1600, 4)
    rounds = 5 if quick else 21
    device = gd_lib.device()
    model = mlp_with_grads(width, depth, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        header(
            "First-order optimizers: step time, gd_lib vs torch.optim",
            seed=SEED,
            model=f"{depth}x Linear({width},{width}) float32",
            params=f"{n_params / 1e6:.2f}M",
            timed_steps=rounds,
            threads=torch.get_num_threads(),
            quick=quick,
        )
    )
    rows = []
    for name, (ours, theirs, kwargs) in OPTIMIZERS.items():
        params = list(model.parameters())
        variants = {
            "torch default": theirs(params, **kwargs),
            "torch foreach": theirs(params, **kwargs, foreach=True),
            "gd_lib": ours(params, **kwargs),
            "gd_lib for-loop": ours(params, **kwargs, foreach=False),
        }
        t = time_variants(variants, rounds)
        rows.append(
            {
                "optimizer": name,
                "torch default ms": f"{1e3 * t['torch default']:.2f}",
                "torch foreach ms": f"{1e3 * t['torch foreach']:.2f}",
                "gd_lib ms": f"{1e3 * t['gd_lib']:.2f}",
                "gd_lib for-loop ms": f"{1e3 * t['gd_lib for-loop']:.2f}",
                "gd_lib / torch default": f"{t['gd_lib'] / t['torch default']:.3f}",
                "gd_lib / torch foreach": f"{t['gd_lib'] / t['torch foreach']:.3f}",
            }
        )
        del variants  # free this optimizer's state before the next one
    print(table(rows, list(rows[0])))
    print("ratios < 1 mean gd_lib is faster; target: gd_lib / torch default <= 1.10")
