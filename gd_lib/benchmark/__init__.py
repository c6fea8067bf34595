"""AlgoPerf-style benchmarking of training algorithms.

A topic of the course (lecture 6, assignment 5): how fast an optimizer *trains* to a target, scored
by AlgoPerf's rules. Not to be confused with the top-level ``benchmarks/`` (``make bench``), which
measures how fast the course's own code runs, for its maintainers.

- :mod:`gd_lib.benchmark.scoring`: time-to-target, performance profiles and
  the AlgoPerf v0.5 score, from evaluation logs (EVALS.csv) and workload
  targets (WORKLOADS.csv).

Command line: ``python -m gd_lib.benchmark score --evals EVALS.csv --workloads WORKLOADS.csv``.
"""

from .scoring import (
    Evaluation,
    ScoreResult,
    Workload,
    apply_variant_rules,
    performance_profile,
    performance_ratios,
    profile_score,
    read_evaluations,
    read_workloads,
    score_submissions,
    score_times,
    study_time_to_target,
    tau_grid,
    time_table,
    trial_time_to_target,
    workload_time_to_target,
    write_evaluations,
)

__all__ = [
    "Evaluation",
    "ScoreResult",
    "Workload",
    "apply_variant_rules",
    "performance_profile",
    "performance_ratios",
    "profile_score",
    "read_evaluations",
    "read_workloads",
    "score_submissions",
    "score_times",
    "study_time_to_target",
    "tau_grid",
    "time_table",
    "trial_time_to_target",
    "workload_time_to_target",
    "write_evaluations",
]
