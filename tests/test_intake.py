"""Reading a submitted notebook safely (autograder/intake.py): each refusal, with a reason for the student."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from autograder.intake import MAX_JSON_DEPTH, SubmissionError, read_bytes, read_submission, student_folders

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT / "assignments" / "01_first_order" / "first_order.ipynb"
A, NB = "01_first_order", "first_order.ipynb"


@pytest.fixture
def submitted(tmp_path):
    """A course's submitted/ folder with alice's notebook, a copy of the released one."""
    folder = tmp_path / "submitted" / "alice" / A
    folder.mkdir(parents=True)
    (folder / NB).write_bytes(RELEASED.read_bytes())
    return tmp_path / "submitted"


def _reason(base, parts, **kw) -> str:
    with pytest.raises(SubmissionError) as err:
        read_submission(str(base), parts, **kw)
    return str(err.value)


def test_a_notebook_reads_as_nbformat_reads_it(submitted):
    nb, sha = read_submission(str(submitted), ["alice", A, NB])
    assert nb == nbformat.read(RELEASED, as_version=4)
    assert len(sha) == 64


def test_links_are_refused(submitted):
    source = submitted / "alice" / A / NB
    (submitted / "mallory" / A).mkdir(parents=True)
    (submitted / "mallory" / A / NB).symlink_to(source)
    assert "symbolic link" in _reason(submitted, ["mallory", A, NB])
    # a hard link: both names are one file with two links; neither is read
    (submitted / "harry" / A).mkdir(parents=True)
    os.link(source, submitted / "harry" / A / NB)
    assert "hard link" in _reason(submitted, ["harry", A, NB])
    assert "hard link" in _reason(submitted, ["alice", A, NB])
    # a linked folder on the way
    (submitted / "pat").mkdir()
    (submitted / "pat" / A).symlink_to(submitted / "harry" / A)
    assert "symbolic link" in _reason(submitted, ["pat", A, NB])
    students, refused = student_folders(str(submitted), A)
    assert students == ["alice", "harry", "mallory"] and "symbolic link" in refused["pat"]


def test_special_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.ipynb")  # opening it for reading would wait for a writer
    assert "not a regular file" in _reason(tmp_path, ["fifo.ipynb"])
    (tmp_path / "folder.ipynb").mkdir()
    assert "not a regular file" in _reason(tmp_path, ["folder.ipynb"])
    assert "not a regular file" in _reason("/dev", ["zero"])  # endless: never read
    assert "no submitted file" in _reason(tmp_path, ["missing.ipynb"])


def test_size_is_bounded(tmp_path):
    (tmp_path / "nb.ipynb").write_bytes(RELEASED.read_bytes())
    size = (tmp_path / "nb.ipynb").stat().st_size
    assert read_submission(str(tmp_path), ["nb.ipynb"], max_bytes=size)[0].nbformat == 4
    assert "larger than" in _reason(tmp_path, ["nb.ipynb"], max_bytes=size - 1)
    assert len(read_bytes(str(tmp_path), ["nb.ipynb"], size)) == size


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        ('{"cells": [], "metadata": {"a": "café"}, "nbformat": 4, "nbformat_minor": 5}'.encode("latin-1"), "not UTF-8"),
        (b"def f(): pass", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2, 3]", "not a notebook"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nests deeper"),
        (b"[" * 1_000 + b"]" * 1_000, "nests deeper"),
        (
            (
                '{"cells": [], "metadata": {"x": '
                + "[" * MAX_JSON_DEPTH
                + "]" * MAX_JSON_DEPTH
                + '}, "nbformat": 4, "nbformat_minor": 5}'
            ).encode(),
            "nests deeper",
        ),
        (b'{"cells": "my answers", "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "not a notebook"),
        (
            b'{"cells": [{"cell_type": "code", "source": 3}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
            "not a valid notebook",
        ),
        (b'{"cells": [], "metadata": {}, "nbformat": 99, "nbformat_minor": 0}', "not a valid notebook"),
        (
            b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "n": ' + b"9" * 5000 + b"}",
            "not valid JSON",
        ),
    ],
)
def test_malformed_content_is_refused_with_a_reason(tmp_path, content, words):
    (tmp_path / "nb.ipynb").write_bytes(content)
    assert words in _reason(tmp_path, ["nb.ipynb"])


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    # 500 brackets and an escaped quote inside a JSON string: text, not nesting
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "s = '" + "[" * 500 + "\"'",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "id": "a1",
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    assert read_submission(str(tmp_path), ["nb.ipynb"])[0].cells[0].source.count("[") == 500
