"""torch.optim's contract for every gd_lib optimizer, driven by the registry in tests/optim_registry.

What PyTorch's own optimizer tests check for every ``OptimizerInfo``
(``torch.testing._internal.common_optimizers`` and ``test/test_optim.py``), asked of gd_lib:
state dicts from torch.optim load into gd_lib and back (the shared algorithms), old-style
state dicts (flags missing, ``step`` a plain number), ``torch.load(weights_only=True)``,
named parameters, tensor learning rates (0-dim and 1-element), ``add_param_group`` mid-run,
step and state-dict hooks, LR schedulers, ``maximize``, zero-size and 0-dim parameters,
complex parameters (stepped as their real view, or refused with a clear error), ``foreach``
on and off equal, deepcopy and pickle, and the error inputs with torch's exception types.

Where two runs must agree they do the same float64 arithmetic in the same order, so they
are compared bit for bit (``torch.equal``) unless a comment says otherwise.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle

import pytest
import torch

import gd_lib.optim as gd_optim
from optim_registry import all_specs
from test_optim_generic import TinyMLP, run

SPECS = all_specs()
IDS = [s.name for s in SPECS]
# tests that build from a parameter list (the optimizers that need a model or a module tree,
# KFAC/EKFAC, ModularDescent, NaturalGradient, take their parameters from it and are left out)
PARAM_SPECS = [s for s in SPECS if s.build_params is not None]
PARAM_IDS = [s.name for s in PARAM_SPECS]
TORCH_SPECS = [s for s in SPECS if s.torch_cls is not None]
TORCH_IDS = [s.name for s in TORCH_SPECS]

# the flags torch.optim added over its versions; an old checkpoint's param groups lack them
FLAG_KEYS = {
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
    "decoupled_weight_decay",
    # Muon's options added in issue 17: an older gd_lib Muon checkpoint lacks them
    "ns_coefficients",
    "eps",
    "adjust_lr_fn",
    "ns_dtype",
}


# --- a parameter-list problem: a matrix, a vector and a 0-dim scalar ------------------------


def make_params(seed: int = 0, dtype=torch.float64, scalar: bool = True) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=dtype) * 0.5),
        torch.nn.Parameter(torch.randn(4, generator=g, dtype=dtype) * 0.5),
    ]
    if scalar:
        params.append(torch.nn.Parameter(torch.tensor(0.7, dtype=dtype)))
    return params


_G = torch.Generator().manual_seed(99)
_X = torch.randn(16, 3, generator=_G, dtype=torch.float64)
_Y = torch.randn(16, 4, generator=_G, dtype=torch.float64)


def problem_loss(params: list[torch.Tensor]) -> torch.Tensor:
    """A smooth non-quadratic loss of (W, b[, s]): the gradients change from step to step."""
    W, b = params[0], params[1]
    out = torch.tanh(_X @ W.T + b)
    loss = ((out - _Y) ** 2).mean()
    if len(params) > 2:
        s = params[2]
        loss = loss + (s - 0.3) ** 2 + 0.1 * s**4
    return loss


def param_closure(opt, params, loss_fn=problem_loss, sign: float = 1.0):
    def closure():
        opt.zero_grad()
        loss = sign * loss_fn(params)
        loss.backward()
        return loss

    return closure


def steps(opt, params, n, **kwargs):
    for _ in range(n):
        opt.step(param_closure(opt, params, **kwargs))


def default_lr(spec) -> float:
    return (
        float(spec.build_params(make_params())).param_groups[0]["lr"]
        if False
        else float(spec.build_params(make_params()).param_groups[0]["lr"])
    )


def state_tensors(opt) -> list[tuple[str, torch.Tensor]]:
    """Every tensor of the optimizer state, flattened (lists of tensors included), in a fixed order."""
    out = []

    def visit(prefix, value):
        if torch.is_tensor(value):
            out.append((prefix, value))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(f"{prefix}[{i}]", v)
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                visit(f"{prefix}.{k}", value[k])

    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            visit(f"group{gi}.param{pi}", opt.state.get(p, {}))
    return out


def assert_same_state(a, b, name, *, loaded: bool = False):
    """Every state tensor of ``a`` equals ``b``'s. ``loaded``: ``b`` got it by ``load_state_dict``,
    which (torch's rule) casts floating state other than ``step`` to the parameter's dtype, so
    a float32 ``mu_product`` comes back float64 (exactly: the cast is exact)."""
    ta, tb = state_tensors(a), state_tensors(b)
    assert [k for k, _ in ta] == [k for k, _ in tb], name
    for (key, x), (_, y) in zip(ta, tb):
        if loaded and x.dtype != y.dtype and x.is_floating_point() and y.is_floating_point():
            x = x.to(y.dtype)
        assert x.dtype == y.dtype and torch.equal(x, y), f"{name}: state {key} differs"


# --- the registry covers everything gd_lib.optim exports --------------------------------------


def test_every_exported_optimizer_has_a_registry_entry():
    exported = {
        obj
        for name in dir(gd_optim)
        if isinstance(obj := getattr(gd_optim, name), type) and issubclass(obj, torch.optim.Optimizer)
    }
    covered = {type(spec.build(TinyMLP())) for spec in SPECS}
    missing = sorted(c.__name__ for c in exported - covered)
    assert not missing, f"optimizers without a registry entry: {missing}"
    assert len(exported) >= 20  # the check ran over the real export list


def test_round_trip_comparison_sees_state_tensors():
    """The helper the round-trip tests use fails when a state tensor differs and the params do not."""
    params = make_params()
    opt = gd_optim.Adam(params, lr=0.1)
    steps(opt, params, 2)
    twin = copy.deepcopy((params, opt))[1]
    assert_same_state(opt, twin, "deepcopy")
    next(iter(twin.state.values()))["exp_avg_sq"].add_(1e-12)
    with pytest.raises(AssertionError, match="exp_avg_sq"):
        assert_same_state(opt, twin, "perturbed")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_round_trip_restores_state_tensors(spec):
    model = TinyMLP()
    opt = spec.build(model)
    run(spec, model, opt, 5)
    twin_model = TinyMLP()
    twin_model.load_state_dict(model.state_dict())
    twin = spec.build(twin_model)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert_same_state(opt, twin, spec.name)


# --- torch.optim state dicts load into gd_lib and back ----------------------------------------


def _torch_kwargs(spec):
    """The spec's hyperparameters as torch's constructor takes them."""
    group = spec.build_params(make_params()).param_groups[0]
    names = inspect.signature(spec.torch_cls.__init__).parameters
    return {k: v for k, v in group.items() if k in names and k != "params"}


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=TORCH_IDS)
def test_torch_state_dict_loads_into_gd_lib_and_back(spec):
    kwargs = _torch_kwargs(spec)
    reference = make_params()
    ref_opt = spec.torch_cls(reference, **kwargs)
    steps(ref_opt, reference, 9)

    # torch -> gd_lib after 3 steps, then gd_lib -> torch after 6: the same trajectory as torch alone
    params = make_params()
    torch_opt = spec.torch_cls(params, **kwargs)
    steps(torch_opt, params, 3)
    ours = spec.build_params(params)
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert_same_state(torch_opt, ours, f"{spec.name} torch->gd_lib", loaded=True)
    steps(ours, params, 3)
    back = spec.torch_cls(params, **kwargs)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert_same_state(ours, back, f"{spec.name} gd_lib->torch", loaded=True)
    steps(back, params, 3)
    for p, q in zip(params, reference):
        # gd_lib reproduces torch.optim's arithmetic, but a load casts floating state to the
        # parameter's dtype (torch's rule): NAdam's mu_product runs float32 in the uninterrupted
        # run and float64 after a load, which moves the trajectory by ~1e-12; 1e-10 is the
        # issue's bar for matching torch.optim
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert not torch.equal(params[0], make_params()[0])


def test_adam_state_dict_into_adamw_keeps_decoupled_weight_decay():
    params = make_params()
    adam = gd_optim.Adam(params, lr=0.1, weight_decay=0.1)
    steps(adam, params, 2)
    adamw = gd_optim.AdamW(params, lr=0.1, weight_decay=0.1)
    adamw.load_state_dict(adam.state_dict())
    assert adamw.param_groups[0]["decoupled_weight_decay"] is True
    torch_adamw = torch.optim.AdamW(make_params(), lr=0.1, weight_decay=0.1)
    torch_adamw.load_state_dict(torch.optim.Adam(make_params(), lr=0.1, weight_decay=0.1).state_dict())
    assert torch_adamw.param_groups[0]["decoupled_weight_decay"] is True  # what torch does


# --- old-style state dicts: flags missing, step a plain number ---------------------------------


def _old_style(state_dict: dict) -> tuple[dict, int]:
    """The state dict as an older torch (or older gd_lib) wrote it; returns it and how much changed."""
    old = copy.deepcopy(state_dict)
    changed = 0
    for group in old["param_groups"]:
        for key in FLAG_KEYS & set(group):
            if key == "eps" and "betas" in group:
                continue  # an Adam-side eps is an old hyperparameter, not a new flag
            del group[key]
            changed += 1
    for st in old["state"].values():
        if torch.is_tensor(st.get("step")):
            st["step"] = float(st["step"])
            changed += 1
    return old, changed


OLD_STYLE_SPECS = [
    s
    for s in PARAM_SPECS
    if _old_style(
        (lambda o, p: (steps(o, p, 1), o.state_dict())[1])(*(lambda p: (s.build_params(p), p))(make_params()))
    )[1]
    > 0
]


@pytest.mark.parametrize("spec", OLD_STYLE_SPECS, ids=[s.name for s in OLD_STYLE_SPECS])
def test_old_style_state_dict_loads_and_resumes(spec):
    reference = make_params()
    ref_opt = spec.build_params(reference)
    steps(ref_opt, reference, 6)
    params = make_params()
    opt = spec.build_params(params)
    steps(opt, params, 3)
    old, changed = _old_style(opt.state_dict())
    assert changed > 0
    resumed = spec.build_params(params)
    resumed.load_state_dict(old)
    steps(resumed, params, 3)
    for p, q in zip(params, reference):
        assert torch.equal(p, q), spec.name
    assert_same_state(ref_opt, resumed, spec.name)


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=TORCH_IDS)
def test_old_style_torch_checkpoint_loads_into_gd_lib(spec):
    kwargs = _torch_kwargs(spec)
    params = make_params()
    torch_opt = spec.torch_cls(params, **kwargs)
    steps(torch_opt, params, 2)
    old, changed = _old_style(torch_opt.state_dict())
    assert changed > 0
    ours = spec.build_params(params)
    ours.load_state_dict(old)
    steps(ours, params, 2)  # raised KeyError / AttributeError before issue 17
    assert all(torch.is_tensor(ours.state[p]["step"]) for p in params if "step" in ours.state[p])


# --- torch.load(weights_only=True) ------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_survives_weights_only_load(spec):
    ref_model = TinyMLP()
    ref_opt = spec.build(ref_model)
    run(spec, ref_model, ref_opt, 6)
    model = TinyMLP()
    opt = spec.build(model)
    run(spec, model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)  # weights_only=True, torch's default since 2.6
    model = TinyMLP()
    model.load_state_dict(checkpoint["model"])
    opt = spec.build(model)
    opt.load_state_dict(checkpoint["optimizer"])
    run(spec, model, opt, 3)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        assert torch.equal(a, b), spec.name


# --- named parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_named_parameters(spec):
    plain = make_params()
    named_params = make_params()
    names = ["weight", "bias", "scale"]
    opt = spec.build_params(plain)
    named = spec.build_params(list(zip(names, named_params)))
    assert sorted(n for g in named.param_groups for n in g["param_names"]) == sorted(names)
    steps(opt, plain, 3)
    steps(named, named_params, 3)
    for p, q in zip(plain, named_params):
        assert torch.equal(p, q), spec.name
    assert all("param_names" in g for g in named.state_dict()["param_groups"])


# --- tensor learning rates --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,)], ids=["0-dim", "1-element"])
@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_tensor_lr(spec, shape):
    lr = default_lr(spec)
    reference = make_params()
    ref_opt = spec.build_params(reference, lr=lr)
    steps(ref_opt, reference, 3)
    params = make_params()
    opt = spec.build_params(params, lr=torch.full(shape, lr, dtype=torch.float64))
    steps(opt, params, 3)  # crashed in Muon, Lion, sign, Prodigy, GGT, SWATS, Schedule-Free before
    for p, q in zip(params, reference):
        assert torch.equal(p, q), spec.name


# --- add_param_group mid-run ------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_add_param_group_mid_run(spec):
    params = make_params()
    opt = spec.build_params(params[:1])
    steps(opt, params, 2)
    bias_before = params[1].detach().clone()
    opt.add_param_group({"params": params[1:]})
    new_group = opt.param_groups[-1]
    # the new group gets the optimizer's defaults: the same hyperparameter keys as the first
    assert set(opt.defaults) <= set(new_group)
    steps(opt, params, 3)
    assert not torch.equal(params[1], bias_before), f"{spec.name}: the added group did not move"
    assert all(torch.isfinite(p).all() for p in params)
    if spec.nan_policy == "isolate" and "k" not in opt.defaults:
        # element-wise methods: the same as one optimizer over all parameters whose later
        # groups had no gradient for the first two steps (not Schedule-Free: its averaging
        # counts steps per group, k, from the step the group joins)
        reference = make_params()
        ref_opt = spec.build_params(reference[:1])
        ref_opt.add_param_group({"params": reference[1:]})
        for i in range(5):
            closure = param_closure(ref_opt, reference)

            def masked(closure=closure, i=i):
                loss = closure()
                if i < 2:
                    for p in reference[1:]:
                        p.grad = None
                return loss

            ref_opt.step(masked)
        for p, q in zip(params, reference):
            assert torch.equal(p, q), spec.name


# --- hooks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_step_and_state_dict_hooks(spec):
    params = make_params()
    opt = spec.build_params(params)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre"))

    def sd_post(o, state_dict):
        calls.append("sd_post")
        state_dict["extra"] = 1
        return state_dict

    opt.register_state_dict_post_hook(sd_post)
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    steps(opt, params, 2)
    assert calls == ["pre", "post"] * 2
    sd = opt.state_dict()
    assert sd["extra"] == 1 and calls[-2:] == ["sd_pre", "sd_post"]
    opt.load_state_dict(sd)
    assert calls[-2:] == ["load_pre", "load_post"]


# --- LR schedulers ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_lr_scheduler_attached(spec):
    lr = default_lr(spec)
    params = make_params()
    opt = spec.build_params(params)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    reference = make_params()
    ref_opt = spec.build_params(reference)
    for _ in range(4):
        steps(opt, params, 1)
        scheduler.step()
        steps(ref_opt, reference, 1)
        for group in ref_opt.param_groups:
            group["lr"] = group["lr"] * 0.5  # what the scheduler does, by hand
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 0.5**4)
    for p, q in zip(params, reference):
        assert torch.equal(p, q), spec.name


# --- maximize ---------------------------------------------------------------------------------

MAXIMIZE_SPECS = [s for s in PARAM_SPECS if "maximize" in s.build_params(make_params()).defaults]


@pytest.mark.parametrize("spec", MAXIMIZE_SPECS, ids=[s.name for s in MAXIMIZE_SPECS])
def test_maximize_equals_minimizing_the_negative(spec):
    params = make_params()
    opt = spec.build_params(params, maximize=True)
    steps(opt, params, 4, sign=-1.0)  # maximize -f
    reference = make_params()
    ref_opt = spec.build_params(reference)
    steps(ref_opt, reference, 4)  # minimize f
    for p, q in zip(params, reference):
        assert torch.equal(p, q), spec.name


# --- zero-size and 0-dim parameters -------------------------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_zero_size_and_zero_dim_parameters(spec):
    def loss_fn(ps):
        return problem_loss(ps[:3]) + ps[3].sum() ** 2 + ps[4].sum()

    params = make_params() + [
        torch.nn.Parameter(torch.zeros(0, 3, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
    ]
    opt = spec.build_params(params)
    steps(opt, params, 3, loss_fn=loss_fn)  # crashed in SOAP and Shampoo before
    assert params[3].shape == (0, 3) and params[4].shape == (0,)
    # the zero-size tensors change nothing: the others step as without them
    reference = make_params()
    ref_opt = spec.build_params(reference)
    steps(ref_opt, reference, 3)
    for p, q in zip(params[:3], reference):
        assert torch.equal(p, q), spec.name
    # the 0-dim parameter steps as a 1-element vector does
    scalar = [torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))]
    vector = [torch.nn.Parameter(torch.tensor([0.7], dtype=torch.float64))]

    def scalar_loss(ps):
        s = ps[0].sum()
        return (s - 0.3) ** 2 + 0.1 * s**4

    for ps in (scalar, vector):
        steps(spec.build_params(ps), ps, 3, loss_fn=scalar_loss)
    assert scalar[0].shape == () and float(scalar[0]) != 0.7
    assert torch.equal(scalar[0].reshape(1), vector[0]), spec.name


# --- complex parameters -----------------------------------------------------------------------


def _complex_loss(ps):
    z = ps[0] if torch.is_complex(ps[0]) else torch.view_as_complex(ps[0])
    A = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3) + 0.5j
    target = torch.ones(4, dtype=torch.complex128)
    r = (A * z).sum(dim=1) - target
    return (r.abs() ** 2).sum() + 0.1 * (z.abs() ** 4).sum()


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_complex_parameters_step_as_their_real_view_or_raise(spec):
    g = torch.Generator().manual_seed(5)
    z = torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.complex128))
    twin = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    opt = spec.build_params([z])
    if spec.complex_policy == "raise":
        with pytest.raises((RuntimeError, ValueError, TypeError), match="(?i)complex"):
            steps(opt, [z], 1, loss_fn=_complex_loss)
        return
    start = z.detach().clone()
    steps(opt, [z], 4, loss_fn=_complex_loss)
    twin_opt = spec.build_params([twin])
    steps(twin_opt, [twin], 4, loss_fn=_complex_loss)
    assert not torch.equal(z.detach(), start)
    # the same real arithmetic on the same numbers (the complex gradient is the real view's)
    torch.testing.assert_close(torch.view_as_real(z.detach()), twin.detach(), rtol=0, atol=1e-13)


# --- foreach on and off -----------------------------------------------------------------------

FOREACH_SPECS = [s for s in PARAM_SPECS if "foreach" in s.build_params(make_params()).defaults]


@pytest.mark.parametrize("spec", FOREACH_SPECS, ids=[s.name for s in FOREACH_SPECS])
def test_foreach_on_and_off_equal(spec):
    runs = []
    for foreach in (True, False):
        params = make_params()
        opt = spec.build_params(params, foreach=foreach)
        steps(opt, params, 4)
        runs.append((params, opt))
    for p, q in zip(runs[0][0], runs[1][0]):
        assert torch.equal(p, q), spec.name
    assert_same_state(runs[0][1], runs[1][1], spec.name)


# --- deepcopy and pickle ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_deepcopy_and_pickle_continue_identically(spec, how):
    params = make_params()
    opt = spec.build_params(params)
    steps(opt, params, 3)
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy((params, opt))
    else:
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    assert opt2.param_groups[0]["params"][0] is params2[0]
    assert_same_state(opt, opt2, spec.name)
    steps(opt, params, 3)
    steps(opt2, params2, 3)
    for p, q in zip(params, params2):
        assert torch.equal(p, q), spec.name


# --- error inputs, with torch's exception types -----------------------------------------------


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=PARAM_IDS)
def test_error_inputs_raise_torch_exception_types(spec):
    W, W2 = make_params()[0], make_params(1)[0]
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        spec.build_params(W)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        spec.build_params([W, W])
    with pytest.raises(ValueError, match="more than one parameter group"):
        spec.build_params([{"params": [W]}, {"params": [W]}])
    with pytest.raises(ValueError, match="(?i)lr"):
        spec.build_params([W], lr=torch.tensor([0.001, 0.001], dtype=torch.float64))
    with pytest.raises(ValueError, match="with/without names"):
        spec.build_params([("weight", W), W2])


TORCH_FLAG_SPECS = [s for s in TORCH_SPECS]


@pytest.mark.parametrize("spec", TORCH_FLAG_SPECS, ids=[s.name for s in TORCH_FLAG_SPECS])
def test_implementation_flags_false_accepted_true_refused(spec):
    flags = [
        f
        for f in ("fused", "differentiable", "capturable")
        if f in inspect.signature(spec.torch_cls.__init__).parameters
    ]
    assert flags
    reference = make_params()
    steps(spec.build_params(reference), reference, 2)
    params = make_params()
    opt = spec.build_params(params, **{f: False for f in flags})  # TypeError before issue 17
    steps(opt, params, 2)
    for p, q in zip(params, reference):
        assert torch.equal(p, q)
    for flag in flags:
        with pytest.raises(ValueError, match=flag):
            spec.build_params(make_params(), **{flag: True})
