"""Shampoo (gd_lib/optim/shampoo.py) against exact references.

- Before preconditioning starts, Shampoo *is* its grafted method: torch.optim's SGD
  (momentum, Nesterov, weight decay), Adagrad, Adam and AdamW.
- With β2 = 1, no grafting and no filtering, its first step is the spectral step U Vᵀ.
- Its inverse roots equal (L/(1-β2^t) + εI)^{-1/4} built from the recorded gradients.
- Vectors get full-matrix AdaGrad with root -1/2; order-3 tensors the Kronecker product
  of three factors with root -1/6 (checked with an explicit Kronecker matrix).
- Blocking equals separate Shampoo problems on the blocks.
- It trains an MLP on scikit-learn's digits and beats tuned SGD/Adam on an
  ill-conditioned matrix problem.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from gd_lib.linalg import inverse_root_eigh
from gd_lib.optim.shampoo import Shampoo, ShampooConfig, make_block_plan

DT = torch.float64


def two_layer_problem(seed: int = 0):
    """A 6x5 weight, a bias and a 4-tensor-free loss: float64, deterministic data."""
    g = torch.Generator().manual_seed(seed)
    W = nn.Parameter(torch.randn(6, 5, generator=g, dtype=DT))
    b = nn.Parameter(torch.randn(6, generator=g, dtype=DT))
    X = torch.randn(20, 5, generator=g, dtype=DT)

    def loss_fn():
        return (torch.sin(X @ W.T + b) ** 2).sum()

    return [W, b], loss_fn


def trajectory(make_optimizer, steps: int = 8, seed: int = 0):
    params, loss_fn = two_layer_problem(seed)
    opt = make_optimizer(params)
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        grads.append([p.grad.clone() for p in params])
        opt.step()
    return [p.detach().clone() for p in params], opt, grads


def assert_close(a_list, b_list, rtol):
    for a, b in zip(a_list, b_list):
        err = float((a - b).abs().max() / b.abs().max())
        assert err <= rtol, f"relative difference {err:.3g} > {rtol:g}"


NEVER = 10_000  # precondition_frequency (hence start_preconditioning_step) beyond the run


# --- reductions: no preconditioning = the grafted optimizer ------------------------

# All in float64. The same maths with operations in a different order (e.g. g / d * lr
# versus torch's addcdiv with value=-lr): differences are a few ulps, ≤ 1e-13 relative
# after 8 steps; SGD's arithmetic is identical and must match bit for bit.


def test_sgd_grafting_without_preconditioning_is_sgd_bit_for_bit():
    ref, _, _ = trajectory(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01))
    ours, _, _ = trajectory(
        lambda p: Shampoo(
            p,
            lr=0.01,
            betas=(0.0, 1.0),
            grafting="sgd",
            momentum=0.9,
            nesterov=True,
            weight_decay=0.01,
            precondition_frequency=NEVER,
        )
    )
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_sgd_grafting_heavy_ball_and_coupled_decay():
    ref, _, _ = trajectory(lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.5, weight_decay=0.1))
    ours, _, _ = trajectory(
        lambda p: Shampoo(
            p,
            lr=0.02,
            betas=(0.0, 1.0),
            grafting="sgd",
            momentum=0.5,
            weight_decay=0.1,
            decoupled_weight_decay=False,
            precondition_frequency=NEVER,
        )
    )
    assert_close(ours, ref, 1e-13)


def test_adagrad_grafting_without_preconditioning_is_adagrad():
    ref, _, _ = trajectory(lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10))
    ours, _, _ = trajectory(
        lambda p: Shampoo(
            p, lr=0.1, betas=(0.0, 1.0), grafting="adagrad", grafting_epsilon=1e-10, precondition_frequency=NEVER
        )
    )
    assert_close(ours, ref, 1e-13)


def test_adam_grafting_without_preconditioning_is_adam():
    ref, _, _ = trajectory(lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8))
    ours, _, _ = trajectory(
        lambda p: Shampoo(
            p,
            lr=0.01,
            betas=(0.9, 1.0),
            grafting="adam",
            grafting_beta2=0.999,
            grafting_epsilon=1e-8,
            precondition_frequency=NEVER,
        )
    )
    assert_close(ours, ref, 1e-13)


def test_adam_grafting_with_decoupled_decay_is_adamw():
    ref, _, _ = trajectory(lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1))
    ours, _, _ = trajectory(
        lambda p: Shampoo(
            p,
            lr=0.01,
            betas=(0.8, 1.0),
            grafting="adam",
            grafting_beta2=0.99,
            grafting_epsilon=1e-8,
            weight_decay=0.1,
            precondition_frequency=NEVER,
        )
    )
    assert_close(ours, ref, 1e-13)


def test_grafting_none_before_start_is_filtered_gradient_descent():
    """Documented deviation: before preconditioning, grafting='none' steps along Ĝ (SGD with β1 filtering)."""
    ref, _, _ = trajectory(lambda p: torch.optim.SGD(p, lr=0.01))
    ours, _, _ = trajectory(lambda p: Shampoo(p, lr=0.01, betas=(0.0, 1.0), precondition_frequency=NEVER))
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


# --- the spectral step and the inverse roots ---------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 4)])
def test_first_step_without_grafting_is_spectral_step(shape):
    """L = G Gᵀ, R = Gᵀ G: (G Gᵀ)^{-1/4} G (Gᵀ G)^{-1/4} = U Vᵀ for G = U Σ Vᵀ."""
    g = torch.Generator().manual_seed(sum(shape))
    W = nn.Parameter(torch.randn(*shape, generator=g, dtype=DT))
    G = torch.randn(*shape, generator=g, dtype=DT)
    W0 = W.detach().clone()
    lr = 0.5
    opt = Shampoo([W], lr=lr, betas=(0.0, 1.0), epsilon=1e-20, precondition_frequency=1)
    W.grad = G.clone()
    opt.step()
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    step = (W0 - W.detach()) / lr
    # Square: exact up to round-off (~1e-15). Rectangular: the larger factor is singular;
    # its null directions get eigenvalues ~1e-16·σ² (round-off) + ε, whose -1/4 power
    # (≤ 1e5 for ε = 1e-20) multiplies G's ~1e-16 components there: ≤ 1e-10 in all.
    assert float((step - U @ Vh).abs().max()) < 1e-9


@pytest.mark.parametrize(
    "root_method, extra, rtol",
    [("eigh", {}, 1e-12), ("newton", {}, 2.5e-4), ("newton", {"newton_tolerance": 1e-6}, 1e-6)],
)
def test_inverse_roots_match_eigendecomposition_of_recorded_statistics(root_method, extra, rtol):
    beta2, eps = 0.95, 1e-6
    _, opt, grads = trajectory(
        lambda p: Shampoo(
            p,
            lr=0.01,
            betas=(0.9, beta2),
            epsilon=eps,
            grafting="adam",
            precondition_frequency=2,
            root_method=root_method,
            **extra,
        ),
        steps=6,
    )
    W = opt.param_groups[0]["params"][0]
    # L_t = Σ_s β2^{t-s} (1-β2) G_s G_sᵀ, last roots computed at step 6 (a multiple of 2)
    L = sum((1 - beta2) * beta2 ** (6 - s) * g[0] @ g[0].T for s, g in enumerate(grads, start=1))
    R = sum((1 - beta2) * beta2 ** (6 - s) * g[0].T @ g[0] for s, g in enumerate(grads, start=1))
    bias_correction = 1 - beta2**6
    P_L, P_R = opt.state[W]["inverse_roots"][0]
    # eigh: same float64 maths, summation order differs (~1e-14); newton: tolerance τ on
    # max|M - I| gives ≈ τ/4 relative error in X (see gd_lib.linalg.inverse_root_newton):
    # the default τ = 1e-3 (the reference's) gives 2.5e-4, τ = 1e-6 gives 2.5e-7
    for P, stat in [(P_L[0], L), (P_R[0], R)]:
        exact = inverse_root_eigh(stat / bias_correction, 4, eps=eps)
        assert float(torch.linalg.matrix_norm(P - exact) / torch.linalg.matrix_norm(exact)) < rtol


def test_roots_are_recomputed_only_on_schedule():
    params, loss_fn = two_layer_problem()
    opt = Shampoo(params, lr=0.01, grafting="adam", precondition_frequency=3, start_preconditioning_step=6)
    W = params[0]
    seen = []
    for _ in range(10):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        seen.append(opt.state[W]["inverse_roots"][0][0].clone())
    # zero until step 6 (the start), then refreshed at 6 and 9 only (step % 3 == 0 after the start)
    assert all(torch.count_nonzero(P) == 0 for P in seen[:5])
    changed = [t + 1 for t in range(1, 10) if not torch.equal(seen[t], seen[t - 1])]
    assert changed == [6, 9]


def test_vector_gets_full_matrix_adagrad_with_root_one_half():
    """One step on a vector: (g gᵀ + εI)^{-1/2} g = g / sqrt(‖g‖² + ε)."""
    b = nn.Parameter(torch.zeros(7, dtype=DT))
    g = torch.randn(7, generator=torch.Generator().manual_seed(3), dtype=DT)
    eps = 1e-6
    opt = Shampoo([b], lr=1.0, betas=(0.0, 1.0), epsilon=eps)
    b.grad = g.clone()
    opt.step()
    # closed form (g is an eigenvector, eigenvalue ‖g‖² + ε). eigh leaves ~1e-16‖g‖ of g
    # in the other eigenvectors, which are scaled by ε^{-1/2} = 1e3: errors ~1e-13
    assert torch.allclose(-b.detach(), g / math.sqrt(float(g @ g) + eps), rtol=1e-12, atol=1e-11)


def test_order_three_tensor_is_kronecker_preconditioned_with_root_one_sixth():
    """vec(D) = (P1 ⊗ P2 ⊗ P3) vec(G), P_j = (G_(j) G_(j)ᵀ + εI)^{-1/6}, built explicitly."""
    g = torch.Generator().manual_seed(4)
    T = nn.Parameter(torch.zeros(3, 4, 2, dtype=DT))
    G = torch.randn(3, 4, 2, generator=g, dtype=DT)
    eps = 1e-3
    opt = Shampoo([T], lr=1.0, betas=(0.0, 1.0), epsilon=eps)
    T.grad = G.clone()
    opt.step()
    unfold = [G.reshape(3, 8), G.permute(1, 0, 2).reshape(4, 6), G.permute(2, 0, 1).reshape(2, 12)]
    P = [inverse_root_eigh(M @ M.T, 6, eps=eps) for M in unfold]
    kron = torch.kron(torch.kron(P[0], P[1]), P[2])
    expected = (kron @ G.reshape(-1)).reshape(3, 4, 2)
    # row-major vec makes the Kronecker order P1 ⊗ P2 ⊗ P3; float64 round-off only
    assert torch.allclose(-T.detach(), expected, rtol=1e-11, atol=1e-13)


def test_size_one_dimensions_are_dropped():
    assert make_block_plan((1, 5, 1), 1024, False).shape == (5,)
    assert make_block_plan((), 1024, False).shape == (1,)
    assert make_block_plan((3, 3, 64), 1024, True).shape == (576,)


# --- blocking --------------------------------------------------------------------


def test_blocking_equals_separate_shampoo_on_each_block():
    """An 8x5 matrix with max_preconditioner_dim=3 is six blocks: 3x3, 3x2, 3x3, 3x2, 2x3, 2x2.

    Every block has its own statistics and grafting norm, so the blocked optimizer must
    equal Shampoo run on the blocks as separate parameters.
    """
    g = torch.Generator().manual_seed(5)
    W0 = torch.randn(8, 5, generator=g, dtype=DT)
    X = torch.randn(30, 5, generator=g, dtype=DT)

    def loss_of(W):
        return torch.tanh(X @ W.T).pow(2).sum()

    config = ShampooConfig(betas=(0.9, 0.99), grafting="adam", epsilon=1e-8, precondition_frequency=2)
    W = nn.Parameter(W0.clone())
    blocked = Shampoo([W], lr=0.05, config=dataclasses.replace(config, max_preconditioner_dim=3))
    rows, cols = [slice(0, 3), slice(3, 6), slice(6, 8)], [slice(0, 3), slice(3, 5)]
    pieces = [nn.Parameter(W0[r, c].clone()) for r in rows for c in cols]
    separate = Shampoo(pieces, lr=0.05, config=config)
    for _ in range(6):
        blocked.zero_grad()
        loss_of(W).backward()
        blocked.step()
        separate.zero_grad()
        assembled = torch.cat([torch.cat(pieces[i * 2 : (i + 1) * 2], dim=1) for i in range(3)], dim=0)
        loss_of(assembled).backward()
        separate.step()
    assembled = torch.cat([torch.cat(pieces[i * 2 : (i + 1) * 2], dim=1) for i in range(3)], dim=0).detach()
    # same per-block maths, stacked/batched versus one at a time: float64 round-off
    assert torch.allclose(W.detach(), assembled, rtol=1e-10, atol=1e-12)
    classes = blocked.state[W]["factors"]
    assert sorted(f[0].shape[0] for f in classes) == [1, 1, 2, 2]  # 2 blocks of 3x3, 2 of 3x2, one 2x3, one 2x2


def test_newton_roots_follow_eigh_trajectory():
    ref, _, _ = trajectory(lambda p: Shampoo(p, lr=0.01, grafting="adam", epsilon=1e-6), steps=6)
    ours, _, _ = trajectory(
        lambda p: Shampoo(p, lr=0.01, grafting="adam", epsilon=1e-6, root_method="newton", newton_tolerance=1e-10),
        steps=6,
    )
    # roots agree to ~1e-10 relative; grafting normalises the step, so parameters ≤ 1e-8
    assert_close(ours, ref, 1e-8)


# --- configuration ----------------------------------------------------------------


def test_config_is_frozen_and_checked():
    config = ShampooConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epsilon = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="nesterov"):
        ShampooConfig(nesterov=True)
    with pytest.raises(ValueError, match="newton_tolerance"):
        ShampooConfig(newton_tolerance=0.0)
    with pytest.raises(ValueError, match="config"):
        Shampoo([nn.Parameter(torch.zeros(2))], config={"epsilon": 1.0})
    with pytest.raises(TypeError):
        Shampoo([nn.Parameter(torch.zeros(2))], not_a_field=1)
    opt = Shampoo([nn.Parameter(torch.zeros(2))], config=config, precondition_frequency=7)
    assert opt.param_groups[0]["config"].first_preconditioned_step == 7
    assert config.precondition_frequency == 1  # the caller's config is not mutated


# --- training ----------------------------------------------------------------------


@pytest.mark.slow
def test_trains_mlp_on_digits():
    """64-32-10 tanh MLP, minibatches of 200, 60 steps, Adam grafting: ≥ 93% validation accuracy.

    Measured 95.2% (Adam at lr 1e-2 on the same budget: 95.0%). The 2-point margin covers
    BLAS differences across machines.
    """
    acc = train_digits(
        lambda p: Shampoo(p, lr=1e-2, betas=(0.9, 0.999), grafting="adam", epsilon=1e-8, precondition_frequency=5)
    )
    assert acc >= 0.93, acc


def train_digits(make_optimizer, steps: int = 60, batch: int = 200) -> float:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = make_optimizer(model.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = train[torch.randint(0, len(train), (batch,), generator=gen)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return float((model(X[val]).argmax(1) == y[val]).float().mean())


def ill_conditioned_matrix_problem(n: int = 10, kappa: float = 10.0, seed: int = 0):
    """f(W) = ½‖A (W - W*) B‖_F² with A, B rotated, spectra log-spaced in [1, κ].

    The Hessian A² ⊗ B² has condition number κ⁴ = 1e4 and random eigenvectors, so a
    diagonal method (Adam) gains little while Kronecker-factored methods fit it.
    """
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    spectrum = torch.logspace(0, math.log10(kappa), n, dtype=DT)
    A, B = (U * spectrum) @ U.T, (V * spectrum) @ V.T
    W_star = torch.randn(n, n, generator=g, dtype=DT)
    return A, B, W_star


def steps_to_target(make_optimizer, target: float = 1e-6, max_steps: int = 400) -> int | None:
    """Steps until f ≤ target · f(0) from W = 0, or None if not reached within max_steps."""
    A, B, W_star = ill_conditioned_matrix_problem()
    W = nn.Parameter(torch.zeros_like(W_star))
    opt = make_optimizer([W])
    f0 = None
    for t in range(max_steps + 1):
        opt.zero_grad()
        loss = 0.5 * (A @ (W - W_star) @ B).pow(2).sum()
        value = float(loss.detach())
        f0 = value if f0 is None else f0
        if value <= target * f0:
            return t
        if not math.isfinite(value):
            return None
        loss.backward()
        opt.step()
    return None


BASELINES = {  # lr grids around each method's best (found by a wider sweep; see the report)
    "SGD": [lambda p, lr=lr: torch.optim.SGD(p, lr=lr) for lr in (1e-4, 1.9e-4)],
    "SGD+momentum": [lambda p, lr=lr: torch.optim.SGD(p, lr=lr, momentum=0.9) for lr in (1e-4, 3e-4)],
    "Adam": [lambda p, lr=lr: torch.optim.Adam(p, lr=lr) for lr in (0.1, 0.3, 1.0)],
}


@pytest.mark.slow
def test_beats_tuned_sgd_and_adam_on_ill_conditioned_matrix_problem():
    """Target: loss ≤ 1e-6 × initial. Shampoo (Adam grafting, lr 0.3, f=1) needs 129 steps;
    none of SGD, SGD+momentum (best 828 steps in a 2000-step sweep) or Adam (best 645)
    reaches it in 400 steps at any learning rate of its grid."""
    shampoo_steps = steps_to_target(
        lambda p: Shampoo(p, lr=0.3, betas=(0.9, 0.999), grafting="adam", epsilon=1e-12, precondition_frequency=1)
    )
    assert shampoo_steps is not None and shampoo_steps <= 200, shampoo_steps
    for name, makers in BASELINES.items():
        results = [steps_to_target(make) for make in makers]
        assert all(r is None or r > shampoo_steps for r in results), (name, results, shampoo_steps)
