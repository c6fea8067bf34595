"""The library code an assignment asks its students to write is not there when they are graded.

A source notebook's answer cell declares in its metadata the modules whose code
the question asks for::

    "metadata": {"nbgrader": {...}, "gd_grader": {"forbids": ["gd_lib.optim.*", "torch.optim.sgd"]}}

(``package.*``: every public submodule of the package; a package named without ``.*`` is
forbidden whole, itself and every public submodule, because the stub of its ``__init__`` keeps
its imports, which would otherwise bring the submodules' real code back). The notebook's own metadata may
declare modules for the whole assignment the same way (``"gd_grader": {"forbids": [...]}`` at
the notebook level); a question's declaration names that question in the message.

During grading the student's process never loads those modules: the zygote
that forks the student runs (:mod:`autograder.zygote`) installs :class:`StubFinder`
before it imports anything, so ``import gd_lib.optim`` (and everything that
imports ``gd_lib.optim.sgd``) gets a stub module instead, generated from the
original's source by :func:`stub_source`: the same names (imports, classes,
functions, constants), but every class and function raises
:class:`ForbiddenLibraryUse` when it is used, with a message naming the question.
In the sandbox (:mod:`autograder.bwrap`) the stub's file is also bound over the
original file and the folder's compiled ``__pycache__`` is shown empty, so the
original cannot be read back either. The instructor's reference run uses the
real library (another zygote).

An answer that calls the forbidden code therefore fails that question's tests,
and the feedback says why.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass

METADATA_KEY = "gd_grader"


class ForbiddenLibraryUse(RuntimeError):
    """Raised by the stub of library code a question asks the student to write."""


class ForbiddenObject:
    """Stands for a function or value of a forbidden module: any use raises."""

    def __init__(self, qualname: str, question: str):
        object.__setattr__(self, "_qualname", qualname)
        object.__setattr__(self, "_question", question)

    def _refuse(self, *args, **kwargs):
        raise ForbiddenLibraryUse(message(self._qualname, self._question))

    __call__ = _refuse

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._refuse()

    def __repr__(self):
        return f"<{self._qualname}: not available while grading>"


def message(qualname: str, question: str) -> str:
    return (
        f"your code uses {qualname}, which is part of the library code that {question} asks you to write; "
        f"it is not available while grading: write it yourself with torch operations"
    )


def refusing_class(name: str, qualname: str, question: str, bases: tuple) -> type:
    def __init__(self, *args, **kwargs):
        raise ForbiddenLibraryUse(message(qualname, question))

    def __new__(cls, *args, **kwargs):
        raise ForbiddenLibraryUse(message(qualname, question))

    try:
        return type(
            name,
            bases or (object,),
            {"__init__": __init__, "__new__": __new__, "__doc__": f"{qualname} (not available while grading)"},
        )
    except TypeError:  # bases that cannot be combined this way: an object that refuses every use
        return ForbiddenObject(qualname, question)


# --- stubs from the original's source (no import of the original) ----------------------------------


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def stub_source(source: str, module: str, question: str) -> str:
    """A module with the top-level names of ``source`` (module ``module``): its imports as they are
    (forbidden modules among them come as stubs too), literal constants as they are, every class and
    function and every other value as an object that refuses any use."""
    tree = ast.parse(source)
    lines = [f"# Stub of {module}: not available while grading (see autograder.forbidden)."]
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body.pop(0)  # the docstring
    if body and isinstance(body[0], ast.ImportFrom) and body[0].module == "__future__":
        lines.insert(0, ast.unparse(body.pop(0)))
    lines.append("from autograder.forbidden import ForbiddenObject as _Refuse, refusing_class as _refusing_class")
    q = repr(question)
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.append(ast.unparse(node))
        elif isinstance(node, ast.ClassDef):
            bases = ", ".join(ast.unparse(b) for b in node.bases if not isinstance(b, ast.Starred))
            qual = repr(f"{module}.{node.name}")
            lines.append(
                "try:\n"
                f"    {node.name} = _refusing_class({node.name!r}, {qual}, {q}, ({bases}{',' if bases else ''}))\n"
                "except Exception:\n"
                f"    {node.name} = _Refuse({qual}, {q})"
            )
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.append(f"{node.name} = _Refuse({module + '.' + node.name!r}, {q})")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if not names:
                continue
            if node.value is not None and _is_literal(node.value):
                lines.append(f"{' = '.join(names)} = {ast.unparse(node.value)}")
            else:
                for name in names:
                    lines.append(f"{name} = _Refuse({module + '.' + name!r}, {q})")
    return "\n".join(lines) + "\n"


# --- locating modules without importing them --------------------------------------------------------


def locate(module: str) -> str | None:
    """The source file of ``module`` (``None`` when there is none), found without executing
    the module or its parent packages."""
    parts = module.split(".")
    spec = importlib.machinery.PathFinder.find_spec(parts[0]) or importlib.util.find_spec(parts[0])
    for part in parts[1:]:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return os.path.realpath(spec.origin)


@dataclass(frozen=True)
class Forbidden:
    module: str  # e.g. "gd_lib.optim.adam"
    path: str  # its source file
    question: str  # e.g. "question 2 (adam_step)"


def declared(source_notebooks) -> list[tuple[str, str]]:
    """(module, question) pairs declared by the answer cells of these source notebooks."""
    import json
    import re

    out = []
    for path in source_notebooks:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
        for module in (nb.get("metadata", {}).get(METADATA_KEY) or {}).get("forbids") or []:
            out.append((str(module), "this assignment"))
        heading = None
        for cell in nb.get("cells", []):
            meta = cell.get("metadata", {})
            source = cell.get("source", "")
            source = source if isinstance(source, str) else "".join(source)
            if cell.get("cell_type") == "markdown":
                first = source.strip().splitlines()[0] if source.strip() else ""
                if first.startswith("#"):
                    heading = re.sub(r"\s*\(\d+(\.\d+)? points?\)\s*$", "", first.lstrip("#").strip())
                continue
            forbids = (meta.get(METADATA_KEY) or {}).get("forbids") or []
            gid = (meta.get("nbgrader") or {}).get("grade_id", "?")
            question = f"question {heading!r}" if heading else f"the question of answer cell {gid!r}"
            for module in forbids:
                out.append((str(module), question))
    return out


def expand(module: str) -> list[str]:
    """The modules a declaration names.

    ``package.*``: the package's public submodules (no leading underscore), found on disk, each
    expanded in turn (a subpackage brings its own submodules). A package named without ``.*``
    is forbidden whole: itself and ``package.*``. Its stub keeps the ``__init__``'s imports
    (``from .shapes import mup_table``), so a real submodule would hand the code back.
    """
    if not module.endswith(".*"):
        path = locate(module)
        if path is not None and os.path.basename(path) == "__init__.py":
            return [module, *expand(f"{module}.*")]
        return [module]
    package = module[:-2]
    init = locate(package)
    if init is None or os.path.basename(init) != "__init__.py":
        raise ValueError(f"{module!r}: {package} is not a package with Python source here")
    folder = os.path.dirname(init)
    names = sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_"))
    packages = (n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, "__init__.py")))
    names += sorted(n for n in packages if not n.startswith("_"))
    return [m for n in names for m in expand(f"{package}.{n}")]


def resolve(pairs) -> list[Forbidden]:
    """Locate the declared modules (a module that does not exist here is an instructor's error)."""
    found: dict[str, Forbidden] = {}
    pairs = [(m, q) for module, q in pairs for m in expand(module)]
    for module, question in pairs:
        path = locate(module)
        if path is None:
            raise ValueError(f"the forbidden module {module!r} ({question}) has no Python source here")
        previous = found.get(module)
        if previous is None or previous.question == "this assignment":
            found[module] = Forbidden(module, path, question)
        elif question != "this assignment" and question not in previous.question:
            found[module] = Forbidden(module, path, f"{previous.question} and {question}")
    return list(found.values())


class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the stubs in place of the forbidden modules (installed first on ``sys.meta_path``)."""

    def __init__(self, forbidden: list[Forbidden]):
        self.forbidden = {f.module: f for f in forbidden}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.forbidden:
            return None
        path = self.forbidden[fullname].path
        package = os.path.basename(path) == "__init__.py"
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=path, is_package=package)
        if package:  # its relative imports (``from .shapes import ...``) resolve inside the package
            spec.submodule_search_locations = [os.path.dirname(path)]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        f = self.forbidden[module.__name__]
        with open(f.path, encoding="utf-8") as fh:
            source = stub_source(fh.read(), f.module, f.question)
        module.__file__ = f.path
        exec(compile(source, f.path, "exec"), module.__dict__)  # noqa: S102 - our own generated stub


def write_stubs(forbidden: list[Forbidden], folder: str) -> tuple[dict[str, str], list[str], str]:
    """Stub files for the sandbox view: ({original file: stub file}, [__pycache__ folders to empty],
    an empty folder to show in their place)."""
    os.makedirs(folder, mode=0o755, exist_ok=True)
    empty = os.path.join(folder, "empty")
    os.makedirs(empty, mode=0o755, exist_ok=True)
    overlays, caches = {}, set()
    for i, f in enumerate(forbidden):
        with open(f.path, encoding="utf-8") as fh:
            source = stub_source(fh.read(), f.module, f.question)
        stub = os.path.join(folder, f"{i}_{os.path.basename(f.path)}")
        with open(stub, "w", encoding="utf-8") as fh:
            fh.write(source)
        os.chmod(stub, 0o644)
        overlays[f.path] = stub
        cache = os.path.join(os.path.dirname(f.path), "__pycache__")
        if os.path.isdir(cache):
            caches.add(cache)
    return overlays, sorted(caches), empty


def install(forbidden: list[Forbidden]) -> StubFinder | None:
    """Put the stubs first on ``sys.meta_path`` of this process (before any import of them)."""
    if not forbidden:
        return None
    loaded = [f.module for f in forbidden if f.module in sys.modules]
    if loaded:
        raise RuntimeError(f"forbidden modules already imported in this process: {loaded}")
    finder = StubFinder(forbidden)
    sys.meta_path.insert(0, finder)
    return finder
