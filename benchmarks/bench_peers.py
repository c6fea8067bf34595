"""Step time of gd_lib's Muon, KFAC, Shampoo and SOAP against their peers, side by side.

``python -m benchmarks peers [--quick]`` (``PEERS=muon,kfac`` for a subset). Peers (the dev
extra installs them; a peer that cannot be imported is reported as missing, never silently
dropped):

- Muon: ``torch.optim.Muon``, KellerJordan/Muon (the ``muon-optimizer`` package, its
  ``SingleDeviceMuonWithAuxAdam``), pytorch_optimizer's ``Muon``; the optimizer step alone
  on a set of hidden weight matrices with fixed gradients. All three run Newton–Schulz in
  bfloat16; gd_lib is timed with ``ns_dtype=torch.bfloat16`` (the same work) and, on a CPU
  without native bfloat16 products, also with its default there (float32).
- Shampoo: pytorch_optimizer's ``Shampoo`` (SVD roots) against gd_lib with eigh roots, and
  its ``ScalableShampoo`` (coupled Schur–Newton roots, SGD grafting, blocks of 512) against
  gd_lib with ``root_method="newton"`` and the same blocking and grafting; roots every 10
  steps, the step alone.
- SOAP: pytorch_optimizer's and heavyball's ``SOAP`` with the reference defaults, basis
  refresh every 10 steps, the step alone. heavyball is run eagerly (``compile_mode=None``):
  its ``torch.compile`` autotuning takes minutes on this CPU.
- KFAC: ASDL's (``asdfghjkl``) ``KfacGradientMaker`` with an exponential average of the
  factors (``ema_decay``, as gd_lib's ``stat_decay``), curvature every step and inverses
  every 10, empirical Fisher, plus ``torch.optim.SGD`` with momentum; against gd_lib's
  KFAC with the same settings (eigh, its default; the Cholesky path too). The whole
  training step (forward, backward, step), since both gather statistics in hooks.

Method: each side gets its own copy of the same parameters and gradients (the same model
and batch for KFAC). The two sides alternate in one run, block by block, and the order
within a round alternates too; a block is 10 steps (one refresh). The figure per side is
the median over rounds of the per-step time of a block; the spread is the interquartile
range of the per-round ratios gd_lib / peer. One thread and two threads (``torch.set_num_threads``).
Target (issue 17): gd_lib / peer ≤ 1.05 for Muon (every peer), KFAC (ASDL), Shampoo and
SOAP (the best peer).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import gd_lib
import gd_lib.optim as gd
from benchmarks.common import header, synchronize, table
from gd_lib.linalg import fast_bfloat16_matmul

SEED = 0
BLOCK = 10  # steps per timed block: one preconditioner refresh each


def _optional(module: str):
    """The peer package, or None if it is not installed (reported in the table)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# --- problems -----------------------------------------------------------------------------


def matrices_with_grads(shapes, seed: int = SEED, device="cpu") -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter((torch.randn(*s, generator=g) / s[-1] ** 0.5).to(device)) for s in shapes]
    grads = [(torch.randn(*s, generator=g) * 1e-2).to(device) for s in shapes]
    return params, grads


def step_alone(opt: torch.optim.Optimizer, params, grads) -> Callable[[], None]:
    """One optimizer step with the gradients put back first (some peers clear ``p.grad``)."""

    def run():
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()

    return run


def mlp(widths, seed: int = SEED) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# --- the sides of each comparison ---------------------------------------------------------


def muon_sides(quick: bool) -> tuple[dict, dict]:
    # small on a CPU without native bfloat16, where the peers' emulated bfloat16 products are
    # ~55x slower than float32 (gd_lib.linalg.fast_bfloat16_matmul)
    native = fast_bfloat16_matmul(gd_lib.device())
    if native:
        shapes = [(256, 256), (256, 1024), (1024, 256)] if quick else [(1024, 1024), (1024, 4096), (4096, 1024)]
    else:
        shapes = [(64, 64), (64, 256), (256, 64)] if quick else [(128, 128), (128, 512), (512, 128)]
    device = gd_lib.device()

    def side(make):
        params, grads = matrices_with_grads(shapes, device=device)
        return step_alone(make(params), params, grads)

    ours = {
        "gd_lib Muon (bfloat16)": lambda: side(
            lambda ps: gd.Muon([{"params": ps, "use_muon": True}], lr=0.02, ns_dtype=torch.bfloat16)
        )
    }
    if not native:  # the default differs from the references here: float32
        ours["gd_lib Muon (default: float32 here)"] = lambda: side(
            lambda ps: gd.Muon([{"params": ps, "use_muon": True}], lr=0.02)
        )
    peers = {"torch.optim.Muon": lambda: side(lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0))}
    keller = _optional("muon")
    peers["KellerJordan Muon"] = (
        None
        if keller is None
        else (
            lambda: side(lambda ps: keller.SingleDeviceMuonWithAuxAdam([{"params": ps, "use_muon": True, "lr": 0.02}]))
        )
    )
    po = _optional("pytorch_optimizer")
    peers["pytorch_optimizer Muon"] = (
        None if po is None else (lambda: side(lambda ps: po.Muon([{"params": ps, "use_muon": True}], lr=0.02)))
    )
    return ours, peers


def shampoo_sides(quick: bool) -> list[tuple[dict, dict]]:
    shapes = [(256, 256), (256, 512)] if quick else [(512, 512), (512, 1024), (1024, 512)]
    po = _optional("pytorch_optimizer")

    def side(make):
        params, grads = matrices_with_grads(shapes)
        return step_alone(make(params), params, grads)

    # classic Shampoo: statistics summed (β2 = 1), no grafting or momentum, roots every 10 steps
    eigh = {
        "gd_lib Shampoo (eigh)": lambda: side(
            lambda ps: gd.Shampoo(
                ps,
                lr=1e-3,
                betas=(0.0, 1.0),
                epsilon=1e-6,
                grafting="none",
                precondition_frequency=BLOCK,
                use_bias_correction=False,
            )
        )
    }
    svd = {
        "pytorch_optimizer Shampoo (svd)": None
        if po is None
        else lambda: side(lambda ps: po.Shampoo(ps, lr=1e-3, preconditioning_compute_steps=BLOCK, matrix_eps=1e-6))
    }
    # scalable Shampoo: β2 0.999 without bias correction (pytorch_optimizer has none), SGD
    # grafting, blocks of 512, Newton roots every 10 steps
    newton = {
        "gd_lib Shampoo (newton)": lambda: side(
            lambda ps: gd.Shampoo(
                ps,
                lr=1e-3,
                betas=(0.9, 0.999),
                epsilon=1e-6,
                grafting="sgd",
                max_preconditioner_dim=512,
                precondition_frequency=BLOCK,
                root_method="newton",
                use_bias_correction=False,
            )
        )
    }
    scalable = {
        "pytorch_optimizer ScalableShampoo (newton)": None
        if po is None
        else lambda: side(
            lambda ps: po.ScalableShampoo(
                ps,
                lr=1e-3,
                betas=(0.9, 0.999),
                block_size=512,
                start_preconditioning_step=BLOCK,
                preconditioning_compute_steps=BLOCK,
                matrix_eps=1e-6,
            )
        )
    }
    return [(eigh, svd), (newton, scalable)]


def soap_sides(quick: bool) -> tuple[dict, dict]:
    shapes = [(256, 256), (256, 512)] if quick else [(512, 512), (512, 1024), (1024, 512)]

    def side(make):
        params, grads = matrices_with_grads(shapes)
        return step_alone(make(params), params, grads)

    ours = {"gd_lib SOAP": lambda: side(lambda ps: gd.SOAP(ps, lr=3e-3, precondition_frequency=BLOCK))}
    po = _optional("pytorch_optimizer")
    hb = _optional("heavyball")
    peers = {
        "pytorch_optimizer SOAP": None
        if po is None
        else lambda: side(lambda ps: po.SOAP(ps, lr=3e-3, precondition_frequency=BLOCK))
    }

    def heavyball_soap(ps):
        hb.utils.compile_mode = None  # eager: autotuned compilation takes minutes on this CPU
        return hb.SOAP(
            ps,
            lr=3e-3,
            betas=(0.95, 0.95),
            shampoo_beta=0.95,
            precondition_frequency=BLOCK,
            max_precond_dim=10000,
            merge_dims=False,
            use_precond_schedule=False,
            compile_step=False,
        )

    peers["heavyball SOAP (eager)"] = None if hb is None else lambda: side(heavyball_soap)
    return ours, peers


def kfac_sides(quick: bool) -> tuple[dict, dict]:
    widths = [256, 512, 512, 10] if quick else [512, 1024, 1024, 10]
    batch = 128 if quick else 256
    g = torch.Generator().manual_seed(SEED + 1)
    X = torch.randn(batch, widths[0], generator=g)
    y = torch.randint(0, widths[-1], (batch,), generator=g)
    settings = dict(damping=1e-3, stat_decay=0.95)

    def gd_side(inverse_method):
        model = mlp(widths)
        opt = gd.KFAC(
            model,
            lr=0.01,
            momentum=0.9,
            cov_update_freq=1,
            inv_update_freq=BLOCK,
            inverse_method=inverse_method,
            fisher="empirical",
            **settings,
        )

        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X), y).backward()
            opt.step()

        return run

    ours = {"gd_lib KFAC (eigh)": lambda: gd_side("eigh"), "gd_lib KFAC (cholesky)": lambda: gd_side("cholesky")}
    asdl = _optional("asdl")
    if asdl is not None and not torch.cuda.is_available():
        # ASDL marks its preconditioner update with torch.cuda.nvtx ranges, which a CPU build of
        # torch cannot push (RuntimeError); on the CPU they are replaced by a no-op range
        natural_gradient = importlib.import_module("asdl.precondition.natural_gradient")
        natural_gradient.nvtx = _NoNvtx()

    def asdl_side():
        model = mlp(widths)
        config = asdl.PreconditioningConfig(
            data_size=batch,
            damping=settings["damping"],
            ema_decay=settings["stat_decay"],
            curvature_upd_interval=1,
            preconditioner_upd_interval=BLOCK,
        )
        maker = asdl.KfacGradientMaker(model, config, fisher_type=asdl.FISHER_EMP)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def run():
            opt.zero_grad(set_to_none=True)
            dummy = maker.setup_model_call(model, X)
            maker.setup_loss_call(F.cross_entropy, dummy, y)
            maker.forward_and_backward()
            opt.step()

        return run

    peers = {"ASDL KFAC (cholesky)": None if asdl is None else asdl_side}
    return ours, peers


class _NoNvtx:
    """Stands in for ``torch.cuda.nvtx`` in ASDL on a CPU build: ``range`` does nothing."""

    @staticmethod
    def range(*args, **kwargs):
        return contextlib.nullcontext()


# --- timing -------------------------------------------------------------------------------


def alternate(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Per-step seconds of each run's blocks, the runs taking turns (order flipped every round)."""
    for run in runs.values():  # warm-up: state, first refresh, allocator
        for _ in range(BLOCK + 2):
            run()
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize()
            t0 = time.perf_counter()
            for _ in range(BLOCK):
                runs[name]()
            synchronize()
            times[name].append((time.perf_counter() - t0) / BLOCK)
    return times


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def compare(title: str, ours: dict, peers: dict, rounds: int, rows: list[dict], threads: int) -> None:
    """Time every gd_lib side against every available peer; one table row per pair."""
    available = {name: make for name, make in peers.items() if make is not None}
    for name in peers:
        if peers[name] is None:
            rows.append(
                {"comparison": title, "threads": threads, "gd_lib": "-", "peer": name, "ratio": "peer not installed"}
            )
    if not available:
        return
    runs = {name: make() for name, make in {**ours, **available}.items()}
    times = alternate(runs, rounds)
    for our_name in ours:
        for peer_name in available:
            per_round = [a / b for a, b in zip(times[our_name], times[peer_name])]
            low, high = quartiles(per_round)
            ours_ms, peer_ms = 1e3 * statistics.median(times[our_name]), 1e3 * statistics.median(times[peer_name])
            rows.append(
                {
                    "comparison": title,
                    "threads": threads,
                    "gd_lib": our_name,
                    "gd_lib ms": f"{ours_ms:.2f}",
                    "peer": peer_name,
                    "peer ms": f"{peer_ms:.2f}",
                    "ratio": f"{ours_ms / peer_ms:.3f}",
                    "ratio IQR": f"{low:.3f}-{high:.3f}",
                }
            )


@contextlib.contextmanager
def num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


COLUMNS = ["comparison", "threads", "gd_lib", "gd_lib ms", "peer", "peer ms", "ratio", "ratio IQR"]
COMPARISONS = ("muon", "shampoo", "soap", "kfac")


def main(args) -> None:
    quick = bool(getattr(args, "quick", False))
    rounds = 5 if quick else 9
    thread_counts = [t for t in (1, 2) if t <= (os.cpu_count() or 1)]
    # PEERS=muon,kfac (environment) runs a subset
    chosen = [c.strip() for c in os.environ.get("PEERS", ",".join(COMPARISONS)).split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(COMPARISONS))
    if unknown:
        raise SystemExit(f"PEERS: unknown comparisons {unknown}; choose from {COMPARISONS}")
    print(
        header(
            "gd_lib against its peers: step time (issue 17)",
            seed=SEED,
            block=BLOCK,
            rounds=rounds,
            threads=thread_counts,
            comparisons=chosen,
            quick=quick,
            load=f"{os.getloadavg()[0]:.1f}",
        ),
        flush=True,
    )
    rows: list[dict] = []
    for threads in thread_counts:
        with num_threads(threads):
            for name in chosen:
                done = len(rows)
                if name == "muon":
                    compare("Muon", *muon_sides(quick), rounds, rows, threads)
                elif name == "shampoo":
                    for ours, peers in shampoo_sides(quick):
                        compare("Shampoo", ours, peers, rounds, rows, threads)
                elif name == "soap":
                    compare("SOAP", *soap_sides(quick), rounds, rows, threads)
                else:
                    compare("KFAC", *kfac_sides(quick), rounds, rows, threads)
                for row in rows[done:]:  # progress: each row as soon as it is measured
                    print("  " + ", ".join(f"{k}={row[k]}" for k in COLUMNS if k in row), flush=True)
    print(table(rows, COLUMNS))
    print(
        "ratio = median gd_lib step / median peer step, same run, sides alternating block by block; "
        "IQR over the per-round ratios. < 1: gd_lib is faster. Target <= 1.05. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args())
