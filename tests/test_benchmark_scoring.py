"""AlgoPerf v0.5 scoring, checked on cases computed by hand.

The τ grid is linspace(1, 4, 100), spacing Δ = 3/99. The hand examples put
every performance ratio strictly between grid points (1.5 = τ_16.5,
2.5 = τ_49.5) so that the trapezoid areas are exact fractions:
  r = (1, 1.5):  ρ = ½ up to τ_16, 1 from τ_17  -> area Δ(16·½ + ¾ + 82) = 2.75 -> score 11/12
  r = (inf, 1):  ρ = ½ everywhere                 -> score ½
  r = (2.5, inf): ρ = 0 up to τ_49, ½ from τ_50  -> area Δ(¼ + 49·½) = 0.75 -> score ¼
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gd_lib.benchmark import (
    Evaluation,
    Workload,
    apply_variant_rules,
    read_evaluations,
    read_workloads,
    score_submissions,
    score_times,
    study_time_to_target,
    trial_time_to_target,
    workload_time_to_target,
    write_evaluations,
)

INF = math.inf
EXACT = 1e-12  # the hand values are exact fractions; only float summation error remains


def ev(sub, wl, study, trial, idx, time, metric):
    return Evaluation(sub, wl, str(study), str(trial), idx, float(time), float(metric))


def test_trial_reaches_target_at_first_evaluation_at_or_past_it():
    loss = Workload("w", "min", 0.5)
    evals = [ev("s", "w", 0, 0, 0, 10, 0.9), ev("s", "w", 0, 0, 1, 20, 0.5), ev("s", "w", 0, 0, 2, 30, 0.3)]
    assert trial_time_to_target(evals, loss) == (1, 20.0)  # <= target counts
    acc = Workload("w", "max", 0.7)
    evals = [ev("s", "w", 0, 0, 0, 1, 0.1), ev("s", "w", 0, 0, 1, 2, float("nan")), ev("s", "w", 0, 0, 2, 3, 0.7)]
    assert trial_time_to_target(evals, acc) == (2, 3.0)


def test_nan_never_reaches_the_target():
    for direction in ("min", "max"):
        wl = Workload("w", direction, 0.5)
        assert trial_time_to_target([ev("s", "w", 0, 0, 0, 1, float("nan"))], wl) is None
        assert not wl.reached(float("nan"))


def test_study_takes_smallest_eval_index_not_smallest_time_and_ties_go_to_first_trial():
    wl = Workload("w", "min", 0.5)
    trials = {
        "a": [ev("s", "w", 0, "a", 0, 30, 0.9), ev("s", "w", 0, "a", 2, 50, 0.4)],  # hit at index 2, t=50
        "b": [ev("s", "w", 0, "b", 0, 20, 0.9), ev("s", "w", 0, "b", 2, 40, 0.4)],  # tie at index 2, t=40
        "c": [ev("s", "w", 0, "c", 3, 30, 0.1)],  # index 3 though t=30
    }
    assert study_time_to_target(trials, wl) == 50.0
    assert study_time_to_target({"x": [ev("s", "w", 0, "x", 0, 1, 0.9)]}, wl) == INF


def test_workload_time_is_median_over_studies_with_inf_propagating():
    wl = Workload("w", "min", 0.5)

    def study(time):  # a study whose one trial hits at `time` (or never)
        return {"0": [ev("s", "w", 0, 0, 0, time, 0.1 if math.isfinite(time) else 0.9)]}

    assert workload_time_to_target({"0": study(10), "1": study(20), "2": study(INF)}, wl) == 20.0
    assert workload_time_to_target({"0": study(10), "1": study(INF)}, wl) == INF
    assert workload_time_to_target({str(i): study(t) for i, t in enumerate([10, 20, 30, 40])}, wl) == 25.0
    # missing studies: ignored by default (as the reference), inf when the expected count is given
    two = {"0": study(10), "1": study(20)}
    assert workload_time_to_target(two, wl) == 15.0
    assert workload_time_to_target(two, wl, num_studies=3) == 20.0
    assert workload_time_to_target(two, wl, num_studies=4) == INF
    assert workload_time_to_target({}, wl) == INF


VARIANT_WORKLOADS = {
    "A": Workload("A", "min", 1.0),
    "A_v": Workload("A_v", "min", 1.0, "A"),
    "B": Workload("B", "min", 1.0),
    "B_v": Workload("B_v", "min", 1.0, "B"),
}


def test_variant_rules_by_hand():
    times = {
        "s1": {"A": 10, "A_v": 100, "B": 50, "B_v": 20},
        "s2": {"A": 25, "A_v": 30, "B": INF, "B_v": 10},  # base B never reached -> B_v inf
        "s3": {"A": 45, "A_v": 40, "B": 60, "B_v": 90},  # A > 4x10 -> inf; slow variant B_v > 4x20 -> inf -> B inf
    }
    out = apply_variant_rules(times, VARIANT_WORKLOADS)
    assert out == {
        "s1": {"A": 10, "A_v": 100, "B": 50, "B_v": 20},
        "s2": {"A": 25, "A_v": 30, "B": INF, "B_v": INF},
        "s3": {"A": INF, "A_v": 40, "B": INF, "B_v": INF},
    }
    assert times["s2"]["B_v"] == 10  # the input is not mutated


def test_scores_from_a_time_table_by_hand():
    times = {
        "s1": {"A": 10, "A_v": 100, "B": 50, "B_v": 20},
        "s2": {"A": 25, "A_v": 30, "B": INF, "B_v": 10},
        "s3": {"A": 45, "A_v": 40, "B": 60, "B_v": 90},
    }
    result = score_times(times, VARIANT_WORKLOADS)
    assert result.base_workloads == ["A", "B"]
    np.testing.assert_array_equal(result.ratios["s2"], [2.5, INF])
    assert result.scores["s1"] == pytest.approx(1.0, abs=EXACT)
    assert result.scores["s2"] == pytest.approx(0.25, abs=EXACT)
    assert result.scores["s3"] == 0.0
    assert np.allclose(result.taus, np.linspace(1, 4, 100))


def test_submission_without_logs_for_a_workload_never_reaches_it():
    wls = {"A": Workload("A", "min", 1.0), "B": Workload("B", "min", 1.0)}
    result = score_times({"s1": {"A": 10, "B": 10}, "s2": {"A": 15}}, wls)
    np.testing.assert_array_equal(result.ratios["s2"], [1.5, INF])
    # r = (1.5, inf): ρ = 0 to τ_16, ½ from τ_17 -> area Δ(¼ + 82·½) = 1.25 -> score 1.25/3
    assert result.scores["s2"] == pytest.approx(1.25 / 3, abs=EXACT)


def test_workload_nobody_reaches_counts_against_everyone():
    wls = {"A": Workload("A", "min", 1.0), "B": Workload("B", "min", 1.0)}
    result = score_times({"s1": {"A": 10, "B": INF}, "s2": {"A": 20, "B": INF}}, wls)
    assert result.scores["s1"] == pytest.approx(0.5, abs=EXACT)  # ρ = ½ everywhere


# --- the 3-submission hand example, through CSV files and the CLI ----------------------

HAND_WORKLOADS = "workload,base_workload,direction,target\nW1,,min,0.5\nW1v,W1,min,0.6\nW2,,max,0.9\n"
HAND_EVALS = [
    # s1 / W1: three studies with times 8, 10, 50 -> median 10
    ev("s1", "W1", 0, 0, 0, 2, 0.9),
    ev("s1", "W1", 0, 0, 1, 8, 0.45),  # hits at index 1, t=8
    ev("s1", "W1", 0, 1, 0, 1, 0.7),
    ev("s1", "W1", 0, 1, 1, 3, 0.6),
    ev("s1", "W1", 0, 1, 2, 5, 0.3),  # index 2
    ev("s1", "W1", 1, 0, 0, 5, 0.8),
    ev("s1", "W1", 1, 0, 1, 10, 0.5),  # equal to target: hits, t=10
    ev("s1", "W1", 1, 1, 0, 5, float("nan")),
    ev("s1", "W1", 1, 1, 1, 10, float("nan")),
    ev("s1", "W1", 2, 0, 0, 25, 0.6),
    ev("s1", "W1", 2, 0, 1, 50, 0.2),  # t=50
    ev("s1", "W1v", 0, 0, 0, 6, 0.7),
    ev("s1", "W1v", 0, 0, 1, 12, 0.55),  # 12
    ev("s1", "W2", 0, 0, 0, 15, 0.5),
    ev("s1", "W2", 0, 0, 1, 30, 0.95),  # 30
    # s2: W1 15 but its variant never reaches -> W1 inf; W2 20 (tie at index 1 -> first trial)
    ev("s2", "W1", 0, 0, 0, 15, 0.1),
    ev("s2", "W1v", 0, 0, 0, 5, 0.9),
    ev("s2", "W1v", 0, 0, 1, 10, float("nan")),
    ev("s2", "W2", 0, 0, 0, 10, 0.8),
    ev("s2", "W2", 0, 0, 1, 20, 0.91),
    ev("s2", "W2", 0, 1, 0, 7, 0.85),
    ev("s2", "W2", 0, 1, 1, 25, 0.92),
    # s3: W1 25 (2.5x), W1v 10, no logs at all for W2
    ev("s3", "W1", 0, 0, 0, 25, 0.5),
    ev("s3", "W1v", 0, 0, 0, 10, 0.3),
]
HAND_SCORES = {"s1": 11 / 12, "s2": 0.5, "s3": 0.25}


@pytest.fixture
def hand_files(tmp_path):
    wl_path = tmp_path / "WORKLOADS.csv"
    wl_path.write_text(HAND_WORKLOADS)
    evals_path = tmp_path / "EVALS.csv"
    write_evaluations(evals_path, HAND_EVALS)
    return evals_path, wl_path


def test_hand_example_through_python_functions(hand_files):
    evals_path, wl_path = hand_files
    evals = read_evaluations(evals_path)
    assert [repr(e) for e in evals] == [repr(e) for e in HAND_EVALS]  # lossless CSV round trip (NaN != NaN)
    result = score_submissions(evals, read_workloads(wl_path))
    assert result.raw_times["s1"] == {"W1": 10.0, "W1v": 12.0, "W2": 30.0}
    assert result.raw_times["s2"] == {"W1": 15.0, "W1v": INF, "W2": 20.0}
    assert result.raw_times["s3"] == {"W1": 25.0, "W1v": 10.0, "W2": INF}
    for name, expected in HAND_SCORES.items():
        assert result.scores[name] == pytest.approx(expected, abs=EXACT), name


def test_hand_example_through_the_cli(hand_files, tmp_path):
    evals_path, wl_path = hand_files
    png = tmp_path / "profile.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gd_lib.benchmark",
            "score",
            "--evals",
            str(evals_path),
            "--workloads",
            str(wl_path),
            "--profile",
            str(png),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(proc.stdout)
    assert set(scores) == set(HAND_SCORES)
    for name, expected in HAND_SCORES.items():
        assert scores[name] == pytest.approx(expected, abs=EXACT), name
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_input_clearly(tmp_path):
    bad = tmp_path / "WORKLOADS.csv"
    bad.write_text("workload,direction,target\nW1,min,0.5\n")
    evals = tmp_path / "EVALS.csv"
    write_evaluations(evals, HAND_EVALS[:1])
    proc = subprocess.run(
        [sys.executable, "-m", "gd_lib.benchmark", "score", "--evals", str(evals), "--workloads", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "expected the columns workload,base_workload,direction,target" in proc.stderr


def test_bad_workload_definitions_raise():
    with pytest.raises(ValueError, match="direction"):
        Workload("w", "down", 0.5)
    with pytest.raises(ValueError, match="target"):
        Workload("w", "min", float("nan"))
    with pytest.raises(ValueError, match="unknown base workload"):
        apply_variant_rules({"s": {"v": 1.0}}, {"v": Workload("v", "min", 1.0, "nope")})
