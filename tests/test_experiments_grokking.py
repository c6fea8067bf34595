"""Lecture 11, grokking: validation accuracy jumps long after training accuracy hits 100%.

Quick mode (division mod 97, half of the 9,312 pairs for training, one hidden layer of width 128 on
one-hot inputs, AdamW lr 0.1, wd 0.1, β2 = 0.98, full batch, 1,000 steps, eval every 10), measured
when written (seed: memorized / onset (val ≥ 10%) / generalized (val ≥ 95%), peak norm -> norm at
generalized):
seed 0: 30 / 190 / 530, 228 -> 138;  seed 1: 30 / 210 / 570, 228 -> 142;  seed 2: 30 / 200 / 750,
224 -> 148. Validation accuracy at memorization ≈ 1% (chance 1/97); final 99.4-99.96%.
Without weight decay: memorized at step 30, validation accuracy never above 1.3% in 1,000 steps,
weight norm 96 (step 10) -> 279 (step 50) -> 322 (step 1,000).
"""

import numpy as np
import pytest
import torch

from gd_lib.data import modular_arithmetic
from gd_lib.experiments import grokking as g
from gd_lib.models import MLP, TinyTransformer


def test_classic_model_has_about_4e5_non_embedding_parameters():
    config = g.grokking_config(quick=False, setting="classic")
    model = TinyTransformer(config["p"] + 2, 4, width=config["width"], depth=config["depth"], heads=config["heads"])
    d = config["width"]
    # per block: LN 2d, qkv 3d²+3d, proj d²+d, LN 2d, MLP 4d²+4d + 4d²+d  ->  12d² + 13d; final LN 2d
    expected = config["depth"] * (12 * d * d + 13 * d) + 2 * d
    assert g.non_embedding_parameters(model) == expected == 396_800
    # Power et al. 2022: AdamW lr 1e-3, wd 1, batch 512, 10 warm-up steps, a budget of 1e5 steps
    assert (
        config["model"],
        config["p"],
        config["op"],
        config["train_fraction"],
        config["lr"],
        config["weight_decay"],
        config["betas"],
        config["batch_size"],
        config["warmup_steps"],
    ) == ("transformer", 97, "/", 0.5, 1e-3, 1.0, (0.9, 0.98), 512, 10)
    assert g.CLASSIC["steps"] == 100_000


def test_the_mlp_and_the_classic_setting_share_the_task():
    quick, full = g.grokking_config(quick=True), g.grokking_config(quick=False)
    classic = g.grokking_config(quick=False, setting="classic")
    for config in (full, classic):
        assert (quick["p"], quick["op"], quick["train_fraction"]) == (
            config["p"],
            config["op"],
            config["train_fraction"],
        )
    assert quick["model"] == full["model"] == "mlp" and quick["width"] == 128
    assert full["steps"] > quick["steps"]
    with pytest.raises(ValueError, match="setting"):
        g.grokking_config(True, setting="nanda")


def test_full_mode_steps_follow_the_step_scale(monkeypatch):
    monkeypatch.setenv("GD_STEP_SCALE", "0.01")
    assert g.grokking_config(quick=False, setting="classic")["steps"] == 1000  # 1% of 1e5
    assert g.grokking_config(quick=False)["steps"] == 20  # 1% of 2,000
    assert g.grokking_config(quick=True)["steps"] == g.QUICK["steps"]
    assert g.grokking_config(quick=False, steps=7)["steps"] == 7  # an explicit override wins


def test_modular_mlp_is_an_mlp_on_one_hot_codes():
    # the reference: gd_lib.models.MLP(2p, [width], p) on [e_a; e_b], with the same weights
    p, width = 11, 16
    torch.manual_seed(0)
    model = g.ModularMLP(p, width)
    reference = MLP(2 * p, [width], p)
    with torch.no_grad():
        reference.layers[0].weight.copy_(model.input_weight.T)
        reference.layers[0].bias.copy_(model.input_bias)
        reference.layers[1].weight.copy_(model.out.weight)
        reference.layers[1].bias.copy_(model.out.bias)
    X = modular_arithmetic(p, "/", 0.5).X_train
    one_hot = torch.cat([torch.nn.functional.one_hot(X[:, 0], p), torch.nn.functional.one_hot(X[:, 2], p)], 1)
    # the same sums in another order: float32 rounding
    assert torch.allclose(model(X), reference(one_hot.float()), rtol=1e-5, atol=1e-6)
    # torch's default init of nn.Linear(2p, width): U(±1/sqrt(2p))
    assert model.input_weight.abs().max() <= 1 / np.sqrt(2 * p)
    with pytest.raises(ValueError, match="width"):
        g.ModularMLP(p, 0)


def test_grokking_phases_on_a_hand_made_curve():
    steps = np.array([10, 20, 40, 80, 160, 320])
    train = np.array([0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    val = np.array([0.01, 0.01, 0.02, 0.3, 0.96, 0.99])
    norm = np.array([5.0, 9.0, 8.0, 7.0, 4.0, 3.0])
    phases = g.grokking_phases(steps, train, val, norm)
    assert (phases["memorized_step"], phases["onset_step"], phases["generalized_step"]) == (20, 80, 160)
    assert phases["plateau_ratio"] == 4.0 and phases["rise_ratio"] == 2.0
    assert phases["val_at_memorized"] == 0.01 and phases["stays"] is True
    assert phases["peak_norm"] == 9.0 and phases["norm_at_generalized"] == 4.0
    # a dip below 90% after generalizing means it did not stay
    assert g.grokking_phases(steps, train, [0.01, 0.01, 0.02, 0.96, 0.5, 0.99], norm)["stays"] is False
    # never generalized: the missing entries are None, not a crash
    none = g.grokking_phases(steps, train, np.full(6, 0.01), norm)
    assert none["generalized_step"] is None and none["rise_ratio"] is None and none["stays"] is None


def test_first_step_reaching_and_config_checks():
    assert g.first_step_reaching([10, 20, 30], [0.5, 0.96, 1.0], 0.95) == 20
    assert g.first_step_reaching([10, 20], [0.5, 0.6], 0.95) is None
    with pytest.raises(ValueError, match="width_typo"):
        g.grokking_config(True, width_typo=3)
    with pytest.raises(ValueError, match="model"):
        g.grokking_config(True, model="cnn")


def test_a_run_that_never_generalizes_reports_none():
    # the transformer (full mode's model) for a few steps: the full-mode code path, and the
    # fields a lecture formats are None rather than a number when a phase was not reached
    result = g.grokking_run(
        quick=False, setting="classic", device="cpu", p=11, width=16, depth=1, steps=6, eval_every=3, batch_size=16
    )
    assert result["config"]["model"] == "transformer" and result["steps_taken"] == 6
    assert result["generalized_step"] is None and result["delay_ratio"] is None
    assert list(result["eval_step"]) == [3, 6]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_quick_run_groks(seed):
    r = g.grokking_run(quick=True, device="cpu", seed=seed)
    steps, val = r["eval_step"], r["val_accuracy"]
    m = r["memorized_step"]
    # 1. training accuracy reaches 100% first, while validation accuracy is at chance (1/97 ≈ 1%):
    #    below 5% (measured 1%)
    assert m is not None
    assert val[steps == m][0] < 0.05
    # 2. validation accuracy stays low for a long stretch: below 10% until at least 4x the
    #    memorization step (measured 6.3-7x); on the log-step axis of the grokking figure the
    #    plateau is longer than the rise that follows
    onset = steps[np.flatnonzero(val >= 0.1)[0]]
    assert onset >= 4 * m, (onset, m)
    # 3. then it jumps to >= 95% (measured at 530-750 steps), and the jump from 10% to 95% is
    #    shorter on that axis than the plateau (measured rise ratio 2.7-3.8 vs plateau 6.3-7)
    assert r["generalized_step"] is not None
    assert r["generalized_step"] / onset < onset / m
    # ... and stays: every later evaluation >= 90%, the last >= 95% (measured 99.4-99.96%)
    after = steps >= r["generalized_step"]
    assert val[after].min() >= 0.9 and val[-1] >= 0.95
    # 4. with weight decay the weight norm falls while it generalizes: at the generalization step
    #    it is below 3/4 of its peak before the onset (measured 0.60-0.66)
    norm = r["weight_norm"]
    peak = norm[steps <= onset].max()
    assert norm[steps == r["generalized_step"]][0] < 0.75 * peak
    assert norm[steps == r["generalized_step"]][0] < norm[steps == onset][0]


@pytest.mark.slow
def test_without_weight_decay_it_memorizes_but_does_not_generalize():
    r = g.grokking_run(quick=True, device="cpu", weight_decay=0.0, eval_every=50)
    assert r["memorized_step"] is not None and r["memorized_step"] <= 100
    # the same 1,000 steps in which the decayed run generalizes: validation stays near chance
    # (measured at most 1.3%), and the weight norm keeps growing after memorization (measured
    # 279 at step 50 -> 322 at step 1,000)
    assert r["val_accuracy"].max() < 0.1
    assert r["weight_norm"][-1] > 1.1 * r["weight_norm"][0]
    # the decayed run ends with less than half that norm (measured 138-148 vs 322)
    decayed = g.grokking_run(quick=True, device="cpu")
    assert decayed["weight_norm"][-1] < 0.5 * r["weight_norm"][-1]
