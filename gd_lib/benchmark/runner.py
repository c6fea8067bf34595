"""The benchmark runner: trials of submissions on workloads, logged as AlgoPerf logs them.

For each submission, workload and study, the runner trains the workload's
model with the submission's optimizer and logs every evaluation. Two clocks
are kept: wall-clock training seconds (evaluation time excluded, the GPU
synchronized around each step, after an untimed warm-up) and steps. Both are
written in the EVALS.csv format of :mod:`gd_lib.benchmark.scoring`
(``evals_time.csv`` and ``evals_steps.csv``) and scored.

Rulesets:
- ``external``: ``trials`` hyperparameter settings per study, drawn by
  quasirandom search from the submission's space (the same points on every
  workload, a different shift per study), repeated over ``studies`` studies.
- ``self``: one trial per study with the submission's defaults and 3x the
  step budget.

Every finished trial is appended to ``trials.jsonl`` in the output folder;
rerunning with the same folder skips finished trials, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gd_lib.schedules import ScheduleLR

from .scoring import Evaluation, ScoreResult, Workload, score_submissions, write_evaluations
from .search import sample_search_space
from .submissions import Submission, get_submission
from .workloads import MiniWorkload, get_workloads

RULESETS = ("external", "self")
SELF_TUNING_BUDGET = 3


@dataclass(frozen=True)
class TrialKey:
    submission: str
    workload: str
    study: int
    trial: int

    def as_id(self) -> str:
        return f"{self.submission}/{self.workload}/study{self.study}/trial{self.trial}"


def stable_seed(*parts) -> int:
    """A seed from names and numbers that is the same in every process and Python version."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def trial_hyperparameters(submission: Submission, ruleset: str, study: int, trials: int) -> list[dict]:
    if ruleset == "self":
        return [dict(submission.defaults)]
    return sample_search_space(submission.search_space, trials, seed=stable_seed(submission.name, "study", study))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_trial(
    submission: Submission,
    workload: MiniWorkload,
    hparams: dict,
    seed: int,
    device: torch.device,
    quick: bool,
    budget_multiplier: int = 1,
) -> list[dict]:
    """Train once; returns the evaluations [{eval_index, time, step, metric_value, train_loss}]."""
    torch.manual_seed(seed)
    problem = workload.make(seed=seed, device=device, quick=quick)
    model = problem.model
    total_steps = workload.steps(quick) * budget_multiplier
    optimizer, schedule = submission.build(model, hparams, total_steps)
    scheduler = ScheduleLR(optimizer, schedule) if schedule is not None else None
    train_set_mode = getattr(optimizer, "train", None) if submission.uses_eval_mode else None

    evals: list[dict] = []
    train_seconds = 0.0
    for step in range(total_steps):
        batch = problem.train_batch(step)
        model.train()
        if train_set_mode is not None:
            optimizer.train()

        def closure(batch=batch):
            optimizer.zero_grad(set_to_none=True)
            loss = problem.loss(model, batch)
            loss.backward()
            return loss

        _synchronize(device)
        start = time.perf_counter()
        if submission.needs_closure:
            loss = optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        _synchronize(device)
        train_seconds += time.perf_counter() - start

        last = step + 1 == total_steps
        loss_value = float(loss.detach())
        diverged = not math.isfinite(loss_value)
        if (step + 1) % workload.eval_every == 0 or last or diverged:
            model.eval()
            if train_set_mode is not None:
                optimizer.eval()
            with torch.no_grad():
                metric = float(problem.evaluate(model))
            evals.append(
                {
                    "eval_index": len(evals),
                    "time": train_seconds,
                    "step": step + 1,
                    "metric_value": metric,
                    "train_loss": loss_value,
                }
            )
            if workload.target_reached(metric) or diverged:
                break  # time to target is known (or never will be): the rest of the budget is not needed
    return evals


def warm_up(workload: MiniWorkload, device: torch.device, quick: bool) -> None:
    """A few untimed steps so that the first timed trial pays no one-off start-up costs."""
    problem = workload.make(seed=0, device=device, quick=quick)
    opt = torch.optim.SGD(problem.model.parameters(), lr=0.0)
    for step in range(3):
        opt.zero_grad()
        problem.loss(problem.model, problem.train_batch(step)).backward()
        opt.step()
    with torch.no_grad():
        problem.evaluate(problem.model)
    _synchronize(device)


def _load_finished(path: Path) -> dict[str, dict]:
    finished = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption: that trial runs again
            finished[record["id"]] = record
    return finished


def records_to_evaluations(records: Iterable[dict], clock: str) -> list[Evaluation]:
    """Trial records -> Evaluation rows, with ``time`` on the wall clock ("time") or in steps ("step")."""
    out = []
    for r in records:
        for e in r["evals"]:
            out.append(
                Evaluation(
                    r["submission"],
                    r["workload"],
                    str(r["study"]),
                    str(r["trial"]),
                    int(e["eval_index"]),
                    float(e[clock]),
                    float(e["metric_value"]),
                )
            )
    return out


def workload_table(workloads: Sequence[MiniWorkload]) -> dict[str, Workload]:
    return {w.name: Workload(w.name, w.direction, w.target, w.base_workload) for w in workloads}


@dataclass
class RunResult:
    out_dir: Path
    records: list[dict]
    by_time: ScoreResult  # scored on wall-clock training seconds
    by_steps: ScoreResult  # scored on steps
    ran_trials: int
    skipped_trials: int


def _run_plan(
    plan, finished: dict, log_path: Path, bar, device: torch.device, quick: bool, ruleset: str, max_trials: int | None
) -> tuple[int, int]:
    """Run the trials of ``plan`` not yet in ``finished``, appending each to the log; (ran, skipped)."""
    ran = skipped = 0
    warmed: set[str] = set()
    with log_path.open("a") as log:
        if log.tell() > 0 and not log_path.read_bytes().endswith(b"\n"):
            log.write("\n")  # a line cut short by an interruption stays on its own (ignored) line
        for key, sub, wl, hparams in plan:
            if key.as_id() in finished:
                skipped += 1
                bar.update(1)
                continue
            if max_trials is not None and ran >= max_trials:
                break
            if wl.name not in warmed:
                warm_up(wl, device, quick)
                warmed.add(wl.name)
            bar.set_postfix_str(key.as_id())
            budget = SELF_TUNING_BUDGET if ruleset == "self" else 1
            evals = run_trial(sub, wl, hparams, stable_seed(wl.name, key.study, key.trial), device, quick, budget)
            record = {
                "id": key.as_id(),
                "submission": sub.name,
                "workload": wl.name,
                "study": key.study,
                "trial": key.trial,
                "hparams": hparams,
                "ruleset": ruleset,
                "quick": quick,
                "device": str(device),
                "evals": evals,
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            finished[key.as_id()] = record
            ran += 1
            bar.update(1)
    return ran, skipped


def run_benchmark(
    submissions: Sequence[str],
    workloads: Sequence[str] | None = None,
    ruleset: str = "external",
    trials: int = 5,
    studies: int = 1,
    out_dir="out/benchmark",
    quick: bool = True,
    device: torch.device | None = None,
    progress: bool | None = None,
    max_trials: int | None = None,
    threads: int | None = None,
) -> RunResult:
    """Run (or resume) a benchmark and score it; see the module docstring.

    ``max_trials`` stops after that many new trials (used to test resuming). ``threads``:
    torch's intra-op threads while the trials run on a CPU (default 1: the mini workloads'
    tensors are too small for a thread pool to pay off — on a 2-core CPU two threads cost
    about 3x the CPU time of one for the same trials — and one thread keeps the wall-clock
    times steadier when other programs share the cores); ignored on a GPU.
    """
    import gd_lib

    if ruleset not in RULESETS:
        raise ValueError(f"Invalid ruleset: {ruleset!r}; expected one of {RULESETS}")
    if trials < 1 or studies < 1:
        raise ValueError(f"Invalid trials/studies: {trials}/{studies}; expected integers >= 1")
    subs = [get_submission(name) for name in submissions]
    wls = get_workloads(workloads)
    device = device or gd_lib.device()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "trials.jsonl"
    finished = _load_finished(log_path)

    plan = []
    for sub in subs:
        for study in range(studies):
            settings = trial_hyperparameters(sub, ruleset, study, trials)
            for wl in wls:
                for trial, hparams in enumerate(settings):
                    plan.append((TrialKey(sub.name, wl.name, study, trial), sub, wl, hparams))

    if progress is None:
        progress = sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan), desc=f"{ruleset} tuning", unit="trial", disable=not progress)
    if threads is not None and threads < 1:
        raise ValueError(f"Invalid threads: {threads}; expected an integer >= 1")
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads or 1)
    try:
        ran, skipped = _run_plan(plan, finished, log_path, bar, device, quick, ruleset, max_trials)
    finally:
        torch.set_num_threads(saved_threads)
    bar.close()

    wanted = {k.as_id() for k, *_ in plan}
    records = [r for rid, r in finished.items() if rid in wanted]
    table = workload_table(wls)
    for clock, name in (("time", "evals_time.csv"), ("step", "evals_steps.csv")):
        write_evaluations(out / name, records_to_evaluations(records, clock))
    by_time = score_submissions(records_to_evaluations(records, "time"), table)
    by_steps = score_submissions(records_to_evaluations(records, "step"), table)
    (out / "WORKLOADS.csv").write_text(
        "workload,base_workload,direction,target\n"
        + "".join(f"{w.name},{w.base_workload or ''},{w.direction},{w.target!r}\n" for w in wls)
    )
    return RunResult(out, records, by_time, by_steps, ran, skipped)
