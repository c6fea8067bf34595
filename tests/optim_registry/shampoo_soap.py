"""Registry entries for Shampoo and SOAP (gd_lib/optim/shampoo.py, gd_lib/optim/soap.py)."""
from __future__ import annotations

from gd_lib.optim.shampoo import Shampoo

from . import OptimizerSpec, params_of


def _shampoo(model, **overrides):
    kwargs = dict(lr=0.05, grafting="adam", precondition_frequency=1, epsilon=1e-8)
    kwargs.update(overrides)
    return Shampoo(params_of(model), **kwargs)


SPECS = [
    OptimizerSpec(
        name="Shampoo",
        build=_shampoo,
        quadratic=dict(lr=0.1),
        rosenbrock=dict(lr=0.05),
        bad=(
            (dict(lr=-1.0), "lr"),
            (dict(betas=(1.0, 1.0)), "betas"),
            (dict(betas=(0.9, 0.0)), "betas"),
            (dict(epsilon=0.0), "epsilon"),
            (dict(momentum=1.5), "momentum"),
            (dict(weight_decay=-0.1), "weight_decay"),
            (dict(max_preconditioner_dim=0), "max_preconditioner_dim"),
            (dict(precondition_frequency=0), "precondition_frequency"),
            (dict(precondition_frequency=10, start_preconditioning_step=5), "start_preconditioning_step"),
            (dict(grafting="rmsprop"), "grafting"),
            (dict(grafting_beta2=1.0), "grafting_beta2"),
            (dict(root_method="svd"), "root_method"),
        ),
        # a NaN gradient reaches the statistics, and the next root computation raises
        # ValueError("... non-finite ...") as distributed Shampoo does
        nan_policy="raise",
    ),
]
