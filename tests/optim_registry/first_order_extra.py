"""Registry entries for the first-order optimizers torch.optim does not have
(gd_lib/optim/{lion,sign,prodigy,schedule_free,swats,ggt,entropy_sgd}.py).

``build(model, **overrides)`` starts from settings that train the TinyMLP of the generic
tests and applies the overrides. The quadratic and Rosenbrock overrides were picked from
a sweep over lr (and, for GGT and Entropy-SGD, eps / Langevin step) in the middle of the
range where each method reaches the generic tests' thresholds in 200 steps.
Schedule-Free optimizers start in eval mode (as the ``schedulefree`` package): ``build``
calls ``.train()``.
"""

from __future__ import annotations

import torch

import gd_lib.optim as optim

from . import OptimizerSpec, model_builder, params_builder


def _entropy_sgd_params_builder(**defaults):
    def build_params(params, **overrides):
        # a fixed seed: the resumed run in the state-dict test must see the same noise stream
        generator = torch.Generator().manual_seed(1234)
        return optim.EntropySGD(params, generator=generator, **{**defaults, **overrides})

    return build_params


def _spec(name, build_params, **fields):
    return OptimizerSpec(name=name, build=model_builder(build_params), build_params=build_params, **fields)


def _train_mode(opt):
    opt.train()


_LR_BAD = (({"lr": -0.1}, "lr"), ({"weight_decay": -1e-2}, "weight_decay"))
_BETAS_BAD = (
    ({"betas": (1.0, 0.99)}, "betas"),
    ({"betas": (0.9, -0.1)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
)

SPECS = [
    _spec(
        "Lion",
        params_builder(optim.Lion, lr=1e-3),
        quadratic={"lr": 0.03},
        rosenbrock={"lr": 0.03},
        bad=_LR_BAD + _BETAS_BAD,
    ),
    _spec(
        "SignSGD",
        params_builder(optim.SignSGD, lr=1e-3),
        quadratic={"lr": 0.03},
        rosenbrock={"lr": 2e-3},
        bad=_LR_BAD + (({"lr": float("nan")}, "lr"),),
    ),
    _spec(
        "Signum",
        params_builder(optim.Signum, lr=1e-3),
        quadratic={"lr": 0.03},
        rosenbrock={"lr": 0.03},
        bad=_LR_BAD + (({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum")),
    ),
    _spec(
        "Prodigy",
        params_builder(optim.Prodigy),
        quadratic={"lr": 1.0},
        rosenbrock={"lr": 1.0},
        bad=_LR_BAD
        + _BETAS_BAD
        + (
            ({"lr": 0.0}, "lr"),
            ({"eps": 0.0}, "eps"),
            ({"d0": 0.0}, "d0"),
            ({"beta3": 1.0}, "beta3"),
            ({"d_coef": -1.0}, "d_coef"),
            ({"growth_rate": 0.5}, "growth_rate"),
            ({"slice_p": 0}, "slice_p"),
            ({"fsdp_in_use": True}, "fsdp_in_use"),
        ),
        nan_policy="raise",
    ),
    _spec(
        "SGDScheduleFree",
        params_builder(optim.SGDScheduleFree, after=_train_mode, lr=0.1),
        quadratic={"lr": 0.01},
        rosenbrock={"lr": 0.01},
        bad=_LR_BAD
        + (
            ({"momentum": 0.0}, "momentum"),
            ({"momentum": 1.0}, "momentum"),
            ({"warmup_steps": -1}, "warmup_steps"),
            ({"r": -1.0}, "r"),
            ({"weight_lr_power": -2.0}, "weight_lr_power"),
        ),
    ),
    _spec(
        "AdamWScheduleFree",
        params_builder(optim.AdamWScheduleFree, after=_train_mode, lr=0.01),
        quadratic={"lr": 0.1},
        rosenbrock={"lr": 0.3},
        bad=_LR_BAD
        + _BETAS_BAD
        + (
            ({"betas": (0.0, 0.999)}, "betas"),
            ({"eps": -1e-8}, "eps"),
            ({"warmup_steps": 2.5}, "warmup_steps"),
        ),
    ),
    _spec(
        "SWATS",
        params_builder(optim.SWATS, lr=1e-2),
        quadratic={"lr": 0.1},
        rosenbrock={"lr": 0.3},
        bad=_LR_BAD + _BETAS_BAD + (({"eps": -1e-9}, "eps"),),
    ),
    _spec(
        "GGT",
        params_builder(optim.GGT, lr=1e-2, window=10, eps=1.0),
        quadratic={"lr": 0.03},
        rosenbrock={"lr": 0.03},
        bad=_LR_BAD
        + (
            ({"betas": (1.0, 1.0)}, "betas"),
            ({"betas": (0.9, 1.5)}, "betas"),
            ({"eps": 0.0}, "eps"),
            ({"window": 0}, "window"),
        ),
        nan_policy="raise",
    ),
    _spec(
        "EntropySGD",
        _entropy_sgd_params_builder(lr=1.0, langevin_steps=3, langevin_lr=0.01, gamma=1.0),
        quadratic={"lr": 1.0, "langevin_steps": 5, "langevin_lr": 0.01, "gamma": 1.0},
        rosenbrock={"lr": 3.0, "langevin_steps": 5, "langevin_lr": 1e-3, "gamma": 1.0},
        bad=_LR_BAD[:1]
        + (
            ({"langevin_steps": 0}, "langevin_steps"),
            ({"langevin_lr": -1.0}, "langevin_lr"),
            ({"gamma": -1.0}, "gamma"),
            ({"noise": -1.0}, "noise"),
            ({"alpha": 0.0}, "alpha"),
            ({"alpha": 1.5}, "alpha"),
        ),
        needs_closure=True,
        nan_policy="raise",
    ),
]
