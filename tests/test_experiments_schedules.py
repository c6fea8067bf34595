"""Claims of lecture 5 (schedules, averaging, Schedule-Free, switching), measured by
gd_lib.experiments.schedules in quick mode (character LM on 40 stdlib files, T = 400 AdamW steps).

Measured when written (validation loss, nats/char; CPU, torch 1 thread):
- final loss: constant 1.996, cosine 1.883, WSD 1.882, one-cycle 1.911, cyclic 2.007;
- constant lr, evaluations from step 300: raw [1.985, 2.001, 1.996], EMA [1.964, 1.909, 1.881],
  LAWA [1.922, 1.908, 1.881];
- Schedule-Free (lr 3e-2, one run) minus cosine tuned per horizon (100, 200, 400): [-0.034, -0.004, +0.013];
- Adam -> SGD at k = 0, 100, 200, 300, 400: [2.149, 1.970, 1.879, 1.871, 1.996]; SWATS 2.001, never switched.
Margins below are a few times the seed-to-seed spread of these losses (~0.01-0.02 nats).
"""

import numpy as np
import pytest

from gd_lib.experiments import schedules as exp

pytestmark = pytest.mark.slow  # each experiment trains several 400-step runs (5-10 s on 2 cores)


@pytest.fixture(scope="module")
def sched():
    return exp.lr_schedules(quick=True)


@pytest.fixture(scope="module")
def avg():
    return exp.weight_averaging(quick=True)


def test_annealing_schedules_end_below_the_constant_learning_rate(sched):
    final = sched["final_val_loss"]
    assert set(final) == {"constant", "warmup + cosine", "WSD", "cyclic", "one-cycle"}
    assert sched["steps"] == 400 and list(sched["eval_step"])[-1] == 400
    # the schedules that decay to ~0 remove the noise floor: >= 0.05 nats better (measured 0.085-0.114)
    for name in ("warmup + cosine", "WSD", "one-cycle"):
        assert final[name] <= final["constant"] - 0.05, (name, final)
    # WSD's short cooldown matches the cosine (measured difference 0.001)
    assert abs(final["WSD"] - final["warmup + cosine"]) <= 0.03, final


def test_the_schedules_are_the_library_schedules(sched):
    # the multipliers the runs used, against formulas written here
    T = sched["steps"]
    t = np.arange(T)
    np.testing.assert_allclose(sched["multiplier"]["constant"], 1.0)
    w = T // 20
    cosine = np.where(t < w, t / w, 0.5 * (1 + np.cos(np.pi * (t - w) / (T - w))))
    np.testing.assert_allclose(sched["multiplier"]["warmup + cosine"], cosine, atol=1e-12)
    wsd = np.where(t < w, t / w, np.where(t < T - T // 5, 1.0, 1 - (t - (T - T // 5)) / (T // 5)))
    np.testing.assert_allclose(sched["multiplier"]["WSD"], wsd, atol=1e-12)


def test_averaged_weights_beat_the_raw_weights_late_in_a_constant_lr_run(avg, sched):
    steps = np.asarray(avg["eval_step"])
    late = steps >= 3 * 400 // 4
    raw, ema, lawa = (np.asarray(avg[k]) for k in ("raw", "ema", "lawa"))
    # the raw weights are the constant-lr run of the schedule comparison (same seed and data): exactly
    np.testing.assert_array_equal(raw, sched["val_loss"]["constant"])
    # from 3T/4 on, both averages are below the raw weights at every evaluation (measured >= 0.021)
    assert (ema[late] <= raw[late] - 0.01).all(), (ema, raw)
    assert (lawa[late] <= raw[late] - 0.01).all(), (lawa, raw)
    # and at the end by >= 0.05 (measured 0.115 for both)
    assert ema[-1] <= raw[-1] - 0.05 and lawa[-1] <= raw[-1] - 0.05
    # early on the EMA lags behind: it is worse than the raw weights at the first evaluation
    assert ema[0] > raw[0]
    # averaging at a constant lr ends as low as the annealed cosine run (measured 1.881 vs 1.883)
    assert abs(ema[-1] - sched["final_val_loss"]["warmup + cosine"]) <= 0.03


def test_schedule_free_matches_a_cosine_tuned_for_each_horizon(sched):
    sf = exp.schedule_free_vs_cosine(quick=True)
    assert sf["horizons"] == [100, 200, 400]
    best = sf["sf_best_lr_index"]
    # one run, lr chosen at T, against the best cosine of each horizon: within 0.05 nats
    # (measured -0.034, -0.004, +0.013)
    assert (np.asarray(sf["gap"]) <= 0.05).all(), sf["gap"]
    np.testing.assert_allclose(sf["gap"], sf["sf_at_horizons"][best] - sf["cosine"].min(axis=0))
    # and it beats AdamW at the same peak lr without a schedule (measured 1.897 vs 1.996)
    assert sf["sf_at_horizons"][best][-1] <= sched["final_val_loss"]["constant"] - 0.05


def test_switching_from_adam_to_sgd_beats_both_pure_methods():
    sw = exp.adam_to_sgd_switch(quick=True)
    loss = np.asarray(sw["val_loss"])
    assert sw["switch_steps"] == [0, 100, 200, 300, 400]
    assert ((0 <= np.asarray(sw["val_error"])) & (np.asarray(sw["val_error"]) <= 1)).all()
    best = int(np.argmin(loss))
    # U-shape: the best switch-over point is inside, and beats pure SGD and pure Adam by >= 0.05
    # (measured at k = 300: 1.871 vs 2.149 and 1.996)
    assert 0 < best < len(loss) - 1, loss
    assert loss[best] <= loss[0] - 0.05 and loss[best] <= loss[-1] - 0.05, loss
    # switching too early is worse than the best switch (measured 1.970 at k = 100)
    assert loss[1] >= loss[best] + 0.03, loss
    # pure Adam's curve is the first phase of every switched run: identical up to the switch
    steps_adam, curve_adam = sw["curves"][400]
    steps_300, curve_300 = sw["curves"][300]
    np.testing.assert_array_equal(curve_300[steps_300 <= 300], curve_adam[steps_adam <= 300])
    # SWATS's trigger (eps = 1e-9) never fired in 400 steps, so it stayed Adam (measured 2.001 vs 1.996)
    assert sw["swats"]["switch_steps"] == [0] * len(sw["swats"]["switch_steps"])
    assert abs(sw["swats"]["val_loss"] - loss[-1]) <= 0.03
