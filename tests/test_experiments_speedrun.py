"""Claims of lecture 7 (the NanoGPT speedrun at laptop scale), measured by gd_lib.experiments.speedrun.

Quick mode (tiny GPT, width 32, 2 blocks, context 32, batch 16, 200 steps; CPU, 1 thread). Measured when
written: AdamW grid 1e-3/3e-3/1e-2 -> best 3e-3, final validation loss 2.534 (the target); Muon (lr 0.03)
reaches it at step 100 (AdamW: 200), final 2.398; Muon + recipe (trapezoid, momentum warmup) 80 steps, final 2.279.

The engineering demonstrations (quick mode, measured when written): bfloat16 autocast against float32, AdamW
60 steps: validation curves within 1.5e-3 nats, 12% of the middle step's updates and 98% of the last (annealed)
step's would vanish in bfloat16 weights; SGD (momentum 0.9) at lr 1: unclipped non-finite by the 2nd evaluation,
clipped to norm 1 ends at 2.71 (lr 0.3 unclipped: 2.68); steps to target on the noisy quadratic, B = 1..1024:
2724, 1563, 932, 535, 280, 136, 79, 43, 33, 27, 30; fit S_min 22, B_noise 149 (theory 101), max error 22%.
"""

import math
import re

import numpy as np
import pytest

from gd_lib.experiments import speedrun as exp


def test_steps_to_target_takes_the_first_evaluation_at_or_below_the_target():
    run = {
        "eval_step": np.array([10, 20, 30, 40]),
        "val_loss": np.array([3.0, 2.5, 2.6, 2.4]),
        "train_time": np.array([1.0, 2.0, 3.0, 4.0]),
        "tokens_per_step": 100,
    }
    assert exp.steps_to_target(run, 2.5) == (20.0, 2000.0, 2.0)  # "<=": equal counts
    assert exp.steps_to_target(run, 2.45) == (40.0, 4000.0, 4.0)  # the later dip, not the bump
    assert exp.steps_to_target(run, 2.0) == (math.inf, math.inf, math.inf)


def test_train_run_rejects_bad_arguments():
    cfg = exp.speedrun_config(quick=True)
    with pytest.raises(ValueError, match="optimizer_name"):
        exp.train_run("lion", 0.1, cfg)
    with pytest.raises(ValueError, match="recipe"):
        exp.train_run("adamw", 1e-3, cfg, recipe=True)
    with pytest.raises(ValueError, match="precision"):
        exp.train_run("adamw", 1e-3, cfg, precision="float16")
    with pytest.raises(ValueError, match="clip_norm"):
        exp.train_run("sgd", 0.1, cfg, clip_norm=0.0)
    with pytest.raises(ValueError, match="schedule"):
        exp.train_run("sgd", 0.1, cfg, schedule="cosine")


def test_speedrun_records_are_dated_sourced_and_in_record_order():
    facts = exp.SPEEDRUN_FACTS
    assert "modded-nanogpt" in facts["source"] and "README" in facts["source"]
    records = facts["records"]
    numbers = [r["number"] for r in records]
    dates = [r["date"] for r in records]
    # a record is faster than every earlier one, and later (ISO dates sort as strings)
    assert numbers == sorted(numbers) and dates == sorted(dates)
    assert all(a["minutes"] > b["minutes"] for a, b in zip(records, records[1:]))
    assert all(re.fullmatch(r"20\d\d-\d\d-\d\d", d) for d in dates)
    # spot checks against the README's table (commit e7a55f1), typed here from the table
    by_number = {r["number"]: r for r in records}
    assert (by_number[1]["minutes"], by_number[1]["date"]) == (45.0, "2024-05-28")
    assert (by_number[3]["minutes"], by_number[3]["date"]) == (24.9, "2024-10-04")
    assert (by_number[10]["minutes"], by_number[10]["date"]) == (7.8, "2024-11-08")
    assert facts["baseline_minutes"] == by_number[1]["minutes"]


def test_full_mode_config_is_the_smaller_gpu_one_and_honours_the_step_scale(monkeypatch):
    monkeypatch.setenv("GD_STEP_SCALE", "1")
    full = exp.speedrun_config(quick=False)
    assert (full.width, full.depth, full.context, full.batch_size, full.steps) == (128, 4, 64, 32, 1500)
    assert len(full.adamw_lrs) + len(full.muon_lrs) + 1 == 7  # 7 runs
    assert full.steps // full.eval_every == 30
    monkeypatch.setenv("GD_STEP_SCALE", "0.01")
    short = exp.speedrun_config(quick=False)
    # shapes kept, steps cut, evaluated 3 times (ceil(15 / 3) = 5)
    assert short.steps == 15 and short.width == 128 and short.eval_every == 5


def test_bfloat16_rounding_matches_the_format():
    r = exp.bfloat16_rounding()
    # bfloat16: 8 significant bits -> spacing 2^-7 above 1; float16 2^-10; float32 2^-23
    assert r["eps"] == {"bfloat16": 2.0**-7, "float16": 2.0**-10, "float32": 2.0**-23}
    assert r["one_plus_2^-8_is_one"] and not r["one_plus_2^-7_is_one"]
    # 1000 increments of 1e-3 (< 2^-8, half bfloat16's spacing at 1) all round away in bfloat16
    assert r["accumulated"]["bfloat16"] == 1.0
    # float32 gets 2 up to accumulated rounding (1000 additions of relative error <= 2^-24 each, at most 6e-5)
    assert r["accumulated"]["float32"] == pytest.approx(2.0, abs=1000 * 2.0 * 2.0**-24)
    assert r["exact"] == 2.0


def test_fit_critical_batch_recovers_an_exact_curve():
    batches = np.array([1, 4, 16, 64, 256, 1024.0])
    steps = 20.0 * (1 + 100.0 / batches)  # S_min 20, B_noise 100
    fit = exp.fit_critical_batch(batches, steps)
    assert fit["s_min"] == pytest.approx(20.0, rel=1e-9)
    assert fit["b_noise"] == pytest.approx(100.0, rel=1e-9)
    assert fit["max_rel_error"] < 1e-9
    with pytest.raises(ValueError):
        exp.fit_critical_batch([1, 2], [10.0, np.inf])


@pytest.fixture(scope="module")
def race():
    return exp.adamw_vs_muon(quick=True)


@pytest.mark.slow
def test_muon_reaches_the_adamw_target_in_fewer_steps(race):
    cfg = race["config"]
    adamw, muon = race["summary"]["adamw"], race["summary"]["muon"]
    # the target is the tuned AdamW's final loss, so AdamW reaches it within its budget
    assert race["target"] == pytest.approx(adamw["final_val_loss"], abs=0)
    assert adamw["steps"] <= cfg.steps
    # a fair race: AdamW's best learning rate is inside its grid, not at an edge (measured 3e-3)
    assert cfg.adamw_lrs[0] < adamw["lr"] < cfg.adamw_lrs[-1], adamw["lr"]
    # the claim: Muon needs fewer steps; demand <= 3/4 of AdamW's (measured 100 vs 200)
    assert muon["steps"] <= 0.75 * adamw["steps"], (muon["steps"], adamw["steps"])
    assert muon["tokens"] == muon["steps"] * cfg.batch_size * cfg.context


@pytest.mark.slow
def test_the_speedrun_recipe_ends_below_plain_muon(race):
    plain, recipe = race["summary"]["muon"], race["summary"]["muon + speedrun recipe"]
    assert recipe["lr"] == plain["lr"]
    # trapezoid + momentum warmup: >= 0.03 nats lower at the end (measured 2.279 vs 2.398)
    assert recipe["final_val_loss"] <= plain["final_val_loss"] - 0.03
    assert recipe["steps"] <= race["summary"]["adamw"]["steps"]


@pytest.mark.slow
def test_every_run_logged_its_whole_budget(race):
    # no run diverged or stopped early: every evaluation is there, finite, with growing train time
    cfg = race["config"]
    for run in race["runs"]:
        np.testing.assert_array_equal(run["eval_step"], np.arange(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
        assert np.isfinite(run["val_loss"]).all()
        assert (np.diff(run["train_time"]) > 0).all()


@pytest.fixture(scope="module")
def precision():
    return exp.mixed_precision(quick=True)


@pytest.mark.slow
def test_bfloat16_autocast_follows_the_float32_curve(precision):
    # Micikevicius et al. 2018, Kalamkar et al. 2019: mixed precision with float32 master weights trains like
    # float32 without changing hyperparameters. Tolerance 0.03 nats: bfloat16's relative precision 2^-8 times a
    # loss of about 3 is 0.012 per evaluation; 2.5x that (measured 1.5e-3).
    assert len(precision["bfloat16"]["val_loss"]) == len(precision["float32"]["val_loss"]) == 10
    assert precision["max_abs_diff"] <= 0.03
    # and both trained: >= 0.5 nats below the first evaluation
    for run in (precision["float32"], precision["bfloat16"]):
        assert run["val_loss"][-1] <= run["val_loss"][0] - 0.5
    # the master copy matters: stored in bfloat16, a share of the middle step's updates would vanish (measured
    # 12%), and most of the last, annealed step's (lr -> 0 at the end of the cosine; measured 98%)
    lost = precision["lost_update_fraction"]
    middle, last = sorted(lost)
    assert lost[middle] >= 0.02
    assert lost[last] >= 0.5 and lost[last] > lost[middle]


@pytest.fixture(scope="module")
def clipping():
    return exp.gradient_clipping(quick=True)


@pytest.mark.slow
def test_clipping_rescues_the_run_that_diverges_without_it(clipping):
    runs, diverged = clipping["runs"], clipping["diverged"]
    unclipped, clipped, stable = runs
    # Pascanu et al. 2013, Zhang et al. 2020: the unclipped run blows up at this lr (measured: non-finite by the
    # 2nd evaluation); clipped to norm 1 it trains
    assert diverged[unclipped] and not diverged[clipped] and not diverged[stable]
    assert not np.isfinite(runs[unclipped]["val_loss"][-1]) or runs[unclipped]["val_loss"][-1] > 10
    c = runs[clipped]
    assert len(c["val_loss"]) == 10 and np.isfinite(c["val_loss"]).all()
    assert c["val_loss"][-1] <= c["train_loss"][0] - 1.0  # measured 4.58 -> 2.71
    # clipping acted: the raw gradient norm exceeded the threshold at some step, so it was rescaled there
    assert c["grad_norm"].max() > clipping["clip_norm"]
    # and it reaches the neighbourhood of the largest unclipped lr that trains: within 0.15 nats (measured -0.03)
    assert c["val_loss"][-1] <= runs[stable]["val_loss"][-1] + 0.15


@pytest.fixture(scope="module")
def batch_scaling():
    return exp.batch_size_scaling(quick=True)


@pytest.mark.slow
def test_steps_to_target_fall_like_one_over_b_then_flatten(batch_scaling):
    # McCandlish et al. 2018: S(B) = S_min (1 + B_noise / B): steps ~ 1/B for B << B_noise (perfect scaling),
    # ~ S_min for B >> B_noise (no benefit from larger batches)
    B, S = batch_scaling["batch_sizes"], batch_scaling["steps"]
    assert np.isfinite(S).all()
    ratio = S[1:] / S[:-1]  # steps(2B) / steps(B)
    small = B[:-1] < batch_scaling["fit"]["b_noise"] / 8
    large = B[:-1] >= batch_scaling["fit"]["b_noise"]  # the model: ratio >= 0.75 there
    assert small.sum() >= 4 and large.sum() >= 2
    # perfect scaling: doubling B about halves the steps (0.5; seed noise: within 0.4..0.7; measured 0.52-0.60)
    assert np.all((ratio[small] >= 0.4) & (ratio[small] <= 0.7)), ratio[small]
    # diminishing returns: doubling B saves at most 30% of the steps (measured 0.82, 1.11)
    assert np.all(ratio[large] >= 0.7), ratio[large]
    # the examples processed, B*S, are nearly flat at small B and grow at large B
    E = batch_scaling["examples"]
    assert E[-1] >= 5 * E[0]
    # the empirical model fits every point within 30% (measured 22%), B_noise inside the range of B
    fit = batch_scaling["fit"]
    assert fit["max_rel_error"] <= 0.3
    assert B[0] < fit["b_noise"] < B[-1]
    # the noise-floor argument predicts the critical batch size within a factor 3 (measured 149 vs 101)
    assert batch_scaling["theory"] / 3 <= fit["b_noise"] <= 3 * batch_scaling["theory"]
    # the tuned learning rate grows with B up to the curvature limit 2/h_max = 2 (linear scaling rule, then a cap)
    lr = batch_scaling["best_lr"]
    assert lr[-1] >= 20 * lr[0] and lr.max() <= 2.0
