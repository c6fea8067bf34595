"""CONTRIBUTING.md's three checklists, followed once for everything the course already has.

Each test walks one checklist over every optimizer, lecture or assignment of the repository and
names the step that is missing. (The optimizer registry step is checked by
``tests/test_optim_contract.py::test_every_exported_optimizer_has_a_registry_entry``; the classic
bugs are graded for real by ``tests/test_assignments.py``.)
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

import gd_lib.optim
from autograder import forbidden

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LECTURES = sorted((ROOT / "lectures").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and p.name[:2].isdigit())
TESTS = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}


def _section(title: str) -> str:
    """The README's text under ``## title`` up to the next second-level heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


# --- adding an optimizer ----------------------------------------------------------------------------


def exported_optimizers() -> list[type]:
    return [
        obj
        for name in dir(gd_lib.optim)
        if not name.startswith("_")
        if isinstance(obj := getattr(gd_lib.optim, name), type) and issubclass(obj, torch.optim.Optimizer)
    ]


def test_every_exported_optimizer_lives_in_its_family_module():
    classes = exported_optimizers()
    assert len(classes) >= 20, [c.__name__ for c in classes]
    for cls in classes:
        module = cls.__module__
        assert module.startswith("gd_lib.optim.") and module.count(".") == 2, f"{cls.__name__}: {module}"
        assert (ROOT / "gd_lib" / "optim" / f"{module.rsplit('.', 1)[1]}.py").exists()


def test_every_exported_optimizer_is_named_in_the_readme():
    listed = _section("Using the library")
    missing = [cls.__name__ for cls in exported_optimizers() if not re.search(rf"\b{cls.__name__}\b", listed)]
    assert not missing, f"README, 'Using the library', does not list {missing} (CONTRIBUTING.md, optimizer step 5)"


# --- adding a lecture -------------------------------------------------------------------------------


def _experiment_modules(source: str) -> set[str]:
    """The gd_lib.experiments modules a piece of Python source imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "gd_lib.experiments":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gd_lib.experiments."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("gd_lib.experiments.")}
    return found


def _notebook_code(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    # notebook magics and shell lines are not Python
    lines = [
        line
        for cell in cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if not line.lstrip().startswith(("%", "!"))
    ]
    return "\n".join(lines)


def _test_functions(source: str) -> int:
    return sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in ast.walk(ast.parse(source)))


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_every_lecture_has_an_experiment_claim_tests_and_a_readme_row(path):
    modules = _experiment_modules(_notebook_code(path))
    assert modules, f"{path.name} imports no gd_lib.experiments module (CONTRIBUTING.md, lecture step 1)"
    for module in sorted(modules):
        assert (ROOT / "gd_lib" / "experiments" / f"{module}.py").exists(), module
        claim_tests = [
            name for name, source in TESTS.items() if module in _experiment_modules(source) and _test_functions(source)
        ]
        assert claim_tests, f"{path.name}: no test calls gd_lib.experiments.{module} (CONTRIBUTING.md, lecture step 2)"
    table = _section("Lectures")
    assert re.search(rf"^\| `{re.escape(path.stem)}` \|", table, flags=re.M), (
        f"README's lecture table has no row for {path.stem} (CONTRIBUTING.md, lecture step 4)"
    )


def test_experiment_import_reader_sees_every_form():
    source = (
        "from gd_lib.experiments import adaptive as a, geometry\n"
        "import gd_lib.experiments.curvature\n"
        "from gd_lib.experiments.grokking import run\n"
        "from gd_lib import experiments\n"
    )
    assert _experiment_modules(source) == {"adaptive", "geometry", "curvature", "grokking"}


# --- adding an assignment ---------------------------------------------------------------------------


def _forbids(notebook: dict) -> list[tuple[str, str]]:
    """(where, module) for every module the notebook and its cells forbid."""
    found = [("notebook", m) for m in notebook["metadata"].get("gd_grader", {}).get("forbids", [])]
    for cell in notebook["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id", "?")
        found += [(gid, m) for m in cell["metadata"].get("gd_grader", {}).get("forbids", [])]
    return found


def _is_package(module: str) -> bool:
    """Whether ``module`` (a gd_lib or torch module) is a package, found on disk without importing it."""
    top, *rest = module.split(".")
    base = Path(gd_lib.__file__).parent if top == "gd_lib" else Path(torch.__file__).parent
    return (base.joinpath(*rest) / "__init__.py").exists()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_assignment_has_classic_bug_entries(assignment):
    path = ROOT / "solutions" / assignment / "mistakes.json"
    assert path.exists(), f"{assignment}: no classic bugs (CONTRIBUTING.md, assignment step 3)"
    bugs = json.loads(path.read_text())
    assert len(bugs) >= 2, f"{assignment}: {len(bugs)} classic bug(s), at least 2"
    for name, bug in bugs.items():
        assert {"cell", "replace", "fails", "says", "hidden"} <= set(bug), f"{assignment}/{name}: {sorted(bug)}"
        assert bug["replace"] and all(len(pair) == 2 and pair[0] != pair[1] for pair in bug["replace"])
        assert bug["fails"] and isinstance(bug["hidden"], bool)
        assert isinstance(bug["says"], str) and len(bug["says"].split()) >= 4, f"{assignment}/{name}: says what?"
    released = ROOT / "assignments" / assignment
    assert not (released / "mistakes.json").exists(), "the catalogue is never released"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_forbidden_packages_are_forbidden_with_their_submodules(assignment):
    """A stub of a package's ``__init__`` keeps its imports: what the grader forbids for a package
    (named whole or as ``package.*``) covers every public submodule, found here on disk."""
    (source,) = (ROOT / "solutions" / assignment).glob("*.ipynb")
    forbids = _forbids(json.loads(source.read_text()))
    resolved = {f.module for f in forbidden.resolve([(module, where) for where, module in forbids])}
    for _, module in forbids:
        package = module[:-2] if module.endswith(".*") else module
        if _is_package(package):
            top, *rest = package.split(".")
            base = Path(gd_lib.__file__).parent if top == "gd_lib" else Path(torch.__file__).parent
            folder = base.joinpath(*rest)
            subs = {f"{package}.{p.stem}" for p in folder.glob("*.py") if not p.name.startswith("_")}
            assert subs <= resolved, f"{assignment}: {module} leaves {sorted(subs - resolved)} importable"


def test_package_reader_tells_packages_from_modules():
    assert _is_package("gd_lib.optim") and _is_package("gd_lib.mup") and _is_package("torch.optim")
    assert not _is_package("gd_lib.schedules") and not _is_package("torch.optim.sgd")
