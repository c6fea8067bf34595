r"""Lecture 6: how to compare optimizers — AlgoPerf.

- :func:`hand_example`: three submissions on three workloads with made-up
  times to target, scored by the AlgoPerf v0.5 rules
  (:func:`gd_lib.benchmark.score_times`), next to the exact value of the
  score's integral, so that every number can be checked by hand.
- :func:`rescore`: the same table with one time changed (for the lecture's widget).
- :func:`live_benchmark`: submissions trained on the mini workloads of
  :mod:`gd_lib.benchmark.workloads` by the benchmark runner, scored on the
  wall clock and on steps. Quick mode: AdamW, SGD and Shampoo, 2 base workloads
  and one held-out variant, 2 external-tuning trials (seconds on a CPU). Full
  mode: 4 submissions, every workload, 3 trials — the real run; its logs go to
  :func:`default_log_dir` (a user cache folder) and a rerun resumes them.
- :func:`leaderboard`: the published AlgoPerf v0.5 scores, both rulesets.

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
import os
import tempfile
from pathlib import Path

import numpy as np

import gd_lib
from gd_lib.benchmark import Workload, score_times
from gd_lib.benchmark.runner import run_benchmark
from gd_lib.benchmark.workloads import get_workloads

__all__ = [
    "HAND_TIMES",
    "HAND_WORKLOADS",
    "LEADERBOARD_V05",
    "SELF_TUNING_V05",
    "LEADERBOARD_SOURCE",
    "COMPETITION",
    "exact_score",
    "hand_example",
    "rescore",
    "live_benchmark",
    "default_log_dir",
    "seconds_per_step",
    "per_step_cost",
    "leaderboard",
]

MAX_TAU = 4.0

# A made-up table of times to target (seconds): one fast but fragile submission that
# fails a workload, one steady submission, one slow submission (4.5x the best on A).
HAND_WORKLOADS = {name: Workload(name, "max", 0.9) for name in ("A", "B", "C")}
HAND_TIMES = {
    "fast but fragile": {"A": 10.0, "B": 20.0, "C": math.inf},
    "steady": {"A": 15.0, "B": 25.0, "C": 30.0},
    "slow": {"A": 45.0, "B": 40.0, "C": 60.0},
}

# The AlgoPerf v0.5 leaderboard, as published by MLCommons in the README of
# github.com/mlcommons/submissions_algorithms ("Leaderboard Version: 0.5"): all 11 rows of the
# external-tuning ruleset and all 6 of the self-tuning ruleset, scores as printed there.
LEADERBOARD_SOURCE = (
    "MLCommons AlgoPerf leaderboard v0.5 (the first competition, scored on benchmark version "
    "0.1.5): github.com/mlcommons/submissions_algorithms, README.md; analysed in "
    "Kasimbeg et al. (2025)"
)
LEADERBOARD_V05 = [
    {
        "submission": "Distributed Shampoo",
        "score": 0.7784,
        "framework": "PyTorch",
        "team": "Meta Platforms",
        "idea": "non-diagonal (Kronecker-factored) preconditioning with Adam grafting",
    },
    {
        "submission": "Schedule Free AdamW",
        "score": 0.7077,
        "framework": "PyTorch",
        "team": "Meta AI, Samsung AI",
        "idea": "no learning-rate schedule: interpolation and averaging (Defazio et al. 2024)",
    },
    {
        "submission": "Generalized Adam",
        "score": 0.6383,
        "framework": "JAX",
        "team": "Google",
        "idea": "tunes over Adam, NadamW and SGD (with or without momentum)",
    },
    {
        "submission": "Cyclic LR",
        "score": 0.6301,
        "framework": "PyTorch",
        "team": "MPI-IS, ELLIS Tübingen",
        "idea": "NadamW with a cyclic (warmup + cosine) learning-rate schedule",
    },
    {
        "submission": "NadamP",
        "score": 0.5909,
        "framework": "JAX",
        "team": "Google",
        "idea": "NadamW with a tunable p-th root in the denominator instead of the square root",
    },
    {
        "submission": "Baseline",
        "score": 0.5707,
        "framework": "JAX",
        "team": "(the organisers)",
        "idea": "NadamW, linear warmup + cosine decay",
    },
    {
        "submission": "Amos",
        "score": 0.4918,
        "framework": "JAX",
        "team": "Google",
        "idea": "the Amos optimizer (Tian & Parikh 2022), five hyperparameter settings",
    },
    {
        "submission": "CASPR Adaptive",
        "score": 0.4722,
        "framework": "JAX",
        "team": "UT Austin, UCLA, Google",
        "idea": "CASPR (Duvvuri et al. 2024), a Kronecker-factored preconditioner",
    },
    {
        "submission": "LAWA Queue",
        "score": 0.3699,
        "framework": "PyTorch",
        "team": "MPI-IS, ELLIS Tübingen",
        "idea": "latest weight averaging over a queue of checkpoints, on NadamW",
    },
    {
        "submission": "LAWA EMA",
        "score": 0.3384,
        "framework": "PyTorch",
        "team": "MPI-IS, ELLIS Tübingen",
        "idea": "latest weight averaging as an EMA of checkpoints, on NadamW",
    },
    {
        "submission": "Schedule Free Prodigy",
        "score": 0.0000,
        "framework": "PyTorch",
        "team": "Meta AI, Samsung AI",
        "idea": "Schedule-Free combined with Prodigy's learned step size",
    },
]
SELF_TUNING_V05 = [
    {
        "submission": "Schedule Free AdamW",
        "score": 0.8542,
        "framework": "PyTorch",
        "team": "Meta AI, Samsung AI",
        "idea": "Schedule-Free AdamW with a single hyperparameter configuration",
    },
    {
        "submission": "Baseline",
        "score": 0.8194,
        "framework": "JAX",
        "team": "(the organisers)",
        "idea": "NadamW, warmup + cosine, a single hyperparameter point",
    },
    {
        "submission": "NadamW Sequential",
        "score": 0.3308,
        "framework": "JAX",
        "team": "Google",
        "idea": "three fixed NadamW settings run one after the other within the budget",
    },
    {
        "submission": "Sinv6 75",
        "score": 0.1420,
        "framework": "JAX",
        "team": "Mila, Concordia University",
        "idea": "a learned optimizer, initialised for 75 % of the step budget",
    },
    {
        "submission": "Sinv6",
        "score": 0.0903,
        "framework": "JAX",
        "team": "Mila, Concordia University",
        "idea": "a task-invariant learned optimizer meta-trained on small tasks",
    },
    {
        "submission": "AdamG",
        "score": 0.0000,
        "framework": "PyTorch",
        "team": "Michigan State University",
        "idea": "AdamG (Pang et al. 2024), a parameter-free Adam",
    },
]


def exact_score(ratios) -> float:
    """``(1/|W|) Σ_w max(0, (τ_max − r_w)/(τ_max − 1))``: the score's integral in closed form."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.clip((MAX_TAU - r) / (MAX_TAU - 1.0), 0.0, 1.0)))


def _as_dict(result) -> dict:
    return {
        "times": result.times,
        "raw_times": result.raw_times,
        "workloads": result.base_workloads,
        "ratios": {s: np.asarray(r) for s, r in result.ratios.items()},
        "taus": np.asarray(result.taus),
        "profiles": {s: np.asarray(p) for s, p in result.profiles.items()},
        "scores": dict(result.scores),
        "exact_scores": {s: exact_score(r) for s, r in result.ratios.items()},
    }


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


def default_log_dir() -> Path:
    """Where the full-mode live benchmark keeps its logs (a rerun resumes them): ``GD_ALGOPERF_LOGS``
    if set, else ``$XDG_CACHE_HOME/guided-descent/algoperf`` (``~/.cache/...``) — a place the user
    can write, never the installed package's folder (read-only on a hub). Runs with
    ``GD_STEP_SCALE`` below 1 use a subfolder of their own, so that a shortened run is never
    resumed as a full one."""
    explicit = os.environ.get("GD_ALGOPERF_LOGS", "").strip()
    if explicit:
        folder = Path(explicit).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
        folder = Path(cache).expanduser() / "guided-descent" / "algoperf"
    scale = gd_lib.step_scale()
    # shortened runs (GD_STEP_SCALE < 1) keep their own logs: resuming must never mix budgets
    return folder if scale == 1.0 else folder / f"step-scale-{scale:g}"


def seconds_per_step(records: list[dict]) -> dict:
    """Training seconds per step of every trial, from its last evaluation (evaluation time is not
    on the clock): ``{submission: {workload: [s/step per trial]}}``."""
    out: dict = {}
    for r in records:
        submission, workload = r["id"].split("/")[:2]
        last = r["evals"][-1]
        out.setdefault(submission, {}).setdefault(workload, []).append(last["time"] / last["step"])
    return out


def per_step_cost(seconds: dict, reference: str = "adamw") -> dict:
    """Each submission's cost per step relative to ``reference``, against the noise.

    ``seconds``: :func:`seconds_per_step`'s ``{submission: {workload: [s/step per trial]}}``.
    Trials of one submission on one workload do the same work per step, so the ratio of their
    slowest to their fastest cost per step is pure measurement noise; ``"noise"`` is the largest
    such ratio over all submissions and workloads. ``"ratio"[s]`` is the median over workloads
    of (s's median cost per step) / (reference's), and ``"real"[s]`` says whether that ratio (or
    its inverse) exceeds the noise.
    """
    if reference not in seconds:
        raise ValueError(f"Invalid reference: {reference!r}; expected one of {sorted(seconds)}")
    workloads = list(seconds[reference])
    base = {w: float(np.median(seconds[reference][w])) for w in workloads}
    noise = max(max(v) / min(v) for per in seconds.values() for v in per.values())
    ratio = {s: float(np.median([np.median(per[w]) / base[w] for w in workloads])) for s, per in seconds.items()}
    real = {s: s != reference and max(r, 1.0 / r) > noise for s, r in ratio.items()}
    return {"ratio": ratio, "noise": float(noise), "real": real, "reference": reference}


def live_benchmark(quick: bool | None = None, out_dir=None) -> dict:
    """Run (or, in full mode, resume) the benchmark on the mini workloads and score it.

    Quick: submissions ``adamw``, ``sgd`` and ``shampoo`` (AdamW's search space, its own
    quasirandom draws) on ``mlp_digits`` (and its held-out variant
    ``mlp_digits_tanh``) and ``cnn_digits``, external tuning with 2 trials, 1 study, quick step
    budgets, logs in a temporary folder. Full: ``sgd, adamw, shampoo, schedule_free_adamw`` on
    every workload, 3 trials, full budgets (``GD_STEP_SCALE`` shortens them, and runs one trial), logs kept in
    ``out_dir`` (default :func:`default_log_dir`), so that a rerun resumes.

    Returns ``{"by_time": ..., "by_steps": ...}`` (each as :func:`hand_example`), plus
    ``"submissions"``, ``"workloads"`` (``{name: {"target", "direction", "base_workload",
    "metric", "description"}}``), ``"trials"``, ``"records"`` (per trial: id,
    hyperparameters, evaluations), ``"seconds_per_step"`` (:func:`seconds_per_step`),
    ``"ran_trials"`` and ``"log_dir"`` (None in quick mode).
    """
    quick = gd_lib.quick_mode(quick)
    if quick:
        submissions = ["adamw", "sgd", "shampoo"]
        workloads = ["mlp_digits", "mlp_digits_tanh", "cnn_digits"]
        trials = 2
    else:
        submissions = ["sgd", "adamw", "shampoo", "schedule_free_adamw"]
        workloads = None
        # GD_STEP_SCALE < 1 checks that the full-mode code runs: one trial per workload is enough
        trials = 3 if gd_lib.step_scale() == 1.0 else 1

    def run(folder):
        return run_benchmark(
            submissions,
            workloads,
            ruleset="external",
            trials=trials,
            studies=1,
            out_dir=folder,
            quick=quick,
            progress=not quick,
        )

    log_dir = None
    if quick and out_dir is None:
        with tempfile.TemporaryDirectory() as folder:
            result = run(folder)
    else:
        log_dir = Path(out_dir) if out_dir is not None else default_log_dir()
        result = run(log_dir)
    chosen = get_workloads(workloads)
    records = [{"id": r["id"], "hparams": r["hparams"], "evals": r["evals"]} for r in result.records]
    return {
        "by_time": _as_dict(result.by_time),
        "by_steps": _as_dict(result.by_steps),
        "submissions": submissions,
        "trials": trials,
        "ran_trials": result.ran_trials,
        "workloads": {
            w.name: {
                "target": w.target,
                "direction": w.direction,
                "base_workload": w.base_workload,
                "metric": w.metric,
                "description": w.description,
            }
            for w in chosen
        },
        "records": records,
        "seconds_per_step": seconds_per_step(records),
        "log_dir": None if log_dir is None else str(log_dir),
    }


# Facts about the first competition, as published (Dahl et al. 2023; Kasimbeg et al. 2025; the v0.5 leaderboard).
COMPETITION = {
    "submissions": 18,
    "teams": 10,
    "base_workloads": 8,
    "hardware": "8x NVIDIA V100",
    "external_tuning_trials_per_workload": 5,
    "self_tuning_budget_factor": 3,
    "winner_external_tuning": "Distributed Shampoo",
    "winner_self_tuning": "Schedule Free AdamW",
}


def leaderboard() -> dict:
    """The published v0.5 scores, best first: ``"rows"`` (external tuning, 11 submissions),
    ``"self_tuning"`` (6 submissions), their source and the competition's facts (:data:`COMPETITION`)."""
    rows = sorted(LEADERBOARD_V05, key=lambda row: -row["score"])
    self_tuning = sorted(SELF_TUNING_V05, key=lambda row: -row["score"])
    return {"rows": rows, "self_tuning": self_tuning, "source": LEADERBOARD_SOURCE, "competition": dict(COMPETITION)}
