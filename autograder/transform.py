"""The test cells a submission runs: the instructor's, with every expected value taken out.

A graded test cell of a source notebook computes inputs, calls the student's code
and hands the result to :func:`autograder.checks.check` with the expected value
(or a callable computing it). The student's process must never compute, read or
record an expected value, so the grader sends it :func:`student_version` of each
test cell, in which

- every ``check(name, value, expected, rtol=..., atol=...)`` call keeps only its
  first two arguments (the name and the student's value),
- every ``with reference(): ...`` block is removed,
- every function or class decorated with ``@reference`` is removed,
- comments are gone (the code is regenerated from its syntax tree).

The reference run executes the original cells. An instructor who computes an
expected value anywhere else (in a plain statement of a test cell) gets a failing
test for every honest student, which the course's own tests catch: a correct
solution graded as a student must score full marks.
"""

from __future__ import annotations

import ast
from functools import lru_cache


class TestCellError(ValueError):
    """A test cell the grader cannot transform (the instructor's notebook needs fixing)."""


def _is_named(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)


def _is_reference(node: ast.AST) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return _is_named(target, "reference")


class _Strip(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call):  # noqa: N802 - ast's naming
        self.generic_visit(node)
        if _is_named(node.func, "check"):
            node.args = node.args[:2]
            node.keywords = [k for k in node.keywords if k.arg in ("name", "value")]
        return node

    def _drop_if_reference(self, node):
        if any(_is_reference(d) for d in node.decorator_list):
            return ast.Pass()
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _drop_if_reference  # noqa: N815

    def visit_With(self, node: ast.With):  # noqa: N802
        if any(_is_reference(item.context_expr) for item in node.items):
            return ast.Pass()
        return self.generic_visit(node)


def student_version(code: str) -> str:
    """``code`` (a test cell of a source notebook) without its expected values (see the module docstring)."""
    from .checks import AST_LOCK  # syntax trees are built one thread at a time (see there)

    with AST_LOCK:
        return _student_version(code)


@lru_cache(maxsize=1024)  # the same cells for every student of a class
def _student_version(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise TestCellError(
            f"a graded test cell must be plain Python (no magics) so that the grader can "
            f"remove its expected values: {err}"
        ) from None
    tree = ast.fix_missing_locations(_Strip().visit(tree))
    return ast.unparse(tree) + "\n"
