"""gd_lib.schedules: closed forms written here, torch's own schedulers, composition, ScheduleLR."""

import dataclasses
import math

import pytest
import torch

from gd_lib import schedules as S

STEPS = 60


def closed_form_check(schedule, formula, steps=STEPS):
    """Every step of ``schedule`` equals ``formula(t)``; same float maths, reordered: 1e-12."""
    for t in range(steps):
        assert schedule(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-12), t


def torch_lrs(make_scheduler, steps=STEPS, lr=1.0):
    """The lr that each of ``steps`` optimizer steps uses under a torch scheduler."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def schedule_lr_lrs(schedule, steps=STEPS, base_lrs=(1.0,)):
    """The lr of each group at each step when ``schedule`` drives SGD through ScheduleLR."""
    params = [torch.zeros(1, requires_grad=True) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)])
    sched = S.ScheduleLR(opt, schedule)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


# --- closed forms --------------------------------------------------------------------------------


def test_constant_and_linear_warmup():
    closed_form_check(S.Constant(0.3), lambda t: 0.3)
    closed_form_check(S.LinearWarmup(10, start=0.2, end=0.8), lambda t: 0.2 + 0.6 * t / 10 if t < 10 else 0.8)


@pytest.mark.parametrize("final", [0.0, 0.1])
def test_cosine(final):
    T = 40
    closed_form_check(
        S.Cosine(T, final=final), lambda t: final + (1 - final) * (1 + math.cos(math.pi * min(t, T) / T)) / 2
    )


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay(shape):
    T, w, D, final = 50, 5, 20, 0.05
    g = {
        "linear": lambda s: 1 - s,
        "cosine": lambda s: (1 + math.cos(math.pi * s)) / 2,
        "1-sqrt": lambda s: 1 - math.sqrt(s),
    }[shape]

    def formula(t):
        if t < w:
            return t / w
        if t < T - D:
            return 1.0
        if t >= T:
            return final
        return final + (1 - final) * g((t - (T - D)) / D)

    closed_form_check(S.WarmupStableDecay(T, D, warmup_steps=w, shape=shape, final=final), formula)


def test_step_multistep_exponential():
    closed_form_check(S.StepDecay(7, gamma=0.5), lambda t: 0.5 ** (t // 7))
    closed_form_check(S.MultiStep((10, 25, 40), gamma=0.3), lambda t: 0.3 ** ((t >= 10) + (t >= 25) + (t >= 40)))
    closed_form_check(S.Exponential(0.95), lambda t: 0.95**t)


def test_inverse_sqrt_is_vaswani_normalised():
    w, d = 8, 64

    def vaswani(t):  # eq. 3 of Vaswani et al., divided by its peak at t = w
        lrate = d**-0.5 * min(t**-0.5, t * w**-1.5) if t > 0 else 0.0
        return lrate / (d * w) ** -0.5

    closed_form_check(S.InverseSqrt(w), vaswani)


def test_cyclic_triangular_closed_form():
    up, down, lo, hi = 5, 10, 0.1, 1.0

    def formula(t):
        t_in = t % (up + down)
        return lo + (hi - lo) * (t_in / up if t_in <= up else 1 - (t_in - up) / down)

    closed_form_check(S.Cyclic(up, lo, hi, step_size_down=down), formula)


def test_one_cycle_closed_form_cos():
    T, pct, div, fdiv = 50, 0.3, 25.0, 1e4
    e1, e2 = pct * T - 1, T - 1
    lo, hi, end = 1 / div, 1.0, 1 / div / fdiv

    def cos_anneal(a, b, p):
        return b + (a - b) * (1 + math.cos(math.pi * p)) / 2

    def formula(t):
        if t <= e1:
            return cos_anneal(lo, hi, t / e1)
        return cos_anneal(hi, end, min(1.0, (t - e1) / (e2 - e1)))

    closed_form_check(S.OneCycle(T), formula, steps=T + 5)
    assert S.OneCycle(T)(T + 100) == pytest.approx(end)


# --- against torch's schedulers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            S.LinearWarmup(10, start=0.25, end=1.0),
            lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=10),
        ),
        (S.StepDecay(7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5)),
        (S.MultiStep((10, 25), gamma=0.3), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 25], gamma=0.3)),
        (S.Exponential(0.95), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
        (S.Cosine(STEPS, final=0.1), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.1)),
        (
            S.Cyclic(4, 0.1, 1.0, step_size_down=9),
            lambda o: torch.optim.lr_scheduler.CyclicLR(
                o, 0.1, 1.0, step_size_up=4, step_size_down=9, cycle_momentum=False
            ),
        ),
        (
            S.Cyclic(5, 0.1, 1.0, mode="triangular2"),
            lambda o: torch.optim.lr_scheduler.CyclicLR(
                o, 0.1, 1.0, step_size_up=5, mode="triangular2", cycle_momentum=False
            ),
        ),
        (
            S.Cyclic(5, 0.1, 1.0, mode="exp_range", gamma=0.97),
            lambda o: torch.optim.lr_scheduler.CyclicLR(
                o, 0.1, 1.0, step_size_up=5, mode="exp_range", gamma=0.97, cycle_momentum=False
            ),
        ),
        (
            S.OneCycle(STEPS),
            lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
        ),
        (
            S.OneCycle(STEPS, pct_start=0.25, anneal="linear", div_factor=10.0, final_div_factor=100.0),
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o,
                max_lr=1.0,
                total_steps=STEPS,
                pct_start=0.25,
                anneal_strategy="linear",
                div_factor=10.0,
                final_div_factor=100.0,
                cycle_momentum=False,
            ),
        ),
        (
            S.OneCycle(STEPS, three_phase=True),
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=1.0, total_steps=STEPS, three_phase=True, cycle_momentum=False
            ),
        ),
    ],
    ids=[
        "linear",
        "step",
        "multistep",
        "exponential",
        "cosine",
        "cyclic",
        "triangular2",
        "exp_range",
        "one_cycle_cos",
        "one_cycle_linear",
        "one_cycle_three_phase",
    ],
)
def test_matches_torch_scheduler(ours, theirs):
    expected = torch_lrs(theirs)
    # torch's chainable forms (cosine, exponential) update recursively: round-off ~1e-14 per step
    assert [ours(t) for t in range(STEPS)] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert [lrs[0] for lrs in schedule_lr_lrs(ours)] == pytest.approx(expected, rel=1e-10, abs=1e-12)


# --- composition ---------------------------------------------------------------------------------------------


def test_join_restarts_each_schedule_at_its_boundary():
    a, b, c = S.Constant(0.5), S.Exponential(0.9), S.LinearWarmup(4)
    joined = S.join([a, b, c], [10, 30])
    closed_form_check(joined, lambda t: 0.5 if t < 10 else (0.9 ** (t - 10) if t < 30 else min(t - 30, 4) / 4))


def test_with_warmup_and_warmup_cosine():
    w, T = 10, 50
    decay = S.Cosine(T - w, final=0.2)
    closed_form_check(
        S.with_warmup(decay, w),
        lambda t: t / w if t < w else 0.2 + 0.8 * (1 + math.cos(math.pi * min(t - w, T - w) / (T - w))) / 2,
    )
    assert S.warmup_cosine(T, w, final=0.2).values(STEPS).tolist() == S.with_warmup(decay, w).values(STEPS).tolist()
    # warmup into any decay: here a step decay starting from 1
    closed_form_check(
        S.with_warmup(S.StepDecay(5, 0.5), 4, start=0.1),
        lambda t: 0.1 + 0.9 * t / 4 if t < 4 else 0.5 ** ((t - 4) // 5),
    )


def test_scaled_schedule_gives_absolute_lr():
    closed_form_check(3e-4 * S.Cosine(20), lambda t: 3e-4 * (1 + math.cos(math.pi * min(t, 20) / 20)) / 2)
    closed_form_check(S.Exponential(0.9) * 2.0, lambda t: 2.0 * 0.9**t)


# --- as an LRScheduler -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        S.warmup_cosine(STEPS, 10, final=0.1),
        S.WarmupStableDecay(STEPS, 20, 5, shape="1-sqrt"),
        S.InverseSqrt(6),
        S.Cyclic(5, mode="triangular2"),
    ],
    ids=["warmup_cosine", "wsd", "inverse_sqrt", "cyclic"],
)
def test_function_and_scheduler_agree_for_every_group(schedule):
    base_lrs = (0.1, 0.003)
    lrs = schedule_lr_lrs(schedule, base_lrs=base_lrs)
    for t, group_lrs in enumerate(lrs):
        assert group_lrs == [base * schedule(t) for base in base_lrs]  # same product, bit for bit


def test_per_group_schedules():
    params = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 2.0}])
    sched = S.ScheduleLR(opt, [S.Exponential(0.5), S.Constant(0.25)])
    for t in range(5):
        assert [g["lr"] for g in opt.param_groups] == [0.5**t, 0.5]
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="schedule"):
        S.ScheduleLR(opt, [S.Constant()])


def test_scheduler_state_dict_resume_is_exact():
    schedule = S.warmup_cosine(30, 5)

    def make():
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.7)
        return opt, S.ScheduleLR(opt, schedule)

    opt, sched = make()
    for _ in range(12):
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    reference = []
    for _ in range(10):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    resumed = []
    for _ in range(10):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == reference


# --- bad arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,name",
    [
        (lambda: S.Constant(-1.0), "value"),
        (lambda: S.LinearWarmup(0), "warmup_steps"),
        (lambda: S.Cosine(0), "total_steps"),
        (lambda: S.Cosine(10, final=-0.1), "final"),
        (lambda: S.WarmupStableDecay(10, 8, warmup_steps=5), "decay_steps"),
        (lambda: S.WarmupStableDecay(10, 5, shape="sqrt"), "shape"),
        (lambda: S.StepDecay(0), "step_size"),
        (lambda: S.MultiStep((5, 3)), "milestones"),
        (lambda: S.Exponential(1.5), "gamma"),
        (lambda: S.InverseSqrt(0), "warmup_steps"),
        (lambda: S.Cyclic(5, mode="sine"), "mode"),
        (lambda: S.Cyclic(0), "step_size_up"),
        (lambda: S.OneCycle(100, pct_start=1.2), "pct_start"),
        (lambda: S.OneCycle(100, anneal="exp"), "anneal"),
        (lambda: S.OneCycle(100, div_factor=0.0), "div_factor"),
        (lambda: S.join([S.Constant(), S.Constant()], []), "boundaries"),
        (lambda: S.join([S.Constant(), S.Constant(), S.Constant()], [5, 5]), "boundaries"),
        (lambda: S.with_warmup(S.Constant(), 0), "warmup_steps"),
        (lambda: S.warmup_cosine(10, 10), "warmup_steps"),
        (lambda: S.Constant() * -2.0, "factor"),
        (lambda: S.Constant()(-1), "step"),
        (lambda: S.Constant()(1.5), "step"),
    ],
)
def test_bad_arguments_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_schedules_are_pure():
    s = S.warmup_cosine(100, 10)
    first = s.values(100)
    assert s.values(100).tolist() == first.tolist()
    assert [s(t) for t in reversed(range(100))] == first[::-1].tolist()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.boundaries = (3,)  # frozen
