"""The μP rules: each parameter's role, and the multipliers of its init, learning rate and weight
decay (the table of :mod:`gd_lib.mup`'s docstring), applied to a model (:func:`set_base_shapes`) and to
an optimizer's parameter groups (:func:`mup_param_groups`, microsoft/mup's ``mup/optim.py``).

``family`` names the learning-rate column of the table: ``"adam"`` for optimizers that normalise the
gradient entrywise, ``"sgd"`` for updates linear in the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gd_lib._checks import check_choice, check_number

from .readout import MuReadout
from .shapes import InfShape, get_infshapes

__all__ = [
    "PARAMETRIZATIONS",
    "OPTIMIZER_FAMILIES",
    "ROLES",
    "SP_INITS",
    "ParamInfo",
    "parameter_role",
    "parameter_infos",
    "init_multiplier",
    "lr_multiplier",
    "weight_decay_multiplier",
    "set_base_shapes",
    "mup_param_groups",
    "mup_table",
    "attention_scale",
]

PARAMETRIZATIONS = ("mup", "sp")
OPTIMIZER_FAMILIES = ("adam", "sgd")
ROLES = ("hidden", "vector", "output", "readout", "finite")
SP_INITS = ("fan_in", "constant")


def check_parametrization(parametrization: str) -> None:
    check_choice("parametrization", parametrization, PARAMETRIZATIONS)


def check_family(family: str) -> None:
    """``family``: which learning-rate column of the μP table applies (``"adam"`` or ``"sgd"``)."""
    check_choice("family", family, OPTIMIZER_FAMILIES)


@dataclass(frozen=True)
class ParamInfo:
    """What μP needs to know about one parameter: its :class:`InfShape`, its
    role (one of :data:`ROLES`) and, for the bias of a linear/conv layer, the
    layer's fan-in multiplier."""

    name: str
    infshape: InfShape
    role: str
    layer_bias_fanin_mult: float | None = None


def parameter_role(infshape: InfShape, *, is_readout: bool = False, is_output: bool = False) -> str:
    """The role of a parameter (see the table in the module docstring).

    ``is_readout``: the weight of a :class:`MuReadout`. ``is_output``: the
    weight of a plain ``nn.Linear`` layer; it is an output weight when its
    fan-in is infinite and its fan-out finite.
    """
    if infshape.ninf >= 3:
        raise NotImplementedError("parameters with more than 2 infinite dimensions")
    if is_readout:
        return "readout"
    if is_output and infshape.dims[1].isinf and not infshape.dims[0].isinf:
        return "output"
    return {0: "finite", 1: "vector", 2: "hidden"}[infshape.ninf]


def parameter_infos(model: nn.Module, infshapes: Mapping[str, InfShape]) -> dict[str, ParamInfo]:
    """:class:`ParamInfo` of every parameter of ``model``, by name.

    Raises ValueError for weights shared between modules (tied embeddings):
    their μP rules would conflict.
    """
    names_by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_by_id.setdefault(id(p), []).append(name)
    shared = [names for names in names_by_id.values() if len(names) > 1]
    if shared:
        raise ValueError(f"weights shared between modules are not supported under μP: {shared}")
    infos: dict[str, ParamInfo] = {}
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        is_layer = isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
        for pname, _ in module.named_parameters(recurse=False):
            name = prefix + pname
            shape = infshapes[name]
            if is_layer and pname == "weight":
                role = parameter_role(
                    shape, is_readout=isinstance(module, MuReadout), is_output=isinstance(module, nn.Linear)
                )
                infos[name] = ParamInfo(name, shape, role)
            elif is_layer and pname == "bias":
                fanin = infshapes[prefix + "weight"].fanin_mult
                infos[name] = ParamInfo(name, shape, parameter_role(shape), fanin)
            else:
                infos[name] = ParamInfo(name, shape, parameter_role(shape))
    return infos


def init_multiplier(info: ParamInfo, sp_init: str = "fan_in") -> float:
    """Factor that turns the SP-initialised stored tensor into its μP init."""
    check_choice("sp_init", sp_init, SP_INITS)
    m_in = info.infshape.fanin_mult
    if info.layer_bias_fanin_mult is not None:
        # torch draws a layer's bias ~ 1/sqrt(fan_in); μP wants it Θ(1)
        return math.sqrt(info.layer_bias_fanin_mult) if sp_init == "fan_in" else 1.0
    if info.role == "hidden":
        return 1.0 if sp_init == "fan_in" else 1.0 / math.sqrt(m_in)
    if info.role == "output":
        return 1.0 / math.sqrt(m_in) if sp_init == "fan_in" else 1.0 / m_in
    if info.role == "readout":
        return math.sqrt(m_in) if sp_init == "fan_in" else 1.0
    return 1.0


def lr_multiplier(info: ParamInfo, family: str = "adam") -> float:
    """Factor on the learning rate of one parameter under μP (module docstring table)."""
    check_family(family)
    shape, role = info.infshape, info.role
    if role == "hidden":
        return 1.0 / shape.fanin_mult if family == "adam" else shape.fanout_mult / shape.fanin_mult
    if role == "output":
        return 1.0 / shape.fanin_mult
    if role == "readout":
        return 1.0 if family == "adam" else shape.fanin_mult
    if role == "vector":
        return 1.0 if family == "adam" else shape.width_mult
    return 1.0


def weight_decay_multiplier(info: ParamInfo, family: str = "adam") -> float:
    """Factor on the (coupled) weight decay: the inverse of :func:`lr_multiplier`,
    so that ``lr · weight_decay`` is the same at every width (``mup.optim``)."""
    return 1.0 / lr_multiplier(info, family)


def set_base_shapes(
    model: nn.Module,
    base_model,
    delta_model=None,
    *,
    parametrization: str = "mup",
    sp_init: str = "fan_in",
    rescale_params: bool = True,
) -> dict[str, InfShape]:
    """Prepare ``model`` (in place) for μP and return its :class:`InfShape` s.

    Under ``"mup"``: sets each :class:`MuReadout`'s ``width_mult`` and, if
    ``rescale_params``, multiplies every SP-initialised tensor by
    :func:`init_multiplier`. Call it once, right after building the model
    (on a model loaded from a checkpoint pass ``rescale_params=False``).
    Under ``"sp"`` the model is left as it is. It does not change attention
    scales: build the model with :func:`attention_scale`.

    ``base_model`` / ``delta_model``: see :func:`get_infshapes`.
    ``sp_init``: ``"fan_in"`` or ``"constant"``, see the module docstring.
    """
    check_parametrization(parametrization)
    check_choice("sp_init", sp_init, SP_INITS)
    infshapes = get_infshapes(model, base_model, delta_model)
    if parametrization == "sp":
        return infshapes
    infos = parameter_infos(model, infshapes)
    for mname, module in model.named_modules():
        if isinstance(module, MuReadout):
            module.width_mult = infshapes[f"{mname}.weight" if mname else "weight"].fanin_mult
    if rescale_params:
        with torch.no_grad():
            for name, p in model.named_parameters():
                factor = init_multiplier(infos[name], sp_init)
                if factor != 1.0:
                    p.mul_(factor)
    return infshapes


def mup_param_groups(
    model: nn.Module,
    base_model,
    family: str = "adam",
    lr: float = 1e-3,
    *,
    parametrization: str = "mup",
    delta_model=None,
    weight_decay: float | None = None,
) -> list[dict]:
    """Parameter groups carrying the μP learning rate of every parameter.

    Pass the result to any optimizer, e.g.
    ``torch.optim.Adam(mup_param_groups(model, base, "adam", lr=1e-2))`` or a
    ``gd_lib.optim`` class. ``family`` names the multiplier family:
    ``"adam"`` for entrywise-normalised updates, ``"sgd"`` for updates linear
    in the gradient. Parameters sharing a multiplier share a group (groups in
    order of first appearance; parameters in ``model.parameters()`` order),
    so at the base width there is one group, exactly as SP. Each group has
    ``"lr"`` and, if ``weight_decay`` is given, ``"weight_decay"``.

    ``parametrization="sp"`` returns the SP groups: all parameters, one lr.
    Under μP the readouts must have been prepared by :func:`set_base_shapes`.
    """
    check_parametrization(parametrization)
    check_family(family)
    check_number("lr", lr, 0.0)
    if weight_decay is not None:
        check_number("weight_decay", weight_decay, 0.0)
    params = dict(model.named_parameters())

    def group(names: list[str], lr_mult: float, wd_mult: float) -> dict:
        # a multiplier of exactly 1 leaves lr untouched (bit-identical to SP at the base width)
        g = {"params": [params[n] for n in names], "lr": lr * lr_mult if lr_mult != 1.0 else lr}
        if weight_decay is not None:
            g["weight_decay"] = weight_decay * wd_mult if wd_mult != 1.0 else weight_decay
        return g

    if parametrization == "sp":
        return [group(list(params), 1.0, 1.0)]

    infshapes = get_infshapes(model, base_model, delta_model)
    infos = parameter_infos(model, infshapes)
    for mname, module in model.named_modules():
        if isinstance(module, MuReadout):
            expected = infshapes[f"{mname}.weight" if mname else "weight"].fanin_mult
            if module.width_mult != expected:
                raise ValueError(
                    f"MuReadout {mname!r} has width_mult={module.width_mult} but its fan-in "
                    f"multiplier is {expected}; call gd_lib.mup.set_base_shapes(model, base_model) first"
                )
    buckets: dict[tuple[float, float], list[str]] = {}
    for name in params:
        key = (lr_multiplier(infos[name], family), weight_decay_multiplier(infos[name], family))
        buckets.setdefault(key, []).append(name)
    return [group(names, *key) for key, names in buckets.items()]


def mup_table(
    model: nn.Module, base_model, family: str = "adam", delta_model=None, sp_init: str = "fan_in"
) -> list[dict]:
    """One row per parameter: name, shape, base shape, role, width
    multipliers, init multiplier and lr multiplier, to read μP off a model."""
    infos = parameter_infos(model, get_infshapes(model, base_model, delta_model))
    return [
        {
            "name": name,
            "shape": info.infshape.shape,
            "base_shape": info.infshape.base_shape,
            "role": info.role,
            "fanin_mult": info.infshape.fanin_mult,
            "fanout_mult": info.infshape.fanout_mult,
            "init_mult": init_multiplier(info, sp_init),
            "lr_mult": lr_multiplier(info, family),
        }
        for name, info in infos.items()
    ]


def attention_scale(head_dim: int, base_head_dim: int | None = None, parametrization: str = "mup") -> float:
    r"""The factor on ``q·k`` in attention logits ``softmax(scale · q k^T)``.

    SP: ``1/sqrt(d)``. μP: ``1/d`` times ``sqrt(d_0)`` when the base head
    dimension ``d_0`` is given, i.e. ``sqrt(d_0)/d``, which equals SP's
    ``1/sqrt(d_0)`` at the base width (Yang et al. 2022, Section 4 /
    Appendix; ``mup``'s ``attn_mult / d``).
    """
    check_parametrization(parametrization)
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    if parametrization == "sp":
        return 1.0 / math.sqrt(head_dim)
    if base_head_dim is None:
        return 1.0 / head_dim
    if base_head_dim < 1:
        raise ValueError(f"base_head_dim must be >= 1, got {base_head_dim}")
    return math.sqrt(base_head_dim) / head_dim
