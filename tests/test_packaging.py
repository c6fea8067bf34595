"""environment.yml (the GPU image) and pyproject.toml must list the same runtime packages."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch-gpu": "torch", "pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    names |= {_name(r) for r in project["optional-dependencies"]["course"]}
    return names


def _environment_packages() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name = _name(dep)
            name = CONDA_TO_PYPI.get(name, name)
            if name not in NOT_PACKAGES:
                names.add(name)
    return names


def test_environment_lists_the_runtime_and_course_packages_of_pyproject():
    assert _environment_packages() == _pyproject_packages()


def test_environment_uses_python_311_and_a_cuda_build_of_torch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in deps
    assert any(d.startswith("pytorch-gpu") for d in deps)


def test_name_parser_sees_a_drift():
    """Requirement strings are reduced to normalized package names before comparing."""
    assert _name("scikit-learn>=1.3") == "scikit-learn"
    assert _name("pytorch_optimizer>=3.0") == "pytorch-optimizer"
