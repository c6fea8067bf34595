"""Command line of gd_lib.benchmark.

    python -m gd_lib.benchmark score --evals EVALS.csv --workloads WORKLOADS.csv [--profile out.png]
        prints ``{submission: score}`` as JSON (scores by the AlgoPerf v0.5 rules)

    python -m gd_lib.benchmark run --submissions sgd,adamw,nadamw,shampoo,muon,schedule_free_adamw \
        --ruleset external [--quick] [--out out/benchmark]
        runs (or resumes) the trials on the mini workloads, writes EVALS.csv files,
        the performance-profile plot, and prints the score table
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .scoring import read_evaluations, read_workloads, score_submissions


def plot_profiles(result, path) -> None:
    """Draw ρ(τ) for every submission into ``path`` (PNG, PDF, ...)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rho in sorted(result.profiles.items(), key=lambda kv: -result.scores[kv[0]]):
        ax.step(result.taus, rho, where="post", label=f"{name} ({result.scores[name]:.3f})")
    ax.set_xlabel("τ (time relative to the fastest submission)")
    ax.set_ylabel("ρ(τ): fraction of base workloads")
    ax.set_xlim(result.taus[0], result.taus[-1])
    ax.set_ylim(-0.02, 1.02)
    ax.legend(title="submission (score)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _score(args) -> int:
    workloads = read_workloads(args.workloads)
    evals = read_evaluations(args.evals)
    result = score_submissions(evals, workloads, num_studies=args.num_studies)
    print(json.dumps(result.scores, indent=2, sort_keys=True))
    if args.profile:
        plot_profiles(result, args.profile)
        print(f"performance profiles written to {args.profile}", file=sys.stderr)
    return 0


def _run(args) -> int:
    from .runner import run_benchmark
    from .workloads import WORKLOADS

    submissions = [s.strip() for s in args.submissions.split(",") if s.strip()]
    workloads = None if args.workloads == "all" else [w.strip() for w in args.workloads.split(",") if w.strip()]
    trials = args.trials if args.trials is not None else (2 if args.quick else 5)
    studies = args.studies if args.studies is not None else (1 if args.quick else 3)
    start = time.perf_counter()
    result = run_benchmark(
        submissions,
        workloads,
        ruleset=args.ruleset,
        trials=trials,
        studies=studies,
        out_dir=args.out,
        quick=args.quick,
        progress=not args.no_progress,
        threads=args.threads,
    )
    elapsed = time.perf_counter() - start
    by_time, by_steps = result.by_time, result.by_steps
    names = [w for w in WORKLOADS if w in by_time.workload_names]
    print(
        f"ruleset={args.ruleset} trials={trials} studies={studies} quick={args.quick} "
        f"(ran {result.ran_trials} trials, resumed {result.skipped_trials}) in {elapsed / 60:.1f} min"
    )
    header = ["submission", "score (time)", "score (steps)"] + [f"{w} [s]" for w in names]
    rows = []
    for sub in sorted(by_time.scores, key=lambda s: -by_time.scores[s]):
        rows.append(
            [sub, f"{by_time.scores[sub]:.4f}", f"{by_steps.scores[sub]:.4f}"]
            + [
                ("inf" if by_time.raw_times[sub][w] == float("inf") else f"{by_time.raw_times[sub][w]:.2f}")
                for w in names
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    plot_profiles(by_time, result.out_dir / "performance_profiles.png")
    print(f"logs and plots in {result.out_dir} (evals_time.csv, evals_steps.csv, performance_profiles.png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gd_lib.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score submissions from evaluation logs")
    score.add_argument(
        "--evals", required=True, help="EVALS.csv: submission,workload,study,trial,eval_index,time,metric_value"
    )
    score.add_argument("--workloads", required=True, help="WORKLOADS.csv: workload,base_workload,direction,target")
    score.add_argument("--profile", help="also draw the performance profiles to this image file")
    score.add_argument(
        "--num-studies",
        type=int,
        default=None,
        help="expected studies per workload; missing ones count as not reaching the target",
    )
    score.set_defaults(func=_score)
    run = sub.add_parser("run", help="run (or resume) a benchmark on the mini workloads and score it")
    run.add_argument("--submissions", required=True, help="comma-separated names (see gd_lib.benchmark.SUBMISSIONS)")
    run.add_argument("--workloads", default="all", help="comma-separated workload names, or 'all'")
    run.add_argument("--ruleset", choices=["external", "self"], default="external")
    run.add_argument("--trials", type=int, default=None, help="trials per study (external); default 5, quick 2")
    run.add_argument("--studies", type=int, default=None, help="studies; default 3, quick 1")
    run.add_argument("--quick", action="store_true", help="small step budgets: minutes on a 2-core CPU")
    run.add_argument("--out", default="out/benchmark", help="output folder; rerun with the same one to resume")
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the trials on a CPU (default 1: the mini workloads are too small for more)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
