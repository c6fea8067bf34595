"""Lecture 12: the curvature-aware optimizers at scale, under ``torch.distributed``.

One small classification problem (an MLP on a teacher's labels) is trained by Muon,
Shampoo, SOAP and KFAC on 1 process (no process group: the plain optimizers) and on 2
and 4 processes with DDP (each rank a shard of every batch, gradients averaged by DDP)
and ``process_group=`` given to the optimizer, which then divides its expensive work
(Newton–Schulz, inverse roots, eigenbases, factor inversions) between the ranks. The
functions return the final parameters' distance to the 1-process run, the loss curves,
and what each rank computed (``optimizer.work_log``).

Quick mode: CPU processes with gloo, a 16-32-32-32-8 MLP, 20 steps. Full mode: the same
code on GPUs with nccl when there is one GPU per rank, wider layers, more steps.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import gd_lib
from gd_lib.distributed import launch
from gd_lib.models import MLP
from gd_lib.optim import KFAC, SOAP, Muon, Shampoo

__all__ = ["OPTIMIZERS", "make_optimizer", "train", "train_all_worker", "run_demo", "work_scaling",
           "work_scaling_worker"]

OPTIMIZERS = ("muon", "shampoo", "soap", "kfac")

#: What each optimizer's expensive unit of work is (the WorkLog kinds it counts).
WORK_KINDS = {"muon": "Newton–Schulz per weight", "shampoo": "inverse root per statistic",
              "soap": "eigh / QR refresh per statistic", "kfac": "eigh per Kronecker factor"}


def make_optimizer(name: str, model: torch.nn.Module, process_group=None) -> torch.optim.Optimizer:
    """The lecture's settings: every optimizer refreshes its preconditioner several times in 20 steps."""
    if name == "muon":
        return Muon(model.parameters(), lr=0.02, adam_lr=3e-3, process_group=process_group)
    if name == "shampoo":
        return Shampoo(model.parameters(), lr=3e-3, grafting="adam", betas=(0.9, 0.999), epsilon=1e-8,
                       max_preconditioner_dim=16, precondition_frequency=2, process_group=process_group)
    if name == "soap":
        return SOAP(model.parameters(), lr=3e-3, precondition_frequency=4, process_group=process_group)
    if name == "kfac":
        return KFAC(model, lr=0.03, damping=1e-2, cov_update_freq=1, inv_update_freq=4,
                    process_group=process_group)
    raise ValueError(f"Invalid optimizer name: {name!r}; expected one of {OPTIMIZERS}")


def _problem(widths, batch, in_features=16, classes=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, in_features, generator=generator)
    teacher = torch.randn(in_features, classes, generator=generator)
    y = (X @ teacher).argmax(dim=1)
    torch.manual_seed(seed + 1)  # torch's default init draws from the global generator
    model = MLP(in_features, list(widths), classes, activation="tanh")
    return model, X, y


def train(name: str, *, steps: int = 20, widths=(32, 32), batch: int = 64, seed: int = 0,
          process_group=None, shard: bool = True, device: torch.device | str | None = None) -> dict:
    """Train the problem with optimizer ``name``; with ``process_group``, as one DDP rank.

    With a process group and ``shard=True`` this rank takes its contiguous slice of the
    batch and DDP averages the gradients (the batch must divide by the world size);
    ``shard=False`` gives every rank the whole batch (identical gradients without DDP).
    Returns ``params`` (all parameters, flat float64 array), ``losses`` (full-batch loss
    before each step), ``work`` (the optimizer's ``work_log.as_dict()``) and ``step_seconds``.
    """
    device = torch.device(device) if device is not None else gd_lib.device()
    model, X, y = _problem(widths, batch, seed=seed)
    model, X, y = model.to(device), X.to(device), y.to(device)
    net, X_local, y_local = model, X, y
    if process_group is not None:
        world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        if shard:
            if batch % world:
                raise ValueError(f"Invalid batch: {batch}; expected a multiple of the world size {world}")
            X_local, y_local = X.chunk(world)[rank], y.chunk(world)[rank]
            net = DistributedDataParallel(model, process_group=process_group,
                                          device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(name, model, process_group)
    losses, step_seconds = [], []
    for _ in range(steps):
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model(X), y)))
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(X_local), y_local).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    params = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()]).numpy()
    return {"params": params, "losses": np.array(losses), "work": optimizer.work_log.as_dict(),
            "step_seconds": np.array(step_seconds)}


def train_all_worker(names, steps: int, widths, batch: int, shard: bool = True) -> dict:
    """One rank of a :func:`gd_lib.distributed.launch` run: :func:`train` for each optimizer."""
    from gd_lib.distributed import init_from_env

    _, _, device = init_from_env()
    return {name: train(name, steps=steps, widths=widths, batch=batch, process_group=dist.group.WORLD,
                        shard=shard, device=device) for name in names}


def _settings(quick: bool) -> dict:
    return dict(steps=20, widths=(32, 32, 32), batch=64) if quick else dict(steps=200, widths=(256, 256), batch=512)


def run_demo(quick: bool | None = None, world_sizes=(2, 4), names=OPTIMIZERS, shard: bool = True,
             timeout_s: float = 600.0) -> dict:
    """The same model trained on 1 process and on each of ``world_sizes`` processes, per optimizer.

    ``shard=True``: DDP, each rank a slice of the batch, so the averaged gradient equals the
    1-process gradient up to floating-point summation order. ``shard=False``: every rank
    computes the whole batch's gradient (no DDP), so the gradients are the 1-process ones
    exactly and any difference would come from dividing the optimizer's work.

    Returns ``settings``, ``world_sizes`` (with 1 first), and per optimizer name:
    ``max_abs_diff[name][w]`` (largest |parameter − 1-process parameter| after training, the
    worst rank), ``rank_spread[name][w]`` (largest difference between two ranks' parameters),
    ``losses[name][w]`` (rank 0's full-batch loss curve), ``work_counts[name][w]`` (units of
    expensive work computed, one number per rank) and ``work_seconds[name][w]`` (their CPU
    seconds per rank).
    """
    settings = _settings(gd_lib.quick_mode(quick))
    single = {name: train(name, **settings, device="cpu" if quick else None) for name in names}
    worlds = [1] + list(world_sizes)
    out = {"settings": dict(settings, shard=shard), "world_sizes": worlds, "max_abs_diff": {}, "rank_spread": {}, "losses": {},
           "work_counts": {}, "work_seconds": {}}
    for name in names:
        for key in ("max_abs_diff", "rank_spread", "losses", "work_counts", "work_seconds"):
            out[key][name] = {}
        out["max_abs_diff"][name][1] = 0.0
        out["rank_spread"][name][1] = 0.0
        out["losses"][name][1] = single[name]["losses"]
        out["work_counts"][name][1] = [sum(single[name]["work"]["counts"].values())]
        out["work_seconds"][name][1] = [sum(single[name]["work"]["seconds"].values())]
    for world in world_sizes:
        ranks = launch(train_all_worker, world, list(names), settings["steps"], settings["widths"],
                       settings["batch"], shard, timeout_s=timeout_s,
                       backend="gloo" if quick or not torch.cuda.is_available() else None)
        for name in names:
            params = [r[name]["params"] for r in ranks]
            out["max_abs_diff"][name][world] = max(float(np.abs(p - single[name]["params"]).max()) for p in params)
            out["rank_spread"][name][world] = max(float(np.abs(p - params[0]).max()) for p in params)
            out["losses"][name][world] = ranks[0][name]["losses"]
            out["work_counts"][name][world] = [sum(r[name]["work"]["counts"].values()) for r in ranks]
            out["work_seconds"][name][world] = [sum(r[name]["work"]["seconds"].values()) for r in ranks]
    return out


def work_scaling_worker(names, steps: int, width: int, depth: int) -> dict:
    """One rank of :func:`work_scaling`: per optimizer, this rank's preconditioner CPU seconds and step times."""
    from gd_lib.distributed import init_from_env

    _, world, device = init_from_env()
    return {name: _scaling_run(name, steps, width, depth, dist.group.WORLD if world > 1 else None, device)
            for name in names}


def _scaling_run(name, steps, width, depth, process_group, device) -> dict:
    torch.manual_seed(0)
    model = MLP(width, [width] * depth, width, activation="tanh").to(device)
    X = torch.randn(8, width, device=device)
    Y = torch.randn(8, width, device=device)
    if name == "muon":
        optimizer = Muon(model.parameters(), lr=0.01, process_group=process_group)
    elif name == "shampoo":
        optimizer = Shampoo(model.parameters(), lr=1e-3, grafting="adam", epsilon=1e-8,
                            process_group=process_group)
    elif name == "soap":
        optimizer = SOAP(model.parameters(), lr=1e-3, precondition_frequency=1, process_group=process_group)
    else:
        optimizer = KFAC(model, lr=1e-3, damping=1e-2, cov_update_freq=1, inv_update_freq=1,
                         process_group=process_group)
    step_seconds = []
    for i in range(steps + 2):
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(X), Y).backward()
        if i == 2:  # the first two steps warm up (SOAP's first call only initialises)
            optimizer.work_log.reset()
        if process_group is not None:
            dist.barrier(process_group)
        start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            step_seconds.append(time.perf_counter() - start)
    return {"work_seconds": optimizer.work_log.total_seconds, "work_count": optimizer.work_log.total,
            "step_seconds": float(np.median(step_seconds))}


def work_scaling(quick: bool | None = None, names=OPTIMIZERS, world_sizes=(1, 2, 4), timeout_s: float = 600.0) -> dict:
    """Per-rank preconditioner time on 1, 2, 4 processes for a model whose preconditioner work dominates.

    The model is a square MLP (width 128 quick, 512 full; 3 hidden layers, so 4 weight matrices
    that divide evenly between 2 or 4 ranks) on a batch of 8,
    so the forward/backward pass is cheap and the step's matrix functions dominate. Every
    optimizer refreshes its preconditioner at every step. Returns, per optimizer and world
    size, ``work_seconds`` (per rank: CPU seconds in the expensive work, ``time.thread_time``,
    insensitive to other processes competing for the cores), ``work_counts`` and
    ``step_seconds`` (per rank: median wall time of one optimizer step, communication
    included), and ``ratio[name][w]`` = max over ranks of work_seconds / the 1-process value.
    """
    quick = gd_lib.quick_mode(quick)
    width, depth, steps = (128, 3, 5) if quick else (512, 3, 10)
    out = {"settings": dict(width=width, depth=depth, steps=steps), "world_sizes": list(world_sizes),
           "work_seconds": {n: {} for n in names}, "work_counts": {n: {} for n in names},
           "step_seconds": {n: {} for n in names}, "ratio": {n: {} for n in names}}
    backend = "gloo" if quick or not torch.cuda.is_available() else None
    for world in world_sizes:
        ranks = launch(work_scaling_worker, world, list(names), steps, width, depth, timeout_s=timeout_s,
                       backend=backend)
        for name in names:
            ranks_of = [r[name] for r in ranks]
            out["work_seconds"][name][world] = [r["work_seconds"] for r in ranks_of]
            out["work_counts"][name][world] = [r["work_count"] for r in ranks_of]
            out["step_seconds"][name][world] = [r["step_seconds"] for r in ranks_of]
    for name in names:
        base = max(out["work_seconds"][name][world_sizes[0]])
        for world in world_sizes:
            out["ratio"][name][world] = max(out["work_seconds"][name][world]) / base
    return out
