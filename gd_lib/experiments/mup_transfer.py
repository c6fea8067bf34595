r"""Lecture 4: μP and hyperparameter transfer.

The model is the course MLP ``16 → n → n → 10`` (ReLU, torch's default
init) at widths ``n``, trained with Adam on one fixed batch of Gaussian
inputs with random labels (a memorisation task: nothing to generalise, so the
training loss after a few steps measures the optimiser alone). The base width
of μP is ``n_0 = 64``.

Three experiments, each a thin driver around :mod:`gd_lib.mup`:

- :func:`base_width_equals_sp`: at ``n = n_0`` every μP multiplier is 1, so
  μP and the standard parametrization (SP) give the same weights after
  training, bit for bit; at ``2 n_0`` they part.
- :func:`coordinate_check`: the size of every layer's output ``h_t`` and of
  its change ``h_t − h_0`` after ``t`` Adam steps, against width (Yang et al.
  2022, §5). Under μP both are flat in ``n``; under SP Adam's update of a
  matrix with fan-in ``n`` moves its output by ``Θ(n)``, so the hidden and
  output layers' changes grow like the width.
- :func:`lr_transfer`: the training loss after a fixed number of Adam steps
  over a grid of learning rates (factor 2 apart) at several widths
  (μTransfer, Yang et al. 2022, Figure 1). Under μP the best learning rate
  stays put; under SP it drifts down as ``1/n``.

Quick mode uses widths 64, 256 and 1024 (the claims are stated for that
range); full mode goes to 4096 with more seeds.

References:
    G. Yang, E. J. Hu et al. "Tensor Programs V: Tuning Large Neural Networks via
    Zero-Shot Hyperparameter Transfer", 2022 (arXiv:2203.03466), Figure 1, §5, Table 3.
"""

from __future__ import annotations

import numpy as np
import torch

import gd_lib
from gd_lib import mup
from gd_lib.models import MLP

__all__ = [
    "BASE_WIDTH",
    "IN_FEATURES",
    "NUM_CLASSES",
    "make_mlp",
    "random_labels",
    "multiplier_table",
    "base_width_equals_sp",
    "coordinate_check",
    "lr_transfer",
]

BASE_WIDTH = 64
IN_FEATURES = 16
NUM_CLASSES = 10
LAYERS = ["layers.0", "layers.1", "layers.2"]  # input, hidden, output layer (their outputs)


def make_mlp(width: int) -> MLP:
    """The lecture's model: ``16 → width → width → 10``, ReLU, torch's default init."""
    return MLP(IN_FEATURES, [width, width], NUM_CLASSES)


def random_labels(n: int, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Gaussian inputs ``x ∈ R^16`` with uniformly random labels in ``0..9``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN_FEATURES, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _shapes(width: int) -> dict:
    with torch.random.fork_rng(devices=[]):
        return {name: tuple(p.shape) for name, p in make_mlp(width).named_parameters()}


def multiplier_table(width: int = 1024, optimizer: str = "adam") -> list[dict]:
    """One row per parameter of the width-``width`` MLP: its μP role and its init and
    learning-rate multipliers against the base width 64 (:func:`gd_lib.mup.mup_table`).

    ``init_mult`` multiplies the *standard deviation* of torch's (SP) initialization of that
    tensor (the variance is multiplied by its square); ``lr_mult`` multiplies Adam's learning
    rate."""
    model = make_mlp(width)
    return mup.mup_table(model, _shapes(BASE_WIDTH), optimizer, delta_model=_shapes(2 * BASE_WIDTH))


def _train_adam(model, groups, x, y, steps: int) -> None:
    opt = torch.optim.Adam(groups)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def base_width_equals_sp(quick: bool | None = None, *, lr: float = 1e-2, steps: int = 5) -> dict:
    """Train SP and μP copies (same seed) with Adam at the base width and at twice it.

    Returns ``{"widths": [64, 128], "max_abs_diff": [d_64, d_128], "lr_groups": [...],
    "steps": steps}`` where ``d_n`` is the largest difference between any weight of the
    SP and the μP model after ``steps`` steps, and ``lr_groups[i]`` the μP group
    learning rates at that width (one group, equal to ``lr``, at the base width).
    """
    quick = gd_lib.quick_mode(quick)
    x, y = random_labels(64)
    base, delta = _shapes(BASE_WIDTH), _shapes(2 * BASE_WIDTH)
    widths, diffs, lr_groups = [BASE_WIDTH, 2 * BASE_WIDTH], [], []
    for width in widths:
        torch.manual_seed(0)
        sp = make_mlp(width)
        sp_groups = mup.mup_param_groups(sp, base, "adam", lr, parametrization="sp")
        torch.manual_seed(0)
        mu = make_mlp(width)
        mup.set_base_shapes(mu, base, delta)
        mu_groups = mup.mup_param_groups(mu, base, "adam", lr, delta_model=delta)
        lr_groups.append(sorted({g["lr"] for g in mu_groups}, reverse=True))
        _train_adam(sp, sp_groups, x, y, steps)
        _train_adam(mu, mu_groups, x, y, steps)
        diffs.append(max((p - q).abs().max().item() for p, q in zip(sp.parameters(), mu.parameters())))
    return {"widths": widths, "max_abs_diff": diffs, "lr_groups": lr_groups, "steps": steps, "quick": quick}


def coordinate_check(quick: bool | None = None, *, lr: float = 1e-2, steps: int | None = None) -> dict:
    """The coordinate check (:func:`gd_lib.mup.coord_check`) under SP and μP with Adam.

    Returns ``{"sp": result, "mup": result, "growth": {p: {"activation": [l, t],
    "update": [l, t]}}, "widths", "layers", "steps"}``: each ``result`` is
    :func:`~gd_lib.mup.coord_check`'s dict (``update_l1[w, l, t]`` = mean ``|h_t − h_0|``
    of layer ``l``'s output), and ``growth`` the ratio of the widest to the narrowest
    width (:func:`~gd_lib.mup.growth_ratio`), for ``t = 1..steps`` (``update``) and
    ``t = 0..steps`` (``activation``). Layers: input, hidden, output.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(5, 5, quick)
    widths = [64, 256, 1024] if quick else [64, 128, 256, 512, 1024, 2048, 4096]
    seeds = (0, 1) if quick else (0, 1, 2, 3) if gd_lib.step_scale() == 1.0 else (0,)  # one seed when cut short
    x, y = random_labels(64)
    out: dict = {"widths": np.array(widths), "layers": list(LAYERS), "steps": steps, "growth": {}}
    for parametrization in ("sp", "mup"):
        result = mup.coord_check(
            make_mlp,
            widths,
            x,
            y,
            base_width=BASE_WIDTH,
            parametrization=parametrization,
            family="adam",
            lr=lr,
            steps=steps,
            seeds=seeds,
            module_names=LAYERS,
        )
        out[parametrization] = result
        out["growth"][parametrization] = {
            "activation": mup.growth_ratio(result, "activation_l1"),
            "update": mup.growth_ratio(result, "update_l1")[:, 1:],
        }
    return out


def lr_transfer(quick: bool | None = None, *, steps: int | None = None) -> dict:
    """Learning-rate sweeps of Adam at several widths, under SP and μP (:func:`gd_lib.mup.lr_sweep`).

    Full-batch Adam on 128 random-label examples for ``steps`` steps; learning
    rates ``2^k`` (quick: ``k = -10..-2``). Returns ``{"sp": result, "mup": result,
    "lrs", "widths", "grid_steps_moved": {p: max − min of the best lr's grid index}}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(10, 10, quick)
    widths = [64, 256, 1024] if quick else [64, 128, 256, 512, 1024, 2048, 4096]
    exponents = range(-10, -1) if quick else range(-13, -1)
    lrs = [2.0**k for k in exponents]
    seeds = (0,) if quick else (0, 1, 2) if gd_lib.step_scale() == 1.0 else (0,)  # one seed when cut short
    x, y = random_labels(128)
    out: dict = {"lrs": np.array(lrs), "widths": np.array(widths), "steps": steps, "grid_steps_moved": {}}
    for parametrization in ("sp", "mup"):
        result = mup.lr_sweep(
            make_mlp,
            widths,
            lrs,
            x,
            y,
            base_width=BASE_WIDTH,
            parametrization=parametrization,
            family="adam",
            steps=steps,
            seeds=seeds,
        )
        out[parametrization] = result
        out["grid_steps_moved"][parametrization] = int(np.ptp(result["best_index"]))
    return out
