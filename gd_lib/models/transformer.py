"""A tiny decoder-only transformer (GPT-style, pre-LayerNorm) for grokking and language modelling.

For tokens ``t_1..t_T`` with embedding ``E`` (``vocab × d``) and learned
positions ``P`` (``context × d``)::

    x_0 = E[t] + P[:T]
    for each block ℓ = 1..depth:
        x ← x + Attn(LN_1(x))          # causal multi-head self-attention
        x ← x + MLP(LN_2(x))           # d → mlp_ratio·d → d, GELU
    logits = α_out · LN_f(x) Wᵀ        # W = E when tie_weights, else its own matrix

Each head ``h`` of width ``d_h = d / heads`` computes

.. math::

    \\mathrm{Attn}_h(X) = \\mathrm{softmax}\\big(s\\, Q_h K_h^\\top + M\\big) V_h,
    \\qquad M_{ij} = -\\infty \\text{ for } j > i \\text{ (causal mask)},

with ``s`` = ``attn_scale``: ``1/√d_h`` by default (Vaswani et al., 2017);
μP uses ``1/d_h`` (Yang et al., 2021, Tensor Programs V, §4).

:func:`causal_attention` is the readable reference; the module uses
``torch.nn.functional.scaled_dot_product_attention`` (the fast path) unless
``use_sdpa=False``, and the tests check that the two agree.

Initialization follows GPT-2: every linear and embedding weight
``N(0, init_std²)``, biases zero, LayerNorm gain 1 and bias 0.

References:
    A. Vaswani et al. Attention is all you need. NeurIPS 2017.
    A. Radford et al. Language models are unsupervised multitask learners (GPT-2). 2019.
    R. Xiong et al. On layer normalization in the transformer architecture (pre-LN). ICML 2020.
    G. Yang et al. Tuning large neural networks via zero-shot hyperparameter transfer. 2021.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale · q kᵀ + M) v`` with the causal mask ``M`` (reference path).

    ``q, k, v``: ``(batch, heads, T, d_h)``; returns ``(batch, heads, T, d_h)``.
    """
    T = q.shape[-2]
    scores = scale * (q @ k.transpose(-2, -1))  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))  # position i sees j <= i only
    return torch.softmax(scores, dim=-1) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused ``qkv`` projection and an output projection."""

    def __init__(
        self, width: int, heads: int, attn_scale: float | None = None, dropout: float = 0.0, use_sdpa: bool = True
    ):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.attn_scale = 1.0 / math.sqrt(self.head_dim) if attn_scale is None else float(attn_scale)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout
        self.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        # Q, K, V = X W_qkv, split into heads of width d_h
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=self.attn_scale)
        else:
            y = causal_attention(q, k, v, self.attn_scale)
            y = F.dropout(y, dropout, self.training) if dropout else y
        # concatenate the heads, then the output projection
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: int, attn_scale: float | None, dropout: float, use_sdpa: bool
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, attn_scale, dropout, use_sdpa)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyTransformer(nn.Module):
    """Decoder-only transformer: ``tokens (B, T) → logits (B, T, vocab_size)``.

    Args:
        vocab_size: number of token ids.
        context_length: the longest sequence (number of learned positions).
        width: model width ``d``.
        depth: number of blocks.
        heads: attention heads (must divide ``width``).
        mlp_ratio: hidden width of each block's MLP is ``mlp_ratio · d``.
        dropout: dropout on the embeddings, attention and MLP outputs.
        tie_weights: share the output head with the token embedding.
        attn_scale: ``s`` in ``softmax(s Q Kᵀ)``; None means ``1/√d_h`` (μP: ``1/d_h``).
        output_multiplier: ``α_out`` multiplying the logits (μP changes it).
        init_std: standard deviation of the weight init.
        use_sdpa: use torch's fused attention (True) or :func:`causal_attention`.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        *,
        dropout: float = 0.0,
        tie_weights: bool = False,
        attn_scale: float | None = None,
        output_multiplier: float = 1.0,
        init_std: float = 0.02,
        use_sdpa: bool = True,
    ):
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("context_length", context_length),
            ("width", width),
            ("depth", depth),
            ("heads", heads),
            ("mlp_ratio", mlp_ratio),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r}; expected an integer >= 1")
        if width % heads:
            raise ValueError(f"Invalid heads: {heads}; expected a divisor of width={width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Invalid dropout: {dropout!r}; expected a number in [0, 1)")
        if attn_scale is not None and not (math.isfinite(attn_scale) and attn_scale > 0):
            raise ValueError(f"Invalid attn_scale: {attn_scale!r}; expected None or a number > 0")
        if not (math.isfinite(init_std) and init_std >= 0):
            raise ValueError(f"Invalid init_std: {init_std!r}; expected a finite number >= 0")
        self.vocab_size, self.context_length = vocab_size, context_length
        self.width, self.depth, self.heads = width, depth, heads
        self.output_multiplier = float(output_multiplier)

        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, attn_scale, dropout, use_sdpa) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.tie_weights = tie_weights
        self.reset_parameters(init_std)
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    @torch.no_grad()
    def reset_parameters(self, init_std: float = 0.02) -> None:
        """GPT-2 init: weights ``N(0, init_std²)``, biases 0, LayerNorm (1, 0)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, init_std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    @property
    def attn_scale(self) -> float:
        return self.blocks[0].attn.attn_scale if self.depth else float("nan")

    def set_attention(self, *, attn_scale: float | None = None, use_sdpa: bool | None = None) -> None:
        """Change every block's attention scale and/or attention path."""
        for block in self.blocks:
            if attn_scale is not None:
                block.attn.attn_scale = float(attn_scale)
            if use_sdpa is not None:
                block.attn.use_sdpa = use_sdpa

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        if T > self.context_length:
            raise ValueError(f"sequence length {T} exceeds context_length={self.context_length}")
        positions = torch.arange(T, device=tokens.device)
        # x_0 = E[t] + P[:T]
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        # logits = α_out · LN_f(x) Wᵀ
        logits = self.head(self.ln_f(x))
        if self.output_multiplier != 1.0:
            logits = logits * self.output_multiplier
        return logits
