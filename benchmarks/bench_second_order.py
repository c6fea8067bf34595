"""Wall time per training step of KFAC and EKFAC, relative to torch.optim.AdamW.

One ~10M-parameter MLP (Linear 1024→2048→2048→1024→10, ReLU; quick: 128→256→256→128→10
and refresh periods 1 and 10 only, for a 2-core CPU),
random inputs and labels on the device, float32. A "step" is the whole training step
(zero_grad, forward, backward, ``opt.step()``), because KFAC's hooks also cost time in the
forward and backward passes. Statistics are gathered every step (``cov_update_freq=1``, the
most expensive setting); the eigendecompositions (or Cholesky inverses) are refreshed every
1, 10 or 100 steps. To include the amortized refresh, steps are timed in blocks of
max(k, 10) consecutive steps (k = refresh period), and the figure is the median over blocks
of block time / block length. The baseline, torch.optim.AdamW with its default
implementation, is measured in the same run on the same model and batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import gd_lib
from benchmarks.common import header, median_time, table
from gd_lib.optim import EKFAC, KFAC

SEED = 0
REFRESH_PERIODS = (1, 10, 100)


def make_mlp(widths: tuple[int, ...], device: torch.device) -> nn.Sequential:
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def time_per_step(
    model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor, block: int, repeats: int
) -> float:
    """Median over ``repeats`` blocks of ``block`` training steps, divided by ``block`` (seconds)."""

    def run_block():
        for _ in range(block):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X), y).backward()
            opt.step()

    return median_time(run_block, repeats=repeats, warmup=1) / block


def bench_kfac_family(args) -> None:
    quick = bool(getattr(args, "quick", False))
    widths = (128, 256, 256, 128, 10) if quick else (1024, 2048, 2048, 1024, 10)
    batch = 32 if quick else 256
    repeats = 3 if quick else 5
    periods = (1, 10) if quick else REFRESH_PERIODS
    device = gd_lib.device()
    model = make_mlp(widths, device)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(SEED)
    X = torch.randn(batch, widths[0], generator=g).to(device)
    y = torch.randint(0, widths[-1], (batch,), generator=g).to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    print(
        header(
            "KFAC family: wall time per training step vs torch.optim.AdamW",
            seed=SEED,
            model="MLP " + "→".join(map(str, widths)) + " float32",
            params=f"{n_params / 1e6:.2f}M",
            batch=batch,
            cov_update_freq=1,
            blocks=repeats,
            quick=quick,
            threads=torch.get_num_threads(),
        )
    )

    def fresh(make):
        model.load_state_dict(initial)
        return make(model)

    # baseline: AdamW, blocks of 10 steps
    adamw_s = time_per_step(
        model, fresh(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3)), X, y, block=10, repeats=repeats
    )
    rows = [
        {"optimizer": "torch.optim.AdamW", "refresh every": "-", "ms/step": f"{adamw_s * 1e3:.2f}", "x AdamW": "1.00"}
    ]
    variants = {
        "KFAC (eigh)": lambda m, k: KFAC(m, lr=1e-3, damping=1e-3, cov_update_freq=1, inv_update_freq=k),
        "KFAC (cholesky)": lambda m, k: KFAC(
            m, lr=1e-3, damping=1e-3, cov_update_freq=1, inv_update_freq=k, inverse_method="cholesky"
        ),
        "EKFAC": lambda m, k: EKFAC(m, lr=1e-3, damping=1e-3, cov_update_freq=1, inv_update_freq=k),
    }
    for name, make in variants.items():
        for k in periods:
            opt = fresh(lambda m, make=make, k=k: make(m, k))
            seconds = time_per_step(model, opt, X, y, block=max(k, 10), repeats=repeats)
            opt.remove_hooks()
            rows.append(
                {
                    "optimizer": name,
                    "refresh every": k,
                    "ms/step": f"{seconds * 1e3:.2f}",
                    "x AdamW": f"{seconds / adamw_s:.2f}",
                }
            )
    print(table(rows, ["optimizer", "refresh every", "ms/step", "x AdamW"]))


def main(args) -> None:
    bench_kfac_family(args)
