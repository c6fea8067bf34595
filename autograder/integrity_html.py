"""The integrity report as one self-contained HTML page (inline CSS, no script, nothing fetched).

Everything a student wrote (their folder's name included) is escaped: the page is read by
the instructor in a browser, and a submission is hostile input.
"""

from __future__ import annotations

import datetime
from html import escape

from .integrity import (
    IntegrityReport,
    LibraryMatch,
    PairResult,
    _segment_source,
    library_blocks,
    pair_blocks,
    shown_library,
    shown_pairs,
)

# one pastel per matching block; the same colour on both sides pairs the lines up
COLOURS = ["#ffe08a", "#a9e5bb", "#aad4f5", "#f7b7c8", "#d3c4f2", "#f9c99a", "#c5e8e3", "#e6e1a3"]
CONTEXT_LINES = 3  # unmatched lines shown around a match in a long source
LONG_SOURCE = 80  # sources longer than this fold their unmatched stretches

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 2.2em; } h4 { margin: 1.4em 0 .4em; }
.note { color: #555; max-width: 60em; }
table.list { border-collapse: collapse; margin: .6em 0; }
table.list th, table.list td { padding: 3px 10px; border-bottom: 1px solid #e5e5e5; text-align: left;
                               vertical-align: top; }
table.list th { background: #f4f4f6; }
tr.flag td { background: #fff1f0; } tr.flag td.score { color: #b3261e; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; height: .7em; background: #c9362c; vertical-align: middle; margin-right: .4em; }
.bar.low { background: #9aa0a6; }
table.sbs { width: 100%; border-collapse: collapse; table-layout: fixed; }
table.sbs > tbody > tr > td, table.sbs > thead > tr > th { width: 50%; vertical-align: top; padding: 0 .4em; }
table.sbs > thead > tr > th { text-align: left; font-weight: 600; }
table.code { border-collapse: collapse; width: 100%; font: 12.5px/1.35 ui-monospace, "SFMono-Regular", Menlo,
             Consolas, monospace; background: #fafafa; border: 1px solid #e3e3e3; }
table.code td { padding: 0 .5em; white-space: pre-wrap; word-break: break-all; }
table.code td.ln { color: #999; text-align: right; width: 3em; user-select: none; border-right: 1px solid #e3e3e3; }
table.code tr.fold td { color: #888; font-style: italic; background: #f0f0f0; }
.blocks { color: #444; margin: .3em 0 .5em; }
.swatch { display: inline-block; width: .9em; height: .9em; border: 1px solid #bbb; vertical-align: middle; }
.ok { color: #1e7f3a; } .bad { color: #b3261e; }
a { color: #0b57d0; }
"""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _bar(x: float, flagged: bool) -> str:
    return f'<span class="bar{"" if flagged else " low"}" style="width:{max(1, round(60 * x))}px"></span>'


def _code(source: str, marks: dict[int, int], first_number: int = 1) -> str:
    """A source as numbered lines; ``marks`` maps a line (1-based in ``source``) to its block's colour."""
    lines = source.split("\n")
    visible = set(range(1, len(lines) + 1))
    if len(lines) > LONG_SOURCE and marks:
        visible = {n for m in marks for n in range(m - CONTEXT_LINES, m + CONTEXT_LINES + 1)}
    rows, skipped = [], 0
    for number, line in enumerate(lines, 1):
        if number not in visible:
            skipped += 1
            continue
        if skipped:
            rows.append(f'<tr class="fold"><td class="ln"></td><td>⋯ {skipped} lines</td></tr>')
            skipped = 0
        colour = marks.get(number)
        style = f' style="background:{COLOURS[colour % len(COLOURS)]}"' if colour is not None else ""
        rows.append(f'<tr{style}><td class="ln">{number + first_number - 1}</td><td>{escape(line) or " "}</td></tr>')
    if skipped:
        rows.append(f'<tr class="fold"><td class="ln"></td><td>⋯ {skipped} lines</td></tr>')
    return '<table class="code">' + "".join(rows) + "</table>"


def _marks(blocks) -> tuple[dict[int, int], dict[int, int]]:
    left, right = {}, {}
    for colour, (lines_a, lines_b) in enumerate(blocks):
        for n in lines_a:
            left.setdefault(n, colour)
        for n in lines_b:
            right.setdefault(n, colour)
    return left, right


def _block_list(blocks, left_name: str, right_name: str, right_offset: int = 0) -> str:
    if not blocks:
        return ""
    items = [
        f'<span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span> '
        f"lines {a[0]}–{a[-1]} ↔ {b[0] + right_offset}–{b[-1] + right_offset}"
        for i, (a, b) in enumerate(blocks)
    ]
    return (
        f'<div class="blocks">matching lines ({escape(left_name)} ↔ {escape(right_name)}): '
        + "; ".join(items)
        + "</div>"
    )


def _side_by_side(left_title: str, left: str, right_title: str, right: str) -> str:
    return (
        f'<table class="sbs"><thead><tr><th>{left_title}</th><th>{right_title}</th></tr></thead>'
        f"<tbody><tr><td>{left}</td><td>{right}</td></tr></tbody></table>"
    )


def _pair_detail(report: IntegrityReport, rank: int, pair: PairResult) -> str:
    a, b = escape(pair.a), escape(pair.b)
    parts = [f'<h3 id="pair-{rank}">{rank}. {a} ↔ {b}: {_pct(pair.similarity)}</h3>']
    for q in report.questions:
        match = pair.questions.get(q)
        if match is None:
            continue
        blocks = pair_blocks(report, pair, q)
        left, right = _marks(blocks)
        share_a = match.covered_a / match.own_a if match.own_a else 0.0
        share_b = match.covered_b / match.own_b if match.own_b else 0.0
        parts.append(
            f"<h4>{escape(q)}: {_pct(match.similarity)} "
            f"<span class=\"note\">({_pct(share_a)} of {a}'s answer, {_pct(share_b)} of {b}'s)</span></h4>"
        )
        parts.append(_block_list(blocks, pair.a, pair.b))
        parts.append(
            _side_by_side(
                a,
                _code(report.answers[(pair.a, q)].fingerprints.code.source, left),
                b,
                _code(report.answers[(pair.b, q)].fingerprints.code.source, right),
            )
        )
    return "\n".join(parts)


def _library_detail(report: IntegrityReport, rank: int, match: LibraryMatch) -> str:
    segment = match.segment
    blocks = library_blocks(report, match)
    left, right = _marks(blocks)
    title = (
        f'<h3 id="lib-{rank}">{rank}. {escape(match.student)}, {escape(match.question)}: {_pct(match.share)} '
        f"of the answer from <code>{escape(segment.name)}</code></h3>"
    )
    source = report.library_answers[(match.student, match.question)].fingerprints.code.source
    return "\n".join(
        [
            title,
            _block_list(blocks, match.student, segment.where.split(":")[0], right_offset=segment.first_line - 1),
            _side_by_side(
                f"{escape(match.student)}: {escape(match.question)}",
                _code(source, left),
                f"{escape(segment.name)} ({escape(segment.where)})",
                _code(_segment_source(segment), right, first_number=segment.first_line),
            ),
        ]
    )


def _link(kind: str, rank: int, report: IntegrityReport) -> str:
    return f'<a href="#{kind}-{rank}">lines</a>' if rank <= report.config.max_detailed else ""


def _pairs_table(report: IntegrityReport, shown: list[PairResult]) -> str:
    threshold = report.config.threshold
    head = "".join(f'<th class="num">{escape(q)}</th>' for q in report.questions)
    rows = []
    for rank, pair in enumerate(shown, 1):
        flagged = pair.similarity >= threshold
        cells = "".join(
            f'<td class="num">{_pct(pair.questions[q].similarity) if q in pair.questions else ""}</td>'
            for q in report.questions
        )
        rows.append(
            f'<tr class="{"flag" if flagged else ""}"><td class="num">{rank}</td><td>{escape(pair.a)}</td>'
            f'<td>{escape(pair.b)}</td><td class="score">{_bar(pair.similarity, flagged)}'
            f"{_pct(pair.similarity)}</td>{cells}<td>{_link('pair', rank, report)}</td></tr>"
        )
    if not rows:
        return '<p class="ok">No two students share answer code beyond the given code and common passages.</p>'
    more = len(report.pairs) - len(shown)
    tail = f'<p class="note">{more} more pairs share some code (all in the CSV).</p>' if more > 0 else ""
    return (
        f'<table class="list"><tr><th class="num">#</th><th>student</th><th>student</th><th>all answers</th>'
        f"{head}<th></th></tr>{''.join(rows)}</table>{tail}"
    )


def _library_table(report: IntegrityReport, shown: list[LibraryMatch]) -> str:
    threshold = report.config.threshold
    rows = []
    for rank, m in enumerate(shown, 1):
        flagged = m.share >= threshold
        rows.append(
            f'<tr class="{"flag" if flagged else ""}"><td class="num">{rank}</td><td>{escape(m.student)}</td>'
            f'<td>{escape(m.question)}</td><td class="score">{_bar(m.share, flagged)}{_pct(m.share)}</td>'
            f"<td><code>{escape(m.segment.name)}</code></td><td>{escape(m.segment.where)}</td>"
            f"<td>{_link('lib', rank, report)}</td></tr>"
        )
    if not rows:
        body = '<p class="ok">No answer shares a passage with the library\'s source.</p>'
    else:
        body = (
            '<table class="list"><tr><th class="num">#</th><th>student</th><th>question</th>'
            "<th>share of the answer</th><th>closest library source</th><th>where</th><th></th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return body


def _roster(report: IntegrityReport) -> str:
    best_pair: dict[str, tuple[float, str]] = {}
    for pair in report.pairs:
        for me, other in ((pair.a, pair.b), (pair.b, pair.a)):
            if me not in best_pair or pair.similarity > best_pair[me][0]:
                best_pair[me] = (pair.similarity, other)
    best_library: dict[str, LibraryMatch] = {}
    for m in report.library:
        if m.student not in best_library or m.share > best_library[m.student].share:
            best_library[m.student] = m
    threshold = report.config.threshold
    rows = []
    for sub in report.submissions:
        status = "; ".join(escape(why) for why in sub.problems.values())
        status = f'<span class="bad">{status}</span>' if status else '<span class="ok">read</span>'
        if sub.truncated:
            status += (
                f" (answers cut at {report.config.max_answer_chars} characters: {escape(', '.join(sub.truncated))})"
            )
        pair = best_pair.get(sub.student)
        lib = best_library.get(sub.student)
        flagged = (pair and pair[0] >= threshold) or (lib and lib.share >= threshold)
        rows.append(
            f'<tr class="{"flag" if flagged else ""}"><td>{escape(sub.student)}</td><td>{status}</td>'
            f"<td>{escape(pair[1]) + ' ' + _pct(pair[0]) if pair else ''}</td>"
            f"<td>{escape(lib.question) + ' ' + _pct(lib.share) if lib else ''}</td></tr>"
        )
    return (
        '<table class="list"><tr><th>student</th><th>submission</th><th>most similar classmate</th>'
        "<th>largest share from the library</th></tr>" + "".join(rows) + "</table>"
    )


def render_html(report: IntegrityReport) -> str:
    c = report.config
    listed_pairs, listed_library = shown_pairs(report), shown_library(report)
    detailed = c.max_detailed
    unreadable = sum(1 for s in report.submissions if s.problems)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    method = (
        f"Answers are compared as MOSS does: Python tokens with names, numbers and strings normalized, "
        f"comments and docstrings dropped (renaming, reformatting and comments change nothing), "
        f"{c.k}-token passages winnowed in windows of {c.window}. Not counted: the code of the released "
        f"notebook (signatures, stubs, tests); between students, passages that more than "
        f"{report.common_cap} students share (a larger copy ring hides in them: the library table still "
        f"shows a copy of the library); against the library, what the instructor's own solution also "
        f"contains and idioms found in {c.library_idiom_files} or more of its files. A pair's "
        f"similarity is the share of both answers' remaining tokens that lie in matching passages "
        f"(matches shorter than {c.min_match_tokens} tokens in a question do not count). Flagged: "
        f"{_pct(c.threshold)} or more. Similar code is a reason to look, not a verdict: read the lines."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Integrity report: {escape(report.assignment)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Integrity report: {escape(report.assignment)}</h1>",
        f'<p class="note">{now}. {len(report.submissions)} students, {unreadable} with an unreadable or missing '
        f"notebook; {len(report.pairs)} pairs share some code, {len(report.flagged_pairs())} flagged; "
        f"{len(report.flagged_library())} answers flagged as near-copies of library source "
        f"({report.library_segments} functions and classes of gd_lib and torch.optim compared). "
        "This report changes no score.</p>",
        f'<p class="note">{escape(method)}</p>',
        "<h2>Pairs of students</h2>",
        _pairs_table(report, listed_pairs),
        "<h2>Answers near the library's source</h2>",
        _library_table(report, listed_library),
        "<h2>Every student</h2>",
        _roster(report),
    ]
    if listed_pairs:
        parts.append("<h2>Pairs, line by line</h2>")
        parts += [_pair_detail(report, rank, pair) for rank, pair in enumerate(listed_pairs[:detailed], 1)]
        if len(listed_pairs) > detailed:
            parts.append(
                f'<p class="note">The {len(listed_pairs) - detailed} further pairs of the table are not '
                "shown line by line here; the CSV names their similarity per question.</p>"
            )
    if listed_library:
        parts.append("<h2>Library matches, line by line</h2>")
        parts += [_library_detail(report, rank, m) for rank, m in enumerate(listed_library[:detailed], 1)]
        if len(listed_library) > detailed:
            parts.append(
                f'<p class="note">The {len(listed_library) - detailed} further matches of the table are '
                "not shown line by line here.</p>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
