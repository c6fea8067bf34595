"""Command line of gd_lib.benchmark.

    python -m gd_lib.benchmark score --evals EVALS.csv --workloads WORKLOADS.csv [--profile out.png]

prints ``{submission: score}`` as JSON (scores by the AlgoPerf v0.5 rules).
"""
from __future__ import annotations

import argparse
import json
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gd_lib.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score submissions from evaluation logs")
    score.add_argument("--evals", required=True, help="EVALS.csv: submission,workload,study,trial,eval_index,time,metric_value")
    score.add_argument("--workloads", required=True, help="WORKLOADS.csv: workload,base_workload,direction,target")
    score.add_argument("--profile", help="also draw the performance profiles to this image file")
    score.add_argument("--num-studies", type=int, default=None,
                       help="expected studies per workload; missing ones count as not reaching the target")
    score.set_defaults(func=_score)
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
