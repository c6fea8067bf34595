"""One registry of optimizers drives the generic tests (tests/test_optim_generic.py).

Each module in this package defines ``SPECS: list[OptimizerSpec]``; they are
gathered here, so that adding an optimizer to the generic tests means adding
one entry in the module of its family, and no two families edit one file.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class OptimizerSpec:
    """How the generic tests build and drive one optimizer.

    name:        id shown by pytest
    build:       ``build(model, **overrides) -> Optimizer``; gets the whole model
                 so that optimizers needing modules (KFAC) can hook them
    quadratic:   keyword overrides that make it descend on the ill-conditioned
                 quadratic, or None where the method does not apply
    rosenbrock:  the same for the Rosenbrock function
    steps:       steps for the descent tests
    bad:         ((kwargs, name of the offending argument), ...) that must raise ValueError
    needs_closure: step() must be given a closure
    nan_policy:  "isolate" (a NaN gradient in one parameter leaves the others'
                 update and state as if it were absent) or "raise" (step raises)
    sparse_ok:   accepts sparse gradients
    model_kind:  "any" (parameter list suffices) or "mlp" (needs nn.Linear layers)
    """

    name: str
    build: Callable
    quadratic: dict | None = field(default_factory=dict)
    rosenbrock: dict | None = field(default_factory=dict)
    steps: int = 200
    bad: tuple = ()
    needs_closure: bool = False
    nan_policy: str = "isolate"
    sparse_ok: bool = False
    model_kind: str = "any"


def all_specs() -> list[OptimizerSpec]:
    specs: list[OptimizerSpec] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        specs.extend(getattr(module, "SPECS", []))
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"duplicate optimizer specs: {sorted(duplicates)}")
    return specs


def params_of(model: torch.nn.Module):
    return [p for p in model.parameters() if p.requires_grad]
