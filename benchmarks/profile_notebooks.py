"""Where each notebook's time goes: run solution notebooks from a fresh kernel and time every cell.

    python benchmarks/profile_notebooks.py [--only 03_rlhf_ppo ...] [--top 8] [--out benchmarks/results/profile.json]

Each notebook runs in its own kernel (nbclient), like `make test`'s notebook runs. The report names the
machine and a calibration measured in the same process (benchmarks/calibrate.py), lists each notebook's
wall time and its slowest cells (0-based index, seconds, first line of source), and is written as JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
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


def profile(notebook: Path, timeout: int = 1200) -> dict:
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(notebook.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
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
    return {"notebook": notebook.stem, "wall_s": round(wall, 1), "error": error, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile.json")
    args = parser.parse_args()
    notebooks = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if n.stem in args.only]
    report = {"date": dt.date.today().isoformat(), "machine": machine_line(), "calibration": calibration(),
              "notebooks": []}
    print(report["machine"], json.dumps(report["calibration"]), flush=True)
    for notebook in notebooks:
        row = profile(notebook)
        report["notebooks"].append(row)
        print(f"\n{row['notebook']}: {row['wall_s']} s" + (f"  ERROR {row['error']}" if row["error"] else ""))
        for cell in sorted(row["cells"], key=lambda c: -c["seconds"])[: args.top]:
            print(f"  cell {cell['cell']:>3}  {cell['seconds']:7.1f} s  {cell['source']}", flush=True)
    report["calibration_after"] = calibration()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    total = sum(r["wall_s"] for r in report["notebooks"])
    print(f"\nwhole course: {total:.0f} s; calibration after: {json.dumps(report['calibration_after'])}")


if __name__ == "__main__":
    main()
