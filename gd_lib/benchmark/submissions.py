"""Submissions: an optimizer factory plus a hyperparameter search space.

A submission is what AlgoPerf scores: a training algorithm that, given a
model, its hyperparameters and the step budget, returns an optimizer and a
learning-rate schedule. Under the external-tuning ruleset its trials draw
hyperparameters from ``search_space`` by quasirandom search; under the
self-tuning ruleset it runs once with ``defaults`` (and a 3x budget).

The search spaces follow the AlgoPerf baselines' shapes (log-uniform
learning rates, 1 - β on a log scale, warm-up as a fraction of the budget),
scaled down to the mini workloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .search import LogUniform, Uniform

Schedule = Callable[[int], float]  # step -> multiplier of the base learning rate


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Schedule:
    """The AlgoPerf baselines' schedule: linear warm-up, then cosine decay to 0."""
    from gd_lib import schedules

    warmup = min(max(1, int(round(warmup_fraction * total_steps))), total_steps - 1)
    return schedules.warmup_cosine(total_steps, warmup)


@dataclass(frozen=True)
class Submission:
    """``build(model, hparams, total_steps) -> (optimizer, schedule or None)``."""

    name: str
    build: Callable[[nn.Module, dict, int], tuple[torch.optim.Optimizer, Schedule | None]]
    search_space: dict
    defaults: dict
    description: str = ""
    needs_closure: bool = False
    uses_eval_mode: bool = False  # Schedule-Free: evaluate at .eval() weights
    tags: tuple = field(default_factory=tuple)


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (biases and gains excluded), as the baselines do."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _sgd(model, h, total_steps):
    from gd_lib.optim import SGD

    opt = SGD(_decay_groups(model, h["weight_decay"]), lr=h["lr"], momentum=1 - h["one_minus_momentum"], nesterov=True)
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _adamw(model, h, total_steps):
    from gd_lib.optim import AdamW

    opt = AdamW(
        _decay_groups(model, h["weight_decay"]), lr=h["lr"], betas=(1 - h["one_minus_beta1"], h["beta2"]), eps=1e-8
    )
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _nadamw(model, h, total_steps):
    from gd_lib.optim import NAdam

    opt = NAdam(
        _decay_groups(model, h["weight_decay"]),
        lr=h["lr"],
        betas=(1 - h["one_minus_beta1"], h["beta2"]),
        eps=1e-8,
        decoupled_weight_decay=True,
    )
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _lion(model, h, total_steps):
    from gd_lib.optim import Lion

    opt = Lion(_decay_groups(model, h["weight_decay"]), lr=h["lr"], betas=(0.9, 0.99))
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _schedule_free_adamw(model, h, total_steps):
    from gd_lib.optim import AdamWScheduleFree

    opt = AdamWScheduleFree(
        _decay_groups(model, h["weight_decay"]),
        lr=h["lr"],
        betas=(1 - h["one_minus_beta1"], 0.999),
        warmup_steps=max(1, int(h["warmup_fraction"] * total_steps)),
    )
    opt.train()
    return opt, None


def _muon(model, h, total_steps):
    from gd_lib.optim import Muon, muon_param_groups

    opt = Muon(
        muon_param_groups(model),
        lr=h["lr"],
        weight_decay=h["weight_decay"],
        adam_lr=h["adam_lr"],
        adam_weight_decay=h["weight_decay"],
    )
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _shampoo(model, h, total_steps):
    from gd_lib.optim import Shampoo, ShampooConfig

    config = ShampooConfig(
        betas=(1 - h["one_minus_beta1"], h["beta2"]),
        epsilon=1e-12,
        weight_decay=h["weight_decay"],
        precondition_frequency=10,
        start_preconditioning_step=10,
        grafting="adam",
    )
    opt = Shampoo(model.parameters(), lr=h["lr"], config=config)
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _soap(model, h, total_steps):
    from gd_lib.optim import SOAP

    opt = SOAP(
        model.parameters(),
        lr=h["lr"],
        betas=(1 - h["one_minus_beta1"], h["beta2"]),
        weight_decay=h["weight_decay"],
        precondition_frequency=10,
    )
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


def _prodigy(model, h, total_steps):
    from gd_lib.optim import Prodigy

    opt = Prodigy(_decay_groups(model, h["weight_decay"]), lr=1.0, safeguard_warmup=True, use_bias_correction=True)
    return opt, warmup_cosine(total_steps, h["warmup_fraction"])


_ADAM_SPACE = {
    "lr": LogUniform(3e-4, 1e-2),
    "one_minus_beta1": LogUniform(0.02, 0.2),
    "beta2": 0.999,
    "weight_decay": LogUniform(1e-4, 0.1),
    "warmup_fraction": 0.05,
}
_ADAM_DEFAULTS = {"lr": 2e-3, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.01, "warmup_fraction": 0.05}

SUBMISSIONS: dict[str, Submission] = {
    s.name: s
    for s in [
        Submission(
            "sgd",
            _sgd,
            {
                "lr": LogUniform(1e-2, 0.5),
                "one_minus_momentum": LogUniform(0.02, 0.2),
                "weight_decay": LogUniform(1e-5, 1e-2),
                "warmup_fraction": 0.05,
            },
            {"lr": 0.1, "one_minus_momentum": 0.1, "weight_decay": 1e-4, "warmup_fraction": 0.05},
            "SGD with Nesterov momentum, warm-up + cosine",
        ),
        Submission("adamw", _adamw, _ADAM_SPACE, _ADAM_DEFAULTS, "AdamW, warm-up + cosine"),
        Submission("nadamw", _nadamw, _ADAM_SPACE, _ADAM_DEFAULTS, "NAdamW (AlgoPerf's baseline), warm-up + cosine"),
        Submission(
            "lion",
            _lion,
            {"lr": LogUniform(3e-5, 1e-3), "weight_decay": LogUniform(1e-3, 1.0), "warmup_fraction": 0.05},
            {"lr": 3e-4, "weight_decay": 0.1, "warmup_fraction": 0.05},
            "Lion, warm-up + cosine",
        ),
        Submission(
            "schedule_free_adamw",
            _schedule_free_adamw,
            {
                "lr": LogUniform(1e-3, 3e-2),
                "one_minus_beta1": LogUniform(0.02, 0.2),
                "weight_decay": LogUniform(1e-4, 0.1),
                "warmup_fraction": 0.05,
            },
            {"lr": 5e-3, "one_minus_beta1": 0.1, "weight_decay": 0.01, "warmup_fraction": 0.05},
            "Schedule-Free AdamW (no schedule, evaluated at the averaged weights)",
            uses_eval_mode=True,
        ),
        Submission(
            "muon",
            _muon,
            {
                "lr": LogUniform(3e-3, 0.1),
                "adam_lr": LogUniform(3e-4, 1e-2),
                "weight_decay": LogUniform(1e-4, 0.1),
                "warmup_fraction": 0.05,
            },
            {"lr": 0.02, "adam_lr": 3e-3, "weight_decay": 0.01, "warmup_fraction": 0.05},
            "Muon on matrices, AdamW on the rest, warm-up + cosine",
        ),
        Submission("shampoo", _shampoo, _ADAM_SPACE, _ADAM_DEFAULTS, "Shampoo with Adam grafting, warm-up + cosine"),
        Submission(
            "soap", _soap, {**_ADAM_SPACE, "beta2": 0.95}, {**_ADAM_DEFAULTS, "beta2": 0.95}, "SOAP, warm-up + cosine"
        ),
        Submission(
            "prodigy",
            _prodigy,
            {"weight_decay": LogUniform(1e-4, 0.1), "warmup_fraction": 0.05},
            {"weight_decay": 0.01, "warmup_fraction": 0.05},
            "Prodigy (learning-rate free), warm-up + cosine",
        ),
    ]
}


def get_submission(name: str) -> Submission:
    if name not in SUBMISSIONS:
        raise ValueError(f"Unknown submission {name!r}; available: {', '.join(sorted(SUBMISSIONS))}")
    return SUBMISSIONS[name]


__all__ = ["Submission", "SUBMISSIONS", "get_submission", "warmup_cosine", "Uniform", "LogUniform"]
