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
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

from alignlab.grading.release import completed_student_notebook

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
        pytest.skip("Debian's chromium is not installed; enable the browser tests with: sudo apt-get install chromium (make test does this as root)")



@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port, rooted at the course (so formgrader reads its nbgrader config)."""
    _need_browser()
    port = free_port()
    # JupyterLab 4 renders only the cells in view ("windowing"); the test reads the whole notebook's outputs,
    # so this server renders every cell, as JupyterLab 3 did.
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               ALIGNLAB_TRACK="tiny", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root",
         f"--ServerApp.root_dir={ROOT}",
         # A fresh workspace each run: otherwise ~/.jupyter's remembered tabs reopen earlier tests' notebooks.
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}"],
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


# ---------------------------------------------------------------- every widget explorer
# Each ipywidgets explorer the course offers: (module, function, the call a notebook makes, sliders it shows).
# Called with their defaults (the reference Bradley-Terry function where one is required): fast, no training.
EXPLORERS = [
    ("preference", "bradley_terry_explorer", "preference.bradley_terry_explorer(reference.bradley_terry_probability);", 2),
    ("dpo_plots", "beta_explorer", "dpo_plots.beta_explorer()", 1),
]


def _widget_functions() -> set[tuple[str, str]]:
    """(module, function) for every alignlab function whose body imports ipywidgets: the explorers."""
    import ast
    found = set()
    for path in sorted((ROOT / "alignlab").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(n, (ast.Import, ast.ImportFrom))
                    and any((a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0] == "ipywidgets"
                            for a in n.names)
                    for n in ast.walk(fn)):
                found.add((".".join(path.relative_to(ROOT / "alignlab").with_suffix("").parts), fn.name))
    return found


def test_every_widget_explorer_is_in_the_browser_test():
    covered = {(module, fn) for module, fn, _, _ in EXPLORERS}
    assert _widget_functions() == covered, "update EXPLORERS so the browser test drives every explorer"


def test_every_widget_explorer_renders_and_responds_in_jupyterlab(lab, browser):
    course, url = lab
    work = ARTIFACTS / "browser"
    work.mkdir(parents=True, exist_ok=True)
    imports = "from alignlab import reference, " + ", ".join(sorted({m for m, _, _, _ in EXPLORERS}))
    cells = [imports] + [call for _, _, call, _ in EXPLORERS]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
          "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": src} for i, src in enumerate(cells)]}
    path = work / "widget_explorers.ipynb"
    path.write_text(json.dumps(nb, indent=1))

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/{path.relative_to(course).as_posix()}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
    try:
        # Every code cell has an execution count once it has run.
        page.wait_for_function(
            """n => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                      return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
            arg=len(cells), timeout=180_000)
        page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
        for i, (module, fn, _, n_sliders) in enumerate(EXPLORERS, start=1):
            _check_explorer(page, page.locator(".jp-Notebook .jp-CodeCell").nth(i), f"{module}.{fn}", n_sliders)
    finally:
        _shot(page, "browser-widget-explorers.png")


def _check_explorer(page, cell, name: str, n_sliders: int):
    """The explorer in `cell` shows its sliders and a figure, and each slider, moved, redraws the figure."""
    out = cell.locator(".jp-Cell-outputArea")
    sliders = out.locator(".widget-slider")
    image = out.locator(".jp-RenderedImage img")
    try:
        sliders.first.wait_for(state="visible", timeout=60_000)
        image.first.wait_for(state="visible", timeout=60_000)
    except Exception:
        pytest.fail(f"{name}: no slider and figure rendered; its output reads:\n{out.inner_text()[:2000]}")
    text = out.inner_text()
    assert "Error displaying widget" not in text and "Traceback" not in text, f"{name}:\n{text[:2000]}"
    assert "interactive(children=(" not in text, f"{name} rendered as text, not as a widget"
    assert sliders.count() == n_sliders, f"{name}: {sliders.count()} sliders, expected {n_sliders}"
    assert image.count() == 1, f"{name}: {image.count()} figures, expected 1"
    cell.scroll_into_view_if_needed()

    def redrawn_after(action, what: str):
        before = image.first.get_attribute("src")
        action()
        try:   # the interactive output is replaced by a new figure
            page.wait_for_function(
                """([el, old]) => { const img = el.querySelector('.jp-RenderedImage img');
                                    return img !== null && img.getAttribute('src') !== old; }""",
                arg=[out.element_handle(), before], timeout=60_000)
        except Exception:
            _shot(page, "browser-widget-explorers.png")
            pytest.fail(f"{name}: the figure did not change after {what}")
        assert image.count() == 1, f"{name}: {image.count()} figures after {what}"

    for k in range(n_sliders):
        slider = sliders.nth(k)
        label = slider.locator(".widget-label").first.inner_text()
        readout = slider.locator(".widget-readout")
        # By keyboard: focus the slider's handle and step it.
        old = readout.inner_text()
        redrawn_after(lambda: (slider.locator(".noUi-handle, .ui-slider-handle").first.focus(),
                               page.keyboard.press("ArrowLeft" if k % 2 else "ArrowRight")),
                      f"moving the '{label}' slider with the keyboard")
        assert readout.inner_text() != old, f"{name}: the '{label}' readout did not change"
        # By typing a value into the readout.
        old = readout.inner_text()
        value = "0.3" if old.strip() not in ("0.3", "0.30", "0.300") else "0.5"
        redrawn_after(lambda: (readout.click(), page.keyboard.press("Control+A"),
                               page.keyboard.type(value), page.keyboard.press("Enter")),
                      f"typing {value} into the '{label}' readout")
        assert float(readout.inner_text()) == pytest.approx(float(value), rel=0.1), \
            f"{name}: the '{label}' readout reads {readout.inner_text()!r} after typing {value}"
    text = out.inner_text()
    assert "Error displaying widget" not in text and "Traceback" not in text, f"{name}:\n{text[:2000]}"
