"""Multilayer perceptrons: the MLP of the course and deep fully-connected ReLU nets.

An MLP with hidden widths ``n_1, ..., n_L`` computes

.. math::

    h_0 = x, \\qquad
    h_\\ell = \\phi(W_\\ell h_{\\ell-1} + b_\\ell) \\;(+\\, h_{\\ell-1} \\text{ if residual and the widths match}),
    \\qquad f(x) = \\alpha_{out} (W_{L+1} h_L + b_{L+1}),

with ``φ`` the activation (``activation``), optional dropout after each
``φ``, and ``α_out`` = ``output_multiplier`` (1 by default; μP changes it).

The linear layers are ``model.layers`` in order; each has a *role* that μP
needs: ``"input"`` (the first, ``in_features → n_1``), ``"hidden"``
(``n_{ℓ-1} → n_ℓ``) and ``"output"`` (the last, ``n_L → out_features``), see
:meth:`MLP.layer_roles`. ``init`` names a scheme of :mod:`gd_lib.models.init`
applied to every layer, then ``init_hook(model)`` runs, so that e.g.
``gd_lib.mup`` can re-initialize layers by role and set the multipliers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .init import check_init, init_layer_

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
    "linear": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """A fully-connected network ``in_features → widths... → out_features``.

    Args:
        in_features: input dimension (inputs with more than 2 dims are flattened).
        widths: the hidden widths ``n_1, ..., n_L`` (may be empty: a linear model).
        out_features: output dimension.
        activation: ``"relu"``, ``"tanh"``, ``"gelu"``, ``"silu"``, ``"sigmoid"``,
            ``"leaky_relu"`` or ``"identity"``.
        dropout: dropout probability after each hidden activation, in [0, 1).
        residual: add a skip connection ``h_ℓ += h_{ℓ-1}`` around every hidden
            layer whose input and output widths are equal.
        bias: whether the linear layers have biases.
        init: a scheme of :mod:`gd_lib.models.init` (``"default"`` keeps torch's).
        sigma: the scheme's scale σ (None: the scheme's default).
        init_hook: called as ``init_hook(model)`` after ``init``.
        output_multiplier: ``α_out``, a plain float multiplying the output.
        generator: torch.Generator for the random init (None: the global RNG).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        residual: bool = False,
        bias: bool = True,
        init: str = "default",
        sigma: float | None = None,
        init_hook: Callable[[MLP], None] | None = None,
        output_multiplier: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        widths = list(widths)
        for name, value in [("in_features", in_features), ("out_features", out_features)] + [
            (f"widths[{i}]", w) for i, w in enumerate(widths)
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r}; expected an integer >= 1")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"Invalid dropout: {dropout!r}; expected a number in [0, 1)")
        check_init(init, sigma)
        make_activation(activation)  # validates the name

        self.in_features, self.widths, self.out_features = in_features, widths, out_features
        self.activation_name, self.residual = activation, residual
        self.output_multiplier = float(output_multiplier)
        dims = [in_features] + widths + [out_features]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1], bias=bias) for i in range(len(dims) - 1))
        self.activations = nn.ModuleList(make_activation(activation) for _ in widths)
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity() for _ in widths)
        self.reset_parameters(init, sigma, generator)
        if init_hook is not None:
            init_hook(self)

    def reset_parameters(
        self, init: str = "default", sigma: float | None = None, generator: torch.Generator | None = None
    ) -> None:
        """Re-initialize every linear layer by the named scheme."""
        for layer in self.layers:
            init_layer_(layer, init, sigma, generator)

    # --- roles, for μP and the lectures ------------------------------------------------
    def layer_roles(self) -> list[tuple[str, nn.Linear, str]]:
        """``[(name, layer, role)]`` with role ``"input"``, ``"hidden"`` or ``"output"``.

        With no hidden layer the single layer is both; it is reported as ``"output"``.
        """
        n = len(self.layers)
        roles = []
        for i, layer in enumerate(self.layers):
            role = "output" if i == n - 1 else ("input" if i == 0 else "hidden")
            roles.append((f"layers.{i}", layer, role))
        return roles

    @property
    def input_layer(self) -> nn.Linear:
        return self.layers[0]

    @property
    def hidden_layers(self) -> list[nn.Linear]:
        return list(self.layers[1:-1])

    @property
    def output_layer(self) -> nn.Linear:
        return self.layers[-1]

    # --- forward -------------------------------------------------------------------------
    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(f(x), [h_1, ..., h_L])``: the output and every hidden activation."""
        h = x.flatten(1) if x.dim() > 2 else x
        hidden = []
        for i in range(len(self.widths)):
            # h_ℓ = φ(W_ℓ h_{ℓ-1} + b_ℓ), then dropout, then the optional skip
            z = self.dropouts[i](self.activations[i](self.layers[i](h)))
            h = h + z if self.residual and z.shape == h.shape else z
            hidden.append(h)
        # f(x) = α_out (W_{L+1} h_L + b_{L+1})
        out = self.layers[-1](h)
        if self.output_multiplier != 1.0:
            out = out * self.output_multiplier
        return out, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_hidden(x)[0]

    def extra_repr(self) -> str:
        return (
            f"widths={self.widths}, activation={self.activation_name!r}, residual={self.residual}, "
            f"output_multiplier={self.output_multiplier}"
        )


class DeepReLUNet(MLP):
    """A fully-connected ReLU net of ``depth`` hidden layers, all of width ``width``.

    The net of the initialization lecture: ``init`` picks the scheme (default
    ``"kaiming"``, under which the second moment of each layer's
    pre-activations stays constant with depth), ``sigma`` its scale, and
    ``init_hook`` lets μP take over. Everything else is :class:`MLP`.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        *,
        init: str = "kaiming",
        sigma: float | None = None,
        bias: bool = True,
        residual: bool = False,
        init_hook: Callable[[MLP], None] | None = None,
        output_multiplier: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"Invalid depth: {depth!r}; expected an integer >= 0")
        super().__init__(
            in_features,
            [width] * depth,
            out_features,
            activation="relu",
            residual=residual,
            bias=bias,
            init=init,
            sigma=sigma,
            init_hook=init_hook,
            output_multiplier=output_multiplier,
            generator=generator,
        )
        self.width, self.depth = width, depth
