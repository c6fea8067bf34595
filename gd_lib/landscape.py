r"""Loss landscapes: the loss along a line and on a plane through weight space.

A network's loss ``L(θ)`` lives in millions of dimensions; we look at it on
low-dimensional slices.

- **1-D interpolation** (Goodfellow, Vinyals & Saxe 2015):
  ``ℓ(α) = L((1-α) θ_0 + α θ_1)``, e.g. from the initial to the trained
  weights; ``α = 0`` and ``α = 1`` are the two points exactly
  (:func:`loss_along_line`, which uses ``torch.lerp``).
- **Along a direction**: ``ℓ(α) = L(θ + α δ)`` (:func:`loss_along_direction`).
- **On a plane**: ``ℓ(α, β) = L(θ + α δ + β η)`` (:func:`loss_plane`).

Random directions have to be scaled to the weights, or the picture shows the
scale of each layer instead of the shape of the loss: a ReLU network
computes the same function when a layer's weights are multiplied by ``c`` and
the next layer's by ``1/c``, but a fixed-size step changes the small layer far
more. *Filter normalization* (Li et al. 2018, Section 4) draws ``d ~ N(0, I)``
and rescales each filter (each slice ``d[i]`` along the first dimension: an
output channel of a convolution, a row of a linear layer) to the norm of the
corresponding filter of the weights,

.. math::  d_{i} \leftarrow \frac{d_{i}}{\lVert d_{i} \rVert} \lVert θ_{i} \rVert ,

and zeroes the direction on 1-D parameters (biases, BatchNorm/LayerNorm
gains): ``ignore="biasbn"``, the setting of the paper's figures. With
``ignore="none"`` a 1-D parameter's direction is a copy of the weights, as in
the authors' code.

Two independent Gaussian directions in dimension ``d`` are nearly
orthogonal: their cosine similarity has mean 0 and standard deviation
``1/sqrt(d)``, so for a network two random directions span a genuine plane.

Points and directions are lists of tensors in ``model.parameters()`` order.
Every function that evaluates the loss puts the model's parameters and
buffers back exactly as they were when it returns (or raises), and restores
the buffers before every evaluation, so BatchNorm running statistics do not
drift across the grid.

:func:`roughness` summarises a 2-D grid by its number of strict local minima
and its total variation: the lecture on skip connections compares a network
with and without them (Li et al. 2018, Figure 5).

References
----------
- H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. "Visualizing the Loss
  Landscape of Neural Nets", NeurIPS 2018 (and tomgoldstein/loss-landscape,
  ``net_plotter.py``).
- I. Goodfellow, O. Vinyals, A. Saxe. "Qualitatively characterizing neural
  network optimization problems", ICLR 2015.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

__all__ = [
    "get_weights",
    "set_weights",
    "symmetric_grid",
    "random_direction",
    "filter_normalize",
    "random_filter_normalized_direction",
    "direction_between",
    "orthogonalize",
    "cosine_similarity",
    "trajectory_plane",
    "loss_along_line",
    "loss_along_direction",
    "loss_plane",
    "roughness",
]

Weights = list  # list[torch.Tensor], in model.parameters() order
LossFn = Callable[[nn.Module], "torch.Tensor | float"]


# --------------------------------------------------------------------------
# Points and directions
# --------------------------------------------------------------------------


def get_weights(model: nn.Module) -> Weights:
    """A detached copy of the model's parameters, in ``model.parameters()`` order."""
    return [p.detach().clone() for p in model.parameters()]


@torch.no_grad()
def set_weights(model: nn.Module, weights: Sequence[torch.Tensor]) -> None:
    """Copy ``weights`` into the model's parameters (in place)."""
    params = list(model.parameters())
    _check_like(weights, params, "weights")
    for p, w in zip(params, weights):
        p.copy_(w)


def _check_like(xs: Sequence[torch.Tensor], ref: Sequence[torch.Tensor], what: str) -> None:
    if len(xs) != len(ref):
        raise ValueError(f"{what} has {len(xs)} tensors but the model has {len(ref)} parameters")
    for i, (x, r) in enumerate(zip(xs, ref)):
        if tuple(x.shape) != tuple(r.shape):
            raise ValueError(f"{what}[{i}] has shape {tuple(x.shape)}, expected {tuple(r.shape)}")


def _as_weights(model_or_weights) -> Weights:
    if isinstance(model_or_weights, nn.Module):
        return get_weights(model_or_weights)
    return [w.detach() for w in model_or_weights]


def symmetric_grid(extent: float = 1.0, num: int = 21) -> np.ndarray:
    """``num`` evenly spaced coordinates in ``[-extent, extent]``; with an odd
    ``num`` the middle one is exactly 0 (so a grid's centre is the point itself)."""
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    if not extent > 0:
        raise ValueError(f"extent must be > 0, got {extent}")
    half = (num - 1) / 2
    return extent * (np.arange(num) - half) / half


def random_direction(model_or_weights, generator: torch.Generator | None = None) -> Weights:
    """A Gaussian direction ``d ~ N(0, I)`` shaped like the weights."""
    weights = _as_weights(model_or_weights)
    return [torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device) for w in weights]


def filter_normalize(direction: Sequence[torch.Tensor], weights, ignore: str = "biasbn", eps: float = 1e-10) -> Weights:
    r"""Filter-normalize ``direction`` to ``weights`` (Li et al. 2018, Eq. in Section 4).

    For a parameter with 2 or more dimensions, each filter ``d[i]`` becomes
    ``d[i] · ||θ[i]|| / (||d[i]|| + eps)`` (``eps`` as in the authors' code,
    so a zero filter stays zero). For a 1-D parameter: ``ignore="biasbn"``
    zeroes it, ``ignore="none"`` copies the weights. Returns new tensors.
    """
    if ignore not in ("biasbn", "none"):
        raise ValueError(f"ignore must be 'biasbn' or 'none', got {ignore!r}")
    weights = _as_weights(weights)
    _check_like(direction, weights, "direction")
    out = []
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            out.append(torch.zeros_like(d) if ignore == "biasbn" else w.clone())
            continue
        # ||θ_i|| / ||d_i|| for every filter i (a slice along dim 0)
        d_norms = d.flatten(1).norm(dim=1)
        w_norms = w.flatten(1).norm(dim=1)
        scale = w_norms / (d_norms + eps)
        out.append(d * scale.view(-1, *([1] * (d.dim() - 1))))
    return out


def random_filter_normalized_direction(
    model_or_weights, generator: torch.Generator | None = None, ignore: str = "biasbn"
) -> Weights:
    """:func:`random_direction` then :func:`filter_normalize` (Li et al.'s recipe)."""
    weights = _as_weights(model_or_weights)
    return filter_normalize(random_direction(weights, generator), weights, ignore=ignore)


def direction_between(start: Sequence[torch.Tensor], end: Sequence[torch.Tensor]) -> Weights:
    """``end - start``, e.g. from the initial to the trained weights."""
    _check_like(end, start, "end")
    return [e.detach() - s.detach() for s, e in zip(start, end)]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b))


def _norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    return _dot(a, a).sqrt()


def cosine_similarity(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """``<a, b> / (||a|| ||b||)`` over all parameters flattened together."""
    return float(_dot(a, b) / (_norm(a) * _norm(b)))


def orthogonalize(direction: Sequence[torch.Tensor], against: Sequence[torch.Tensor]) -> Weights:
    """One Gram–Schmidt step: ``d - (<d, a> / <a, a>) a`` (all parameters
    flattened together, inner products in float64)."""
    _check_like(direction, against, "direction")
    coef = _dot(direction, against) / _dot(against, against)
    return [d - (coef * a.double()).to(d.dtype) for d, a in zip(direction, against)]


def trajectory_plane(
    start: Sequence[torch.Tensor],
    end: Sequence[torch.Tensor],
    generator: torch.Generator | None = None,
    ignore: str = "biasbn",
) -> tuple[Weights, Weights]:
    """Directions of the plane through ``start`` and ``end``: ``δ = end - start``
    and a random filter-normalized (to ``end``) direction, orthogonalized
    against ``δ`` and rescaled to ``||δ||``. With ``center=start`` the trained
    point sits at ``(α, β) = (1, 0)``."""
    delta = direction_between(start, end)
    eta = orthogonalize(random_filter_normalized_direction(list(end), generator, ignore), delta)
    scale = _norm(delta) / _norm(eta)
    return delta, [(e.double() * scale).to(e.dtype) for e in eta]


# --------------------------------------------------------------------------
# Evaluating the loss on slices
# --------------------------------------------------------------------------


@contextmanager
def _restored(model: nn.Module):
    """Yield a function that resets buffers to their entry values; on exit put
    parameters and buffers back exactly."""
    params = get_weights(model)
    buffers = [b.detach().clone() for b in model.buffers()]

    def reset_buffers():
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)

    try:
        yield reset_buffers
    finally:
        set_weights(model, params)
        reset_buffers()


def _evaluate(model: nn.Module, loss_fn: LossFn, reset_buffers) -> float:
    reset_buffers()
    with torch.no_grad():
        value = loss_fn(model)
    return float(value)


def loss_along_line(
    model: nn.Module,
    loss_fn: LossFn,
    start: Sequence[torch.Tensor],
    end: Sequence[torch.Tensor],
    alphas: Sequence[float],
) -> dict:
    r"""``ℓ(α) = L(lerp(θ_0, θ_1, α))`` for each ``α``; ``loss_fn(model)`` returns ``L``.

    ``torch.lerp`` returns ``θ_0`` at ``α = 0`` and ``θ_1`` at ``α = 1``
    exactly, so the endpoints are the losses at the two points.
    Returns ``{"alphas", "losses"}`` (numpy).
    """
    params = list(model.parameters())
    _check_like(start, params, "start")
    _check_like(end, params, "end")
    alphas = np.asarray(alphas, dtype=float)
    losses = np.empty(len(alphas))
    with _restored(model) as reset_buffers:
        for i, a in enumerate(alphas):
            with torch.no_grad():
                for p, s, e in zip(params, start, end):
                    p.copy_(torch.lerp(s, e, float(a)))
            losses[i] = _evaluate(model, loss_fn, reset_buffers)
    return {"alphas": alphas, "losses": losses}


def loss_along_direction(
    model: nn.Module,
    loss_fn: LossFn,
    direction: Sequence[torch.Tensor],
    alphas: Sequence[float],
    center: Sequence[torch.Tensor] | None = None,
) -> dict:
    """``ℓ(α) = L(θ + α δ)`` with ``θ = center`` (default: the model's weights).
    Returns ``{"alphas", "losses"}`` (numpy)."""
    out = loss_plane(model, loss_fn, (direction, [torch.zeros_like(d) for d in direction]), alphas, [0.0], center)
    return {"alphas": out["alphas"], "losses": out["losses"][0]}


def loss_plane(
    model: nn.Module,
    loss_fn: LossFn,
    directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
    alphas: Sequence[float],
    betas: Sequence[float],
    center: Sequence[torch.Tensor] | None = None,
) -> dict:
    r"""``ℓ(α, β) = L(θ + α δ + β η)`` on the grid ``alphas × betas``.

    ``θ = center`` (default: the model's current weights), ``(δ, η) =
    directions``. At ``α = β = 0`` the weights are ``θ`` exactly, so the
    grid's value there is the loss at ``θ``.

    Returns ``{"alphas", "betas", "losses"}`` with ``losses[j, i] = ℓ(alphas[i],
    betas[j])`` (rows follow ``betas``, matplotlib's ``contour(alphas, betas,
    losses)`` layout).
    """
    params = list(model.parameters())
    d1, d2 = directions
    _check_like(d1, params, "directions[0]")
    _check_like(d2, params, "directions[1]")
    theta = get_weights(model) if center is None else [c.detach().clone() for c in center]
    _check_like(theta, params, "center")
    alphas = np.asarray(alphas, dtype=float)
    betas = np.asarray(betas, dtype=float)
    losses = np.empty((len(betas), len(alphas)))
    with _restored(model) as reset_buffers:
        for j, b in enumerate(betas):
            for i, a in enumerate(alphas):
                with torch.no_grad():
                    for p, t, u, v in zip(params, theta, d1, d2):
                        # θ + α δ + β η
                        p.copy_(t + float(a) * u + float(b) * v)
                losses[j, i] = _evaluate(model, loss_fn, reset_buffers)
    return {"alphas": alphas, "betas": betas, "losses": losses}


# --------------------------------------------------------------------------
# Roughness of a 2-D grid
# --------------------------------------------------------------------------


def roughness(losses: np.ndarray) -> dict:
    r"""How rough a 2-D loss grid is.

    - ``local_minima``: points strictly below all their (up to 8) neighbours,
      edges and corners included; a convex bowl has exactly one.
    - ``total_variation``: ``Σ |Z[i+1, j] - Z[i, j]| + Σ |Z[i, j+1] - Z[i, j]|``.
    - ``normalized_total_variation``: total variation divided by
      ``(max - min) · (rows + cols)``: about 1 for a single bowl (each row
      and column goes down once and up once, by less than the full range),
      larger the more the surface oscillates; independent of the loss's scale.

    Non-finite values are treated as ``+inf`` for the minima and left out of
    the variation.
    """
    Z = np.asarray(losses, dtype=float)
    if Z.ndim != 2 or min(Z.shape) < 2:
        raise ValueError(f"losses must be a 2-D grid of at least 2x2, got shape {Z.shape}")
    # strict local minima: compare with the 8 neighbours, padding with +inf
    Zm = np.where(np.isfinite(Z), Z, np.inf)
    padded = np.pad(Zm, 1, constant_values=np.inf)
    rows, cols = Z.shape
    is_min = np.isfinite(Zm)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == 0 and dj == 0:
                continue
            neighbour = padded[1 + di : 1 + di + rows, 1 + dj : 1 + dj + cols]
            is_min &= Zm < neighbour
    # total variation along both axes
    dv = np.abs(np.diff(Z, axis=0))
    dh = np.abs(np.diff(Z, axis=1))
    tv = float(dv[np.isfinite(dv)].sum() + dh[np.isfinite(dh)].sum())
    finite = Z[np.isfinite(Z)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    return {
        "local_minima": int(is_min.sum()),
        "total_variation": tv,
        "normalized_total_variation": tv / (spread * (rows + cols)) if spread > 0 else 0.0,
    }
