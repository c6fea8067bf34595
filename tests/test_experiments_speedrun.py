"""Claims of lecture 7 (the NanoGPT speedrun at laptop scale), measured by gd_lib.experiments.speedrun.

Quick mode (tiny GPT, width 32, 2 blocks, context 32, batch 16, 200 steps; CPU, 1 thread). Measured when
written: AdamW grid 1e-3/3e-3/1e-2 -> best 3e-3, final validation loss 2.534 (the target); Muon (lr 0.03)
reaches it at step 100 (AdamW: 200), final 2.398; Muon + recipe (trapezoid, momentum warmup) 80 steps, final 2.279.
"""
import math

import numpy as np
import pytest

from gd_lib.experiments import speedrun as exp


def test_steps_to_target_takes_the_first_evaluation_at_or_below_the_target():
    run = {"eval_step": np.array([10, 20, 30, 40]), "val_loss": np.array([3.0, 2.5, 2.6, 2.4]),
           "train_time": np.array([1.0, 2.0, 3.0, 4.0]), "tokens_per_step": 100}
    assert exp.steps_to_target(run, 2.5) == (20.0, 2000.0, 2.0)   # "<=": equal counts
    assert exp.steps_to_target(run, 2.45) == (40.0, 4000.0, 4.0)  # the later dip, not the bump
    assert exp.steps_to_target(run, 2.0) == (math.inf, math.inf, math.inf)


def test_train_run_rejects_bad_arguments():
    cfg = exp.speedrun_config(quick=True)
    with pytest.raises(ValueError, match="optimizer_name"):
        exp.train_run("sgd", 0.1, cfg)
    with pytest.raises(ValueError, match="recipe"):
        exp.train_run("adamw", 1e-3, cfg, recipe=True)


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
