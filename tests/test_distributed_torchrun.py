"""The ``torchrun`` entry point (``python -m gd_lib.experiments.distributed``), as the README runs it:
2 CPU processes with gloo on this machine.

The reference: the same optimizer trained in this process without a process group on the same
problem (``train`` of the experiment, whose agreement with the distributed run the tests of
tests/test_distributed.py establish). Here: every optimizer reports its line, the expensive work is
shared by both ranks (each computes some, together all the single-process run computes), and the
losses the entry point prints are the 1-process ones to the rounding those tests allow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gd_lib.experiments import distributed as exp

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\w+)\s+2 ranks, work per rank \[(\d+), (\d+)\], loss ([\d.]+) -> ([\d.]+)$")


@pytest.mark.slow
def test_torchrun_entry_point_on_two_gloo_processes():
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch, next to the interpreter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GD_DEVICE": "cpu"}
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "gd_lib.experiments.distributed", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {m.group(1): m for m in map(LINE.match, proc.stdout.splitlines()) if m}
    assert set(lines) == set(exp.OPTIMIZERS), proc.stdout

    for name in exp.OPTIMIZERS:
        single = exp.train(name, **exp.demo_settings(quick=True), device="cpu")
        work = [int(lines[name].group(2)), int(lines[name].group(3))]
        assert min(work) > 0, f"{name}: one rank did all the work: {work}"
        assert sum(work) == sum(single["work"]["counts"].values()), (name, work)
        first, last = float(lines[name].group(4)), float(lines[name].group(5))
        # printed with 4 decimals; the distributed run agrees with one process to ~1e-6 (test_distributed)
        assert first == pytest.approx(single["losses"][0], abs=1e-4)
        assert last == pytest.approx(single["losses"][-1], abs=1e-4)
        assert last < first, f"{name} did not descend: {first} -> {last}"
