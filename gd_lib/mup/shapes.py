"""Base shapes: which dimensions of each parameter are widths, and by how much they grew.

A dimension is *finite* (the same in the base model and a model of another
width) or *infinite* (it scales with width, by the *width multiplier*
``m = d / d_0``); :func:`get_infshapes` reads them off a model, its base model
and optionally a delta model (microsoft/mup's ``infshape.py`` and ``shape.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["InfDim", "InfShape", "zip_infshape", "parameter_shapes", "get_infshapes"]


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


def zip_infshape(base_shape: Sequence[int], shape: Sequence[int], delta_shape: Sequence[int] | None = None) -> InfShape:
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
            f"target {shape}" + ("" if delta_shape is None else f", delta {reference}")
        )
    dims = tuple(InfDim(b if b != r else None, d) for b, d, r in zip(base_shape, shape, reference))
    return InfShape(dims)


def parameter_shapes(x) -> dict[str, tuple[int, ...]]:
    """Parameter shapes by name, from a model (only the shapes are read) or a dict of shapes or
    :class:`InfShape` s."""
    if isinstance(x, nn.Module):
        return {name: tuple(p.shape) for name, p in x.named_parameters()}
    if isinstance(x, Mapping):
        return {name: (s.shape if isinstance(s, InfShape) else tuple(s)) for name, s in x.items()}
    raise TypeError(f"expected an nn.Module or a dict of shapes, got {type(x).__name__}")


def get_infshapes(model, base_model, delta_model=None) -> dict[str, InfShape]:
    """The :class:`InfShape` of each of ``model``'s parameters, by name.

    ``base_model`` and ``delta_model`` may be models (only their parameter
    shapes are read; build them on the ``meta`` device to spend no memory) or
    dicts of shapes. If ``base_model`` is a dict of :class:`InfShape` (the
    result of an earlier call) it is returned re-zipped against ``model``.
    """
    if isinstance(base_model, Mapping) and base_model and all(isinstance(s, InfShape) for s in base_model.values()):
        target = parameter_shapes(model)
        _check_names(base_model.keys(), target.keys())
        out = {}
        for name, infshape in base_model.items():
            dims = tuple(InfDim(d.base_dim, n) for d, n in zip(infshape.dims, target[name]))
            out[name] = InfShape(dims)
        return out
    base, target = parameter_shapes(base_model), parameter_shapes(model)
    delta = parameter_shapes(delta_model) if delta_model is not None else None
    _check_names(base.keys(), target.keys())
    if delta is not None:
        _check_names(base.keys(), delta.keys())
    return {name: zip_infshape(base[name], target[name], None if delta is None else delta[name]) for name in target}


def _check_names(base_names, names) -> None:
    base_names, names = set(base_names), set(names)
    if base_names != names:
        raise ValueError(
            f"base and target models have different parameters: only in base "
            f"{sorted(base_names - names)}, only in target {sorted(names - base_names)}"
        )
