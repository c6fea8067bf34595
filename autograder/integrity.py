"""The integrity report of an assignment: near-identical answers, and answers copied from the library.

    python -m autograder integrity A [--out DIR] [--threshold X]      (make integrity A=...)

For the instructor's eyes only; it never changes a score (it never opens the gradebook).
It reads every submission of assignment ``A`` (``course/submitted/<student>/A/*.ipynb``,
each through the grader's own :func:`autograder.intake.read_submission`: a submission
that cannot be read, or a folder the grader refuses, is listed with the reason and costs
nobody else), takes the answer cells (the cells the instructor's source notebook marks
``solution``, matched by ``grade_id``; code cells a student added count as one more
answer), and compares

* every pair of students, question by question and over all answers, and
* every answer with each function and class of ``gd_lib`` and of ``torch.optim``,

by MOSS-style fingerprints (:mod:`autograder.fingerprint`: renaming, reformatting and
comments change nothing). What does not count as similarity: the code of the released
notebook (signatures, ``raise NotImplementedError()``, the tests); between students,
passages that more than a fifth of the class share (MOSS's rule: the equations everyone
writes alike); against the library, what the instructor's own solution also contains and
idioms found in many of its files. A pair's similarity is the share of the two
answers' remaining tokens that lie in matching passages; pairs and library matches are
ranked, each with the matching lines side by side, in ``course/reports/A/integrity.html``
(one self-contained page), ``integrity.csv``, and a short table on the terminal.
"""

from __future__ import annotations

import ast
import bisect
import csv
import importlib.util
import itertools
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .course import Course
from .fingerprint import Fingerprints, kgram_hashes, matching_blocks, normalize
from .intake import MAX_NOTEBOOK_BYTES, SubmissionError, read_submission

ADDED_CELLS = "added cells"  # the pseudo-question of code cells a student added


@dataclass(frozen=True)
class IntegrityConfig:
    """How answers are compared. The defaults suit answers of 5 to 60 lines."""

    k: int = 12  # tokens per k-gram: shorter shared runs are never matches
    window: int = 4  # winnowing window: every shared run of k + window - 1 tokens is found
    threshold: float = 0.5  # a pair (or a library match) at or above this share is flagged
    min_match_tokens: int = 20  # a question's match shorter than this (on both sides) counts as none
    common_fraction: float = 0.2  # passages shared by more than this share of the class are ignored ...
    common_minimum: int = 10  # ... when that is more than this many students (MOSS's -m 10)
    library_idiom_files: int = 10  # library passages found in this many files are idioms, not sources
    max_answer_chars: int = 100_000  # longer answers are cut (and the report says so)
    max_bytes: int = MAX_NOTEBOOK_BYTES  # the grader's own bound (autograder.intake)
    shown_below_threshold: int = 10  # unflagged pairs still listed (the nearest ones), for context
    max_listed: int = 500  # rows of each table on the page (the CSV has every one)
    max_detailed: int = 100  # pairs (and library matches) shown line by line on the page

    def __post_init__(self):
        if self.k < 2 or self.window < 1:
            raise ValueError(f"k must be >= 2 and window >= 1, got k={self.k}, window={self.window}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.common_fraction <= 1.0:
            raise ValueError(f"common_fraction must be in (0, 1], got {self.common_fraction}")


# --- the assignment: questions, and what each student answered --------------------------------


@dataclass
class Question:
    key: str  # grade_id (prefixed with the notebook when the assignment has several)
    notebook: str  # file name of the notebook
    grade_id: str | None


@dataclass
class Submission:
    student: str
    answers: dict[str, str] = field(default_factory=dict)  # question key -> answer source
    problems: dict[str, str] = field(default_factory=dict)  # notebook -> why it is unreadable / missing
    truncated: list[str] = field(default_factory=list)  # question keys cut at max_answer_chars


def _nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    meta = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _source_of(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def load_questions(course: Course, assignment: str) -> tuple[list[Question], dict[str, set[str]], list[str]]:
    """The answer cells of the instructor's notebooks, the other graded ids, and the released code.

    Returns (questions, other_ids per notebook, the code of each code cell of the release).
    """
    import nbformat

    sources = course.source_notebooks(assignment)
    several = len(sources) > 1
    questions, other_ids, released = [], {}, []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        other_ids[path.name] = set()
        for cell in nb.cells:
            meta = _nbgrader_meta(cell)
            grade_id = meta.get("grade_id")
            if cell.cell_type == "code" and meta.get("solution") and grade_id:
                questions.append(Question(f"{path.stem}/{grade_id}" if several else grade_id, path.name, grade_id))
            elif grade_id:
                other_ids[path.name].add(grade_id)
        release = course.release_dir / assignment / path.name
        if release.exists():
            released.extend(_source_of(c) for c in nbformat.read(release, as_version=4).cells if c.cell_type == "code")
        else:  # nbgrader's release rule: each solution region becomes the stub
            released.extend(_stub(_source_of(c)) for c in nb.cells if c.cell_type == "code")
    questions.append(Question(ADDED_CELLS, "", None))
    return questions, other_ids, released


def _stub(source: str) -> str:
    out, inside = [], False
    for line in source.split("\n"):
        if line.strip().startswith("### BEGIN SOLUTION"):
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            inside = True
        elif line.strip().startswith("### END SOLUTION"):
            inside = False
        elif not inside and "HIDDEN TESTS" not in line:
            out.append(line)
    return "\n".join(out)


def read_answers(
    course: Course,
    assignment: str,
    student: str,
    questions: list[Question],
    other_ids: dict[str, set[str]],
    config: IntegrityConfig,
) -> Submission:
    """A student's answer per question; a notebook that cannot be read is a problem, not an error."""
    submission = Submission(student)
    by_id = {(q.notebook, q.grade_id): q for q in questions if q.grade_id is not None}
    pieces: dict[str, list[str]] = defaultdict(list)
    for notebook in dict.fromkeys(q.notebook for q in questions if q.notebook):
        try:
            nb, _ = read_submission(str(course.submitted_dir), [student, assignment, notebook], config.max_bytes)
        except SubmissionError as err:
            submission.problems[notebook] = f"{notebook}: {err}"
            continue
        except Exception as err:  # noqa: BLE001 - one notebook must never stop the report of a class
            submission.problems[notebook] = f"{notebook} could not be read ({type(err).__name__}: {err})"[:300]
            continue
        for cell in nb.cells:
            if cell.get("cell_type") != "code":
                continue
            grade_id = _nbgrader_meta(cell).get("grade_id")
            question = by_id.get((notebook, grade_id)) if isinstance(grade_id, str) else None
            if question is not None:
                pieces[question.key].append(_source_of(cell))
            elif not (isinstance(grade_id, str) and grade_id in other_ids.get(notebook, ())):
                pieces[ADDED_CELLS].append(_source_of(cell))  # given cells (setup, tests) are not answers
    for key, parts in pieces.items():
        text = "\n\n".join(parts)
        if len(text) > config.max_answer_chars:
            text = text[: config.max_answer_chars]
            submission.truncated.append(key)
        submission.answers[key] = text
    return submission


# --- the library's own source -------------------------------------------------------------------


@dataclass
class LibrarySegment:
    name: str  # gd_lib.optim.adam.adam_update
    where: str  # gd_lib/optim/adam.py:25
    file: str
    fingerprints: Fingerprints
    start: int  # token range of the segment in its file's tokens
    stop: int
    first_line: int  # line numbers of the segment in its file
    last_line: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def _package_folder(name: str) -> Path | None:
    """A package's folder without importing it (importing torch costs seconds)."""
    top, _, rest = name.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder.joinpath(*rest.split(".")) if rest else folder


def library_sources() -> list[tuple[str, Path]]:
    """(dotted package, folder) of the code answers must not be copied from: gd_lib and torch.optim."""
    found = []
    for package in ("gd_lib", "torch.optim"):
        folder = _package_folder(package)
        if folder is not None and folder.is_dir():
            found.append((package, folder))
    return found


def _segments_of(tree: ast.AST, module: str):
    """(qualified name, first line, last line) of every function and class, nested ones included."""
    stack = [(node, module) for node in reversed(getattr(tree, "body", []))]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{node.name}"
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield name, first, node.end_lineno or node.lineno
            stack.extend((child, name) for child in reversed(node.body))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                stack.extend((child, prefix) for child in reversed(getattr(node, block, []) or []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend((child, prefix) for child in reversed(node.body))


class LibraryIndex:
    """Fingerprints of every function and class of the library, and where each hash occurs."""

    def __init__(self, segments: list[LibrarySegment], idioms: set[int]):
        self.segments = segments
        self.idioms = idioms
        self.by_hash: dict[int, list[int]] = defaultdict(list)
        for index, segment in enumerate(segments):
            for h in segment.fingerprints.kept:
                if h not in idioms:
                    self.by_hash[h].append(index)

    @classmethod
    def build(cls, config: IntegrityConfig, sources: list[tuple[str, Path]] | None = None) -> LibraryIndex:
        sources = library_sources() if sources is None else sources
        segments: list[LibrarySegment] = []
        files_with: dict[int, int] = defaultdict(int)
        for package, folder in sources:
            for path in sorted(folder.rglob("*.py")):
                try:
                    text = path.read_text(encoding="utf-8")
                    tree = ast.parse(text)
                except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
                    continue
                relative = path.relative_to(folder).with_suffix("")
                parts = [p for p in relative.parts if p != "__init__"]
                module = ".".join([package, *parts])
                shown = "/".join([*package.split("."), *path.relative_to(folder).parts])
                code = normalize(text)
                hashes = kgram_hashes(code.tokens, config.k)
                whole = Fingerprints.of(code, config.k, config.window, hashes=hashes)
                for h in whole.kept:
                    files_with[h] += 1
                for name, first, last in _segments_of(tree, module):
                    start = bisect.bisect_left(code.first_lines, first)  # first token on line >= first
                    stop = bisect.bisect_right(code.first_lines, last)  # first token on a line > last
                    if stop - start < config.k:
                        continue
                    fp = Fingerprints.of(
                        code, config.k, config.window, start=start, stop=max(start, stop - config.k + 1), hashes=hashes
                    )
                    segments.append(LibrarySegment(name, f"{shown}:{first}", str(path), fp, start, stop, first, last))
        idioms = {h for h, count in files_with.items() if count >= config.library_idiom_files}
        return cls(segments, idioms)


# --- comparing -------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One student's answer to one question, fingerprinted, with what does not count removed."""

    student: str
    question: str
    fingerprints: Fingerprints
    own: list[bool]  # tokens that count (not given code, not common passages)
    kept: dict[int, list[int]] = field(default_factory=dict)  # fingerprints that count
    _prefix: list[int] | None = field(default=None, repr=False)

    def set_own(self, own: list[bool]) -> None:
        self.own, self._prefix = own, None

    @property
    def own_tokens(self) -> int:
        return self._own_prefix()[-1]

    def _own_prefix(self) -> list[int]:
        if self._prefix is None:
            self._prefix = list(itertools.accumulate(self.own, initial=0))
        return self._prefix

    def covered(self, shared) -> int:
        """How many of the tokens that count lie in the k-grams of the ``shared`` fingerprints."""
        prefix, k = self._own_prefix(), self.fingerprints.k
        size = len(self.own)
        total, run_start, run_stop = 0, 0, 0
        for p in sorted(p for h in shared for p in self.kept.get(h, ())):
            if p > run_stop:  # a new run of covered tokens
                total += prefix[run_stop] - prefix[run_start]
                run_start = p
            run_stop = max(run_stop, min(p + k, size))
        return total + prefix[run_stop] - prefix[run_start]


@dataclass
class QuestionMatch:
    question: str
    covered_a: int
    own_a: int
    covered_b: int
    own_b: int
    shared: set[int]

    @property
    def similarity(self) -> float:
        total = self.own_a + self.own_b
        return (self.covered_a + self.covered_b) / total if total else 0.0


@dataclass
class PairResult:
    a: str
    b: str
    similarity: float
    questions: dict[str, QuestionMatch]


@dataclass
class LibraryMatch:
    student: str
    question: str
    segment: LibrarySegment
    covered: int
    own: int
    shared: set[int]

    @property
    def share(self) -> float:
        return self.covered / self.own if self.own else 0.0


@dataclass
class IntegrityReport:
    assignment: str
    config: IntegrityConfig
    questions: list[str]
    submissions: list[Submission]
    pairs: list[PairResult]  # every pair with a match, most similar first
    library: list[LibraryMatch]  # best library match per answer, largest share first
    answers: dict[tuple[str, str], Answer]  # (student, question) -> answer, as pairs compare it
    library_answers: dict[tuple[str, str], Answer]  # the same, as the library compares it
    common_cap: int  # passages in more answers than this were ignored
    library_segments: int
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def flagged_pairs(self) -> list[PairResult]:
        return [p for p in self.pairs if p.similarity >= self.config.threshold]

    def flagged_library(self) -> list[LibraryMatch]:
        return [m for m in self.library if m.share >= self.config.threshold]


def _fingerprint_answers(submissions, questions, released_hashes, config):
    answers: dict[tuple[str, str], Answer] = {}
    for sub in submissions:
        for q in questions:
            text = sub.answers.get(q)
            if not text:
                continue
            fp = Fingerprints.of(normalize(text), config.k, config.window)
            given = fp.covered_by_hashes(released_hashes)
            own = [not g for g in given]
            kept = {h: ps for h, ps in fp.kept.items() if h not in released_hashes}
            answers[(sub.student, q)] = Answer(sub.student, q, fp, own, kept)
    return answers


def _drop_common(answers: dict[tuple[str, str], Answer], questions, config) -> tuple[int, dict[str, set[int]]]:
    """Remove, per question, the fingerprints more than the cap of students share (MOSS's -m)."""
    students = {student for student, _ in answers}
    cap = max(config.common_minimum, int(config.common_fraction * len(students)))
    common: dict[str, set[int]] = {}
    for q in questions:
        counts: dict[int, int] = defaultdict(int)
        for (_, question), answer in answers.items():
            if question == q:
                for h in answer.kept:
                    counts[h] += 1
        common[q] = {h for h, c in counts.items() if c > cap}
        if not common[q]:
            continue
        for (_, question), answer in answers.items():
            if question == q:
                dropped = answer.fingerprints.covered([p for h in common[q] for p in answer.kept.get(h, ())])
                answer.set_own([o and not d for o, d in zip(answer.own, dropped)])
                answer.kept = {h: ps for h, ps in answer.kept.items() if h not in common[q]}
    return cap, common


def _sharing_pairs(kept_sets: list) -> list[tuple[int, int]]:
    """The pairs (i < j) of documents that share at least one fingerprint.

    One sparse product of the document x fingerprint incidence matrix with its transpose (the
    inverted index, in compiled code): its nonzero entries are the pairs that share a hash.
    """
    from scipy import sparse

    vocabulary: dict[int, int] = {}
    rows, cols = [], []
    for row, kept in enumerate(kept_sets):
        for h in kept:
            rows.append(row)
            cols.append(vocabulary.setdefault(h, len(vocabulary)))
    if not vocabulary:
        return []
    incidence = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(kept_sets), len(vocabulary))
    )
    shared = sparse.triu(incidence @ incidence.T, k=1).tocoo()
    return sorted(zip(shared.row.tolist(), shared.col.tolist()))


def _compare_pairs(answers, questions, config) -> list[PairResult]:
    own_total = defaultdict(int)
    for (student, _), answer in answers.items():
        own_total[student] += answer.own_tokens
    matches: dict[tuple[str, str], dict[str, QuestionMatch]] = defaultdict(dict)
    for q in questions:
        holders = sorted((student, answer) for (student, question), answer in answers.items() if question == q)
        for i, j in _sharing_pairs([answer.kept for _, answer in holders]):
            (a, answer_a), (b, answer_b) = holders[i], holders[j]
            shared = answer_a.kept.keys() & answer_b.kept.keys()
            covered_a, covered_b = answer_a.covered(shared), answer_b.covered(shared)
            if max(covered_a, covered_b) < config.min_match_tokens:
                continue
            matches[(a, b)][q] = QuestionMatch(
                q, covered_a, answer_a.own_tokens, covered_b, answer_b.own_tokens, shared
            )
    pairs = []
    for (a, b), per_question in matches.items():
        covered = sum(m.covered_a + m.covered_b for m in per_question.values())
        total = own_total[a] + own_total[b]
        pairs.append(PairResult(a, b, covered / total if total else 0.0, per_question))
    pairs.sort(key=lambda p: (-p.similarity, p.a, p.b))
    return pairs


def _best_library_match(answer: Answer, library: LibraryIndex, config, baseline: set[int]) -> LibraryMatch | None:
    """The library segment that covers most of the answer; ``baseline``: hashes that do not count
    (the instructor's own answer: what the question calls for is no evidence of copying)."""
    per_segment: dict[int, set[int]] = defaultdict(set)
    for h in answer.kept:
        if h in baseline:
            continue
        for index in library.by_hash.get(h, ()):
            per_segment[index].add(h)
    best, best_key = None, None
    own = answer.own_tokens
    for index, shared in per_segment.items():
        segment = library.segments[index]
        covered = answer.covered(shared)
        key = (covered, -segment.size)  # most of the answer; then the most specific segment
        if best_key is None or key > best_key:
            best, best_key = LibraryMatch(answer.student, answer.question, segment, covered, own, shared), key
    if best is None or best.covered < config.min_match_tokens:
        return None
    return best


def analyse(
    course: Course,
    assignment: str,
    config: IntegrityConfig = IntegrityConfig(),
    library: LibraryIndex | None = None,
    progress: bool = False,
) -> IntegrityReport:
    """Read every submission of ``assignment`` and compare (no file is written; see :func:`write_report`).

    ``report.timings`` holds the seconds of each phase (read, fingerprint, pairs, library).
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    questions, other_ids, released = load_questions(course, assignment)
    keys = [q.key for q in questions]
    released_hashes = {h for cell in released for h in kgram_hashes(normalize(cell).tokens, config.k)}
    students = course.students(assignment)
    iterator = students
    if progress and students:
        from tqdm import tqdm

        iterator = tqdm(students, desc="reading submissions", unit="student", file=sys.stderr, leave=False)
    submissions = [read_answers(course, assignment, s, questions, other_ids, config) for s in iterator]
    # folders the grader does not read at all (linked, or names it does not accept), with its reason
    submissions += [
        Submission(name, problems={"(folder)": why}) for name, why in course.refused_students(assignment).items()
    ]
    submissions.sort(key=lambda sub: sub.student)
    lap("read")
    answers = _fingerprint_answers(submissions, keys, released_hashes, config)
    # against the library, passages common in the class still count: a trick that spread is still a copy
    library_answers = {
        key: Answer(a.student, a.question, a.fingerprints, list(a.own), dict(a.kept)) for key, a in answers.items()
    }
    cap, _ = _drop_common(answers, keys, config)
    if not any(question == ADDED_CELLS for _, question in answers):
        keys.remove(ADDED_CELLS)
    lap("fingerprint")
    pairs = _compare_pairs(answers, keys, config)
    lap("pairs")
    library = LibraryIndex.build(config) if library is None else library
    baseline = solution_hashes(course, questions, assignment, config.k)
    matches = [
        m
        for m in (
            _best_library_match(a, library, config, baseline.get(a.question, set())) for a in library_answers.values()
        )
        if m is not None
    ]
    matches.sort(key=lambda m: (-m.share, m.student, m.question))
    lap("library")
    report = IntegrityReport(
        assignment, config, keys, submissions, pairs, matches, answers, library_answers, cap, len(library.segments)
    )
    report.timings = timings
    report.seconds = sum(timings.values())
    return report


def solution_hashes(course: Course, questions: list[Question], assignment: str, k: int) -> dict[str, set[int]]:
    """Every k-gram hash of the instructor's answer to each question: code the question itself calls for."""
    import nbformat

    out: dict[str, set[int]] = {}
    by_notebook = defaultdict(list)
    for q in questions:
        if q.grade_id is not None:
            by_notebook[q.notebook].append(q)
    for notebook, qs in by_notebook.items():
        nb = nbformat.read(course.source_dir / assignment / notebook, as_version=4)
        sources = {_nbgrader_meta(c).get("grade_id"): _source_of(c) for c in nb.cells}
        for q in qs:
            out[q.key] = set(kgram_hashes(normalize(sources.get(q.grade_id, "")).tokens, k))
    return out


# --- writing the report ----------------------------------------------------------------------------


def _lines_of(fp: Fingerprints, start: int, stop: int, own: list[bool] | None = None, offset: int = 0) -> list[int]:
    """The source lines of tokens ``start..stop`` that count (all of them when ``own`` is None)."""
    lines: set[int] = set()
    for i in range(start, min(stop, len(fp.code.tokens))):
        if own is None or own[i]:
            lines.update(range(fp.code.first_lines[i] - offset, fp.code.last_lines[i] - offset + 1))
    return sorted(lines)


def _with_lines(pairs_of_lines):
    return [(a, b) for a, b in pairs_of_lines if a and b]


def pair_blocks(report: IntegrityReport, pair: PairResult, question: str) -> list[tuple[list[int], list[int]]]:
    """The matching lines of a pair in one question, block by block: [(a's lines, b's lines), ...]
    (lines holding code that counts: not the given code, not comments)."""
    a, b = report.answers[(pair.a, question)], report.answers[(pair.b, question)]
    match = pair.questions[question]
    blocks = matching_blocks(a.fingerprints, b.fingerprints, match.shared, gap=report.config.window)
    return _with_lines(
        (_lines_of(a.fingerprints, a0, a1, a.own), _lines_of(b.fingerprints, b0, b1, b.own))
        for a0, a1, b0, b1 in blocks
    )


def library_blocks(report: IntegrityReport, match: LibraryMatch) -> list[tuple[list[int], list[int]]]:
    """Matching lines of an answer and its library segment (segment lines counted from its start)."""
    answer = report.library_answers[(match.student, match.question)]
    segment = match.segment
    blocks = matching_blocks(answer.fingerprints, segment.fingerprints, match.shared, gap=report.config.window)
    offset = segment.first_line - 1
    return _with_lines(
        (_lines_of(answer.fingerprints, a0, a1, answer.own), _lines_of(segment.fingerprints, b0, b1, None, offset))
        for a0, a1, b0, b1 in blocks
    )


def _spans(lines: list[int], offset: int = 0) -> str:
    return f"{lines[0] + offset}-{lines[-1] + offset}"


def _segment_source(segment: LibrarySegment) -> str:
    return "\n".join(segment.fingerprints.code.source.split("\n")[segment.first_line - 1 : segment.last_line])


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def terminal_summary(
    report: IntegrityReport, html_path: Path | None = None, csv_path: Path | None = None, rows: int = 10
) -> str:
    c = report.config
    unreadable = [s for s in report.submissions if s.problems]
    lines = [
        f"integrity report for {report.assignment}: {len(report.submissions)} students, "
        f"{len(unreadable)} with an unreadable or missing notebook; {len(report.pairs)} pairs share code, "
        f"{len(report.flagged_pairs())} at or above {_pct(c.threshold)}"
    ]
    table = [("rank", "student", "student", "similarity", "questions")]
    for rank, pair in enumerate(report.pairs[:rows], 1):
        per = ", ".join(
            f"{q} {_pct(m.similarity)}" for q, m in sorted(pair.questions.items(), key=lambda kv: -kv[1].similarity)
        )
        table.append(
            (str(rank), pair.a, pair.b, _pct(pair.similarity) + (" *" if pair.similarity >= c.threshold else ""), per)
        )
    if len(table) > 1:
        lines += ["", *_columns(table)]
    if report.library:
        table = [("student", "question", "share", "closest library source")]
        for m in report.library[:rows]:
            table.append(
                (
                    m.student,
                    m.question,
                    _pct(m.share) + (" *" if m.share >= c.threshold else ""),
                    f"{m.segment.name} ({m.segment.where})",
                )
            )
        lines += ["", "answers near library source:", *_columns(table)]
    problems = [
        f"unreadable: {_printable(s.student)}: {_printable(why)}" for s in unreadable for why in s.problems.values()
    ]
    lines += problems[: rows * 2]
    if len(problems) > rows * 2:
        lines.append(f"... and {len(problems) - rows * 2} more unreadable notebooks (in the report)")
    lines.append(f"(* at or above the threshold {_pct(c.threshold)}; this report changes no score)")
    if html_path is not None:
        lines.append(f"report: {html_path}" + (f" and {csv_path}" if csv_path else ""))
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Student names are folder names: no control character reaches the instructor's terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _columns(rows) -> list[str]:
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def shown_pairs(report: IntegrityReport) -> list[PairResult]:
    """The pairs the page lists: every flagged one and the nearest unflagged ones (at most max_listed)."""
    count = len(report.flagged_pairs()) + report.config.shown_below_threshold
    return report.pairs[: min(count, report.config.max_listed)]


def shown_library(report: IntegrityReport) -> list[LibraryMatch]:
    count = len(report.flagged_library()) + report.config.shown_below_threshold
    return report.library[: min(count, report.config.max_listed)]


def _csv_safe(value) -> str:
    text = str(value)
    # a spreadsheet runs a cell that starts like a formula: student names are not trusted
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(report: IntegrityReport, path: Path) -> None:
    header = [
        "kind",
        "student",
        "other",
        "question",
        "similarity",
        "share_student",
        "share_other",
        "lines_student",
        "lines_other",
        "flagged",
        "note",
    ]
    rows = []
    threshold = report.config.threshold
    own_total: dict[str, int] = defaultdict(int)
    for (student, _), answer in report.answers.items():
        own_total[student] += answer.own_tokens
    detailed = {(p.a, p.b) for p in shown_pairs(report)[: report.config.max_detailed]}
    for pair in report.pairs:
        covered_a = sum(m.covered_a for m in pair.questions.values())
        covered_b = sum(m.covered_b for m in pair.questions.values())
        own_a, own_b = own_total[pair.a], own_total[pair.b]
        rows.append(
            [
                "pair",
                pair.a,
                pair.b,
                "(all answers)",
                f"{pair.similarity:.3f}",
                f"{covered_a / own_a if own_a else 0:.3f}",
                f"{covered_b / own_b if own_b else 0:.3f}",
                "",
                "",
                int(pair.similarity >= threshold),
                "",
            ]
        )
        for q, m in sorted(pair.questions.items()):
            blocks = pair_blocks(report, pair, q) if (pair.a, pair.b) in detailed else []
            rows.append(
                [
                    "pair-question",
                    pair.a,
                    pair.b,
                    q,
                    f"{m.similarity:.3f}",
                    f"{m.covered_a / m.own_a if m.own_a else 0:.3f}",
                    f"{m.covered_b / m.own_b if m.own_b else 0:.3f}",
                    " ".join(_spans(x) for x, _ in blocks),
                    " ".join(_spans(y) for _, y in blocks),
                    int(m.similarity >= threshold),
                    "",
                ]
            )
    detailed_library = {id(m) for m in shown_library(report)[: report.config.max_detailed]}
    for m in report.library:
        blocks = library_blocks(report, m) if id(m) in detailed_library else []
        rows.append(
            [
                "library",
                m.student,
                m.segment.name,
                m.question,
                f"{m.share:.3f}",
                f"{m.share:.3f}",
                "",
                " ".join(_spans(x) for x, _ in blocks),
                " ".join(_spans(y, m.segment.first_line - 1) for _, y in blocks),
                int(m.share >= threshold),
                m.segment.where,
            ]
        )
    for s in report.submissions:
        for notebook, why in s.problems.items():
            rows.append(["unreadable", s.student, "", notebook, "", "", "", "", "", "", why])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([_csv_safe(v) for v in row] for row in rows)


def write_report(report: IntegrityReport, out_dir: Path) -> tuple[Path, Path]:
    """integrity.html and integrity.csv in ``out_dir`` (created); returns their paths."""
    from .integrity_html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out_dir / "integrity.html", out_dir / "integrity.csv"
    html_path.write_text(render_html(report), encoding="utf-8")
    write_csv(report, csv_path)
    return html_path, csv_path


def run(
    course: Course,
    assignment: str,
    out: str | Path | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> int:
    """The ``integrity`` command: analyse, write the HTML and CSV, print the summary."""
    config = IntegrityConfig() if threshold is None else IntegrityConfig(threshold=threshold)
    course.source_notebooks(assignment)  # FileNotFoundError (exit 2) for an unknown assignment
    if not course.students(assignment) and not course.refused_students(assignment):
        print(f"no submissions in {course.submitted_dir}/*/{assignment}", file=sys.stderr)
        return 1
    out_dir = Path(out) if out is not None else course.course_dir / "reports" / assignment
    report = analyse(course, assignment, config, progress=progress and sys.stderr.isatty())
    html_path, csv_path = write_report(report, out_dir)
    print(terminal_summary(report, html_path, csv_path))
    return 0


__all__ = [
    "IntegrityConfig",
    "IntegrityReport",
    "LibraryIndex",
    "analyse",
    "write_report",
    "run",
    "terminal_summary",
    "read_answers",
    "load_questions",
]
