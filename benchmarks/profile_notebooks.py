"""Where each notebook's time goes: run solution notebooks from a fresh kernel and time every cell.

    python benchmarks/profile_notebooks.py [--only 04_rlhf_ppo ...] [--top 8] [--out benchmarks/results/profile.json]
        [--grading] [--track tiny|gpt2] [--budget SECONDS]

Each notebook runs in its own kernel (nbclient), like `make test`'s notebook runs. The report names the
machine and a calibration measured in the same process (benchmarks/calibrate.py), lists each notebook's
wall time and its slowest cells (0-based index, seconds, first line of source), and is written as JSON.
``--grading`` runs as nbgrader does (NBGRADER_EXECUTION set, smallest scale); ``--track`` forces a track
(ALIGNLAB_TRACK); ``--budget`` stops a notebook after the cell that crosses that many seconds and records how
far it got (the GPU check uses it to fit a fixed time).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from calibrate import calibration, machine_line  # noqa: E402


def _seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    return (_when(end) - _when(start)).total_seconds()


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def profile(notebook: Path, timeout: int = 1200, budget: float | None = None) -> dict:
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(notebook.parent)}})
    start = time.perf_counter()
    error, stopped_at = None, None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if budget is not None and time.perf_counter() - start > budget:
                    stopped_at = index
                    break
                client.execute_cell(cell, index)
    except Exception as exc:  # the row says what failed
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    wall = time.perf_counter() - start
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        seconds = _seconds(cell)
        if seconds is not None:
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            cells.append({"cell": index, "seconds": round(seconds, 2), "source": first[:90]})
    return {"notebook": notebook.stem, "wall_s": round(wall, 1), "error": error, "stopped_at_cell": stopped_at,
            "cells_total": len(nb.cells), "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile.json")
    parser.add_argument("--grading", action="store_true", help="run as nbgrader does (smallest scale)")
    parser.add_argument("--track", default=None, help="force a track (ALIGNLAB_TRACK)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per notebook, then stop at a cell boundary")
    args = parser.parse_args()
    if args.grading:
        os.environ["NBGRADER_EXECUTION"] = "autograde"
    if args.track:
        os.environ["ALIGNLAB_TRACK"] = args.track
    notebooks = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if n.stem in args.only]
    report = {"date": dt.date.today().isoformat(), "machine": machine_line(), "calibration": calibration(),
              "notebooks": []}
    print(report["machine"], json.dumps(report["calibration"]), flush=True)
    for notebook in notebooks:
        row = profile(notebook, budget=args.budget)
        report["notebooks"].append(row)
        print(f"\n{row['notebook']}: {row['wall_s']} s" + (f"  ERROR {row['error']}" if row["error"] else "")
              + (f"  (budget: stopped before cell {row['stopped_at_cell']} of {row['cells_total']})"
                 if row["stopped_at_cell"] is not None else ""))
        for cell in sorted(row["cells"], key=lambda c: -c["seconds"])[: args.top]:
            print(f"  cell {cell['cell']:>3}  {cell['seconds']:7.1f} s  {cell['source']}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))          # after each notebook: a killed run keeps its rows
    report["calibration_after"] = calibration()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    total = sum(r["wall_s"] for r in report["notebooks"])
    print(f"\nwhole course: {total:.0f} s; calibration after: {json.dumps(report['calibration_after'])}")


if __name__ == "__main__":
    main()
