"""Every solution notebook runs top to bottom from a fresh kernel without an error (as a learner runs it).

Parametrized over the notebooks that exist. Run time and the slowest cells are printed (`pytest -s`);
the budget (docs/conventions.md, Budgets: 180 s each on the 2-core machine) is tracked by `make benchmarks`.
Each run leaves the executed notebook and a line of figures (wall time, the kernel's peak memory,
what the notebook recorded with alignlab.report.record) under build/test-artifacts/. Every number with a
decimal point in the notebook's markdown must then be printed by that run or listed with its reason in
tests/prose_numbers.json (tests/prose_numbers.py).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from calibrate import calibration, machine_line  # noqa: E402

import prose_numbers  # noqa: E402  (tests/: every number in the prose is printed by the run)

SOLUTIONS = sorted(ROOT.glob("solutions/*/*.ipynb"))


@functools.lru_cache(maxsize=1)
def machine_and_calibration() -> dict:
    """Measured once per session, so each recorded run time names its machine and speed (benchmarks/calibrate.py)."""
    return {"machine": machine_line(), "calibration": calibration()}


CELL_TIMEOUT_S = 1200    # a hang guard, not the budget: budgets are measured by benchmarks/
ARTIFACTS = ROOT / "build" / "test-artifacts"


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)      # the learner's scale, not grading mode
    monkeypatch.setenv("ALIGNLAB_TRACK", "tiny")                  # the offline default, whatever the machine
    monkeypatch.setenv("PATH", f"{Path(os.sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ALIGNLAB_RECORD", str(tmp_path / "figures.json"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    peak = {"rss": 0}
    done = threading.Event()

    def watch_kernel_memory():
        while not done.wait(0.5):
            try:
                proc = psutil.Process(client.km.provisioner.process.pid)
                peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            except (AttributeError, psutil.Error):
                pass

    watcher = threading.Thread(target=watch_kernel_memory, daemon=True)
    start = time.perf_counter()
    watcher.start()
    try:
        client.execute()
    finally:
        done.set()
    seconds = time.perf_counter() - start
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "executed").mkdir(exist_ok=True)
    nbformat.write(nb, ARTIFACTS / "executed" / path.name)
    figures = json.loads((tmp_path / "figures.json").read_text()) if (tmp_path / "figures.json").exists() else {}
    with open(ARTIFACTS / "notebook_runs.jsonl", "a") as log:
        log.write(json.dumps({"notebook": path.stem, "wall_s": round(seconds, 1), "peak_mb": peak["rss"] // 2**20,
                              "date": time.strftime("%Y-%m-%d %H:%M"), **machine_and_calibration(),
                              "figures": figures}) + "\n")
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    print(f"{path.stem}: {seconds:.0f} s")
    assert not errors, f"{path.stem}: cell {errors[0][0]} raised {errors[0][1]}: {errors[0][2][:500]}"
    unprinted = prose_numbers.unprinted(nb, path.stem)
    assert not unprinted, (
        f"{path.stem}: numbers in markdown that no cell of this run prints (cell, number): {unprinted}. Print them "
        "from a cell and refer to it, or list each with its reason in tests/prose_numbers.json (a paper's figure "
        "with its section, a worked example's step, a constant)")
    repeated = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                for images in [[o.data["image/png"] for o in c.outputs if "data" in o and "image/png" in o.data]]
                if len(images) != len(set(images))]
    assert not repeated, (f"{path.stem}: cells {repeated} draw the same figure twice (a plot function that shows "
                          "its figure and also returns it; return it only, and end the cell with ';')")
