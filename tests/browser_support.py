"""What the browser tests (``tests/test_browser_*.py``, marker ``browser``) share.

A real headless Chromium (Debian's, ``/usr/bin/chromium``; never a browser
build of Playwright's own) is driven by Playwright's Python package. Servers
(JupyterLab, JupyterHub) run on loopback ports picked free, in scratch
folders, and stop at the end of their fixture. Every step leaves a
screenshot in ``out/browser-screenshots/<scenario>/`` (``GD_BROWSER_SCREENSHOTS``
moves it), which ``make test-browser`` prints.

Without Chromium or Playwright the tests are skipped, unless
``GD_BROWSER_REQUIRED=1`` (``make test-browser`` sets it): then they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("GD_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet on the network: without the background-networking flags Chromium
# keeps opening outbound connections (updates, sync, field trials) that a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(os.environ.get("GD_BROWSER_SCREENSHOTS", ROOT / "out" / "browser-screenshots")).resolve()
# A 2-core machine shared with other work: generous limits for what a person would wait for.
UI_TIMEOUT_MS = 120_000


def browser_available() -> str | None:
    """None when the browser tests can run here, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (make test-browser installs it)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (make test-browser installs Debian's chromium)"
    return None


def unavailable(why: str):
    """Skip (fail under GD_BROWSER_REQUIRED=1) for lack of a tool."""
    if os.environ.get("GD_BROWSER_REQUIRED") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def require_browser():
    why = browser_available()
    if why is not None:
        unavailable(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``url`` until it answers (any HTTP status below 500), or fail with the server's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    state = "exited" if process is not None and process.poll() is not None else "did not answer"
    pytest.fail(f"server at {url} {state} within {timeout_s:.0f} s\n{tail}", pytrace=False)


@contextlib.contextmanager
def server(cmd: list[str], *, env: dict, cwd: Path, log: Path, ready_url: str, timeout_s: float = 240):
    """A server process in its own session, stopped (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(ready_url, timeout_s, process, log)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def base_env(home: Path) -> dict:
    """The environment of a server started by a test: this interpreter first on PATH, quick mode,
    and a private HOME so that no personal Jupyter configuration leaks in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "JPY_", "GD_HUB_", "MPLBACKEND"))
    }
    env.update(
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        HOME=str(home),
        GD_QUICK="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("GD_COURSE_ROOT", None)
    env.pop("GD_NBGRADER_EXCHANGE", None)
    return env


class Screenshots:
    """Numbered full-page screenshots of one scenario, in SCREENSHOTS/<scenario>/."""

    def __init__(self, scenario: str):
        self.folder = SCREENSHOTS / scenario
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def __call__(self, page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path))
        return path


@contextlib.contextmanager
def chromium():
    """Debian's Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def lab_menu(page, menu: str, item: str):
    """Click JupyterLab's menu bar entry ``menu``, then its item ``item``."""
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def wait_until_all_code_cells_ran(page, timeout_ms: int):
    """Every code cell of the open notebook shows an execution count ('[n]:', not '[*]:' or '[ ]:')."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]
                .map(e => e.textContent.trim());
            return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p));
        }""",
        timeout=timeout_ms,
        polling=1000,
    )


def wait_for_kernel_idle(page, timeout_ms: int = UI_TIMEOUT_MS):
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=timeout_ms)
