"""gd_lib's SGD, Adagrad, RMSprop, Adam, AdamW and NAdam against torch.optim (the reference).

For every class and several hyperparameter settings: 50 steps on a small random MLP in
float64 (two parameter groups, one parameter that never gets a gradient, one that gets
its first gradient only at step 11 so step counts differ between tensors), after which
the parameters AND every state tensor match torch.optim's. Our per-tensor path is
compared with torch's for-loop path, our foreach path with torch's foreach path, and our
two paths with each other. Then: sparse and complex gradients, a torch state_dict
loaded into ours, mixed dtypes on the foreach path, and a reduction (Adam with
β1 = β2 = ε = 0 is sign descent).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import gd_lib.optim as gd

# Same maths in the same order in float64: the results are in fact bit-identical; 1e-10
# (absolute and relative) leaves room for a harmless reordering while being ~1e6 times
# tighter than any real difference in the update rule would produce over 50 steps.
RTOL = ATOL = 1e-10

CASES = [
    # (id, ours, torch's, kwargs)
    ("SGD-plain", gd.SGD, torch.optim.SGD, dict(lr=0.05)),
    ("SGD-momentum", gd.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("SGD-dampening-wd", gd.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD-nesterov-wd", gd.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD-maximize", gd.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.5, maximize=True)),
    ("Adagrad-plain", gd.Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    ("Adagrad-lr_decay-wd", gd.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01)),
    (
        "Adagrad-init-eps-maximize",
        gd.Adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, initial_accumulator_value=0.1, eps=1e-6, maximize=True),
    ),
    ("RMSprop-plain", gd.RMSprop, torch.optim.RMSprop, dict(lr=0.01)),
    ("RMSprop-alpha-momentum", gd.RMSprop, torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.9)),
    ("RMSprop-centered-wd", gd.RMSprop, torch.optim.RMSprop, dict(lr=0.01, centered=True, weight_decay=0.01)),
    (
        "RMSprop-centered-momentum-maximize",
        gd.RMSprop,
        torch.optim.RMSprop,
        dict(lr=0.01, centered=True, momentum=0.5, eps=1e-6, maximize=True),
    ),
    ("Adam-plain", gd.Adam, torch.optim.Adam, dict(lr=0.01)),
    ("Adam-betas-wd", gd.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
    ("Adam-amsgrad", gd.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    (
        "Adam-amsgrad-decoupled-maximize",
        gd.Adam,
        torch.optim.Adam,
        dict(lr=0.01, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    ),
    ("AdamW-default-wd", gd.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    ("AdamW-amsgrad-wd", gd.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW-maximize-eps", gd.AdamW, torch.optim.AdamW, dict(lr=0.01, eps=1e-3, maximize=True)),
    ("NAdam-plain", gd.NAdam, torch.optim.NAdam, dict(lr=0.01)),
    ("NAdam-momentum_decay-wd", gd.NAdam, torch.optim.NAdam, dict(lr=0.01, momentum_decay=0.01, weight_decay=0.01)),
    ("NAdamW-decoupled", gd.NAdam, torch.optim.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam-betas-maximize", gd.NAdam, torch.optim.NAdam, dict(lr=0.01, betas=(0.95, 0.99), maximize=True)),
]
IDS = [c[0] for c in CASES]
STEPS = 50
LATE_START = 10  # the last bias gets its first gradient at step LATE_START + 1


class MLP(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.unused = nn.Parameter(torch.empty(5))  # never in the graph: no gradient
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        self.double()

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def param_groups(model: MLP, lr: float) -> list[dict]:
    """Two groups, the second with half the learning rate."""
    return [
        {"params": [*model.fc1.parameters(), model.unused]},
        {"params": [*model.fc2.parameters(), *model.fc3.parameters()], "lr": lr / 2},
    ]


def train(cls, kwargs: dict, steps: int = STEPS, **extra):
    """``steps`` steps of cls on a fresh MLP with the same mini-batches for every call."""
    model = MLP()
    opt = cls(param_groups(model, kwargs["lr"]), **kwargs, **extra)
    data = torch.Generator().manual_seed(1)
    for t in range(steps):
        x = torch.randn(16, 6, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=data)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if t < LATE_START:
            model.fc3.bias.grad = None
        opt.step()
    return model, opt


def assert_same(model_a, opt_a, model_b, opt_b, rtol=RTOL, atol=ATOL):
    """Parameters and every state entry (keys, dtypes, values) agree."""
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert_close(pa, pb, rtol=rtol, atol=atol, msg=lambda m, name=name: f"parameter {name}: {m}")
        sa, sb = opt_a.state.get(pa, {}), opt_b.state.get(pb, {})
        if name == "unused":
            # ours creates no state without a gradient (torch's Adagrad creates it eagerly)
            assert len(sa) == 0
            continue
        assert set(sa) == set(sb), f"state keys of {name}: {sorted(sa)} vs {sorted(sb)}"
        for key in sb:
            va, vb = sa[key], sb[key]
            if torch.is_tensor(vb):
                assert_close(
                    va, vb, rtol=rtol, atol=atol, msg=lambda m, key=key, name=name: f"state {key} of {name}: {m}"
                )
            else:
                assert va == vb, f"state {key} of {name}: {va} vs {vb}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_tensor_path_matches_torch_for_loop(case):
    _, ours, theirs, kwargs = case
    assert_same(*train(ours, kwargs, foreach=False), *train(theirs, kwargs, foreach=False))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_foreach_path_matches_torch_foreach(case):
    _, ours, theirs, kwargs = case
    assert_same(*train(ours, kwargs, foreach=True), *train(theirs, kwargs, foreach=True))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_foreach_path_equals_per_tensor_path(case):
    """The fast path against the readable reference path."""
    _, ours, _, kwargs = case
    # Same ops in the same order, so equal on the CPU bit for bit; 1e-12 would still
    # catch any change to the update (those move parameters by ~lr = 1e-2).
    assert_same(*train(ours, kwargs, foreach=True), *train(ours, kwargs, foreach=False), rtol=1e-12, atol=1e-12)


def test_default_foreach_none_takes_the_fast_path_for_uniform_params():
    from gd_lib.optim._foreach import use_foreach

    a = torch.zeros(3, dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64)
    c = torch.zeros(2, dtype=torch.float32)
    assert use_foreach(None, [a, b]) is True
    assert use_foreach(None, [a, c]) is False  # two dtypes: the per-tensor path
    assert use_foreach(True, [a, c]) is True and use_foreach(False, [a, b]) is False


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (gd.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        (gd.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    ],
    ids=["SGD", "Adam"],
)
def test_foreach_with_mixed_dtypes_matches_torch(ours, theirs, kwargs):
    """foreach=True buckets tensors by dtype; each bucket must still match torch."""

    def run(cls):
        torch.manual_seed(0)
        w64 = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        w32 = nn.Parameter(torch.randn(3, dtype=torch.float32))
        opt = cls([w64, w32], foreach=True, **kwargs)
        for _ in range(20):
            opt.zero_grad()
            ((w64 @ w32.double()).sin().sum() + w32.pow(2).sum()).backward()
            opt.step()
        return [w64, w32], opt

    (a64, a32), oa = run(ours)
    (b64, b32), ob = run(theirs)
    assert a64.dtype == torch.float64 and a32.dtype == torch.float32
    # float32 tensor: same float32 ops on both sides, so equal to float32 rounding.
    assert_close(a64, b64, rtol=RTOL, atol=ATOL)
    assert_close(a32, b32, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (gd.SGD, torch.optim.SGD, dict(lr=0.1)),
        (gd.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        (gd.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.5, maximize=True)),
        (gd.Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
        (gd.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, maximize=True)),
    ],
    ids=["SGD", "SGD-nesterov", "SGD-dampening-maximize", "Adagrad", "Adagrad-options"],
)
@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # from torch's Adagrad
def test_sparse_gradients_match_torch(ours, theirs, kwargs):
    """SGD and Adagrad accept sparse gradients (nn.Embedding(sparse=True)), as torch's do."""

    def run(cls):
        torch.manual_seed(0)
        emb = nn.Embedding(12, 4, sparse=True).double()
        opt = cls(emb.parameters(), **kwargs)
        data = torch.Generator().manual_seed(2)
        for _ in range(20):
            idx = torch.randint(0, 12, (6,), generator=data)  # repeats and untouched rows
            opt.zero_grad()
            emb(idx).sin().sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        return emb.weight, opt

    wa, oa = run(ours)
    wb, ob = run(theirs)
    assert_close(wa, wb, rtol=RTOL, atol=ATOL)
    for key, vb in ob.state[wb].items():
        va = oa.state[wa][key]
        va = va.to_dense() if va.is_sparse else va
        vb = vb.to_dense() if vb.is_sparse else vb
        assert_close(va, vb, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (gd.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
        (gd.Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
        (gd.RMSprop, torch.optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
        (gd.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
        (gd.NAdam, torch.optim.NAdam, dict(lr=0.01)),
    ],
    ids=["SGD", "Adagrad", "RMSprop", "Adam", "NAdam"],
)
def test_complex_parameters_match_torch(ours, theirs, kwargs, foreach):
    """Complex tensors: real and imaginary parts are separate coordinates, as in torch.optim."""

    def run(cls):
        g = torch.Generator().manual_seed(3)
        w = nn.Parameter(torch.randn(3, 4, dtype=torch.complex128, generator=g))
        x = torch.randn(4, 8, dtype=torch.complex128, generator=g)
        y = torch.randn(3, 8, dtype=torch.complex128, generator=g)
        opt = cls([w], foreach=foreach, **kwargs)
        for _ in range(30):
            opt.zero_grad()
            (w @ x - y).abs().pow(2).sum().backward()
            opt.step()
        return w, opt

    wa, oa = run(ours)
    wb, ob = run(theirs)
    assert_close(wa, wb, rtol=RTOL, atol=ATOL)
    assert set(oa.state[wa]) == set(ob.state[wb])
    for key, vb in ob.state[wb].items():
        assert_close(oa.state[wa][key], vb, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "case", [CASES[i] for i in (1, 6, 11, 14, 17, 22)], ids=[IDS[i] for i in (1, 6, 11, 14, 17, 22)]
)
def test_torch_state_dict_loads_and_continues_like_torch(case):
    """Same state keys as torch.optim: a torch checkpoint resumes in gd_lib."""
    _, ours, theirs, kwargs = case
    model_t, opt_t = train(theirs, kwargs, steps=20, foreach=False)
    model_o = copy.deepcopy(model_t)
    opt_o = ours(param_groups(model_o, kwargs["lr"]), **kwargs, foreach=False)
    opt_o.load_state_dict(copy.deepcopy(opt_t.state_dict()))
    data = torch.Generator().manual_seed(5)
    for _ in range(10):
        x = torch.randn(16, 6, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=data)
        for model, opt in ((model_t, opt_t), (model_o, opt_o)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    # torch's own load casts NAdam's float32 mu_product to float64, ours keeps float32
    # (see NAdam.load_state_dict); that changes rounding at ~1e-7 relative in Π_t only,
    # whose effect on the parameters after 10 steps stays far below 1e-8.
    tol = 1e-8 if ours is gd.NAdam else RTOL
    for pa, pb in zip(model_o.parameters(), model_t.parameters()):
        assert_close(pa, pb, rtol=tol, atol=tol)


def test_nadam_resume_keeps_mu_product_in_scalar_dtype():
    model, opt = train(gd.NAdam, dict(lr=0.01), steps=5)
    state = opt.state_dict()
    fresh = gd.NAdam(param_groups(MLP(), 0.01), lr=0.01)
    fresh.load_state_dict(copy.deepcopy(state))
    for st in fresh.state.values():
        assert st["mu_product"].dtype == torch.float32  # the default dtype is float32 here
        assert st["step"].dtype == torch.float32


def test_adam_without_averaging_or_eps_is_sign_descent():
    """β1 = β2 = 0, ε = 0: m = g, v = g², so the step is lr·g/|g| = lr·sign(g)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(50, dtype=torch.float64))
    w0 = w.detach().clone()
    opt = gd.Adam([w], lr=0.1, betas=(0.0, 0.0), eps=0.0)
    g = torch.randn(50, dtype=torch.float64)
    w.grad = g.clone()
    opt.step()
    # |g|/sqrt(g²) is 1 to within one rounding of sqrt: 1e-15 relative.
    assert_close(w.detach(), w0 - 0.1 * torch.sign(g), rtol=1e-14, atol=1e-15)
