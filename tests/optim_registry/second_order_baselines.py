"""Registry entries for the second-order teaching baselines Newton and NaturalGradient.

Both couple every parameter through one curvature matrix, so a NaN gradient in fc1 cannot be
isolated from fc2: they raise (nan_policy="raise").

Newton needs only the standard closure, so every generic test applies (model_kind="any").

NaturalGradient also needs the model *outputs*, from the module given as ``output_module``.
The generic tests' models return the loss from ``forward()``; for TinyMLP the logits are the
output of its last layer ``fc2``, so the build hands ``model.fc2`` to the optimizer (its
forward hook sees the logits, with the whole network's graph behind them). The quadratic,
Rosenbrock and the sparse-embedding holder have no model outputs and no likelihood, so those
tests do not apply (model_kind="mlp"); tests/test_second_order_baselines.py checks descent on an
ill-conditioned least-squares problem and the sparse-gradient error instead.
"""

from __future__ import annotations

from gd_lib.optim import NaturalGradient, Newton

from . import OptimizerSpec, params_of


def _build_natural_gradient(model, **kw):
    return NaturalGradient(params_of(model), model.fc2, **{"lr": 0.5, "damping": 1e-2, **kw})


_NG_BAD = (
    ({"lr": -1.0}, "lr"),
    ({"damping": 0.0}, "damping"),
    ({"damping": -1.0}, "damping"),
    ({"fisher": "gauss"}, "fisher"),
    ({"mc_samples": 0}, "mc_samples"),
    ({"fisher": "empirical", "mc_samples": 2}, "mc_samples"),
    ({"cg_max_iter": 0}, "cg_max_iter"),
    ({"cg_tol": -1.0}, "cg_tol"),
    ({"loss": "hinge"}, "loss"),
    ({"seed": -1}, "seed"),
)

SPECS = [
    OptimizerSpec(
        name="Newton",
        build=lambda model, **kw: Newton(params_of(model), **kw),
        build_params=lambda params, **kw: Newton(params, **kw),
        complex_policy="raise",
        quadratic={},
        rosenbrock={},
        steps=30,
        needs_closure=True,
        nan_policy="raise",
        bad=(({"lr": -1.0}, "lr"), ({"damping": -1.0}, "damping"), ({"damping": float("nan")}, "damping")),
    ),
    OptimizerSpec(
        name="Newton_rowwise_hessian",
        build=lambda model, **kw: Newton(params_of(model), **{"batched_hessian": False, **kw}),
        quadratic={},
        rosenbrock={},
        steps=30,
        needs_closure=True,
        nan_policy="raise",
        bad=(({"lr": -1.0}, "lr"),),
    ),
    OptimizerSpec(
        name="Newton_adaptive_damping",
        build=lambda model, **kw: Newton(params_of(model), **{"damping": 0.1, "adaptive_damping": True, **kw}),
        quadratic={},
        rosenbrock={},
        steps=60,
        needs_closure=True,
        nan_policy="raise",
        bad=(({"lr": -1.0}, "lr"), ({"damping": 0.0}, "damping")),
    ),
    OptimizerSpec(
        name="NaturalGradient",
        build=_build_natural_gradient,
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        needs_closure=True,
        nan_policy="raise",
        bad=_NG_BAD,
    ),
    OptimizerSpec(
        name="NaturalGradient_empirical",
        build=lambda model, **kw: _build_natural_gradient(model, **{"fisher": "empirical", **kw}),
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        needs_closure=True,
        nan_policy="raise",
        bad=_NG_BAD,
    ),
    OptimizerSpec(
        name="NaturalGradient_sampled",
        build=lambda model, **kw: _build_natural_gradient(model, **{"mc_samples": 4, "seed": 3, **kw}),
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        needs_closure=True,
        nan_policy="raise",
        bad=_NG_BAD,
    ),
]
