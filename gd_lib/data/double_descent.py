"""Regression data for double descent: random-features and polynomial regression.

Random features (Mei & Montanari, 2019): inputs ``x ~ N(0, I_d)``, a linear
teacher ``y = xᵀβ + σ ε`` with ``‖β‖ = 1``, and features
``φ(x) = ReLU(Wx) / √P`` with ``W ~ N(0, 1/d)`` (``P × d``). The minimum-norm
least-squares fit ``a = Φ⁺ y`` has a test error that peaks at the interpolation
threshold ``P ≈ n`` and falls again for ``P ≫ n`` (Belkin et al., 2019).

Polynomial regression: ``x ~ U[−1, 1]``, ``y = g(x) + σ ε`` with ``g`` a fixed
combination of Legendre polynomials of degree ≤ ``true_degree``; fitting
``legendre_features(x, D)`` for growing ``D`` with the minimum-norm solution
shows the same curve in the degree.

References:
    M. Belkin, D. Hsu, S. Ma, S. Mandal. Reconciling modern machine-learning practice and the
    classical bias–variance trade-off. PNAS 2019.
    S. Mei, A. Montanari. The generalization error of random features regression. 2019.
"""

from __future__ import annotations

import torch

from gd_lib._checks import check_int, check_number

from .split import Split


def random_features_regression(
    n_train: int = 100,
    n_test: int = 1000,
    input_dim: int = 20,
    *,
    noise: float = 0.5,
    seed: int = 0,
    dtype=torch.float64,
) -> Split:
    """``x ~ N(0, I_d)``, ``y = xᵀβ + noise · ε`` with a unit-norm ``β`` (``info["beta"]``)."""
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    check_int("input_dim", input_dim, 1)
    check_number("noise", noise, 0.0)
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    beta = torch.randn(input_dim, generator=gen, dtype=torch.float64)
    beta = beta / beta.norm()
    X = torch.randn(n_train + n_test, input_dim, generator=gen, dtype=torch.float64)
    y = X @ beta + noise * torch.randn(n_train + n_test, generator=gen, dtype=torch.float64)
    return Split(
        X[:n_train].to(dtype),
        y[:n_train].to(dtype),
        X[n_train:].to(dtype),
        y[n_train:].to(dtype),
        {"beta": beta.to(dtype), "noise": noise},
    )


def random_relu_features(X: torch.Tensor, num_features: int, *, seed: int = 0) -> torch.Tensor:
    """``Φ = ReLU(X Wᵀ) / √P`` with ``W ~ N(0, 1/d)`` of shape ``P × d``, fixed by ``seed``."""
    check_int("num_features", num_features, 1)
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(num_features, X.shape[1], generator=gen, dtype=torch.float64) / X.shape[1] ** 0.5
    return torch.relu(X.to(torch.float64) @ W.T).to(X.dtype) / num_features**0.5


def legendre_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``[P_0(x), ..., P_D(x)]`` (N × (D+1)) by Bonnet's recursion
    ``(k+1) P_{k+1} = (2k+1) x P_k − k P_{k−1}``."""
    check_int("degree", degree, 0)
    columns = [torch.ones_like(x), x]
    for k in range(1, degree):
        columns.append(((2 * k + 1) * x * columns[k] - k * columns[k - 1]) / (k + 1))
    return torch.stack(columns[: degree + 1], dim=1)


def polynomial_regression(
    n_train: int = 20,
    n_test: int = 500,
    *,
    true_degree: int = 5,
    noise: float = 0.1,
    seed: int = 0,
    dtype=torch.float64,
) -> Split:
    """``x ~ U[−1, 1]`` (shape N × 1), ``y = Σ_{k ≤ true_degree} c_k P_k(x) + noise · ε``
    with ``c_k ~ N(0, 1/(k+1))`` (``info["coefficients"]``)."""
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    check_int("true_degree", true_degree, 0)
    check_number("noise", noise, 0.0)
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    coefficients = (
        torch.randn(true_degree + 1, generator=gen, dtype=torch.float64)
        / torch.arange(1, true_degree + 2, dtype=torch.float64).sqrt()
    )
    x = 2 * torch.rand(n_train + n_test, generator=gen, dtype=torch.float64) - 1
    y = legendre_features(x, true_degree) @ coefficients + noise * torch.randn(
        n_train + n_test, generator=gen, dtype=torch.float64
    )
    x = x.unsqueeze(1)
    return Split(
        x[:n_train].to(dtype),
        y[:n_train].to(dtype),
        x[n_train:].to(dtype),
        y[n_train:].to(dtype),
        {"coefficients": coefficients.to(dtype), "noise": noise, "true_degree": true_degree},
    )


def min_norm_least_squares(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``a = Φ⁺ y``: the least-squares solution of smallest norm (the interpolant when ``P ≥ n``)."""
    return torch.linalg.pinv(features.to(torch.float64)) @ targets.to(torch.float64)
