"""The benchmark runner: trials logged in the AlgoPerf format, scored, and resumed after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from gd_lib.benchmark.runner import run_benchmark, trial_hyperparameters
from gd_lib.benchmark.scoring import read_evaluations, read_workloads, score_submissions
from gd_lib.benchmark.submissions import SUBMISSIONS, get_submission
from gd_lib.benchmark.workloads import WORKLOADS, get_workloads

CPU = torch.device("cpu")


def test_every_base_workload_has_a_variant_and_variants_pull_in_their_base():
    bases = {w.name for w in WORKLOADS.values() if w.base_workload is None}
    variants = {w.base_workload for w in WORKLOADS.values() if w.base_workload is not None}
    assert len(bases) >= 4 and bases == variants
    names = [w.name for w in get_workloads(["mlp_digits_tanh"])]
    assert names == ["mlp_digits", "mlp_digits_tanh"]
    with pytest.raises(ValueError, match="Unknown workloads"):
        get_workloads(["nope"])


def test_external_tuning_draws_the_same_points_on_every_workload_and_new_ones_per_study():
    sub = get_submission("adamw")
    a, b = trial_hyperparameters(sub, "external", 0, 3), trial_hyperparameters(sub, "external", 0, 3)
    assert a == b and len(a) == 3 and len({h["lr"] for h in a}) == 3
    assert trial_hyperparameters(sub, "external", 1, 3) != a
    assert trial_hyperparameters(sub, "self", 0, 3) == [sub.defaults]
    with pytest.raises(ValueError, match="Unknown submission"):
        get_submission("sgdd")


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_trials(tmp_path):
    kwargs = dict(
        submissions=["adamw", "sgd"],
        workloads=["mlp_digits"],
        ruleset="external",
        trials=2,
        studies=1,
        out_dir=tmp_path,
        quick=True,
        device=CPU,
        progress=False,
    )
    first = run_benchmark(max_trials=3, **kwargs)  # "interrupted" after 3 of 4 trials
    assert first.ran_trials == 3
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 3
    with (tmp_path / "trials.jsonl").open("a") as fh:  # a half-written line from a crash is ignored
        fh.write('{"id": "sgd/mlp_digits/study0/tri')
    second = run_benchmark(**kwargs)
    assert (second.ran_trials, second.skipped_trials) == (1, 3)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip().endswith("}")]
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted({f"{s}/mlp_digits/study0/trial{t}" for s in ("adamw", "sgd") for t in (0, 1)})
    # the logs are in the EVALS.csv format and score the same as the runner says
    evals = read_evaluations(tmp_path / "evals_steps.csv")
    assert {e.submission for e in evals} == {"adamw", "sgd"}
    rescored = score_submissions(evals, read_workloads(tmp_path / "WORKLOADS.csv"))
    assert rescored.scores == second.by_steps.scores
    # the first evaluation happens after eval_every steps; steps are counted from 1
    assert min(e.time for e in evals) == WORKLOADS["mlp_digits"].eval_every
    third = run_benchmark(**kwargs)
    assert third.ran_trials == 0 and third.skipped_trials == 4


def test_trials_run_on_the_asked_threads_and_the_count_is_restored(tmp_path, monkeypatch):
    import gd_lib.benchmark.runner as runner

    seen = []
    monkeypatch.setattr(runner, "run_trial", lambda *a, **k: seen.append(torch.get_num_threads()) or [])
    monkeypatch.setattr(runner, "warm_up", lambda *a, **k: None)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a count neither run uses, so that restoring it is seen
    kwargs = dict(submissions=["sgd"], workloads=["mlp_digits"], trials=1, quick=True, device=CPU, progress=False)
    run_benchmark(out_dir=tmp_path / "a", **kwargs)
    run_benchmark(out_dir=tmp_path / "b", threads=2, **kwargs)
    try:
        assert seen == [1, 2]  # default: 1 thread; then the 2 asked for
        assert torch.get_num_threads() == 3
        with pytest.raises(ValueError, match="threads"):
            run_benchmark(out_dir=tmp_path / "c", threads=0, **kwargs)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_cli_run_prints_the_score_table_and_draws_the_profile(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gd_lib.benchmark",
            "run",
            "--submissions",
            "adamw,sgd",
            "--workloads",
            "mlp_digits",
            "--trials",
            "1",
            "--quick",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| submission" in proc.stdout and "adamw" in proc.stdout and "sgd" in proc.stdout
    assert (tmp_path / "performance_profiles.png").read_bytes()[:4] == b"\x89PNG"


def test_submissions_build_their_optimizers_on_a_small_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    for name, sub in SUBMISSIONS.items():
        opt, schedule = sub.build(model, dict(sub.defaults), 20)
        assert isinstance(opt, torch.optim.Optimizer), name
        if schedule is not None:
            assert schedule(0) == 0.0 and schedule(19) < schedule(5), name  # warm-up from 0, then decay
