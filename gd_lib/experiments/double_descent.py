r"""Double descent: the test error peaks where the model can just interpolate, then falls again.

Lecture 11. A model with ``P`` parameters fitted by least squares to ``n``
noisy points: for ``P < n`` the fit is the usual least-squares solution; at
``P = n`` the system becomes square and the fit *interpolates* the noise with
a huge norm; for ``P > n`` there are many interpolants and the minimum-norm
one ``a = Φ⁺ y`` (what gradient descent from zero converges to) gets
smoother as ``P`` grows. The test error traces the classical U for
``P < n``, peaks at the interpolation threshold ``P = n``, and descends a
second time beyond it (Belkin et al. 2019, Figure 1).

Two instances, both from :mod:`gd_lib.data.double_descent`:

- **random features** (:func:`random_features_curve`): ``x ~ N(0, I_d)``,
  ``y = xᵀβ + σε``, features ``φ(x) = ReLU(Wx)/√P`` (Mei & Montanari 2019);
  the threshold is ``P = n``.
- **polynomials** (:func:`polynomial_curve`): ``x ~ U[−1, 1]``, Legendre
  features ``P_0..P_D``; ``D + 1`` features, so the threshold is ``D + 1 = n``.

A ridge penalty ``λ‖a‖²`` (:func:`random_features_curve` with ``ridge > 0``)
removes the peak: the solution's norm can no longer explode. With the SVD
``Φ = Σ_i s_i u_i v_iᵀ``, the minimum-norm fit is ``a = Σ_i (u_iᵀy / s_i) v_i``: at
``P = n`` the smallest ``s_i`` is close to 0 and ``‖a‖`` blows up; ridge replaces ``1/s_i``
by ``s_i / (s_i² + λn) ≤ 1/(2√(λn))``, so ``‖a‖ ≤ ‖y‖ / (2√(λn))`` for every ``P``.

Why the peak sits at ``P = n`` can be computed exactly in the "weak features" model
(:func:`weak_features_risk`, :func:`weak_features_curve`; Belkin, Hsu & Xu 2020):
Gaussian inputs, a linear target, a learner that sees only ``P`` of the ``D``
coordinates. The expected test risk is ``s²(1 + P/(n − P − 1))`` below the threshold and
``‖β_T‖²(1 − n/P) + s²(1 + n/(P − n − 1))`` above it, infinite in between.

References:
    M. Belkin, D. Hsu, S. Ma, S. Mandal. Reconciling modern machine-learning practice and the
    classical bias–variance trade-off. PNAS 2019.
    S. Mei, A. Montanari. The generalization error of random features regression. 2019.
    P. Nakkiran et al. Deep double descent: where bigger models and more data hurt. ICLR 2020.
    M. Belkin, D. Hsu, J. Xu. Two models of double descent for weak features. SIAM J. Math. Data
    Sci. 2020 (arXiv 2019).
    T. Hastie, A. Montanari, S. Rosset, R. Tibshirani. Surprises in high-dimensional ridgeless
    least squares interpolation. Ann. Statist. 2022 (arXiv 2019).
"""

from __future__ import annotations

import numpy as np
import torch

import gd_lib
from gd_lib.data import (
    legendre_features,
    min_norm_least_squares,
    polynomial_regression,
    random_features_regression,
    random_relu_features,
)

__all__ = [
    "fit_and_test",
    "random_features_curve",
    "polynomial_curve",
    "peak",
    "weak_features_risk",
    "weak_features_curve",
]


def fit_and_test(
    features_train: torch.Tensor,
    y_train: torch.Tensor,
    features_test: torch.Tensor,
    y_test: torch.Tensor,
    ridge: float = 0.0,
) -> dict:
    r"""Fit ``a`` on the training features and report errors and ``‖a‖``.

    ``ridge = 0``: the minimum-norm least-squares solution ``a = Φ⁺ y``;
    ``ridge = λ > 0``: ``a = (ΦᵀΦ + λ n I)^{-1} Φᵀ y`` (the loss ``‖Φa − y‖²/n + λ‖a‖²``).
    Returns ``{"train_mse", "test_mse", "norm"}``.
    """
    Phi, y = features_train.to(torch.float64), y_train.to(torch.float64)
    if ridge > 0:
        n, P = Phi.shape
        # a = (ΦᵀΦ + λ n I)^{-1} Φᵀ y
        a = torch.linalg.solve(Phi.T @ Phi + ridge * n * torch.eye(P, dtype=Phi.dtype), Phi.T @ y)
    else:
        # a = Φ⁺ y
        a = min_norm_least_squares(Phi, y)
    test_pred = features_test.to(torch.float64) @ a
    return {
        "train_mse": float(((Phi @ a - y) ** 2).mean()),
        "test_mse": float(((test_pred - y_test.to(torch.float64)) ** 2).mean()),
        "norm": float(a.norm()),
    }


def _sweep(seeds: int, make_data, grid, fit) -> dict:
    """``fit(seed, data, int(g))`` for every seed (new data from ``make_data(seed)``) and grid
    value; returns ``{"test_mse", "train_mse", "norm"}`` as arrays of shape (seeds, len(grid))."""
    stats = {"test_mse": [], "train_mse": [], "norm": []}
    for seed in range(seeds):
        data = make_data(seed)
        results = [fit(seed, data, int(g)) for g in grid]
        for k in stats:
            stats[k].append([r[k] for r in results])
    return {k: np.asarray(v) for k, v in stats.items()}


def random_features_curve(
    quick: bool | None = None,
    *,
    n_train: int = 100,
    input_dim: int = 20,
    noise: float = 0.5,
    num_features=None,
    seeds: int | None = None,
    ridge: float = 0.0,
) -> dict:
    """Test error of random-features regression against the number of features ``P``.

    ``num_features`` defaults to ``10, 20, ..., 3 n`` (quick) or ``5, 10, ..., 4 n`` (full),
    so ``P = n`` is on the grid. Each seed draws new data and new features.

    Returns ``{"num_features" (P,), "test_mse" (seeds × P), "train_mse", "norm",
    "median_test_mse" (P,), "threshold": n_train}``.
    """
    quick = gd_lib.quick_mode(quick)
    if num_features is None:
        step = 10 if quick else 5
        num_features = np.arange(step, (3 if quick else 4) * n_train + 1, step)
    num_features = np.asarray(num_features, dtype=int)
    seeds = (4 if quick else 10) if seeds is None else seeds

    def fit(seed, data, P):
        # the same W for train and test: one feature map per (seed, P)
        F_train = random_relu_features(data.X_train, P, seed=1000 + seed)
        F_test = random_relu_features(data.X_val, P, seed=1000 + seed)
        return fit_and_test(F_train, data.y_train, F_test, data.y_val, ridge)

    out = _sweep(
        seeds,
        lambda seed: random_features_regression(n_train, 1000, input_dim, noise=noise, seed=seed),
        num_features,
        fit,
    )
    out["num_features"] = num_features
    out["median_test_mse"] = np.median(out["test_mse"], axis=0)
    out["threshold"] = n_train
    out["noise_variance"] = noise**2
    out["ridge"] = ridge
    if ridge > 0:
        # ‖a‖ ≤ ‖y‖ / (2 √(λ n)) for every P: s / (s² + λn) is largest at s = √(λn)
        y_norms = np.array(
            [
                float(random_features_regression(n_train, 1000, input_dim, noise=noise, seed=seed).y_train.norm())
                for seed in range(seeds)
            ]
        )
        out["norm_bound"] = y_norms / (2 * np.sqrt(ridge * n_train))
    return out


def polynomial_curve(
    quick: bool | None = None,
    *,
    n_train: int = 20,
    true_degree: int = 5,
    noise: float = 0.1,
    degrees=None,
    seeds: int | None = None,
) -> dict:
    """Test error of minimum-norm Legendre-polynomial regression against the degree ``D``.

    ``D + 1`` features, so the threshold is ``D = n − 1``. Returns
    ``{"degrees", "test_mse" (seeds × D), "train_mse", "norm", "median_test_mse", "threshold"}``.
    """
    quick = gd_lib.quick_mode(quick)
    degrees = np.arange(1, 3 * n_train + 1) if degrees is None else np.asarray(degrees, dtype=int)
    seeds = (4 if quick else 20) if seeds is None else seeds

    def fit(seed, data, D):
        return fit_and_test(
            legendre_features(data.X_train[:, 0], D), data.y_train, legendre_features(data.X_val[:, 0], D), data.y_val
        )

    out = _sweep(
        seeds,
        lambda seed: polynomial_regression(n_train, 500, true_degree=true_degree, noise=noise, seed=seed),
        degrees,
        fit,
    )
    out["degrees"] = degrees
    out["median_test_mse"] = np.median(out["test_mse"], axis=0)
    out["threshold"] = n_train - 1
    return out


def peak(x, y) -> dict:
    """Where ``y`` is largest: ``{"x": x[i], "index": i, "value": y[i]}``."""
    i = int(np.argmax(np.asarray(y)))
    return {"x": float(np.asarray(x)[i]), "index": i, "value": float(np.asarray(y)[i])}


def weak_features_risk(num_features, n_train: int, signal_used, signal_unused, noise_variance: float) -> np.ndarray:
    r"""Expected test risk of the minimum-norm least-squares fit on ``P`` of ``D`` Gaussian features.

    The model (Belkin, Hsu & Xu 2020, Theorem 1): ``x ~ N(0, I_D)``, ``y = xᵀβ + σε``; the learner
    uses the coordinates ``T`` (``|T| = P``) only, ``a = X_T⁺ y``. With ``s² = ‖β_{T^c}‖² + σ²``
    (``signal_unused + noise_variance``: what the learner cannot fit acts as noise) and
    ``‖β_T‖²`` = ``signal_used``, the risk ``E[(y − x_Tᵀa)²]`` of a fresh point is

    .. math::

        s^2 \Big(1 + \frac{P}{n - P - 1}\Big) \quad (P \le n - 2), \qquad
        \|\beta_T\|^2 \Big(1 - \frac nP\Big) + s^2 \Big(1 + \frac{n}{P - n - 1}\Big) \quad (P \ge n + 2),

    and infinite for ``|P − n| ≤ 1``. Derivation: below ``n``, ``a − β_T = (X_TᵀX_T)^{-1} X_Tᵀ η``
    and ``E[(X_TᵀX_T)^{-1}] = I/(n − P − 1)`` (the inverse-Wishart mean); above ``n``,
    ``a − β_T = −(I − Π) β_T + X_T⁺ η`` with ``Π`` the projection on the ``n``-dimensional row
    space of ``X_T`` (``E‖(I − Π)β_T‖² = (1 − n/P)‖β_T‖²``) and ``E tr (X_T X_Tᵀ)^{-1} = n/(P − n − 1)``.
    ``signal_used`` and ``signal_unused`` may be arrays (one value per ``P``).
    """
    P = np.asarray(num_features, dtype=float)
    s2 = np.asarray(signal_unused, dtype=float) + noise_variance
    used = np.broadcast_to(np.asarray(signal_used, dtype=float), P.shape)
    s2 = np.broadcast_to(s2, P.shape)
    risk = np.full(P.shape, np.inf)
    under, over = P <= n_train - 2, P >= n_train + 2
    risk[under] = s2[under] * (1 + P[under] / (n_train - P[under] - 1))
    risk[over] = used[over] * (1 - n_train / P[over]) + s2[over] * (1 + n_train / (P[over] - n_train - 1))
    return risk


def weak_features_curve(
    quick: bool | None = None,
    *,
    n_train: int = 40,
    total_features: int = 160,
    noise: float = 0.5,
    num_features=None,
    seeds: int | None = None,
) -> dict:
    """Monte-Carlo check of :func:`weak_features_risk`: the risk of ``a = X_T⁺ y`` for each ``P``.

    ``β_j = 1/√D`` (unit signal spread evenly), so ``‖β_T‖² = P/D``. The risk of each fit is
    computed exactly for a fresh Gaussian point, ``‖a − β_T‖² + ‖β_{T^c}‖² + σ²``, so the only
    randomness is the training set. Returns ``{"num_features", "risk" (seeds × P), "mean_risk",
    "standard_error", "predicted_risk", "threshold"}``.
    """
    quick = gd_lib.quick_mode(quick)
    seeds = (200 if quick else 1000) if seeds is None else seeds
    D = total_features
    num_features = np.arange(2, D + 1, 2) if num_features is None else np.asarray(num_features, dtype=int)
    beta = torch.full((D,), 1.0 / np.sqrt(D), dtype=torch.float64)
    X = torch.stack(
        [
            torch.randn(n_train, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            for seed in range(seeds)
        ]
    )  # (seeds, n, D)
    eps = torch.randn(seeds, n_train, generator=torch.Generator().manual_seed(seeds), dtype=torch.float64)
    y = X @ beta + noise * eps  # (seeds, n)
    risks = np.empty((seeds, len(num_features)))
    for j, P in enumerate(num_features):
        # a = X_T⁺ y for every seed at once: (X_TᵀX_T)^{-1} X_Tᵀ y below n, X_Tᵀ (X_T X_Tᵀ)^{-1} y above
        XT = X[:, :, :P]
        if P <= n_train:
            a = torch.linalg.solve(XT.mT @ XT, XT.mT @ y.unsqueeze(-1)).squeeze(-1)  # (seeds, P)
        else:
            a = (XT.mT @ torch.linalg.solve(XT @ XT.mT, y.unsqueeze(-1))).squeeze(-1)
        # E[(y − x_Tᵀa)²] = ‖a − β_T‖² + ‖β_{T^c}‖² + σ² for a fresh x ~ N(0, I)
        risks[:, j] = (((a - beta[:P]) ** 2).sum(-1) + (beta[P:] ** 2).sum() + noise**2).numpy()
    used = num_features / D
    return {
        "num_features": num_features,
        "risk": risks,
        "mean_risk": risks.mean(axis=0),
        "standard_error": risks.std(axis=0, ddof=1) / np.sqrt(seeds),
        "predicted_risk": weak_features_risk(num_features, n_train, used, 1 - used, noise**2),
        "threshold": n_train,
        "noise_variance": noise**2,
    }
