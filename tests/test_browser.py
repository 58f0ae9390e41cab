"""JupyterLab 4 in a real browser: a learner's notebook runs, its plots, widgets and check feedback render.

Headless Debian Chromium driven by Playwright (no browser download). The server
runs on a free localhost port in a temporary copy of the course, so nothing in
the checkout changes. A screenshot of each page is kept under build/test-artifacts/.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "build" / "test-artifacts"
NOTEBOOK = "01_preference_data"      # has plots, the Bradley-Terry widget and check cells
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _need_browser():
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def completed_student_notebook(name: str) -> dict:
    """The student notebook with each answer cell replaced by the solution's code: a learner who finished."""
    student = json.loads((ROOT / "notebooks" / name / f"{name}.ipynb").read_text())
    solution = json.loads((ROOT / "solutions" / name / f"{name}.ipynb").read_text())
    answers = {}
    for cell in solution["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and cell["cell_type"] == "code":
            src = "".join(cell["source"]).splitlines()
            answers[meta["grade_id"]] = "\n".join(l for l in src if "### BEGIN SOLUTION" not in l
                                                  and "### END SOLUTION" not in l)
    for cell in student["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") in answers:
            cell["source"] = answers[meta["grade_id"]]
    return student


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port, rooted at the course (so formgrader reads its nbgrader config)."""
    _need_browser()
    port = _free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               ALIGNLAB_TRACK="tiny", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root",
         f"--ServerApp.root_dir={ROOT}"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=3)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("JupyterLab did not start:\n" + proc.stdout.read().decode()[-3000:])
            time.sleep(1)
    try:
        yield ROOT, url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _shot(page, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def test_a_finished_notebook_runs_in_jupyterlab_with_plots_widgets_and_feedback(lab, browser):
    course, url = lab
    # A learner's finished copy, next to the student notebook's own folder layout but in git-ignored build/.
    work = ARTIFACTS / "browser"
    work.mkdir(parents=True, exist_ok=True)
    done = work / f"{NOTEBOOK}_done.ipynb"
    done.write_text(json.dumps(completed_student_notebook(NOTEBOOK)))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/{done.relative_to(course).as_posix()}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()          # focus the notebook
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
    # Wait until every cell has run: no "[*]" prompt left and the kernel is idle again.
    deadline = time.time() + 400
    while time.time() < deadline:
        time.sleep(3)
        busy = page.locator(".jp-InputPrompt:has-text('[*]')").count()
        if busy == 0 and page.locator("#jp-main-statusbar >> text=Idle").count():
            break
    else:
        _shot(page, "browser-timeout.png")
        pytest.fail("the notebook did not finish running within 400 s")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback")
    assert errors.count() == 0, errors.first.inner_text()[:2000]
    assert page.locator(".jp-OutputArea-output .jp-RenderedImage img").count() >= 1, "no matplotlib figure rendered"
    page.locator(".widget-slider").first.scroll_into_view_if_needed()
    assert page.locator(".widget-slider").count() >= 1, "no ipywidgets slider rendered"
    body = page.inner_text(".jp-Notebook")
    assert "Error displaying widget" not in body and "interactive(children=(" not in body
    assert "passed" in body.lower(), "no check cell printed its feedback"
    _shot(page, "browser-notebook.png")


def test_formgrader_lists_the_course_assignments(lab, browser):
    course, url = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    assignments = sorted(p.name for p in (course / "solutions").iterdir() if p.is_dir())
    listed = page.request.get(f"{url}/formgrader/api/assignments").json()
    assert sorted(a["name"] for a in listed) == assignments
    page.goto(f"{url}/formgrader")
    try:
        page.wait_for_selector(f"text={assignments[0]}", timeout=60_000)
    finally:
        _shot(page, "browser-formgrader.png")
    text = page.inner_text("body")
    missing = [a for a in assignments if a not in text]
    assert not missing, f"formgrader does not list {missing}"
