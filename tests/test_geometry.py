"""Norms, dual maps, steepest descent, its reductions (Adam → sign descent, Shampoo → U Vᵀ),
and Newton–Schulz orthogonalization against the exact SVD.

Tolerances: float64 maths that is the same formula up to reordering: 1e-10 (round-off of
SVD/eigh on matrices of size ≤ 12 is ~1e-14; 1e-10 leaves room for condition numbers up to
~1e4). Brute-force searches have their own stated margins.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from gd_lib import geometry
from gd_lib.geometry import (
    NORMS,
    dual_map,
    dual_norm,
    layerwise_sign_descent,
    layerwise_spectral_descent,
    norm,
    shampoo_without_accumulation,
    steepest_descent,
    steepest_descent_objective,
)
from gd_lib.linalg import (
    CUBIC_COEFFICIENTS,
    MUON_QUINTIC_COEFFICIENTS,
    newton_schulz,
    newton_schulz_flops,
    newton_schulz_scalar_map,
    polar_factor,
)

MATRIX_NORMS = ["l1_to_linf", "spectral", "rms_to_rms", "l1_to_rms"]
ALL_NORMS = sorted(NORMS)


def rand(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- independent formulas for each norm and its dual (numpy, from the definitions) -----


def reference_norm(W: np.ndarray, name: str) -> float:
    out, inp = W.shape
    if name == "l2":
        return float(np.sqrt((W**2).sum()))
    if name in ("linf", "l1_to_linf"):
        # operator ℓ1→ℓ∞: the ℓ1 ball's extreme points are ±e_j; ‖W e_j‖_∞ = max_i |W_ij|
        return max(float(np.abs(W[:, j]).max()) for j in range(inp))
    if name == "spectral":
        return float(np.linalg.norm(W, 2))
    if name == "rms_to_rms":
        return float(np.linalg.norm(W, 2)) * math.sqrt(inp / out)
    if name == "l1_to_rms":
        return max(float(np.linalg.norm(W[:, j])) / math.sqrt(out) for j in range(inp))
    raise KeyError(name)


def reference_dual_norm(G: np.ndarray, name: str) -> float:
    out, inp = G.shape
    if name == "l2":
        return float(np.sqrt((G**2).sum()))
    if name in ("linf", "l1_to_linf"):
        return float(np.abs(G).sum())
    if name == "spectral":
        return float(np.linalg.norm(G, "nuc"))
    if name == "rms_to_rms":
        return float(np.linalg.norm(G, "nuc")) * math.sqrt(out / inp)
    if name == "l1_to_rms":
        return sum(float(np.linalg.norm(G[:, j])) for j in range(inp)) * math.sqrt(out)
    raise KeyError(name)


# --- 3. property tests: dual maps have norm 1 and attain the dual norm ----------------


@pytest.mark.parametrize("name", ALL_NORMS)
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_dual_map_has_unit_norm_and_attains_dual_norm(name, rows, cols, seed):
    G = rand((rows, cols), seed)
    D = dual_map(G, name)
    # ‖D(G)‖ = 1 (float64 round-off, 1e-10)
    assert float(norm(D, name)) == pytest.approx(1.0, abs=1e-10)
    # ⟨G, D(G)⟩ = ‖G‖*
    assert float((G * D).sum()) == pytest.approx(float(dual_norm(G, name)), rel=1e-10)


@pytest.mark.parametrize("name", ALL_NORMS)
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (3, 5), (6, 2), (4, 4)])
def test_norm_and_dual_norm_match_their_definitions(name, shape):
    W = rand(shape, 1)
    assert float(norm(W, name)) == pytest.approx(reference_norm(W.numpy(), name), rel=1e-10)
    assert float(dual_norm(W, name)) == pytest.approx(reference_dual_norm(W.numpy(), name), rel=1e-10)


@pytest.mark.parametrize("name", ALL_NORMS)
def test_dual_norm_bounds_every_unit_direction(name):
    """Hölder: ⟨G, D⟩ ≤ ‖G‖* for every D with ‖D‖ = 1 (random directions, rescaled to unit norm)."""
    G = rand((3, 4), 2)
    directions = rand((4000, 3, 4), 3)
    values = [float((G * (D / norm(D, name))).sum()) for D in directions]
    assert max(values) <= float(dual_norm(G, name)) * (1 + 1e-12)


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="norm"):
        geometry.get_norm("l3")
    with pytest.raises(ValueError, match="matrices"):
        norm(torch.ones(3), "spectral")


# --- steepest descent against brute force ----------------------------------------------


def haar_orthogonal(count: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform (Haar) random orthogonal n×n matrices: QR of a Gaussian with R's diagonal made
    positive (raw Householder QR fixes det Q, and would never sample half of O(n))."""
    Q, R = torch.linalg.qr(torch.randn(count, n, n, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)


def unit_extreme_points(name: str, shape, count: int, seed: int) -> torch.Tensor:
    """Random points on the unit sphere of a norm, sampled among the ball's extreme points
    where the maximizer must lie (orthogonal matrices for spectral norms, sign patterns for ℓ∞),
    so that a brute-force search gets close to the true optimum."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = shape
    if name in ("spectral", "rms_to_rms"):
        k = min(rows, cols)
        Q1, Q2 = (haar_orthogonal(count, n, g) for n in (rows, cols))
        D = Q1[:, :, :k] @ Q2[:, :, :k].mT
        return D * (math.sqrt(rows / cols) if name == "rms_to_rms" else 1.0)
    if name in ("linf", "l1_to_linf"):
        return torch.randint(0, 2, (count, rows, cols), generator=g).to(torch.float64) * 2 - 1
    if name == "l1_to_rms":
        D = torch.randn(count, rows, cols, generator=g, dtype=torch.float64)
        return D / torch.linalg.vector_norm(D, dim=1, keepdim=True) * math.sqrt(rows)
    D = torch.randn(count, rows, cols, generator=g, dtype=torch.float64)
    return D / torch.linalg.vector_norm(D, dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("name", ALL_NORMS)
def test_steepest_descent_beats_brute_force(name):
    """The closed form −(‖G‖*/λ) D(G) has objective ⟨G,Δ⟩ + λ/2‖Δ‖² no worse than the best of
    20000 unit directions t (each with its best step −⟨G,t⟩/λ, value −⟨G,t⟩²/(2λ)), and the
    brute force comes within 3% of it (so the comparison is not vacuous)."""
    G, sharpness = rand((2, 3), 4), 2.5
    delta = steepest_descent(G, name, sharpness)
    closed = float(steepest_descent_objective(G, delta, name, sharpness))
    # the minimum value −(‖G‖*)²/(2λ), by the definition of the dual norm
    assert closed == pytest.approx(-(reference_dual_norm(G.numpy(), name) ** 2) / (2 * sharpness), rel=1e-10)
    T = unit_extreme_points(name, (2, 3), 20000, 5)
    pairing = (G * T).sum(dim=(1, 2)).abs()
    brute = float(-(pairing.max() ** 2) / (2 * sharpness))
    assert closed <= brute + 1e-12
    assert brute <= 0.97 * closed  # both negative: brute is within 3% of the optimum


@pytest.mark.parametrize("name", ["linf", "l1_to_linf"])
def test_sign_descent_equals_linear_program(name):
    """min ⟨g, δ⟩ s.t. −1 ≤ δ ≤ 1 by scipy's LP (value v), then the best scale t of t·δ:
    v t + λt²/2 is least at t = −v/λ."""
    G, sharpness = rand((3, 4), 6), 0.7
    g = G.numpy().ravel()
    lp = linprog(c=g, bounds=[(-1, 1)] * g.size, method="highs")
    assert lp.status == 0
    t = -lp.fun / sharpness
    lp_objective = lp.fun * t + 0.5 * sharpness * t**2
    delta = steepest_descent(G, name, sharpness)
    assert float(steepest_descent_objective(G, delta, name, sharpness)) == pytest.approx(lp_objective, rel=1e-9)
    np.testing.assert_allclose(delta.numpy().ravel(), t * lp.x, rtol=1e-9, atol=1e-12)


def test_sharpness_must_be_positive():
    with pytest.raises(ValueError, match="sharpness"):
        steepest_descent(torch.ones(2, 2), "l2", 0.0)


# --- Theorem 4.1 (layerwise sign descent) and 4.2 (layerwise spectral descent) -----------


def layer_grads(seed):
    return [rand((3, 4), seed), rand((2, 5), seed + 1), rand((4, 1), seed + 2)]


def tuple_objective(grads, deltas, norm_name, sharpness):
    """⟨G, Δ⟩ + λ/2 (max_l ‖Δ_l‖_l)², the objective of the theorems."""
    linear = sum(float((G * D).sum()) for G, D in zip(grads, deltas))
    biggest = max(float(norm(D, norm_name)) for D in deltas)
    return linear + 0.5 * sharpness * biggest**2


def test_theorem_4_1_layerwise_sign_descent_equals_joint_linear_program():
    grads, sharpness = layer_grads(10), 3.0
    deltas = layerwise_sign_descent(grads, sharpness)
    # η = (1/λ) Σ_l ‖G_l‖_1, Δ_l = −η sign(G_l)
    eta = sum(float(G.abs().sum()) for G in grads) / sharpness
    for G, D in zip(grads, deltas):
        torch.testing.assert_close(D, -eta * torch.sign(G), rtol=1e-12, atol=0)
    # joint LP over all layers' entries: the max-of-max ball is the box |δ| ≤ 1
    g = np.concatenate([G.numpy().ravel() for G in grads])
    lp = linprog(c=g, bounds=[(-1, 1)] * g.size, method="highs")
    t = -lp.fun / sharpness
    lp_objective = lp.fun * t + 0.5 * sharpness * t**2
    assert tuple_objective(grads, deltas, "l1_to_linf", sharpness) == pytest.approx(lp_objective, rel=1e-9)


def test_theorem_4_2_layerwise_spectral_descent_beats_brute_force():
    grads, sharpness = [rand((2, 3), 20), rand((2, 2), 21)], 1.5
    deltas = layerwise_spectral_descent(grads, sharpness)
    # η = (1/λ) Σ_l ‖G_l‖_nuclear, Δ_l = −η U_l V_lᵀ
    eta = sum(float(torch.linalg.matrix_norm(G, "nuc")) for G in grads) / sharpness
    for G, D in zip(grads, deltas):
        torch.testing.assert_close(D, -eta * polar_factor(G), rtol=1e-10, atol=1e-12)
        # ... which is −η times Shampoo's step without accumulation
        torch.testing.assert_close(D, -eta * shampoo_without_accumulation(G), rtol=1e-10, atol=1e-12)
    closed = tuple_objective(grads, deltas, "spectral", sharpness)
    # brute force: unit-spectral-norm orthogonal directions per layer, best common scale
    T1 = unit_extreme_points("spectral", (2, 3), 20000, 22)
    T2 = unit_extreme_points("spectral", (2, 2), 20000, 23)
    # the layers' directions are chosen independently: best pairing per layer, then summed
    pairing = (grads[0] * T1).sum(dim=(1, 2)).abs().max() + (grads[1] * T2).sum(dim=(1, 2)).abs().max()
    brute = float(-(pairing**2) / (2 * sharpness))
    assert closed <= brute + 1e-12
    assert brute <= 0.95 * closed  # within 5%: the search is not vacuous


# --- 1. reductions -------------------------------------------------------------------


def _adam_class():
    try:
        from gd_lib.optim import Adam

        return Adam
    except ImportError:  # gd_lib's Adam is another issue; torch's has the same rule
        return torch.optim.Adam


def test_adam_without_moving_averages_is_sign_descent_exactly():
    """Adam with β1 = β2 = 0, ε = 0: m = g, v = g², so m/√v = g/|g| = sign(g) bit for bit
    (√(fl(g²)) = |g| exactly in IEEE arithmetic), and it steps like layerwise sign descent.
    lr = 2⁻⁷ is exact in float32 and float64, so rounding the lr cannot differ between paths."""
    Adam = _adam_class()
    lr = 2.0**-7
    weights = [rand((3, 4), 30, torch.float32).requires_grad_(), rand((5,), 31, torch.float32).requires_grad_()]
    sign_weights = [w.detach().clone() for w in weights]
    opt = Adam(weights, lr=lr, betas=(0.0, 0.0), eps=0.0)
    for step in range(5):
        grads = [rand(w.shape, 40 + 10 * step + i, torch.float32) for i, w in enumerate(weights)]
        for w, g in zip(weights, grads):
            w.grad = g.clone()
        opt.step()
        for s, g in zip(sign_weights, grads):
            s.sub_(lr * torch.sign(g))
        for w, s in zip(weights, sign_weights):
            assert torch.equal(w.detach(), s)
    # one Adam step with lr = η = Σ‖G‖₁/λ equals Theorem 4.1's step
    grads = [rand(w.shape, 90 + i) for i, w in enumerate(weights)]
    sharpness = 4.0
    eta = sum(float(g.abs().sum()) for g in grads) / sharpness
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    opt = Adam(params, lr=eta, betas=(0.0, 0.0), eps=0.0)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for p, d in zip(params, layerwise_sign_descent(grads, sharpness)):
        torch.testing.assert_close(p.detach(), d, rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (1, 5), (5, 1)])
def test_shampoo_one_step_equals_polar_factor(shape):
    G = rand(shape, 50)
    U, _, Vh = np.linalg.svd(G.numpy(), full_matrices=False)
    # float64 round-off of eigh on Gram matrices (condition number squared): 1e-10
    np.testing.assert_allclose(shampoo_without_accumulation(G).numpy(), U @ Vh, atol=1e-10)


# --- Newton–Schulz -------------------------------------------------------------------


def scalar_iteration(x: np.ndarray, coefficients, steps) -> np.ndarray:
    """p(x) = a x + b x³ + c x⁵ iterated, written here independently of gd_lib."""
    a, b, c = coefficients
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


@pytest.mark.parametrize("coefficients", [MUON_QUINTIC_COEFFICIENTS, CUBIC_COEFFICIENTS])
@pytest.mark.parametrize("shape", [(8, 8), (12, 5), (5, 12), (1, 6), (3, 4, 7)])
def test_newton_schulz_acts_on_singular_values_only(coefficients, shape):
    """In float64, NS(G) = U diag(φ(σ/(‖G‖_F + 1e-7))) Vᵀ with φ the iterated scalar polynomial."""
    G = rand(shape, 60).numpy()
    U, S, Vh = np.linalg.svd(G, full_matrices=False)
    scale = np.linalg.norm(G, axis=(-2, -1), keepdims=True)[..., 0] + 1e-7
    expected = (U * scalar_iteration(S / scale, coefficients, 5)[..., None, :]) @ Vh
    np.testing.assert_allclose(newton_schulz(torch.from_numpy(G), 5, coefficients).numpy(), expected, atol=1e-10)


def test_scalar_map_matches_independent_iteration():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(
        newton_schulz_scalar_map(x, 5), scalar_iteration(x, MUON_QUINTIC_COEFFICIENTS, 5), rtol=1e-14
    )


def quintic_band(x_min: float) -> tuple[float, float]:
    """The range of the 5-step quintic map over [x_min, 1] (dense grid, float64)."""
    y = scalar_iteration(np.geomspace(x_min, 1.0, 200001), MUON_QUINTIC_COEFFICIENTS, 5)
    return float(y.min()), float(y.max())


@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (32, 96), (2, 16, 48)])
def test_newton_schulz_singular_values_lie_in_the_promised_band_float32(shape):
    G = rand(shape, 70, torch.float32)
    sigma = torch.linalg.svdvals(G.double())
    x_min = float((sigma / torch.linalg.matrix_norm(G.double()).unsqueeze(-1)).min())
    assert x_min > 3e-3  # premise: Gaussian matrices of this aspect ratio are well conditioned
    low, high = quintic_band(x_min)
    assert 0.6 < low and high < 1.25  # the band is the promise: about [0.68, 1.21]
    X = newton_schulz(G)  # CPU default: float32
    assert X.dtype == torch.float32 and X.shape == G.shape
    s = torch.linalg.svdvals(X.double())
    # float32 round-off through 5 steps of products of size ≤ 96: well below 1e-3
    assert float(s.min()) >= low - 1e-3 and float(s.max()) <= high + 1e-3


def test_cubic_newton_schulz_converges_to_the_polar_factor_float64():
    for shape, seed in [((10, 10), 80), ((12, 7), 81), ((7, 12), 82), ((3, 6, 4), 83)]:
        G = rand(shape, seed)
        U, _, Vh = np.linalg.svd(G.numpy(), full_matrices=False)
        X = newton_schulz(G, steps=100, coefficients=CUBIC_COEFFICIENTS)
        assert np.abs(X.numpy() - U @ Vh).max() < 1e-6
        torch.testing.assert_close(X, polar_factor(G), rtol=0, atol=1e-6)


def test_newton_schulz_batch_equals_loop_and_zero_maps_to_zero():
    G = rand((4, 6, 9), 90)
    batched = newton_schulz(G)
    for i in range(4):
        torch.testing.assert_close(batched[i], newton_schulz(G[i]), rtol=0, atol=1e-13)
    assert torch.equal(newton_schulz(torch.zeros(3, 5)), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.ones(4))


def test_newton_schulz_flops_count():
    # square n: per step X Xᵀ (2n³) + A·A (2n³) + B·X (2n³) = 6n³
    assert newton_schulz_flops(100, 100, steps=5) == 5 * 6 * 100**3
    # 30×50: m=30, n=50: 2·30²·50 + 2·30³ + 2·30²·50 per step; cubic drops 2m³
    assert newton_schulz_flops(50, 30, steps=1) == 2 * 900 * 50 * 2 + 2 * 27000
    assert newton_schulz_flops(50, 30, steps=1, quintic=False) == 2 * 900 * 50 * 2


@pytest.mark.gpu
def test_newton_schulz_bfloat16_on_cuda_stays_in_band():
    G = rand((512, 256), 100, torch.float32).cuda()
    x_min = float((torch.linalg.svdvals(G.double()) / torch.linalg.matrix_norm(G.double())).min())
    low, high = quintic_band(x_min)
    X = newton_schulz(G)  # CUDA default: bfloat16 compute, returned as float32
    s = torch.linalg.svdvals(X.double())
    # bfloat16 keeps 8 significant bits (relative error 4e-3 per rounding); through 5 steps of
    # 256-long dot products the singular values move by a few 1e-2: allow 0.1 either side
    assert float(s.min()) >= low - 0.1 and float(s.max()) <= high + 0.1
