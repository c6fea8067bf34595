"""The ``Examples:`` blocks of gd_lib's docstrings run, and every optimizer, schedule and averager has one.

The doctests are collected here (one test per module that has any) rather than with pytest's
``--doctest-modules``: this way ``make test``, ``make test-fast``, pytest-xdist's ``loadfile`` and the
``-m`` marker filters all pick them up like any other test file, and no module of gd_lib is imported
only to be searched (``__main__`` modules would run).
"""

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch

import gd_lib
import gd_lib.averaging
import gd_lib.optim
import gd_lib.schedules

ROOT = Path(gd_lib.__file__).parent


def modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="gd_lib."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        path = ROOT.joinpath(*info.name.split(".")[1:])
        source = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
        if ">>>" in source.read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = modules_with_examples()


def test_the_modules_with_examples_are_found():
    # the search above must not come back empty (a wrong ROOT would skip every doctest silently)
    for name in ("gd_lib.optim.sgd", "gd_lib.optim.muon", "gd_lib.schedules", "gd_lib.averaging"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no doctest was found"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # the examples print float32 tensors
    try:
        with torch.random.fork_rng(devices=[]):  # examples that seed torch leave the global RNG alone
            for test in tests:
                runner.run(test)
    finally:
        torch.set_default_dtype(dtype)
    result = runner.summarize(verbose=False)
    # the failures' reports were printed above (pytest shows the captured output)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def _has_example(obj) -> bool:
    doc = inspect.getdoc(obj) or ""
    return "Examples:" in doc and ">>>" in doc.split("Examples:", 1)[1]


def test_every_exported_optimizer_has_an_example():
    optimizers = [
        name
        for name in dir(gd_lib.optim)
        if inspect.isclass(getattr(gd_lib.optim, name))
        and issubclass(getattr(gd_lib.optim, name), torch.optim.Optimizer)
    ]
    assert len(optimizers) >= 20  # the course's optimizers (README "The optimizers")
    missing = [name for name in optimizers if not _has_example(getattr(gd_lib.optim, name))]
    assert not missing, f"optimizers without an 'Examples:' block: {missing}"


# abstract bases: a reader uses their subclasses, whose examples show them
ABSTRACT = {"Schedule", "WeightAverager"}


@pytest.mark.parametrize("module", [gd_lib.schedules, gd_lib.averaging], ids=lambda m: m.__name__)
def test_every_schedule_and_averager_has_an_example(module):
    public = [
        name
        for name in module.__all__
        if name not in ABSTRACT
        and (inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name)))
    ]
    assert len(public) >= 8
    missing = [name for name in public if not _has_example(getattr(module, name))]
    assert not missing, f"{module.__name__}: no 'Examples:' block in {missing}"
