"""Registry entries for Shampoo and SOAP (gd_lib/optim/shampoo.py, gd_lib/optim/soap.py)."""

from __future__ import annotations

from gd_lib.optim.shampoo import Shampoo
from gd_lib.optim.soap import SOAP

from . import OptimizerSpec, model_builder, params_builder

_shampoo_params = params_builder(Shampoo, lr=0.05, grafting="adam", precondition_frequency=1, epsilon=1e-8)
_shampoo = model_builder(_shampoo_params)
# precondition_frequency=2 so that the 3- and 5-step runs of the generic tests cross
# several eigenbasis refreshes; precondition_1d so that vectors get a basis too
_soap_params = params_builder(SOAP, lr=0.05, precondition_frequency=2, precondition_1d=True)
_soap = model_builder(_soap_params)


SPECS = [
    OptimizerSpec(
        name="Shampoo",
        build=_shampoo,
        build_params=_shampoo_params,
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
    OptimizerSpec(
        name="SOAP",
        build=_soap,
        build_params=_soap_params,
        quadratic=dict(lr=0.1, weight_decay=0.0),
        rosenbrock=dict(lr=0.05, weight_decay=0.0),
        bad=(
            (dict(lr=-1.0), "lr"),
            (dict(betas=(1.0, 0.95)), "betas"),
            (dict(betas=(0.9, -0.1)), "betas"),
            (dict(shampoo_beta=1.0), "shampoo_beta"),
            (dict(eps=-1e-8), "eps"),
            (dict(weight_decay=-0.1), "weight_decay"),
            (dict(precondition_frequency=0), "precondition_frequency"),
            (dict(max_precond_dim=0), "max_precond_dim"),
        ),
    ),
]
