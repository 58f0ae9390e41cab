"""Execute one notebook from a fresh kernel; print a JSON line with its wall time, peak memory and recorded figures.

    python benchmarks/run_notebook.py solutions/05_dpo/05_dpo.ipynb [--grading] [--track tiny|gpt2]
                                      [--deadline SECONDS] [--gpu-memory]

Peak memory is the kernel process's maximum resident set size (the kernel is
this process's child, so RUSAGE_CHILDREN reads it after the kernel exits).
With --grading the notebook runs as nbgrader runs it (NBGRADER_EXECUTION set).
With --deadline the whole notebook gets that many seconds: the cell running at
the deadline is stopped (nbclient's cell timeout) and the kernel shut down, so
nothing is left running. With --gpu-memory one more cell runs in the same kernel
after the notebook (also after an error) and reports torch.cuda's peak
allocated and reserved memory. The row says which cell failed and how.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

GPU_PROBE = """import json as _json, torch as _torch
print("GPU_MEMORY " + _json.dumps({"device": _torch.cuda.get_device_name(0) if _torch.cuda.is_available() else None,
      "max_allocated_mib": round(_torch.cuda.max_memory_allocated() / 2**20) if _torch.cuda.is_available() else None,
      "max_reserved_mib": round(_torch.cuda.max_memory_reserved() / 2**20) if _torch.cuda.is_available() else None}))"""


def _error_line(exc: Exception, cell_index: int | None) -> str:
    """One line: which cell, the exception's name and message (the kernel's, for a failing cell)."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    where = f"cell {cell_index}: " if cell_index is not None else ""
    return (where + " ".join(text.split()))[:400]


def _probe(client: NotebookClient, index: int) -> dict | None:
    cell = nbformat.v4.new_code_cell(GPU_PROBE)
    client.nb.cells.append(cell)                  # nbclient writes the executed cell back at its index
    try:
        client.execute_cell(cell, index)
    except Exception:  # noqa: BLE001 - a probe that fails reports nothing
        return None
    for out in cell.outputs:
        for line in out.get("text", "").splitlines():
            if line.startswith("GPU_MEMORY "):
                return json.loads(line[len("GPU_MEMORY "):])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--grading", action="store_true", help="run in nbgrader's grading mode")
    parser.add_argument("--track", default=None, help="force a track (ALIGNLAB_TRACK)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--deadline", type=float, default=None, help="seconds for the whole notebook")
    parser.add_argument("--gpu-memory", action="store_true", help="report torch.cuda's peak memory after the run")
    args = parser.parse_args()

    record = Path(tempfile.mkdtemp()) / "figures.json"
    os.environ["ALIGNLAB_RECORD"] = str(record)
    if args.grading:
        os.environ["NBGRADER_EXECUTION"] = "autograde"
    if args.track:
        os.environ["ALIGNLAB_TRACK"] = args.track
    nb = nbformat.read(args.notebook, as_version=4)
    start = time.perf_counter()
    end = start + args.deadline if args.deadline else None

    def cell_timeout(cell) -> int:
        if end is None or cell.source == GPU_PROBE:
            return args.timeout
        return max(1, min(args.timeout, int(end - time.perf_counter())))

    client = NotebookClient(nb, timeout=args.timeout, timeout_func=cell_timeout, interrupt_on_timeout=True,
                            kernel_name="python3", resources={"metadata": {"path": str(args.notebook.parent)}})
    error, current, cells_done, gpu, n_cells = None, None, 0, None, len(nb.cells)
    client.reset_execution_trackers()
    try:
        with client.setup_kernel():
            try:
                for index, cell in enumerate(nb.cells):
                    current = index
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                    cells_done = index + 1
                current = None
            except Exception as exc:  # report, don't hide: the row says what failed
                error = _error_line(exc, current)
                if end is not None and time.perf_counter() >= end - 1:
                    error = f"cell {current}: stopped at the deadline of {args.deadline:.0f} s ({error})"
            if args.gpu_memory:
                gpu = _probe(client, n_cells)
    except Exception as exc:  # the kernel did not start, or died
        error = error or _error_line(exc, current)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures = json.loads(record.read_text()) if record.exists() else {}
    row = {"notebook": args.notebook.stem, "grading": args.grading, "wall_s": round(wall, 1),
           "peak_mb": round(peak_mb), "cells": f"{cells_done}/{n_cells}", "error": error, "figures": figures}
    if args.gpu_memory:
        row["gpu"] = gpu
    print(json.dumps(row), flush=True)
    sys.exit(1 if error else 0)


if __name__ == "__main__":
    main()
