"""What the packaging files claim agrees with what CI tests, and with each other.

- ``pyproject.toml`` claims the Python and torch that CI runs (the floors are the tested versions);
- ``requirements-lock.txt`` (``make setup``) pins every requirement of ``pyproject.toml`` at a version
  its range admits, and the environment the tests run in holds those versions;
- ``requirements-gpu-lock.txt`` (``environment.yml``) is that lock with torch's CUDA build and the
  packages only that build needs;
- one version, written in ``pyproject.toml``, read by ``gd_lib`` and named in ``CHANGELOG.md``.
"""

from __future__ import annotations

import re
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import gd_lib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Packages that only torch's CUDA build needs: the GPU lock may add these and nothing else.
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def read_lock(name: str) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file, written here independently of tools/lock.py."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            specs = list(requirement.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{name}: not an exact pin: {line!r}"
            pins[canonicalize_name(requirement.name)] = specs[0].version
    return pins


def locked_extras() -> list[str]:
    """The extras the CPU lock was made for, from its first line (``.[course,dev,hub,site]``)."""
    first = (ROOT / "requirements-lock.txt").read_text().splitlines()[0]
    match = re.search(r"\.\[([a-z,]+)\]", first)
    assert match, f"requirements-lock.txt does not say which extras it locks: {first!r}"
    return match.group(1).split(",")


def requirements(extras) -> list[Requirement]:
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in found if r.marker is None or r.marker.evaluate()]


CPU_LOCK = read_lock("requirements-lock.txt")
GPU_LOCK = read_lock("requirements-gpu-lock.txt")


# --- the support claimed is the support tested ---------------------------------------------------


def test_python_claimed_is_the_python_ci_runs():
    claimed = sorted(
        Version(c.rsplit("::", 1)[1].strip())
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    running = Version(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert claimed == [running], f"classifiers claim {claimed}; CI runs {running}"
    assert PROJECT["requires-python"] == f">={running}", "the floor of requires-python is the Python CI runs"


def test_torch_floor_is_the_torch_ci_runs():
    import torch

    torch_requirement = next(r for r in requirements([]) if r.name == "torch")
    assert str(torch_requirement.specifier) == f">={Version(torch.__version__).base_version.rsplit('.', 1)[0]}"
    assert Version(torch.__version__) == Version(CPU_LOCK["torch"]), "the tests run the locked torch"
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"torch=={Version(CPU_LOCK['torch']).base_version}" in constraints.split()


# --- the locks ------------------------------------------------------------------------------------


def test_cpu_lock_pins_every_requirement_of_pyproject_in_its_range():
    extras = locked_extras()
    assert {"course", "dev"} <= set(extras), "make setup installs .[course,dev] from the lock"
    assert set(PROJECT["optional-dependencies"]) <= set(extras), "every extra of pyproject.toml is locked"
    problems = []
    for requirement in requirements(extras):
        name = canonicalize_name(requirement.name)
        if name not in CPU_LOCK:
            problems.append(f"{requirement}: not in the lock (make lock)")
        elif not requirement.specifier.contains(CPU_LOCK[name], prereleases=True):
            problems.append(f"{requirement}: locked at {CPU_LOCK[name]} (make lock)")
    assert not problems, problems
    assert "pip" in CPU_LOCK, "make setup installs the locked pip first"


def test_the_tests_run_in_the_locked_environment():
    """make setup installed the lock: every installed package the lock names has the locked version,
    and every package of the set-up (.[course,dev]) is installed (packages a developer added by hand
    and the lock does not name are left out of this check)."""
    # the environment's own site-packages: other entries of sys.path may carry vendored copies
    # (setuptools puts its _vendor folder there)
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)}
    differ = {
        name: (installed[name], pinned)
        for name, pinned in CPU_LOCK.items()
        if name in installed and installed[name] != pinned
    }
    assert not differ, f"installed != locked (run make setup): {differ}"
    missing = [str(r) for r in requirements(["course", "dev"]) if canonicalize_name(r.name) not in installed]
    assert not missing, missing


def test_gpu_lock_is_the_cpu_lock_with_torch_cuda_build():
    assert GPU_LOCK["torch"] == Version(CPU_LOCK["torch"]).base_version
    assert "+cpu" in CPU_LOCK["torch"] and "+" not in GPU_LOCK["torch"]
    added = set(GPU_LOCK) - set(CPU_LOCK)
    assert added and all(CUDA_ONLY.match(name) for name in added), sorted(added)
    assert any(name.startswith("nvidia-") for name in added), "a CUDA build needs NVIDIA's libraries"
    assert not set(CPU_LOCK) - set(GPU_LOCK)
    moved = {
        name: (CPU_LOCK[name], GPU_LOCK[name])
        for name in CPU_LOCK
        if name != "torch" and CPU_LOCK[name] != GPU_LOCK[name]
    }
    assert not moved, moved


def test_environment_yml_installs_the_gpu_lock_on_the_python_ci_runs():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # nothing comes from conda but the interpreter and pip, so nothing escapes the lock
    assert conda == [f"python={sys.version_info.major}.{sys.version_info.minor}", "pip"], conda
    assert pip == ["-r requirements-gpu-lock.txt", "-e ."], pip
    recipe = (ROOT / "course" / "hub" / "k8s" / "Dockerfile").read_text()
    copied = [word for line in recipe.splitlines() if line.startswith("COPY") for word in line.split()[1:-1]]
    assert {"environment.yml", "requirements-gpu-lock.txt", "pyproject.toml"} <= set(copied), copied


def test_lock_reader_sees_a_drift(tmp_path, monkeypatch):
    """The reader refuses a range where a pin belongs, and normalizes names."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.txt").write_text("# header\nJinja2==3.1.6\ntyping_extensions==4.16.0\n")
    assert read_lock("a.txt") == {"jinja2": "3.1.6", "typing-extensions": "4.16.0"}
    (tmp_path / "b.txt").write_text("numpy>=1.24\n")
    with pytest.raises(AssertionError, match="exact pin"):
        read_lock("b.txt")


# --- one version ---------------------------------------------------------------------------------


def test_version_is_written_once_and_named_in_the_changelog():
    assert gd_lib.__version__ == PROJECT["version"] == metadata.version("guided-descent")
    sources = [
        p for p in (ROOT / "gd_lib").rglob("*.py") if re.search(r"__version__\s*=\s*['\"]\d+\.\d+", p.read_text())
    ]
    assert not sources, f"a version written in the source: {sources}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d[^\]]*)\]", changelog, flags=re.M)
    assert released and released[0] == PROJECT["version"], released[:3]
    assert re.search(r"^## \[Unreleased\]", changelog, flags=re.M), "CHANGELOG.md keeps an Unreleased section"
