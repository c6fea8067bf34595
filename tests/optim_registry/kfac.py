"""Registry entries for KFAC and EKFAC (gd_lib.optim.kfac, gd_lib.optim.ekfac).

They need nn.Linear layers (model_kind="mlp"), so the quadratic, Rosenbrock and sparse tests
do not apply. Statistics every 2 steps and a refresh every 3 put factor updates and a refresh
on both sides of the generic test's mid-run state_dict round trip (after step 5).
With KL clipping the scale is shared by all layers, so a NaN gradient raises instead of being
isolated; without it, a NaN in fc1 cannot reach fc2 (G comes from the hooks, not from p.grad).
"""

from __future__ import annotations

from gd_lib.optim import EKFAC, KFAC

from . import OptimizerSpec

_FAST = dict(lr=0.05, damping=1e-2, cov_update_freq=2, inv_update_freq=3)

_BAD = (
    ({"lr": -1.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1e-3}, "weight_decay"),
    ({"damping": 0.0}, "damping"),
    ({"kl_clip": -1.0}, "kl_clip"),
    ({"stat_decay": 1.0}, "stat_decay"),
    ({"cov_update_freq": 0}, "cov_update_freq"),
    ({"inv_update_freq": 0}, "inv_update_freq"),
    ({"fisher": "true"}, "fisher"),
    ({"loss_reduction": "none"}, "loss_reduction"),
    ({"fallback": "rmsprop"}, "fallback"),
    ({"fallback_betas": (0.9, 1.5)}, "fallback_betas"),
)

SPECS = [
    OptimizerSpec(
        name="KFAC",
        build=lambda model, **kw: KFAC(model, **{**_FAST, **kw}),
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        bad=_BAD + (({"inverse_method": "svd"}, "inverse_method"),),
    ),
    OptimizerSpec(
        name="KFAC_klclip_pi_cholesky_adam",
        build=lambda model, **kw: KFAC(
            model,
            **{
                **_FAST,
                "kl_clip": 1e-3,
                "pi_damping": True,
                "inverse_method": "cholesky",
                "fallback": "adam",
                "weight_decay": 1e-3,
                **kw,
            },
        ),
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        nan_policy="raise",
        bad=_BAD,
    ),
    OptimizerSpec(
        name="EKFAC",
        build=lambda model, **kw: EKFAC(model, **{**_FAST, **kw}),
        quadratic=None,
        rosenbrock=None,
        model_kind="mlp",
        bad=_BAD + (({"pi_damping": True}, "pi_damping"), ({"inverse_method": "cholesky"}, "inverse_method")),
    ),
]
