r"""Lecture 6: how to compare optimizers — AlgoPerf.

- :func:`hand_example`: three submissions on three workloads with made-up
  times to target, scored by the AlgoPerf v0.5 rules
  (:func:`gd_lib.benchmark.score_times`), next to the exact value of the
  score's integral, so that every number can be checked by hand.
- :func:`rescore`: the same table with one time changed (for the lecture's widget).
- :func:`live_benchmark`: submissions trained on the mini workloads of
  :mod:`gd_lib.benchmark.workloads` by the benchmark runner, scored on the
  wall clock and on steps. Quick mode: 3 submissions, 2 base workloads and one
  held-out variant, 2 external-tuning trials (seconds on a CPU). Full mode: 6
  submissions, every workload, 5 trials — the real run; its logs go to
  ``out/lectures/algoperf`` at the repository root and a rerun resumes them.
- :func:`leaderboard`: the published AlgoPerf v0.5 scores.

The score (Dahl et al. 2023, §4; Kasimbeg et al. 2025): for submission ``s``
and base workload ``w`` with time to target ``t_{s,w}``, the performance ratio
is ``r_{s,w} = t_{s,w} / min_{s'} t_{s',w}`` (``∞`` if the target is never
reached, or if ``t`` is more than 4× the best), the performance profile
``ρ_s(τ) = |{w : r_{s,w} ≤ τ}| / |W|``, and the score
``B_s = (1/(τ_max − 1)) ∫_1^{τ_max} ρ_s(τ) dτ`` with ``τ_max = 4``. For one
workload, ``∫_1^4 1[r ≤ τ] dτ / 3 = (4 − r)/3`` for ``r ≤ 4``: the exact score is
the mean over workloads of ``max(0, (4 − r)/3)``. The benchmark evaluates the
integral by the trapezoid rule on 100 points of ``[1, 4]``, which differs from
the exact value by less than one grid step (``3/99``) per workload.

References:
    G. E. Dahl, F. Schneider, Z. Nado, N. Agarwal, C. S. Sastry, P. Hennig, S. Medapati, R. Eschenhagen,
    P. Kasimbeg, D. Suo, J. Bae, J. Gilmer, A. L. Peirson, B. Khan, R. Anil, M. Rabbat, S. Krishnan,
    D. Snider, E. Amid, K. Chen, C. J. Maddison, R. Vasudev, M. Badura, A. Garg, P. Mattson.
    "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179, 2023.
    P. Kasimbeg, F. Schneider, R. Eschenhagen, J. Bae, C. S. Sastry, M. Saroufim, B. Feng, L. Wright,
    E. Z. Yang, Z. Nado, S. Medapati, P. Hennig, M. Rabbat, G. E. Dahl. "Accelerating Neural Network
    Training: An Analysis of the AlgoPerf Competition", ICLR 2025 (arXiv:2502.15015).
    E. D. Dolan, J. J. Moré. "Benchmarking optimization software with performance profiles",
    Math. Program. 2002.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

import gd_lib
from gd_lib.benchmark import Workload, score_times
from gd_lib.benchmark.runner import run_benchmark
from gd_lib.benchmark.workloads import get_workloads

__all__ = ["HAND_TIMES", "HAND_WORKLOADS", "LEADERBOARD_V05", "LEADERBOARD_SOURCE", "COMPETITION", "exact_score",
           "hand_example", "rescore", "live_benchmark", "leaderboard"]

MAX_TAU = 4.0

# A made-up table of times to target (seconds): one fast but fragile submission that
# fails a workload, one steady submission, one slow submission (4.5x the best on A).
HAND_WORKLOADS = {name: Workload(name, "max", 0.9) for name in ("A", "B", "C")}
HAND_TIMES = {
    "fast but fragile": {"A": 10.0, "B": 20.0, "C": math.inf},
    "steady": {"A": 15.0, "B": 25.0, "C": 30.0},
    "slow": {"A": 45.0, "B": 40.0, "C": 60.0},
}

# The AlgoPerf v0.5 leaderboard (external tuning ruleset; the first competition, scored on
# benchmark version 0.1.5), as published by MLCommons. Only the entries whose score could be
# checked against the published leaderboard are listed.
LEADERBOARD_SOURCE = ("MLCommons AlgoPerf leaderboard v0.5, external tuning ruleset: "
                      "github.com/mlcommons/submissions_algorithms, "
                      "previous_leaderboards/algoperf_v05/README.md; analysed in Kasimbeg et al. (2025)")
LEADERBOARD_V05 = [
    {"submission": "Distributed Shampoo", "score": 0.7784, "framework": "PyTorch",
     "idea": "non-diagonal (Kronecker-factored) preconditioning with Adam grafting"},
    {"submission": "Schedule Free AdamW", "score": 0.7077, "framework": "PyTorch",
     "idea": "no learning-rate schedule: interpolation and averaging (Defazio et al. 2024)"},
    {"submission": "Generalized Adam", "score": 0.6383, "framework": "JAX",
     "idea": "tunes over Adam, NadamW and SGD (with or without momentum)"},
    {"submission": "Cyclic LR", "score": 0.6301, "framework": "PyTorch",
     "idea": "NadamW with a cyclic (warmup + cosine) learning-rate schedule"},
]


def exact_score(ratios) -> float:
    """``(1/|W|) Σ_w max(0, (τ_max − r_w)/(τ_max − 1))``: the score's integral in closed form."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.clip((MAX_TAU - r) / (MAX_TAU - 1.0), 0.0, 1.0)))


def _as_dict(result) -> dict:
    return {"times": result.times, "raw_times": result.raw_times, "workloads": result.base_workloads,
            "ratios": {s: np.asarray(r) for s, r in result.ratios.items()},
            "taus": np.asarray(result.taus), "profiles": {s: np.asarray(p) for s, p in result.profiles.items()},
            "scores": dict(result.scores),
            "exact_scores": {s: exact_score(r) for s, r in result.ratios.items()}}


def hand_example() -> dict:
    """Score :data:`HAND_TIMES` on :data:`HAND_WORKLOADS`.

    Returns ``{"raw_times", "times" (after the 4x rule), "workloads", "ratios": {s: r per
    workload}, "taus", "profiles": {s: ρ(τ)}, "scores": {s: B_s}, "exact_scores": {s: closed
    form}}``.
    """
    return _as_dict(score_times(HAND_TIMES, HAND_WORKLOADS))


def rescore(fragile_time_on_c: float) -> dict:
    """:func:`hand_example` with the "fast but fragile" submission's time on C replaced."""
    times = {s: dict(row) for s, row in HAND_TIMES.items()}
    times["fast but fragile"]["C"] = float(fragile_time_on_c)
    return _as_dict(score_times(times, HAND_WORKLOADS))


def _default_out_dir() -> Path:
    return Path(gd_lib.__file__).resolve().parents[1] / "out" / "lectures" / "algoperf"


def live_benchmark(quick: bool | None = None, out_dir=None) -> dict:
    """Run (or, in full mode, resume) the benchmark on the mini workloads and score it.

    Quick: submissions ``adamw``, ``sgd``, ``schedule_free_adamw`` on ``mlp_digits``
    (and its held-out variant ``mlp_digits_tanh``) and ``cnn_digits``, external tuning
    with 2 trials, 1 study, quick step budgets, logs in a temporary folder. Full:
    ``sgd, adamw, nadamw, shampoo, muon, schedule_free_adamw`` on every workload,
    5 trials, full budgets, logs kept in ``out_dir`` (default ``out/lectures/algoperf``).

    Returns ``{"by_time": ..., "by_steps": ...}`` (each as :func:`hand_example`), plus
    ``"submissions"``, ``"workloads"`` (``{name: {"target", "direction", "base_workload",
    "metric", "description"}}``), ``"trials"``, ``"records"`` (per trial: id,
    hyperparameters, evaluations) and ``"ran_trials"``.
    """
    quick = gd_lib.quick_mode(quick)
    if quick:
        submissions = ["adamw", "sgd", "schedule_free_adamw"]
        workloads = ["mlp_digits", "mlp_digits_tanh", "cnn_digits"]
        trials = 2
    else:
        submissions = ["sgd", "adamw", "nadamw", "shampoo", "muon", "schedule_free_adamw"]
        workloads = None
        trials = 5

    def run(folder):
        return run_benchmark(submissions, workloads, ruleset="external", trials=trials, studies=1,
                             out_dir=folder, quick=quick, progress=not quick)

    if quick and out_dir is None:
        with tempfile.TemporaryDirectory() as folder:
            result = run(folder)
    else:
        result = run(out_dir or _default_out_dir())
    chosen = get_workloads(workloads)
    return {
        "by_time": _as_dict(result.by_time), "by_steps": _as_dict(result.by_steps),
        "submissions": submissions, "trials": trials, "ran_trials": result.ran_trials,
        "workloads": {w.name: {"target": w.target, "direction": w.direction, "base_workload": w.base_workload,
                               "metric": w.metric, "description": w.description} for w in chosen},
        "records": [{"id": r["id"], "hparams": r["hparams"], "evals": r["evals"]} for r in result.records],
    }


# Facts about the first competition, as published (Dahl et al. 2023; Kasimbeg et al. 2025; the v0.5 leaderboard).
COMPETITION = {"submissions": 18, "teams": 10, "base_workloads": 8, "hardware": "8x NVIDIA V100",
               "external_tuning_trials_per_workload": 5, "self_tuning_budget_factor": 3,
               "winner_external_tuning": "Distributed Shampoo", "winner_self_tuning": "Schedule Free AdamW"}


def leaderboard() -> dict:
    """The published v0.5 external-tuning scores, best first, with their source and
    the competition's facts (:data:`COMPETITION`)."""
    rows = sorted(LEADERBOARD_V05, key=lambda row: -row["score"])
    return {"rows": rows, "source": LEADERBOARD_SOURCE, "competition": dict(COMPETITION)}
