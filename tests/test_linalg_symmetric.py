"""Symmetric matrix functions of gd_lib.linalg: inverse p-th roots and eigenbases.

Every approximation is checked against an exact computation: X = A^{-1/p} raised back
to the p-th power must give A^{-1} (so X^p A = I); the coupled Newton iteration must
agree with the eigendecomposition; damping must equal its closed form on singular
matrices; the QR refresh must converge to the eigenvectors numpy finds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gd_lib.linalg import (
    inverse_root_eigh,
    inverse_root_from_eigh,
    inverse_root_newton,
    qr_power_iteration_refresh,
    symmetric_eigh,
)


def random_spd(n: int, condition: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a Haar-random Q and eigenvalues log-spaced from 1 to 1/condition."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.logspace(0, -math.log10(condition), n, dtype=torch.float64)
    A = (Q * eigenvalues) @ Q.T
    return (0.5 * (A + A.T)).to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


# --- inverse roots by eigendecomposition -------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([1, 2, 5, 16, 40]),
    log_condition=st.sampled_from([0, 2, 4, 6]),
    p=st.sampled_from([2, 4, 8]),
    seed=st.integers(0, 2**16),
)
def test_inverse_root_raised_back_gives_A(n, log_condition, p, seed):
    A = random_spd(n, 10.0**log_condition, seed)
    X = inverse_root_eigh(A, p)
    # X = A^{-1/p}  <=>  X^p A = I. In float64 the backward error of eigh is ~1e-16 ‖A‖,
    # amplified by at most the condition number (≤ 1e6): 1e-8 leaves a wide margin.
    residual = torch.linalg.matrix_power(X, p) @ A - torch.eye(n, dtype=A.dtype)
    assert float(residual.abs().max()) < 1e-8
    # symmetric, and positive definite with the expected extreme eigenvalues
    assert torch.allclose(X, X.T, atol=1e-12 * float(X.abs().max()))
    lam = torch.linalg.eigvalsh(X)
    spectrum_of_A = torch.logspace(0, -log_condition, n, dtype=torch.float64)  # as built
    assert lam.max() == pytest.approx(float(spectrum_of_A.min()) ** (-1.0 / p), rel=1e-9)
    assert lam.min() == pytest.approx(float(spectrum_of_A.max()) ** (-1.0 / p), rel=1e-9)


def test_inverse_root_eigh_matches_scipy_fractional_power():
    """An independent implementation (scipy's Schur–Padé fractional_matrix_power)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A = random_spd(12, 1e3, seed=3)
    for p in (2, 4, 8):
        ours = inverse_root_eigh(A, p).numpy()
        theirs = np.real(scipy_linalg.fractional_matrix_power(A.numpy(), -1.0 / p))
        # two different float64 algorithms on a condition-1e3 matrix: ~1e-13 apart
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-10


def test_inverse_root_float32_input_with_float64_reference_dtype():
    A = random_spd(20, 1e2, seed=4, dtype=torch.float32)
    X = inverse_root_eigh(A, 4, dtype=torch.float64)
    assert X.dtype == torch.float32
    exact = inverse_root_eigh(A.double(), 4)
    # computed in float64 and rounded once to float32: ≤ a few ulps (1.2e-7 each)
    assert rel(X.double(), exact) < 1e-6


def test_batched_inverse_root_equals_one_at_a_time():
    batch = torch.stack([random_spd(8, 1e3, seed=s) for s in range(5)])
    X = inverse_root_eigh(batch, 4, eps=1e-6)
    for b in range(5):
        # batched LAPACK calls run the same kernel per matrix: agreement to round-off
        assert rel(X[b], inverse_root_eigh(batch[b], 4, eps=1e-6)) < 1e-12


# --- damping on singular / slightly indefinite matrices --------------------------


def test_eps_on_rank_one_matrix_matches_closed_form():
    """A = v vᵀ is singular; (A + εI)^{-1/p} = ε^{-1/p}(I - u uᵀ) + (‖v‖² + ε)^{-1/p} u uᵀ."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, generator=g, dtype=torch.float64)
    A = torch.outer(v, v)
    u = v / v.norm()
    eps = 1e-3
    for p in (2, 4):
        expected = eps ** (-1 / p) * (torch.eye(7, dtype=torch.float64) - torch.outer(u, u)) + (
            v.norm() ** 2 + eps
        ) ** (-1 / p) * torch.outer(u, u)
        X = inverse_root_eigh(A, p, eps=eps)
        # eigh of a rank-one matrix: its zero eigenvalues come out as ±1e-16·‖v‖²; the shift
        # moves all eigenvalues by at most that, a relative change ~1e-13 after ε = 1e-3.
        assert rel(X, expected) < 1e-10
        assert torch.isfinite(X).all()


def test_zero_matrix_with_eps_is_scaled_identity():
    X = inverse_root_eigh(torch.zeros(4, 4, dtype=torch.float64), 4, eps=1e-8)
    assert torch.allclose(X, 1e-8**-0.25 * torch.eye(4, dtype=torch.float64), rtol=1e-12)


def test_negative_eigenvalue_is_shifted_as_distributed_shampoo_does():
    """λ = (2, 1, -1e-3): eigenvalues are shifted by +1e-3, then ε is added."""
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    lam = torch.tensor([2.0, 1.0, -1e-3], dtype=torch.float64)
    A = (Q * lam) @ Q.T
    eps = 1e-6
    damped = lam + 1e-3 + eps
    expected = (Q * damped**-0.5) @ Q.T
    assert rel(inverse_root_eigh(A, 2, eps=eps), expected) < 1e-9
    # without the shift the negative eigenvalue gives NaN: the caller asked for it
    assert torch.isnan(inverse_root_eigh(A, 2, eps=eps, shift_negative=False)).any()


def test_inverse_root_from_eigh_uses_given_decomposition():
    A = random_spd(6, 10.0, seed=5)
    lam, Q = symmetric_eigh(A)
    assert rel(inverse_root_from_eigh(lam, Q, 4, 1e-4), inverse_root_eigh(A, 4, eps=1e-4)) < 1e-14


def test_non_finite_matrix_raises_clear_error():
    A = random_spd(5, 10.0, seed=6)
    A[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        symmetric_eigh(A)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="square"):
        inverse_root_eigh(torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="p"):
        inverse_root_eigh(torch.eye(3), 0)
    with pytest.raises(ValueError, match="p"):
        inverse_root_newton(torch.eye(3), 0)


# --- coupled Newton against eigh -------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 17, 50])
@pytest.mark.parametrize("log_condition", [0, 2, 4])
@pytest.mark.parametrize("p", [2, 4, 8])
def test_coupled_newton_matches_eigh(n, log_condition, p):
    A = random_spd(n, 10.0**log_condition, seed=n * 100 + p)
    result = inverse_root_newton(A, p, max_iterations=200, tolerance=1e-10)
    assert float(result.error.max()) <= 1e-10, f"did not converge in {result.iterations} iterations"
    exact = inverse_root_eigh(A, p)
    # stopping at max|M - I| ≤ 1e-10 leaves a relative error ≈ 1e-10/p in X (M = X^p A);
    # round-off across ≤ 200 float64 products adds ~1e-12 · cond^{1/p}: 1e-6 is the spec.
    assert rel(result.X, exact) < 1e-6
    # the invariant M = X^p A of the coupled iteration
    assert rel(result.M, torch.linalg.matrix_power(result.X, p) @ A) < 1e-8


def test_coupled_newton_default_tolerance_and_eps():
    A = random_spd(30, 1e3, seed=7)
    result = inverse_root_newton(A, 4, eps=1e-3)
    assert float(result.error.max()) <= 1e-6
    # tolerance 1e-6 on M gives ≈ 1e-6/4 relative error in X (see the docstring)
    assert rel(result.X, inverse_root_eigh(A, 4, eps=1e-3)) < 1e-6


def test_coupled_newton_batched_and_fixed_iterations():
    batch = torch.stack([random_spd(10, 1e2, seed=s) for s in range(4)])
    result = inverse_root_newton(batch, 4, max_iterations=40, tolerance=None)
    assert result.iterations == 40  # no early exit without a tolerance
    for b in range(4):
        assert rel(result.X[b], inverse_root_eigh(batch[b], 4)) < 1e-9


def test_coupled_newton_float32_matches_float64_eigh():
    A = random_spd(32, 1e2, seed=8)
    result = inverse_root_newton(A.float(), 4, max_iterations=100, tolerance=1e-5)
    # float32 products: errors ~1e-6 relative; 1e-4 is a float32 tolerance, not the float64 one
    assert rel(result.X.double(), inverse_root_eigh(A, 4)) < 1e-4


# --- eigenbases and the QR refresh ------------------------------------------------


def test_symmetric_eigh_descending_reconstructs_A():
    A = random_spd(9, 1e3, seed=9)
    lam, Q = symmetric_eigh(A, descending=True)
    assert torch.all(lam[:-1] >= lam[1:])
    assert rel((Q * lam) @ Q.T, A) < 1e-13
    np_lam = np.linalg.eigvalsh(A.numpy())[::-1]
    assert np.allclose(lam.numpy(), np_lam, rtol=1e-12, atol=0)


def test_symmetric_eigh_half_precision_runs_in_float32():
    A = random_spd(6, 10.0, seed=10).to(torch.bfloat16)
    lam, Q = symmetric_eigh(A)
    assert lam.dtype == torch.bfloat16 and Q.dtype == torch.bfloat16


def test_qr_refresh_converges_to_eigenbasis():
    """Orthogonal iteration from a random basis: |Q_kᵀ V| → I (V: numpy's eigenvectors, descending)."""
    n = 8
    g = torch.Generator().manual_seed(11)
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.linspace(8.0, 1.0, n, dtype=torch.float64)  # distinct: ratios ≤ 8/7 per step
    A = (V * lam) @ V.T
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    for _ in range(400):
        Q, _ = qr_power_iteration_refresh(A, Q)
    # subspace iteration converges like (λ_{i+1}/λ_i)^k ≤ (7/8)^400 ≈ 6e-24 → round-off
    alignment = (Q.T @ V).abs()
    assert torch.allclose(alignment, torch.eye(n, dtype=torch.float64), atol=1e-8)
    # and diag(Qᵀ A Q) gives the eigenvalues in descending order
    assert torch.allclose(torch.diag(Q.T @ A @ Q), lam, rtol=1e-10)


def test_qr_refresh_fixed_point_and_permutation():
    """From an exact eigenbasis in the wrong order, one refresh sorts it and stays an eigenbasis."""
    A = random_spd(6, 1e2, seed=12)
    lam, V = symmetric_eigh(A)  # ascending
    Q_new, order = qr_power_iteration_refresh(A, V)
    assert torch.equal(order, torch.arange(5, -1, -1))
    # QR of V diag(λ) sorted descending: the same eigenvectors up to sign
    assert torch.allclose((Q_new.T @ V.flip(-1)).abs(), torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_qr_refresh_batched_equals_one_at_a_time():
    As = torch.stack([random_spd(5, 10.0, seed=s) for s in range(3)])
    g = torch.Generator().manual_seed(13)
    Qs = torch.linalg.qr(torch.randn(3, 5, 5, generator=g, dtype=torch.float64)).Q
    Q_new, order = qr_power_iteration_refresh(As, Qs)
    for b in range(3):
        q, o = qr_power_iteration_refresh(As[b], Qs[b])
        assert torch.equal(o, order[b])
        assert torch.allclose(q, Q_new[b], atol=1e-13)


def test_coupled_newton_stops_when_rounding_stops_the_error_shrinking():
    """float32, condition 1e6: max|M - I| plateaus at ≈ 2.4e-7 and cannot reach 1e-7; without
    the guard the iteration runs to max_iterations, with it it stops at the plateau."""
    A = random_spd(64, 1e6, seed=11).float()
    exact = inverse_root_eigh(A.double(), 4)
    guarded = inverse_root_newton(A, 4, max_iterations=100, tolerance=1e-7)
    unguarded = inverse_root_newton(A, 4, max_iterations=100, tolerance=1e-7, max_error_ratio=None)
    assert unguarded.iterations == 100
    assert guarded.iterations < 40
    # the guarded root is as accurate as float32 allows (relative error ≲ 1e-3 at condition 1e6)
    assert rel(guarded.X.double(), exact) < 1e-3
    assert rel(guarded.X.double(), exact) <= 1.5 * rel(unguarded.X.double(), exact) + 1e-6


def test_shampoo_newton_default_tolerance_is_the_references():
    from gd_lib.optim import ShampooConfig

    config = ShampooConfig(root_method="newton")
    assert config.newton_tolerance == 1e-3 and config.newton_max_error_ratio == 1.0
    A = random_spd(32, 1e3, seed=12)
    loose = inverse_root_newton(A, 4, tolerance=config.newton_tolerance)
    strict = inverse_root_newton(A, 4, tolerance=1e-6)
    assert loose.iterations < strict.iterations
    # τ = 1e-3 on max|M - I| gives ≈ τ/4 relative error in X
    assert rel(loose.X, inverse_root_eigh(A, 4)) < 2.5e-4
