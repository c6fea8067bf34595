r"""μP, the maximal update parametrization, and the coordinate check.

A *parametrization* says how the initial scale, the forward multiplier and
the learning rate of each weight change with the width ``n`` of the network.
In the standard parametrization (SP) every weight is drawn with variance
``1/fan_in`` and every weight shares one learning rate; as ``n`` grows, the
change in a hidden layer's output after one Adam step grows like ``n``, so
the best learning rate shrinks with width. μP (Yang & Hu 2021) scales init
and learning rates per layer so that every layer's features move by Θ(1) per
step at every width, which makes the optimal hyperparameters of a small
*base* model transfer to a wide one (Yang et al. 2022, "μTransfer").

This module follows the conventions of the ``mup`` package (microsoft/mup)
without depending on it. Each dimension of a parameter is *finite* (the same
in the base model and a model of another width: a vocabulary, an input
dimension, a kernel size) or *infinite* (it scales with width). An infinite
dimension of size ``d`` whose size in the base model is ``d_0`` has *width
multiplier* ``m = d / d_0``. A parameter with two infinite dimensions is
*matrix-like* (hidden weights); one with a single infinite dimension is
*vector-like* (input weights, embeddings, biases, LayerNorm gains). The
*output* weights map the width to a finite number of outputs (infinite
fan-in, finite fan-out). With ``m_in`` / ``m_out`` the fan-in / fan-out
multipliers and ``m`` that of a vector-like parameter's infinite dimension,
the roles (:func:`parameter_role`) and their rules are:

=============  ===========================  ======================  ==================
role           init of the stored tensor     Adam-family lr          SGD-family lr
=============  ===========================  ======================  ==================
``hidden``     SP · ``1/sqrt(m_in)`` (const)  ``lr / m_in``           ``lr · m_out / m_in``
``vector``     SP                            ``lr``                  ``lr · m``
``output``     SP · ``1/sqrt(m_in)``          ``lr / m_in``           ``lr / m_in``
               (const: ``· 1/m_in``)
``readout``    SP · ``sqrt(m_in)`` (const: 1) ``lr``                  ``lr · m_in``
               and forward ``x / m_in``
``finite``     SP                            ``lr``                  ``lr``
=============  ===========================  ======================  ==================

``output`` is a plain ``nn.Linear`` output layer (as in ``gd_lib.models``):
the direct form of Table 3 of Yang et al. (2022), output weights of variance
``∝ 1/fan_in²`` trained with an ``1/fan_in`` learning rate. ``readout`` is
the weight of a :class:`MuReadout`, the ``mup`` package's equivalent form
(its Table 8): the stored weight keeps SP size and the layer multiplies its
input by ``output_mult / m_in``, so the *effective* weight ``W / m_in`` has
the same μP scale and, for Adam, the same updates. Biases of layers with an
infinite fan-in are drawn ``∝ 1/sqrt(fan_in)`` by torch and are multiplied by
``sqrt(m_in)`` so that they stay Θ(1).

"SP" is the model's own initialization. ``sp_init="fan_in"`` (default)
assumes it has standard deviation ``∝ 1/sqrt(fan_in)`` (torch's default, He /
Kaiming), which is already μP for hidden weights; ``sp_init="constant"``
assumes a width-independent standard deviation (GPT-2's ``N(0, 0.02²)``),
where the hidden weights need the ``1/sqrt(m_in)`` written "(const)" above.
Weight decay is scaled inversely to the learning rate (``mup.optim``).
"Adam-family" means any optimizer that normalises the gradient entrywise
(Adam, AdamW, RMSprop, Adagrad, sign descent), "SGD-family" one whose update
is linear in the gradient (SGD, momentum).

Attention logits use ``1/d`` instead of ``1/sqrt(d)`` (:func:`attention_scale`):
after training, queries and keys are correlated, so ``q·k`` grows like ``d``
and only ``1/d`` keeps the logits Θ(1).

At the base width every multiplier is exactly 1, so μP *is* SP there: same
init draws, same learning rates, the same trajectory bit for bit. This is
how the base model's tuned hyperparameters carry over.

The standard parametrization goes through the same API
(``parametrization="sp"``): no rescaling, one learning rate.

References
----------
- G. Yang, E. J. Hu. "Feature Learning in Infinite-Width Neural Networks"
  (Tensor Programs IV), ICML 2021.
- G. Yang, E. J. Hu, I. Babuschkin, S. Sidor, X. Liu, D. Farhi, N. Ryder,
  J. Pachocki, W. Chen, J. Gao. "Tensor Programs V: Tuning Large Neural
  Networks via Zero-Shot Hyperparameter Transfer", 2022 (arXiv:2203.03466);
  Table 3 (μP), Table 8 (the ``MuReadout`` form), Section 5 (coordinate check).
- microsoft/mup: ``mup/infshape.py``, ``mup/shape.py``, ``mup/layer.py``,
  ``mup/optim.py``, ``mup/coord_check.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "InfDim",
    "InfShape",
    "MuReadout",
    "PARAMETRIZATIONS",
    "OPTIMIZER_FAMILIES",
    "zip_infshape",
    "get_infshapes",
    "set_base_shapes",
    "ROLES",
    "SP_INITS",
    "ParamInfo",
    "parameter_role",
    "parameter_infos",
    "init_multiplier",
    "lr_multiplier",
    "weight_decay_multiplier",
    "mup_param_groups",
    "mup_table",
    "attention_scale",
    "coord_stats",
    "coord_check",
    "growth_ratio",
    "lr_sweep",
]

PARAMETRIZATIONS = ("mup", "sp")
OPTIMIZER_FAMILIES = ("adam", "sgd")


# --------------------------------------------------------------------------
# Base shapes: which dimensions are "width", and by how much they grew
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class InfDim:
    """One dimension of a parameter: its size ``dim`` and, if it is a width
    ("infinite") dimension, its size ``base_dim`` in the base model.

    ``base_dim is None`` marks a finite dimension. ``width_mult`` is
    ``dim / base_dim`` for an infinite dimension and 1 for a finite one.
    """

    base_dim: int | None
    dim: int

    @property
    def isinf(self) -> bool:
        return self.base_dim is not None

    @property
    def width_mult(self) -> float:
        return self.dim / self.base_dim if self.isinf else 1.0


@dataclass(frozen=True)
class InfShape:
    """A parameter's dimensions as :class:`InfDim` s (``mup``'s ``infshape``).

    For a weight of shape ``(fan_out, fan_in, *kernel)`` the fan-out is
    ``dims[0]`` and the fan-in ``dims[1]``. The *main* dimension, whose
    multiplier is :attr:`width_mult`, is the last infinite one: the fan-in of
    a hidden weight, the only infinite dimension of a vector-like parameter.
    """

    dims: tuple[InfDim, ...]

    @property
    def ninf(self) -> int:
        """Number of infinite dimensions: 0 finite, 1 vector-like, 2 matrix-like."""
        return sum(d.isinf for d in self.dims)

    @property
    def width_mult(self) -> float:
        for d in reversed(self.dims):
            if d.isinf:
                return d.width_mult
        return 1.0

    @property
    def fanin_mult(self) -> float:
        return self.dims[1].width_mult if len(self.dims) >= 2 else 1.0

    @property
    def fanout_mult(self) -> float:
        return self.dims[0].width_mult if len(self.dims) >= 1 else 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.dim for d in self.dims)

    @property
    def base_shape(self) -> tuple[int | None, ...]:
        return tuple(d.base_dim for d in self.dims)


def zip_infshape(base_shape: Sequence[int], shape: Sequence[int],
                 delta_shape: Sequence[int] | None = None) -> InfShape:
    """Pair a base shape with a target shape.

    A dimension is infinite when it differs between the base and the *delta*
    shape (a second model of another width, used only to tell which
    dimensions are widths), or, without a delta, between base and target.
    Without a delta, a model *at* the base width therefore has no infinite
    dimensions, which changes nothing: all its multipliers are 1 either way.
    """
    base_shape, shape = tuple(base_shape), tuple(shape)
    reference = shape if delta_shape is None else tuple(delta_shape)
    if not (len(base_shape) == len(shape) == len(reference)):
        raise ValueError(
            f"shapes have different numbers of dimensions: base {base_shape}, "
            f"target {shape}" + ("" if delta_shape is None else f", delta {reference}"))
    dims = tuple(InfDim(b if b != r else None, d)
                 for b, d, r in zip(base_shape, shape, reference))
    return InfShape(dims)


def _shapes(x) -> dict[str, tuple[int, ...]]:
    """Parameter shapes by name, from a model or a dict of shapes/InfShapes."""
    if isinstance(x, nn.Module):
        return {name: tuple(p.shape) for name, p in x.named_parameters()}
    if isinstance(x, Mapping):
        return {name: (s.shape if isinstance(s, InfShape) else tuple(s))
                for name, s in x.items()}
    raise TypeError(f"expected an nn.Module or a dict of shapes, got {type(x).__name__}")


def get_infshapes(model, base_model, delta_model=None) -> dict[str, InfShape]:
    """The :class:`InfShape` of each of ``model``'s parameters, by name.

    ``base_model`` and ``delta_model`` may be models (only their parameter
    shapes are read; build them on the ``meta`` device to spend no memory) or
    dicts of shapes. If ``base_model`` is a dict of :class:`InfShape` (the
    result of an earlier call) it is returned re-zipped against ``model``.
    """
    if isinstance(base_model, Mapping) and base_model and all(
            isinstance(s, InfShape) for s in base_model.values()):
        target = _shapes(model)
        _check_names(base_model.keys(), target.keys())
        out = {}
        for name, infshape in base_model.items():
            dims = tuple(InfDim(d.base_dim, n) for d, n in zip(infshape.dims, target[name]))
            out[name] = InfShape(dims)
        return out
    base, target = _shapes(base_model), _shapes(model)
    delta = _shapes(delta_model) if delta_model is not None else None
    _check_names(base.keys(), target.keys())
    if delta is not None:
        _check_names(base.keys(), delta.keys())
    return {name: zip_infshape(base[name], target[name], None if delta is None else delta[name])
            for name in target}


def _check_names(base_names, names) -> None:
    base_names, names = set(base_names), set(names)
    if base_names != names:
        raise ValueError(
            f"base and target models have different parameters: only in base "
            f"{sorted(base_names - names)}, only in target {sorted(names - base_names)}")


def _check_parametrization(parametrization: str) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")


def _check_family(optimizer: str) -> None:
    if optimizer not in OPTIMIZER_FAMILIES:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_FAMILIES} (the multiplier family), "
                         f"got {optimizer!r}")


# --------------------------------------------------------------------------
# The output layer
# --------------------------------------------------------------------------

class MuReadout(nn.Linear):
    r"""Output layer of a μP network: ``y = W (output_mult · x / m) + b``.

    A drop-in replacement for the last ``nn.Linear`` (width → a fixed number
    of outputs). ``width_mult`` (``m``, the fan-in's width multiplier) is 1
    when the layer is built, so until :func:`set_base_shapes` is called the
    layer is exactly an ``nn.Linear`` (that is SP). :func:`set_base_shapes`
    sets ``m`` and (for a fan-in-scaled SP init) rescales ``W`` and ``b`` by
    ``sqrt(m)``, after which the
    effective weight ``W / m`` has variance ``1/(3·fan_in·m)``: the μP scale
    ``∝ 1/n²``.

    ``readout_zero_init=True`` zeroes ``W`` and ``b`` after drawing them, so
    that the random draws of every other layer stay the same as without it.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 output_mult: float = 1.0, readout_zero_init: bool = False,
                 device=None, dtype=None):
        self.output_mult = float(output_mult)
        self.readout_zero_init = bool(readout_zero_init)
        self.width_mult = 1.0
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.readout_zero_init:
            with torch.no_grad():
                self.weight.zero_()
                if self.bias is not None:
                    self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.output_mult / self.width_mult
        # scale == 1.0 leaves x unchanged, so at the base width this is nn.Linear bit for bit
        return F.linear(x * scale if scale != 1.0 else x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", output_mult={self.output_mult}, "
                f"width_mult={self.width_mult}, readout_zero_init={self.readout_zero_init}")


# --------------------------------------------------------------------------
# Per-parameter rules
# --------------------------------------------------------------------------

ROLES = ("hidden", "vector", "output", "readout", "finite")
SP_INITS = ("fan_in", "constant")


@dataclass(frozen=True)
class ParamInfo:
    """What μP needs to know about one parameter: its :class:`InfShape`, its
    role (one of :data:`ROLES`) and, for the bias of a linear/conv layer, the
    layer's fan-in multiplier."""

    name: str
    infshape: InfShape
    role: str
    layer_bias_fanin_mult: float | None = None


def parameter_role(infshape: InfShape, *, is_readout: bool = False,
                   is_output: bool = False) -> str:
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
                role = parameter_role(shape, is_readout=isinstance(module, MuReadout),
                                      is_output=isinstance(module, nn.Linear))
                infos[name] = ParamInfo(name, shape, role)
            elif is_layer and pname == "bias":
                fanin = infshapes[prefix + "weight"].fanin_mult
                infos[name] = ParamInfo(name, shape, parameter_role(shape), fanin)
            else:
                infos[name] = ParamInfo(name, shape, parameter_role(shape))
    return infos


def init_multiplier(info: ParamInfo, sp_init: str = "fan_in") -> float:
    """Factor that turns the SP-initialised stored tensor into its μP init."""
    if sp_init not in SP_INITS:
        raise ValueError(f"sp_init must be one of {SP_INITS}, got {sp_init!r}")
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


def lr_multiplier(info: ParamInfo, optimizer: str = "adam") -> float:
    """Factor on the learning rate of one parameter under μP (module docstring table)."""
    _check_family(optimizer)
    shape, role = info.infshape, info.role
    if role == "hidden":
        return 1.0 / shape.fanin_mult if optimizer == "adam" else shape.fanout_mult / shape.fanin_mult
    if role == "output":
        return 1.0 / shape.fanin_mult
    if role == "readout":
        return 1.0 if optimizer == "adam" else shape.fanin_mult
    if role == "vector":
        return 1.0 if optimizer == "adam" else shape.width_mult
    return 1.0


def weight_decay_multiplier(info: ParamInfo, optimizer: str = "adam") -> float:
    """Factor on the (coupled) weight decay: the inverse of :func:`lr_multiplier`,
    so that ``lr · weight_decay`` is the same at every width (``mup.optim``)."""
    return 1.0 / lr_multiplier(info, optimizer)


def set_base_shapes(model: nn.Module, base_model, delta_model=None, *,
                    parametrization: str = "mup", sp_init: str = "fan_in",
                    rescale_params: bool = True) -> dict[str, InfShape]:
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
    _check_parametrization(parametrization)
    if sp_init not in SP_INITS:
        raise ValueError(f"sp_init must be one of {SP_INITS}, got {sp_init!r}")
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


def mup_param_groups(model: nn.Module, base_model, optimizer: str = "adam", lr: float = 1e-3, *,
                     parametrization: str = "mup", delta_model=None,
                     weight_decay: float | None = None) -> list[dict]:
    """Parameter groups carrying the μP learning rate of every parameter.

    Pass the result to any optimizer, e.g.
    ``torch.optim.Adam(mup_param_groups(model, base, "adam", lr=1e-2))`` or a
    ``gd_lib.optim`` class. ``optimizer`` names the multiplier family:
    ``"adam"`` for entrywise-normalised updates, ``"sgd"`` for updates linear
    in the gradient. Parameters sharing a multiplier share a group (groups in
    order of first appearance; parameters in ``model.parameters()`` order),
    so at the base width there is one group, exactly as SP. Each group has
    ``"lr"`` and, if ``weight_decay`` is given, ``"weight_decay"``.

    ``parametrization="sp"`` returns the SP groups: all parameters, one lr.
    Under μP the readouts must have been prepared by :func:`set_base_shapes`.
    """
    _check_parametrization(parametrization)
    _check_family(optimizer)
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr >= 0):
        raise ValueError(f"lr must be a number >= 0, got {lr!r}")
    if weight_decay is not None and not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
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
                    f"multiplier is {expected}; call gd_lib.mup.set_base_shapes(model, base_model) first")
    buckets: dict[tuple[float, float], list[str]] = {}
    for name in params:
        key = (lr_multiplier(infos[name], optimizer), weight_decay_multiplier(infos[name], optimizer))
        buckets.setdefault(key, []).append(name)
    return [group(names, *key) for key, names in buckets.items()]


def mup_table(model: nn.Module, base_model, optimizer: str = "adam", delta_model=None,
              sp_init: str = "fan_in") -> list[dict]:
    """One row per parameter: name, shape, base shape, role, width
    multipliers, init multiplier and lr multiplier, to read μP off a model."""
    infos = parameter_infos(model, get_infshapes(model, base_model, delta_model))
    return [{"name": name,
             "shape": info.infshape.shape,
             "base_shape": info.infshape.base_shape,
             "role": info.role,
             "fanin_mult": info.infshape.fanin_mult,
             "fanout_mult": info.infshape.fanout_mult,
             "init_mult": init_multiplier(info, sp_init),
             "lr_mult": lr_multiplier(info, optimizer)}
            for name, info in infos.items()]


def attention_scale(head_dim: int, base_head_dim: int | None = None,
                    parametrization: str = "mup") -> float:
    r"""The factor on ``q·k`` in attention logits ``softmax(scale · q k^T)``.

    SP: ``1/sqrt(d)``. μP: ``1/d`` times ``sqrt(d_0)`` when the base head
    dimension ``d_0`` is given, i.e. ``sqrt(d_0)/d``, which equals SP's
    ``1/sqrt(d_0)`` at the base width (Yang et al. 2022, Section 4 /
    Appendix; ``mup``'s ``attn_mult / d``).
    """
    _check_parametrization(parametrization)
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    if parametrization == "sp":
        return 1.0 / math.sqrt(head_dim)
    if base_head_dim is None:
        return 1.0 / head_dim
    if base_head_dim < 1:
        raise ValueError(f"base_head_dim must be >= 1, got {base_head_dim}")
    return math.sqrt(base_head_dim) / head_dim


# --------------------------------------------------------------------------
# Coordinate check and learning-rate sweep
# --------------------------------------------------------------------------

def coord_stats(x: torch.Tensor) -> dict[str, float]:
    """Size of a typical coordinate of ``x``: ``l1 = mean |x_i|``,
    ``rms = sqrt(mean x_i²)`` (``mup.coord_check``'s ``l1`` and ``l2``)."""
    x = x.detach().float()
    return {"l1": x.abs().mean().item(), "rms": x.pow(2).mean().sqrt().item()}


def _build(make_model: Callable[[int], nn.Module], width: int, base_shapes, delta_shapes,
           parametrization: str, sp_init: str) -> nn.Module:
    """``make_model(width)`` prepared for ``parametrization`` by :func:`set_base_shapes`."""
    model = make_model(width)
    set_base_shapes(model, base_shapes, delta_shapes, parametrization=parametrization,
                    sp_init=sp_init)
    return model


def _reference_shapes(make_model: Callable[[int], nn.Module], base_width: int):
    """Parameter shapes of the base model and of a delta model (twice as wide),
    built under a forked RNG so that they consume none of the caller's draws."""
    with torch.random.fork_rng(devices=[]):
        base, delta = _shapes(make_model(base_width)), _shapes(make_model(2 * base_width))
    return base, delta


def _default_optimizer_cls(optimizer: str):
    return torch.optim.Adam if optimizer == "adam" else torch.optim.SGD


def _leaf_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if name and not list(m.children())]


def coord_check(make_model: Callable[[int], nn.Module], widths: Sequence[int],
                inputs: torch.Tensor, targets: torch.Tensor, *, base_width: int,
                parametrization: str = "mup", optimizer: str = "adam", lr: float = 1e-2,
                steps: int = 5, seeds: Iterable[int] = (0,),
                loss_fn: Callable = F.cross_entropy, module_names: Sequence[str] | None = None,
                optimizer_cls=None, sp_init: str = "fan_in") -> dict:
    r"""Train ``make_model(width)`` for a few steps at each width and record
    how big each layer's output coordinates are (Yang et al. 2022, Section 5).

    At step ``t = 0..steps`` (``t`` updates done) every recorded module's
    output ``h_t`` on the fixed batch ``inputs`` is measured by
    :func:`coord_stats`:

    - ``activation_*[w, l, t]`` = size of ``h_t`` (l1 or rms),
    - ``update_*[w, l, t]`` = size of ``h_t - h_0``, how far training moved
      the layer's features (0 at ``t = 0``).

    Under μP both are flat in width; under SP the updates of hidden and output
    layers grow like the width (with Adam). Values are averaged over
    ``seeds`` (each seeds ``torch.manual_seed`` before building the model).

    ``make_model(width)`` builds the model (its output layer a plain
    ``nn.Linear`` or a :class:`MuReadout`); the base model is
    ``make_model(base_width)`` and the delta model ``make_model(2 * base_width)``,
    both built under a forked RNG. ``sp_init`` is passed to
    :func:`set_base_shapes`.
    ``optimizer`` picks the μP multiplier family and, unless
    ``optimizer_cls`` is given, the class (torch's Adam or SGD).
    ``module_names`` defaults to every leaf module.

    Returns a dict of numpy arrays: ``widths``, ``steps`` (0..steps),
    ``layers`` (names), ``loss[w, t]``, ``activation_l1``, ``activation_rms``,
    ``update_l1``, ``update_rms`` (each ``[w, l, t]``), plus
    ``parametrization`` and ``optimizer``. Plot it with
    :func:`gd_lib.plotting.plot_coord_check`.
    """
    _check_parametrization(parametrization)
    _check_family(optimizer)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    widths = [int(w) for w in widths]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    optimizer_cls = optimizer_cls or _default_optimizer_cls(optimizer)
    base_shapes, delta_shapes = _reference_shapes(make_model, base_width)
    stat_names = ("activation_l1", "activation_rms", "update_l1", "update_rms")
    layers: list[str] | None = list(module_names) if module_names is not None else None
    sums: dict[str, np.ndarray] = {}
    loss_sum = np.zeros((len(widths), steps + 1))

    for wi, width in enumerate(widths):
        for seed in seeds:
            torch.manual_seed(seed)
            model = _build(make_model, width, base_shapes, delta_shapes, parametrization, sp_init)
            model.train()
            if layers is None:
                layers = _leaf_modules(model)
            if not sums:
                sums = {k: np.zeros((len(widths), len(layers), steps + 1)) for k in stat_names}
            modules = dict(model.named_modules())
            missing = [n for n in layers if n not in modules]
            if missing:
                raise ValueError(f"modules not found in the model: {missing}")
            outputs: dict[str, torch.Tensor] = {}
            hooks = [modules[name].register_forward_hook(
                (lambda n: lambda mod, inp, out: outputs.__setitem__(n, out.detach().clone()))(name))
                for name in layers]
            opt = optimizer_cls(mup_param_groups(model, base_shapes, optimizer, lr,
                                                 parametrization=parametrization,
                                                 delta_model=delta_shapes))
            first: dict[str, torch.Tensor] = {}
            try:
                for t in range(steps + 1):
                    # forward on the fixed batch, recording every layer's output h_t
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(inputs), targets)
                    loss_sum[wi, t] += loss.item()
                    for li, name in enumerate(layers):
                        h = outputs[name]
                        if t == 0:
                            first[name] = h
                        act, upd = coord_stats(h), coord_stats(h - first[name])
                        sums["activation_l1"][wi, li, t] += act["l1"]
                        sums["activation_rms"][wi, li, t] += act["rms"]
                        sums["update_l1"][wi, li, t] += upd["l1"]
                        sums["update_rms"][wi, li, t] += upd["rms"]
                    if t < steps:
                        # one optimizer step: h_t -> h_{t+1}
                        loss.backward()
                        opt.step()
            finally:
                for h in hooks:
                    h.remove()

    n = len(seeds)
    result = {k: v / n for k, v in sums.items()}
    result.update(widths=np.array(widths), steps=np.arange(steps + 1), layers=list(layers),
                  loss=loss_sum / n, parametrization=parametrization, optimizer=optimizer)
    return result


def growth_ratio(result: Mapping, stat: str = "update_l1") -> np.ndarray:
    """``stat`` at the largest width divided by ``stat`` at the smallest, per
    layer and step (``[l, t]``); ~1 means flat in width. Steps where the
    smallest width's value is 0 (the update at ``t = 0``) give ``nan``."""
    values = np.asarray(result[stat], dtype=float)
    widths = np.asarray(result["widths"])
    lo, hi = int(np.argmin(widths)), int(np.argmax(widths))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = values[hi] / values[lo]
    ratio[values[lo] == 0] = np.nan
    return ratio


def lr_sweep(make_model: Callable[[int], nn.Module], widths: Sequence[int], lrs: Sequence[float],
             inputs: torch.Tensor, targets: torch.Tensor, *, base_width: int,
             parametrization: str = "mup", optimizer: str = "adam", steps: int = 20,
             seeds: Iterable[int] = (0,), loss_fn: Callable = F.cross_entropy,
             optimizer_cls=None, sp_init: str = "fan_in") -> dict:
    """Training loss after ``steps`` full-batch steps, for every (width, lr).

    The μTransfer experiment (Yang et al. 2022, Figure 1): under μP the best
    learning rate is the same at every width; under SP it drifts. A run that
    diverges (non-finite loss) counts as ``inf``.

    Returns a dict: ``widths``, ``lrs``, ``loss[w, i]`` (mean over seeds of
    the final training loss), ``best_lr[w]``, ``best_index[w]``, plus
    ``parametrization`` and ``optimizer``. Plot it with
    :func:`gd_lib.plotting.plot_lr_sweep`.
    """
    _check_parametrization(parametrization)
    _check_family(optimizer)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    widths, lrs, seeds = [int(w) for w in widths], [float(x) for x in lrs], list(seeds)
    optimizer_cls = optimizer_cls or _default_optimizer_cls(optimizer)
    base_shapes, delta_shapes = _reference_shapes(make_model, base_width)
    loss = np.zeros((len(widths), len(lrs)))
    for wi, width in enumerate(widths):
        for li, lr in enumerate(lrs):
            for seed in seeds:
                torch.manual_seed(seed)
                model = _build(make_model, width, base_shapes, delta_shapes, parametrization, sp_init)
                opt = optimizer_cls(mup_param_groups(model, base_shapes, optimizer, lr,
                                                     parametrization=parametrization,
                                                     delta_model=delta_shapes))
                final = _train_full_batch(model, opt, inputs, targets, loss_fn, steps)
                loss[wi, li] += final if math.isfinite(final) else math.inf
    loss /= len(seeds)
    best_index = np.argmin(np.where(np.isfinite(loss), loss, np.inf), axis=1)
    return {"widths": np.array(widths), "lrs": np.array(lrs), "loss": loss,
            "best_index": best_index, "best_lr": np.array(lrs)[best_index],
            "parametrization": parametrization, "optimizer": optimizer}


def _train_full_batch(model, opt, inputs, targets, loss_fn, steps: int) -> float:
    """``steps`` optimizer steps on one batch; the loss after the last one."""
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(loss_fn(model(inputs), targets))
