"""Reading a submitted notebook, which is hostile input.

A submission is whatever a student put in their folder: it may be a symbolic or
hard link to someone else's notebook (or to a file only the grader may read), a
FIFO that blocks whoever opens it, gigabytes of data, bytes that are not UTF-8,
JSON nested a million levels deep, or JSON that is not a notebook. This module
reads it the one safe way and either returns a valid notebook or raises
:class:`SubmissionError` with a reason written for the student::

    from autograder.intake import read_submission, SubmissionError
    try:
        nb = read_submission(path, below=course.submitted_dir)
    except SubmissionError as err:
        ...  # that student's notebook is unreadable: str(err) says why; the others go on

The rules: the path is opened without following links (``O_NOFOLLOW``; with
``below``, every folder under ``below`` too), and what was opened must be a
regular file with a single link (``st_nlink == 1``: a hard link to another file
is refused) of at most ``max_bytes``; at most ``max_bytes`` are ever read; the
bytes must be UTF-8, the JSON nested at most ``MAX_JSON_DEPTH`` deep, and the
result a notebook that nbformat's schema accepts (converted to version 4).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

MiB = 1024 * 1024
MAX_SUBMISSION_BYTES = 5 * MiB
# A version-4 notebook nests about 8 deep (outputs' data and metadata included); the slack is
# for cell metadata written by extensions. Deeper JSON is refused before nbformat walks it.
MAX_JSON_DEPTH = 64

__all__ = ["MAX_JSON_DEPTH", "MAX_SUBMISSION_BYTES", "SubmissionError", "read_submission", "read_bounded"]


class SubmissionError(Exception):
    """A submitted notebook that cannot be read; ``str(err)`` is written for the student."""


def _open_flags() -> int:
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused after fstat anyway)
    return os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def _open_without_links(path: Path, below: Path | None) -> int:
    """A descriptor of ``path``, no link followed (under ``below``, no folder link either)."""
    if below is None:
        return os.open(path, _open_flags())
    relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(below))
    parts = relative.parts
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise SubmissionError(f"{path} is not a file inside {below}")
    folder = os.open(below, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                            dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], _open_flags(), dir_fd=folder)
    finally:
        os.close(folder)


def _describe_open_error(err: OSError, name: str) -> str:
    if err.errno in (getattr(os, "ELOOP", 40), getattr(os, "EMLINK", 31)):
        return f"{name} is a symbolic link (or sits in a linked folder): submit the notebook file itself"
    if err.errno == getattr(os, "ENOTDIR", 20):
        return f"{name}: a folder on its path is a symbolic link or not a folder: submit the notebook file itself"
    if err.errno == getattr(os, "ENOENT", 2):
        return f"{name} was not submitted"
    if err.errno in (getattr(os, "EACCES", 13), getattr(os, "EPERM", 1)):
        return f"{name} cannot be read (permission denied)"
    return f"{name} cannot be opened ({os.strerror(err.errno) if err.errno else err})"


def read_bounded(path: str | os.PathLike, max_bytes: int = MAX_SUBMISSION_BYTES, *,
                 below: str | os.PathLike | None = None) -> bytes:
    """The bytes of a submitted file, read safely (the file rules of the module docstring)."""
    path = Path(path)
    name = path.name
    try:
        info = os.lstat(path)
    except OSError as err:
        raise SubmissionError(_describe_open_error(err, name)) from None
    if stat.S_ISLNK(info.st_mode):
        raise SubmissionError(f"{name} is a symbolic link: submit the notebook file itself")
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionError(f"{name} is not a regular file")
    try:
        fd = _open_without_links(path, Path(below) if below is not None else None)
    except SubmissionError:
        raise
    except (OSError, ValueError) as err:
        if isinstance(err, OSError):
            raise SubmissionError(_describe_open_error(err, name)) from None
        raise SubmissionError(f"{name} is not inside {below}") from None
    try:
        info = os.fstat(fd)  # what was opened, not what the name pointed to a moment ago
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{name} is not a regular file")
        if info.st_nlink != 1:
            raise SubmissionError(f"{name} has {info.st_nlink} hard links (it is a link to another file): "
                                  "submit a copy of your own notebook")
        if info.st_size > max_bytes:
            raise SubmissionError(f"{name} is {info.st_size / MiB:.1f} MiB, more than the "
                                  f"{max_bytes / MiB:g} MiB allowed: clear the cells' outputs and submit again")
        chunks, total = [], 0
        while total <= max_bytes:  # never more than max_bytes + 1, even if the file grows meanwhile
            chunk = os.read(fd, min(MiB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise SubmissionError(f"{name} is more than the {max_bytes / MiB:g} MiB allowed")
        return b"".join(chunks)
    except OSError as err:
        raise SubmissionError(f"{name} cannot be read ({os.strerror(err.errno) if err.errno else err})") from None
    finally:
        os.close(fd)


def _json_depth_exceeds(value, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iteratively: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def read_submission(path: str | os.PathLike, max_bytes: int = MAX_SUBMISSION_BYTES, *,
                    below: str | os.PathLike | None = None):
    """The submitted notebook at ``path`` as an nbformat (version 4) NotebookNode.

    ``below``: a trusted folder that ``path`` lies in (e.g. ``course/submitted``); every folder
    between it and the file is then opened without following links too.
    Raises :class:`SubmissionError` with a reason for the student when the file is refused or
    is not a valid notebook.
    """
    import nbformat  # imported here: the file checks above need nothing but the standard library
    from nbformat.reader import NotJSONError

    name = Path(path).name
    data = read_bounded(path, max_bytes, below=below)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SubmissionError(f"{name} is not UTF-8 text (byte {err.start}): save it from Jupyter and submit "
                              "again") from None
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise SubmissionError(f"{name} is not a notebook: its JSON is nested too deeply") from None
    except ValueError as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise SubmissionError(f"{name} is not a notebook: it is not valid JSON{where}") from None
    if not isinstance(parsed, dict):
        raise SubmissionError(f"{name} is not a notebook: its JSON is not an object")
    if _json_depth_exceeds(parsed, MAX_JSON_DEPTH):
        raise SubmissionError(f"{name} is not a notebook: its JSON is nested more than {MAX_JSON_DEPTH} deep")
    try:
        nb = nbformat.reader.reads(text)
        nb = nbformat.convert(nb, 4)
        nbformat.validate(nb)
    except (NotJSONError, nbformat.ValidationError, nbformat.NBFormatError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SubmissionError(f"{name} is not a valid Jupyter notebook: {first_line[:200]}") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as err:
        raise SubmissionError(f"{name} is not a valid Jupyter notebook ({type(err).__name__})") from None
    return nb
