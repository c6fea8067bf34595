"""The modular norm: a norm on a whole network's weights, built with the network.

Every module M carries a **mass** μ ≥ 0 (its share of the network's feature
learning) and a **sensitivity** ν ≥ 0 (its Lipschitz constant in its input).
Atoms (modules with weights) have a norm on their own weight; bonds (ReLU,
addition, scalar multiplication, ...) have no weights and mass 0. Larger
modules are built by two rules (Large et al., "Scalable Optimization in the
Modular Norm", arXiv:2405.14813, §3; Bernstein & Newhouse, "Modular Duality in
Deep Learning", arXiv:2410.21265, §4):

- **composition** M = M2 ∘ M1 (apply M1, then M2), weights w = (w1, w2):

      μ = μ1 + μ2,    ν = ν1 ν2,
      ‖w‖_M = max( ν2 · (μ/μ1) · ‖w1‖_M1 ,  (μ/μ2) · ‖w2‖_M2 )

- **concatenation** M = (M1, ..., Mk) (all applied to the same input, outputs as a tuple):

      μ = Σ μ_i,    ν = Σ ν_i,    ‖w‖_M = max_i (μ/μ_i) · ‖w_i‖_Mi

A child of zero mass (a bond, or a frozen sub-network) contributes no term.

**Well-normed** (Large et al., Def. 3): for inputs with ‖x‖ ≤ 1 and weights with
‖w‖_M ≤ 1, ‖∇_w f · Δw‖ ≤ ‖Δw‖_M and ‖∇_x f · Δx‖ ≤ ν ‖Δx‖. Linear layers in the
RMS→RMS norm are well-normed, and both rules preserve it; ``check_well_normed``
tests the two inequalities numerically (inputs and outputs measured in the RMS
norm over the last dimension, worst case over the other dimensions).

**Dualization** (Modular Duality, Theorem 4.3 in the course notes): the
steepest-descent direction of the whole network under ‖·‖_M,
argmax_{‖Δw‖_M = 1} ⟨G, Δw⟩, splits into one dual map per atom, each scaled by a
target norm t_i fixed by the tree: the root gets t = 1, and

- composition M2 ∘ M1 with target t: M1 gets t · (μ1/μ) / ν2, M2 gets t · μ2/μ;
- concatenation with target t: M_i gets t · μ_i/μ.

So Δw_i = t_i · D_i(G_i) and ⟨G, Δw⟩ = Σ_i t_i ‖G_i‖*_i, which is the modular dual
norm ‖G‖_M*. This recursion is modula's ``dualize`` (github.com/modula-systems/modula,
``modula/abstract.py``); ``gd_lib.optim.ModularDescent`` steps along it.

Atom norms and dual maps (weights in torch layout):

| atom        | weight shape           | norm ‖W‖                       | dual map D(G)                 |
|-------------|------------------------|--------------------------------|-------------------------------|
| Linear      | fan_out × fan_in       | √(fan_in/fan_out) σ_max(W)     | √(fan_out/fan_in) U Vᵀ        |
| Embedding   | num_embeddings × dim   | max_row ‖W_i:‖_RMS             | each row of G to RMS norm 1   |
| Bias        | dim                    | ‖b‖_RMS                        | G / ‖G‖_RMS                   |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gd_lib.linalg import newton_schulz, polar_factor

from .norms import L1ToRMSNorm, RMSToRMSNorm, _safe_divide

__all__ = [
    "Module",
    "Atom",
    "Bond",
    "Composite",
    "Concatenation",
    "Linear",
    "Embedding",
    "Bias",
    "Identity",
    "Add",
    "Mul",
    "ReLU",
    "GELU",
    "Tanh",
    "RMSNorm",
    "SelfAttention",
    "sequential",
    "residual",
    "attention",
    "from_sequential",
    "check_well_normed",
    "rms_norm",
    "newton_schulz_orthogonalize",
    "GELU_LIPSCHITZ",
]

#: max_x |GELU'(x)| (exact erf GELU), attained near x ≈ 1.5: GELU's sensitivity.
GELU_LIPSCHITZ = 1.1289


def rms_norm(x: Tensor) -> Tensor:
    """‖x‖_RMS over the last dimension, worst case (max) over the others."""
    return (torch.linalg.vector_norm(x, dim=-1) / math.sqrt(x.shape[-1])).max()


# --- the abstract module ---------------------------------------------------------


class Module:
    """A node of the modular tree: mass, sensitivity, norm, dualization, forward.

    Weights are lists aligned with ``atoms()`` (application order: inner modules
    first). ``forward(x, weights=None)`` uses the atoms' bound tensors when
    ``weights`` is None.
    """

    children: tuple = ()

    # structure ---------------------------------------------------------------
    @property
    def mass(self) -> float:
        raise NotImplementedError

    @property
    def sensitivity(self) -> float:
        raise NotImplementedError

    def atoms(self) -> list[Atom]:
        return [a for child in self.children for a in child.atoms()]

    @property
    def num_atoms(self) -> int:
        return len(self.atoms())

    def bound_weights(self) -> list[Tensor]:
        """The tensors the atoms describe (their ``weight``), in ``atoms()`` order."""
        out = []
        for a in self.atoms():
            if a.weight is None:
                raise ValueError(f"{a!r} is not bound to a tensor (pass weight=...)")
            out.append(a.weight)
        return out

    def _split(self, weights: Sequence) -> list[list]:
        """Split a flat weight list into one list per child."""
        parts, start = [], 0
        for child in self.children:
            parts.append(list(weights[start : start + child.num_atoms]))
            start += child.num_atoms
        if start != len(weights):
            raise ValueError(f"expected {start} weight tensors, got {len(weights)}")
        return parts

    # maths ---------------------------------------------------------------------
    def norm(self, weights: Sequence[Tensor] | None = None) -> Tensor:
        """The modular norm ‖w‖_M of a weight list (default: the bound weights)."""
        raise NotImplementedError

    def child_targets(self, target_norm: float) -> list[float]:
        """The target norm each child gets in dualization (see the module docstring)."""
        raise NotImplementedError

    def target_norms(self, target_norm: float = 1.0) -> list[float]:
        """t_i for every atom, in ``atoms()`` order, for a root target ``target_norm``."""
        out: list[float] = []
        for child, t in zip(self.children, self.child_targets(target_norm)):
            out.extend(child.target_norms(t))
        return out

    def dualize(
        self,
        grads: Sequence[Tensor],
        target_norm: float = 1.0,
        orthogonalize: Callable[[Tensor], Tensor] = polar_factor,
    ) -> list[Tensor]:
        """argmax_{‖Δw‖_M = target_norm} ⟨G, Δw⟩: atom i gets t_i · D_i(G_i)."""
        grads = list(grads)
        atoms = self.atoms()
        if len(grads) != len(atoms):
            raise ValueError(f"expected {len(atoms)} gradients, got {len(grads)}")
        return [
            t * a.dual_map(g, orthogonalize=orthogonalize)
            for t, a, g in zip(self.target_norms(target_norm), atoms, grads)
        ]

    def dual_norm(self, grads: Sequence[Tensor]) -> Tensor:
        """‖G‖_M* = max_{‖Δw‖_M ≤ 1} ⟨G, Δw⟩ = Σ_i t_i ‖G_i‖*_i (t for target 1)."""
        grads = list(grads)
        return sum(t * a.weight_dual_norm(g) for t, a, g in zip(self.target_norms(1.0), self.atoms(), grads))

    def forward(self, x, weights: Sequence[Tensor] | None = None):
        raise NotImplementedError

    def __call__(self, x, weights: Sequence[Tensor] | None = None):
        return self.forward(x, weights)

    def tare(self, absolute: float = 1.0) -> Module:
        """Rescale the masses of all atoms below so that this module's mass is ``absolute``."""
        if self.mass <= 0:
            raise ValueError("cannot tare a module of zero mass")
        factor = absolute / self.mass
        for a in self.atoms():
            a._mass *= factor
        return self

    # building ------------------------------------------------------------------
    def __matmul__(self, inner: Module | tuple) -> Composite:
        """``outer @ inner`` is the composition outer ∘ inner (apply inner first)."""
        if isinstance(inner, tuple):
            inner = Concatenation(*inner)
        return Composite(self, inner)

    def __rmatmul__(self, outer: tuple) -> Composite:
        return Composite(Concatenation(*outer), self)

    def __add__(self, other: Module) -> Composite:
        """``a + b`` is Add ∘ (a, b): both see the same input, outputs are summed."""
        return Composite(Add(), Concatenation(self, other))

    def __rmul__(self, scalar: float) -> Composite:
        """``s * m`` is Mul(s) ∘ m."""
        return Composite(Mul(scalar), self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mass={self.mass:g}, sensitivity={self.sensitivity:g})"


# --- atoms -----------------------------------------------------------------------


class Atom(Module):
    """A module with one weight tensor, a norm on it, and that norm's dual map."""

    def __init__(self, mass: float = 1.0, weight: Tensor | None = None):
        if not (mass >= 0 and math.isfinite(mass)):
            raise ValueError(f"Invalid mass: {mass!r}; expected a finite number >= 0")
        self._mass = float(mass)
        self.weight = weight

    @property
    def mass(self) -> float:
        return self._mass

    @property
    def sensitivity(self) -> float:
        return 1.0

    def atoms(self) -> list[Atom]:
        return [self]

    def target_norms(self, target_norm: float = 1.0) -> list[float]:
        return [target_norm]

    def _weight(self, weights):
        if weights is None:
            if self.weight is None:
                raise ValueError(f"{self!r} has no bound weight; pass weights=[...]")
            return self.weight
        if len(weights) != 1:
            raise ValueError(f"an atom takes one weight tensor, got {len(weights)}")
        return weights[0]

    def norm(self, weights=None) -> Tensor:
        return self.weight_norm(self._weight(weights))

    def weight_norm(self, W: Tensor) -> Tensor:
        raise NotImplementedError

    def weight_dual_norm(self, G: Tensor) -> Tensor:
        """The dual of ``weight_norm``: max ⟨G, D⟩ over ‖D‖ ≤ 1."""
        raise NotImplementedError

    def dual_map(self, G: Tensor, orthogonalize: Callable[[Tensor], Tensor] = polar_factor) -> Tensor:
        raise NotImplementedError


class Linear(Atom):
    """y = W x with W fan_out × fan_in; norm RMS→RMS: √(fan_in/fan_out) σ_max(W); sensitivity 1."""

    def __init__(self, fan_out: int, fan_in: int, mass: float = 1.0, weight: Tensor | None = None):
        super().__init__(mass, weight)
        self.fan_out, self.fan_in = int(fan_out), int(fan_in)
        if weight is not None and tuple(weight.shape) != (self.fan_out, self.fan_in):
            raise ValueError(f"Linear({fan_out}, {fan_in}) got a weight of shape {tuple(weight.shape)}")

    @classmethod
    def of(cls, layer: nn.Linear, mass: float = 1.0) -> Linear:
        """The atom of ``layer.weight`` (the bias, if any, is a separate ``Bias`` atom)."""
        return cls(layer.out_features, layer.in_features, mass, layer.weight)

    def forward(self, x, weights=None):
        return x @ self._weight(weights).mT

    def weight_norm(self, W):
        return RMSToRMSNorm()(W)

    def weight_dual_norm(self, G):
        return RMSToRMSNorm().dual(G)

    def dual_map(self, G, orthogonalize=polar_factor):
        # D(G) = √(fan_out/fan_in) U Vᵀ
        return math.sqrt(self.fan_out / self.fan_in) * orthogonalize(G)

    def __repr__(self):
        return f"Linear({self.fan_out}, {self.fan_in}, mass={self.mass:g})"


class Embedding(Atom):
    """Row lookup y = W[x] with W num_embeddings × dim (torch layout).

    Norm ℓ1→RMS of the lookup map x ↦ Wᵀ onehot(x): the largest row RMS norm.
    Dual map: each gradient row rescaled to RMS norm 1 (rows with zero gradient stay 0).
    """

    def __init__(self, num_embeddings: int, dim: int, mass: float = 1.0, weight: Tensor | None = None):
        super().__init__(mass, weight)
        self.num_embeddings, self.dim = int(num_embeddings), int(dim)

    @classmethod
    def of(cls, layer: nn.Embedding, mass: float = 1.0) -> Embedding:
        return cls(layer.num_embeddings, layer.embedding_dim, mass, layer.weight)

    def forward(self, x, weights=None):
        return self._weight(weights)[x]

    def weight_norm(self, W):
        return L1ToRMSNorm()(W.mT)

    def weight_dual_norm(self, G):
        return L1ToRMSNorm().dual(G.mT)

    def dual_map(self, G, orthogonalize=polar_factor):
        return L1ToRMSNorm().dual_map(G.mT).mT

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.dim}, mass={self.mass:g})"


class Bias(Atom):
    """Outputs the vector b (ignores its input: sensitivity 0); norm ‖b‖_RMS; dual map G/‖G‖_RMS.

    A linear layer with bias is ``Linear + Bias`` = Add ∘ (Linear, Bias).
    """

    def __init__(self, dim: int, mass: float = 1.0, weight: Tensor | None = None):
        super().__init__(mass, weight)
        self.dim = int(dim)

    @classmethod
    def of(cls, layer: nn.Linear, mass: float = 1.0) -> Bias:
        if layer.bias is None:
            raise ValueError("layer has no bias")
        return cls(layer.out_features, mass, layer.bias)

    @property
    def sensitivity(self) -> float:
        return 0.0

    def forward(self, x, weights=None):
        b = self._weight(weights)
        return b.expand(*x.shape[:-1], self.dim)

    def weight_norm(self, W):
        return torch.linalg.vector_norm(W) / math.sqrt(W.numel())

    def weight_dual_norm(self, G):
        return math.sqrt(G.numel()) * torch.linalg.vector_norm(G)

    def dual_map(self, G, orthogonalize=polar_factor):
        return math.sqrt(G.numel()) * _safe_divide(G, torch.linalg.vector_norm(G))

    def __repr__(self):
        return f"Bias({self.dim}, mass={self.mass:g})"


# --- bonds -----------------------------------------------------------------------


class Bond(Module):
    """A module without weights: mass 0, norm 0, nothing to dualize."""

    _sensitivity: float = 1.0

    @property
    def mass(self) -> float:
        return 0.0

    @property
    def sensitivity(self) -> float:
        return self._sensitivity

    def atoms(self):
        return []

    def norm(self, weights=None):
        return torch.zeros(())

    def target_norms(self, target_norm=1.0):
        return []

    def function(self, x):
        raise NotImplementedError

    def forward(self, x, weights=None):
        if weights:
            raise ValueError(f"{type(self).__name__} has no weights")
        return self.function(x)


class Identity(Bond):
    def function(self, x):
        return x


class Add(Bond):
    """Sum of a tuple of inputs (sensitivity 1 per summand; the tuple's ν already adds up)."""

    def function(self, x):
        return sum(x)


class Mul(Bond):
    """x ↦ s x, sensitivity |s|."""

    def __init__(self, scalar: float):
        self.scalar = float(scalar)
        self._sensitivity = abs(self.scalar)

    def function(self, x):
        return self.scalar * x

    def __repr__(self):
        return f"Mul({self.scalar:g})"


class ReLU(Bond):
    def function(self, x):
        return torch.relu(x)


class Tanh(Bond):
    def function(self, x):
        return torch.tanh(x)


class GELU(Bond):
    """torch's (erf) GELU; sensitivity ``GELU_LIPSCHITZ`` ≈ 1.1289 (modula divides GELU by it
    to make ν = 1; here the function is unchanged and ν carries the factor)."""

    _sensitivity = GELU_LIPSCHITZ

    def function(self, x):
        return F.gelu(x)


class RMSNorm(Bond):
    """x ↦ x / ‖x‖_RMS over the last dim (no gain). Sensitivity 1, as modula counts its
    LayerNorm (a convention: the map is not globally 1-Lipschitz near x = 0)."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def function(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class SelfAttention(Bond):
    """softmax(q kᵀ / d_head + causal mask) v over heads, for a tuple (q, k, v) of (B, T, D).

    Sensitivity 1 in modula's accounting (its ``Attention`` uses 1/d_head scaling and
    follows this bond by Mul(1/3) so that the whole attention has ν = 1; see ``attention``).
    """

    def __init__(self, num_heads: int, causal: bool = True):
        self.num_heads, self.causal = int(num_heads), causal

    def function(self, x):
        q, k, v = x
        B, T, D = q.shape
        h = self.num_heads

        def heads(t):
            return t.reshape(B, T, h, D // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=self.causal, scale=1.0 / (D // h))
        return out.transpose(1, 2).reshape(B, T, D)


# --- combinations ----------------------------------------------------------------


class Composite(Module):
    """outer ∘ inner: μ = μ1 + μ2, ν = ν1 ν2, ‖w‖ = max(ν2 (μ/μ1) ‖w1‖, (μ/μ2) ‖w2‖)."""

    def __init__(self, outer: Module, inner: Module):
        self.outer, self.inner = outer, inner
        self.children = (inner, outer)  # application order: weights of inner come first

    @property
    def mass(self):
        return self.inner.mass + self.outer.mass

    @property
    def sensitivity(self):
        return self.inner.sensitivity * self.outer.sensitivity

    def forward(self, x, weights=None):
        if weights is None:
            return self.outer.forward(self.inner.forward(x))
        w_inner, w_outer = self._split(weights)
        return self.outer.forward(self.inner.forward(x, w_inner), w_outer)

    def norm(self, weights=None):
        w_inner, w_outer = self._split(weights if weights is not None else self.bound_weights())
        mu = self.mass
        terms = []
        # ν2 · (μ/μ1) · ‖w1‖_M1   (the inner module's weights act through the outer one)
        if self.inner.mass > 0:
            terms.append(self.outer.sensitivity * mu / self.inner.mass * self.inner.norm(w_inner))
        # (μ/μ2) · ‖w2‖_M2
        if self.outer.mass > 0:
            terms.append(mu / self.outer.mass * self.outer.norm(w_outer))
        return torch.stack([torch.as_tensor(t) for t in terms]).max() if terms else torch.zeros(())

    def child_targets(self, target_norm):
        mu = self.mass
        if mu == 0:
            return [0.0, 0.0]
        inner_t = 0.0
        if self.inner.mass > 0:
            if self.outer.sensitivity == 0:
                raise ValueError("the inner module's weights cannot move the output: outer sensitivity is 0")
            # M1 gets t · (μ1/μ) / ν2
            inner_t = target_norm * self.inner.mass / mu / self.outer.sensitivity
        # M2 gets t · μ2/μ
        outer_t = target_norm * self.outer.mass / mu
        return [inner_t, outer_t]

    def __repr__(self):
        return f"({self.outer!r} ∘ {self.inner!r})"


class Concatenation(Module):
    """(M1, ..., Mk) on one input: μ = Σ μ_i, ν = Σ ν_i, ‖w‖ = max_i (μ/μ_i) ‖w_i‖."""

    def __init__(self, *modules: Module):
        if not modules:
            raise ValueError("a concatenation needs at least one module")
        self.children = tuple(modules)

    @property
    def mass(self):
        return sum(m.mass for m in self.children)

    @property
    def sensitivity(self):
        return sum(m.sensitivity for m in self.children)

    def forward(self, x, weights=None):
        if weights is None:
            return [m.forward(x) for m in self.children]
        return [m.forward(x, w) for m, w in zip(self.children, self._split(weights))]

    def norm(self, weights=None):
        parts = self._split(weights if weights is not None else self.bound_weights())
        mu = self.mass
        terms = [mu / m.mass * m.norm(w) for m, w in zip(self.children, parts) if m.mass > 0]
        return torch.stack([torch.as_tensor(t) for t in terms]).max() if terms else torch.zeros(())

    def child_targets(self, target_norm):
        mu = self.mass
        return [target_norm * m.mass / mu if mu > 0 else 0.0 for m in self.children]

    def __repr__(self):
        return "(" + ", ".join(repr(m) for m in self.children) + ")"


# --- helpers ---------------------------------------------------------------------


def sequential(*modules: Module) -> Module:
    """M_k ∘ … ∘ M_1 for ``sequential(M_1, ..., M_k)`` (application order, like nn.Sequential)."""
    if not modules:
        return Identity()
    out = modules[0]
    for m in modules[1:]:
        out = Composite(m, out)
    return out


def residual(block: Module, alpha: float) -> Module:
    """x ↦ (1 − α) x + α block(x), i.e. (1−α)·Identity + α·block; modula uses α = 1/(2·blocks)."""
    return (1 - alpha) * Identity() + alpha * block


def attention(q: Linear, k: Linear, v: Linear, o: Linear, num_heads: int, causal: bool = True) -> Module:
    """Multi-head attention o ∘ (1/3) ∘ SelfAttention ∘ (q, k, v), as modula's ``Attention``:
    the concatenation (q, k, v) has ν = 3 and the 1/3 brings the block back to ν = 1."""
    return sequential(Concatenation(q, k, v), SelfAttention(num_heads, causal), Mul(1 / 3), o)


_BONDS = {nn.ReLU: ReLU, nn.Tanh: Tanh, nn.GELU: GELU, nn.Identity: Identity}


def from_sequential(model: nn.Sequential, mass: float = 1.0) -> Module:
    """The modular tree of an ``nn.Sequential`` of Linear layers and ReLU/Tanh/GELU/Identity,
    with each atom bound to the layer's tensors (a Linear with bias becomes Linear + Bias)."""
    parts: list[Module] = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            atom: Module = Linear.of(layer, mass)
            if layer.bias is not None:
                atom = atom + Bias.of(layer, mass)
            parts.append(atom)
        elif type(layer) in _BONDS:
            if isinstance(layer, nn.GELU) and layer.approximate != "none":
                raise ValueError("only the erf GELU (approximate='none') is supported")
            parts.append(_BONDS[type(layer)]())
        else:
            raise ValueError(f"from_sequential does not know {type(layer).__name__}")
    return sequential(*parts)


def check_well_normed(
    module: Module,
    x: Tensor,
    weights: Sequence[Tensor] | None = None,
    *,
    directions: int = 8,
    generator: torch.Generator | None = None,
    rtol: float = 1e-6,
) -> dict[str, float]:
    """Test the two well-normed inequalities at input ``x`` and ``weights`` by random directions.

    Each random Δw is tried whole and restricted to one atom at a time. Returns the worst
    ratios ``weight_ratio = max ‖∇_w f · Δw‖_RMS / ‖Δw‖_M`` and
    ``input_ratio = max ‖∇_x f · Δx‖_RMS / (ν ‖Δx‖_RMS)`` (inf-free: 0 when ν = 0), and
    ``well_normed``: both ≤ 1 + rtol. The premises ‖x‖_RMS ≤ 1 and ‖w‖_M ≤ 1 are
    checked too (a ValueError if they fail). The input check is skipped for integer
    inputs (embeddings).
    """
    weights = list(weights if weights is not None else module.bound_weights())
    weights = [w.detach() for w in weights]
    if float(module.norm(weights)) > 1 + rtol:
        raise ValueError(f"weights must have modular norm <= 1, got {float(module.norm(weights)):.4g}")
    floating = x.is_floating_point()
    if floating and float(rms_norm(x)) > 1 + rtol:
        raise ValueError(f"input must have RMS norm <= 1, got {float(rms_norm(x)):.4g}")

    def weight_fn(*ws):
        return module.forward(x, list(ws))

    weight_ratio, input_ratio = 0.0, 0.0
    for _ in range(directions):
        dw = [torch.randn(w.shape, generator=generator, dtype=w.dtype) for w in weights]
        # all atoms at once, then each atom alone (a max-type norm can hide one atom's error)
        candidates = (
            [dw] + [[d if j == i else torch.zeros_like(d) for j, d in enumerate(dw)] for i in range(len(dw))]
            if len(dw) > 1
            else [dw]
        )
        for direction in candidates:
            size = module.norm(direction)
            if float(size) == 0:
                continue
            _, out = torch.func.jvp(weight_fn, tuple(weights), tuple(direction))
            weight_ratio = max(weight_ratio, float(rms_norm(out) / size))
        if floating and module.sensitivity > 0:
            dx = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            _, out = torch.func.jvp(lambda z: module.forward(z, weights), (x,), (dx,))
            input_ratio = max(input_ratio, float(rms_norm(out) / (module.sensitivity * rms_norm(dx))))
    return {
        "weight_ratio": weight_ratio,
        "input_ratio": input_ratio,
        "well_normed": weight_ratio <= 1 + rtol and input_ratio <= 1 + rtol,
    }


def newton_schulz_orthogonalize(steps: int = 5) -> Callable[[Tensor], Tensor]:
    """An ``orthogonalize`` for ``dualize`` that runs Muon's quintic Newton–Schulz."""

    def orthogonalize(G: Tensor) -> Tensor:
        return newton_schulz(G, steps)

    return orthogonalize
