"""Reading a submitted notebook safely (autograder/intake.py): each refusal, with a reason for the student."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest

from autograder.intake import MAX_JSON_DEPTH, SubmissionError, read_bounded, read_submission

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT / "assignments" / "01_first_order" / "first_order.ipynb"


@pytest.fixture
def submitted(tmp_path):
    """A course's submitted/ folder with alice's notebook, a copy of the released one."""
    folder = tmp_path / "submitted" / "alice" / "01_first_order"
    folder.mkdir(parents=True)
    (folder / "first_order.ipynb").write_bytes(RELEASED.read_bytes())
    return tmp_path / "submitted"


def _reason(path, **kw) -> str:
    with pytest.raises(SubmissionError) as err:
        read_submission(path, **kw)
    return str(err.value)


def test_a_notebook_reads_as_nbformat_reads_it(submitted):
    path = submitted / "alice" / "01_first_order" / "first_order.ipynb"
    nb = read_submission(path, below=submitted)
    assert nb == nbformat.read(RELEASED, as_version=4)
    assert nb.nbformat == 4 and nb.cells[0].cell_type == "markdown"


def test_version_3_notebooks_are_converted(tmp_path):
    v4 = nbformat.read(RELEASED, as_version=4)
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(nbformat.convert(copy.deepcopy(v4), 3)))   # convert changes its argument
    nb = read_submission(path)
    assert nb.nbformat == 4
    assert [c.source for c in nb.cells if c.cell_type == "code"] == \
        [c.source for c in v4.cells if c.cell_type == "code"]


def test_links_are_refused(submitted, tmp_path):
    source = submitted / "alice" / "01_first_order" / "first_order.ipynb"
    mallory = submitted / "mallory" / "01_first_order"
    mallory.mkdir(parents=True)
    (mallory / "first_order.ipynb").symlink_to(source)
    assert "symbolic link" in _reason(mallory / "first_order.ipynb", below=submitted)
    assert "symbolic link" in _reason(mallory / "first_order.ipynb")          # without `below` too
    # a hard link: both names refer to one file with two links; neither is read
    harry = submitted / "harry" / "01_first_order"
    harry.mkdir(parents=True)
    os.link(source, harry / "first_order.ipynb")
    assert "2 hard links" in _reason(harry / "first_order.ipynb", below=submitted)
    assert "2 hard links" in _reason(source, below=submitted)
    # a linked folder on the way: refused under `below`
    (submitted / "pat").mkdir()
    (submitted / "pat" / "01_first_order").symlink_to(harry)
    os.unlink(harry / "first_order.ipynb")
    (harry / "first_order.ipynb").write_bytes(source.read_bytes())    # a copy of its own: readable
    assert "symbolic link" in _reason(submitted / "pat" / "01_first_order" / "first_order.ipynb", below=submitted)
    assert read_submission(harry / "first_order.ipynb", below=submitted).nbformat == 4


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.ipynb"
    os.mkfifo(fifo)                                  # opening it for reading would wait for a writer
    assert "not a regular file" in _reason(fifo)
    assert "not a regular file" in _reason(tmp_path)
    assert "not a regular file" in _reason(Path("/dev/zero"))   # endless: never read
    assert "was not submitted" in _reason(tmp_path / "missing.ipynb")


def test_size_is_bounded(tmp_path):
    path = tmp_path / "big.ipynb"
    path.write_bytes(RELEASED.read_bytes())
    size = path.stat().st_size
    assert read_submission(path, max_bytes=size).nbformat == 4
    assert "MiB allowed" in _reason(path, max_bytes=size - 1)
    assert len(read_bounded(path, size)) == size


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    ('{"cells": [], "metadata": {"a": "café"}, "nbformat": 4, "nbformat_minor": 5}'.encode("latin-1"), "not UTF-8"),
    (b"def f(): pass", "not valid JSON (line 1, column 1)"),
    (b"", "not valid JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested"),
    (b"[" * 1_000 + b"]" * 1_000, "nested"),
    (('{"cells": [], "metadata": {"x": ' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
      + '}, "nbformat": 4, "nbformat_minor": 5}').encode(), "nested more than"),
    (b'{"cells": "my answers", "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "not a valid Jupyter notebook"),
    (b'{"cells": [{"cell_type": "code", "source": 3}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
     "not a valid Jupyter notebook"),
    (b'{"cells": [], "metadata": {}, "nbformat": 99, "nbformat_minor": 0}', "not a valid Jupyter notebook"),
    (b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "n": ' + b"9" * 5000 + b"}",
     "not valid JSON"),
])
def test_malformed_content_is_refused_with_a_reason(tmp_path, content, words):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    assert words in _reason(path)


def test_an_empty_but_valid_notebook_is_accepted(tmp_path):
    path = tmp_path / "empty.ipynb"
    path.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert read_submission(path).cells == []
