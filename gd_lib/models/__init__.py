"""The models of the course: MLP, deep ReLU nets, a small CNN, a tiny transformer.

- :class:`MLP`             widths, activation, dropout, residual connections, named init
- :class:`DeepReLUNet`     ``depth`` ReLU layers of one ``width`` for the initialization lecture
- :class:`SmallCNN`        two convolutions for the 8×8 digits
- :class:`TinyTransformer` decoder-only, pre-LN, causal attention with ``attn_scale``
- :mod:`gd_lib.models.init` the named init schemes (``zeros``, ``constant``, ``normal``,
  ``xavier``, ``kaiming``, ``orthogonal``)
"""

from .cnn import SmallCNN
from .init import INIT_SCHEMES, init_layer_, init_weight_
from .mlp import ACTIVATIONS, MLP, DeepReLUNet
from .transformer import TinyTransformer, causal_attention

__all__ = [
    "MLP",
    "DeepReLUNet",
    "SmallCNN",
    "TinyTransformer",
    "causal_attention",
    "INIT_SCHEMES",
    "init_layer_",
    "init_weight_",
    "ACTIVATIONS",
]
