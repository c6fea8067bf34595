"""Speed benchmarks (``make bench``): ratios against a named baseline, measured in one run.

How fast the course's code runs, for its maintainers; not part of the library. Not to be confused
with :mod:`gd_lib.benchmark`, the library's AlgoPerf-style benchmark of training algorithms (how
fast an optimizer *trains*, a topic of the course: lecture 6, assignment 5).

Each module ``benchmarks/bench_*.py`` defines ``main(args) -> None`` and prints
a table headed by :func:`benchmarks.common.header` (code version, machine,
torch version, seed).
"""
