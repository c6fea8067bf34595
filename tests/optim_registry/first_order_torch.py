"""Registry entries for the torch-equivalent first-order optimizers (gd_lib/optim/{sgd,adagrad,
rmsprop,adam,nadam}.py).

``build(model, **overrides)`` starts from settings that train the TinyMLP of the generic
tests and applies the overrides; the quadratic and Rosenbrock overrides are learning
rates at which each method descends in 200 steps (found by a small sweep, see the
report of issue #2 part A).
"""
from __future__ import annotations

import gd_lib.optim as optim

from . import OptimizerSpec, params_of


def _builder(cls, **defaults):
    def build(model, **overrides):
        return cls(params_of(model), **{**defaults, **overrides})
    return build


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
    OptimizerSpec(
        name="SGD",
        build=_builder(optim.SGD, lr=0.1, momentum=0.9),
        quadratic={"lr": 3e-3},
        rosenbrock={"lr": 1e-3},
        bad=_SGD_BAD,
        sparse_ok=True,
    ),
    OptimizerSpec(
        name="SGD-nesterov",
        build=_builder(optim.SGD, lr=0.1, momentum=0.9, nesterov=True),
        quadratic={"lr": 3e-3},
        rosenbrock={"lr": 1e-3},
        bad=_SGD_BAD + (({"momentum": 0.0}, "nesterov"),),
        sparse_ok=True,
    ),
    OptimizerSpec(
        name="Adagrad",
        build=_builder(optim.Adagrad, lr=0.1),
        quadratic={"lr": 0.3},
        rosenbrock={"lr": 2.0},
        bad=_LR_BAD + (
            ({"lr_decay": -0.1}, "lr_decay"),
            ({"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
            ({"eps": -1e-10}, "eps"),
        ),
        sparse_ok=True,
    ),
    OptimizerSpec(
        name="RMSprop",
        build=_builder(optim.RMSprop, lr=1e-2),
        quadratic={"lr": 1e-2},
        rosenbrock={"lr": 1e-2},
        bad=_LR_BAD + (
            ({"alpha": -0.1}, "alpha"),
            ({"alpha": 1.5}, "alpha"),
            ({"eps": -1e-8}, "eps"),
            ({"momentum": -0.9}, "momentum"),
        ),
    ),
    OptimizerSpec(
        name="RMSprop-centered",
        build=_builder(optim.RMSprop, lr=1e-2, centered=True, momentum=0.5),
        quadratic={"lr": 1e-2},
        rosenbrock={"lr": 1e-2},
        bad=_LR_BAD + (({"alpha": 2.0}, "alpha"), ({"momentum": -0.1}, "momentum")),
    ),
    OptimizerSpec(
        name="Adam",
        build=_builder(optim.Adam, lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    OptimizerSpec(
        name="Adam-amsgrad",
        build=_builder(optim.Adam, lr=1e-2, amsgrad=True, weight_decay=1e-3),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    OptimizerSpec(
        name="AdamW",
        build=_builder(optim.AdamW, lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD,
    ),
    OptimizerSpec(
        name="NAdam",
        build=_builder(optim.NAdam, lr=1e-2),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD + (({"momentum_decay": -4e-3}, "momentum_decay"),),
    ),
    OptimizerSpec(
        name="NAdamW",
        build=_builder(optim.NAdam, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
        quadratic={"lr": 3e-2},
        rosenbrock={"lr": 0.1},
        bad=_ADAM_BAD + (({"momentum_decay": -4e-3}, "momentum_decay"),),
    ),
]
