"""One registry of optimizers drives the generic tests (tests/test_optim_generic.py).

Each module in this package defines ``SPECS: list[OptimizerSpec]``; they are
gathered here, so that adding an optimizer to the generic tests means adding
one entry in the module of its family, and no two families edit one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

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
    build_params: ``build_params(params, **overrides) -> Optimizer`` from a list of tensors,
                 named parameters or param groups, as torch.optim classes are built; None
                 where the optimizer needs a model or a module tree (KFAC, ModularDescent,
                 NaturalGradient). Drives the contract tests of tests/test_optim_contract.py.
    torch_cls:   torch.optim's class of the same algorithm, whose state dicts load both ways
    complex_policy: "twin" (a complex parameter steps as its ``view_as_real`` twin) or
                 "raise" (step raises an error that says "complex")
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
    build_params: Callable | None = None
    torch_cls: type | None = None
    complex_policy: str = "twin"


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


def params_builder(cls, after=None, **defaults):
    """``build_params(params, **overrides)`` for ``cls`` with ``defaults``; ``after(opt)`` runs last."""

    def build_params(params, **overrides):
        opt = cls(params, **{**defaults, **overrides})
        if after is not None:
            after(opt)
        return opt

    return build_params


def model_builder(build_params):
    """``build(model, **overrides)`` from a ``build_params``: the model's trainable parameters."""

    def build(model, **overrides):
        return build_params(params_of(model), **overrides)

    return build
