"""The integrity report on a large synthetic class: 300 students x the 5 questions of 01_first_order.

Each synthetic student answers every question in one of the hand-written styles of
tests/integrity_class.py (alice, bob, carol, erin), with every local name renamed at random
and a few lines of code of their own (random expressions) inserted; planted rings of three
students hand in one ring member's answers renamed again. Two classes:

* ``styles``: every student picks a style at random (about 75-100 share each: more than the
  common-passage cap, so the styles themselves do not count, as in a real class where the
  equations come out alike);
* ``cliques``: groups of as many students as the cap allows share one style (the most
  candidate pairs the inverted index can produce: the worst case for the pair phase).

Reported: the wall and CPU time of ``python -m autograder integrity`` as an instructor runs
it (a fresh process: imports, reading and checking every notebook, fingerprints, pairs, the
library index, HTML and CSV; on an idle machine wall time is about the CPU time, one core),
its phases, the planted pairs found, and the pair phase against the named baseline, the
all-pairs comparison (every pair of students intersected per question, as tools without an
index do, e.g. copydetect), in the same run, in CPU seconds (the machine is shared).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import keyword
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

from benchmarks.common import header

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_first_order"
NOTEBOOK = "first_order.ipynb"
sys.path.insert(0, str(ROOT / "tests"))

from integrity_class import ALICE, BOB, CAROL, ERIN  # noqa: E402

STYLES = [ALICE, BOB, CAROL, ERIN]
GIVEN = {
    "sgd_step",
    "adam_step",
    "MyAdam",
    "rosenbrock",
    "race",
    "steps_to_reach",
    "debiased_average",
    "torch",
    "math",
    "self",
    "super",
    "DTYPE",
    "device",
    "param",
    "grad",
    "buf",
    "lr",
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "m",
    "v",
    "t",
    "betas",
    "eps",
    "decoupled",
    "params",
    "closure",
    "xy",
    "make_optimizer",
    "steps",
    "start",
    "losses",
    "tol",
    "values",
    "beta",
}


def _rename(source: str, rng: random.Random) -> str:
    """Every name that is not given, a keyword, a builtin, an attribute or a keyword argument, renamed."""
    import builtins

    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    names: dict[str, str] = {}
    out = []
    for i, tok in enumerate(tokens):
        text = tok.string
        after_dot = i > 0 and tokens[i - 1].string == "."
        before_eq = i + 1 < len(tokens) and tokens[i + 1].string == "="
        if (
            tok.type == tokenize.NAME
            and not keyword.iskeyword(text)
            and text not in GIVEN
            and not hasattr(builtins, text)
            and not after_dot
            and not before_eq
        ):
            text = names.setdefault(text, f"{rng.choice('abcdefghkpqrsuwxyz')}{rng.randrange(10**6)}")
        out.append((tok.type, text))
    return tokenize.untokenize(out)  # positions dropped: the names changed length


def _own_lines(rng: random.Random, indent: str) -> list[str]:
    """A few lines of code nobody else writes (random expression trees)."""

    def expr(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice([str(rng.randrange(1, 9)), "lr", "eps", f"len({rng.choice(['str', 'repr'])}(lr))"])
        op = rng.choice(["+", "-", "*", "/", "**", "%"])
        left, right = expr(depth - 1), expr(depth - 1)
        return f"({left} {op} {right})" if rng.random() < 0.5 else f"max({left}, {right}) {op} 1"

    return [f"{indent}_note{j} = {expr(4)}" for j in range(rng.randrange(2, 5))]


def _personalize(source: str, rng: random.Random) -> str:
    """Renamed, with the student's own lines after the first line of each function body."""
    lines = _rename(source.strip("\n"), rng).split("\n")
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if line.lstrip().startswith("def ") and i + 1 < len(lines) and "lr" in line:
            body = lines[i + 1]
            if body.lstrip().startswith('"""'):
                continue
            out += _own_lines(rng, body[: len(body) - len(body.lstrip())])
    return "\n".join(out)


def make_class(root: Path, students: int, mode: str, cap: int, rings: int = 10, seed: int = 0) -> set[frozenset]:
    """A course under ``root`` with ``students`` synthetic submissions; returns the planted pairs."""
    import nbformat

    rng = random.Random(seed)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    shutil.copytree(ROOT / "assignments" / ASSIGNMENT, root / "assignments" / ASSIGNMENT)
    (root / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", root / "course" / "nbgrader_config.py")
    release = nbformat.read(ROOT / "assignments" / ASSIGNMENT / NOTEBOOK, as_version=4)
    questions = list(ALICE)
    names = [f"s{i:03d}" for i in range(students)]
    answers: dict[str, dict[str, str]] = {}
    for index, student in enumerate(names):
        own = {}
        for q in questions:
            styles = [s for s in STYLES if q in s]
            style = styles[(index // cap) % len(styles)] if mode == "cliques" else rng.choice(styles)
            own[q] = _personalize(style[q], rng)
        answers[student] = own
    planted = set()
    for ring in range(rings):
        members = names[ring * 3 : ring * 3 + 3] if mode == "styles" else names[-(ring * 3 + 3) :][:3]
        for member in members[1:]:
            answers[member] = {q: _rename(a, rng) for q, a in answers[members[0]].items()}
        planted |= {frozenset(p) for p in itertools.combinations(members, 2)}
    for student, own in answers.items():
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in own:
                cell.source = own[grade_id]
        folder = root / "course" / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    return planted


def _all_pairs_baseline(answers, questions, config) -> int:
    """The named baseline: every pair intersected, question by question (no index)."""
    found = 0
    for q in questions:
        holders = [(s, a) for (s, question), a in answers.items() if question == q]
        sets = [(s, a, set(a.kept)) for s, a in holders]
        for (_, aa, ha), (_, ab, hb) in itertools.combinations(sets, 2):
            shared = ha & hb
            if shared and max(aa.covered(shared), ab.covered(shared)) >= config.min_match_tokens:
                found += 1
    return found


def _run(students: int, mode: str) -> dict:
    from autograder import integrity
    from autograder.course import Course

    config = integrity.IntegrityConfig()
    cap = max(config.common_minimum, int(config.common_fraction * students))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        planted = make_class(root, students, mode, cap)
        load_before = os.getloadavg()[0]
        env = {**os.environ, "GD_COURSE_ROOT": str(root)}
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [sys.executable, "-m", "autograder", "integrity", ASSIGNMENT, "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        command_s = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        command_cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        with open(root / "course" / "reports" / ASSIGNMENT / "integrity.csv", newline="") as fh:
            flagged = {
                frozenset((r["student"], r["other"]))
                for r in csv.DictReader(fh)
                if r["kind"] == "pair" and r["flagged"] == "1"
            }
        # the pair phase and its baseline, in this process, on the same fingerprints
        report = integrity.analyse(Course(root), ASSIGNMENT, config, library=integrity.LibraryIndex([], set()))
        # CPU seconds of this process, in turns, the least disturbed of three (the machine is shared)
        indexed_times, baseline_times = [], []
        for _ in range(3):
            t0 = time.process_time()
            indexed = integrity._compare_pairs(report.answers, report.questions, config)
            indexed_times.append(time.process_time() - t0)
            t0 = time.process_time()
            baseline_matches = _all_pairs_baseline(report.answers, report.questions, config)
            baseline_times.append(time.process_time() - t0)
        indexed_s, baseline_s = min(indexed_times), min(baseline_times)
        indexed_matches = sum(len(p.questions) for p in indexed)
        return dict(
            mode=mode,
            students=students,
            command_s=command_s,
            command_cpu_s=command_cpu_s,
            load=(load_before, os.getloadavg()[0]),
            timings=report.timings,
            planted=len(planted),
            found=len(planted & flagged),
            other_flagged=len(flagged - planted),
            indexed_s=indexed_s,
            baseline_s=baseline_s,
            same=indexed_matches == baseline_matches,
            matches=indexed_matches,
            cap=cap,
        )


def main(args) -> None:
    students = 60 if getattr(args, "quick", False) else 300
    print(
        header(
            "Integrity report: synthetic class, 5 questions",
            students=students,
            assignment=ASSIGNMENT,
            cpus=os.cpu_count(),
        )
    )
    for mode in ("styles", "cliques"):
        r = _run(students, mode)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
        print(
            f"{mode}: `python -m autograder integrity` for {r['students']} students: {r['command_s']:.1f} s wall, "
            f"{r['command_cpu_s']:.1f} s CPU (load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}); "
            f"in-process phases (wall) without the library: {phases}"
        )
        print(
            f"  planted copy pairs flagged: {r['found']}/{r['planted']}; other pairs flagged: {r['other_flagged']}; "
            f"common-passage cap {r['cap']} students"
        )
        print(
            f"  pair phase (CPU): sparse index {r['indexed_s']:.2f} s vs all-pairs baseline {r['baseline_s']:.2f} s "
            f"= {r['baseline_s'] / max(r['indexed_s'], 1e-9):.1f}x faster; same question matches: {r['same']} "
            f"({r['matches']})"
        )


if __name__ == "__main__":
    main(None)
