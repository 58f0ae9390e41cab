"""Execute one notebook from a fresh kernel; print a JSON line with its wall time, peak memory and recorded figures.

    python benchmarks/run_notebook.py solutions/04_dpo/04_dpo.ipynb [--grading] [--track tiny|gpt2]

Peak memory is the kernel process's maximum resident set size (the kernel is
this process's child, so RUSAGE_CHILDREN reads it after the kernel exits).
With --grading the notebook runs as nbgrader runs it (NBGRADER_EXECUTION set).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--grading", action="store_true", help="run in nbgrader's grading mode")
    parser.add_argument("--track", default=None, help="force a track (ALIGNLAB_TRACK)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()

    record = Path(tempfile.mkdtemp()) / "figures.json"
    os.environ["ALIGNLAB_RECORD"] = str(record)
    if args.grading:
        os.environ["NBGRADER_EXECUTION"] = "autograde"
    if args.track:
        os.environ["ALIGNLAB_TRACK"] = args.track
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # report, don't hide: the row says what failed
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures = json.loads(record.read_text()) if record.exists() else {}
    print(json.dumps({"notebook": args.notebook.stem, "grading": args.grading, "wall_s": round(wall, 1),
                      "peak_mb": round(peak_mb), "error": error, "figures": figures}))
    sys.exit(1 if error else 0)


if __name__ == "__main__":
    main()
