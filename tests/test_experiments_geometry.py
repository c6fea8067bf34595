"""Lecture 2 (Old optimizer, new norm): each claim, asserted on gd_lib.experiments.geometry.

Measured in quick mode when these tests were written (seed 0):
- Adam(β1 = β2 = 0, ε = 0) vs SignSGD over 5 steps on a tanh MLP: max weight difference 2e-17
  (float64; Adam's addcdiv rounds differently from SignSGD's add), step/lr = −sign(G) to 9e-16.
- Shampoo without accumulation: every stage of the SVD derivation ≤ 6e-14; one gd_lib Shampoo
  step (β = (0, 1), ε = 1e-20, no grafting) = −η U Vᵀ to 6e-11.
- Newton–Schulz on a 32×16 G with κ = 100: cubic iterates reach ‖X − U Vᵀ‖_F/√k < 1e-3 by
  step 20; Muon's quintic leaves the singular values in [0.68, 1.13] after 5 steps, not at 1.
- Muon vs AdamW on the digits MLP, steps until the training loss ≤ 0.002 (best lr of 3 each):
  Muon 60 (lr 0.05), AdamW 100 (lr 0.01).
"""

import math

import numpy as np
import pytest

from gd_lib.experiments import geometry
from gd_lib.linalg import MUON_QUINTIC_COEFFICIENTS, newton_schulz_scalar_map

# --- steepest descent pictures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def balls():
    return geometry.norm_ball_slices(gradient=(1.0, 0.4), sharpness=2.0)


def test_unit_balls_have_the_known_shapes(balls):
    # ℓ2: a circle; ℓ∞: the square max(|x|, |y|) = 1; spectral on diag(x, y): the same square;
    # spectral on [[x, y], [y, x]]/√2 (eigenvalues (x ± y)/√2): the diamond |x| + |y| = √2.
    b = balls["ℓ2 (vectors)"]["boundary"]
    assert np.allclose(np.hypot(b[:, 0], b[:, 1]), 1.0, atol=1e-12)
    for label in ("ℓ∞ (vectors)", "spectral, diagonal 2×2"):
        b = balls[label]["boundary"]
        assert np.allclose(np.abs(b).max(1), 1.0, atol=1e-12)
    b = balls["spectral, [[x, y], [y, x]]/√2"]["boundary"]
    assert np.allclose(np.abs(b).sum(1), math.sqrt(2.0), atol=1e-12)


def test_steepest_descent_steps_match_closed_forms(balls):
    g, lam = np.array([1.0, 0.4]), 2.0
    # ℓ2: Δ = −g/λ
    assert np.allclose(balls["ℓ2 (vectors)"]["step"], -g / lam, atol=1e-15)
    # ℓ∞: Δ = −(‖g‖_1/λ) sign(g)
    assert np.allclose(balls["ℓ∞ (vectors)"]["step"], -(np.abs(g).sum() / lam) * np.sign(g), atol=1e-15)
    assert np.allclose(balls["spectral, diagonal 2×2"]["step"], balls["ℓ∞ (vectors)"]["step"], atol=1e-15)
    for label, entry in balls.items():
        # the step stays in the plane drawn, and the model value is −‖G‖*²/(2λ)
        assert entry["off_plane"] < 1e-12, label
        assert entry["model_value"] == pytest.approx(-(entry["dual_norm"] ** 2) / (2 * lam), rel=1e-12), label


def test_dual_maps_reshape_the_singular_values():
    result = geometry.singular_values_of_steps()
    assert np.allclose(result["spectral: U Vᵀ"], 1.0, atol=1e-12)  # U Vᵀ: all ones
    assert np.allclose(result["ℓ2: G/‖G‖_F"], result["gradient"], rtol=1e-10)  # scaling keeps the shape
    assert not np.allclose(result["ℓ∞: sign(G)"], result["gradient"], rtol=0.05)


# --- the equivalences --------------------------------------------------------------------------


def test_adam_without_ema_is_sign_descent():
    result = geometry.adam_without_ema_is_sign_descent(steps=5)
    # same maths: Adam's step is −η g/√(g²) = −η sign(g) exactly; its addcdiv rounds the
    # weight update differently from SignSGD's add, so weights agree to float64 round-off
    assert result["max_param_difference"] < 1e-14
    assert result["max_direction_difference"] < 1e-12
    assert np.allclose(result["losses_adam"], result["losses_sign"], rtol=1e-12)
    assert result["losses_adam"][-1] < result["losses_adam"][0]


@pytest.mark.parametrize("shape", [(6, 4), (5, 5), (3, 7)])
def test_shampoo_without_accumulation_is_the_polar_factor(shape):
    result = geometry.shampoo_without_accumulation_is_polar(shape=shape)
    for stage, error in result["errors"].items():
        # float64 products of well-conditioned random matrices: ~1e-14; the Shampoo optimizer
        # adds ε = 1e-20 to eigenvalues and takes −1/4 powers of its singular factor (rectangular
        # G), which the shampoo tests bound by 1e-9
        bound = 1e-9 if stage.startswith("Shampoo") else 1e-12
        assert error < bound, (stage, error)
    # and U Vᵀ is what it should be: an orthonormal-column (or -row) matrix with G's singular vectors
    polar = result["polar"]
    k = min(shape)
    assert np.allclose(np.linalg.svd(polar, compute_uv=False), np.ones(k), atol=1e-12)


@pytest.fixture(scope="module")
def newton_schulz():
    return geometry.newton_schulz_convergence()


def test_cubic_newton_schulz_converges_to_the_polar_factor(newton_schulz):
    distance = newton_schulz["cubic"]["distance"]
    assert distance[-1] < 1e-3 and distance[0] > 0.5
    assert np.all(np.diff(distance) < 0)  # monotone for σ ≤ 1 inputs
    sv = newton_schulz["cubic"]["singular_values"]
    assert np.allclose(sv[-1], 1.0, atol=2e-3)


def test_quintic_newton_schulz_lands_in_a_band_not_at_one(newton_schulz):
    sv = newton_schulz["quintic"]["singular_values"][5]
    # the band promised by gd_lib.linalg.newton_schulz for σ ≥ 0.003 ‖G‖_F: about [0.68, 1.21]
    assert sv.min() > 0.6 and sv.max() < 1.25
    assert newton_schulz["quintic"]["distance"][5] > 0.05
    # per singular value the iterate is the scalar map of σ/‖G‖_F (same U, V)
    x = newton_schulz["input_singular_values"]
    x = x / np.sqrt((x**2).sum())
    expected = np.sort(np.abs(newton_schulz_scalar_map(x, 5, MUON_QUINTIC_COEFFICIENTS)))[::-1]
    assert np.allclose(np.sort(sv)[::-1], expected, rtol=1e-6)  # eps = 1e-7 in the normalisation


# --- Muon against AdamW --------------------------------------------------------------------------


@pytest.mark.slow
def test_muon_reaches_the_target_loss_in_fewer_steps_than_adamw():
    result = geometry.muon_vs_adamw(quick=True)
    muon_lr, muon_steps = result["best"]["muon"]
    adamw_lr, adamw_steps = result["best"]["adamw"]
    assert muon_steps is not None, result["muon"]
    # measured: Muon 60 vs AdamW 100 steps (eval every 5 steps); claim with a 10 % margin
    assert adamw_steps is None or muon_steps <= 0.9 * adamw_steps, (result["muon"], result["adamw"])
    # each best run really is below the target at its recorded step
    eval_steps, losses = result["curves"][f"Muon lr {muon_lr:g}"]
    assert losses[list(eval_steps).index(muon_steps)] <= result["target"]


# --- the modular norm ----------------------------------------------------------------------------


def test_dualized_gradient_has_unit_modular_norm_and_attains_the_dual_norm():
    result = geometry.modular_norm_of_mlp()
    assert result["step_norm"] == pytest.approx(1.0, rel=1e-10)
    assert result["inner"] == pytest.approx(result["dual_norm"], rel=1e-10)
    # target norms split the unit budget by mass; every atom's step has its target norm
    assert np.allclose(result["atom_step_norms"], result["target_norms"], rtol=1e-10)
    total_mass = sum(result["masses"])
    assert np.allclose(result["target_norms"], np.array(result["masses"]) / total_mass, rtol=1e-12)


def test_plot_norm_ball_step_draws_the_ball_and_both_vectors(balls):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gd_lib.plotting import plot_norm_ball_step

    entry = balls["ℓ∞ (vectors)"]
    fig, ax = plot_norm_ball_step(entry["boundary"], entry["gradient"], entry["step"], title="ℓ∞")
    lines = ax.get_lines()
    assert np.allclose(lines[0].get_xydata(), entry["boundary"])
    points = [tuple(line.get_xydata()[0]) for line in lines if len(line.get_xydata()) == 1]
    assert tuple(entry["gradient"]) in points and tuple(entry["step"]) in points
    assert len(ax.texts) == 2 and ax.get_title() == "ℓ∞"
    plt.close(fig)


# --- Prodigy without EMA (lecture 2, section 4) ------------------------------------------------


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_prodigy_without_ema_is_sign_descent_with_a_step_that_grows_by_one_plus_lr(lr):
    result = geometry.prodigy_without_ema_is_sign_descent(steps=60, lr=lr)
    # the reference is a plain loop of x <- x - γ d sign(g), d = max(d, <g, x0 - x>/||g||_1):
    # the same arithmetic up to reordered sums (float64) and ε = 1e-30 in Prodigy's denominator
    assert result["max_param_difference"] < 1e-12
    d = result["d"]
    assert (np.diff(d) >= 0).all()  # d is a running maximum
    assert d[0] == result["d0"]  # at x = x0 the estimate is 0
    # escape velocity: while the gradient keeps its signs, d̂_k = γ Σ_{i<k} d_i, which overtakes
    # d after a step or two and from then on d_{k+1} = (1 + γ) d_k exactly (measured: steps 2-13
    # at γ = 1, 4-... at γ = 0.5); a relative 1e-9 covers the float sums
    np.testing.assert_allclose(d[5:11] / d[4:10], 1 + lr, rtol=1e-9)
    # ... and once steps overshoot, it stops growing (measured: constant over the last 43 of 60)
    assert (d[-10:] == d[-1]).all() and d[-1] > 1e3 * result["d0"]
    assert result["losses"][-1] < 0.5 * result["losses"][0]


# --- Theorem 4.3 with unequal masses (lecture 2, section 7) ------------------------------------


@pytest.mark.parametrize("masses", [(1, 1, 1), (1, 2, 1), (1, 1, 4)])
def test_modular_dualization_shares_the_step_by_mass(masses):
    result = geometry.modular_norm_of_mlp(masses=masses)
    # the theorem's prediction for a chain of sensitivity-1 modules: t_i = μ_i / μ, each linear
    # layer contributing a weight and a bias atom of its mass (computed here from the masses alone)
    expected = [m / (2 * sum(masses)) for m in masses for _ in range(2)]
    np.testing.assert_allclose(result["target_norms"], expected, rtol=1e-12)
    # the dualized step has each atom at its target norm, modular norm 1, and attains the dual
    # norm (float64 round-off over a few matrix products)
    np.testing.assert_allclose(result["atom_step_norms"], expected, rtol=1e-10)
    assert result["step_norm"] == pytest.approx(1.0, rel=1e-10)
    assert result["inner"] == pytest.approx(result["dual_norm"], rel=1e-10)


def test_modular_norm_of_mlp_rejects_a_wrong_number_of_masses():
    with pytest.raises(ValueError, match="masses"):
        geometry.modular_norm_of_mlp(masses=(1, 2))
