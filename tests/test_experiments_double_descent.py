"""Lecture 11, double descent: the test-error peak sits at the interpolation threshold.

Measured (quick mode, 4 seeds, n = 100, P = 10, 20, ..., 300): the median test MSE peaks
at P = 100 (≈ 29 there vs ≈ 0.75 at P = 40 and ≈ 0.65 at P = 300); the polynomial curve
(n = 20) peaks at degree 20, one step from the threshold D = n − 1 = 19.
"""

import numpy as np
import torch

from gd_lib.experiments import double_descent as dd


def test_min_norm_fit_matches_numpy_lstsq():
    # numpy's lstsq returns the minimum-norm least-squares solution (SVD based): an independent
    # reference. Same maths in float64 -> agreement to ~1e-10 on this well-scaled problem.
    gen = torch.Generator().manual_seed(0)
    for P in (5, 30):  # under- and over-parametrized, n = 20
        Phi = torch.randn(20, P, generator=gen, dtype=torch.float64)
        y = torch.randn(20, generator=gen, dtype=torch.float64)
        a_ref = np.linalg.lstsq(Phi.numpy(), y.numpy(), rcond=None)[0]
        result = dd.fit_and_test(Phi, y, Phi, y)
        assert abs(result["norm"] - np.linalg.norm(a_ref)) < 1e-10
        assert abs(result["train_mse"] - np.mean((Phi.numpy() @ a_ref - y.numpy()) ** 2)) < 1e-10
        if P > 20:
            assert result["train_mse"] < 1e-20  # P > n: the fit interpolates


def test_ridge_matches_normal_equations():
    # (ΦᵀΦ + λ n I) a = Φᵀ y written out with numpy; float64 -> 1e-10.
    gen = torch.Generator().manual_seed(1)
    Phi = torch.randn(20, 30, generator=gen, dtype=torch.float64)
    y = torch.randn(20, generator=gen, dtype=torch.float64)
    A, b = Phi.numpy(), y.numpy()
    a_ref = np.linalg.solve(A.T @ A + 0.1 * 20 * np.eye(30), A.T @ b)
    assert abs(dd.fit_and_test(Phi, y, Phi, y, ridge=0.1)["norm"] - np.linalg.norm(a_ref)) < 1e-10


def test_random_features_test_error_peaks_at_the_interpolation_threshold():
    result = dd.random_features_curve(quick=True)
    P, median = result["num_features"], result["median_test_mse"]
    step = P[1] - P[0]
    peak = dd.peak(P, median)
    # the claim: the peak is within one grid step of P = n
    assert abs(peak["x"] - result["threshold"]) <= step, peak
    # and it descends again: the widest model beats the threshold by far and beats the
    # best under-parametrized model (measured 0.65 vs 0.75)
    under = median[P < result["threshold"]]
    assert median[-1] < peak["value"] / 10
    assert median[-1] < under.min()


def test_polynomial_test_error_peaks_at_the_interpolation_threshold():
    result = dd.polynomial_curve(quick=True)
    peak = dd.peak(result["degrees"], result["median_test_mse"])
    assert abs(peak["x"] - result["threshold"]) <= 1, peak
    # beyond the threshold the error falls by orders of magnitude (measured 7e15 -> 0.4)
    assert result["median_test_mse"][-1] < peak["value"] * 1e-6


def test_ridge_caps_the_norm_at_every_width():
    # ‖a‖ ≤ ‖y‖ / (2 √(λ n)) for every P (s / (s² + λn) ≤ 1 / (2 √(λn))): measured max 5.4 vs bound 6.0
    result = dd.random_features_curve(quick=True, ridge=1e-2)
    assert np.all(result["norm"] <= result["norm_bound"][:, None] * (1 + 1e-9))
    # and the ridge curve has no peak at the threshold: its worst point is far below the
    # min-norm peak (measured 0.9 vs 29)
    plain = dd.random_features_curve(quick=True)
    assert result["median_test_mse"].max() < plain["median_test_mse"].max() / 10


def test_weak_features_risk_formula_by_hand():
    # n = 40, ‖β_T‖² = 0.25, s² = ‖β_{T^c}‖² + σ² = 0.5 + 0.5 = 1:
    # below, 1 + P/(n−P−1); above, ‖β_T‖²(1 − n/P) + 1 + n/(P−n−1)
    risk = dd.weak_features_risk([10, 40, 41, 60], 40, 0.25, 0.5, 0.5)
    assert abs(risk[0] - (1 + 10 / 29)) < 1e-14  # same arithmetic, reordered
    assert np.isinf(risk[1]) and np.isinf(risk[2])
    assert abs(risk[3] - (0.25 * (1 - 40 / 60) + 1 + 40 / 19)) < 1e-14


def test_weak_features_monte_carlo_matches_the_formula():
    result = dd.weak_features_curve(quick=True)
    P, n = result["num_features"], result["threshold"]
    # the fits themselves: one seed and width recomputed with numpy's minimum-norm lstsq (an
    # independent solver; same maths in float64 -> 1e-8 on these well-conditioned widths)
    D = 160
    X = torch.randn(n, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    eps = torch.randn(
        result["risk"].shape[0],
        n,
        generator=torch.Generator().manual_seed(result["risk"].shape[0]),
        dtype=torch.float64,
    )[3].numpy()
    beta = np.full(D, 1 / np.sqrt(D))
    y = X @ beta + 0.5 * eps
    for j in (4, len(P) - 1):
        a = np.linalg.lstsq(X[:, : P[j]], y, rcond=None)[0]
        risk = np.sum((a - beta[: P[j]]) ** 2) + np.sum(beta[P[j] :] ** 2) + 0.25
        assert abs(result["risk"][3, j] - risk) < 1e-8 * risk
    # the claim: the Monte-Carlo mean follows Belkin-Hsu-Xu's expected risk. Away from the
    # threshold (|P − n| ≥ 10, where the risk has a finite variance and the sample mean is
    # close to normal) within 4.5 standard errors (75 widths: a 4.5-SE miss by chance has
    # probability ~5e-4 in all); measured at most 2.3 SE.
    away = np.abs(P - n) >= 10
    z = (result["mean_risk"] - result["predicted_risk"]) / result["standard_error"]
    assert np.all(np.abs(z[away]) < 4.5), z[away]
    # the shape: the risk peaks next to P = n, and the widest model beats the best narrow one
    assert abs(P[np.argmax(result["mean_risk"])] - n) <= 2
    assert result["mean_risk"][-1] < result["mean_risk"][P < n].min()
