"""Lecture 10, loss landscapes.

Measured in quick mode (loaded 2-core CPU):
- cosines of Gaussian pairs, 200 per dimension: std·√d = 0.97–1.02 for d = 10..10^4;
- two-basin toy, lr 0.011, shifts 0.15, 300 steps: SGD left the sharp basin in 20/20 seeds, GD in 0/20;
- 32-layer width-32 MLPs on an 11×11 filter-normalized plane: total variation of log10 loss 175 (plain)
  vs 66 (residual); of the loss itself 9.8e8 vs 1.9e3 (15×15: 238 vs 92, 1.1e9 vs 2.5e3);
- Li & Arora: losses of the weight-decay run and the exponential-lr run agree to 4e-16,
  the norm ratio follows (1 − ηλ)^t to 3e-16 (float64).
"""
import numpy as np
import pytest
import torch

from gd_lib.experiments import landscapes as ls


def test_random_direction_cosines_are_n_0_1_over_d():
    result = ls.random_direction_cosines()
    scaled_std = result["std"] * np.sqrt(result["dims"])
    # the sample std of 200 draws has relative standard error 1/sqrt(2·200) = 5%: 3 of them is 15%
    assert np.all(np.abs(scaled_std - 1) < 0.15), scaled_std
    # the mean has standard error (1/sqrt d)/sqrt(200); allow 4 of them
    assert np.all(np.abs(result["mean"]) < 4 / np.sqrt(result["dims"]) / np.sqrt(200)), result["mean"]


def test_sgd_escapes_the_narrow_basin_gd_never_does():
    result = ls.noisy_escape(quick=True)
    # the claim: SGD in most seeds (measured 20/20; "most" = at least 3/4), GD in none
    assert result["sgd_escaped"].mean() >= 0.75, result["sgd_escaped"]
    assert not result["gd_escaped"].any()


def test_noisy_escape_gd_step_matches_a_hand_written_gradient():
    # one GD step on L(x) = mean_i f(x + u_i) for the two-basin f, with the gradient written out:
    # f = r q, r = 1 + c (x − a)², q = (x − a)²(x − b)² + y²/2 (a = −1, b = 1, c = 4)
    result = ls.noisy_escape(quick=True, steps=1, seeds=1, record=1, noise=0.1, num_samples=4)
    u = 0.1 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, y = 1.0 + u[:, 0], u[:, 1]
    r, q = 1 + 4 * (x + 1) ** 2, (x + 1) ** 2 * (x - 1) ** 2 + y ** 2 / 2
    dx = 8 * (x + 1) * q + r * (2 * (x + 1) * (x - 1) ** 2 + 2 * (x + 1) ** 2 * (x - 1))
    dy = r * y
    expected = torch.tensor([1.0, 0.0], dtype=torch.float64) - result["lr"] * torch.stack([dx.mean(), dy.mean()])
    assert np.allclose(result["gd_paths"][0][1], expected.numpy(), rtol=0, atol=1e-12)  # float64 rounding


def test_weight_decay_equals_an_exponential_learning_rate_on_a_scale_invariant_net():
    result = ls.exponential_lr_equivalence(quick=True, steps=100)
    # the same functions at every step: float64 rounding, amplified a little over 100 steps
    assert np.abs(result["loss_wd"] - result["loss_exp"]).max() < 1e-9
    assert np.allclose(result["norm_wd"] / result["norm_exp"], result["predicted_ratio"], rtol=1e-9, atol=0)
    # and the schedule really grows: η_t = η (1 − ηλ)^{−2t−1}
    assert result["lr_exp"][-1] > result["lr_exp"][0] * 1.4


def test_scale_invariant_net_is_scale_invariant():
    net = ls.scale_invariant_net()
    x = torch.randn(32, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = net(x)
    with torch.no_grad():
        net[0].weight.mul_(7.0)
        net[3].weight.mul_(0.3)
    # BatchNorm with ε = 1e-30 divides the scale out exactly up to float64 rounding
    assert torch.allclose(net(x), before, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_plain_deep_net_slice_is_rougher_than_its_residual_twin():
    result = ls.skip_connection_landscapes(quick=True)
    plain, residual = result["plain"], result["residual"]
    # the claim, on the log10 loss (measured 175 vs 66) and on the loss itself (9.8e8 vs 1.9e3)
    assert plain["log_roughness"]["total_variation"] > 1.5 * residual["log_roughness"]["total_variation"]
    assert plain["roughness"]["total_variation"] > 10 * residual["roughness"]["total_variation"]
    # the residual twin trains at least as well (measured 97% vs 66-72% validation accuracy)
    assert residual["val_accuracy"] >= plain["val_accuracy"]
