"""Wall time per step of Shampoo and SOAP relative to torch.optim.AdamW on one MLP.

A step of a preconditioned method is either *ordinary* (update statistics, precondition)
or a *refresh* (also recompute the inverse roots / eigenbases). Both kinds are timed
separately in one run with a refresh every 2nd step (median of each kind), and the
per-step time at refresh interval f is the amortized mix

    t(f) = ((f - 1) · t_ordinary + t_refresh) / f,

reported for f = 1, 10, 100 next to AdamW's median step on the same model, data and
batch. Two timings: the optimizer step alone, and the full training step (forward,
backward, step). The first, initialising calls (SOAP's eigh, Shampoo's first roots) and
Shampoo's grafting-only warm-up steps are excluded.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

import gd_lib
from gd_lib.optim import SOAP, Shampoo

from .common import header, synchronize, table

FREQUENCIES = (1, 10, 100)


def make_mlp(widths: list[int], device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers).to(device)


def timed_steps(model, opt, X, Y, steps: int, skip: int):
    """Per-step wall times (optimizer step alone, full train step) after ``skip`` untimed steps."""
    step_times, full_times = [], []
    for i in range(skip + steps):
        synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(X), Y).backward()
        synchronize()
        t1 = time.perf_counter()
        opt.step()
        synchronize()
        t2 = time.perf_counter()
        if i >= skip:
            step_times.append(t2 - t1)
            full_times.append(t2 - t0)
    return step_times, full_times


def split_by_refresh(times: list[float], first_step: int, is_refresh) -> tuple[float, float]:
    """Median of the ordinary steps and median of the refresh steps (steps numbered from first_step)."""
    refresh = [t for k, t in enumerate(times, start=first_step) if is_refresh(k)]
    ordinary = [t for k, t in enumerate(times, start=first_step) if not is_refresh(k)]
    return statistics.median(ordinary), statistics.median(refresh)


def main(args) -> None:
    quick = bool(getattr(args, "quick", False))
    device = gd_lib.device()
    widths = [256, 512, 512, 256, 256] if quick else [1024, 2048, 2048, 1024, 1024]
    batch = 256 if quick else 512
    pairs = 3 if quick else 4  # timed (ordinary, refresh) pairs per preconditioned method
    adam_steps = 10 if quick else 10
    model = make_mlp(widths, device)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    X = torch.randn(batch, widths[0], generator=g).to(device)
    Y = torch.randn(batch, widths[-1], generator=g).to(device)
    print(
        header(
            "Shampoo and SOAP step time vs AdamW",
            params=f"{n_params / 1e6:.2f}M",
            widths=widths,
            batch=batch,
            dtype="float32",
            seed=0,
            quick=quick,
            shampoo="adam grafting, max_preconditioner_dim 1024, eigh roots",
            soap="reference defaults",
        )
    )
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        model.load_state_dict(initial)
        return model.parameters()

    adam = torch.optim.AdamW(fresh(), lr=1e-3)
    adam_step, adam_full = timed_steps(model, adam, X, Y, adam_steps, skip=3)
    t_adam, t_adam_full = statistics.median(adam_step), statistics.median(adam_full)
    rows = [
        dict(
            optimizer="AdamW (baseline)",
            refresh="-",
            step_ms=f"{1e3 * t_adam:.1f}",
            step_ratio="1.00",
            train_step_ms=f"{1e3 * t_adam_full:.1f}",
            train_ratio="1.00",
        )
    ]

    # Shampoo with f = 2, start 2: step 2, 4, 6, ... refresh the roots, 3, 5, ... do not
    shampoo = Shampoo(
        fresh(),
        lr=1e-3,
        betas=(0.9, 0.999),
        grafting="adam",
        epsilon=1e-8,
        precondition_frequency=2,
        max_preconditioner_dim=1024,
    )
    skip = 2  # step 1 grafts only, step 2 computes the first roots
    s_step, s_full = timed_steps(model, shampoo, X, Y, 2 * pairs, skip=skip)
    # SOAP with f = 2: call 1 initialises (eigh), then update k = call - 1 refreshes when k is even
    soap = SOAP(fresh(), lr=3e-3, precondition_frequency=2)
    skip_soap = 1
    p_step, p_full = timed_steps(model, soap, X, Y, 2 * pairs, skip=skip_soap)

    for name, step_times, full_times, first, is_refresh in [
        ("Shampoo", s_step, s_full, skip + 1, lambda k: k % 2 == 0),
        ("SOAP", p_step, p_full, skip_soap, lambda k: k % 2 == 0),  # update index = call - 1
    ]:
        ordinary, refresh = split_by_refresh(step_times, first, is_refresh)
        ordinary_full, refresh_full = split_by_refresh(full_times, first, is_refresh)
        for f in FREQUENCIES:
            t = ((f - 1) * ordinary + refresh) / f
            t_full = ((f - 1) * ordinary_full + refresh_full) / f
            rows.append(
                dict(
                    optimizer=name,
                    refresh=f,
                    step_ms=f"{1e3 * t:.1f}",
                    step_ratio=f"{t / t_adam:.2f}",
                    train_step_ms=f"{1e3 * t_full:.1f}",
                    train_ratio=f"{t_full / t_adam_full:.2f}",
                )
            )
        rows.append(dict(optimizer=f"  ({name}: ordinary {1e3 * ordinary:.1f} ms, refresh {1e3 * refresh:.1f} ms)"))
    print(table(rows, ["optimizer", "refresh", "step_ms", "step_ratio", "train_step_ms", "train_ratio"]))
    print(
        "step = optimizer.step() alone; train step = zero_grad + forward + backward + step. "
        "Ratios against AdamW measured in the same run."
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args())
