"""Tests of gd_lib.landscape: 1-D and 2-D loss slices, filter normalization,
random directions and the roughness of a grid."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gd_lib import landscape as ls


class ConvNet(nn.Module):
    """Conv + BatchNorm + linear: 4-D, 2-D and 1-D parameters, and BN buffers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def make_problem(seed=0):
    torch.manual_seed(seed)
    model = ConvNet()
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(16, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    return model, (lambda m: F.cross_entropy(m(x), y))


def snapshot(model):
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


def assert_unchanged(model, before):
    after = list(model.parameters()) + list(model.buffers())
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert torch.equal(a, b)


def loss_at(model, loss_fn, weights):
    """Naive reference: copy the weights in, evaluate, put the old ones back."""
    saved = snapshot(model)
    ls.set_weights(model, weights)
    with torch.no_grad():
        value = float(loss_fn(model))
    with torch.no_grad():
        for t, s in zip(list(model.parameters()) + list(model.buffers()), saved):
            t.copy_(s)
    return value


def test_interpolation_endpoints_are_the_two_losses_exactly():
    model, loss_fn = make_problem()
    start = ls.get_weights(model)
    end = [w + 0.3 * torch.randn_like(w) for w in start]
    before = snapshot(model)
    out = ls.loss_along_line(model, loss_fn, start, end, np.linspace(0, 1, 5))
    assert out["losses"][0] == loss_at(model, loss_fn, start)
    assert out["losses"][-1] == loss_at(model, loss_fn, end)
    # an interior point against the naive formula (1-α) θ0 + α θ1; float32 rounding of lerp
    mid = [(1 - 0.25) * s + 0.25 * e for s, e in zip(start, end)]
    assert out["losses"][1] == pytest.approx(loss_at(model, loss_fn, mid), rel=1e-5)
    assert_unchanged(model, before)


def test_filter_normalization_matches_each_filter_norm():
    model, _ = make_problem()
    weights = ls.get_weights(model)
    d = ls.random_filter_normalized_direction(model, torch.Generator().manual_seed(1))
    for name, (p, w, di) in zip([n for n, _ in model.named_parameters()], zip(model.parameters(), weights, d)):
        if p.dim() <= 1:
            assert not di.any(), name  # biases and BN gains are not perturbed (ignore="biasbn")
            continue
        for i in range(p.shape[0]):
            # float32 norms of a few dozen entries: 1e-5 relative
            assert di[i].norm().item() == pytest.approx(w[i].norm().item(), rel=1e-5), (name, i)
    kept = ls.filter_normalize(ls.random_direction(model), weights, ignore="none")
    assert torch.equal(kept[1], weights[1])  # a 1-D parameter's direction is the weights
    # the normalization keeps each filter's direction: only its length changes
    raw = ls.random_direction(model, torch.Generator().manual_seed(2))
    normed = ls.filter_normalize(raw, weights)
    cos = F.cosine_similarity(raw[0].flatten(1), normed[0].flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-6)


def test_filter_normalize_zero_filter_stays_zero():
    w = torch.zeros(2, 3)
    w[1] = torch.tensor([3.0, 4.0, 0.0])
    d = ls.filter_normalize([torch.ones(2, 3)], [w])[0]
    assert not d[0].any()
    assert d[1].norm().item() == pytest.approx(5.0, rel=1e-6)


def test_plane_centre_is_the_loss_at_the_point_and_model_is_unchanged():
    model, loss_fn = make_problem()
    model.train()  # BatchNorm in train mode updates running stats on every forward
    before = snapshot(model)
    theta = ls.get_weights(model)
    g = torch.Generator().manual_seed(3)
    d1 = ls.random_filter_normalized_direction(model, g)
    d2 = ls.random_filter_normalized_direction(model, g)
    grid = ls.symmetric_grid(1.0, 5)
    out = ls.loss_plane(model, loss_fn, (d1, d2), grid, grid)
    assert out["losses"].shape == (5, 5)
    assert out["losses"][2, 2] == loss_at(model, loss_fn, theta)
    # one off-centre point against the naive θ + α δ + β η (rows follow β)
    a, b = grid[3], grid[0]
    naive = loss_at(model, loss_fn, [t + a * u + b * v for t, u, v in zip(theta, d1, d2)])
    assert out["losses"][0, 3] == pytest.approx(naive, rel=1e-6)
    assert_unchanged(model, before)


def test_every_grid_point_sees_the_same_buffers():
    # in train mode each forward moves BN running stats; the grid must not drift, so
    # evaluating the same point twice in one sweep gives the same value
    model, _ = make_problem()
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    model.train()

    def loss_fn(m):  # depends on the running stats: they are used in eval mode
        m.train()
        m(x)  # moves the running stats
        m.eval()
        value = m(x).square().mean()
        m.train()
        return value

    d = ls.random_direction(model, torch.Generator().manual_seed(5))
    out = ls.loss_along_direction(model, loss_fn, d, [0.0, 0.0, 0.0])
    assert out["losses"][0] == out["losses"][1] == out["losses"][2]


def test_loss_along_direction_agrees_with_the_plane():
    model, loss_fn = make_problem()
    g = torch.Generator().manual_seed(6)
    d1 = ls.random_direction(model, g)
    d2 = ls.random_direction(model, g)
    alphas = ls.symmetric_grid(0.5, 5)
    line = ls.loss_along_direction(model, loss_fn, d1, alphas)
    plane = ls.loss_plane(model, loss_fn, (d1, d2), alphas, [0.0])
    np.testing.assert_array_equal(line["losses"], plane["losses"][0])
    assert line["losses"][2] == loss_at(model, loss_fn, ls.get_weights(model))


def test_random_directions_are_nearly_orthogonal():
    # cos(u, v) of independent N(0, I) vectors in R^d: mean 0, variance exactly 1/d
    model = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 5))
    d = sum(p.numel() for p in model.parameters())
    n = 400
    g = torch.Generator().manual_seed(7)
    cos = np.array(
        [ls.cosine_similarity(ls.random_direction(model, g), ls.random_direction(model, g)) for _ in range(n)]
    )
    # 4 standard errors: the mean's is 1/sqrt(d n); the std's relative one ~ 1/sqrt(2 n)
    assert abs(cos.mean()) < 4 / math.sqrt(d * n)
    assert abs(cos.std() * math.sqrt(d) - 1) < 4 / math.sqrt(2 * n)


def test_orthogonalize_and_trajectory_plane():
    model, _ = make_problem()
    start = ls.get_weights(model)
    g = torch.Generator().manual_seed(8)
    end = [w + torch.randn(w.shape, generator=g) for w in start]
    delta, eta = ls.trajectory_plane(start, end, g)
    for a, b in zip(delta, ls.direction_between(start, end)):
        assert torch.equal(a, b)
    # Gram–Schmidt in float64, stored in float32: cosine ~ float32 epsilon
    assert abs(ls.cosine_similarity(delta, eta)) < 1e-6

    def norm(v):
        return math.sqrt(sum(float((t.double() ** 2).sum()) for t in v))

    assert norm(eta) == pytest.approx(norm(delta), rel=1e-6)


def test_bad_shapes_raise():
    model, loss_fn = make_problem()
    with pytest.raises(ValueError, match="shape"):
        ls.loss_along_direction(model, loss_fn, [torch.zeros(3)] * 6, [0.0])
    with pytest.raises(ValueError, match="ignore"):
        ls.filter_normalize(ls.random_direction(model), model, ignore="bn")
    with pytest.raises(ValueError, match="num"):
        ls.symmetric_grid(1.0, 1)


def test_symmetric_grid_has_an_exact_zero():
    grid = ls.symmetric_grid(0.7, 21)
    assert grid[10] == 0.0 and grid[0] == -0.7 and grid[-1] == 0.7


def test_roughness_by_hand():
    Z = np.array([[1.0, 2.0, 3.0], [2.0, 5.0, 2.0], [3.0, 2.0, 0.5]])
    r = ls.roughness(Z)
    assert r["local_minima"] == 2  # (0, 0) and (2, 2); ties do not count
    # rows: 1+1, 3+3, 1+1.5; columns: 1+1, 3+3, 1+1.5
    assert r["total_variation"] == pytest.approx(21.0, rel=1e-12)
    assert r["normalized_total_variation"] == pytest.approx(21.0 / (4.5 * 6), rel=1e-12)
    flat_tie = np.zeros((3, 3))
    assert ls.roughness(flat_tie)["local_minima"] == 0


def test_roughness_higher_on_a_bumpy_grid_than_on_a_bowl():
    a = np.linspace(-1, 1, 41)
    X, Y = np.meshgrid(a, a)
    bowl = X**2 + Y**2
    bumpy = bowl + 0.3 * np.sin(12 * X) * np.sin(12 * Y)
    smooth, rough = ls.roughness(bowl), ls.roughness(bumpy)
    assert smooth["local_minima"] == 1
    assert rough["local_minima"] > 5
    assert rough["total_variation"] > smooth["total_variation"]
    # scale-free too: the bumps (amplitude 0.3 on a bowl of range 2, ~4 per row) add
    # oscillation beyond the range they add
    assert rough["normalized_total_variation"] > 1.25 * smooth["normalized_total_variation"]
    # the normalization is about 1 for a single bowl (module docstring)
    assert smooth["normalized_total_variation"] == pytest.approx(1.0, abs=0.05)
