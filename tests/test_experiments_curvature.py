"""Lecture 3 (Curvature): each claim, asserted on gd_lib.experiments.curvature.

Measured in quick mode when these tests were written (seed 0):
- tanh MLP 5 → 8 → 3 (P = 75), cross-entropy: ‖GGN − F‖/‖F‖ = 5e-16, ‖H − GGN‖/‖GGN‖ = 1.25,
  ‖F_emp − F‖/‖F‖ = 0.50.
- First layer's block (8 × (5 + 1) = 48 parameters), relative Frobenius errors: KFAC 0.311,
  EKFAC 0.283, Shampoo (L ⊗ R / tr F) 0.265; second layer: KFAC 0.156, EKFAC 0.149, Shampoo 0.153.
- Lanczos (40 steps) on the Hessian of a digits MLP (P = 1210): the 5 largest and 3 smallest
  Ritz values equal eigvalsh's to ~1e-4 or better.
- GD sharpness (600 steps): lr 1.0 rises 1.33 → 2.07 (2/lr = 2); lr 0.5 rises 1.33 → peaks at
  5.1 → late median 4.15 (2/lr = 4).
"""

import numpy as np
import pytest
import torch

from gd_lib.experiments import curvature


@pytest.fixture(scope="module")
def matrices():
    return curvature.curvature_matrices(quick=True)


def test_curvature_matrices_are_symmetric_and_the_ggn_is_the_fisher(matrices):
    for name in ("hessian", "ggn", "fisher", "empirical_fisher"):
        M = matrices[name]
        assert M.shape == (75, 75)
        assert np.allclose(M, M.T, atol=1e-12), name
    # for cross-entropy GGN = Fisher; two different computations (J^T Λ J vs a sum of per-class
    # outer products), float64 round-off
    assert matrices["ggn_minus_fisher"] < 1e-12
    # the GGN and Fishers are PSD, the Hessian at a random init is not
    for name in ("ggn", "fisher", "empirical_fisher"):
        assert np.linalg.eigvalsh(matrices[name]).min() > -1e-12, name
    assert np.linalg.eigvalsh(matrices["hessian"]).min() < -1e-3
    assert matrices["hessian_minus_ggn"] > 0.1 and matrices["empirical_minus_fisher"] > 0.1


@pytest.mark.parametrize("layer_index", [0, 1])
def test_ekfac_error_is_at_most_kfac_error_on_the_block(layer_index):
    result = curvature.kronecker_approximations(quick=True, layer_index=layer_index)
    errors = result["errors"]
    # the lecture's claim (EKFAC's diagonal is Frobenius-optimal in KFAC's eigenbasis);
    # measured 0.283 ≤ 0.311 (layer 0) and 0.149 ≤ 0.156 (layer 1)
    assert errors["EKFAC"] <= errors["KFAC"] + 1e-12, errors
    assert 0 < errors["EKFAC"] < 1 and 0 < errors["Shampoo"] < 1
    # the block assembled from ĝ, ā equals the dense GGN block (reordered to vec([W, b])):
    # two independent computations in float64
    assert np.allclose(result["block_from_factors"], result["exact"], atol=1e-12)
    # the Shampoo approximation is normalised to the block's trace (L ⊗ R / tr F has trace tr F)
    assert np.trace(result["Shampoo"]) == pytest.approx(np.trace(result["exact"]), rel=1e-10)
    # SOAP's diagonal is Frobenius-optimal in Shampoo's eigenbasis, in which Shampoo's L ⊗ R is
    # diagonal too: never worse (measured 0.263 ≤ 0.265 and 0.141 ≤ 0.153)
    assert errors["SOAP"] <= errors["Shampoo"] + 1e-12, errors
    # the lecture's correction: Shampoo's L^{-1/4} ⊗ R^{-1/4} is tr(F)^{-1/4} F̂^{-1/4}, the
    # approximation to the power -1/4 (two eigendecompositions in float64: round-off)
    assert result["shampoo_is_fisher_to_the_minus_quarter"] < 1e-10
    # KFAC's two small solves equal one solve with the Kronecker product (float64, damped)
    assert result["kfac_solve_by_factors_error"] < 1e-10


def test_soap_and_ekfac_diagonals_are_the_second_moments_in_their_bases():
    # a naive check of the construction: Qᵀ(approximation)Q is diagonal, and its diagonal equals
    # the diagonal of the exact block in the same basis (u_kᵀ F u_k)
    result = curvature.kronecker_approximations(quick=True, layer_index=0)
    exact = result["exact"]
    for approximation, (left, right) in (("EKFAC", ("G", "A")), ("SOAP", ("L", "R"))):
        Q = np.kron(np.linalg.eigh(result[left])[1], np.linalg.eigh(result[right])[1])
        rotated = Q.T @ result[approximation] @ Q
        np.testing.assert_allclose(rotated - np.diag(np.diag(rotated)), 0, atol=1e-12)
        np.testing.assert_allclose(np.diag(rotated), np.diag(Q.T @ exact @ Q), atol=1e-12)


def test_kfac_factors_match_a_naive_computation():
    model, X, y = curvature.small_network()
    layer = model.layers[0]
    a, g = curvature.block_statistics(model, layer, X)
    # naive: per example n, the exact output Hessian Λ_n = diag(π) − π πᵀ and the Jacobian of the
    # logits w.r.t. the layer's pre-activation s_n; G = (1/N) Σ_n J_nᵀ Λ_n J_n
    N = X.shape[0]
    G_naive = torch.zeros(layer.out_features, layer.out_features, dtype=torch.float64)
    A_naive = torch.zeros(layer.in_features + 1, layer.in_features + 1, dtype=torch.float64)
    for n in range(N):
        x = X[n]
        s = layer(x)
        J = torch.autograd.functional.jacobian(lambda s_: model.layers[1](torch.tanh(s_)), s)  # (C, d_out)
        pi = torch.softmax(model(x.unsqueeze(0))[0], 0).detach()
        Lam = torch.diag(pi) - torch.outer(pi, pi)
        G_naive += J.T @ Lam @ J / N
        a_bar = torch.cat([x, torch.ones(1, dtype=torch.float64)])
        A_naive += torch.outer(a_bar, a_bar) / N
    from gd_lib.optim._kfac_factors import activation_factor, gradient_factor

    assert torch.allclose(gradient_factor(g), G_naive, atol=1e-12)
    assert torch.allclose(activation_factor(a), A_naive, atol=1e-12)


def test_lanczos_finds_the_extreme_hessian_eigenvalues():
    result = curvature.hessian_spectrum(quick=True)
    ritz, exact = np.sort(result["ritz_values"]), np.sort(result["exact"])
    # extreme Ritz values converge first: after 40 steps the top 3 and the bottom 2 agree with
    # eigvalsh of the dense Hessian to 1e-3 relative to the spectral radius
    scale = np.abs(exact).max()
    assert np.allclose(ritz[-3:], exact[-3:], atol=1e-3 * scale)
    assert np.allclose(ritz[:2], exact[:2], atol=1e-3 * scale)
    # Ritz values interlace: none outside [λ_min, λ_max]
    assert ritz.max() <= exact.max() + 1e-9 and ritz.min() >= exact.min() - 1e-9
    assert result["ritz_weights"].sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.slow
def test_gradient_descent_sharpness_rises_to_two_over_lr():
    result = curvature.sharpness_during_training(quick=True)
    for lr in result["lrs"]:
        run = result[lr]
        sharpness, edge = run["sharpness"], run["two_over_lr"]
        late = sharpness[2 * len(sharpness) // 3 :]
        # progressive sharpening then the edge of stability: the late median is within 10 % of
        # 2/lr (measured 2.07 vs 2 and 4.15 vs 4), and the sharpness never settles far above it
        assert np.median(late) == pytest.approx(edge, rel=0.10), (lr, late)
        assert late.max() < 1.25 * edge, (lr, late)
        assert np.isfinite(run["loss"]).all() and run["loss"][-1] < 0.1 * run["loss"][0]
    # it really rises: at lr 0.5 the initial sharpness is a third of 2/lr
    slow = result[0.5]
    assert slow["sharpness"][0] < 0.5 * slow["two_over_lr"]
    # at the edge, GD's loss is not monotone (it would be below 2/lr on a quadratic)
    assert (np.diff(slow["loss"]) > 0).any()
