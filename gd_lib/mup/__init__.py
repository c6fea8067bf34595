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

The package follows the seams of microsoft/mup:

- :mod:`gd_lib.mup.shapes`: base shapes, which dimensions are widths and by
  how much they grew (``mup/infshape.py``, ``mup/shape.py``);
- :mod:`gd_lib.mup.readout`: :class:`MuReadout`, the output layer
  (``mup/layer.py``);
- :mod:`gd_lib.mup.rules`: each parameter's role and its init, learning-rate
  and weight-decay multipliers, :func:`set_base_shapes` that applies them to a
  model, parameter groups for any optimizer (``mup/optim.py``) and the
  attention scale;
- :mod:`gd_lib.mup.coordinate_check`: the coordinate check and the
  learning-rate sweep (``mup/coord_check.py``).

Everything is importable from ``gd_lib.mup``. "Family" (``family="adam"`` or
``"sgd"``) names which of the table's learning-rate columns applies.

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

from .coordinate_check import coord_check, coord_stats, growth_ratio, lr_sweep
from .readout import MuReadout
from .rules import (
    OPTIMIZER_FAMILIES,
    PARAMETRIZATIONS,
    ROLES,
    SP_INITS,
    ParamInfo,
    attention_scale,
    init_multiplier,
    lr_multiplier,
    mup_param_groups,
    mup_table,
    parameter_infos,
    parameter_role,
    set_base_shapes,
    weight_decay_multiplier,
)
from .shapes import InfDim, InfShape, get_infshapes, parameter_shapes, zip_infshape

__all__ = [
    # shapes
    "InfDim",
    "InfShape",
    "zip_infshape",
    "get_infshapes",
    "parameter_shapes",
    # readout
    "MuReadout",
    # rules
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
    # coordinate check
    "coord_stats",
    "coord_check",
    "growth_ratio",
    "lr_sweep",
]
