"""Registry entries for the torch-equivalent first-order optimizers (gd_lib/optim/{sgd,adagrad,
rmsprop,adam,nadam}.py).

``build(model, **overrides)`` starts from settings that train the TinyMLP of the generic
tests and applies the overrides; the quadratic and Rosenbrock overrides are learning
rates at which each method descends in 200 steps (picked from a sweep over learning rates;
tests/test_optim_generic.py checks the descent at each of them).
"""

from __future__ import annotations

import torch

import gd_lib.optim as optim

from . import OptimizerSpec, model_builder, params_builder


def _specs(name, cls, torch_cls, defaults, **fields):
    build_params = params_builder(cls, **defaults)
    return OptimizerSpec(
        name=name, build=model_builder(build_params), build_params=build_params, torch_cls=torch_cls, **fields
    )


_LR_BAD = (({"lr": -0.1}, "lr"), ({"weight_decay": -1e-2}, "weight_decay"))
_ADAM_BAD = _LR_BAD + (
    ({"betas": (1.0, 0.999)}, "betas"),
    ({"betas": (0.9, -0.1)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
    ({"eps": -1e-8}, "eps"),
)
_SGD_BAD = _LR_BAD + (
    ({"momentum": -0.5}, "momentum"),
    ({"dampening": -0.1}, "dampening"),
    ({"dampening": 1.5}, "dampening"),
    ({"momentum": 0.0, "nesterov": True}, "nesterov"),
    ({"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov"),
)

SPECS = [
    _specs(
        "SGD",
        optim.SGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9),
        quadratic={"lr": 3e-3},
        rosenbrock={"lr": 1e-3},
        bad=_SGD_BAD,
        sparse_ok=True,
    ),
    _specs(
        "SGD-nesterov",
        optim.SGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, nesterov=True),
        quadratic={"lr": 3e-3},
        rosenbrock={"lr": 1e-3},
        bad=_SGD_BAD + (({"momentum": 0.0}, "nesterov"),),
        sparse_ok=True,
    ),
    _specs(
        "Adagrad",
        optim.Adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1),
        quadratic={"lr": 0.3},
        rosenbrock={"lr": 2.0},
        bad=_LR_BAD
        + (
            ({"lr_decay": -0.1}, "lr_decay"),
            ({"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
            ({"eps": -1e-10}, "eps"),
        ),
        sparse_ok=True,
    ),
    _specs(
        "RMSprop",
        optim.RMSprop,
        torch.optim.RMSprop,
        dict(lr=1e-2),
        quadratic={"lr": 1e-2},
        rosenbrock={"lr": 1e-2},
        bad=_LR_BAD
        + (
            ({"alpha": -0.1}, "alpha"),
            ({"alpha": 1.5}, "alpha"),
            ({"eps": -1e-8}, "eps"),
            ({"momentum": -0.9}, "momentum"),
        ),
    ),
    _specs(
        "RMSprop-centered",
        optim.RMSprop,
        torch.optim.RMSprop,
        dict(lr=1e-2, centered=True, momentum=0.5),
        quadratic={"lr": 1e-2},
        rosenbrock={"lr": 1e-2},
        bad=_LR_BAD + (({"alpha": 2.0}, "alpha"), ({"momentum": -0.1}, "momentum")),
    ),
    _specs(
        "Adam",
        optim.Adam,
        torch.optim.Adam,
        dict(lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    _specs(
        "Adam-amsgrad",
        optim.Adam,
        torch.optim.Adam,
        dict(lr=1e-2, amsgrad=True, weight_decay=1e-3),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    _specs(
        "AdamW",
        optim.AdamW,
        torch.optim.AdamW,
        dict(lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    _specs(
        "NAdam",
        optim.NAdam,
        torch.optim.NAdam,
        dict(lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD + (({"momentum_decay": -4e-3}, "momentum_decay"),),
    ),
    _specs(
        "NAdamW",
        optim.NAdam,
        torch.optim.NAdam,
        dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD + (({"momentum_decay": -4e-3}, "momentum_decay"),),
    ),
]
