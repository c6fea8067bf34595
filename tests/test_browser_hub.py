"""The course on its JupyterHub, in a real browser, from release to feedback.

The hub is ``course/hub/jupyterhub_config.py`` as ``make hub`` starts it,
with the trial settings (shared passwords, every server under this account)
and a scratch copy of the course, so the repository's ``course/`` is never
written. Then, as people would:

1. the instructor logs in, opens the formgrader, generates and releases
   assignment 1;
2. a student logs in, fetches it from the assignment list, fills in one
   solution (``sgd_step``), runs its public tests, saves and submits;
3. the instructor collects, autogrades in the formgrader (nbgrader's
   autograde with the course's sandboxed ``autograder``) and sees the
   student's score, then generates and releases the feedback;
4. the student fetches the feedback and opens it.

The score must be the points of the ``sgd_step`` tests, read from the
instructor's notebook: the filled-in part passes, the blank ones fail.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from pathlib import Path

import pytest

from browser_support import (
    ROOT,
    UI_TIMEOUT_MS,
    Screenshots,
    base_env,
    chromium,
    free_port,
    lab_menu,
    new_page,
    require_browser,
    server,
    unavailable,
    wait_for_kernel_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ASSIGNMENT, NOTEBOOK = "01_first_order", "first_order"
SOLVED = "sgd_step"  # the one solution the student fills in
INSTRUCTOR, STUDENT = "instructor", "alice"
CHP = ROOT / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"
# grading one notebook in the sandbox (the instructor's reference run, then the student's) on a busy 2-core machine
AUTOGRADE_TIMEOUT_MS = 600_000


def _solution_and_points():
    """The instructor's code of SOLVED, the points of its tests, and the assignment's total points."""
    source = json.loads((ROOT / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_text())
    code, points, total = None, 0.0, 0.0
    for cell in source["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade_id") == SOLVED:
            code = "".join(
                line
                for line in "".join(cell["source"]).splitlines(keepends=True)
                if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
            )
        if meta.get("grade"):
            total += meta["points"]
            if meta["grade_id"].startswith(f"test_{SOLVED}"):
                points += meta["points"]
    assert code is not None and points > 0
    return code.rstrip() + "\n", points, total


def _lab_settings(home: Path):
    """JupyterLab settings of a test user: every cell attached to the page, no news pop-up."""
    settings = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"})
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    require_browser()
    if not CHP.exists() and shutil.which("configurable-http-proxy") is None:
        unavailable("configurable-http-proxy is not installed (make test-browser installs it into .hub/)")
    work = tmp_path_factory.mktemp("hub")
    # a scratch course, as autograder/demo.py makes one: the sources of one assignment and the config
    course = work / "course-root"
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    (course / "course").mkdir()
    shutil.copy(ROOT / "course" / "nbgrader_config.py", course / "course" / "nbgrader_config.py")
    for user in (INSTRUCTOR, STUDENT):
        _lab_settings(work / "homes" / user)
    ports = [free_port() for _ in range(3)]
    passwords = {STUDENT: secrets.token_hex(8), INSTRUCTOR: secrets.token_hex(20)}  # the hub asks 8 and 32 characters
    env = base_env(work / "homes" / "hub")
    env.update(
        GD_HUB_STATE=str(work / "state"),
        GD_HUB_AUTH="shared-password",
        GD_HUB_SPAWNER="simple",
        GD_HUB_PASSWORD=passwords[STUDENT],
        GD_HUB_ADMIN_PASSWORD=passwords[INSTRUCTOR],
        GD_HUB_HOMES=str(work / "homes"),
        GD_HUB_INSTRUCTORS=INSTRUCTOR,
        GD_HUB_STUDENTS=STUDENT,
        GD_HUB_PORT=str(ports[0]),
        GD_HUB_API_PORT=str(ports[1]),
        GD_HUB_INTERNAL_PORT=str(ports[2]),
        GD_COURSE_ROOT=str(course),
        GD_NBGRADER_EXCHANGE=str(work / "exchange"),
    )
    url = f"http://127.0.0.1:{ports[0]}"
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "course" / "hub" / "jupyterhub_config.py")]
    (work / "state").mkdir()
    with server(cmd, env=env, cwd=work / "state", log=work / "hub.log", ready_url=f"{url}/hub/login"):
        yield {
            "url": url,
            "passwords": passwords,
            "course": course,
            "homes": work / "homes",
            "exchange": work / "exchange",
            "log": work / "hub.log",
        }


def _login(page, hub, user):
    page.goto(f"{hub['url']}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub["passwords"][user])
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=300_000)  # the hub spawns the user's server
    page.locator(".jp-LabShell").wait_for()
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").first.wait_for()


def _formgrader(page):
    return page.frame_locator("iframe[src*='formgrader']").first


def _close_success_modal(frame, timeout_ms=UI_TIMEOUT_MS):
    """Formgrader reports each action in a modal: it must say Success (else fail with its log)."""
    dialog = frame.locator(".modal-dialog")
    dialog.locator(".modal-title").wait_for(timeout=timeout_ms)
    title, text = dialog.locator(".modal-title").inner_text().strip(), dialog.inner_text()
    assert title == "Success", text[-3000:]
    dialog.locator(".modal-footer button").first.click()
    dialog.wait_for(state="detached")
    return text


def _verdicts(hub) -> str:
    """What the autograder wrote under the tests of SOLVED in the autograded notebook."""
    lines = []
    for path in (hub["course"] / "course" / "autograded" / STUDENT / ASSIGNMENT).glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id", "")
            if grade_id.startswith(f"test_{SOLVED}"):
                for output in cell.get("outputs", []):
                    lines.append(f"{grade_id}: {output.get('text') or output.get('evalue')}"[:600])
    return "\n".join(lines)


def _open(frame, link):
    """Follow a formgrader link to its next page (and not act on the page being left)."""
    frame.locator("body").evaluate("body => body.setAttribute('data-left', '')")
    link.click()
    frame.locator("body:not([data-left])").wait_for()


def _wait_for_row(frame, text):
    row = frame.locator("#main-table tr", has_text=text).first
    row.wait_for()
    return row


def test_release_submit_autograde_feedback_on_the_hub(hub):
    solution, points, total = _solution_and_points()
    shot = Screenshots("hub")
    timings = {}
    with chromium() as browser:
        try:
            _scenario(browser, hub, shot, timings, solution, points, total)
        except BaseException:
            # the state of every page at the failure, next to the steps' screenshots
            for index, page in enumerate(p for context in browser.contexts for p in context.pages):
                shot(page, f"FAILED-page{index}")
            raise
    print("\nhub scenario timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"screenshots: {shot.folder}")


def _scenario(browser, hub, shot, timings, solution, points, total):
    # --- 1. the instructor releases assignment 1 from the formgrader ---
    start = time.perf_counter()
    instructor = new_page(browser)
    _login(instructor, hub, INSTRUCTOR)
    shot(instructor, "instructor-logged-in")
    lab_menu(instructor, "Nbgrader", "Formgrader")
    grader = _formgrader(instructor)
    row = _wait_for_row(grader, ASSIGNMENT)
    shot(instructor, "formgrader")
    row.locator("td.assign a").click()  # generate the student version (solutions/ -> assignments/)
    _close_success_modal(grader)
    row.locator("td.release a").click()
    _close_success_modal(grader)
    assert (hub["exchange"] / "guided-descent" / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").exists()
    shot(instructor, "released")
    timings["release"] = time.perf_counter() - start

    # --- 2. the student fetches, solves one part, runs its public tests, submits ---
    start = time.perf_counter()
    student = new_page(browser)
    _login(student, hub, STUDENT)
    # students get the assignment list, not the formgrader
    student.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").first.click()
    assert student.locator(".lm-Menu-itemLabel", has_text="Formgrader").count() == 0
    student.keyboard.press("Escape")
    lab_menu(student, "Nbgrader", "Assignment List")
    released = student.locator("#released_assignments_list .list_item", has_text=ASSIGNMENT).first
    released.wait_for()
    shot(student, "assignment-list")
    released.locator("button", has_text="Fetch").click()
    fetched = student.locator("#fetched_assignments_list .list_item", has_text=ASSIGNMENT).first
    fetched.wait_for()
    fetched.locator("a.assignment-notebooks-link").click()
    student.locator(f"#nbgrader-guided-descent-{ASSIGNMENT} a", has_text=NOTEBOOK).first.click()
    cells = student.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    cells.first.wait_for()
    wait_for_kernel_idle(student)
    shot(student, "assignment-opened")

    texts = [cells.nth(i).locator(".jp-InputArea-editor, .jp-MarkdownOutput").first.inner_text() for i in range(5)]
    setup_index = next(i for i, t in enumerate(texts) if "from autograder.checks import check" in t)
    answer_index = next(i for i, t in enumerate(texts) if f"def {SOLVED}(" in t)
    test_index = answer_index + 1
    assert "Public tests" in texts[test_index]
    answer = cells.nth(answer_index).locator(".cm-content")
    answer.click()
    student.keyboard.press("Control+a")
    student.keyboard.insert_text(solution)  # as one paste: no auto-indent or bracket closing
    assert "raise NotImplementedError" not in answer.inner_text()
    cells.nth(setup_index).locator(".cm-content").click()
    for _ in range(test_index - setup_index + 1):  # run from the setup cell down to the public tests
        student.keyboard.press("Shift+Enter")
    output = cells.nth(test_index).locator(".jp-OutputArea-output").first
    output.wait_for(timeout=300_000)
    wait_for_kernel_idle(student, timeout_ms=300_000)
    assert "public tests passed" in cells.nth(test_index).locator(".jp-OutputArea").inner_text()
    cells.nth(test_index).scroll_into_view_if_needed()
    shot(student, "public-tests-passed")
    student.keyboard.press("Escape")
    student.keyboard.press("Control+s")
    student.locator(".lm-TabBar-tab.jp-mod-dirty").first.wait_for(state="detached")

    student.locator(".lm-TabBar-tab", has_text="Assignments").first.click()
    fetched.locator("button", has_text="Submit").click()
    submitted = student.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
    submitted.wait_for()
    inbound = list((hub["exchange"] / "guided-descent" / "inbound").glob(f"{STUDENT}+{ASSIGNMENT}+*"))
    assert len(inbound) == 1, inbound
    shot(student, "submitted")
    timings["fetch_solve_submit"] = time.perf_counter() - start

    # --- 3. the instructor collects, autogrades and sees the score ---
    start = time.perf_counter()
    instructor.bring_to_front()
    _open(grader, grader.locator("a", has_text="Manage Assignments").first)
    row = _wait_for_row(grader, ASSIGNMENT)
    row.locator("td.collect a").click()
    _close_success_modal(grader)
    assert (hub["course"] / "course" / "submitted" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.ipynb").exists()
    _open(grader, grader.locator("a", has_text="Manage Assignments").first)
    row = _wait_for_row(grader, ASSIGNMENT)
    _open(grader, row.locator("td.num-submissions a"))
    submission = _wait_for_row(grader, STUDENT)
    shot(instructor, "collected")
    autograde_start = time.perf_counter()
    submission.locator("td.autograde a").click()
    log = _close_success_modal(grader, timeout_ms=AUTOGRADE_TIMEOUT_MS)
    timings["autograde"] = time.perf_counter() - autograde_start
    # the course's autograder decided the tests (nbgrader's own Execute step is replaced), in the full
    # bubblewrap sandbox: the formgrader grades as the server's account, with the same isolation as make autograde
    assert "ApplySandboxedResults" in log, log[-3000:]
    result = json.loads(
        (hub["course"] / "course" / ".autograder" / "results" / ASSIGNMENT / STUDENT / f"{NOTEBOOK}.json").read_text()
    )
    assert result["isolation"] == "bwrap" and not result["failed"], result
    score = f"{points:g} / {total:g}"
    grader.locator("#main-table tr td.score", has_text=" / ").first.wait_for()  # the row, re-read from the gradebook
    shot(instructor, "autograded-score")
    shown = grader.locator("#main-table tr", has_text=STUDENT).first.locator("td.score").inner_text().strip()
    assert shown == score, f"formgrader shows {shown}, expected {score}; the grader said:\n{_verdicts(hub)}"

    _open(grader, grader.locator("a", has_text="Manage Students").first)
    student_row = _wait_for_row(grader, STUDENT)
    assert f"{points:g} / {total:g}" in student_row.inner_text()
    shot(instructor, "gradebook")

    _open(grader, grader.locator("a", has_text="Manage Assignments").first)
    row = _wait_for_row(grader, ASSIGNMENT)
    row.locator("td.generate-feedback a").click()
    _close_success_modal(grader)
    row.locator("td.release-feedback a").click()
    _close_success_modal(grader)
    shot(instructor, "feedback-released")
    timings["collect_grade_feedback"] = time.perf_counter() - start

    # --- 4. the student fetches the feedback ---
    start = time.perf_counter()
    student.bring_to_front()
    student.locator("#refresh_assignments_list").click()
    submitted = student.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
    submitted.locator("button", has_text="Fetch Feedback").click()
    feedback_dir = hub["homes"] / STUDENT / ASSIGNMENT / "feedback"
    deadline = time.monotonic() + 120
    while not list(feedback_dir.glob(f"*/{NOTEBOOK}.html")) and time.monotonic() < deadline:
        time.sleep(0.5)
    pages = list(feedback_dir.glob(f"*/{NOTEBOOK}.html"))
    assert len(pages) == 1, f"no feedback in {feedback_dir}"
    html = pages[0].read_text()
    assert f"{points:.1f} / {total:.1f}" in html  # the total on nbgrader's feedback page
    shot(student, "feedback-fetched")
    relative = pages[0].relative_to(hub["homes"] / STUDENT).as_posix()
    feedback = student.context.new_page()
    feedback.goto(f"{hub['url']}/user/{STUDENT}/files/{relative}")
    feedback.get_by_text(NOTEBOOK).first.wait_for()
    shot(feedback, "feedback-page")
    timings["fetch_feedback"] = time.perf_counter() - start
