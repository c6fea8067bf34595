"""Tests for gd_lib.curvature: products and exact matrices against torch.autograd.functional and
explicit formulas, Fisher identities, Lanczos, Hutchinson, sharpness, CG, closure helpers.

Tolerances. Everything is float64. Products and matrices computed by a different sequence of
autograd operations than the reference agree to ~1e-15 here; 1e-8 (the issue's bound) leaves
room for reordered sums. Identities that hold exactly (GGN = Hessian for a linear model with
MSE, true Fisher = GGN for softmax cross-entropy) are checked at 1e-12 relative to the matrix
size. Statistical tolerances are derived in each test from the exact variance.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import gd_lib.curvature as C

DT = torch.float64


# --- models and references ---------------------------------------------------------------


def mlp(seed=0, d_in=4, hidden=5, d_out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).to(DT)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3)).to(DT)


def data(n=12, d_in=4, classes=3, seed=1, image=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn((n, 1, 5, 5) if image else (n, d_in), generator=g, dtype=DT)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def loss_of_flat(model, loss_fn, X, y):
    """θ ↦ loss_fn(f_θ(X), y), for torch.autograd.functional (a naive unflatten, independent of gd_lib)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def unflat(theta):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            out[n] = theta[i : i + k].reshape(s)
            i += k
        return out

    def outputs(theta):
        return functional_call(model, unflat(theta), (X,))

    def loss(theta):
        return loss_fn(outputs(theta), y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, outputs, theta0


CASES = {
    "mlp_ce": lambda: (mlp(), nn.CrossEntropyLoss(), *data()),
    "mlp_mse": lambda: (
        mlp(),
        nn.MSELoss(),
        data()[0],
        torch.randn(12, 3, generator=torch.Generator().manual_seed(5), dtype=DT),
    ),
    "cnn_ce": lambda: (tiny_cnn(), nn.CrossEntropyLoss(), *data(image=True)),
    "mlp_ce_sum": lambda: (mlp(), nn.CrossEntropyLoss(reduction="sum"), *data()),
}


def reference_hessian(model, loss_fn, X, y):
    loss, _, theta0 = loss_of_flat(model, loss_fn, X, y)
    return torch.autograd.functional.hessian(loss, theta0)


def reference_ggn(model, loss_fn, X, y):
    """J^T (∇²_z L) J with J and ∇²_z L from torch.autograd.functional (explicit formula)."""
    _, outputs, theta0 = loss_of_flat(model, loss_fn, X, y)
    z = outputs(theta0).detach()
    J = torch.autograd.functional.jacobian(outputs, theta0).reshape(z.numel(), -1)
    Hz = torch.autograd.functional.hessian(lambda zz: loss_fn(zz.reshape(z.shape), y), z.reshape(-1))
    return J.T @ Hz @ J


def per_example_gradients(model, nll, X, y):
    """Naive per-example gradients of nll(z_n, y_n), one backward pass per example."""
    params = list(model.parameters())
    rows = []
    for n in range(X.shape[0]):
        out = nll(model(X[n : n + 1]), y[n : n + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params)]))
    return torch.stack(rows)


def close(a, b, tol):
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max())


# --- parameter vectors ------------------------------------------------------------------


def test_flatten_unflatten_round_trip_matches_parameters_to_vector():
    model = tiny_cnn()
    params = list(model.parameters())
    flat = C.flatten(params)
    assert torch.equal(flat, nn.utils.parameters_to_vector(params))
    assert all(torch.equal(a, b) for a, b in zip(C.unflatten(flat, params), params))
    assert C.num_parameters(params) == flat.numel()
    with pytest.raises(ValueError, match="length"):
        C.unflatten(flat[:-1], params)


# --- exact matrices and products -----------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_hessian_matrix_and_product_match_autograd_functional_hessian(case):
    model, loss_fn, X, y = CASES[case]()
    H_ref = reference_hessian(model, loss_fn, X, y)
    close(C.hessian_matrix(model, loss_fn, X, y), H_ref, 1e-8)
    close(C.hessian_matrix(model, loss_fn, X, y, batched=True), H_ref, 1e-8)
    op = C.hessian_operator(model, loss_fn, X, y)
    V = torch.randn(op.dim, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    for j in range(3):  # several products from one operator (the graph is kept)
        close(op(V[:, j]), H_ref @ V[:, j], 1e-8)


@pytest.mark.parametrize("case", list(CASES))
def test_ggn_matrix_and_product_match_explicit_jacobian_formula(case):
    model, loss_fn, X, y = CASES[case]()
    G_ref = reference_ggn(model, loss_fn, X, y)
    close(C.ggn_matrix(model, loss_fn, X, y), G_ref, 1e-8)
    close(C.ggn_matrix(model, loss_fn, X, y, batched=True), G_ref, 1e-8)
    v = torch.randn(G_ref.shape[0], generator=torch.Generator().manual_seed(3), dtype=DT)
    close(C.ggn_operator(model, loss_fn, X, y)(v), G_ref @ v, 1e-8)


def test_jacobian_vector_products_match_explicit_jacobian():
    model, _, X, _ = CASES["cnn_ce"]()
    _, outputs, theta0 = loss_of_flat(model, None, X, None)
    z = model(X)
    J = torch.autograd.functional.jacobian(outputs, theta0).reshape(z.numel(), -1)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(4)
    v = torch.randn(J.shape[1], generator=g, dtype=DT)
    u = torch.randn(z.shape, generator=g, dtype=DT)
    close(C.jacobian_vector_product(z, params, v).reshape(-1), J @ v, 1e-8)
    close(C.transposed_jacobian_vector_product(z, params, u), J.T @ u.reshape(-1), 1e-8)
    close(C.jacobian_matrix(model, X), J, 1e-8)


def test_ggn_equals_hessian_for_linear_model_with_mse():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(DT)
    X, _ = data()
    y = torch.randn(12, 3, dtype=DT)
    H = C.hessian_matrix(model, nn.MSELoss(), X, y)
    G = C.ggn_matrix(model, nn.MSELoss(), X, y)
    close(G, H, 1e-12)  # exact identity: the residual term Σ r ∇²z vanishes for a linear model
    # and the Hessian is the closed form (2/(N C)) [X 1]^T [X 1] ⊗ I, checked blockwise for W:
    # d²L / dW_ij dW_kl = δ_ik (2/(N C)) Σ_n x_nj x_nl
    W_block = H[:12, :12].reshape(3, 4, 3, 4)
    expected = 2.0 / (12 * 3) * X.T @ X
    for i in range(3):
        close(W_block[i, :, i, :], expected, 1e-12)


@pytest.mark.parametrize("case", ["mlp_ce", "cnn_ce", "mlp_ce_sum", "mlp_mse"])
def test_true_fisher_equals_ggn_for_canonical_losses(case):
    """Cross-entropy: the class-sum Σ_c π_c g_c g_c^T equals J^T (diag π - ππ^T) J, the GGN."""
    model, loss_fn, X, y = CASES[case]()
    F_true = C.fisher_matrix(model, loss_fn, X, y, kind="true")
    G = reference_ggn(model, loss_fn, X, y)
    close(F_true, G, 1e-12)
    v = torch.randn(G.shape[0], generator=torch.Generator().manual_seed(6), dtype=DT)
    close(C.fisher_operator(model, loss_fn, X, y, kind="true")(v), G @ v, 1e-10)


def test_true_fisher_class_sum_matches_naive_per_class_gradients():
    """The exact Fisher written from scratch: for each example and class, backprop -log π_c."""
    model, loss_fn, X, y = CASES["mlp_ce"]()
    with torch.no_grad():
        probs = torch.softmax(model(X), dim=1)
    N, Cn = probs.shape
    F_ref = 0
    for c in range(Cn):
        G = per_example_gradients(model, lambda z, _y, c=c: F.cross_entropy(z, torch.full_like(_y, c)), X, y)
        F_ref = F_ref + (G * probs[:, c : c + 1]).T @ G
    close(C.fisher_matrix(model, loss_fn, X, y, kind="true"), F_ref / N, 1e-10)


@pytest.mark.parametrize("case", ["mlp_ce", "mlp_mse", "mlp_ce_sum"])
def test_empirical_fisher_matches_naive_per_example_gradients(case):
    model, loss_fn, X, y = CASES[case]()
    if isinstance(loss_fn, nn.MSELoss):  # NLL_n = ||z_n - y_n||², M = N C
        nll, M = (lambda z, t: ((z - t) ** 2).sum()), y.numel()
    else:  # NLL_n = -log π_{y_n}, M = N (mean) or 1 (sum)
        nll, M = (lambda z, t: F.cross_entropy(z, t)), (X.shape[0] if loss_fn.reduction == "mean" else 1)
    G = per_example_gradients(model, nll, X, y)
    E_ref = G.T @ G / M
    close(C.fisher_matrix(model, loss_fn, X, y, kind="empirical"), E_ref, 1e-10)
    v = torch.randn(E_ref.shape[0], generator=torch.Generator().manual_seed(7), dtype=DT)
    close(C.fisher_operator(model, loss_fn, X, y, kind="empirical")(v), E_ref @ v, 1e-10)


def test_sampled_true_fisher_product_converges_at_the_monte_carlo_rate():
    """F̂v with S sampled labels per example vs the exact Fv.

    For cross-entropy each example contributes t_n = s (s^T a_n), a_n = (J v)_n, s = π_n - e_ĉ
    with ĉ ~ π_n: a discrete variable whose covariance Σ_n we compute exactly by summing over
    classes. Then Cov(F̂v) = J^T blockdiag(Σ_n) J / (M² S) and E||F̂v - Fv||² = tr Cov. We
    assert ||F̂v - Fv|| ≤ 4 sqrt(tr Cov): by Markov's inequality a seed fails with probability
    at most 1/16 (by the CLT, far less); and at S = 4096 the error is well below S = 16's.
    """
    model, loss_fn, X, y = CASES["mlp_ce"]()
    z = model(X)
    N, Cn = z.shape
    J = C.jacobian_matrix(model, X).reshape(N, Cn, -1)
    v = torch.randn(J.shape[-1], generator=torch.Generator().manual_seed(8), dtype=DT)
    exact = C.fisher_matrix(model, loss_fn, X, y) @ v
    probs = torch.softmax(z.detach(), 1)
    a = torch.einsum("ncp,p->nc", J, v)
    eye = torch.eye(Cn, dtype=DT)
    var_total = 0.0
    for n in range(N):
        t = torch.stack([(probs[n] - eye[c]) * torch.dot(probs[n] - eye[c], a[n]) for c in range(Cn)])
        mean = probs[n] @ t
        cov = (t * probs[n][:, None]).T @ t - torch.outer(mean, mean)
        var_total += float(torch.trace(J[n].T @ cov @ J[n])) / N**2
    errors = {}
    for S in (16, 4096):
        approx = C.fisher_operator(model, loss_fn, X, y, kind="true", mc_samples=S, seed=11)(v)
        errors[S] = float((approx - exact).norm())
        assert errors[S] <= 4 * math.sqrt(var_total / S), (S, errors[S], math.sqrt(var_total / S))
    assert errors[4096] < errors[16] / 4  # the 1/sqrt(S) rate predicts a factor 16
    # the sampled operator is one fixed matrix: the same seed gives the same product
    again = C.fisher_operator(model, loss_fn, X, y, kind="true", mc_samples=16, seed=11)(v)
    assert torch.equal(again, C.fisher_operator(model, loss_fn, X, y, kind="true", mc_samples=16, seed=11)(v))


def test_sampled_fisher_for_mse_converges_to_gauss_newton():
    """Squared error: s = 2(z - ŷ) ~ N(0, 2I); the relative error at S = 4000 is ~1/sqrt(S) ≈ 0.016
    times a modest constant; 0.15 leaves a wide margin, and S = 1 must be much worse."""
    model, loss_fn, X, y = CASES["mlp_mse"]()
    v = torch.randn(C.num_parameters(list(model.parameters())), generator=torch.Generator().manual_seed(9), dtype=DT)
    exact = C.ggn_matrix(model, loss_fn, X, y) @ v

    def rel(S):
        return float((C.fisher_operator(model, loss_fn, X, y, mc_samples=S, seed=1)(v) - exact).norm() / exact.norm())

    assert rel(4000) < 0.15
    assert rel(4000) < rel(1)


@pytest.mark.slow  # importing curvlinops alone takes seconds on a loaded 2-core machine
def test_curvlinops_cross_check_ggn_hessian_and_empirical_fisher():
    import curvlinops  # a dev dependency (pyproject [dev]); a missing one is a failure, not a skip

    for case in ["mlp_ce", "mlp_mse", "cnn_ce"]:
        model, loss_fn, X, y = CASES[case]()
        params = list(model.parameters())
        v = torch.randn(C.num_parameters(params), generator=torch.Generator().manual_seed(10), dtype=DT)
        ours = {
            "ggn": C.ggn_operator(model, loss_fn, X, y)(v),
            "hessian": C.hessian_operator(model, loss_fn, X, y)(v),
            "ef": C.fisher_operator(model, loss_fn, X, y, kind="empirical")(v),
        }
        theirs = {
            "ggn": curvlinops.GGNLinearOperator(model, loss_fn, params, [(X, y)], check_deterministic=False) @ v,
            "hessian": curvlinops.HessianLinearOperator(model, loss_fn, params, [(X, y)], check_deterministic=False)
            @ v,
            "ef": curvlinops.EFLinearOperator(model, loss_fn, params, [(X, y)], check_deterministic=False) @ v,
        }
        for key in ours:
            close(ours[key], theirs[key], 1e-8)


def test_fisher_and_likelihood_reject_what_they_cannot_represent():
    model, _, X, y = CASES["mlp_ce"]()
    with pytest.raises(ValueError, match="kind"):
        C.fisher_operator(model, nn.CrossEntropyLoss(), X, y, kind="gauss")
    with pytest.raises(ValueError, match="mc_samples"):
        C.fisher_operator(model, nn.CrossEntropyLoss(), X, y, mc_samples=0)
    with pytest.raises(ValueError, match="loss"):
        C.fisher_matrix(model, nn.L1Loss(), X, y)
    with pytest.raises(ValueError, match="label_smoothing"):
        C.likelihood_of(nn.CrossEntropyLoss(label_smoothing=0.1))
    with pytest.raises(ValueError, match="reduction"):
        C.likelihood_of(nn.CrossEntropyLoss(reduction="none"))


# --- spectra ---------------------------------------------------------------------------


def test_lanczos_top_eigenvalue_of_exact_hessian_within_1e_6():
    model, loss_fn, X, y = CASES["cnn_ce"]()
    H = reference_hessian(model, loss_fn, X, y)
    exact = torch.linalg.eigvalsh(H)
    op = C.hessian_operator(model, loss_fn, X, y)
    assert op.dim == 77
    result = C.lanczos(op, k=3, num_iterations=40)  # fewer products than P = 77
    assert abs(float(result.eigenvalues[0]) - float(exact[-1])) <= 1e-6 * abs(float(exact[-1]))
    # the top-3 Ritz pairs: eigenvalues sorted, unit eigenvectors with small residual ||Hv - λv||
    assert torch.all(result.eigenvalues[:-1] >= result.eigenvalues[1:])
    close(result.eigenvalues, exact.flip(0)[:3], 1e-6)
    residual = H @ result.eigenvectors - result.eigenvectors * result.eigenvalues
    assert float(residual.norm(dim=0).max()) <= 1e-5 * float(exact.abs().max())
    close(result.eigenvectors.norm(dim=0), torch.ones(3, dtype=DT), 1e-12)


def test_lanczos_with_p_iterations_recovers_the_whole_spectrum_without_ghosts():
    """A diagonal matrix with clustered and repeated eigenvalues; full reorthogonalization keeps
    the Krylov basis orthonormal, so P steps give every eigenvalue once (a plain three-term
    recurrence produces duplicated copies of converged eigenvalues here)."""
    eig = torch.cat([torch.logspace(0, 4, 40, dtype=DT), torch.tensor([1e4 + 1e-3, 5.0, 5.0], dtype=DT)])
    Q, _ = torch.linalg.qr(torch.randn(43, 43, generator=torch.Generator().manual_seed(0), dtype=DT))
    A = Q @ torch.diag(eig) @ Q.T
    result = C.lanczos(lambda v: A @ v, k=43, num_iterations=43, dim=43, which="smallest")
    # an invariant subspace may be found early (repeated eigenvalue 5): at least the distinct ones
    found = result.eigenvalues
    assert found.numel() >= 42
    for lam in found:  # every Ritz value is an eigenvalue
        assert float((eig - lam).abs().min()) <= 1e-8 * 1e4
    top = C.lanczos(lambda v: A @ v, k=2, num_iterations=30, dim=43)
    close(top.eigenvalues, torch.tensor([1e4 + 1e-3, 1e4], dtype=DT), 1e-9)


def test_lanczos_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k"):
        C.lanczos(lambda v: v, k=0, dim=5)
    with pytest.raises(ValueError, match="which"):
        C.lanczos(lambda v: v, k=1, dim=5, which="middle")
    with pytest.raises(ValueError, match="dim"):
        C.lanczos(lambda v: v, k=1)


def test_hutchinson_trace_within_its_exact_standard_error():
    """Var[ε^T H ε] = 2 Σ_{i≠j} H_ij² for Rademacher ε; with S probes the estimate is within
    4 standard deviations (Chebyshev: a seed fails with probability ≤ 1/16)."""
    model, loss_fn, X, y = CASES["mlp_ce"]()
    H = reference_hessian(model, loss_fn, X, y)
    off = H - torch.diag(torch.diag(H))
    S = 400
    sd = math.sqrt(2 * float((off**2).sum()) / S)
    est = C.hutchinson_trace(C.hessian_operator(model, loss_fn, X, y), S, seed=3)
    assert abs(est.trace - float(torch.trace(H))) <= 4 * sd
    assert 0.5 * sd < est.standard_error < 2 * sd  # the sample estimate of the same quantity
    again = C.hutchinson_trace(C.hessian_operator(model, loss_fn, X, y), S, seed=3)
    assert again.trace == est.trace  # seeded
    # a diagonal matrix has zero variance: exact with one probe
    D = torch.diag(torch.arange(1.0, 6.0, dtype=DT))
    assert C.hutchinson_trace(lambda v: D @ v, 1, dim=5).trace == 15.0


def test_power_iteration_and_sharpness_match_the_top_eigenvalue():
    eig = torch.tensor([10.0, 9.0, 3.0, -2.0, 0.5], dtype=DT)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=DT))
    A = Q @ torch.diag(eig) @ Q.T
    res = C.power_iteration(lambda v: A @ v, 2000, dim=5, tol=1e-14)
    assert abs(res.eigenvalue - 10.0) <= 1e-8
    assert abs(abs(float(torch.dot(res.eigenvector, Q[:, 0]))) - 1.0) <= 1e-6
    model, loss_fn, X, y = CASES["mlp_ce"]()
    top = float(torch.linalg.eigvalsh(reference_hessian(model, loss_fn, X, y))[-1])
    assert abs(C.sharpness(model, loss_fn, X, y, num_iterations=43) - top) <= 1e-6 * abs(top)
    assert abs(C.sharpness(model, loss_fn, X, y, method="power", num_iterations=3000) - top) <= 1e-4 * abs(top)


def test_sharpness_tracker_records_every_k_steps_without_touching_training_state():
    model, loss_fn, X, y = CASES["mlp_ce"]()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = C.SharpnessTracker(model, loss_fn, X, y, every=3, num_iterations=43)
    expected = []
    for t in range(7):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        rng = torch.get_rng_state()
        value = tracker(t)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
        assert torch.equal(torch.get_rng_state(), rng)
        if t % 3 == 0:
            top = float(torch.linalg.eigvalsh(reference_hessian(model, loss_fn, X, y))[-1])
            assert abs(value - top) <= 1e-6 * abs(top)
            expected.append(t)
        else:
            assert value is None
        opt.step()
    assert tracker.steps == expected == [0, 3, 6]
    assert len(tracker.values) == 3 and tracker.history[1][0] == 3
    with pytest.raises(ValueError, match="every"):
        C.SharpnessTracker(model, loss_fn, X, y, every=0)


# --- linear solves and closures --------------------------------------------------------------


def test_conjugate_gradient_matches_direct_solve_and_stops_on_negative_curvature():
    g = torch.Generator().manual_seed(2)
    B = torch.randn(30, 30, generator=g, dtype=DT)
    A = B @ B.T + 0.1 * torch.eye(30, dtype=DT)
    b = torch.randn(30, generator=g, dtype=DT)
    res = C.conjugate_gradient(lambda v: A @ v, b, tol=1e-13, max_iter=200)
    assert res.converged
    x = torch.linalg.solve(A, b)
    assert float((res.x - x).norm() / x.norm()) <= 1e-9  # cond(A) ~ 1e4 times the 1e-13 residual
    # truncated: a few iterations already reduce the residual, and never increase the quadratic model
    few = C.conjugate_gradient(lambda v: A @ v, b, max_iter=3)
    assert not few.converged and few.iterations == 3

    def q(v):
        return 0.5 * v @ A @ v - b @ v

    assert q(few.x) < q(torch.zeros(30, dtype=DT))
    # indefinite: stops at the first direction of non-positive curvature, returning the iterate
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=DT))
    stop = C.conjugate_gradient(lambda v: indefinite @ v, torch.tensor([1.0, 1.0], dtype=DT))
    assert not stop.converged and stop.iterations == 0 and torch.equal(stop.x, torch.zeros(2, dtype=DT))


def test_keep_graph_leaves_gradients_alone_and_keeps_the_loss_differentiable():
    model, loss_fn, X, y = CASES["mlp_ce"]()

    def closure():
        model.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        return loss

    closure()
    plain = [p.grad.clone() for p in model.parameters()]
    loss = C.evaluate_keeping_graph(closure)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), plain))
    assert all(not p.grad.requires_grad for p in model.parameters())
    # the loss can be differentiated again: its Hessian equals the reference
    H = C.hessian_of_loss(loss, list(model.parameters()))
    close(H, reference_hessian(model, loss_fn, X, y), 1e-8)
    # torch.autograd.backward with retain_graph given positionally is also kept
    with C.keep_graph():
        l2 = loss_fn(model(X), y)
        torch.autograd.backward(l2, None, False)
        torch.autograd.grad(l2, list(model.parameters()))  # would raise if the graph were freed


def test_capture_outputs_records_outputs_and_removes_its_hook():
    model, loss_fn, X, y = CASES["mlp_ce"]()
    with C.capture_outputs(model) as captured:
        z = model(X)
    assert len(captured) == 1 and captured[0] is z
    model(X)
    assert len(captured) == 1  # the hook is gone
    assert not model._forward_hooks


@pytest.mark.gpu
def test_products_lanczos_and_second_order_steps_agree_on_cuda():
    """The same computations on CUDA (float64) and CPU agree to reordering error (1e-8 rel.)."""
    from gd_lib.optim import NaturalGradient, Newton

    results = {}
    for device in ("cpu", "cuda"):
        model, loss_fn, X, y = CASES["cnn_ce"]()
        model, X, y = model.to(device), X.to(device), y.to(device)
        v = torch.randn(77, generator=torch.Generator().manual_seed(1), dtype=DT).to(device)
        out = {
            "hvp": C.hessian_operator(model, loss_fn, X, y)(v),
            "ggn": C.ggn_operator(model, loss_fn, X, y)(v),
            "fisher": C.fisher_matrix(model, loss_fn, X, y) @ v,
            "top": C.lanczos(C.hessian_operator(model, loss_fn, X, y), k=1, num_iterations=77).eigenvalues,
        }
        C.fisher_operator(model, loss_fn, X, y, mc_samples=4)(v)  # sampling runs on the device
        for name, make in [
            ("newton", lambda m: Newton(m.parameters(), lr=1.0, damping=1.0)),
            ("ng", lambda m: NaturalGradient(m.parameters(), m, lr=1.0, damping=0.1, cg_max_iter=200, cg_tol=1e-12)),
        ]:
            m = CASES["cnn_ce"]()[0].to(device)
            opt = make(m)

            def closure(opt=opt, m=m, loss_fn=loss_fn, X=X, y=y):
                opt.zero_grad()
                loss = loss_fn(m(X), y)
                loss.backward()
                return loss

            opt.step(closure)
            out[name] = C.flatten(list(m.parameters())).detach()
        results[device] = {k: t.cpu() for k, t in out.items()}
    for key in results["cpu"]:
        close(results["cuda"][key], results["cpu"][key], 1e-8)
