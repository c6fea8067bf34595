"""Reading submissions: hostile files, read by trusted code, before anything else touches them.

A submission is whatever a student managed to put into ``submitted/<student>/<assignment>/``.
The grader reads it as the instructor (or root), outside any sandbox, so it must
not follow links (a link to the solutions, to a classmate's notebook or to a file
only root may read would be read with the grader's rights), must bound what it
reads, and must turn every malformed input into a reason for that student alone.

:func:`read_submission` opens each folder and the file without following links
(``O_NOFOLLOW``, relative to the folder above), refuses anything that is not a
regular file with a single link, reads at most ``max_bytes``, decodes strict
UTF-8, parses JSON (bounded nesting) and validates it as an nbformat 4 notebook.
Grade cells, their points and ids never come from a submission: the grader
takes them from the instructor's source notebook and only the answer cells'
text from here (:func:`autograder.grading.merged_cells`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

MAX_NOTEBOOK_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")


class SubmissionError(ValueError):
    """A submission the grader will not read; the message is meant for the student."""


def _open_nofollow(path_parts: list[str], base: str) -> int:
    """A descriptor of ``base/part0/part1/...``, each component opened without following links."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(path_parts):
            last = i == len(path_parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            try:
                new = os.open(part, flags | os.O_NONBLOCK, dir_fd=fd)
            except FileNotFoundError:
                raise SubmissionError("no submitted file") from None
            except OSError as err:
                if err.errno in (40, 20):  # ELOOP: a symbolic link; ENOTDIR: a link to a folder, or a file
                    raise SubmissionError(
                        f"{'/'.join(path_parts[: i + 1])} is a symbolic link or not a "
                        "folder: submissions must be plain files"
                    ) from None
                raise SubmissionError(f"{'/'.join(path_parts[: i + 1])} cannot be opened ({err.strerror})") from None
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_bytes(base: str, parts: list[str], max_bytes: int = MAX_NOTEBOOK_BYTES) -> bytes:
    """The bytes of the regular file ``base/parts...`` (see the module docstring)."""
    fd = _open_nofollow(parts, base)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SubmissionError("the submitted notebook is not a regular file")
        if st.st_nlink != 1:
            raise SubmissionError(
                "the submitted notebook has more than one name (a hard link): submissions must be plain files"
            )
        if st.st_size > max_bytes:
            raise SubmissionError(
                f"the submitted notebook is larger than {max_bytes >> 20} MiB "
                f"({st.st_size >> 20} MiB); clear large outputs and submit again"
            )
        data = b""
        while len(data) <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        if len(data) > max_bytes:
            raise SubmissionError(f"the submitted notebook is larger than {max_bytes >> 20} MiB")
        return data
    finally:
        os.close(fd)


def _depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_notebook(data: bytes):
    """An nbformat 4 notebook from ``data`` (raises :class:`SubmissionError` with the reason)."""
    import nbformat

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SubmissionError(f"the submitted notebook is not UTF-8 text (byte {err.start})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise SubmissionError(f"the submitted notebook nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise SubmissionError(f"the submitted file is not a notebook (not valid JSON: {err})"[:300]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise SubmissionError("the submitted file is not a notebook (no list of cells)")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - nbformat's validation and conversion errors
        raise SubmissionError(
            f"the submitted file is not a valid notebook ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''})"
        ) from None
    return nb


def read_submission(base: str, parts: list[str], max_bytes: int = MAX_NOTEBOOK_BYTES):
    """(notebook, sha256 of its bytes): see the module docstring."""
    data = read_bytes(base, parts, max_bytes)
    return parse_notebook(data), hashlib.sha256(data).hexdigest()


def fingerprint(base: str, parts: list[str], max_bytes: int = MAX_NOTEBOOK_BYTES) -> str:
    """What a cached result of this submission is keyed by: the sha256 of its bytes, or the
    reason it cannot be read (so that a fixed submission is graded again)."""
    try:
        return hashlib.sha256(read_bytes(base, parts, max_bytes)).hexdigest()
    except SubmissionError as err:
        return "refused: " + hashlib.sha256(str(err).encode()).hexdigest()[:16]


def student_folders(submitted_dir: str, assignment: str) -> tuple[list[str], dict[str, str]]:
    """(students with a submission of ``assignment``, {entry: why it is not graded}) — entries
    with unsafe names or that are links are not graded, and said so."""
    students, refused = [], {}
    try:
        entries = sorted(os.listdir(submitted_dir))
    except OSError:
        return [], {}
    for name in entries:
        path = os.path.join(submitted_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not SAFE_NAME.match(name):
            refused[name] = "a student folder name the grader does not accept"
            continue
        if stat.S_ISLNK(st.st_mode):
            if os.path.isdir(os.path.join(path, assignment)):
                refused[name] = "the student folder is a symbolic link"
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        sub = os.path.join(path, assignment)
        try:
            sst = os.lstat(sub)
        except OSError:
            continue
        if stat.S_ISLNK(sst.st_mode) or not stat.S_ISDIR(sst.st_mode):
            refused[name] = f"{name}/{assignment} is a symbolic link or not a folder"
            continue
        students.append(name)
    return students, refused


TIMESTAMP = re.compile(r"^[0-9T:. +\-Z]{8,40}$")


def read_timestamp(base: str, parts: list[str]) -> str | None:
    """nbgrader's ``timestamp.txt`` of a submission (for late penalties), if it is a plain small file
    holding a timestamp; ``None`` otherwise."""
    try:
        text = read_bytes(base, parts, max_bytes=128).decode("ascii").strip()
    except (SubmissionError, UnicodeDecodeError):
        return None
    return text if TIMESTAMP.match(text) else None
