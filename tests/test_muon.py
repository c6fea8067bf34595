"""Muon against the reference update rule, written here from the Muon blog post
(kellerjordan.github.io/posts/muon) and KellerJordan/Muon's muon.py, not imported from gd_lib."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from gd_lib.optim import Muon, muon_param_groups
from gd_lib.optim.muon import muon_update

# --- the reference rule, independently written -----------------------------------------


def reference_newton_schulz5(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Quintic NS with (3.4445, −4.7750, 2.0315), X/‖X‖_F first, transposing tall matrices;
    in float32 (the reference uses bfloat16 on GPU; float32 is what gd_lib runs on CPU)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.float()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


def reference_muon_step(p, grad, buf, lr, beta=0.95, weight_decay=0.0, nesterov=True):
    buf.mul_(beta).add_(grad, alpha=1 - beta)  # M ← βM + (1−β)G
    update = beta * buf + (1 - beta) * grad if nesterov else buf  # Nesterov look-ahead
    matrix = update.reshape(len(update), -1)
    orthogonal = reference_newton_schulz5(matrix)
    orthogonal = orthogonal * max(1.0, matrix.size(0) / matrix.size(1)) ** 0.5
    p.mul_(1 - lr * weight_decay)
    p.add_(orthogonal.reshape(p.shape), alpha=-lr)


def reference_adamw_step(p, grad, state, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0):
    state["t"] += 1
    t = state["t"]
    state["m"].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    state["v"].mul_(betas[1]).add_(grad * grad, alpha=1 - betas[1])
    m_hat = state["m"] / (1 - betas[0] ** t)
    v_hat = state["v"] / (1 - betas[1] ** t)
    p.mul_(1 - lr * weight_decay)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


# --- a small transformer, written here so that the test does not move with gd_lib.models ---


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        q, k, v = (t.reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=13, d=16, heads=2, layers=2, context=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos_embed = nn.Parameter(torch.zeros(context, d))  # 2-D, caught by the name rule
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.embed(idx) + self.pos_embed[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def batch(step: int, vocab=13, context=8):
    g = torch.Generator().manual_seed(1000 + step)
    idx = torch.randint(0, vocab, (4, context + 1), generator=g)
    return idx[:, :-1], idx[:, 1:]


def loss_of(model, step):
    x, y = batch(step)
    return nn.functional.cross_entropy(model(x).reshape(-1, 13), y.reshape(-1))


# --- 2. Muon matches the reference over 20 steps ------------------------------------------


def test_muon_matches_reference_rule_on_a_small_transformer():
    torch.manual_seed(0)
    model = TinyTransformer()
    twin = copy.deepcopy(model)
    groups = muon_param_groups(model)
    muon_ids = {id(p) for p in groups[0]["params"]}
    # the recipe: hidden matrices (qkv, proj, fc, out) on Muon; embeddings, head, LN, biases on AdamW
    names_on_muon = sorted(n for n, p in model.named_parameters() if id(p) in muon_ids)
    assert names_on_muon == sorted(f"blocks.{i}.{m}.weight" for i in range(2) for m in ("qkv", "proj", "fc", "out"))
    # float32 Newton–Schulz, as the reference rule written above (the default is bfloat16)
    opt = Muon(groups, lr=0.02, weight_decay=0.01, adam_lr=3e-3, adam_weight_decay=0.01, ns_dtype=torch.float32)

    twin_params = dict(twin.named_parameters())
    ref_state = {}
    for name, p in model.named_parameters():
        q = twin_params[name]
        ref_state[name] = (
            {"buf": torch.zeros_like(q)}
            if id(p) in muon_ids
            else {"m": torch.zeros_like(q), "v": torch.zeros_like(q), "t": 0}
        )
    for step in range(20):
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
        twin.zero_grad()
        loss_of(twin, step).backward()
        with torch.no_grad():
            for name, p in model.named_parameters():
                q = twin_params[name]
                if id(p) in muon_ids:
                    reference_muon_step(q, q.grad, ref_state[name]["buf"], lr=0.02, weight_decay=0.01)
                else:
                    reference_adamw_step(q, q.grad, ref_state[name], lr=3e-3, weight_decay=0.01)
    for name, p in model.named_parameters():
        # float32, the same maths in a different order (lerp vs mul/add): differences of ~1e-7
        # per step, carried through 20 steps of NS and the network: well inside 1e-5
        torch.testing.assert_close(p, twin_params[name], rtol=0, atol=1e-5, msg=name)
    # and the run moved the weights by much more than the tolerance
    assert max(float((p - q).abs().max()) for p, q in zip(model.parameters(), TinyTransformer().parameters())) > 0.1


def test_muon_update_flattens_conv_weights_and_leaves_grad_alone():
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(8, 3, 3, 3, generator=g)
    grad_before = grad.clone()
    buf = torch.zeros_like(grad)
    ref_buf = torch.zeros_like(grad)
    for nesterov in (True, False):
        out = muon_update(grad, buf, beta=0.9, ns_steps=5, nesterov=nesterov, ns_dtype=torch.float32)
        assert torch.equal(grad, grad_before)
        p = torch.zeros_like(grad)
        reference_muon_step(p, grad, ref_buf, lr=-1.0, beta=0.9, nesterov=nesterov)  # p = +update
        # float32 round-off; addmm folds the scale-and-add, so the rounding order differs from
        # the reference's b*A + c*A@A: ~1e-6 per entry after 5 steps (entries of size ~0.3)
        torch.testing.assert_close(out, p, rtol=0, atol=1e-5)
        assert out.shape == grad.shape


def test_tall_matrix_update_is_scaled_by_sqrt_aspect_ratio():
    g = torch.Generator().manual_seed(4)
    grad = torch.randn(48, 12, generator=g, dtype=torch.float64)
    out = muon_update(grad, torch.zeros_like(grad), beta=0.0, ns_steps=5, nesterov=False, ns_dtype=torch.float64)
    # with β = 0 the update is NS(G)·√(48/12) = 2·NS(G); NS asked in float64 stays float64
    torch.testing.assert_close(out, 2 * reference_newton_schulz5(grad.double()).double(), rtol=0, atol=1e-5)
    wide = muon_update(
        grad.T.contiguous(), torch.zeros(12, 48, dtype=torch.float64), 0.0, 5, False, ns_dtype=torch.float64
    )
    torch.testing.assert_close(wide, out.T / 2, rtol=0, atol=1e-12)  # wide: scale 1


def test_decoupled_weight_decay_with_zero_gradient():
    W = nn.Parameter(torch.ones(4, 3))
    opt = Muon([W], lr=0.1, weight_decay=0.5)
    W.grad = torch.zeros(4, 3)
    opt.step()
    # NS(0) = 0, so only W ← (1 − lr·wd) W = 0.95 W remains
    assert torch.equal(W.detach(), torch.full((4, 3), 1 - 0.1 * 0.5))


def test_param_groups_and_validation():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    # a plain list is split by ndim: weights on Muon, biases on AdamW with the reference defaults
    opt = Muon(model.parameters())
    muon_group, adam_group = opt.param_groups
    assert muon_group["use_muon"] and not adam_group["use_muon"]
    assert [p.ndim for p in muon_group["params"]] == [2, 2] and [p.ndim for p in adam_group["params"]] == [1, 1]
    assert (
        muon_group["lr"],
        muon_group["momentum"],
        muon_group["nesterov"],
        muon_group["ns_steps"],
        muon_group["weight_decay"],
    ) == (0.02, 0.95, True, 5, 0.0)
    assert (adam_group["lr"], adam_group["betas"], adam_group["eps"], adam_group["weight_decay"]) == (
        3e-4,
        (0.9, 0.95),
        1e-10,
        0.0,
    )
    # the recipe puts the head (last Linear) on AdamW
    groups = muon_param_groups(model)
    assert [tuple(p.shape) for p in groups[0]["params"]] == [(8, 4)]
    with pytest.raises(ValueError, match="ndim < 2"):
        Muon([{"params": [model[0].bias], "use_muon": True}])
    with pytest.raises(ValueError, match="use_muon"):
        Muon([{"params": list(model.parameters()), "lr": 0.1}])
    with pytest.raises(ValueError, match="momentum"):
        Muon([{"params": [model[0].weight], "use_muon": True, "momentum": 1.5}])
    with pytest.raises(ValueError, match="betas"):
        Muon([{"params": [model[0].bias], "use_muon": False, "betas": (0.9, 1.0)}])


def test_muon_trains_the_transformer():
    torch.manual_seed(1)
    model = TinyTransformer()
    opt = Muon(muon_param_groups(model), lr=0.02, adam_lr=3e-3)
    x, y = batch(0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 13), y.reshape(-1))
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    # memorizing one batch of 32 random tokens: from ~ln 13 = 2.56 to well below
    assert loss.item() < 0.5 * first and math.isfinite(loss.item())


# --- issue 17: torch.optim.Muon's configuration, the reference package, named parameters ----


def _two_layer_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)]  # wide and tall
    X = torch.randn(32, 8, generator=g)
    return weights, X


def _train(opt, params, X, steps=10):
    for _ in range(steps):
        opt.zero_grad()
        # a loss whose gradients change from step to step, so that momentum and NS matter
        h = torch.tanh(X @ params[0].T)
        ((h @ params[1]) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_torch_style_configuration_reproduces_torch_optim_muon(adjust_lr_fn, nesterov):
    weights, X = _two_layer_problem()
    ours = [nn.Parameter(w.clone()) for w in weights]
    theirs = [nn.Parameter(w.clone()) for w in weights]
    opt = Muon(ours, lr=1e-2, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn, ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon(theirs, lr=1e-2, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    _train(opt, ours, X)
    _train(ref, theirs, X)
    for a, b, w in zip(ours, theirs, weights):
        assert not torch.equal(a, w)
        # the same bfloat16 kernels (addmm) in the same order: bit for bit
        assert torch.equal(a, b)
        torch.testing.assert_close(opt.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"], rtol=0, atol=0)


def test_default_matches_kellerjordan_muon_package():
    """The default (bfloat16 NS, update scaled by max(1, rows/cols)^½) against KellerJordan/Muon."""
    muon_reference = pytest.importorskip("muon", reason="muon-optimizer (KellerJordan/Muon) is a dev dependency")
    weights, X = _two_layer_problem(1)
    ours = [nn.Parameter(w.clone()) for w in weights]
    theirs = [nn.Parameter(w.clone()) for w in weights]
    opt = Muon([{"params": ours, "use_muon": True}], lr=0.02, weight_decay=0.01, ns_dtype=torch.bfloat16)
    ref = muon_reference.SingleDeviceMuonWithAuxAdam(
        [{"params": theirs, "use_muon": True, "lr": 0.02, "weight_decay": 0.01}]
    )
    _train(opt, ours, X)
    _train(ref, theirs, X)
    for a, b, w in zip(ours, theirs, weights):
        moved = float((a - w).abs().max())
        assert moved > 0.05, moved
        # both run NS in bfloat16; the reference rounds b*A, c*A@A and their sum separately where
        # addmm rounds once, so each update differs by bfloat16 round-off compounded over 5 NS
        # iterations (~2.5% of an entry of size ≤ 1): 10 steps × lr 0.02 × 2.5% = 5e-3 at most,
        # a tenth of how far the weights moved
        torch.testing.assert_close(a, b, rtol=0, atol=5e-3)


def test_bfloat16_update_is_close_to_the_exact_polar_factor_direction():
    """NS in bfloat16 still gives U S' Vᵀ with S' in Muon's band: compare with the SVD's U Vᵀ."""
    from gd_lib.linalg import polar_factor
    from gd_lib.optim.muon import muon_orthogonalize

    g = torch.Generator().manual_seed(5)
    G = torch.randn(32, 64, generator=g, dtype=torch.float64)
    O = muon_orthogonalize(G, 5, ns_dtype=torch.bfloat16).double()  # noqa: E741 (the paper's O)
    exact = polar_factor(G)
    # singular values of O in U's basis: Uᵀ O V ≈ diag(S'), with S' in about [0.68, 1.21] for
    # every σ ≥ 0.003‖G‖_F (the float64 band; bfloat16 adds ~1% of round-off, hence 0.6 / 1.3)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    projected = U.T @ O @ Vh.T
    diagonal = projected.diagonal()
    assert float(diagonal.min()) > 0.6 and float(diagonal.max()) < 1.3
    off_diagonal = projected - torch.diag(diagonal)
    assert float(off_diagonal.abs().max()) < 0.05
    # and the direction is the polar factor's: cosine similarity above 0.98
    cosine = float((O * exact).sum() / (O.norm() * exact.norm()))
    assert cosine > 0.98


def test_float32_option_is_closer_to_the_polar_factor_than_bfloat16():
    from gd_lib.linalg import newton_schulz, polar_factor
    from gd_lib.optim.muon import muon_orthogonalize

    g = torch.Generator().manual_seed(6)
    G = torch.randn(24, 40, generator=g)
    exact64 = newton_schulz(G.double(), 5, dtype=torch.float64)  # the same polynomial, exactly
    err16 = float((muon_orthogonalize(G, 5, ns_dtype=torch.bfloat16).double() - exact64).abs().max())
    err32 = float((muon_orthogonalize(G, 5, ns_dtype=torch.float32).double() - exact64).abs().max())
    assert err32 < 1e-4 < err16
    assert polar_factor(G).shape == G.shape


def test_named_parameters_are_accepted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    opt = Muon(model.named_parameters(), lr=0.02)
    ref = Muon(twin.parameters(), lr=0.02)
    names = [n for g in opt.param_groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    X = torch.randn(16, 6)
    for m, o in ((model, opt), (twin, ref)):
        for _ in range(3):
            o.zero_grad()
            m(X).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert "param_names" in opt.state_dict()["param_groups"][0]


def test_muon_options_are_validated():
    W = nn.Parameter(torch.ones(4, 3))
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon([W], adjust_lr_fn="moonshot")
    with pytest.raises(ValueError, match="ns_coefficients"):
        Muon([W], ns_coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([W], ns_dtype=torch.int32)
    with pytest.raises(ValueError, match="eps"):
        Muon([W], eps=-1.0)


def test_default_newton_schulz_dtype_is_bfloat16_where_it_is_native():
    from gd_lib.linalg import fast_bfloat16_matmul, muon_newton_schulz_dtype
    from gd_lib.optim.muon import muon_orthogonalize

    assert fast_bfloat16_matmul("cuda") and muon_newton_schulz_dtype("cuda") == torch.bfloat16
    assert muon_newton_schulz_dtype("cuda", torch.float64) == torch.bfloat16  # as the references
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert muon_newton_schulz_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    # float64 on a CPU stays float64 (exact references in tests and assignments)
    assert muon_newton_schulz_dtype("cpu", torch.float64) == torch.float64
    G = torch.randn(8, 16)
    assert muon_orthogonalize(G, 5).dtype == muon_newton_schulz_dtype("cpu")
    assert muon_orthogonalize(G.double(), 5).dtype == torch.float64
    assert muon_orthogonalize(G, 5, ns_dtype=torch.bfloat16).dtype == torch.bfloat16
