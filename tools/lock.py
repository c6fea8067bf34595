"""Refresh the two locks of the course's environment (``make lock``).

- ``requirements-lock.txt``: the CPU set-up that ``make setup`` installs (``pip install -c
  requirements-lock.txt ...``): torch's CPU build, pinned by ``constraints.txt``, and ``gd_lib`` with
  the extras ``course,dev,hub,site`` (or those named with ``--extras``), every package at the newest
  version that the ranges of ``pyproject.toml`` allow on the day of the refresh.
- ``requirements-gpu-lock.txt``: the GPU set-up of ``environment.yml``: the same packages at the same
  versions, except torch's CUDA build from PyPI and what that build needs (NVIDIA's CUDA libraries,
  triton).

Both come from pip's own resolver, ``pip install --dry-run --ignore-installed --report``, so nothing is
installed or downloaded but package metadata. The CPU lock is resolved for the interpreter that runs
this script (the project's ``.venv``: CPython 3.11 on Linux x86_64); the GPU lock for the same Python
version on manylinux x86_64, without this machine's pip configuration (which may offer a local CPU wheel
of torch). Neither lock holds environment markers: each is valid for CPython 3.11 on Linux x86_64, which
is what ``pyproject.toml`` claims and CI tests.

After a refresh: ``make setup`` installs the new lock, ``make test`` must pass with it, then commit
both files (README, "A reproducible environment").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "guided-descent"
# Wheel platforms of the GPU set-up: manylinux x86_64, every glibc baseline up to 2.28 (torch's own).
GPU_PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + [
    f"manylinux_2_{minor}_x86_64" for minor in range(5, 29)
]
# The GPU lock is resolved for the interpreter CI runs (its full version: some packages want 3.11.5 or later).
GPU_PYTHON = platform.python_version()
# Packages that only torch's CUDA build needs (the GPU lock may add these and nothing else).
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def canonical(name: str) -> str:
    """PEP 503 normalized name: ``Jinja2`` -> ``jinja2``, ``typing_extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file (``name==version`` lines, ``#`` comments)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, pinned = line.partition("==")
        if not sep or not pinned:
            raise ValueError(f"{path.name}: not an exact pin: {line!r}")
        pins[canonical(name)] = pinned.strip()
    return pins


def resolve(requirements: list[str], *, pip_args: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """What ``pip install requirements`` would install into an empty environment: ``{name: version}``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            *pip_args,
            *requirements,
        ]
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
        installs = json.loads(report.read_text())["install"]
    return {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def write_lock(path: Path, pins: dict[str, str], what: str) -> None:
    today = datetime.date.today().isoformat()
    header = [
        f"# {what}",
        f"# Written by `make lock` (tools/lock.py) on {today} with pip {version('pip')}; do not edit by hand.",
        f"# Exact versions for CPython {GPU_PYTHON} on Linux x86_64, what CI tests (no environment markers).",
    ]
    lines = [f"{name}=={pins[name]}" for name in sorted(pins)]
    path.write_text("\n".join(header + lines) + "\n")


def lock_cpu(extras: str, constraints: Path, torch: str) -> dict[str, str]:
    pins = resolve([torch, "-e", f".[{extras}]"], pip_args=["-c", str(constraints)])
    pins.pop(PROJECT, None)
    cuda = sorted(name for name in pins if CUDA_ONLY.match(name))
    if cuda or "+cpu" not in pins.get("torch", ""):
        raise SystemExit(
            f"pip resolved torch {pins.get('torch')} with {cuda}: no CPU build of torch is "
            "reachable here (see constraints.txt and README, 'A reproducible environment')"
        )
    pins["pip"] = version("pip")  # make setup installs the locked pip first
    return pins


def lock_gpu(cpu: dict[str, str]) -> dict[str, str]:
    """The CPU lock with torch's CUDA build from PyPI, resolved for manylinux x86_64 / CPython 3.11."""
    torch_version = cpu["torch"].split("+", 1)[0]
    requirements = [f"{name}=={pinned}" for name, pinned in cpu.items() if name not in ("torch", "pip")]
    requirements.append(f"torch=={torch_version}")
    platform_args = [arg for p in GPU_PLATFORMS for arg in ("--platform", p)]
    pip_args = [
        "--only-binary=:all:",
        *platform_args,
        "--python-version",
        GPU_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        "cp" + "".join(GPU_PYTHON.split(".")[:2]),
    ]
    # without this machine's pip configuration: its find-links may hold a CPU wheel of torch
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    pins = resolve(requirements, pip_args=pip_args, env=env)
    pins["pip"] = cpu["pip"]
    return pins


def check_agree(cpu: dict[str, str], gpu: dict[str, str]) -> list[str]:
    """Differences between the two locks other than torch's build and the CUDA-only packages."""
    problems = []
    if gpu.get("torch") != cpu.get("torch", "").split("+", 1)[0]:
        problems.append(f"torch: CPU lock {cpu.get('torch')}, GPU lock {gpu.get('torch')}")
    for name in sorted(set(cpu) | set(gpu)):
        if name == "torch" or (name in gpu and name not in cpu and CUDA_ONLY.match(name)):
            continue
        if cpu.get(name) != gpu.get(name):
            problems.append(f"{name}: CPU lock {cpu.get(name)}, GPU lock {gpu.get(name)}")
    return problems


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--extras", default="course,dev,hub,site", help="extras of the project to lock (default: %(default)s)"
    )
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch's requirement (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "requirements-lock.txt")
    parser.add_argument("--gpu-out", type=Path, default=ROOT / "requirements-gpu-lock.txt")
    args = parser.parse_args(argv)

    print(f"resolving the CPU set-up: {args.torch} (constraints: {args.constraints.name}), .[{args.extras}]")
    cpu = lock_cpu(args.extras, args.constraints, args.torch)
    print(f"resolving the GPU set-up: the same with torch's CUDA build, for manylinux x86_64 / CPython {GPU_PYTHON}")
    gpu = lock_gpu(cpu)
    problems = check_agree(cpu, gpu)
    if problems:
        raise SystemExit("the GPU resolution moved packages other than torch's CUDA ones:\n  " + "\n  ".join(problems))
    write_lock(args.out, cpu, f"The CPU set-up of `make setup`: torch's CPU build and .[{args.extras}].")
    write_lock(
        args.gpu_out,
        gpu,
        "The GPU set-up of environment.yml: requirements-lock.txt with torch's CUDA "
        "build from PyPI and the packages it needs.",
    )
    added = sorted(set(gpu) - set(cpu))
    print(
        f"wrote {args.out.name} ({len(cpu)} packages) and {args.gpu_out.name} ({len(gpu)} packages: "
        f"torch {gpu['torch']} and {', '.join(added)})"
    )


if __name__ == "__main__":
    main()
