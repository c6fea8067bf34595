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
    for P in (5, 30):       # under- and over-parametrized, n = 20
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
