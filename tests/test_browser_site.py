"""The course website in a real browser, as a student reads it, served from this machine only.

``make test-browser`` builds the site first (``make site QUICK=1``: the lectures in quick mode,
from the execution cache when nothing changed) and passes its folder and settings here
(``GD_SITE_DIR``, ``GD_SITE_HUB_URL``, ``GD_SITE_REPOSITORY``, ``GD_SITE_BRANCH``). Then:

1. the front page loads, with its schedule of every lecture;
2. every lecture page shows its figures (loaded images) and typeset mathematics (MathJax's output,
   no raw ``$$``, no "Math Processing Error"), and a static picture for every widget;
3. the search finds a term of a lecture;
4. every lecture's nbgitpuller link names the configured hub, repository and branch, and a path
   that is the lecture in the folder nbgitpuller clones into; followed on a Jupyter server that has
   nbgitpuller (with the repository cloned from this checkout), the link opens that lecture;
5. an assignment page shows the released notebook;

and no page asks for anything outside the site while it loads. Screenshots of every page go to
``out/browser-screenshots/site/``. The built site is also scanned for solution and hidden-test
code, as tests/test_site.py does for a site built without execution.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from browser_support import (
    ROOT,
    Screenshots,
    base_env,
    chromium,
    free_port,
    new_page,
    require_browser,
    server,
    unavailable,
    wait_for_kernel_idle,
)
from site_support import find_leaks, legitimate_sources, load_build_module, solution_lines

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SITE = Path(os.environ.get("GD_SITE_DIR", ROOT / "out" / "site"))
LECTURES = sorted(p.stem for p in (ROOT / "lectures").glob("[0-9]*.ipynb"))
ASSIGNMENT = sorted(str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "assignments").glob("*/*.ipynb"))[0]
SEARCH_TERM, SEARCH_HIT = "Rosenbrock", "lectures/01_sgd_adaptive.html"


def _settings() -> dict:
    """What make site was told: the test's expectations (not read from the site)."""
    build = load_build_module()
    return {
        "hub": os.environ.get("GD_SITE_HUB_URL", "http://127.0.0.1:8000").rstrip("/"),
        "repository": build.normalize_repository(
            os.environ.get("GD_SITE_REPOSITORY") or build.origin_of(ROOT) or build.PLACEHOLDER_REPOSITORY
        ),
        "branch": os.environ.get("GD_SITE_BRANCH", "main"),
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_browser()
    if not (SITE / "index.html").exists():
        unavailable(f"no site at {SITE}: build it with `make site QUICK=1` (make test-browser does)")
    work = tmp_path_factory.mktemp("site")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(SITE)]
    with server(cmd, env=dict(os.environ), cwd=work, log=work / "http.log", ready_url=f"{url}/index.html"):
        yield url


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with chromium() as chrome:
        yield chrome


def _page(browser, base: str, outside: list):
    page = new_page(browser)
    page.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith((base, "data:", "blob:", "about:")) else None
        ),
    )
    return page


def _wait_for_mathjax(page):
    """Until MathJax (on pages that load it) has typeset the page."""
    page.wait_for_function(
        "() => !document.querySelector('script[src*=\"mathjax\"]') || "
        "(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)"
    )
    page.evaluate("() => window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise.then(() => 1) : 1")


@pytest.fixture(scope="module")
def shots():
    return Screenshots("site")


def _full_page(shots, page, name: str):
    """A numbered screenshot of the whole page (lectures are long: every figure and formula in it)."""
    shots.count += 1
    page.screenshot(path=str(shots.folder / f"{shots.count:02d}-{name}.png"), full_page=True)


def test_front_page_loads_with_the_schedule(site, browser, shots):
    outside = []
    page = _page(browser, site, outside)
    page.goto(f"{site}/index.html")
    assert page.locator("h1").first.inner_text().startswith("Guided Descent")
    rows = page.locator("table.course-schedule tbody tr")
    assert rows.count() == len(LECTURES)
    for index, lecture in enumerate(LECTURES):
        assert rows.nth(index).locator(f'a[href="lectures/{lecture}.html"]').count() == 1
    assert page.locator("table.course-times tbody tr").count() == len(LECTURES) + 1
    _wait_for_mathjax(page)
    shots(page, "front-page")
    _full_page(shots, page, "front-page-full")
    assert outside == []


@pytest.mark.parametrize("lecture", LECTURES)
def test_lecture_page_shows_figures_and_typeset_mathematics(site, browser, shots, lecture):
    outside = []
    page = _page(browser, site, outside)
    page.goto(f"{site}/lectures/{lecture}.html")
    _wait_for_mathjax(page)
    main = page.locator("main")
    # mathematics: every math element typeset by MathJax, none in error, no TeX left on the page
    math = page.locator("main .math").count()
    untypeset = page.evaluate(
        "() => [...document.querySelectorAll('main .math')]"
        ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80))"
    )
    assert math > 0 and untypeset == [], untypeset
    assert page.locator("mjx-merror").count() == 0
    text = main.inner_text()
    assert "$$" not in text and "Math Processing Error" not in text
    # figures: as many loaded images as the executed notebook has image outputs
    source = json.loads((ROOT / "lectures" / f"{lecture}.ipynb").read_text())
    widgets = sum("interactive_figure(" in "".join(c["source"]) for c in source["cells"] if c["cell_type"] == "code")
    images = page.locator("main .cell_output img")
    assert images.count() >= 1
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed()
        images.nth(index).wait_for()
        assert images.nth(index).evaluate("img => img.complete && img.naturalWidth > 50"), index
    # every widget is drawn statically, with the figure it drew right after it
    statics = page.locator("main .gd-static-widget")
    assert statics.count() >= widgets
    for index in range(statics.count()):
        assert statics.nth(index).locator("input, select, progress, .gd-widget").count() >= 1
    assert "Traceback" not in text
    _full_page(shots, page, f"lecture-{lecture}")
    assert outside == [], outside


def test_search_finds_a_lecture(site, browser, shots):
    outside = []
    page = _page(browser, site, outside)
    page.goto(f"{site}/index.html")
    page.keyboard.press("Control+k")  # the theme's search shortcut, as a reader would
    field = page.locator("input[name='q']:visible").first
    field.fill(SEARCH_TERM)
    field.press("Enter")
    page.wait_for_url("**/search.html?q=*")
    hits = page.locator(f"#search-results a[href*='{SEARCH_HIT}']")
    hits.first.wait_for()
    assert hits.count() >= 1
    _full_page(shots, page, "search")
    assert outside == []


def test_assignment_page_shows_the_released_notebook(site, browser, shots):
    outside = []
    page = _page(browser, site, outside)
    page.goto(f"{site}/{ASSIGNMENT}.html")
    _wait_for_mathjax(page)
    assert "YOUR CODE HERE" in page.locator("main").inner_text()
    assert page.locator("mjx-merror").count() == 0
    assert page.locator("a[href*='git-pull']").count() == 0
    _full_page(shots, page, "assignment")
    assert outside == []


def test_every_lecture_links_into_the_hub_with_nbgitpuller(site, browser):
    expected = _settings()
    folder = expected["repository"].rsplit("/", 1)[-1]
    page = _page(browser, site, [])
    for lecture in LECTURES:
        page.goto(f"{site}/lectures/{lecture}.html")
        links = page.locator("a[href*='/git-pull?']")
        assert links.count() >= 2  # the banner's and the theme's launch button
        for index in range(links.count()):
            url = urlparse(links.nth(index).get_attribute("href"))
            assert f"{url.scheme}://{url.netloc}{url.path}" == f"{expected['hub']}/hub/user-redirect/git-pull"
            assert parse_qs(url.query) == {
                "repo": [expected["repository"]],
                "branch": [expected["branch"]],
                "urlpath": [f"lab/tree/{folder}/lectures/{lecture}.ipynb"],
            }


def test_the_nbgitpuller_link_opens_the_lecture_in_jupyterlab(site, browser, shots, tmp_path):
    """Follow a lecture's link on a student's Jupyter server (the hub's student configuration) with
    nbgitpuller, as the hub's user-redirect would, with the repository served from a clone of this
    checkout under the name the link gives it."""
    try:
        import nbgitpuller  # noqa: F401 - the server extension the link calls
    except ImportError:
        unavailable("nbgitpuller is not installed (the hub extra: make test-browser installs it)")
    expected = _settings()
    lecture = LECTURES[0]
    page = _page(browser, site, [])
    page.goto(f"{site}/lectures/{lecture}.html")
    query = parse_qs(urlparse(page.locator("a.gd-hub-link").get_attribute("href")).query)
    folder = expected["repository"].rsplit("/", 1)[-1]
    remote = tmp_path / "remote" / folder
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(remote)], check=True)
    subprocess.run(["git", "-C", str(remote), "checkout", "-q", "-B", query["branch"][0]], check=True)

    home = tmp_path / "home"
    home.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = base_env(home)
    # a student's server on the course hub: its Jupyter configuration and kernels (course/hub/jupyterhub_config.py)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_PATH=str(ROOT / "course" / "hub" / "jupyter" / "student"),
        JUPYTER_PATH=str(ROOT / "course" / "hub" / "jupyter" / "share"),
        GD_NBGRADER_EXCHANGE=str(tmp_path / "exchange"),
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
        "--LabApp.news_url=None",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    lab = f"http://127.0.0.1:{port}"
    with server(cmd, env=env, cwd=home, log=tmp_path / "lab.log", ready_url=f"{lab}/api/status?token={token}"):
        # the hub's /hub/user-redirect/ is the user's server: what follows is nbgitpuller's
        link = f"{lab}/git-pull?" + urlencode(
            {"repo": str(remote), "urlpath": query["urlpath"][0], "branch": query["branch"][0], "token": token}
        )
        page.goto(link)
        tab = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").first
        tab.wait_for(timeout=300_000)
        wait_for_kernel_idle(page)
        assert page.locator(".lm-TabBar-tabLabel", has_text=f"{lecture}.ipynb").count() >= 1
        shots(page, "nbgitpuller-opened-the-lecture")
    pulled = home / folder / "lectures" / f"{lecture}.ipynb"
    assert pulled.read_bytes() == (remote / "lectures" / f"{lecture}.ipynb").read_bytes()


def test_the_built_site_has_no_solution_code_or_hidden_tests():
    if not (SITE / "index.html").exists():
        unavailable(f"no site at {SITE}: build it with `make site QUICK=1` (make test-browser does)")
    leaks = find_leaks(SITE, set().union(*solution_lines().values()), legitimate_sources())
    assert leaks == [], leaks[:20]
