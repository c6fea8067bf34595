"""Lecture 12: the curvature-aware optimizers at scale, under ``torch.distributed``.

One small regression problem (an MLP fitted to a linear teacher, a new batch every step) is
trained by Muon, Shampoo, SOAP and KFAC on 1 process (no process group: the plain optimizers)
and on 2 and 4 processes with DDP (each rank a shard of every batch, gradients averaged by
DDP) and ``process_group=`` given to the optimizer, which then divides its expensive work
(Newton–Schulz, inverse roots, eigenbases, factor inversions) between the ranks. The
functions return the final parameters' distance to the 1-process run, the loss curves, and
what each rank computed (``optimizer.work_log``).

The problem is chosen so that it is *well conditioned in float32*: DDP's averaged gradient
equals the 1-process gradient only up to summation order (~1e-7 relative), and an optimizer
whose step depends on the eigenvectors of a statistic with nearly equal (or zero) eigenvalues
turns that rounding into a different trajectory, with one process as much as with four. So

- every weight is 4 times longer on one side than on the other (32 → 8 → 32 → 8 → 32), so the
  Gram matrix of the short side, ``G Gᵀ`` of an 8 × 32 gradient, has well-separated eigenvalues
  (the Marchenko–Pastur band of aspect 1/4) while the long side's is exactly rank-deficient;
  SOAP preconditions only the short side (``max_precond_dim=16``: the reference's option that
  leaves long modes on the identity basis), Shampoo handles the exact null space with the
  ``epsilon=1e-6`` of scalable Shampoo's ``matrix_epsilon`` (Anil et al. 2020);
- no biases (a bias's full-matrix statistic in Shampoo has rank t after t steps) and a
  squared loss (cross-entropy's gradient sums to zero over the classes, a null direction of
  the head's statistic on which Adam-in-the-eigenbasis normalises pure rounding noise);
- a new batch at every step (SOAP's first call only initialises its statistic; with one fixed
  batch the second step's rotated gradient is diagonal and its off-diagonal entries, pure
  rounding, get full Adam steps).

On a square 32 × 32 MLP with cross-entropy on one fixed batch the same comparison gives
|Δparam| up to 1e-1 (SOAP) and 7e-4 (Shampoo) in float32, and 1e-13 in float64 (Shampoo,
Muon, KFAC; SOAP's 1e-1 stays: a basis of degenerate eigenvalues is decided by rounding at
any precision). That is the optimizers' sensitivity to rounding, not the distribution:
with identical gradients on every rank (``shard=False``) the runs match bitwise.

Quick mode: CPU processes with gloo, the 32-8-32-8-32 MLP, batch 64, 20 steps. Full mode: the
same code on GPUs with nccl when there is one GPU per rank (else CPU processes with gloo), 4 times
wider, batch 512, 200 steps (:func:`gd_lib.step_budget`: ``GD_STEP_SCALE`` shortens them).

The module is also ``torchrun``'s entry point (:func:`main`): every rank trains the demo's model
with each optimizer under DDP, and rank 0 prints each rank's share of the expensive work and the
final loss (docs/distributed.md)::

    torchrun --standalone --nproc_per_node=2 -m gd_lib.experiments.distributed --device cpu
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import gd_lib
from gd_lib.distributed import init_from_env, launch
from gd_lib.models import MLP
from gd_lib.optim import EKFAC, KFAC, SOAP, Muon, Shampoo

__all__ = [
    "OPTIMIZERS",
    "WORK_KINDS",
    "make_optimizer",
    "train",
    "demo_worker",
    "run_demo",
    "work_scaling",
    "work_scaling_worker",
    "weight_shapes",
    "demo_settings",
    "rounding_sensitivity",
    "gpu_per_rank",
    "main",
]

OPTIMIZERS = ("muon", "shampoo", "soap", "kfac")

#: What each optimizer's expensive unit of work is (the WorkLog kinds it counts).
WORK_KINDS = {
    "muon": "Newton–Schulz per weight",
    "shampoo": "inverse root per statistic",
    "soap": "eigh / QR refresh per statistic",
    "kfac": "eigh per Kronecker factor",
    "ekfac": "eigh per Kronecker factor",
}


def make_optimizer(name: str, model: torch.nn.Module, process_group=None) -> torch.optim.Optimizer:
    """The lecture's settings: every optimizer refreshes its preconditioner several times in 20 steps.

    ``name`` is one of :data:`OPTIMIZERS` or ``"ekfac"`` (KFAC's settings; tested, not in the lecture).

    Shampoo: ``epsilon=1e-6`` (scalable Shampoo's default ``matrix_epsilon``) and no blocking;
    SOAP: ``max_precond_dim=16``, so only the short side (8, quick mode) of each weight is
    rotated. See the module docstring for why.
    """
    if name == "muon":
        # float32 Newton–Schulz: the lecture compares sharded and single-process runs at float32
        # rounding; bfloat16 (Muon's default since issue 17) would round their 1e-7 differences
        # to bfloat16 steps
        return Muon(model.parameters(), lr=0.02, adam_lr=3e-3, ns_dtype=torch.float32, process_group=process_group)
    if name == "shampoo":
        return Shampoo(
            model.parameters(),
            lr=3e-3,
            grafting="adam",
            betas=(0.9, 0.999),
            epsilon=1e-6,
            max_preconditioner_dim=1024,
            precondition_frequency=2,
            process_group=process_group,
        )
    if name == "soap":
        short_side = min(min(p.shape) for p in model.parameters() if p.ndim == 2)
        return SOAP(
            model.parameters(),
            lr=3e-3,
            precondition_frequency=4,
            max_precond_dim=2 * short_side,
            process_group=process_group,
        )
    if name == "kfac":
        return KFAC(model, lr=0.03, damping=1e-2, cov_update_freq=1, inv_update_freq=4, process_group=process_group)
    if name == "ekfac":
        # EKFAC adds λ to s whole, where KFAC's split damping adds at least λ + √λ (d_A + d_G) to
        # the product of the factors: 3λ gives it comparable damping (and a rounding
        # sensitivity on this problem of 2e-7 instead of 6e-7)
        return EKFAC(model, lr=0.03, damping=3e-2, cov_update_freq=1, inv_update_freq=4, process_group=process_group)
    raise ValueError(f"Invalid optimizer name: {name!r}; expected one of {OPTIMIZERS + ('ekfac',)}")


def demo_settings(quick: bool | None = None) -> dict:
    """The demo's problem and run length: ``steps``, ``widths``, ``features``, ``batch``.

    Quick: the 32-8-32-8-32 MLP, batch 64, 20 steps. Full: 4 times wider (128-32-128-32-128),
    batch 512, 200 steps through :func:`gd_lib.step_budget` (``GD_STEP_SCALE`` shortens the
    run, never the shapes; at least 4 steps, so that every optimizer refreshes its
    preconditioner at least once after its first step).
    """
    quick = gd_lib.quick_mode(quick)
    if quick:
        return dict(steps=20, widths=(8, 32, 8), features=32, batch=64)
    return dict(
        steps=gd_lib.step_budget(20, 200, quick=False, minimum=4), widths=(32, 128, 32), features=128, batch=512
    )


def weight_shapes(widths, features: int) -> list[tuple[int, int]]:
    """The MLP's weight shapes (out, in): ``features → widths... → features``."""
    sizes = [features, *widths, features]
    return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]


def _problem(widths, features: int, batch: int, steps: int, seed: int = 0):
    """The student MLP (tanh, no biases) and ``steps`` batches of a linear teacher's data."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(steps, batch, features, generator=generator)
    teacher = torch.randn(features, features, generator=generator) / features**0.5
    Y = torch.tanh(X @ teacher)
    torch.manual_seed(seed + 1)  # torch's default init draws from the global generator
    model = MLP(features, list(widths), features, activation="tanh", bias=False)
    return model, X, Y


def train(
    name: str,
    *,
    steps: int = 20,
    widths=(8, 32, 8),
    features: int = 32,
    batch: int = 64,
    seed: int = 0,
    process_group=None,
    shard: bool = True,
    device: torch.device | str | None = None,
    grad_noise: float = 0.0,
) -> dict:
    """Train the problem with optimizer ``name``; with ``process_group``, as one DDP rank.

    Step t uses batch t. With a process group and ``shard=True`` this rank takes its
    contiguous slice of every batch and DDP averages the gradients (the batch must divide by
    the world size); ``shard=False`` gives every rank the whole batch (identical gradients,
    no DDP). ``grad_noise=u`` multiplies every gradient entry by ``1 + u ξ`` (ξ standard normal,
    seeded) before the step: with u = 2⁻²⁴, float32's unit roundoff, a perturbation the size of
    DDP's different summation order, in one process. Returns ``params`` (all parameters, flat
    float64 array), ``losses`` (the loss on
    the step's whole batch before each step), ``work`` (the optimizer's
    ``work_log.as_dict()``) and ``step_seconds``.
    """
    device = torch.device(device) if device is not None else gd_lib.device()
    model, X, Y = _problem(widths, features, batch, steps, seed=seed)
    model, X, Y = model.to(device), X.to(device), Y.to(device)
    net, world, rank = model, 1, 0
    if process_group is not None:
        world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        if shard:
            if batch % world:
                raise ValueError(f"Invalid batch: {batch}; expected a multiple of the world size {world}")
            net = DistributedDataParallel(
                model, process_group=process_group, device_ids=[device.index] if device.type == "cuda" else None
            )
    sharded = process_group is not None and shard
    optimizer = make_optimizer(name, model, process_group)
    noise = torch.Generator().manual_seed(seed + 2)
    losses, step_seconds = [], []
    for x, y in zip(X, Y):
        with torch.no_grad():
            losses.append(float(F.mse_loss(model(x), y)))
        if sharded:
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(net(x), y).backward()
        if grad_noise:
            for p in model.parameters():
                p.grad.mul_(1.0 + grad_noise * torch.randn(p.shape, generator=noise).to(p.grad))
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    params = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()]).numpy()
    return {
        "params": params,
        "losses": np.array(losses),
        "work": optimizer.work_log.as_dict(),
        "step_seconds": np.array(step_seconds),
    }


def gpu_per_rank(quick: bool, world_sizes) -> bool:
    """Whether the runs use GPUs (nccl, one per rank): full mode and at least ``max(world_sizes)`` GPUs.

    Otherwise every run, the 1-process one included, uses CPU processes with gloo, so that
    the 1-process and the multi-process runs are compared on the same kind of device.
    """
    return (
        not quick
        and torch.cuda.is_available()
        and dist.is_nccl_available()
        and torch.cuda.device_count() >= max(world_sizes, default=1)
    )


def demo_worker(names, world_sizes, settings: dict, shard: bool = True) -> dict:
    """One rank of :func:`run_demo`'s single launch: for each ``w`` in ``world_sizes``, ranks ``0..w-1``
    form a group of ``w`` (the whole world for the largest) and train every optimizer in it.

    Returns ``{w: {name: train(...)}}`` for the world sizes this rank took part in. One launch
    serves every world size, so the processes start (and import torch) once.
    """
    from gd_lib.distributed import init_from_env

    rank, world, device = init_from_env()
    out = {}
    for w in world_sizes:
        # every rank takes part in creating a group, members or not
        group = dist.group.WORLD if w == world else dist.new_group(list(range(w)))
        if rank < w:
            out[w] = {name: train(name, **settings, process_group=group, shard=shard, device=device) for name in names}
    return out


def run_demo(
    quick: bool | None = None, world_sizes=(2, 4), names=OPTIMIZERS, shard: bool = True, timeout_s: float = 600.0
) -> dict:
    """The same model trained on 1 process and on each of ``world_sizes`` processes, per optimizer.

    One :func:`gd_lib.distributed.launch` of ``max(world_sizes)`` processes runs every world
    size (:func:`demo_worker`: the first ``w`` ranks form a group of ``w``).
    ``shard=True``: DDP, each rank a slice of every batch, so the averaged gradient equals
    the 1-process gradient up to floating-point summation order. ``shard=False``: every rank
    computes the whole batch's gradient (no DDP), so the gradients are the 1-process ones
    exactly and any difference would come from dividing the optimizer's work.

    Returns ``settings``, ``world_sizes`` (with 1 first), and per optimizer name:
    ``max_abs_diff[name][w]`` (largest |parameter − 1-process parameter| after training, the
    worst rank), ``rank_spread[name][w]`` (largest difference between two ranks' parameters),
    ``losses[name][w]`` (rank 0's loss curve), ``work_counts[name][w]`` (units of expensive
    work computed, one number per rank) and ``work_seconds[name][w]`` (their CPU seconds per
    rank).
    """
    quick = gd_lib.quick_mode(quick)
    settings = demo_settings(quick)
    gpus = gpu_per_rank(quick, world_sizes)
    single = {name: train(name, **settings, device=None if gpus else "cpu") for name in names}
    worlds = [1] + list(world_sizes)
    out = {
        "settings": dict(settings, shard=shard, backend="nccl" if gpus else "gloo"),
        "world_sizes": worlds,
        "max_abs_diff": {},
        "rank_spread": {},
        "losses": {},
        "work_counts": {},
        "work_seconds": {},
    }
    for name in names:
        for key in ("max_abs_diff", "rank_spread", "losses", "work_counts", "work_seconds"):
            out[key][name] = {}
        out["max_abs_diff"][name][1] = 0.0
        out["rank_spread"][name][1] = 0.0
        out["losses"][name][1] = single[name]["losses"]
        out["work_counts"][name][1] = [sum(single[name]["work"]["counts"].values())]
        out["work_seconds"][name][1] = [sum(single[name]["work"]["seconds"].values())]
    if not world_sizes:
        return out
    largest = max(world_sizes)
    ranks = launch(
        demo_worker,
        largest,
        list(names),
        list(world_sizes),
        settings,
        shard,
        timeout_s=timeout_s,
        backend="nccl" if gpus else "gloo",
    )
    for world in world_sizes:
        members = [r[world] for r in ranks[:world]]
        for name in names:
            params = [m[name]["params"] for m in members]
            out["max_abs_diff"][name][world] = max(float(np.abs(p - single[name]["params"]).max()) for p in params)
            out["rank_spread"][name][world] = max(float(np.abs(p - params[0]).max()) for p in params)
            out["losses"][name][world] = members[0][name]["losses"]
            out["work_counts"][name][world] = [sum(m[name]["work"]["counts"].values()) for m in members]
            out["work_seconds"][name][world] = [sum(m[name]["work"]["seconds"].values()) for m in members]
    return out


def rounding_sensitivity(quick: bool | None = None, names=OPTIMIZERS, widths_of=None) -> dict:
    """How far a rounding-sized perturbation of the gradients moves each optimizer's trajectory, in one process.

    For each problem in ``widths_of`` (default: ``"lecture"``, the demo's MLP, and ``"square"``,
    the same data with square 32 × 32 weights, 4 times wider in full mode) and each optimizer:
    ``max_abs_diff[problem][name]``, the largest |parameter difference| after training between
    the plain run and one whose every gradient entry was multiplied by 1 + 2⁻²⁴ ξ. DDP's
    gradient differs from the 1-process gradient by about that much, so this is what the
    distributed runs' distance to the 1-process run should be, without any process group.
    """
    settings = demo_settings(quick)
    if widths_of is None:
        wide = settings["features"]
        widths_of = {"lecture": settings["widths"], "square": (wide, wide, wide)}
    device = "cpu" if gd_lib.quick_mode(quick) else None
    out = {"settings": settings, "widths": dict(widths_of), "max_abs_diff": {}}
    for problem, widths in widths_of.items():
        run = dict(settings, widths=widths, device=device)
        out["max_abs_diff"][problem] = {
            name: float(np.abs(train(name, **run)["params"] - train(name, **run, grad_noise=2.0**-24)["params"]).max())
            for name in names
        }
    return out


def work_scaling_worker(names, steps: int, width: int, depth: int) -> dict:
    """One rank of :func:`work_scaling`: per optimizer, this rank's preconditioner CPU seconds and step times."""
    from gd_lib.distributed import init_from_env

    _, world, device = init_from_env()
    return {
        name: _scaling_run(name, steps, width, depth, dist.group.WORLD if world > 1 else None, device) for name in names
    }


def _scaling_run(name, steps, width, depth, process_group, device) -> dict:
    torch.manual_seed(0)
    model = MLP(width, [width] * depth, width, activation="tanh").to(device)
    X = torch.randn(8, width, device=device)
    Y = torch.randn(8, width, device=device)
    if name == "muon":
        optimizer = Muon(model.parameters(), lr=0.01, ns_dtype=torch.float32, process_group=process_group)
    elif name == "shampoo":
        optimizer = Shampoo(model.parameters(), lr=1e-3, grafting="adam", epsilon=1e-8, process_group=process_group)
    elif name == "soap":
        optimizer = SOAP(model.parameters(), lr=1e-3, precondition_frequency=1, process_group=process_group)
    else:
        optimizer = KFAC(
            model, lr=1e-3, damping=1e-2, cov_update_freq=1, inv_update_freq=1, process_group=process_group
        )
    step_seconds, work_seconds = [], []
    for i in range(steps + 2):
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(X), Y).backward()
        if i == 2:  # the first two steps warm up (SOAP's first call only initialises)
            optimizer.work_log.reset()
        if process_group is not None:
            dist.barrier(process_group)
        start, work_before = time.perf_counter(), optimizer.work_log.total_seconds
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            step_seconds.append(time.perf_counter() - start)
            work_seconds.append(optimizer.work_log.total_seconds - work_before)
    return {
        "work_seconds": float(np.min(work_seconds)),
        "work_count": optimizer.work_log.total,
        "step_seconds": float(np.median(step_seconds)),
    }


def work_scaling(quick: bool | None = None, names=OPTIMIZERS, world_sizes=(1, 2, 4), timeout_s: float = 600.0) -> dict:
    """Per-rank preconditioner time on 1, 2, 4 processes for a model whose preconditioner work dominates.

    The model is a square MLP (width 128 quick, 512 full; 3 hidden layers, so 4 weight matrices
    that divide evenly between 2 or 4 ranks) on a batch of 8,
    so the forward/backward pass is cheap and the step's matrix functions dominate. Every
    optimizer refreshes its preconditioner at every step. Returns, per optimizer and world
    size, ``work_seconds`` (per rank: CPU seconds in the expensive work per step, the fastest of
    the steps, which compute the same units every time; ``time.thread_time`` does not count the
    time a rank waits for a core, and the minimum, as in ``timeit``, drops the steps that a busy
    machine slowed down anyway, e.g. by evicting caches),
    ``work_counts`` (per rank, all steps), ``step_seconds`` (per rank: median wall time of one
    optimizer step, communication included), and ``ratio[name][w]`` = max over ranks of
    work_seconds / the 1-process value.
    """
    quick = gd_lib.quick_mode(quick)
    width, depth = (128, 3) if quick else (512, 3)
    steps = gd_lib.step_budget(5, 10, quick)
    gpus = gpu_per_rank(quick, world_sizes)
    out = {
        "settings": dict(width=width, depth=depth, steps=steps, backend="nccl" if gpus else "gloo"),
        "world_sizes": list(world_sizes),
        "work_seconds": {n: {} for n in names},
        "work_counts": {n: {} for n in names},
        "step_seconds": {n: {} for n in names},
        "ratio": {n: {} for n in names},
    }
    for world in world_sizes:
        ranks = launch(
            work_scaling_worker,
            world,
            list(names),
            steps,
            width,
            depth,
            timeout_s=timeout_s,
            backend="nccl" if gpus else "gloo",
        )
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


def main(argv=None) -> None:
    """``torchrun``'s entry point: this rank's part of the demo, for every optimizer (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m gd_lib.experiments.distributed",
        description="Every rank trains the lecture's model with Muon, Shampoo, SOAP and KFAC under DDP, each "
        "optimizer given the default process group; rank 0 prints each rank's share of the "
        "expensive work and the loss. See docs/distributed.md.",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu"],
        default="auto",
        help="cpu: CPU processes with gloo even where there are GPUs",
    )
    parser.add_argument("--quick", action="store_true", help="the small quick-mode model")
    args = parser.parse_args(argv)
    rank, world, device = init_from_env("gloo" if args.device == "cpu" else None)
    settings = demo_settings(args.quick or device.type == "cpu")
    for name in OPTIMIZERS:
        result = train(name, **settings, process_group=dist.group.WORLD, device=device)
        counts = [None] * world
        dist.all_gather_object(counts, sum(result["work"]["counts"].values()))
        if rank == 0:
            print(
                f"{name:8s} {world} ranks, work per rank {counts}, loss {result['losses'][0]:.4f} -> "
                f"{result['losses'][-1]:.4f}",
                flush=True,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
