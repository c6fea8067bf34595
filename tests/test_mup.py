"""Tests of gd_lib.mup: base shapes, μP init and learning rates, the coordinate
check and μTransfer of the Adam learning rate.

Expected multipliers are written by hand from Table 3 of Yang et al. (2022)
("Tensor Programs V"); trajectories are compared with torch.optim.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gd_lib import mup
from gd_lib.models import MLP, TinyTransformer

# ----------------------------------------------------------------------------
# models used by the tests
# ----------------------------------------------------------------------------


class ReadoutMLP(nn.Module):
    """A 2-hidden-layer MLP whose output layer is a MuReadout (the mup package's form)."""

    def __init__(self, width, d_in=16, n_out=10, readout_zero_init=False):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.fc2 = nn.Linear(width, width)
        self.readout = mup.MuReadout(width, n_out, readout_zero_init=readout_zero_init)

    def forward(self, x):
        return self.readout(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def course_mlp(width):
    return MLP(16, [width, width], 10)


VOCAB, CONTEXT = 32, 8


def transformer(width, parametrization="mup", base_width=64, heads=4):
    # μP: 1/d attention, equal to SP's 1/sqrt(d) at the base head dimension
    scale = mup.attention_scale(width // heads, base_width // heads, parametrization)
    return TinyTransformer(VOCAB, CONTEXT, width=width, depth=1, heads=heads, attn_scale=scale)


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def classification_data(n=64, d_in=16, classes=10, seed=123):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, classes, (n,), generator=g)


def token_data(batch=8, seed=5):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (batch, CONTEXT + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def shapes_of(make, width):
    with torch.random.fork_rng(devices=[]):
        return {n: tuple(p.shape) for n, p in make(width).named_parameters()}


# ----------------------------------------------------------------------------
# base shapes and the per-parameter rules
# ----------------------------------------------------------------------------


def test_infshape_of_a_matrix_and_a_vector():
    s = mup.zip_infshape((64, 64), (256, 512))
    assert s.ninf == 2 and s.fanout_mult == 4.0 and s.fanin_mult == 8.0
    assert s.width_mult == 8.0  # the main dimension of a matrix is its fan-in
    v = mup.zip_infshape((64, 16), (256, 16))
    assert v.ninf == 1 and v.width_mult == 4.0 and v.fanin_mult == 1.0
    # a delta shape decides which dims are widths even at the base width
    at_base = mup.zip_infshape((64, 16), (64, 16), delta_shape=(128, 16))
    assert at_base.ninf == 1 and at_base.width_mult == 1.0
    assert mup.zip_infshape((64, 16), (64, 16)).ninf == 0


def test_roles_and_multipliers_of_the_course_mlp_match_table_3():
    # width 256 against base 64: m = 4 on every width dimension
    model = course_mlp(256)
    rows = {r["name"]: r for r in mup.mup_table(model, shapes_of(course_mlp, 64), "adam")}
    sgd = {r["name"]: r for r in mup.mup_table(model, shapes_of(course_mlp, 64), "sgd")}
    expected = {
        # name:            (role,     Adam lr, SGD lr, init (fan-in SP init))
        "layers.0.weight": ("vector", 1.0, 4.0, 1.0),  # input weights: fan-out is the width
        "layers.0.bias": ("vector", 1.0, 4.0, 1.0),  # fan-in 16 is finite: bias stays
        "layers.1.weight": ("hidden", 0.25, 1.0, 1.0),  # Adam 1/fan_in, SGD fan_out/fan_in
        "layers.1.bias": ("vector", 1.0, 4.0, 2.0),  # drawn ~1/sqrt(fan_in): times sqrt(4)
        "layers.2.weight": ("output", 0.25, 0.25, 0.5),  # variance 1/fan_in^2, lr 1/fan_in
        "layers.2.bias": ("finite", 1.0, 1.0, 2.0),
    }
    assert set(rows) == set(expected)
    for name, (role, adam_lr, sgd_lr, init) in expected.items():
        assert rows[name]["role"] == role, name
        assert rows[name]["lr_mult"] == adam_lr, name
        assert sgd[name]["lr_mult"] == sgd_lr, name
        assert rows[name]["init_mult"] == init, name


def test_readout_form_multipliers():
    model = ReadoutMLP(256)
    rows = {r["name"]: r for r in mup.mup_table(model, shapes_of(ReadoutMLP, 64), "adam")}
    sgd = {r["name"]: r for r in mup.mup_table(model, shapes_of(ReadoutMLP, 64), "sgd")}
    assert rows["readout.weight"]["role"] == "readout"
    assert rows["readout.weight"]["init_mult"] == 2.0  # sqrt(m): SP-size stored weight
    assert rows["readout.weight"]["lr_mult"] == 1.0  # the forward's 1/m does the scaling
    assert sgd["readout.weight"]["lr_mult"] == 4.0


def test_set_base_shapes_rescales_exactly_the_sp_draws():
    torch.manual_seed(0)
    sp = course_mlp(256)
    torch.manual_seed(0)
    model = course_mlp(256)
    mup.set_base_shapes(model, shapes_of(course_mlp, 64))
    # multipliers 0.5 and 2 are powers of two: the products are exact
    assert torch.equal(model.layers[1].weight, sp.layers[1].weight)
    assert torch.equal(model.layers[1].bias, 2.0 * sp.layers[1].bias)
    assert torch.equal(model.layers[2].weight, 0.5 * sp.layers[2].weight)
    assert torch.equal(model.layers[0].weight, sp.layers[0].weight)


def test_constant_sp_init_scales_hidden_weights_by_inverse_sqrt_width():
    base = shapes_of(transformer, 64)
    torch.manual_seed(1)
    sp = transformer(256)
    torch.manual_seed(1)
    model = transformer(256)
    mup.set_base_shapes(model, base, sp_init="constant")
    qkv = "blocks.0.attn.qkv.weight"
    params, sp_params = dict(model.named_parameters()), dict(sp.named_parameters())
    assert torch.equal(params[qkv], 0.5 * sp_params[qkv])  # 1/sqrt(4)
    assert torch.equal(params["head.weight"], 0.25 * sp_params["head.weight"])  # 1/m
    assert torch.equal(params["token_embedding.weight"], sp_params["token_embedding.weight"])


def test_mureadout_forward_divides_by_the_width_multiplier():
    torch.manual_seed(0)
    sp = ReadoutMLP(256)
    torch.manual_seed(0)
    model = ReadoutMLP(256)
    mup.set_base_shapes(model, shapes_of(ReadoutMLP, 64))
    assert model.readout.width_mult == 4.0
    assert torch.equal(model.readout.weight, 2.0 * sp.readout.weight)
    x = torch.randn(5, 256)
    expected = F.linear(x / 4.0, model.readout.weight, model.readout.bias)
    torch.testing.assert_close(model.readout(x), expected, rtol=1e-6, atol=1e-7)  # reordered ops


def test_readout_zero_init_keeps_the_other_draws():
    torch.manual_seed(3)
    a = ReadoutMLP(128)
    torch.manual_seed(3)
    b = ReadoutMLP(128, readout_zero_init=True)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and torch.equal(a.fc2.bias, b.fc2.bias)
    assert not b.readout.weight.any() and not b.readout.bias.any()


def test_param_groups_apply_the_multipliers_in_one_sgd_step():
    # one plain SGD step moves each parameter by -lr * multiplier * grad (hand multipliers, m = 4)
    torch.manual_seed(0)
    model = course_mlp(256)
    base = shapes_of(course_mlp, 64)
    mup.set_base_shapes(model, base)
    x, y = classification_data()
    lr = 0.1
    expected_mult = {
        "layers.0.weight": 4.0,
        "layers.0.bias": 4.0,
        "layers.1.weight": 1.0,
        "layers.1.bias": 4.0,
        "layers.2.weight": 0.25,
        "layers.2.bias": 1.0,
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(mup.mup_param_groups(model, base, "sgd", lr=lr))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for name, p in model.named_parameters():
        naive = before[name] - lr * expected_mult[name] * p.grad
        torch.testing.assert_close(p.detach(), naive, rtol=1e-6, atol=1e-7)  # same float32 maths


def test_param_groups_work_with_gd_lib_optimizers():
    from gd_lib.optim import Adam as GdAdam

    x, y = classification_data()
    base = shapes_of(course_mlp, 64)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = course_mlp(128)
        mup.set_base_shapes(m, base)
        models.append(m)
    opts = [
        torch.optim.Adam(mup.mup_param_groups(models[0], base, "adam", lr=1e-2, weight_decay=1e-3)),
        GdAdam(mup.mup_param_groups(models[1], base, "adam", lr=1e-2, weight_decay=1e-3)),
    ]
    assert [g["lr"] for g in opts[0].param_groups] == [1e-2, 1e-2 / 2]
    assert [g["weight_decay"] for g in opts[0].param_groups] == [1e-3, 2e-3]
    for _ in range(3):
        for m, opt in zip(models, opts):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        # gd_lib's Adam matches torch's trajectory; float32 reordering only
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# μP at the base width is SP
# ----------------------------------------------------------------------------


def _train(model, groups, family, x, y, loss_fn, steps=5):
    cls = torch.optim.Adam if family == "adam" else torch.optim.SGD
    opt = cls(groups, momentum=0.9) if family == "sgd" else cls(groups)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model


CASES = {
    "course_mlp": (course_mlp, classification_data, F.cross_entropy, "fan_in"),
    "readout_mlp": (ReadoutMLP, classification_data, F.cross_entropy, "fan_in"),
    "transformer": (transformer, token_data, lm_loss, "constant"),
}


@pytest.mark.parametrize("family", ["adam", "sgd"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_mup_at_base_width_equals_sp_exactly(case, family):
    make, data, loss_fn, sp_init = CASES[case]
    x, y = data()
    base, delta = shapes_of(make, 64), shapes_of(make, 128)
    lr = 1e-2 if family == "adam" else 0.05

    torch.manual_seed(0)
    sp = make(64)
    sp_groups = mup.mup_param_groups(sp, base, family, lr, parametrization="sp")
    torch.manual_seed(0)
    mu = make(64)
    mup.set_base_shapes(mu, base, delta, sp_init=sp_init)
    mu_groups = mup.mup_param_groups(mu, base, family, lr, delta_model=delta)

    # the delta model marks the width dims as infinite, yet every multiplier is 1
    assert any(r["role"] == "hidden" for r in mup.mup_table(mu, base, family, delta))
    assert [g["lr"] for g in mu_groups] == [g["lr"] for g in sp_groups] == [lr]
    for p, q in zip(sp.parameters(), mu.parameters()):
        assert torch.equal(p, q)
    _train(sp, sp_groups, family, x, y, loss_fn)
    _train(mu, mu_groups, family, x, y, loss_fn)
    for p, q in zip(sp.parameters(), mu.parameters()):
        assert torch.equal(p, q)


def test_mup_away_from_base_width_differs_from_sp():
    # the counterpart of the test above: at twice the base width the trajectories part
    x, y = classification_data()
    base, delta = shapes_of(course_mlp, 64), shapes_of(course_mlp, 128)
    torch.manual_seed(0)
    sp = course_mlp(128)
    sp_groups = mup.mup_param_groups(sp, base, "adam", 1e-2, parametrization="sp")
    torch.manual_seed(0)
    mu = course_mlp(128)
    mup.set_base_shapes(mu, base, delta)
    _train(sp, sp_groups, "adam", x, y, F.cross_entropy)
    _train(mu, mup.mup_param_groups(mu, base, "adam", 1e-2, delta_model=delta), "adam", x, y, F.cross_entropy)
    assert not torch.equal(sp.layers[1].weight, mu.layers[1].weight)


# ----------------------------------------------------------------------------
# attention scale and argument checks
# ----------------------------------------------------------------------------


def test_attention_scale():
    assert mup.attention_scale(16, parametrization="sp") == 0.25
    assert mup.attention_scale(16, 16) == 0.25  # μP = SP at the base
    assert mup.attention_scale(64, 16) == pytest.approx(0.25 / 4, rel=1e-15)  # ∝ 1/d
    assert mup.attention_scale(64) == 1 / 64
    with pytest.raises(ValueError, match="head_dim"):
        mup.attention_scale(0)
    with pytest.raises(ValueError, match="parametrization"):
        mup.attention_scale(16, parametrization="ntk")


def test_bad_arguments_raise():
    model = course_mlp(128)
    base = shapes_of(course_mlp, 64)
    with pytest.raises(ValueError, match="parametrization"):
        mup.mup_param_groups(model, base, parametrization="ntk")
    with pytest.raises(ValueError, match="family"):
        mup.mup_param_groups(model, base, family="lamb")
    with pytest.raises(ValueError, match="lr"):
        mup.mup_param_groups(model, base, lr=-1.0)
    with pytest.raises(ValueError, match="sp_init"):
        mup.set_base_shapes(model, base, sp_init="xavier")
    with pytest.raises(ValueError, match="different parameters"):
        mup.get_infshapes(model, shapes_of(ReadoutMLP, 64))

    def tied(width):
        return TinyTransformer(VOCAB, CONTEXT, width=width, depth=1, heads=4, tie_weights=True)

    with pytest.raises(ValueError, match="shared"):
        mup.set_base_shapes(tied(64), shapes_of(tied, 32))


def test_readout_must_be_prepared_before_param_groups():
    model = ReadoutMLP(128)
    with pytest.raises(ValueError, match="set_base_shapes"):
        mup.mup_param_groups(model, shapes_of(ReadoutMLP, 64))


# ----------------------------------------------------------------------------
# coordinate check
# ----------------------------------------------------------------------------


def test_coord_check_records_the_layer_outputs():
    # a naive recomputation of step 0 (before any update) of one width
    x, y = classification_data()
    result = mup.coord_check(course_mlp, [64], x, y, base_width=64, steps=1, module_names=["layers.0", "layers.1"])
    torch.manual_seed(0)
    model = course_mlp(64)  # the base width: μP init is the SP init
    h1 = model.layers[0](x)
    h2 = model.layers[1](torch.relu(h1))
    assert result["layers"] == ["layers.0", "layers.1"]
    assert result["activation_l1"].shape == (1, 2, 2)
    # float32 means computed by the same ops: 1e-6
    np.testing.assert_allclose(
        result["activation_l1"][0, :, 0], [h1.abs().mean().item(), h2.abs().mean().item()], rtol=1e-6
    )
    np.testing.assert_allclose(result["activation_rms"][0, 0, 0], h1.pow(2).mean().sqrt().item(), rtol=1e-6)
    assert result["update_l1"][0, 0, 0] == 0.0 and result["update_l1"][0, 0, 1] > 0
    np.testing.assert_allclose(result["loss"][0, 0], F.cross_entropy(model(x), y).item(), rtol=1e-6)


def test_coord_check_flat_under_mup_and_growing_under_sp():
    x, y = classification_data()
    widths = [64, 256, 1024]
    layers = ["layers.0", "layers.1", "layers.2"]
    ratios = {}
    for parametrization in ("mup", "sp"):
        r = mup.coord_check(
            course_mlp,
            widths,
            x,
            y,
            base_width=64,
            parametrization=parametrization,
            family="adam",
            lr=1e-2,
            steps=5,
            seeds=(0, 1),
            module_names=layers,
        )
        ratios[parametrization] = (mup.growth_ratio(r, "activation_l1"), mup.growth_ratio(r, "update_l1")[:, 1:])
    act, upd = ratios["mup"]
    # μP: width 64 -> 1024 changes no coordinate size by more than 20% (finite-width noise)
    assert act.max() <= 1.2, act
    assert upd.max() <= 1.2, upd
    assert upd.min() >= 1 / 1.2, upd  # and the updates do not vanish either
    act, upd = ratios["sp"]
    # SP with Adam: the hidden and output layers' updates grow ~ width (16x); demand 3x
    assert upd[1:].min() >= 3.0, upd
    assert act[1:, 1:].min() >= 3.0, act


@pytest.mark.slow
def test_coord_check_transformer_flat_under_mup_and_growing_under_sp():
    x, y = token_data()
    widths = [64, 256, 512]
    out = {}
    for parametrization in ("mup", "sp"):
        r = mup.coord_check(
            lambda w, parametrization=parametrization: transformer(w, parametrization),
            widths,
            x,
            y,
            base_width=64,
            parametrization=parametrization,
            lr=3e-3,
            steps=5,
            seeds=(0, 1),
            loss_fn=lm_loss,
            sp_init="constant",
        )
        out[parametrization] = (r["layers"], mup.growth_ratio(r, "update_l1")[:, 1:])
    layers, upd = out["mup"]
    # μP with 1/d attention, 8x wider: no layer's update grows by more than 20%
    assert upd.max() <= 1.2, dict(zip(layers, upd.max(axis=1)))
    layers, upd = out["sp"]
    grows = dict(zip(layers, upd[:, -1]))
    # SP: the attention output projection and the MLP output blow up with width
    assert grows["blocks.0.attn.proj"] >= 3.0 and grows["blocks.0.mlp.2"] >= 3.0, grows


# ----------------------------------------------------------------------------
# μTransfer of the Adam learning rate
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_optimal_adam_lr_transfers_under_mup_and_drifts_under_sp():
    # 128 random labels, full batch, 15 Adam steps; lr grid of factor 2
    x, y = classification_data(n=128)
    lrs = [2.0**k for k in range(-9, -1)]
    widths = [64, 256, 1024]
    best = {}
    for parametrization in ("mup", "sp"):
        r = mup.lr_sweep(
            course_mlp, widths, lrs, x, y, base_width=64, parametrization=parametrization, family="adam", steps=15
        )
        best[parametrization] = r["best_index"]
        assert np.isfinite(r["loss"][:, 0]).all()
    # μP: the best lr moves by at most one grid step from width 64 to 1024
    assert np.ptp(best["mup"]) <= 1, best
    # SP: the best lr falls with width, by at least 3 grid steps (8x) from 64 to 1024
    assert best["sp"][0] - best["sp"][-1] >= 3, best
    assert np.all(np.diff(best["sp"]) <= 0), best


# ----------------------------------------------------------------------------
# the package's seams and its names
# ----------------------------------------------------------------------------

# every name gd_lib/mup.py exported before it became a package, and where each lives now
SEAMS = {
    "shapes": ["InfDim", "InfShape", "zip_infshape", "get_infshapes"],
    "readout": ["MuReadout"],
    "rules": [
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
    ],
    "coordinate_check": ["coord_stats", "coord_check", "growth_ratio", "lr_sweep"],
}


def test_every_former_name_is_importable_from_gd_lib_mup_and_lives_in_its_seam():
    import importlib

    for seam, names in SEAMS.items():
        module = importlib.import_module(f"gd_lib.mup.{seam}")
        for name in names:
            assert name in mup.__all__, name
            assert getattr(mup, name) is getattr(module, name), (seam, name)
    exported = {name for names in SEAMS.values() for name in names}
    assert set(mup.__all__) - exported == {"parameter_shapes"}


def test_the_family_names_the_multiplier_family_and_its_former_keyword_is_gone():
    """``family`` is recorded in the result; ``optimizer=`` (its former name) is no longer accepted."""
    x, y = classification_data()
    kwargs = dict(base_width=64, steps=1, module_names=["layers.1"])
    result = mup.coord_check(course_mlp, [64], x, y, family="sgd", lr=0.1, **kwargs)
    assert result["family"] == "sgd" and "optimizer" not in result
    assert result["update_l1"][0, 0, 1] > 0
    with pytest.raises(TypeError, match="optimizer"):
        mup.coord_check(course_mlp, [64], x, y, optimizer="sgd", lr=0.1, **kwargs)
    with pytest.raises(TypeError, match="optimizer"):
        mup.lr_sweep(course_mlp, [64], [0.1], x, y, optimizer="adam", base_width=64, steps=1)
