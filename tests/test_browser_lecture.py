"""A lecturer's demo in a real browser: lecture 1 opens in JupyterLab, runs
all cells, shows its figures, and moving a widget slider redraws the plot.

Headless nbclient runs (test_lecture_notebooks.py) only see the static
figure that ``plotting.interactive_figure`` prints; here the ipywidgets
render for real, the slider is moved with the keyboard as a person would,
and the figure under it must change.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time

import pytest

from browser_support import (
    ROOT,
    Screenshots,
    base_env,
    chromium,
    free_port,
    lab_menu,
    new_page,
    require_browser,
    server,
    wait_for_kernel_idle,
    wait_until_all_code_cells_ran,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LECTURE = "01_sgd_adaptive.ipynb"
HUB_SHARE = ROOT / "course" / "hub" / "jupyter" / "share"  # the course's kernels, as on the hub


def _user_settings(folder):
    """JupyterLab settings of the test user: every cell attached to the page (screenshots show
    the whole notebook), no news pop-up over the figures."""
    notebook = folder / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    apputils = folder / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()
    work = tmp_path_factory.mktemp("lab")
    (work / "home").mkdir()
    (work / "notebooks").mkdir()
    shutil.copy(ROOT / "lectures" / LECTURE, work / "notebooks" / LECTURE)
    _user_settings(work / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = base_env(work / "home")
    env.update(
        JUPYTER_PATH=str(HUB_SHARE),
        JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
        JUPYTER_CONFIG_DIR=str(work / "home" / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
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
        f"--ServerApp.root_dir={work / 'notebooks'}",
        "--LabApp.news_url=None",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    url = f"http://127.0.0.1:{port}"
    with server(
        cmd, env=env, cwd=work / "notebooks", log=work / "lab.log", ready_url=f"{url}/api/status?token={token}"
    ):
        yield {"url": url, "token": token, "notebooks": work / "notebooks", "log": work / "lab.log"}


def test_lecture_runs_in_jupyterlab_and_its_slider_redraws_the_figure(lab):
    shot = Screenshots("lecture")
    timings = {}
    with chromium() as browser:
        page = new_page(browser)
        start = time.perf_counter()
        page.goto(f"{lab['url']}/lab/tree/{LECTURE}?token={lab['token']}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        wait_for_kernel_idle(page)
        # the course's default kernel (the hub's "GPU" one; the CPU here)
        assert page.locator(".jp-Toolbar-kernelName").first.inner_text().strip() == "Python 3 (GPU)"
        shot(page, "lecture-opened")
        timings["open"] = time.perf_counter() - start

        start = time.perf_counter()
        lab_menu(page, "Run", "Run All Cells")
        wait_until_all_code_cells_ran(page, timeout_ms=600_000)
        wait_for_kernel_idle(page)
        timings["run_all"] = time.perf_counter() - start
        shot(page, "all-cells-ran")

        # no cell raised (JupyterLab shows an exception as a stderr output with its traceback)
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Traceback"
        )
        assert errors.count() == 0, errors.first.inner_text()
        # every figure the lecture draws is on the page as a loaded image
        images = page.locator(".jp-OutputArea .jp-RenderedImage img")
        source = json.loads((ROOT / "lectures" / LECTURE).read_text())
        plotting_cells = sum(
            1
            for cell in source["cells"]
            if cell["cell_type"] == "code"
            and any(word in "".join(cell["source"]) for word in ("plt.show()", "interactive_figure("))
        )
        assert images.count() >= plotting_cells >= 3
        for index in range(images.count()):
            assert images.nth(index).evaluate("img => img.complete && img.naturalWidth > 100")

        # the Rosenbrock widget: four sliders above the figure they control
        cell = page.locator(".jp-CodeCell", has=page.locator(".widget-slider")).first
        sliders = cell.locator(".widget-slider")
        assert sliders.count() == 4
        readout = cell.locator(".widget-readout").first
        figure = cell.locator(".jp-RenderedImage img").first
        cell.scroll_into_view_if_needed()
        before_value, before_src = readout.inner_text(), figure.get_attribute("src")
        shot(page, "slider-before")

        start = time.perf_counter()
        sliders.first.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")  # one step up of the learning-rate slider
        page.wait_for_function(
            """([before]) => {
                const cell = [...document.querySelectorAll('.jp-CodeCell')]
                    .find(c => c.querySelector('.widget-slider'));
                const img = cell && cell.querySelector('.jp-RenderedImage img');
                return img && img.getAttribute('src') !== before;
            }""",
            arg=[before_src],
            timeout=120_000,
            polling=250,
        )
        wait_for_kernel_idle(page)
        timings["slider_redraw"] = time.perf_counter() - start
        after_value = readout.inner_text()
        assert before_value == "0.00300" and after_value != before_value
        # the log slider moves on its grid of exponents (min -4, step 0.1): 10^-2.52 -> 10^-2.4
        assert float(after_value) == pytest.approx(10**-2.4, rel=1e-2)
        cell.scroll_into_view_if_needed()
        shot(page, "slider-after")
    print("\nlecture scenario timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"screenshots: {shot.folder}")
