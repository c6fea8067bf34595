"""The first-order optimizers torch.optim does not have, against references.

- Prodigy, SGDScheduleFree, AdamWScheduleFree: against their reference packages
  (prodigyopt, schedulefree), 50 steps on a small float64 MLP, several settings each.
- Lion, SignSGD, Signum, SWATS, GGT, EntropySGD: against naive textbook versions written
  here (GGT against the explicit d×d matrix [(G Gᵀ)^{1/2} + εI]^{-1}).
- Reductions: Signum with momentum 0 is SignSGD; Schedule-Free with interpolation β = 0
  trains on the base method's iterates (SGD / AdamW with β1 = 0); SWATS that never
  switches is Adam.

Tolerances (float64 throughout): "same arithmetic" comparisons use 1e-12 or tighter;
comparisons against a differently organised computation say why they need more.

Documented divergences from the reference packages (none changes a trajectory):
- prodigyopt adds the coupled weight decay into ``p.grad`` in place, schedulefree adds
  the weight decay into ``p.grad`` and (AdamW) divides it by the denominator in place;
  gd_lib never writes ``p.grad`` (tested below).
- Prodigy refuses ``fsdp_in_use=True`` and raises on NaN/inf gradients (d couples all
  parameters); with prodigyopt one NaN entry freezes d (its numerator stays NaN) and,
  through the forward pass, makes every parameter NaN a step later.
- AdamWScheduleFree validates its arguments (β1 in (0, 1), as ``.eval()`` divides by β1);
  the package checks none. SGDScheduleFree's checks are the package's.
- step() in eval mode raises RuntimeError (the package raises a bare Exception).
"""

from __future__ import annotations

import copy
import math

import prodigyopt
import pytest
import pytorch_optimizer
import schedulefree
import torch
from torch import nn

import gd_lib.optim as optim
from gd_lib.optim.schedule_free import adamw_schedule_free_update, schedule_free_coefficients, sgd_schedule_free_update

# --- a small float64 problem ----------------------------------------------------------------


class SmallMLP(nn.Module):
    """6 -> 5 -> 3 tanh MLP, cross-entropy on 24 fixed points (d = 53 parameters)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(6, 5).double()
        self.fc2 = nn.Linear(5, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
        self.X = torch.randn(24, 6, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 3, (24,), generator=g)

    def forward(self):
        return nn.functional.cross_entropy(self.fc2(torch.tanh(self.fc1(self.X))), self.y)


def closure_for(model, opt):
    def closure():
        opt.zero_grad()
        loss = model()
        loss.backward()
        return loss

    return closure


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def run_pair(make_ours, make_ref, steps=50, seed=0):
    """The same model trained by our optimizer and by the reference; returns both models/opts."""
    ours_model, ref_model = SmallMLP(seed), SmallMLP(seed)
    ours, ref = make_ours(ours_model), make_ref(ref_model)
    for _ in range(steps):
        ours.step(closure_for(ours_model, ours))
        ref.step(closure_for(ref_model, ref))
    return ours_model, ours, ref_model, ref


# --- Prodigy against prodigyopt -------------------------------------------------------------

PRODIGY_SETTINGS = [
    {},
    {"weight_decay": 0.1},  # decoupled (default)
    {"weight_decay": 0.1, "decouple": False},  # L2 in the gradient
    {"use_bias_correction": True},
    {"safeguard_warmup": True, "betas": (0.0, 0.99)},  # no first moment
    {"growth_rate": 1.02, "d_coef": 2.0, "beta3": 0.9, "eps": 1e-6},
    {"slice_p": 3, "d0": 1e-4, "lr": 0.5},
]


@pytest.mark.parametrize("kwargs", PRODIGY_SETTINGS, ids=[str(k) for k in PRODIGY_SETTINGS])
def test_prodigy_matches_prodigyopt(kwargs, capsys):
    ours_model, ours, ref_model, ref = run_pair(
        lambda m: optim.Prodigy(m.parameters(), **kwargs), lambda m: prodigyopt.Prodigy(m.parameters(), **kwargs)
    )
    # Bound 1e-8 as the issue asks. The arithmetic is the package's, in the same order
    # (float64, sums of per-tensor .item() in parameter order): the trajectories are in
    # fact bit-identical today; a real deviation in the d estimate shows as >> 1e-8.
    torch.testing.assert_close(flat(ours_model), flat(ref_model), rtol=0, atol=1e-8)
    assert ours.param_groups[0]["d"] == pytest.approx(ref.param_groups[0]["d"], rel=1e-10)
    assert ours.param_groups[0]["d"] > ours.param_groups[0]["d0"]  # d actually adapted


def test_prodigy_frozen_group_and_mixed_lr():
    """Groups with lr 0 are frozen out of the estimate, as in prodigyopt; other lrs are refused."""

    def groups(m, lr2):
        return [{"params": m.fc1.parameters()}, {"params": m.fc2.parameters(), "lr": lr2}]

    ours_model, _, ref_model, _ = run_pair(
        lambda m: optim.Prodigy(groups(m, 0.0), weight_decay=0.0),
        lambda m: prodigyopt.Prodigy(groups(m, 0.0), weight_decay=0.0),
        steps=20,
    )
    # same arithmetic as the package (see above)
    torch.testing.assert_close(flat(ours_model), flat(ref_model), rtol=0, atol=1e-8)
    assert torch.equal(ours_model.fc2.weight, SmallMLP(0).fc2.weight)  # frozen group untouched
    model = SmallMLP()
    opt = optim.Prodigy(groups(model, 0.5))
    with pytest.raises(RuntimeError, match="lr"):
        opt.step(closure_for(model, opt))


def test_prodigy_does_not_write_grad_with_coupled_decay():
    model = SmallMLP()
    opt = optim.Prodigy(model.parameters(), weight_decay=0.1, decouple=False)
    loss = model()
    loss.backward()
    before = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


# --- Schedule-Free against schedulefree -----------------------------------------------------

SGD_SF_SETTINGS = [
    {"lr": 0.1},
    {"lr": 0.1, "weight_decay": 0.01},
    {"lr": 0.2, "warmup_steps": 10, "momentum": 0.5},
    {"lr": 0.1, "r": 1.0, "weight_lr_power": 0.0, "warmup_steps": 5},
]
ADAMW_SF_SETTINGS = [
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.05},
    {"lr": 0.02, "warmup_steps": 10, "betas": (0.95, 0.99)},
    {"lr": 0.01, "r": 0.5, "weight_lr_power": 1.0, "eps": 1e-6, "betas": (0.5, 0.9)},
]


def _schedule_free_case(ours_cls, ref_cls, kwargs, foreach):
    def make(cls):
        def build(m):
            opt = cls(m.parameters(), foreach=foreach, **kwargs)
            opt.train()
            return opt

        return build

    ours_model, ours, ref_model, ref = SmallMLP(), None, SmallMLP(), None
    ours, ref = make(ours_cls)(ours_model), make(ref_cls)(ref_model)
    for step in range(50):
        if step == 25:  # an eval/train round trip mid-run must not change the trajectory
            ours.eval(), ref.eval()
            # the same arithmetic (lerp) on the same numbers
            torch.testing.assert_close(flat(ours_model), flat(ref_model), rtol=0, atol=1e-12)
            ours.train(), ref.train()
        ours.step(closure_for(ours_model, ours))
        ref.step(closure_for(ref_model, ref))
    # training weights y: same arithmetic in the same order as the package -> ~1e-12;
    # the task's bound of 1e-8 would also hold.
    torch.testing.assert_close(flat(ours_model), flat(ref_model), rtol=0, atol=1e-12)
    ours.eval(), ref.eval()
    # evaluation weights x
    torch.testing.assert_close(flat(ours_model), flat(ref_model), rtol=0, atol=1e-12)
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr"):
        assert ours.param_groups[0][key] == pytest.approx(ref.param_groups[0][key], rel=1e-14)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("kwargs", SGD_SF_SETTINGS, ids=[str(k) for k in SGD_SF_SETTINGS])
def test_sgd_schedule_free_matches_schedulefree(kwargs, foreach):
    _schedule_free_case(optim.SGDScheduleFree, schedulefree.SGDScheduleFree, kwargs, foreach)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("kwargs", ADAMW_SF_SETTINGS, ids=[str(k) for k in ADAMW_SF_SETTINGS])
def test_adamw_schedule_free_matches_schedulefree(kwargs, foreach):
    _schedule_free_case(optim.AdamWScheduleFree, schedulefree.AdamWScheduleFree, kwargs, foreach)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (optim.SGDScheduleFree, {"lr": 0.1, "weight_decay": 0.01, "warmup_steps": 5}),
        (optim.AdamWScheduleFree, {"lr": 0.01, "weight_decay": 0.05, "warmup_steps": 5}),
    ],
)
def test_schedule_free_foreach_equals_loop(cls, kwargs):
    models = [SmallMLP(), SmallMLP()]
    opts = [cls(m.parameters(), foreach=fe, **kwargs) for m, fe in zip(models, (False, True))]
    for o in opts:
        o.train()
    for _ in range(30):
        for m, o in zip(models, opts):
            o.step(closure_for(m, o))
    # the same element-wise kernels in the same order: equal to the last bit on the CPU
    # (1e-14 allows a different vectorisation of the foreach kernels on other machines)
    torch.testing.assert_close(flat(models[0]), flat(models[1]), rtol=0, atol=1e-14)


def test_schedule_free_needs_train_mode_and_never_writes_grad():
    model = SmallMLP()
    opt = optim.AdamWScheduleFree(model.parameters(), weight_decay=0.1)
    with pytest.raises(RuntimeError, match="train"):
        opt.step(closure_for(model, opt))
    opt.train()
    loss = model()
    loss.backward()
    before = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_sgd_schedule_free_is_the_three_sequence_recursion():
    """The memory-saving update equals the paper's y/z/x recursion, written out naively."""
    lr, beta, wd, warmup = 0.1, 0.8, 0.01, 5
    model = SmallMLP()
    opt = optim.SGDScheduleFree(model.parameters(), lr=lr, momentum=beta, weight_decay=wd, warmup_steps=warmup)
    opt.train()
    naive_model = SmallMLP()
    z = [p.detach().clone() for p in naive_model.parameters()]
    x = [p.detach().clone() for p in naive_model.parameters()]
    weights = []
    for t in range(40):
        opt.step(closure_for(model, opt))
        # naive: y_t = (1-β) z_t + β x_t ; z_{t+1} = z_t - γ_t (∇f(y_t) + λ y_t) ;
        # x_{t+1} = (1 - c) x_t + c z_{t+1} with c = w_{t+1} / Σ w, w = γ_max²
        y = [(1 - beta) * zi + beta * xi for zi, xi in zip(z, x)]
        with torch.no_grad():
            for p, yi in zip(naive_model.parameters(), y):
                p.copy_(yi)
        naive_model.zero_grad()
        naive_model().backward()
        gamma_t = lr * min(1.0, (t + 1) / warmup)
        weights.append(max([lr * min(1.0, (i + 1) / warmup) for i in range(t + 1)]) ** 2)
        c = weights[-1] / sum(weights)
        for i, p in enumerate(naive_model.parameters()):
            z[i] = z[i] - gamma_t * (p.grad + wd * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
    y_next = [(1 - beta) * zi + beta * xi for zi, xi in zip(z, x)]
    # same maths, differently associated (y is updated from y and z, not rebuilt from
    # x and z): rounding differences of a few ulps per step over 40 steps
    torch.testing.assert_close(flat(model), torch.cat([t.reshape(-1) for t in y_next]), rtol=0, atol=1e-12)
    opt.eval()
    torch.testing.assert_close(
        flat(model), torch.cat([t.reshape(-1) for t in x]), rtol=0, atol=1e-11
    )  # x = (y - (1-β) z)/β divides by β: 1/0.8


def _torch_reference_run(torch_opt, model, lrs):
    for lr in lrs:
        for g in torch_opt.param_groups:
            g["lr"] = lr
        torch_opt.step(closure_for(model, torch_opt))


def test_sgd_schedule_free_with_zero_interpolation_is_sgd():
    """β = 0: gradients are taken at z, and y = z follows plain SGD (with the warmup's lrs)."""
    lr, wd, warmup, steps = 0.2, 0.01, 7, 30
    model = SmallMLP()
    params = list(model.parameters())
    zs = [p.detach().clone() for p in params]
    lr_max, weight_sum, lrs = -1.0, 0.0, []
    for k in range(steps):
        gamma, lr_max, weight_sum, ckp1 = schedule_free_coefficients(
            k, lr, warmup_steps=warmup, r=0.0, weight_lr_power=2.0, lr_max=lr_max, weight_sum=weight_sum
        )
        lrs.append(gamma)
        model.zero_grad()
        model().backward()
        with torch.no_grad():
            for p, z in zip(params, zs):
                sgd_schedule_free_update(p, p.grad, z, lr=gamma, momentum=0.0, weight_decay=wd, ckp1=ckp1)
    sgd_model = SmallMLP()
    _torch_reference_run(torch.optim.SGD(sgd_model.parameters(), lr=lr, weight_decay=wd), sgd_model, lrs)
    # (1-c) y + c z with y = z is exact; the remaining difference is y + γ(0·(1-c) - 1) g
    # against torch's y - γ g: identical in float64 up to the rounding of the lerp
    torch.testing.assert_close(flat(model), flat(sgd_model), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat([z.reshape(-1) for z in zs]), flat(sgd_model), rtol=0, atol=1e-12)


def test_adamw_schedule_free_with_zero_interpolation_is_adamw_without_momentum():
    lr, wd, beta2, eps, steps = 0.01, 0.05, 0.99, 1e-8, 30
    model = SmallMLP()
    params = list(model.parameters())
    zs = [p.detach().clone() for p in params]
    vs = [torch.zeros_like(p) for p in params]
    lr_max, weight_sum = -1.0, 0.0
    for k in range(steps):
        gamma, lr_max, weight_sum, ckp1 = schedule_free_coefficients(
            k, lr, warmup_steps=0, r=0.0, weight_lr_power=2.0, lr_max=lr_max, weight_sum=weight_sum
        )
        model.zero_grad()
        model().backward()
        with torch.no_grad():
            for p, z, v in zip(params, zs, vs):
                adamw_schedule_free_update(
                    p,
                    p.grad,
                    z,
                    v,
                    lr=gamma,
                    beta1=0.0,
                    beta2=beta2,
                    eps=eps,
                    weight_decay=wd,
                    ckp1=ckp1,
                    bias_correction2=1 - beta2 ** (k + 1),
                )
    adamw_model = SmallMLP()
    _torch_reference_run(
        torch.optim.AdamW(adamw_model.parameters(), lr=lr, betas=(0.0, beta2), eps=eps, weight_decay=wd),
        adamw_model,
        [lr] * steps,
    )
    # torch computes sqrt(v)/sqrt(1-β2^t) and applies the decay as a separate multiply;
    # Schedule-Free computes sqrt(v/(1-β2^t)) and folds the decay into the step: the same
    # maths, reassociated -> a few ulps per step, amplified mildly by the division by sqrt(v)
    torch.testing.assert_close(flat(model), flat(adamw_model), rtol=0, atol=1e-10)


# --- Lion, SignSGD, Signum against the textbook -------------------------------------------


def _naive_run(model, steps, update):
    """Drive ``update(params, grads, state)`` (lists of tensors) for ``steps`` steps."""
    params = list(model.parameters())
    state: dict = {}
    for _ in range(steps):
        for p in params:
            p.grad = None
        model().backward()
        with torch.no_grad():
            update(params, [p.grad for p in params], state)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_matches_textbook_and_pytorch_optimizer(weight_decay):
    lr, (b1, b2) = 1e-2, (0.9, 0.99)
    model = SmallMLP()
    opt = optim.Lion(model.parameters(), lr=lr, betas=(b1, b2), weight_decay=weight_decay)
    for _ in range(30):
        opt.step(closure_for(model, opt))

    def lion(params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            m = state.setdefault(i, torch.zeros_like(p))
            c = b1 * m + (1 - b1) * g  # interpolate
            p -= lr * (torch.sign(c) + weight_decay * p)  # θ <- θ - η(sign(c) + λθ)
            state[i] = b2 * m + (1 - b2) * g  # momentum

    naive = SmallMLP()
    _naive_run(naive, 30, lion)
    # every coordinate moves by exactly ±lr (times 1 - lr·λ): only a sign flip could
    # differ, and none happens here; the decay is associated differently -> 1e-14
    torch.testing.assert_close(flat(model), flat(naive), rtol=0, atol=1e-14)

    ref_model = SmallMLP()
    ref = pytorch_optimizer.Lion(ref_model.parameters(), lr=lr, betas=(b1, b2), weight_decay=weight_decay)
    for _ in range(30):
        ref.step(closure_for(ref_model, ref))
    torch.testing.assert_close(flat(model), flat(ref_model), rtol=0, atol=1e-14)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sign_sgd_and_signum_match_textbook(weight_decay):
    lr, beta = 1e-2, 0.8
    model = SmallMLP()
    opt = optim.SignSGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(20):
        opt.step(closure_for(model, opt))

    def sign_sgd(params, grads, state):
        for p, g in zip(params, grads):
            p -= lr * torch.sign(g + weight_decay * p)

    naive = SmallMLP()
    _naive_run(naive, 20, sign_sgd)
    assert torch.equal(flat(model), flat(naive))  # the same two operations: bit for bit

    model = SmallMLP()
    opt = optim.Signum(model.parameters(), lr=lr, momentum=beta, weight_decay=weight_decay)
    for _ in range(20):
        opt.step(closure_for(model, opt))

    def signum(params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            m = state.get(i, torch.zeros_like(p))
            state[i] = beta * m + (1 - beta) * (g + weight_decay * p)
            p -= lr * torch.sign(state[i])

    naive = SmallMLP()
    _naive_run(naive, 20, signum)
    assert torch.equal(flat(model), flat(naive))


def test_signum_without_momentum_is_sign_sgd():
    models = [SmallMLP(), SmallMLP()]
    opts = [
        optim.Signum(models[0].parameters(), lr=1e-2, momentum=0.0, weight_decay=0.1),
        optim.SignSGD(models[1].parameters(), lr=1e-2, weight_decay=0.1),
    ]
    for _ in range(20):
        for m, o in zip(models, opts):
            o.step(closure_for(m, o))
    # m = 0·m + 1·g is exactly g, so the signs and steps are identical
    assert torch.equal(flat(models[0]), flat(models[1]))


# --- SWATS against a naive Algorithm 1 ------------------------------------------------------


class TwoQuadratics(nn.Module):
    """Two tensors, two separable quadratics of different curvature (deterministic gradients)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(1.0, 2.0, 4, dtype=torch.float64))
        self.b = nn.Parameter(torch.linspace(-1.0, 1.0, 3, dtype=torch.float64))
        self.register_buffer("ha", torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64))
        self.register_buffer("hb", torch.tensor([10.0, 20.0, 40.0], dtype=torch.float64))

    def forward(self):
        return 0.5 * (self.ha * (self.a - 3) ** 2).sum() + 0.5 * (self.hb * (self.b + 0.5) ** 2).sum()


def _naive_swats(w, grad_fn, steps, lr, beta1, beta2, eps):
    """Algorithm 1 of Keskar & Socher (2017), for one vector, written out with Python floats."""
    w = [float(v) for v in w]
    n = len(w)
    m, a, v = [0.0] * n, [0.0] * n, [0.0] * n
    lam, phase, sgd_lr, switch_step, traj = 0.0, "adam", None, 0, []
    for k in range(1, steps + 1):
        g = grad_fn(w)
        if phase == "sgd":
            v = [beta1 * vi + gi for vi, gi in zip(v, g)]
            w = [wi - (1 - beta1) * sgd_lr * vi for wi, vi in zip(w, v)]
            traj.append(list(w))
            continue
        m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g)]
        a = [beta2 * ai + (1 - beta2) * gi * gi for ai, gi in zip(a, g)]
        alpha_k = lr * math.sqrt(1 - beta2**k) / (1 - beta1**k)
        p = [-alpha_k * mi / (math.sqrt(ai) + eps) for mi, ai in zip(m, a)]
        w = [wi + pi for wi, pi in zip(w, p)]
        pg = sum(pi * gi for pi, gi in zip(p, g))
        if pg != 0:
            gamma = sum(pi * pi for pi in p) / -pg
            lam = beta2 * lam + (1 - beta2) * gamma
            if k > 1 and abs(lam / (1 - beta2**k) - gamma) < eps and lam / (1 - beta2**k) > 0:
                phase, switch_step = "sgd", k
                v = [0.0] * n
                sgd_lr = lam / (1 - beta2**k)
        traj.append(list(w))
    return traj, switch_step, sgd_lr


def test_swats_switch_step_and_lr_match_naive_algorithm():
    # a switches late (step 49), b early (step 2): found by a sweep over lr and eps
    lr, betas, eps, steps = 0.1, (0.9, 0.999), 1e-3, 200
    model = TwoQuadratics()
    opt = optim.SWATS(model.parameters(), lr=lr, betas=betas, eps=eps)
    history = []
    for _ in range(steps):
        opt.step(closure_for(model, opt))
        history.append([p.detach().clone() for p in model.parameters()])
    for index, (name, h, center) in enumerate([("a", model.ha, 3.0), ("b", model.hb, -0.5)]):
        start = getattr(TwoQuadratics(), name).detach()
        traj, switch_step, sgd_lr = _naive_swats(
            start.tolist(),
            lambda w, h=h, center=center: [hi * (wi - center) for hi, wi in zip(h.tolist(), w)],
            steps,
            lr,
            *betas,
            eps,
        )
        p = getattr(model, name)
        state = opt.state[p]
        assert switch_step > 1, f"{name}: the naive run never switched (test set-up)"
        assert state["switch_step"] == switch_step
        # γ and λ come from dot products: torch sums in a different order from the
        # naive Python sums -> relative differences at the level of 1e-15 per step
        assert state["sgd_lr"] == pytest.approx(sgd_lr, rel=1e-10)
        for k in (switch_step - 1, switch_step + 5, steps - 1):
            torch.testing.assert_close(
                history[k][index], torch.tensor(traj[k], dtype=torch.float64), rtol=0, atol=1e-10
            )
    # the two tensors switch independently, at different steps
    assert opt.state[model.a]["switch_step"] != opt.state[model.b]["switch_step"]
    assert opt.switched() == [True, True]


def test_swats_that_never_switches_is_adam():
    """With ε = 0 the test |Λ - γ| < 0 never passes, and Adam's ε placement does not matter."""
    model, torch_model = SmallMLP(), SmallMLP()
    opt = optim.SWATS(model.parameters(), lr=1e-2, eps=0.0)
    ref = torch.optim.Adam(torch_model.parameters(), lr=1e-2, eps=0.0)
    for _ in range(30):
        opt.step(closure_for(model, opt))
        ref.step(closure_for(torch_model, ref))
    assert not any(opt.switched())
    assert all(opt.state[p]["switch_step"] == 0 for p in model.parameters())
    # lr·sqrt(1-β2^k)/(1-β1^k) · m/sqrt(v) against torch's (lr/(1-β1^k)) · m/(sqrt(v)/sqrt(1-β2^k)):
    # reassociated -> a few ulps per step
    torch.testing.assert_close(flat(model), flat(torch_model), rtol=0, atol=1e-12)


# --- GGT against the explicit full matrix ---------------------------------------------------


def _naive_ggt(model, steps, lr, window, beta1, beta2, eps, weight_decay):
    """x <- x - η [(G Gᵀ)^{1/2} + εI]^{-1} g̃ with the d×d matrix built explicitly."""
    params = list(model.parameters())
    history, momentum = [], None
    for _ in range(steps):
        for p in params:
            p.grad = None
        model().backward()
        with torch.no_grad():
            x = torch.cat([p.reshape(-1) for p in params])
            g = torch.cat([p.grad.reshape(-1) for p in params]) + weight_decay * x
            history.append(g)
            momentum = g if momentum is None else beta1 * momentum + g
            # G = [g_t, β2 g_{t-1}, ..., β2^{r-1} g_{t-r+1}]
            G = torch.stack([beta2**k * history[-1 - k] for k in range(min(window, len(history)))], 1)
            M = G @ G.T
            # (G Gᵀ)^{1/2} by eigh; eigenvalues at rounding level are exact zeros (rank ≤ r)
            lam, Q = torch.linalg.eigh(M)
            lam = torch.where(lam > lam.max() * 1e-13, lam, torch.zeros_like(lam))
            P = Q @ torch.diag(lam.sqrt()) @ Q.T + eps * torch.eye(len(x), dtype=x.dtype)
            x = x - lr * torch.linalg.solve(P, momentum)
            offset = 0
            for p in params:
                p.copy_(x[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
    return flat(model)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=3e-3, window=5, betas=(0.9, 0.9), eps=0.1, weight_decay=0.01),  # full, decayed window
        dict(lr=1e-2, window=30, betas=(0.5, 1.0), eps=0.3, weight_decay=0.0),  # window never fills
        dict(lr=1e-2, window=3, betas=(0.0, 0.5), eps=1.0, weight_decay=0.0),  # no momentum
    ],
)
def test_ggt_matches_full_matrix(kwargs):
    steps = 20
    model = SmallMLP()
    opt = optim.GGT(model.parameters(), **kwargs)
    for _ in range(steps):
        opt.step(closure_for(model, opt))
    naive = _naive_ggt(
        SmallMLP(), steps, kwargs["lr"], kwargs["window"], *kwargs["betas"], kwargs["eps"], kwargs["weight_decay"]
    )
    # two exact computations of the same matrix function in float64. The Gram trick takes
    # σ = sqrt(eig(GᵀG)), which squares the window's condition number: a small σ carries an
    # absolute error ~ 1e-16 σ_max²/σ, divided again by ε in the update. Observed here:
    # ≤ 2e-12 after 20 steps (it reaches ~5e-11 with lr=1e-2, as the gradients of a full
    # window grow more collinear), so 1e-10 leaves a margin and still fails on any real
    # difference (the parameters move by ~0.03-0.07).
    torch.testing.assert_close(flat(model), naive, rtol=0, atol=1e-10)
    assert not torch.allclose(flat(model), flat(SmallMLP()))  # it moved


def test_ggt_treats_the_group_as_one_vector():
    """Splitting the parameters into more tensors changes nothing: the preconditioner is joint."""

    class Flat(nn.Module):
        def __init__(self, pieces):
            super().__init__()
            whole = flat(SmallMLP())
            self.parts = nn.ParameterList(nn.Parameter(t.clone()) for t in torch.split(whole, pieces))
            self.ref = SmallMLP()

        def forward(self):
            x = torch.cat(list(self.parts))
            offset, out = 0, {}
            for name, p in self.ref.named_parameters():
                out[name] = x[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
            return torch.func.functional_call(self.ref, out, ())

    models = [Flat([53]), Flat([10, 20, 23])]
    opts = [optim.GGT(m.parts.parameters(), lr=1e-2, window=4, eps=0.1) for m in models]
    for _ in range(10):
        for m, o in zip(models, opts):
            o.step(closure_for(m, o))
    # the Gram matrix is a sum of per-tensor partial sums: reassociated -> ~1e-14
    torch.testing.assert_close(
        torch.cat(list(models[0].parts)).detach(), torch.cat(list(models[1].parts)).detach(), rtol=0, atol=1e-12
    )


# --- Entropy-SGD against a naive loop with the same noise ------------------------------------


def _naive_entropy_sgd(model, outer_steps, *, lr, L, langevin_lr, gamma0, scoping, noise, alpha, seed):
    generator = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    losses = []
    for t in range(outer_steps):
        gamma = gamma0 * (1 + scoping) ** t
        x = [p.detach().clone() for p in params]
        mu = [xi.clone() for xi in x]
        for ell in range(L):
            for p in params:
                p.grad = None
            loss = model()
            loss.backward()
            if ell == 0:
                losses.append(loss.item())
            with torch.no_grad():
                for i, p in enumerate(params):
                    dx = p.grad - gamma * (x[i] - p)
                    xi_noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                    p.copy_(p - langevin_lr * dx + math.sqrt(langevin_lr) * noise * xi_noise)
                    mu[i] = (1 - alpha) * mu[i] + alpha * p
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(x[i] - lr * gamma * (x[i] - mu[i]))
    return flat(model), losses


def test_entropy_sgd_matches_naive_loop_with_same_noise():
    hyper = dict(lr=2.0, L=4, langevin_lr=0.05, gamma0=0.5, scoping=0.1, noise=0.01, alpha=0.25)
    model = SmallMLP()
    opt = optim.EntropySGD(
        model.parameters(),
        lr=hyper["lr"],
        langevin_steps=hyper["L"],
        langevin_lr=hyper["langevin_lr"],
        gamma=hyper["gamma0"],
        scoping=hyper["scoping"],
        noise=hyper["noise"],
        alpha=hyper["alpha"],
        generator=torch.Generator().manual_seed(7),
    )
    losses = [opt.step(closure_for(model, opt)).item() for _ in range(6)]
    naive, naive_losses = _naive_entropy_sgd(SmallMLP(), 6, seed=7, **hyper)
    # same operations, associated differently (lerp vs (1-α)μ + αx', one fused update vs
    # three terms) -> ulps per step over 24 Langevin steps
    torch.testing.assert_close(flat(model), naive, rtol=0, atol=1e-12)
    assert losses == pytest.approx(naive_losses, rel=1e-12, abs=0)  # step returns f(x)
    assert not torch.allclose(flat(model), flat(SmallMLP()))


def test_entropy_sgd_default_generator_is_seeded_and_resumable():
    def build(seed):
        torch.manual_seed(seed)
        model = SmallMLP()
        return model, optim.EntropySGD(
            model.parameters(), lr=1.0, langevin_steps=3, langevin_lr=0.05, gamma=0.5, noise=0.1
        )

    (m1, o1), (m2, o2) = build(0), build(0)
    for _ in range(3):
        o1.step(closure_for(m1, o1))
        o2.step(closure_for(m2, o2))
    assert torch.equal(flat(m1), flat(m2))  # torch.manual_seed before construction fixes the noise
    saved_params, saved_opt = copy.deepcopy(m1.state_dict()), copy.deepcopy(o1.state_dict())
    for _ in range(3):
        o1.step(closure_for(m1, o1))
    m3, o3 = build(99)  # a different private seed, overwritten by the saved generator state
    m3.load_state_dict(saved_params)
    o3.load_state_dict(saved_opt)
    for _ in range(3):
        o3.step(closure_for(m3, o3))
    assert torch.equal(flat(m1), flat(m3))
    (m4, o4) = build(1)
    o4.step(closure_for(m4, o4))
    m5, o5 = build(0)
    o5.step(closure_for(m5, o5))
    assert not torch.equal(flat(m4), flat(m5))  # and the noise does depend on the seed


def test_entropy_sgd_needs_closure():
    model = SmallMLP()
    opt = optim.EntropySGD(model.parameters())
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ggt_defaults_descend_on_torchs_standard_problem(seed):
    """torch's test_forloop_goes_right_direction problem: ‖W x + b‖², float32, 20 steps, defaults.

    Before issue 17 the float32 Gram matrix could not resolve how successive gradients
    differ, those directions were scaled by 1/ε, and the loss jumped up (seed 0: at step 4).
    """
    torch.manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(10, 5))
    bias = torch.nn.Parameter(torch.randn(10))
    inp = torch.randn(5)
    opt = optim.GGT([weight, bias])

    def closure():
        opt.zero_grad()
        loss = (weight.mv(inp) + bias).pow(2).sum()
        loss.backward()
        return loss

    losses = [closure().item()]
    for _ in range(20):
        opt.step(closure)
        losses.append(closure().item())
    assert losses[-1] < losses[0]
    # and every step descends (lr 1e-3 is small against this quadratic's curvature)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
