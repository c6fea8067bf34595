"""gd_lib.models: shapes, the forward pass against a naive version, init statistics, causality."""

import math

import pytest
import torch
import torch.nn.functional as F

from gd_lib.models import MLP, DeepReLUNet, SmallCNN, TinyTransformer, causal_attention, init_weight_

# --- MLP ---------------------------------------------------------------------------------


def naive_mlp(model: MLP, x, activation=torch.relu, residual=False):
    """The MLP's equation written out with the layer matrices."""
    h = x.flatten(1)
    for layer in model.layers[:-1]:
        z = activation(h @ layer.weight.T + layer.bias)
        h = h + z if residual and z.shape == h.shape else z
    last = model.layers[-1]
    return model.output_multiplier * (h @ last.weight.T + last.bias)


@pytest.mark.parametrize("widths", [[], [7], [5, 9, 3]])
def test_mlp_shapes_and_forward_match_naive(widths):
    torch.manual_seed(0)
    model = MLP(6, widths, 4)
    x = torch.randn(11, 6)
    assert model(x).shape == (11, 4)
    assert len(model.layers) == len(widths) + 1
    # same maths, same op order up to matmul blocking: float32 round-off ~1e-6
    torch.testing.assert_close(model(x), naive_mlp(model, x), rtol=1e-5, atol=1e-6)


def test_mlp_flattens_images_and_activation_choice():
    torch.manual_seed(0)
    model = MLP(64, [16], 10, activation="tanh")
    images = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(images), model(images.reshape(3, 64)))
    torch.testing.assert_close(model(images), naive_mlp(model, images, activation=torch.tanh), rtol=1e-5, atol=1e-6)


def test_mlp_residual_connections():
    torch.manual_seed(0)
    model = MLP(5, [8, 8, 8], 2, residual=True)
    plain = MLP(5, [8, 8, 8], 2, residual=False)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 5)
    torch.testing.assert_close(model(x), naive_mlp(model, x, residual=True), rtol=1e-5, atol=1e-6)
    # the skips change the function (so the check above can fail)
    assert not torch.allclose(model(x), plain(x))


def test_mlp_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = MLP(5, [64, 64], 3, dropout=0.5)
    x = torch.randn(8, 5)
    model.eval()
    torch.testing.assert_close(model(x), naive_mlp(model, x), rtol=1e-5, atol=1e-6)
    model.train()
    assert not torch.allclose(model(x), naive_mlp(model, x))


def test_mlp_roles_hook_and_output_multiplier():
    seen = []
    model = MLP(3, [4, 4], 2, init_hook=seen.append, output_multiplier=0.5)
    assert seen == [model]
    roles = [role for _, _, role in model.layer_roles()]
    assert roles == ["input", "hidden", "output"]
    assert model.input_layer is model.layers[0] and model.output_layer is model.layers[-1]
    x = torch.randn(2, 3)
    _, hidden = model.forward_with_hidden(x)
    assert [h.shape for h in hidden] == [(2, 4), (2, 4)]
    torch.testing.assert_close(model(x), naive_mlp(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(in_features=0, widths=[3], out_features=2), "in_features"),
        (dict(in_features=3, widths=[3, -1], out_features=2), "widths[1]"),
        (dict(in_features=3, widths=[3], out_features=2, dropout=1.0), "dropout"),
        (dict(in_features=3, widths=[3], out_features=2, activation="swish!"), "activation"),
        (dict(in_features=3, widths=[3], out_features=2, init="he"), "init"),
        (dict(in_features=3, widths=[3], out_features=2, init="normal", sigma=-1.0), "sigma"),
    ],
)
def test_mlp_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        MLP(**kwargs)


# --- init schemes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "init,sigma,expected_std",
    [
        ("normal", 0.3, lambda fi, fo: 0.3),
        ("xavier", 1.0, lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("kaiming", 1.0, lambda fi, fo: math.sqrt(2 / fi)),
        ("kaiming", 2.0, lambda fi, fo: 2 * math.sqrt(2 / fi)),
    ],
)
def test_init_weight_standard_deviation(init, sigma, expected_std):
    fan_out, fan_in = 300, 500
    w = init_weight_(torch.empty(fan_out, fan_in), init, sigma, torch.Generator().manual_seed(0))
    # 150k samples: the sample std has relative error ~1/sqrt(2N) ≈ 0.2%; allow 2%
    assert abs(w.std().item() / expected_std(fan_in, fan_out) - 1) < 0.02
    assert abs(w.mean().item()) < 0.02 * expected_std(fan_in, fan_out)


def test_init_orthogonal_zeros_constant():
    g = torch.Generator().manual_seed(0)
    tall = init_weight_(torch.empty(40, 10), "orthogonal", 1.5, g)
    wide = init_weight_(torch.empty(10, 40), "orthogonal", 1.5, g)
    # QR in float64 then cast to float32: orthogonality holds to float32 round-off
    torch.testing.assert_close(tall.T @ tall, 2.25 * torch.eye(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(wide @ wide.T, 2.25 * torch.eye(10), atol=1e-5, rtol=0)
    assert torch.equal(init_weight_(torch.ones(3, 4), "zeros"), torch.zeros(3, 4))
    assert torch.equal(init_weight_(torch.empty(3, 4), "constant", 2.0), torch.full((3, 4), 0.5))


def second_moments(model, x):
    _, hidden = model.forward_with_hidden(x)
    return torch.stack([h.pow(2).mean() for h in hidden])


def test_kaiming_keeps_activation_scale_constant_with_depth():
    torch.manual_seed(0)
    depth, width, nets = 20, 256, 16
    x = torch.randn(128, width)
    kaiming = torch.stack(
        [second_moments(DeepReLUNet(width, width, depth, 10, init="kaiming"), x) for _ in range(nets)]
    )
    xavier = second_moments(DeepReLUNet(width, width, depth, 10, init="xavier"), x)
    # He et al. eq. 10: E[h_l^2] is the same at every depth (in expectation over the init).
    # One net at width 256 and depth 20 has log(E[h_20^2]/E[h_1^2]) with std ≈ 0.6 (finite-width
    # fluctuations, measured over 40 seeds); the mean over 16 nets has std ≈ 0.15, so [0.5, 2]
    # is more than 3 standard deviations wide.
    ratio = (kaiming / kaiming[:, :1]).mean(0)
    assert ratio.min() > 0.5 and ratio.max() < 2.0, ratio
    # Xavier with ReLU halves the second moment each layer: 2^-19 ≈ 2e-6 after 20 layers.
    assert xavier[-1] / xavier[0] < 1e-4


@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_symmetric_init_gives_identical_hidden_units(init):
    torch.manual_seed(0)
    model = MLP(5, [6, 6], 3, init=init, sigma=None if init == "zeros" else 0.5)
    control = MLP(5, [6, 6], 3, init="kaiming")
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    for net in (model, control):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()

    def units_identical(net):
        _, hidden = net.forward_with_hidden(x)
        rows_equal = all(
            torch.allclose(layer.weight, layer.weight[:1].expand_as(layer.weight), atol=1e-6)
            for layer in net.layers[:-1]
        )
        # identical units: every column of every hidden activation equals the first
        acts_equal = all(torch.allclose(h, h[:, :1].expand_as(h), atol=1e-6) for h in hidden)
        return rows_equal and acts_equal

    assert units_identical(model)
    assert not units_identical(control)


# --- CNN -------------------------------------------------------------------------------------


def test_small_cnn_shapes():
    torch.manual_seed(0)
    model = SmallCNN(channels=4, hidden=16)
    images = torch.randn(5, 1, 8, 8)
    assert model(images).shape == (5, 10)
    torch.testing.assert_close(model(images), model(images.reshape(5, 64)))
    with pytest.raises(ValueError, match="channels"):
        SmallCNN(channels=0)


# --- transformer ------------------------------------------------------------------------------


def naive_attention(q, k, v, scale):
    """Loop over query positions: softmax over the keys at positions 0..i only."""
    out = torch.zeros_like(q)
    for i in range(q.shape[-2]):
        scores = scale * (q[..., i : i + 1, :] @ k[..., : i + 1, :].transpose(-2, -1))
        out[..., i, :] = (torch.softmax(scores, dim=-1) @ v[..., : i + 1, :])[..., 0, :]
    return out


@pytest.mark.parametrize("scale", [0.125, 1 / 8**2])
def test_causal_attention_matches_naive_loop(scale):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    # same maths in float64: ~1e-12
    torch.testing.assert_close(
        causal_attention(q, k, v, scale), naive_attention(q, k, v, scale), rtol=1e-12, atol=1e-12
    )


def test_transformer_shapes_and_sdpa_matches_reference():
    torch.manual_seed(0)
    model = TinyTransformer(vocab_size=11, context_length=9, width=32, depth=2, heads=4).eval()
    tokens = torch.randint(0, 11, (3, 9))
    logits = model(tokens)
    assert logits.shape == (3, 9, 11)
    model.set_attention(use_sdpa=False)
    # fused vs explicit attention: reordered float32 ops, ~1e-6
    torch.testing.assert_close(model(tokens), logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 10, dtype=torch.long))


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_transformer_is_causal(use_sdpa):
    torch.manual_seed(0)
    model = TinyTransformer(vocab_size=13, context_length=10, width=32, depth=2, heads=2, use_sdpa=use_sdpa).eval()
    tokens = torch.randint(0, 13, (4, 10))
    changed = tokens.clone()
    j = 6
    changed[:, j] = (changed[:, j] + 1) % 13
    before, after = model(tokens), model(changed)
    # logits at positions < j see only tokens < j: unchanged up to float32 round-off
    torch.testing.assert_close(after[:, :j], before[:, :j], rtol=0, atol=1e-6)
    # positions >= j do see the change
    assert (after[:, j:] - before[:, j:]).abs().amax() > 1e-3


def test_transformer_tied_head_and_attn_scale():
    torch.manual_seed(0)
    tied = TinyTransformer(17, 8, width=16, depth=1, heads=2, tie_weights=True)
    untied = TinyTransformer(17, 8, width=16, depth=1, heads=2)
    assert tied.head.weight is tied.token_embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == 17 * 16
    assert untied.attn_scale == pytest.approx(1 / math.sqrt(8))
    mup = TinyTransformer(17, 8, width=16, depth=1, heads=2, attn_scale=1 / 8)
    assert mup.attn_scale == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="heads"):
        TinyTransformer(17, 8, width=16, heads=3)
    with pytest.raises(ValueError, match="attn_scale"):
        TinyTransformer(17, 8, width=16, heads=2, attn_scale=-1.0)


def test_transformer_attn_scale_reaches_attention():
    """A model with attn_scale s equals one whose attention is the naive loop with scale s."""
    torch.manual_seed(0)
    model = TinyTransformer(7, 6, width=16, depth=1, heads=2, attn_scale=0.05).eval().double()
    tokens = torch.randint(0, 7, (2, 6))
    attn = model.blocks[0].attn
    captured = {}

    def naive_forward(x):
        B, T, d = x.shape
        q, k, v = attn.qkv(x).view(B, T, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = naive_attention(q, k, v, 0.05)
        captured["y"] = y
        return attn.proj(y.transpose(1, 2).reshape(B, T, d))

    expected_model = TinyTransformer(7, 6, width=16, depth=1, heads=2).eval().double()
    expected_model.load_state_dict(model.state_dict())
    expected_model.blocks[0].attn.forward = naive_forward
    # float64, same maths, fused vs loop: ~1e-12
    torch.testing.assert_close(model(tokens), expected_model(tokens), rtol=1e-10, atol=1e-10)
