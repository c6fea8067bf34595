"""Speed benchmarks (``make bench``): ratios against a named baseline, measured in one run.

Each module ``benchmarks/bench_*.py`` defines ``main(args) -> None`` and prints
a table headed by :func:`benchmarks.common.header` (code version, machine,
torch version, seed).
"""
