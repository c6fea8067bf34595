"""The course website (``make site``, ``site/``) built from this repository, without executing the
lectures (their execution is tests/test_site_cache.py's and the browser test's business):

- no page holds a line of the instructors' solution or hidden-test regions (``solutions/``);
- no page fetches a script, a style sheet, a font or an image from outside the site;
- the front page has what a student looks for, and its schedule lists every lecture and assignment;
- every lecture page links into the hub with nbgitpuller (the right repository, branch and path)
  and to its source notebook; assignment pages do not pull from git (students fetch them with nbgrader);
- the instructor guide is the README's grading, hub and website sections.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from site_support import (
    ROOT,
    build_site,
    external_references,
    find_leaks,
    legitimate_sources,
    load_build_module,
    normalize,
    page_text,
    solution_lines,
)

HUB, REPOSITORY, BRANCH = "https://hub.example.org", "https://github.com/example-org/guided-descent", "spring-2026"
LECTURES = sorted(p.stem for p in (ROOT / "lectures").glob("[0-9]*.ipynb"))
ASSIGNMENTS = sorted(str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "assignments").glob("*/*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("site")
    build_site(
        ROOT,
        work / "site",
        work / "build",
        "--execute",
        "off",
        "--mode",
        "quick",
        "--hub-url",
        HUB,
        "--repository",
        REPOSITORY + ".git",
        "--branch",
        BRANCH,
    )
    return work / "site"


def _html(site: Path, page: str) -> str:
    return (site / f"{page}.html").read_text(encoding="utf-8")


def _hrefs(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


# --------------------------------------------------------------------------- no solutions, no internet
@pytest.mark.slow
def test_no_page_contains_solution_code_or_hidden_tests(site):
    regions = solution_lines()
    assert len(regions) == len(list((ROOT / "solutions").glob("*/*.ipynb"))) >= 1
    lines = set().union(*regions.values())
    assert len(lines) > 50, "the instructors' notebooks should have solution and hidden-test regions to look for"
    leaks = find_leaks(site, lines, legitimate_sources())
    assert leaks == [], "solution or hidden-test code on the site:\n" + "\n".join(
        f"{f}: {line}" for f, line in leaks[:20]
    )


def test_the_leak_scan_finds_a_planted_solution_line(tmp_path):
    """The scan above can fail: a page with one solution line (highlighted as Sphinx does) is caught."""
    regions = solution_lines()
    line = max(set().union(*regions.values()), key=len).strip()
    highlighted = "".join(f'<span class="n">{word}</span> ' for word in line.split())
    (tmp_path / "page.html").write_text(f"<html><body><pre>{highlighted}</pre></body></html>")
    assert find_leaks(tmp_path, {line}) == [("page.html", re.sub(r"\s+", " ", line))]
    (tmp_path / "page.html").write_text("<html><body><p>nothing here</p></body></html>")
    assert find_leaks(tmp_path, {line}) == []


@pytest.mark.slow
def test_no_page_loads_anything_from_outside_the_site(site):
    found = external_references(site)
    assert found == [], "pages that fetch from the internet:\n" + "\n".join(f"{f}: {u}" for f, u in found[:20])
    # MathJax is served from the site itself, and the lectures' pages load it
    assert (site / "_static" / "mathjax" / "tex-chtml-full.js").is_file()
    assert "_static/mathjax/tex-chtml-full.js" in _html(site, f"lectures/{LECTURES[0]}")


def test_the_external_reference_check_sees_a_cdn(tmp_path):
    (tmp_path / "a.html").write_text(
        '<link rel="stylesheet" href="https://cdn.example.org/x.css">'
        '<script src="//cdn.example.org/x.js"></script><script src="_static/ok.js"></script>'
        '<a href="https://example.org/a-link-is-fine">x</a>'
    )
    (tmp_path / "b.css").write_text(
        "@font-face { src: url(https://fonts.example.org/f.woff2) } .x { background: url(img.png) }"
    )
    assert sorted(external_references(tmp_path)) == [
        ("a.html", "//cdn.example.org/x.js"),
        ("a.html", "https://cdn.example.org/x.css"),
        ("b.css", "https://fonts.example.org/f.woff2"),
    ]


# --------------------------------------------------------------------------- the front page
@pytest.mark.slow
def test_front_page_tells_a_student_what_they_need(site):
    html = _html(site, "index")
    for heading in (
        "Prerequisites",
        "What you will be able to do",
        "Schedule",
        "How to run a lecture",
        "Honour code for the assignments",
    ):
        assert f">{heading}<" in html, heading
    text = normalize(page_text(site / "index.html"))
    for words in (
        "make lectures QUICK=1",
        "GD_QUICK=1",
        "Python 3 (CPU, quick mode)",
        "Old Optimizer, New Norm",
        "no gd_lib.optim inside your answers",
    ):
        assert words in text, words


@pytest.mark.slow
def test_schedule_lists_every_lecture_and_assignment_in_order(site):
    html = _html(site, "index")
    table = html[html.index("course-schedule") :]
    table = table[: table.index("</table>")]
    links = [h for h in _hrefs(table) if h.endswith(".html")]
    lecture_links = [h for h in links if h.startswith("lectures/")]
    assert lecture_links == [f"lectures/{name}.html" for name in LECTURES]
    # every assignment appears, in the table or under it
    schedule = html[html.index("course-schedule") : html.index('id="how-to-run-a-lecture"')]
    for assignment in ASSIGNMENTS:
        assert f'href="{assignment}.html"' in schedule, assignment
    # the readings of lecture 2 come from schedule.yaml
    assert "Proposition 1" in table


@pytest.mark.slow
def test_navigation_reaches_every_page(site):
    nav = _html(site, "index")
    for page in [*(f"lectures/{n}" for n in LECTURES), *ASSIGNMENTS, "instructors/grading", "instructors/hub"]:
        assert f'href="{page}.html"' in nav, page
        assert (site / f"{page}.html").is_file()
    assert (site / "search.html").is_file() and (site / "searchindex.js").is_file()


# --------------------------------------------------------------------------- lectures and assignments
@pytest.mark.slow
@pytest.mark.parametrize("lecture", LECTURES)
def test_lecture_page_opens_on_the_hub_with_nbgitpuller_and_links_its_source(site, lecture):
    html = _html(site, f"lectures/{lecture}")
    pulls = [h for h in _hrefs(html) if "/git-pull?" in h]
    assert pulls, "no nbgitpuller link"
    for link in pulls:  # the banner's link and the theme's launch button
        url = urlparse(link)
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{HUB}/hub/user-redirect/git-pull"
        query = parse_qs(url.query)
        # nbgitpuller clones into the repository's last path part without '.git'
        assert query == {
            "repo": [REPOSITORY],
            "branch": [BRANCH],
            "urlpath": [f"lab/tree/guided-descent/lectures/{lecture}.ipynb"],
        }
    # the source notebook, downloadable from the site, is the repository's
    source = site / "_sources" / "lectures" / f"{lecture}.ipynb"
    assert source.read_bytes() == (ROOT / "lectures" / f"{lecture}.ipynb").read_bytes()
    assert "../_sources/lectures/" + lecture + ".ipynb" in _hrefs(html)
    assert f"{REPOSITORY}/blob/{BRANCH}/lectures/{lecture}.ipynb" in _hrefs(html)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_assignment_page_is_the_released_notebook_and_is_fetched_with_nbgrader(site, assignment):
    html = _html(site, assignment)
    assert not [h for h in _hrefs(html) if "git-pull" in h]
    assert "Assignment List" in html
    released = json.loads((ROOT / f"{assignment}.ipynb").read_text())
    title = "".join(released["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()
    assert title.split("—")[0].strip() in html
    assert "YOUR CODE HERE" in html  # the answer cells as students get them


@pytest.mark.slow
def test_instructor_guide_is_the_readme_sections(site):
    readme = (ROOT / "README.md").read_text()
    for page, heading in load_build_module().INSTRUCTOR_SECTIONS:
        html = _html(site, f"instructors/{page}")
        assert f"{heading}<" in html
        section = readme[readme.index(f"## {heading}") :]
        section = section[: section.find("\n## ", 3)]
        # the section's plain prose lines (no markup or quotes, which the page renders differently)
        prose = [line for line in section.splitlines() if re.fullmatch(r"[A-Za-z][^`*\[\]_|<>'\"]{40,}", line)]
        text = normalize(page_text(site / "instructors" / f"{page}.html"))
        assert prose and all(normalize(line) in text for line in prose), page


# --------------------------------------------------------------------------- build.py's helpers
def test_repository_urls_are_normalized_for_nbgitpuller():
    normalize = load_build_module().normalize_repository
    assert normalize("https://github.com/org/guided-descent.git/") == "https://github.com/org/guided-descent"
    assert normalize("git@github.com:org/guided-descent.git") == "https://github.com/org/guided-descent"
    assert normalize("https://gitlab.example.edu/course/gd") == "https://gitlab.example.edu/course/gd"
    assert normalize("/srv/git/guided-descent.git") == "file:///srv/git/guided-descent"


def test_auto_mode_is_full_on_a_gpu_and_quick_without(monkeypatch):
    import torch

    build = load_build_module()
    assert build.resolve_mode("quick") == "quick" and build.resolve_mode("full") == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build.resolve_mode("auto") == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build.resolve_mode("auto") == "quick"
    # the kernels get the mode, and draw inline whatever backend the caller had
    full = build.kernel_environment("full", {"GD_QUICK": "1", "MPLBACKEND": "Agg", "PATH": "/bin"})
    assert full["GD_QUICK"] == "0" and "MPLBACKEND" not in full and full["PATH"].endswith("/bin")
    assert build.kernel_environment("quick", {})["GD_QUICK"] == "1"


def test_readme_section_moves_headings_up_and_links_to_the_repository():
    build = load_build_module()
    readme = (
        "# Title\n\n## Grading things\n\nSee [the doc](docs/x.md), [up](#layout) and [web](https://a.b/c).\n\n"
        "```bash\n## not a heading\n```\n\n### Sub\n\ntext\n\n## Next\n\nother\n"
    )
    text = build.readme_section(readme, "Grading", lambda path: f"https://r/blob/main/{path}")
    assert text.splitlines()[0] == "# Grading things"
    assert "## Sub" in text and "## not a heading" in text and "other" not in text
    assert "[the doc](https://r/blob/main/docs/x.md)" in text
    assert "[up](https://r/blob/main/README.md#layout)" in text and "[web](https://a.b/c)" in text
    with pytest.raises(build.SiteError, match="no section '## Missing'"):
        build.readme_section(readme, "Missing", lambda path: path)


def test_staging_refuses_an_instructors_notebook_in_assignments(tmp_path):
    build = load_build_module()
    course = tmp_path / "course"
    (course / "lectures").mkdir(parents=True)
    (course / "lectures" / "01_x.ipynb").write_text("{}")
    (course / "assignments" / "01_a").mkdir(parents=True)
    (course / "assignments" / "01_a" / "a.ipynb").write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "source": "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
                    }
                ]
            }
        )
    )
    (course / "README.md").write_text("\n".join(f"## {h}\ntext\n" for _, h in build.INSTRUCTOR_SECTIONS))
    with pytest.raises(build.SiteError, match="BEGIN SOLUTION"):
        build.stage(course, tmp_path / "src", lambda path: path)


def test_the_hub_image_and_the_hub_extra_carry_nbgitpuller():
    """The lectures' links need nbgitpuller on the hub: in the Kubernetes image, and in the hub extra
    that make hub / make hub-trial install (the browser test runs it for real)."""
    recipe = (ROOT / "course" / "hub" / "k8s" / "Dockerfile").read_text()
    assert re.search(
        r"^RUN .*mamba env update[^\n]*\\\n\s+&& mamba install [^\n]*\bnbgitpuller\b[^\n]*\bgit\b", recipe, re.MULTILINE
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    hub_extra = pyproject[pyproject.index("\nhub = [") :]
    assert '"nbgitpuller' in hub_extra[: hub_extra.index("]")]
