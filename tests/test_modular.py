"""The modular norm: composition laws, a hand-computed norm, dualization, well-normedness,
and ModularDescent (width-independent updates on a deep MLP; training a small transformer)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gd_lib.geometry import modular
from gd_lib.geometry.modular import (
    GELU,
    Add,
    Bias,
    Composite,
    Concatenation,
    Embedding,
    Identity,
    Linear,
    Mul,
    ReLU,
    RMSNorm,
    attention,
    check_well_normed,
    from_sequential,
    residual,
    sequential,
)
from gd_lib.optim import ModularDescent


def rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- 4. composition laws ---------------------------------------------------------------


def test_mass_and_sensitivity_composition_laws():
    a, b = Linear(3, 4, mass=2.0), Linear(5, 3, mass=0.5)
    m = Mul(-0.25)
    # composition: masses add, sensitivities multiply
    comp = b @ m @ a
    assert comp.mass == pytest.approx(2.5) and comp.sensitivity == pytest.approx(0.25)
    # concatenation: masses add, sensitivities add (Bias ignores its input: ν = 0)
    cat = Concatenation(a, Bias(3, mass=1.5), 2.0 * Identity())
    assert cat.mass == pytest.approx(3.5) and cat.sensitivity == pytest.approx(1 + 0 + 2)
    # sums are Add ∘ (x, y); scalar products are Mul ∘ module; bonds weigh nothing
    s = a + Linear(3, 4, mass=1.0)
    assert isinstance(s, Composite) and isinstance(s.outer, Add)
    assert s.mass == pytest.approx(3.0) and s.sensitivity == pytest.approx(2.0)
    assert ReLU().mass == 0 and (3 * ReLU()).sensitivity == pytest.approx(3.0)
    # tare rescales atoms so that the total is as asked, keeping ratios
    comp.tare(absolute=5.0)
    assert comp.mass == pytest.approx(5.0) and a.mass / b.mass == pytest.approx(4.0)


def test_gelu_sensitivity_is_its_lipschitz_constant():
    x = torch.linspace(-6, 6, 200001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(nn.functional.gelu(x).sum(), x)
    # GELU_LIPSCHITZ is given to 4 decimals
    assert GELU().sensitivity == pytest.approx(float(slope.abs().max()), abs=1e-4)


def hand_example():
    """A: 2×2 diag(3, 1), spectral 3, RMS→RMS factor √(2/2) = 1, so ‖A‖ = 3, mass 1.
    B: 4×2 with one entry 2, spectral 2, RMS→RMS factor √(fan_in/fan_out) = √(2/4), ‖B‖ = √2, mass 3."""
    WA = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    WB = torch.zeros(4, 2, dtype=torch.float64)
    WB[0, 0] = 2.0
    A, B = Linear(2, 2, mass=1.0, weight=WA), Linear(4, 2, mass=3.0, weight=WB)
    return A, B


def test_norm_of_composite_equals_hand_computation():
    A, B = hand_example()
    assert float(A.norm()) == pytest.approx(3.0, rel=1e-12)
    assert float(B.norm()) == pytest.approx(math.sqrt(2), rel=1e-12)
    M = sequential(A, ReLU(), B)  # B ∘ ReLU ∘ A
    # μ = 1 + 3 = 4; ν(B) = 1:  ‖w‖ = max(ν_B · (4/1) · 3, (4/3) · √2) = max(12, 1.886) = 12
    assert M.mass == 4.0
    assert float(M.norm()) == pytest.approx(12.0, rel=1e-12)
    # a Mul(1/2) after B halves the sensitivity of what follows A's output... but Mul is
    # outermost here, so it multiplies the whole norm: ν_Mul · (μ/μ_M) · ‖w‖_M = 0.5 · 1 · 12 = 6
    assert float((0.5 * M).norm()) == pytest.approx(6.0, rel=1e-12)
    # Mul(1/2) between A and B scales A's term: max(0.5 · 4 · 3, (4/3)√2) = 6
    assert float(sequential(A, Mul(0.5), B).norm()) == pytest.approx(6.0, rel=1e-12)
    # masses A: 10, B: 0.1 make B's term win: max(10.1/10 · 3, 10.1/0.1 · √2) = 101 √2
    A._mass, B._mass = 10.0, 0.1
    assert float(sequential(A, ReLU(), B).norm()) == pytest.approx(101 * math.sqrt(2), rel=1e-12)


def test_norm_of_concatenation_equals_hand_computation():
    A, _ = hand_example()
    C = Linear(2, 2, mass=1.0, weight=0.5 * torch.eye(2, dtype=torch.float64))  # ‖C‖ = 0.5
    # μ = 2:  max((2/1) · 3, (2/1) · 0.5) = 6
    assert float(Concatenation(A, C).norm()) == pytest.approx(6.0, rel=1e-12)
    assert Concatenation(A, C).sensitivity == 2.0


def test_target_norms_of_hand_example():
    A, B = hand_example()
    # A gets t · (μ_A/μ) / ν_B = 1/4, B gets t · μ_B/μ = 3/4
    assert sequential(A, ReLU(), B).target_norms() == pytest.approx([0.25, 0.75])
    assert sequential(A, Mul(0.5), B).target_norms() == pytest.approx([0.5, 0.75])


# --- dualization (Theorem 4.3) -------------------------------------------------------


def small_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 7, bias=False), nn.GELU(), nn.Linear(7, 3)).double()
    return net, from_sequential(net)


def test_from_sequential_forward_matches_torch():
    net, tree = small_network()
    x = rand((4, 5), 1)
    torch.testing.assert_close(tree(x), net(x), rtol=0, atol=0)
    assert len(tree.atoms()) == 5  # 3 Linear + 2 Bias


def test_dualize_has_unit_modular_norm_and_attains_the_dual_norm():
    net, tree = small_network()
    grads = [rand(w.shape, 10 + i) for i, w in enumerate(tree.bound_weights())]
    D = tree.dualize(grads)
    # ‖dualize(G)‖_M = 1 and ⟨G, dualize(G)⟩ = ‖G‖_M* (float64 round-off)
    assert float(tree.norm(D)) == pytest.approx(1.0, abs=1e-10)
    pairing = sum(float((g * d).sum()) for g, d in zip(grads, D))
    assert pairing == pytest.approx(float(tree.dual_norm(grads)), rel=1e-10)
    # and no random direction of unit modular norm does better. Random directions are drawn
    # where the maximizer lives: each atom's part at its target norm t_i in its own norm, so
    # every term of the max equals 1 (Gaussian directions alone reach only ~15% of the optimum)
    atoms, targets = tree.atoms(), tree.target_norms()
    best = 0.0
    for seed in range(500):
        delta = [
            t * r / a.weight_norm(r)
            for a, t, r in zip(atoms, targets, (rand(w.shape, 10000 + 7 * seed + i) for i, w in enumerate(grads)))
        ]
        assert float(tree.norm(delta)) == pytest.approx(1.0, abs=1e-10)
        best = max(best, sum(float((g * d).sum()) for g, d in zip(grads, delta)))
    assert best <= pairing * (1 + 1e-12)
    assert best > 0.25 * pairing  # the random search is not vacuous (it reaches ~30%)


def test_single_atom_tree_dualizes_like_its_dual_map():
    W = rand((3, 5), 4)
    atom = Linear(3, 5, mass=2.0, weight=W)
    (D,) = atom.dualize([W])
    torch.testing.assert_close(
        D,
        math.sqrt(3 / 5) * torch.linalg.svd(W, full_matrices=False)[0] @ torch.linalg.svd(W, full_matrices=False)[2],
        rtol=0,
        atol=1e-12,
    )
    # dual of the RMS→RMS norm: √(fan_out/fan_in) · nuclear norm
    assert float(atom.dual_norm([W])) == pytest.approx(
        math.sqrt(3 / 5) * float(torch.linalg.matrix_norm(W, "nuc")), rel=1e-12
    )


def test_embedding_dual_map_normalizes_rows():
    E = Embedding(6, 4, mass=1.0)
    G = rand((6, 4), 3)
    G[2] = 0.0  # a token absent from the batch
    D = E.dual_map(G)
    rms = D.pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms[[0, 1, 3, 4, 5]], torch.ones(5, dtype=torch.float64), atol=1e-12)
    assert torch.equal(D[2], torch.zeros(4, dtype=torch.float64))
    assert float(E.weight_norm(D)) == pytest.approx(1.0, abs=1e-12)
    assert float((G * D).sum()) == pytest.approx(float(E.weight_dual_norm(G)), rel=1e-12)


# --- well-normedness ------------------------------------------------------------------


def test_mlp_in_the_unit_ball_is_well_normed_and_a_misnormed_atom_is_caught():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 4, bias=False)).double()
    tree = from_sequential(net)
    weights = [w.detach() / float(tree.norm([v.detach() for v in tree.bound_weights()])) for w in tree.bound_weights()]
    x = rand((5, 6), 7)
    x = x / float(modular.rms_norm(x))
    result = check_well_normed(tree, x, weights, directions=16, generator=torch.Generator().manual_seed(0))
    assert result["well_normed"], result

    class UnderstatedLinear(Linear):
        """Claims a tenth of the true RMS→RMS norm: updates would move outputs 10× too far."""

        def weight_norm(self, W):
            return 0.1 * super().weight_norm(W)

    bad = UnderstatedLinear(12, 6)
    W = 10 * weights[0] / float(Linear(12, 6).weight_norm(weights[0]))  # claimed norm 1, true norm 10
    result = check_well_normed(bad, x, [W], directions=16, generator=torch.Generator().manual_seed(0))
    assert not result["well_normed"] and result["weight_ratio"] > 1


# --- ModularDescent -----------------------------------------------------------------------


def test_modular_descent_step_is_lr_times_dualized_gradient():
    net, tree = small_network()
    before = [w.detach().clone() for w in tree.bound_weights()]
    opt = ModularDescent(tree, lr=0.3, orthogonalize="svd")
    x, y = rand((8, 5), 2), torch.arange(8) % 3
    nn.functional.cross_entropy(net(x), y).backward()
    grads = [w.grad.clone() for w in tree.bound_weights()]
    opt.step()
    step = [w.detach() - b for w, b in zip(tree.bound_weights(), before)]
    for s, d in zip(step, tree.dualize(grads)):
        torch.testing.assert_close(s, -0.3 * d, rtol=1e-12, atol=1e-15)
    # the step has modular norm lr
    assert float(tree.norm(step)) == pytest.approx(0.3, rel=1e-10)


def deep_mlp_feature_updates(width: int, kind: str) -> list[float]:
    """One step on a depth-4 ReLU MLP (16 → width → width → width → 10, no biases), batch 8.
    Returns, per layer, ‖ΔW h‖_RMS / ‖h‖_RMS on the batch: how much the step moves the
    layer's output relative to its input."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, width, bias=False),
        nn.ReLU(),
        nn.Linear(width, width, bias=False),
        nn.ReLU(),
        nn.Linear(width, width, bias=False),
        nn.ReLU(),
        nn.Linear(width, 10, bias=False),
    ).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    inputs, h = [], x
    for m in net:
        if isinstance(m, nn.Linear):
            inputs.append(h.detach())
        h = m(h)
    before = [lin.weight.detach().clone() for lin in linears]
    if kind == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
    else:
        opt = ModularDescent(from_sequential(net), lr=0.5, orthogonalize=kind)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    return [
        float((h @ (lin.weight.detach() - w0).T).pow(2).mean().sqrt() / h.pow(2).mean().sqrt())
        for lin, w0, h in zip(linears, before, inputs)
    ]


WIDTHS = (32, 128, 512)


def test_normalized_updates_make_per_layer_update_size_independent_of_width():
    # exact dual map: ΔW_l = −lr · t_l · √(out/in) U Vᵀ with t_l = 1/4 for 4 layers of mass 1;
    # the batch (8) is smaller than every layer's width, so each input h lies in the row space
    # of G_l = Σ δ hᵀ and ‖U Vᵀ h‖ = ‖h‖: the relative output change is exactly lr · t_l
    for width in WIDTHS:
        assert deep_mlp_feature_updates(width, "svd") == pytest.approx([0.5 * 0.25] * 4, rel=1e-9)
    # Newton–Schulz: singular values in about [0.68, 1.21] instead of 1, at every width
    ns = [deep_mlp_feature_updates(width, "newton_schulz") for width in WIDTHS]
    for layer in range(4):
        sizes = [run[layer] for run in ns]
        assert max(sizes) / min(sizes) < 1.21 / 0.68
        assert 0.68 * 0.125 <= min(sizes) and max(sizes) <= 1.21 * 0.125
    # contrast: plain SGD's relative update of the hidden and output layers grows with width
    sgd = [deep_mlp_feature_updates(width, "sgd") for width in WIDTHS]
    for layer in (1, 2, 3):
        assert sgd[-1][layer] / sgd[0][layer] > 3


# --- ModularDescent on a small transformer ---------------------------------------------


class ModularTransformer(nn.Module):
    """A bias-free causal transformer whose forward *is* its modular tree: embedding, blocks of
    residual((1/3)-scaled attention ∘ RMSNorm) and residual(MLP ∘ RMSNorm), RMSNorm, head."""

    def __init__(self, vocab=11, d=16, heads=2, blocks=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList()
        parts = [Embedding.of(self.embed)]
        alpha = 1 / (2 * blocks)
        for _ in range(blocks):
            q, k, v, o = (nn.Linear(d, d, bias=False) for _ in range(4))
            fc, out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)
            self.layers.extend([q, k, v, o, fc, out])
            att = attention(*(Linear.of(m) for m in (q, k, v, o)), num_heads=heads)
            mlp = sequential(Linear.of(fc), GELU(), Linear.of(out))
            parts += [residual(att @ RMSNorm(), alpha), residual(mlp @ RMSNorm(), alpha)]
        self.head = nn.Linear(d, vocab, bias=False)
        parts += [RMSNorm(), Linear.of(self.head)]
        self.tree = sequential(*parts)

    def forward(self, idx):
        return self.tree(idx)


def test_modular_descent_trains_a_transformer_with_steps_of_modular_norm_lr():
    torch.manual_seed(0)
    model = ModularTransformer()
    assert len(model.tree.atoms()) == 1 + 2 * 6 + 1
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 11, (4, 9), generator=g)
    x, y = idx[:, :-1], idx[:, 1:]

    def loss_fn():
        return nn.functional.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1))

    # one exact-dual-map step has modular norm lr
    opt = ModularDescent(model.tree, lr=0.2, orthogonalize="svd")
    before = [w.detach().clone() for w in model.tree.bound_weights()]
    opt.zero_grad()
    loss_fn().backward()
    opt.step()
    step = [w.detach() - b for w, b in zip(model.tree.bound_weights(), before)]
    assert float(model.tree.norm(step)) == pytest.approx(0.2, rel=1e-5)  # float32 weights
    # training with the default (Newton–Schulz, momentum) memorizes the batch
    opt = ModularDescent(model.tree, lr=0.2, momentum=0.9)
    with torch.no_grad():
        first = loss_fn().item()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_modular_descent_rejects_bad_input():
    with pytest.raises(TypeError, match="modular"):
        ModularDescent([torch.zeros(2, 2, requires_grad=True)])
    with pytest.raises(ValueError, match="not bound"):
        ModularDescent(Linear(2, 2))
    w = nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="two atoms"):
        ModularDescent(Concatenation(Linear(2, 2, weight=w), Linear(2, 2, weight=w)))
