r"""Lecture 2, Old optimizer, new norm: the experiments behind the figures.

Steepest descent under a norm ‖·‖ with sharpness λ takes the step
:math:`\Delta^* = \arg\min_\Delta \langle G, \Delta\rangle + \frac\lambda2\|\Delta\|^2
= -\frac{\|G\|_*}{\lambda}\,D(G)` (``gd_lib.geometry.steepest_descent``), with the dual norm
:math:`\|G\|_*` and the dual map :math:`D(G) = \arg\max_{\|D\|=1}\langle G, D\rangle`.
Each function below computes one of the lecture's pictures or equivalences:

* :func:`norm_ball_slices` — unit balls and steepest-descent steps on a 2-D slice (ℓ2, ℓ∞ on
  vectors; the spectral norm on two planes of 2×2 matrices);
* :func:`singular_values_of_steps` — what each dual map does to a gradient's singular values;
* :func:`adam_without_ema_is_sign_descent` — Adam with β1 = β2 = 0, ε = 0 is sign descent;
* :func:`shampoo_without_accumulation_is_polar` — L^{-1/4} G R^{-1/4} = U Vᵀ, stage by stage;
* :func:`newton_schulz_convergence` — singular values of the Newton–Schulz iterates;
* :func:`muon_vs_adamw` — steps to a target loss for Muon and AdamW on a small MLP;
* :func:`modular_norm_of_mlp` — the modular norm's per-layer budgets and its dualized step.

References:
    Bernstein & Newhouse (2024), "Old Optimizer, New Norm: An Anthology", arXiv:2409.20325.
    Bernstein & Newhouse (2024), "Modular Duality in Deep Learning", arXiv:2410.21265.
    Large et al. (2024), "Scalable Optimization in the Modular Norm", arXiv:2405.14813.
    Gupta, Koren & Singer (2018), "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML.
    Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks"
    (kellerjordan.github.io/posts/muon).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

import gd_lib
import gd_lib.data
import gd_lib.models
import gd_lib.optim as optim
import gd_lib.train
from gd_lib.geometry import get_norm, modular, shampoo_without_accumulation, steepest_descent
from gd_lib.linalg import (
    CUBIC_COEFFICIENTS,
    MUON_QUINTIC_COEFFICIENTS,
    newton_schulz,
    newton_schulz_scalar_map,
    polar_factor,
)

__all__ = [
    "prodigy_without_ema_is_sign_descent",
    "SLICES",
    "norm_ball_slices",
    "singular_values_of_steps",
    "adam_without_ema_is_sign_descent",
    "shampoo_without_accumulation_is_polar",
    "newton_schulz_convergence",
    "muon_vs_adamw",
    "modular_norm_of_mlp",
]

_DT = torch.float64
_S = 1.0 / math.sqrt(2.0)

#: Planes to draw unit balls on: (norm, E1, E2) with E1, E2 orthonormal in ⟨A, B⟩ = Σ A_ij B_ij,
#: so that a point (x, y) is the tensor x E1 + y E2 and ⟨G, W⟩ is the dot product of coordinates.
SLICES: dict[str, tuple[str, list, list]] = {
    "ℓ2 (vectors)": ("l2", [1.0, 0.0], [0.0, 1.0]),
    "ℓ∞ (vectors)": ("linf", [1.0, 0.0], [0.0, 1.0]),
    "spectral, diagonal 2×2": ("spectral", [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]),
    "spectral, [[x, y], [y, x]]/√2": ("spectral", [[_S, 0.0], [0.0, _S]], [[0.0, _S], [_S, 0.0]]),
}


def norm_ball_slices(gradient: Sequence[float] = (1.0, 0.4), sharpness: float = 1.0, resolution: int = 721) -> dict:
    r"""Unit balls and steepest-descent steps on the planes of :data:`SLICES`.

    For each plane: ``boundary`` (resolution, 2), the points :math:`u/\|u\|` for unit
    directions u of the plane; ``gradient`` (the coordinates of G = g_x E1 + g_y E2);
    ``step`` = the coordinates of :math:`\Delta^* = -(\|G\|_*/\lambda) D(G)`
    (``gd_lib.geometry.steepest_descent``); ``dual_map`` = those of D(G);
    ``off_plane`` = ‖Δ* − its projection on the plane‖ (0 when the step stays in the plane);
    ``dual_norm`` = ‖G‖_*; ``model_value`` = ⟨G, Δ*⟩ + (λ/2)‖Δ*‖², which equals −‖G‖_*²/(2λ).
    """
    out = {}
    angles = np.linspace(0.0, 2 * math.pi, resolution)
    for label, (name, e1, e2) in SLICES.items():
        E1, E2 = torch.tensor(e1, dtype=_DT), torch.tensor(e2, dtype=_DT)
        the_norm = get_norm(name)
        boundary = []
        for a in angles:
            u = math.cos(a) * E1 + math.sin(a) * E2
            r = float(the_norm(u))
            boundary.append((math.cos(a) / r, math.sin(a) / r))
        G = gradient[0] * E1 + gradient[1] * E2
        step = steepest_descent(G, name, sharpness)
        D = the_norm.dual_map(G)
        coords = np.array([float((step * E1).sum()), float((step * E2).sum())])
        projection = coords[0] * E1 + coords[1] * E2
        out[label] = {
            "norm": name,
            "boundary": np.asarray(boundary),
            "gradient": np.asarray(gradient, dtype=float),
            "step": coords,
            "dual_map": np.array([float((D * E1).sum()), float((D * E2).sum())]),
            "off_plane": float((step - projection).norm()),
            "dual_norm": float(the_norm.dual(G)),
            "model_value": float((G * step).sum() + 0.5 * sharpness * the_norm(step) ** 2),
        }
    return out


def singular_values_of_steps(shape: tuple[int, int] = (12, 8), seed: int = 0) -> dict:
    r"""Singular values of a random gradient G (spread over two decades) and of its dual maps
    under the Frobenius (ℓ2), max-entry (ℓ∞) and spectral norms, each scaled to unit spectral
    norm for comparison: ℓ2 keeps G's shape, sign(G) scrambles it, U Vᵀ flattens it to 1."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=_DT))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=_DT))
    k = min(m, n)
    sigma = torch.logspace(0, -2, k, dtype=_DT)
    G = U[:, :k] @ torch.diag(sigma) @ V[:, :k].T
    out = {"gradient": (sigma / sigma.max()).numpy()}
    for label, name in (("ℓ2: G/‖G‖_F", "l2"), ("ℓ∞: sign(G)", "linf"), ("spectral: U Vᵀ", "spectral")):
        s = torch.linalg.svdvals(get_norm(name).dual_map(G))
        out[label] = (s / s.max()).numpy()
    return out


def _tanh_mlp_and_batch(seed: int = 0, widths=(16, 16), in_features: int = 8, out_features: int = 4, batch: int = 32):
    gen = torch.Generator().manual_seed(seed)
    model = gd_lib.models.MLP(
        in_features, list(widths), out_features, activation="tanh", init="xavier", generator=gen
    ).double()
    X = torch.randn(batch, in_features, generator=gen, dtype=_DT)
    y = torch.randint(0, out_features, (batch,), generator=gen)
    return model, X, y


def adam_without_ema_is_sign_descent(steps: int = 5, lr: float = 0.01, seed: int = 0) -> dict:
    r"""Adam with β1 = β2 = 0 and ε = 0 against sign descent, on a tanh MLP (float64).

    With β = 0 the bias corrections are 1, :math:`m = g`, :math:`v = g^2`, and the step is
    :math:`\eta\, g/\sqrt{g^2} = \eta\,\mathrm{sign}(g)` — exactly, in IEEE arithmetic,
    since :math:`\sqrt{\mathrm{fl}(g^2)} = |g|`. Runs ``gd_lib.optim.Adam`` and
    ``gd_lib.optim.SignSGD`` from the same weights on the same batch for ``steps`` steps, and
    compares each step's direction with ``gd_lib.geometry.layerwise_sign_descent`` (steepest
    descent under max_l max_ij |Δ_l,ij|), which is −η_global sign(G_l).

    Returns ``{"max_param_difference": max |w_Adam − w_sign| over all steps, "max_direction_difference":
    max |Adam step/lr + sign(G)|, "losses_adam", "losses_sign", "steps"}``.
    """
    from gd_lib.geometry import layerwise_sign_descent

    model_a, X, y = _tanh_mlp_and_batch(seed)
    model_s, _, _ = _tanh_mlp_and_batch(seed)
    adam = optim.Adam(model_a.parameters(), lr=lr, betas=(0.0, 0.0), eps=0.0)
    sign = optim.SignSGD(model_s.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    max_param, max_direction, losses_a, losses_s = 0.0, 0.0, [], []
    for _ in range(steps):
        for model, opt, losses in ((model_a, adam, losses_a), (model_s, sign, losses_s)):
            opt.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            losses.append(float(loss.detach()))
        before = [p.detach().clone() for p in model_a.parameters()]
        grads = [p.grad.detach().clone() for p in model_a.parameters()]
        adam.step()
        sign.step()
        sd = layerwise_sign_descent(grads)
        for p, w0, g, d in zip(model_a.parameters(), before, grads, sd):
            direction = (p.detach() - w0) / lr
            max_direction = max(max_direction, float((direction + torch.sign(g)).abs().max()))
            # layerwise sign descent has the same direction, with a global step size η
            eta = float(d.abs().max())
            max_direction = max(max_direction, float((direction - d / eta).abs().max()))
        for pa, ps in zip(model_a.parameters(), model_s.parameters()):
            max_param = max(max_param, float((pa.detach() - ps.detach()).abs().max()))
    return {
        "max_param_difference": max_param,
        "max_direction_difference": max_direction,
        "losses_adam": np.asarray(losses_a),
        "losses_sign": np.asarray(losses_s),
        "steps": steps,
    }


def shampoo_without_accumulation_is_polar(shape: tuple[int, int] = (6, 4), seed: int = 0, lr: float = 0.1) -> dict:
    r"""The SVD derivation of Shampoo's step without accumulation, one stage at a time (float64).

    With :math:`G = U\Sigma V^\top` (reduced SVD):

    1. :math:`L = GG^\top = U\Sigma^2U^\top`, :math:`R = G^\top G = V\Sigma^2V^\top`;
    2. :math:`L^{-1/4} = U\Sigma^{-1/2}U^\top`, :math:`R^{-1/4} = V\Sigma^{-1/2}V^\top`
       (pseudo-inverse roots on the ranges);
    3. :math:`L^{-1/4}GR^{-1/4} = U\Sigma^{-1/2}\,\Sigma\,\Sigma^{-1/2}V^\top = UV^\top`.

    Each stage is checked numerically (the returned ``errors``, max-abs differences), against
    ``gd_lib.geometry.shampoo_without_accumulation`` (the eigh formula), ``gd_lib.linalg.polar_factor``
    and one step of ``gd_lib.optim.Shampoo`` with β = (0, 1) (its first step accumulates only
    G's own statistics) and no grafting: that step is −η U Vᵀ.
    """
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(*shape, generator=gen, dtype=_DT)
    U, sigma, Vh = torch.linalg.svd(G, full_matrices=False)
    L, R = G @ G.T, G.T @ G
    L_inv_quarter = U @ torch.diag(sigma**-0.5) @ U.T
    R_inv_quarter = Vh.T @ torch.diag(sigma**-0.5) @ Vh
    product = L_inv_quarter @ G @ R_inv_quarter
    polar = U @ Vh
    W = nn.Parameter(torch.zeros(*shape, dtype=_DT))
    opt = optim.Shampoo([W], lr=lr, betas=(0.0, 1.0), epsilon=1e-20, grafting="none")
    W.grad = G.clone()
    opt.step()
    shampoo_step = -W.detach() / lr
    errors = {
        "L = U Σ² Uᵀ": float((L - U @ torch.diag(sigma**2) @ U.T).abs().max()),
        "R = V Σ² Vᵀ": float((R - Vh.T @ torch.diag(sigma**2) @ Vh).abs().max()),
        "L^{-1/4} G R^{-1/4} = U Vᵀ": float((product - polar).abs().max()),
        "shampoo_without_accumulation(G) = U Vᵀ": float((shampoo_without_accumulation(G) - polar).abs().max()),
        "polar_factor(G) = U Vᵀ": float((polar_factor(G) - polar).abs().max()),
        "Shampoo's first step / (−η) = U Vᵀ": float((shampoo_step - polar).abs().max()),
    }
    return {
        "G": G.numpy(),
        "singular_values": sigma.numpy(),
        "L_inv_quarter": L_inv_quarter.numpy(),
        "R_inv_quarter": R_inv_quarter.numpy(),
        "product": product.numpy(),
        "polar": polar.numpy(),
        "shampoo_step": shampoo_step.numpy(),
        "errors": errors,
    }


def newton_schulz_convergence(
    shape: tuple[int, int] = (32, 16), iterations: int = 20, condition_number: float = 100.0, seed: int = 0
) -> dict:
    r"""Singular values of the Newton–Schulz iterates :math:`X_t` (``gd_lib.linalg.newton_schulz``
    with ``steps = t``) for the cubic coefficients (1.5, −0.5, 0), which converge to
    :math:`UV^\top`, and Muon's quintic ones, which only bring every σ into a band around 1.

    G has rank r = min(m, n) and singular values spaced geometrically over ``condition_number``;
    float64 throughout. Returns ``{"cubic": {"singular_values": (iterations+1, r), "distance":
    (iterations+1,)}, "quintic": {...}, "scalar_grid": x in [0, 1], "scalar_maps": {name: p∘…∘p(x)
    after 5 steps}}``, where distance is ‖X_t − U Vᵀ‖_F / √r (the RMS error per singular value).
    """
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=_DT))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=_DT))
    sigma = condition_number ** (-torch.arange(k, dtype=_DT) / (k - 1))
    G = (U * sigma) @ V.T
    polar = polar_factor(G)
    out = {}
    for name, coefficients in (("cubic", CUBIC_COEFFICIENTS), ("quintic", MUON_QUINTIC_COEFFICIENTS)):
        values, distance = [], []
        for steps in range(iterations + 1):
            X = newton_schulz(G, steps=steps, coefficients=coefficients, dtype=_DT)
            values.append(torch.linalg.svdvals(X).numpy())
            distance.append(float((X - polar).norm() / math.sqrt(k)))
        out[name] = {"singular_values": np.asarray(values), "distance": np.asarray(distance)}
    grid = np.linspace(0.0, 1.0, 501)
    out["scalar_grid"] = grid
    out["scalar_maps"] = {
        "cubic": newton_schulz_scalar_map(grid, 5, CUBIC_COEFFICIENTS),
        "quintic": newton_schulz_scalar_map(grid, 5, MUON_QUINTIC_COEFFICIENTS),
    }
    out["input_singular_values"] = sigma.numpy()
    return out


# ---------------------------------------------------------------------------
# Muon against AdamW: steps to a target training loss
# ---------------------------------------------------------------------------


def _digits_mlp(seed: int, width: int):
    gen = torch.Generator().manual_seed(seed)
    return gd_lib.models.MLP(64, [width, width], 10, activation="relu", init="kaiming", generator=gen)


def _steps_to_target(make_optimizer, data, steps: int, target: float, width: int, seed: int, batch_size: int):
    """Train from the same init; the first step at which the full training loss ≤ ``target``."""
    model = _digits_mlp(seed, width)
    X, y = data.X_train, data.y_train

    def eval_fn(m):
        return gd_lib.train.evaluate(m, X, y)["val_loss"]

    history = gd_lib.train.train(
        model,
        make_optimizer(model),
        (X, y),
        steps=steps,
        batch_size=batch_size,
        eval_every=5,
        eval_fn=lambda m: {"train_loss": eval_fn(m)},
        target=("train_loss", target),
        device="cpu",
        seed=seed,
        progress=False,
    )
    return history


def muon_vs_adamw(
    quick: bool | None = None,
    *,
    target: float = 0.002,
    width: int = 128,
    adamw_lrs: Sequence[float] = (3e-3, 1e-2, 3e-2),
    muon_lrs: Sequence[float] = (0.02, 0.05, 0.1),
    steps: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> dict:
    r"""Steps until the full training loss of an MLP (64 → width → width → 10, ReLU) on the
    digits (``gd_lib.data.load_digits``) first drops to ``target``, checked every 5 steps;
    minibatches of ``batch_size``.

    AdamW (``gd_lib.optim.AdamW``, wd 0) at each lr of ``adamw_lrs``; Muon (``gd_lib.optim.Muon``
    on the hidden 128×64 and 128×128 weights, its auxiliary Adam (lr 3e-3) on biases and the head,
    as ``muon_param_groups`` splits them) at each lr of ``muon_lrs``. Same init, same batches.
    Returns ``{"adamw": {lr: steps or None}, "muon": {...}, "best": {"adamw": (lr, steps), "muon":
    ...}, "curves": {label: (eval steps, train losses)}, "target", "steps"}``.
    """
    quick = gd_lib.quick_mode(quick)
    steps = steps or gd_lib.step_budget(200, 1000, quick, minimum=10)
    data = gd_lib.data.load_digits()
    results, curves = {"adamw": {}, "muon": {}}, {}
    for lr in adamw_lrs:
        h = _steps_to_target(
            lambda m, lr=lr: optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0),
            data,
            steps,
            target,
            width,
            seed,
            batch_size,
        )
        results["adamw"][lr] = h.target_step
        curves[f"AdamW lr {lr:g}"] = (h.eval_step, h["train_loss"])
    for lr in muon_lrs:
        h = _steps_to_target(
            lambda m, lr=lr: optim.Muon(optim.muon_param_groups(m), lr=lr, adam_lr=3e-3),
            data,
            steps,
            target,
            width,
            seed,
            batch_size,
        )
        results["muon"][lr] = h.target_step
        curves[f"Muon lr {lr:g}"] = (h.eval_step, h["train_loss"])

    def best(runs):
        reached = {lr: s for lr, s in runs.items() if s is not None}
        if not reached:
            return (None, None)
        lr = min(reached, key=reached.get)
        return (lr, reached[lr])

    return {
        **results,
        "best": {"adamw": best(results["adamw"]), "muon": best(results["muon"])},
        "curves": curves,
        "target": target,
        "steps": steps,
    }


# ---------------------------------------------------------------------------
# The modular norm
# ---------------------------------------------------------------------------


def modular_norm_of_mlp(
    widths: Sequence[int] = (16, 32, 32, 8), seed: int = 0, masses: Sequence[float] | None = None
) -> dict:
    r"""The modular norm of an MLP (``nn.Sequential`` of Linear and ReLU, float64) and the
    dualized gradient (``gd_lib.geometry.modular``).

    ``masses``: one mass per linear layer, given to its weight and to its bias atom (default:
    all 1, ``modular.from_sequential``). Returns the atoms' names, their masses and target norms
    :math:`t_i` (how the unit step is shared among the layers), the modular norm ‖w‖_M of the
    weights, the dual norm ‖G‖_M* of a gradient, and for :math:`\Delta = \mathrm{dualize}(G)`:
    ‖Δ‖_M (= 1) and ⟨G, Δ⟩ (= ‖G‖_M*); also the per-atom norms of Δ (each equals its target norm).
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=_DT) / math.sqrt(p.shape[-1]))
    if masses is None:
        tree = modular.from_sequential(net)
    else:
        masses = [float(m) for m in masses]
        if len(masses) != len(widths) - 1:
            raise ValueError(f"got {len(masses)} masses for {len(widths) - 1} linear layers")
        parts: list = []
        linear = iter(masses)
        for layer in net:
            if isinstance(layer, nn.Linear):
                mass = next(linear)
                parts.append(modular.Linear.of(layer, mass) + modular.Bias.of(layer, mass))
            else:
                parts.append(modular.ReLU())
        tree = modular.sequential(*parts)
    X = torch.randn(64, widths[0], generator=gen, dtype=_DT)
    loss = net(X).square().mean()
    weights = tree.bound_weights()
    grads = list(torch.autograd.grad(loss, weights))
    delta = tree.dualize(grads)
    atoms = tree.atoms()
    return {
        "atoms": [repr(a) for a in atoms],
        "masses": [a.mass for a in atoms],
        "target_norms": list(tree.target_norms(1.0)),
        "weight_norm": float(tree.norm().detach()),
        "dual_norm": float(tree.dual_norm(grads).detach()),
        "step_norm": float(tree.norm(delta)),
        "inner": float(sum((g * d).sum() for g, d in zip(grads, delta))),
        "atom_step_norms": [float(a.weight_norm(d)) for a, d in zip(atoms, delta)],
    }


# ---------------------------------------------------------------------------
# Prodigy without EMA: sign descent with a learned step size
# ---------------------------------------------------------------------------


def prodigy_without_ema_is_sign_descent(steps: int = 60, lr: float = 1.0, d0: float = 1e-6, seed: int = 0) -> dict:
    r"""Prodigy with β1 = β2 = 0 (so β3 = √β2 = 0) against sign descent with a learned step, on
    the tanh MLP of :func:`adam_without_ema_is_sign_descent` (float64).

    Without moving averages, :math:`v = d^2 g^2` and Prodigy's step is
    :math:`\gamma\, d_k\, g/(|g| + \epsilon) \to \gamma\, d_k\, \mathrm{sign}(g)` (ε = 1e-30 here):
    **sign descent** — steepest descent under the max-of-max norm — whose step size
    :math:`\gamma d_k` is learned: with no memory (β3 = 0) the estimate is

    .. math::
        \hat d_k = \frac{\langle g_k,\, x_0 - x_k\rangle}{\|g_k\|_1}, \qquad
        d_k = \max(d_{k-1}, \hat d_k)

    (``gd_lib.optim.prodigy.prodigy_estimate_d`` with growth_rate = ∞). By Hölder,
    :math:`\hat d_k \le \|x_0 - x_k\|_\infty`: d never exceeds the distance travelled in the norm
    of the step. While the gradient keeps its signs, :math:`x_0 - x_k = \gamma\sum_{i<k} d_i\,
    \mathrm{sign}(g)` and :math:`\hat d_k = \gamma\sum_{i<k} d_i`: d grows by the factor
    :math:`1 + \gamma` per step (Bernstein & Newhouse's "escape velocity"); once steps overshoot
    and signs flip, the correlation falls and d stops growing.

    The reference is a plain loop written from these two formulas (``x ← x − γ d_k sign(g_k)``).
    Returns ``{"d": d_k per step, "losses", "losses_reference", "max_param_difference", "steps",
    "lr", "d0"}``.
    """
    model_p, X, y = _tanh_mlp_and_batch(seed)
    model_r, _, _ = _tanh_mlp_and_batch(seed)
    prodigy = optim.Prodigy(model_p.parameters(), lr=lr, betas=(0.0, 0.0), eps=1e-30, d0=d0)
    loss_fn = nn.CrossEntropyLoss()
    x0 = [p.detach().clone() for p in model_r.parameters()]
    d = d0
    ds, losses, losses_ref, max_diff = [], [], [], 0.0
    for _ in range(steps):
        prodigy.zero_grad()
        loss = loss_fn(model_p(X), y)
        loss.backward()
        losses.append(float(loss.detach()))
        prodigy.step()
        ds.append(float(prodigy.param_groups[0]["d"]))
        # the reference: d̂ = <g, x0 - x>/||g||_1, d = max(d, d̂), x <- x - γ d sign(g)
        params = list(model_r.parameters())
        loss_r = loss_fn(model_r(X), y)
        grads = torch.autograd.grad(loss_r, params)
        losses_ref.append(float(loss_r.detach()))
        with torch.no_grad():
            inner = sum(float((g * (a - p)).sum()) for g, a, p in zip(grads, x0, params))
            l1 = sum(float(g.abs().sum()) for g in grads)
            d = max(d, inner / l1)
            for p, g in zip(params, grads):
                p.sub_(lr * d * torch.sign(g))
        for pp, pr in zip(model_p.parameters(), model_r.parameters()):
            max_diff = max(max_diff, float((pp.detach() - pr.detach()).abs().max()))
    return {
        "d": np.asarray(ds),
        "losses": np.asarray(losses),
        "losses_reference": np.asarray(losses_ref),
        "max_param_difference": max_diff,
        "steps": steps,
        "lr": lr,
        "d0": d0,
    }
