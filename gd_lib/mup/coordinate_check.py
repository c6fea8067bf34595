"""The coordinate check and the learning-rate sweep (Yang et al. 2022, Section 5 and Figure 1;
microsoft/mup's ``mup/coord_check.py``): train a model at several widths and measure how its layers'
outputs and its best learning rate change with width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gd_lib._checks import check_int

from .rules import check_family, check_parametrization, mup_param_groups, set_base_shapes
from .shapes import parameter_shapes

__all__ = ["coord_stats", "coord_check", "growth_ratio", "lr_sweep"]


def coord_stats(x: torch.Tensor) -> dict[str, float]:
    """Size of a typical coordinate of ``x``: ``l1 = mean |x_i|``,
    ``rms = sqrt(mean x_i²)`` (``mup.coord_check``'s ``l1`` and ``l2``)."""
    x = x.detach().float()
    return {"l1": x.abs().mean().item(), "rms": x.pow(2).mean().sqrt().item()}


def _build(
    make_model: Callable[[int], nn.Module], width: int, base_shapes, delta_shapes, parametrization: str, sp_init: str
) -> nn.Module:
    """``make_model(width)`` prepared for ``parametrization`` by :func:`set_base_shapes`."""
    model = make_model(width)
    set_base_shapes(model, base_shapes, delta_shapes, parametrization=parametrization, sp_init=sp_init)
    return model


def _reference_shapes(make_model: Callable[[int], nn.Module], base_width: int):
    """Parameter shapes of the base model and of a delta model (twice as wide),
    built under a forked RNG so that they consume none of the caller's draws."""
    with torch.random.fork_rng(devices=[]):
        base, delta = parameter_shapes(make_model(base_width)), parameter_shapes(make_model(2 * base_width))
    return base, delta


def _default_optimizer_cls(family: str):
    return torch.optim.Adam if family == "adam" else torch.optim.SGD


def _check_run(family: str, parametrization: str, steps: int, seeds) -> list:
    """Check the arguments of a run; the seeds as a list."""
    check_parametrization(parametrization)
    check_family(family)
    check_int("steps", steps, 1)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("Invalid seeds: []; expected at least one seed")
    return seeds


def _record_output(outputs: dict[str, torch.Tensor], name: str):
    """A forward hook that keeps a copy of its module's output in ``outputs[name]``."""

    def hook(module, inputs, output):
        outputs[name] = output.detach().clone()

    return hook


def _leaf_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if name and not list(m.children())]


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    base_width: int,
    parametrization: str = "mup",
    family: str = "adam",
    lr: float = 1e-2,
    steps: int = 5,
    seeds: Iterable[int] = (0,),
    loss_fn: Callable = F.cross_entropy,
    module_names: Sequence[str] | None = None,
    optimizer_cls=None,
    sp_init: str = "fan_in",
) -> dict:
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
    ``family`` picks the μP multiplier family (``"adam"`` or ``"sgd"``) and, unless ``optimizer_cls`` is given,
    the class (torch's Adam or SGD).
    ``module_names`` defaults to every leaf module.

    Returns a dict of numpy arrays: ``widths``, ``steps`` (0..steps),
    ``layers`` (names), ``loss[w, t]``, ``activation_l1``, ``activation_rms``,
    ``update_l1``, ``update_rms`` (each ``[w, l, t]``), plus
    ``parametrization`` and ``family``. Plot it with
    :func:`gd_lib.plotting.plot_coord_check`.
    """
    seeds = _check_run(family, parametrization, steps, seeds)
    widths = [int(w) for w in widths]
    optimizer_cls = optimizer_cls or _default_optimizer_cls(family)
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
            hooks = [modules[name].register_forward_hook(_record_output(outputs, name)) for name in layers]
            opt = optimizer_cls(
                mup_param_groups(
                    model, base_shapes, family, lr, parametrization=parametrization, delta_model=delta_shapes
                )
            )
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
    result.update(
        widths=np.array(widths),
        steps=np.arange(steps + 1),
        layers=list(layers),
        loss=loss_sum / n,
        parametrization=parametrization,
        family=family,
    )
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


def lr_sweep(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    lrs: Sequence[float],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    base_width: int,
    parametrization: str = "mup",
    family: str = "adam",
    steps: int = 20,
    seeds: Iterable[int] = (0,),
    loss_fn: Callable = F.cross_entropy,
    optimizer_cls=None,
    sp_init: str = "fan_in",
) -> dict:
    """Training loss after ``steps`` full-batch steps, for every (width, lr).

    The μTransfer experiment (Yang et al. 2022, Figure 1): under μP the best
    learning rate is the same at every width; under SP it drifts. A run that
    diverges (non-finite loss) counts as ``inf``.

    Returns a dict: ``widths``, ``lrs``, ``loss[w, i]`` (mean over seeds of
    the final training loss), ``best_lr[w]``, ``best_index[w]``, plus
    ``parametrization`` and ``family``. Plot it with
    :func:`gd_lib.plotting.plot_lr_sweep`.
    """
    seeds = _check_run(family, parametrization, steps, seeds)
    widths, lrs = [int(w) for w in widths], [float(x) for x in lrs]
    optimizer_cls = optimizer_cls or _default_optimizer_cls(family)
    base_shapes, delta_shapes = _reference_shapes(make_model, base_width)
    loss = np.zeros((len(widths), len(lrs)))
    for wi, width in enumerate(widths):
        for li, lr in enumerate(lrs):
            for seed in seeds:
                torch.manual_seed(seed)
                model = _build(make_model, width, base_shapes, delta_shapes, parametrization, sp_init)
                opt = optimizer_cls(
                    mup_param_groups(
                        model, base_shapes, family, lr, parametrization=parametrization, delta_model=delta_shapes
                    )
                )
                final = _train_full_batch(model, opt, inputs, targets, loss_fn, steps)
                loss[wi, li] += final if math.isfinite(final) else math.inf
    loss /= len(seeds)
    best_index = np.argmin(np.where(np.isfinite(loss), loss, np.inf), axis=1)
    return {
        "widths": np.array(widths),
        "lrs": np.array(lrs),
        "loss": loss,
        "best_index": best_index,
        "best_lr": np.array(lrs)[best_index],
        "parametrization": parametrization,
        "family": family,
    }


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
