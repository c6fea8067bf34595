"""autograder.forbidden: what a declaration forbids, and the stubs of a forbidden package.

The attack suite (tests/test_autograder.py) checks stubs of plain modules end to end; these tests
check the package case on its own: a package named without ``.*`` is forbidden whole (its stub keeps
the ``__init__``'s imports, so a real submodule would hand its code back), and the stub of a
package's ``__init__`` resolves its relative imports inside the package.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import gd_lib
from autograder import forbidden

ROOT = Path(__file__).resolve().parents[1]
MUP = Path(gd_lib.__file__).parent / "mup"


def _public_submodules(folder: Path, package: str) -> list[str]:
    """Written independently of expand(): the folder's public .py files, sorted."""
    return sorted(f"{package}.{p.stem}" for p in folder.glob("*.py") if not p.name.startswith("_"))


def test_a_package_named_whole_is_forbidden_with_its_public_submodules():
    names = forbidden.expand("gd_lib.mup")
    assert names[0] == "gd_lib.mup"
    assert sorted(names[1:]) == _public_submodules(MUP, "gd_lib.mup")
    assert sorted(forbidden.expand("gd_lib.mup.*")) == _public_submodules(MUP, "gd_lib.mup")
    # a plain module stays one module
    assert forbidden.expand("gd_lib.schedules") == ["gd_lib.schedules"]
    assert forbidden.expand("gd_lib.optim.adam") == ["gd_lib.optim.adam"]


def test_a_subpackage_brings_its_own_submodules():
    names = set(forbidden.expand("gd_lib.*"))
    optim = Path(gd_lib.__file__).parent / "optim"
    assert {"gd_lib.optim", *_public_submodules(optim, "gd_lib.optim")} <= names
    assert {"gd_lib.mup", *_public_submodules(MUP, "gd_lib.mup")} <= names
    assert not any(part.startswith("_") for name in names for part in name.split(".")[1:])


def test_the_stub_of_a_package_imports_inside_it_and_refuses_every_use():
    # in a fresh interpreter: the stubs must be installed before anything imports gd_lib.mup
    code = textwrap.dedent(
        """
        import autograder.forbidden as f

        f.install(f.resolve([("gd_lib.mup", "question 'μP multipliers'")]))
        import gd_lib.mup as mup
        import gd_lib.mup.shapes as shapes
        from gd_lib.mup import coord_check, mup_table

        assert mup.__path__ == [f.locate("gd_lib.mup").rsplit("/", 1)[0]], mup.__path__
        refused = 0
        uses = (lambda: mup_table(None, None, "adam"), lambda: coord_check(None), lambda: shapes.parameter_shapes({}))
        for use in uses:
            try:
                use()
            except f.ForbiddenLibraryUse as err:
                assert "question 'μP multipliers'" in str(err), err
                refused += 1
        import gd_lib.schedules  # not forbidden: the real module

        assert gd_lib.schedules.Constant(0.5)(10) == 0.5
        print("refused", refused)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "refused 3"
