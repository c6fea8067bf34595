"""AlgoPerf scoring: time-to-target, performance profiles and the benchmark score.

The rules are those of AlgoPerf v0.5 (Dahl et al. 2023, "Benchmarking Neural
Network Training Algorithms", §4; Kasimbeg et al. 2025, "Accelerating neural
network training: An analysis of the AlgoPerf competition"; the reference code
is ``scoring/performance_profile.py`` of mlcommons/algorithmic-efficiency):

1. A trial reaches the target at its first evaluation whose metric is
   ``<= target`` (``direction == "min"``) or ``>= target`` (``"max"``). NaN never
   reaches it.
2. Per study: among the trials that reach the target, take the one whose first
   hit has the smallest evaluation index (ties go to the trial logged first,
   as the reference's ``idxmin`` does); the study's time is that trial's
   ``time`` at that evaluation, ``inf`` if no trial reaches the target.
3. Per workload: the median of the study times (``inf`` propagates).
4. Held-out variants: a variant's time is ``inf`` if its base workload's is;
   in every column (base and variant) a time more than 4x the best
   submission's time in that column becomes ``inf``; then a base workload's
   time becomes ``inf`` if any of its variants' is.
5. On base workloads only: r = t / min over submissions;
   ρ(τ) = |{base workloads with r <= τ}| / (number of base workloads),
   on τ = linspace(1, 4, 100); score = ∫ρ(τ)dτ (trapezoid) / (4 - 1).

A submission with no logs for a workload gets ``inf`` there (it never reached
the target). Studies that are absent from the logs are not counted unless
``num_studies`` is given, in which case each missing study counts as ``inf``
(the reference only warns about them).

Everything here is plain Python and NumPy, so that it reads next to the rules.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVALS_COLUMNS = ("submission", "workload", "study", "trial", "eval_index", "time", "metric_value")
WORKLOADS_COLUMNS = ("workload", "base_workload", "direction", "target")
MAX_TAU = 4.0
NUM_TAU_POINTS = 100


@dataclass(frozen=True)
class Workload:
    """A workload's validation target. ``base_workload`` is None for a base workload."""

    name: str
    direction: str  # "min": loss-like, lower is better; "max": accuracy-like
    target: float
    base_workload: str | None = None

    def __post_init__(self):
        if self.direction not in ("min", "max"):
            raise ValueError(
                f"Invalid direction for workload {self.name!r}: {self.direction!r}; expected 'min' or 'max'"
            )
        if not math.isfinite(self.target):
            raise ValueError(f"Invalid target for workload {self.name!r}: {self.target!r}; expected a finite number")

    @property
    def is_base(self) -> bool:
        return self.base_workload is None

    def reached(self, metric_value: float) -> bool:
        """Whether one evaluation reaches the target (NaN never does)."""
        if math.isnan(metric_value):
            return False
        return metric_value <= self.target if self.direction == "min" else metric_value >= self.target


@dataclass(frozen=True)
class Evaluation:
    submission: str
    workload: str
    study: str
    trial: str
    eval_index: int
    time: float
    metric_value: float


# --- steps 1–3: time to target -------------------------------------------------------


def trial_time_to_target(evals: Iterable[Evaluation], workload: Workload) -> tuple[int, float] | None:
    """(eval_index, time) of a trial's first evaluation that reaches the target, or None."""
    for ev in sorted(evals, key=lambda e: e.eval_index):
        if workload.reached(ev.metric_value):
            return ev.eval_index, ev.time
    return None


def study_time_to_target(trials: Mapping[str, list[Evaluation]], workload: Workload) -> float:
    """Time of the trial whose first hit has the smallest evaluation index; inf if none hits.

    ``trials`` maps trial id to its evaluations, in the order the trials were
    logged; among trials hitting at the same index the first logged wins.
    """
    best: tuple[int, float] | None = None
    for evals in trials.values():
        hit = trial_time_to_target(evals, workload)
        if hit is not None and (best is None or hit[0] < best[0]):
            best = hit
    return math.inf if best is None else best[1]


def workload_time_to_target(
    studies: Mapping[str, Mapping[str, list[Evaluation]]], workload: Workload, num_studies: int | None = None
) -> float:
    """Median over studies of the study times (inf when there are no studies at all)."""
    times = [study_time_to_target(trials, workload) for trials in studies.values()]
    if num_studies is not None:
        if len(times) > num_studies:
            raise ValueError(
                f"workload {workload.name!r} has {len(times)} studies, more than num_studies={num_studies}"
            )
        times += [math.inf] * (num_studies - len(times))
    if not times:
        return math.inf
    return float(np.median(np.asarray(times, dtype=float)))


def group_evaluations(evals: Iterable[Evaluation]) -> dict:
    """{submission: {workload: {study: {trial: [Evaluation, ...]}}}}, insertion-ordered."""
    tree: dict = {}
    for ev in evals:
        tree.setdefault(ev.submission, {}).setdefault(ev.workload, {}).setdefault(ev.study, {}).setdefault(
            ev.trial, []
        ).append(ev)
    return tree


def time_table(
    evals: Iterable[Evaluation], workloads: Mapping[str, Workload], num_studies: int | None = None
) -> dict[str, dict[str, float]]:
    """{submission: {workload: time to target}} for every workload in ``workloads``."""
    tree = group_evaluations(evals)
    unknown = {w for sub in tree.values() for w in sub} - set(workloads)
    if unknown:
        raise ValueError(f"evaluations name workloads missing from the workloads table: {sorted(unknown)}")
    return {
        submission: {
            name: workload_time_to_target(per_workload.get(name, {}), wl, num_studies) for name, wl in workloads.items()
        }
        for submission, per_workload in tree.items()
    }


# --- step 4: held-out variants and the 4x rule ---------------------------------------


def apply_variant_rules(
    times: Mapping[str, Mapping[str, float]], workloads: Mapping[str, Workload]
) -> dict[str, dict[str, float]]:
    """Step 4 of the rules, on a {submission: {workload: time}} table; returns a new table."""
    table = {s: dict(row) for s, row in times.items()}
    variants = [w for w in workloads.values() if not w.is_base]
    for wl in variants:
        if wl.base_workload not in workloads:
            raise ValueError(f"variant {wl.name!r} names an unknown base workload {wl.base_workload!r}")
    # a variant's time is inf if its base workload's is
    for row in table.values():
        for wl in variants:
            if math.isinf(row[wl.base_workload]):
                row[wl.name] = math.inf
    # in every column, a time more than 4x the best submission's is inf
    for name in workloads:
        best = min(row[name] for row in table.values()) if table else math.inf
        for row in table.values():
            if row[name] > MAX_TAU * best:
                row[name] = math.inf
    # a base workload's time is inf if its variant's is
    for row in table.values():
        for wl in variants:
            if math.isinf(row[wl.name]):
                row[wl.base_workload] = math.inf
    return table


# --- step 5: performance profiles and the score -------------------------------------


def tau_grid(max_tau: float = MAX_TAU, num_points: int = NUM_TAU_POINTS) -> np.ndarray:
    return np.linspace(1.0, max_tau, num_points)


def performance_ratios(times: Mapping[str, Mapping[str, float]], base_workloads: list[str]) -> dict[str, np.ndarray]:
    """r[s][w] = t[s][w] / min_s' t[s'][w] on base workloads (inf where unreached, or where none reached)."""
    submissions = list(times)
    t = np.array([[times[s][w] for w in base_workloads] for s in submissions], dtype=float).reshape(
        len(submissions), len(base_workloads)
    )
    best = t.min(axis=0) if len(submissions) else np.full(len(base_workloads), math.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = t / best
    r[~np.isfinite(r)] = math.inf  # inf/inf (nobody reached) never counts as solved
    return {s: r[i] for i, s in enumerate(submissions)}


def performance_profile(ratios: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """ρ(τ) = fraction of base workloads with r <= τ, for each τ."""
    if ratios.size == 0:
        raise ValueError("a performance profile needs at least one base workload")
    return (ratios[None, :] <= taus[:, None]).sum(axis=1) / ratios.size


def profile_score(rho: np.ndarray, taus: np.ndarray) -> float:
    """Normalized area under the profile: trapezoid ∫ρ dτ / (τ_max - τ_min)."""
    area = float(np.sum((rho[1:] + rho[:-1]) * np.diff(taus)) / 2.0)
    return area / float(taus[-1] - taus[0])


@dataclass
class ScoreResult:
    scores: dict[str, float]
    times: dict[str, dict[str, float]]  # after the variant and 4x rules
    raw_times: dict[str, dict[str, float]]  # median time to target per workload
    ratios: dict[str, np.ndarray]  # on base workloads
    base_workloads: list[str]
    taus: np.ndarray
    profiles: dict[str, np.ndarray]

    @property
    def workload_names(self) -> list[str]:
        return list(next(iter(self.raw_times.values()), {}))


def score_submissions(
    evals: Iterable[Evaluation], workloads: Mapping[str, Workload], num_studies: int | None = None
) -> ScoreResult:
    """All five steps: evaluation logs and workload targets -> {submission: score}."""
    raw = time_table(evals, workloads, num_studies)
    return score_times(raw, workloads)


def score_times(raw_times: Mapping[str, Mapping[str, float]], workloads: Mapping[str, Workload]) -> ScoreResult:
    """Steps 4–5 from a {submission: {workload: time}} table (e.g. a published leaderboard's)."""
    # a submission with no time for a workload never reached its target there: inf
    raw = {s: {w: float(row.get(w, math.inf)) for w in workloads} for s, row in raw_times.items()}
    times = apply_variant_rules(raw, workloads)
    base = [w for w, wl in workloads.items() if wl.is_base]
    ratios = performance_ratios(times, base)
    taus = tau_grid()
    profiles = {s: performance_profile(r, taus) for s, r in ratios.items()}
    scores = {s: profile_score(rho, taus) for s, rho in profiles.items()}
    return ScoreResult(scores, times, raw, ratios, base, taus, profiles)


# --- CSV input ------------------------------------------------------------------------


def _check_columns(path: Path, header: list[str] | None, expected: tuple[str, ...]) -> None:
    if header is None or [h.strip() for h in header] != list(expected):
        raise ValueError(f"{path}: expected the columns {','.join(expected)}; found {header}")


def _float(value: str, path: Path, line: int, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: column {column!r} is not a number: {value!r}") from None


def read_workloads(path) -> dict[str, Workload]:
    """WORKLOADS.csv: ``workload,base_workload,direction,target`` (empty base for a base workload)."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        _check_columns(path, next(reader, None), WORKLOADS_COLUMNS)
        out: dict[str, Workload] = {}
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            name, base, direction, target = (c.strip() for c in row)
            if name in out:
                raise ValueError(f"{path}:{line}: workload {name!r} listed twice")
            out[name] = Workload(name, direction, _float(target, path, line, "target"), base or None)
    for wl in out.values():
        if wl.base_workload is not None:
            if wl.base_workload not in out:
                raise ValueError(f"{path}: variant {wl.name!r} names an unknown base workload {wl.base_workload!r}")
            if not out[wl.base_workload].is_base:
                raise ValueError(f"{path}: variant {wl.name!r} has a variant as its base ({wl.base_workload!r})")
    return out


def read_evaluations(path) -> list[Evaluation]:
    """EVALS.csv: ``submission,workload,study,trial,eval_index,time,metric_value``."""
    path = Path(path)
    evals = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        _check_columns(path, next(reader, None), EVALS_COLUMNS)
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(EVALS_COLUMNS):
                raise ValueError(f"{path}:{line}: expected {len(EVALS_COLUMNS)} fields, found {len(row)}")
            sub, wl, study, trial, idx, time, metric = (c.strip() for c in row)
            index = _float(idx, path, line, "eval_index")
            if not index.is_integer():
                raise ValueError(f"{path}:{line}: eval_index must be an integer: {idx!r}")
            evals.append(
                Evaluation(
                    sub,
                    wl,
                    study,
                    trial,
                    int(index),
                    _float(time, path, line, "time"),
                    _float(metric, path, line, "metric_value"),
                )
            )
    return evals


def write_evaluations(path, evals: Iterable[Evaluation], append: bool = False) -> None:
    path = Path(path)
    new = not append or not path.exists() or path.stat().st_size == 0
    with path.open("a" if append else "w", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(EVALS_COLUMNS)
        for ev in evals:
            writer.writerow(
                [
                    ev.submission,
                    ev.workload,
                    ev.study,
                    ev.trial,
                    ev.eval_index,
                    repr(float(ev.time)),
                    repr(float(ev.metric_value)),
                ]
            )
