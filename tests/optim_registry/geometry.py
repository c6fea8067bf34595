"""Registry entries for the geometry issue: Muon (with its AdamW fallback) and ModularDescent."""

from __future__ import annotations

from torch import nn

from gd_lib.geometry import modular
from gd_lib.optim import ModularDescent, Muon, muon_param_groups

from . import OptimizerSpec


def build_muon(model, **overrides):
    # the usual recipe: hidden matrices on Muon, head/embeddings/vectors on AdamW
    return Muon(muon_param_groups(model), **overrides)


def modular_tree(model: nn.Module) -> modular.Module:
    """The generic tests' TinyMLP as fc2 ∘ tanh ∘ fc1 (each Linear + Bias); any other model
    as the concatenation of one atom per tensor (Linear for matrices, Bias for vectors,
    Embedding for embedding tables), which is the modular tree of an unknown architecture."""
    if hasattr(model, "fc1") and hasattr(model, "fc2"):
        layer1 = modular.Linear.of(model.fc1) + modular.Bias.of(model.fc1)
        layer2 = modular.Linear.of(model.fc2) + modular.Bias.of(model.fc2)
        return modular.sequential(layer1, modular.Tanh(), layer2)
    atoms = []
    for sub in model.modules():
        for p in sub.parameters(recurse=False):
            if isinstance(sub, nn.Embedding):
                atoms.append(modular.Embedding(p.shape[0], p.shape[1], weight=p))
            elif p.ndim == 2:
                atoms.append(modular.Linear(p.shape[0], p.shape[1], weight=p))
            else:
                atoms.append(modular.Bias(p.numel(), weight=p))
    return modular.Concatenation(*atoms)


def build_modular_descent(model, **overrides):
    return ModularDescent(modular_tree(model), **overrides)


SPECS = [
    OptimizerSpec(
        name="Muon",
        build=build_muon,
        # a plain list is split by ndim (matrices on Muon, the rest on AdamW)
        build_params=lambda params, **overrides: Muon(params, **overrides),
        complex_policy="raise",  # as torch.optim.Muon
        # Quadratic and Rosenbrock have only vector parameters: they exercise the AdamW side
        quadratic={"adam_lr": 0.05},
        rosenbrock={"adam_lr": 0.02},
        bad=(
            ({"lr": -1.0}, "lr"),
            ({"momentum": 1.0}, "momentum"),
            ({"ns_steps": 0}, "ns_steps"),
            ({"weight_decay": -0.1}, "weight_decay"),
            ({"adam_betas": (1.0, 0.9)}, "adam_betas"),
            ({"adam_eps": -1e-8}, "adam_eps"),
            ({"adam_lr": -1.0}, "adam_lr"),
        ),
    ),
    OptimizerSpec(
        name="ModularDescent",
        build=build_modular_descent,
        # vector parameters are Bias atoms: normalized gradient descent with a fixed step
        quadratic={"lr": 0.01, "momentum": 0.9},
        rosenbrock={"lr": 0.01, "momentum": 0.9},
        bad=(
            ({"lr": -1.0}, "lr"),
            ({"momentum": 1.0}, "momentum"),
            ({"ns_steps": 0}, "ns_steps"),
            ({"weight_decay": -1.0}, "weight_decay"),
            ({"orthogonalize": "qr"}, "orthogonalize"),
        ),
    ),
]
