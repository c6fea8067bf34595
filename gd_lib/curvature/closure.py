r"""Reading curvature off a training closure.

A torch closure (``opt.zero_grad(); loss = ...; loss.backward(); return loss``) frees the
autograd graph in ``backward()``, so the loss it returns cannot be differentiated again. The
second-order optimizers (:class:`gd_lib.optim.Newton`, :class:`gd_lib.optim.NaturalGradient`)
need that graph: they run the closure inside :func:`keep_graph`, which makes every
``backward()`` called in it keep the graph (``retain_graph=True``). Nothing else changes: the
closure still fills ``p.grad`` exactly as it would, and returns the same loss, now with a
live graph.

:func:`capture_outputs` records what a module returns during the closure (the model outputs
:math:`z` that the Fisher needs) with a forward hook that exists only inside the ``with`` block.

How :func:`keep_graph` works: a ``TorchFunctionMode`` sees every torch call made while it is
active; it passes all of them through unchanged, except ``Tensor.backward`` and
``torch.autograd.backward``, to which it adds ``retain_graph=True``. (The alternative, asking
users to write ``loss.backward(create_graph=True)`` in the closure as AdaHessian does, puts a
graph into ``p.grad`` and a reference cycle between a parameter and its gradient.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["keep_graph", "evaluate_keeping_graph", "capture_outputs"]

_BACKWARD_SIGNATURE = inspect.signature(torch.autograd.backward)


class keep_graph(TorchFunctionMode):
    """Inside ``with keep_graph():`` every ``backward()`` keeps its graph (``retain_graph=True``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.backward:
            kwargs["retain_graph"] = True
        elif func is torch.autograd.backward:
            bound = _BACKWARD_SIGNATURE.bind(*args, **kwargs)
            bound.arguments["retain_graph"] = True
            args, kwargs = bound.args, bound.kwargs
        return func(*args, **kwargs)


def evaluate_keeping_graph(closure: Callable[[], Tensor]) -> Tensor:
    """Call ``closure()`` with gradients on and graphs kept; its loss can be differentiated again."""
    with torch.enable_grad(), keep_graph():
        loss = closure()
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise RuntimeError("the closure must return the loss as a scalar tensor")
    if loss.grad_fn is None:
        raise RuntimeError(
            "the closure's loss has no graph: compute it with gradients enabled from the parameters being optimized"
        )
    return loss


@contextmanager
def capture_outputs(module: nn.Module) -> Iterator[list[Tensor]]:
    """Collect ``module``'s outputs (with their graphs) for the duration of the ``with`` block."""
    captured: list[Tensor] = []

    def hook(_module, _inputs, output):
        if not isinstance(output, Tensor):
            raise RuntimeError(
                f"capture_outputs: {type(_module).__name__} returned "
                f"{type(output).__name__}, expected a tensor of model outputs"
            )
        captured.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
