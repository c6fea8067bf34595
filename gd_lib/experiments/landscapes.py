r"""Loss landscapes: lines, planes, skip connections, sharp and flat minima, noise, and scale.

Lecture 10. Everything is measured on small networks trained on the digits
(:func:`gd_lib.data.load_digits`), with :mod:`gd_lib.landscape` for the slices.

- :func:`line_from_init`: ``ℓ(α) = L((1−α)θ_0 + αθ_1)`` from the initial to the
  trained weights (Goodfellow et al. 2015): a smooth, mostly monotone descent.
- :func:`random_direction_cosines`: two Gaussian directions in dimension ``d``
  have cosine similarity ``≈ N(0, 1/d)``: in a network's weight space two random
  directions are orthogonal to within a few ``1/√d``, so they span a real plane.
- :func:`plane_around_minimum`: ``ℓ(α, β) = L(θ + αδ + βη)`` with random
  directions, filter-normalized (Li et al. 2018) or not, for a net trained with
  and without dropout.
- :func:`skip_connection_landscapes`: a deep plain MLP and its residual twin:
  the plain net's slice is rougher than the residual one's (Li et al.'s
  ResNet-56 vs ResNet-56-noshort figure at lecture scale), measured by
  :func:`gd_lib.landscape.roughness`.
- :func:`sharp_vs_flat`: small vs large batches, and Entropy-SGD (Chaudhari
  et al. 2017), each trained to the same training loss: sharpness (top Hessian
  eigenvalue) against the generalization gap.
- :func:`noisy_escape`: on a 1-D/2-D toy with a narrow and a wide basin, SGD's
  gradient noise throws the iterate out of the narrow basin; gradient descent
  with the same step stays.
- :func:`exponential_lr_equivalence`: with normalization the loss is
  scale-invariant, and SGD with weight decay ``λ`` and step ``η`` equals SGD without
  weight decay and the exponentially growing step ``η_t = η (1 − ηλ)^{−2t−1}``
  (Li & Arora 2019, Theorem 2.1 without momentum).

References:
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. Visualizing the loss landscape of neural
    nets. NeurIPS 2018.
    I. Goodfellow, O. Vinyals, A. Saxe. Qualitatively characterizing neural network optimization
    problems. ICLR 2015.
    N. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. Tang. On large-batch training for deep
    learning: generalization gap and sharp minima. ICLR 2017.
    P. Chaudhari et al. Entropy-SGD: biasing gradient descent into wide valleys. ICLR 2017.
    L. Wu, C. Ma, W. E. How SGD selects the global minima in over-parameterized learning. NeurIPS 2018.
    Z. Li, S. Arora. An exponential learning rate schedule for deep learning. ICLR 2020 (arXiv 2019).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import gd_lib
from gd_lib import landscape
from gd_lib.curvature import sharpness
from gd_lib.data import TWO_BASINS, load_digits
from gd_lib.models import MLP
from gd_lib.optim import SGD, Adam, EntropySGD
from gd_lib.train import cross_entropy, train

__all__ = [
    "random_direction_cosines",
    "train_digits_mlp",
    "line_from_init",
    "plane_around_minimum",
    "skip_connection_landscapes",
    "sharp_vs_flat",
    "noisy_escape",
    "exponential_lr_equivalence",
    "scale_invariant_net",
]


# --- random directions ---------------------------------------------------------------------------------


def random_direction_cosines(dims=(10, 100, 1_000, 10_000), samples: int = 200, seed: int = 0) -> dict:
    """Cosine similarity of ``samples`` independent pairs of Gaussian vectors in each dimension ``d``.

    Returns ``{"dims", "cosines" (len(dims) × samples), "std", "mean", "predicted_std" (1/√d)}``.
    """
    generator = torch.Generator().manual_seed(seed)
    cosines = []
    for d in dims:
        a = torch.randn(samples, d, generator=generator, dtype=torch.float64)
        b = torch.randn(samples, d, generator=generator, dtype=torch.float64)
        cosines.append((torch.nn.functional.cosine_similarity(a, b, dim=1)).numpy())
    cosines = np.asarray(cosines)
    dims = np.asarray(dims)
    return {
        "dims": dims,
        "cosines": cosines,
        "std": cosines.std(axis=1),
        "mean": cosines.mean(axis=1),
        "predicted_std": 1.0 / np.sqrt(dims),
    }


# --- a trained digits MLP --------------------------------------------------------------------------------


def _loss_on(X, y):
    return lambda model: cross_entropy(model(X), y)


def train_digits_mlp(
    widths=(64, 64),
    *,
    quick: bool | None = None,
    steps: int | None = None,
    dropout: float = 0.0,
    residual: bool = False,
    init: str = "kaiming",
    sigma: float | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
):
    """Train an :class:`MLP` on the digits with Adam; returns ``(model, initial_weights, data, history)``."""
    quick = gd_lib.quick_mode(quick)
    steps = gd_lib.step_budget(300, 3000, quick) if steps is None else steps
    data = load_digits()
    generator = torch.Generator().manual_seed(seed)
    model = MLP(64, list(widths), 10, dropout=dropout, residual=residual, init=init, sigma=sigma, generator=generator)
    initial = landscape.get_weights(model)
    history = train(
        model,
        Adam(model.parameters(), lr=lr),
        data,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        device="cpu",
        progress=False,
    )
    model.eval()
    return model, initial, data, history


def line_from_init(quick: bool | None = None, *, num: int | None = None, seed: int = 0) -> dict:
    """The loss along the line from the initial (α = 0) to the trained (α = 1) weights, and beyond.

    Returns ``{"alphas", "train_loss", "val_loss"}``.
    """
    quick = gd_lib.quick_mode(quick)
    model, initial, data, _ = train_digits_mlp(quick=quick, seed=seed)
    trained = landscape.get_weights(model)
    alphas = np.linspace(-0.5, 1.5, (21 if quick else 81) if num is None else num)
    train_line = landscape.loss_along_line(model, _loss_on(*data.train), initial, trained, alphas)
    val_line = landscape.loss_along_line(model, _loss_on(*data.validation), initial, trained, alphas)
    return {"alphas": alphas, "train_loss": train_line["losses"], "val_loss": val_line["losses"]}


def plane_around_minimum(
    quick: bool | None = None, *, dropouts=(0.0, 0.5), extent: float = 1.0, num: int | None = None, seed: int = 0
) -> dict:
    """Loss planes around trained MLPs, with and without dropout, along two random directions.

    For each dropout rate: the plane with filter-normalized directions (Li et al.) and with
    raw Gaussian directions rescaled to the same total norm; the cosine of the two directions;
    and the sharpness (top Hessian eigenvalue of the training loss).
    Returns ``{"alphas", "betas", dropout: {"filter_normalized", "raw", "cosine", "sharpness",
    "train_loss", "val_loss", "num_parameters"}}``.
    """
    quick = gd_lib.quick_mode(quick)
    num = (11 if quick else 51) if num is None else num
    grid = landscape.symmetric_grid(extent, num)
    out = {"alphas": grid, "betas": grid}
    for p in dropouts:
        model, _, data, _ = train_digits_mlp(quick=quick, dropout=p, seed=seed)
        X, y = data.X_train[:512], data.y_train[:512]
        loss_fn = _loss_on(X, y)
        generator = torch.Generator().manual_seed(seed + 1)
        d1 = landscape.random_filter_normalized_direction(model, generator)
        d2 = landscape.random_filter_normalized_direction(model, generator)
        r1, r2 = landscape.random_direction(model, generator), landscape.random_direction(model, generator)
        # raw directions with the same total norm as the filter-normalized ones
        r1 = [t * (landscape._norm(d1) / landscape._norm(r1)).item() for t in r1]
        r2 = [t * (landscape._norm(d2) / landscape._norm(r2)).item() for t in r2]
        out[p] = {
            "filter_normalized": landscape.loss_plane(model, loss_fn, (d1, d2), grid, grid)["losses"],
            "raw": landscape.loss_plane(model, loss_fn, (r1, r2), grid, grid)["losses"],
            "cosine": landscape.cosine_similarity(d1, d2),
            "sharpness": sharpness(model, nn.CrossEntropyLoss(), X, y),
            "train_loss": loss_fn(model).item(),
            "val_loss": _loss_on(*data.validation)(model).item(),
            "num_parameters": sum(t.numel() for t in model.parameters()),
        }
    return out


def skip_connection_landscapes(
    quick: bool | None = None,
    *,
    depth: int | None = None,
    width: int = 32,
    extent: float = 1.0,
    num: int | None = None,
    seed: int = 0,
) -> dict:
    """A deep plain MLP and its residual twin (same widths, skip connections added), trained alike,
    then sliced on a filter-normalized random plane around the trained weights.

    Roughness here is mostly the plain net's loss exploding away from the minimum (each filter
    perturbed by its own norm multiplies the signal through every layer), so compare the total
    variation of ``log10`` of the grid (``log_roughness``) as well as of the grid itself.
    The plain net uses Kaiming init; the residual twin the same scheme with σ = 1/√depth, so
    that its activations do not grow as ``2^depth`` through the skips (as Fixup / scaled
    residual branches do). Returns ``{"alphas", "betas", "plain": {...}, "residual": {...}}``
    with ``losses`` (the grid), ``roughness`` and ``log_roughness`` (:func:`gd_lib.landscape.roughness`
    of the grid and of its ``log10``),
    ``train_loss`` and ``val_accuracy``.
    """
    quick = gd_lib.quick_mode(quick)
    depth = (32 if quick else 56) if depth is None else depth
    num = (11 if quick else 41) if num is None else num
    grid = landscape.symmetric_grid(extent, num)
    out = {"alphas": grid, "betas": grid, "depth": depth, "width": width}
    for name, residual, sigma in (("plain", False, None), ("residual", True, depth**-0.5)):
        model, _, data, history = train_digits_mlp(
            [width] * depth, quick=quick, residual=residual, sigma=sigma, seed=seed
        )
        X, y = data.X_train[:512], data.y_train[:512]
        generator = torch.Generator().manual_seed(seed + 1)
        directions = (
            landscape.random_filter_normalized_direction(model, generator),
            landscape.random_filter_normalized_direction(model, generator),
        )
        losses = landscape.loss_plane(model, _loss_on(X, y), directions, grid, grid)["losses"]
        out[name] = {
            "losses": losses,
            "roughness": landscape.roughness(losses),
            "log_roughness": landscape.roughness(np.log10(losses)),
            "train_loss": _loss_on(X, y)(model).item(),
            "val_accuracy": history.final("val_accuracy"),
        }
    return out


# --- sharp and flat minima -----------------------------------------------------------------------------------


def _minibatch_closure(model, optimizer, X, y, batch_size: int, generator: torch.Generator):
    """A closure that draws a minibatch (the whole set when ``batch_size ≥ len(X)``), zeroes the
    gradients, and back-propagates the cross-entropy on it; returns the loss."""
    n = X.shape[0]

    def closure():
        index = torch.randint(0, n, (batch_size,), generator=generator) if batch_size < n else slice(None)
        optimizer.zero_grad()
        loss = cross_entropy(model(X[index]), y[index])
        loss.backward()
        return loss

    return closure


def sharp_vs_flat(
    quick: bool | None = None,
    *,
    batch_sizes=(16, None),
    target_loss: float = 0.02,
    milestones=(0.5, 0.2, 0.1, 0.05),
    lr: float = 0.1,
    max_steps: int | None = None,
    check_every: int = 10,
    entropy_sgd: bool = True,
    seed: int = 0,
) -> dict:
    """Small- vs large-batch SGD (same lr) and Entropy-SGD on a digits MLP, each trained to the same
    training loss ``target_loss``, then compared.

    Keskar et al. (2017) compare minima *at similar training loss*: large batches find sharper
    minima that generalize worse. Sharpness is not a fixed property of an optimizer: with the
    cross-entropy it falls as the training loss falls (the softmax saturates), so a run stopped
    early looks sharper. Every run here therefore trains until the loss on the whole training set
    (checked every ``check_every`` steps) is at most ``target_loss``, or ``max_steps`` steps.
    ``batch_sizes``: ``None`` is the full training set (gradient descent).

    For each run: ``sharpness`` (top Hessian eigenvalue of the training loss on the whole training
    set), ``train_loss``, ``val_loss``, ``gap`` (val − train), ``val_accuracy``, ``steps``,
    ``gradient_evaluations`` (examples whose gradient was computed), ``reached`` (the target was
    reached), ``path`` (``{"train_loss", "sharpness"}`` measured when the training loss first fell
    below each of ``milestones`` and at the end) and ``profile`` (loss along one filter-normalized
    random direction; ``alphas`` shared). Also ``"target_loss"``.
    """
    quick = gd_lib.quick_mode(quick)
    max_steps = gd_lib.step_budget(5000, 20000, quick, minimum=check_every) if max_steps is None else max_steps
    data = load_digits()
    X, y = data.train
    n = X.shape[0]
    alphas = np.linspace(-1.0, 1.0, 21 if quick else 61)
    runs = {}
    for b in batch_sizes:
        runs["GD (full batch)" if b is None or b >= n else f"SGD, batch {b}"] = ("sgd", n if b is None else min(b, n))
    if entropy_sgd:
        runs["Entropy-SGD, batch 64"] = ("entropy", 64)
    loss_fn = _loss_on(X, y)
    out = {"alphas": alphas, "target_loss": target_loss}
    for label, (kind, batch_size) in runs.items():
        torch.manual_seed(seed)
        model = MLP(64, [64, 64], 10, init="kaiming", generator=torch.Generator().manual_seed(seed))
        batches = torch.Generator().manual_seed(seed)
        if kind == "sgd":
            optimizer = SGD(model.parameters(), lr=lr)
        else:
            # L = 5 Langevin steps (5 gradient evaluations) per outer step; the outer step ηγ(x − μ)
            # with ηγ = 0.6
            optimizer = EntropySGD(
                model.parameters(),
                lr=20.0,
                langevin_steps=5,
                langevin_lr=lr,
                gamma=0.03,
                noise=1e-4,
                generator=torch.Generator().manual_seed(seed),
            )

        closure = _minibatch_closure(model, optimizer, X, y, batch_size, batches)
        pending = sorted((m for m in milestones if m > target_loss), reverse=True)
        path = {"train_loss": [], "sharpness": []}
        steps = evaluations = 0
        while True:
            with torch.no_grad():
                train_loss = loss_fn(model).item()
            while pending and train_loss <= pending[0]:
                pending.pop(0)
                path["train_loss"].append(train_loss)
                path["sharpness"].append(sharpness(model, nn.CrossEntropyLoss(), X, y))
            if train_loss <= target_loss or steps >= max_steps or not np.isfinite(train_loss):
                break
            for _ in range(check_every):
                if kind == "sgd":
                    closure()
                    optimizer.step()
                    evaluations += batch_size
                else:
                    optimizer.step(closure)
                    evaluations += 5 * batch_size
                steps += 1
        model.eval()
        with torch.no_grad():
            val_loss = float(cross_entropy(model(data.X_val), data.y_val))
            val_accuracy = float((model(data.X_val).argmax(-1) == data.y_val).double().mean())
        top = sharpness(model, nn.CrossEntropyLoss(), X, y)
        path["train_loss"].append(train_loss)
        path["sharpness"].append(top)
        direction = landscape.random_filter_normalized_direction(model, torch.Generator().manual_seed(seed + 1))
        profile = landscape.loss_along_direction(model, _loss_on(X[:512], y[:512]), direction, alphas)["losses"]
        out[label] = {
            "sharpness": top,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "gap": val_loss - train_loss,
            "val_accuracy": val_accuracy,
            "steps": steps,
            "gradient_evaluations": evaluations,
            "reached": train_loss <= target_loss,
            "path": {k: np.asarray(v) for k, v in path.items()},
            "profile": profile,
        }
    return out


# --- SGD noise and a narrow basin ------------------------------------------------------------------------------


def noisy_escape(
    quick: bool | None = None,
    *,
    lr: float = 0.011,
    noise: float = 0.15,
    num_samples: int = 64,
    steps: int | None = None,
    seeds: int | None = None,
    record: int = 0,
) -> dict:
    r"""Gradient descent and SGD from the narrow minimum of a two-basin landscape.

    The data are shifts ``u_i ~ N(0, noise² I)``, ``i = 1..num_samples``, and the loss is
    ``L(x) = (1/N) Σ_i f(x + u_i)`` with ``f`` = :data:`gd_lib.data.TWO_BASINS` (a wide basin at
    ``(−1, 0)``, a 17× sharper one at ``(1, 0)``). GD steps along ``∇L``; SGD along
    ``∇f(x + u_i)`` for one random ``i``, whose noise grows with the curvature — near a
    minimum of curvature ``λ`` the iterate's spread is ``≈ η λ s² / (2 − ηλ)``, large in the
    sharp basin when ``ηλ`` is near 2 (linear stability, Wu, Ma & E 2018). Both start at
    ``(1, 0)`` with the same step ``lr`` (``lr · 136 = 1.5 < 2``: GD is stable there).

    Returns ``{"gd_escaped", "sgd_escaped"`` (booleans per seed: ended in the wide basin, x < 0),
    ``"gd_paths", "sgd_paths"`` (the first ``record`` seeds' iterates, ``steps+1 × 2``),
    ``"lr", "noise", "steps"}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = gd_lib.step_budget(300, 2000, quick) if steps is None else steps
    seeds = (20 if quick else 100) if seeds is None else seeds
    f = TWO_BASINS
    # one data set of shifts per seed: (seeds, N, 2); all seeds run side by side
    shifts = torch.stack(
        [
            noise * torch.randn(num_samples, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in range(seeds)
        ]
    )
    picks = torch.randint(0, num_samples, (steps, seeds), generator=torch.Generator().manual_seed(1000))
    rows = torch.arange(seeds)
    out = {"lr": lr, "noise": noise, "steps": steps}
    for kind in ("gd", "sgd"):
        x = torch.tensor([1.0, 0.0], dtype=torch.float64).repeat(seeds, 1)
        path = [x.clone()]
        for t in range(steps):
            x = x.detach().requires_grad_(True)
            if kind == "gd":
                # ∇L(x) = (1/N) Σ_i ∇f(x + u_i)
                loss = f(x.unsqueeze(1) + shifts).mean(1).sum()
            else:
                # ∇f(x + u_i) for one sampled i per seed
                loss = f(x + shifts[rows, picks[t]]).sum()
            (grad,) = torch.autograd.grad(loss, x)
            x = (x - lr * grad).detach()
            path.append(x.clone())
        path = torch.stack(path)  # (steps+1, seeds, 2)
        finite = torch.isfinite(x).all(dim=1)
        out[f"{kind}_escaped"] = (finite & (torch.nan_to_num(x[:, 0], nan=1.0) < 0)).numpy()
        out[f"{kind}_paths"] = [path[:, s].numpy() for s in range(min(record, seeds))]
    return out


# --- scale invariance and exponential learning rates ------------------------------------------------------------


def scale_invariant_net(width: int = 64, seed: int = 0) -> nn.Sequential:
    """``x → BN(W_1 x) → ReLU → BN(W_2 ·) → ReLU → W_3 ·`` with BatchNorm without affine parameters
    and ``W_3`` frozen: the loss is invariant to scaling ``W_1`` and ``W_2``, the only trained weights.
    BatchNorm's ``ε`` is 10⁻³⁰ (its default ``10⁻⁵`` would break the invariance slightly)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(64, width, bias=False),
        nn.BatchNorm1d(width, eps=1e-30, affine=False),
        nn.ReLU(),
        nn.Linear(width, width, bias=False),
        nn.BatchNorm1d(width, eps=1e-30, affine=False),
        nn.ReLU(),
        nn.Linear(width, 10),
    )
    for p in net[-1].parameters():
        p.requires_grad_(False)
    return net.double()


def exponential_lr_equivalence(
    quick: bool | None = None,
    *,
    lr: float = 0.2,
    weight_decay: float = 0.01,
    steps: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> dict:
    r"""SGD with weight decay vs SGD with an exponentially growing step and no weight decay.

    For a scale-invariant loss (``L(cw) = L(w)``, so ``∇L(cw) = ∇L(w)/c``), the run
    ``w_{t+1} = (1 − ηλ) w_t − η ∇L(w_t)`` and the run ``w̃_{t+1} = w̃_t − η_t ∇L(w̃_t)`` with
    ``η_t = η (1 − ηλ)^{−2t−1}`` satisfy ``w_t = (1 − ηλ)^t w̃_t``: the same function at every step
    (Li & Arora 2019, Theorem 2.1 with momentum 0). Same minibatches for both (float64).

    Returns ``{"loss_wd", "loss_exp"`` (training minibatch loss per step), ``"norm_wd", "norm_exp"``
    (‖w‖ of the trained weights per step), ``"lr_exp"`` (``η_t``), ``"predicted_ratio"``
    (``(1 − ηλ)^t``, predicted ``norm_wd / norm_exp``)``}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = gd_lib.step_budget(300, 3000, quick) if steps is None else steps
    data = load_digits(dtype=torch.float64)
    X, y = data.train
    order = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, X.shape[0], (batch_size,), generator=order) for _ in range(steps)]
    decay = 1.0 - lr * weight_decay
    out = {}
    for name in ("wd", "exp"):
        net = scale_invariant_net(seed=seed)
        params = [p for p in net.parameters() if p.requires_grad]
        losses, norms, lrs = [], [], []
        for t, index in enumerate(batches):
            loss = cross_entropy(net(X[index]), y[index])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                if name == "wd":
                    # w <- (1 − ηλ) w − η ∇L(w)
                    for p, g in zip(params, grads):
                        p.mul_(decay).sub_(lr * g)
                else:
                    # w <- w − η_t ∇L(w),  η_t = η (1 − ηλ)^{−2t−1}
                    step = lr * decay ** (-2 * t - 1)
                    lrs.append(step)
                    for p, g in zip(params, grads):
                        p.sub_(step * g)
            losses.append(loss.item())
            norms.append(float(torch.sqrt(sum((p.detach() ** 2).sum() for p in params))))
        out[f"loss_{name}"], out[f"norm_{name}"] = np.asarray(losses), np.asarray(norms)
    out["lr_exp"] = np.asarray(lrs)
    out["predicted_ratio"] = decay ** np.arange(1, steps + 1)
    return out
