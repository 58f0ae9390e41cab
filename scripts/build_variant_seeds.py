"""Run notebook 06's cells again with other training seeds and store each run's evaluations (a step of `make data`).

    .venv/bin/python scripts/build_variant_seeds.py [--seeds 1,2]

Notebook 06 compares DPO with cDPO, IPO, SimPO, RPO and online DPO at matched KL. One run per method is
all its budget allows, and one run cannot tell a method's effect from a seed's. So this script executes
the solution notebook from a fresh kernel once per seed, on the tiny CPU track, with its first code line
``SEED = 0`` changed to ``SEED = k`` (the course's reference functions stand in for the exercises), and
keeps what the notebook records for each run (``variants.with_seeds`` records a run's evaluations
under ``06.evals.<run name>``). ``data/variants/seeds.json`` holds them with a fingerprint of the
notebook's code cells and of the data they read; ``variants.load_seed_runs`` loads them only while the
data match, and ``tests/test_variants.py`` fails once the notebook's code has changed since.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignlab import variants  # noqa: E402

SEED_LINE = "SEED = 0"
PREFIX = "06.evals."


def with_seed(notebook, seed: int):
    """The notebook with its ``SEED = 0`` line (one, in a code cell) set to ``seed``."""
    hits = [c for c in notebook.cells if c.cell_type == "code" and SEED_LINE in c.source]
    if len(hits) != 1 or hits[0].source.count(SEED_LINE) != 1:
        raise SystemExit(f"expected one '{SEED_LINE}' line in {variants.NOTEBOOK}, found {len(hits)} cells with it")
    hits[0].source = hits[0].source.replace(SEED_LINE, f"SEED = {seed}")
    return notebook


def run_seed(seed: int) -> tuple[dict, float]:
    """Execute the solution notebook with ``SEED = seed``; return its recorded runs and the wall time."""
    notebook = with_seed(nbformat.read(variants.NOTEBOOK, as_version=4), seed)
    record = Path(tempfile.mkdtemp()) / "figures.json"
    os.environ.update(ALIGNLAB_RECORD=str(record), ALIGNLAB_TRACK="tiny")
    os.environ.pop("NBGRADER_EXECUTION", None)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(variants.NOTEBOOK.parent)}}).execute()
    figures = json.loads(record.read_text())
    runs = {key[len(PREFIX):]: points for key, points in figures.items() if key.startswith(PREFIX)}
    if not runs:
        raise SystemExit(f"seed {seed}: the notebook recorded no runs under {PREFIX}*")
    return runs, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="comma-separated training seeds (0 is the notebook's own run)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"   # the kernel's python
    stored = {"notebook": str(variants.NOTEBOOK.relative_to(variants.paths.REPO_ROOT)),
              "code": variants.code_fingerprint(), "world": variants.world_fingerprint(),
              "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"), "seeds": {}, "seconds": {}}
    for seed in seeds:
        runs, seconds = run_seed(seed)
        stored["seeds"][str(seed)], stored["seconds"][str(seed)] = runs, round(seconds, 1)
        finals = ", ".join(f"{name} {points[-1]['gold']:.3f} at {points[-1]['kl']:.2f}" for name, points in runs.items())
        print(f"seed {seed}: {len(runs)} runs in {seconds:.0f} s; final gold at KL: {finals}", flush=True)
    variants.SEEDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    variants.SEEDS_FILE.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"-> {variants.SEEDS_FILE}")


if __name__ == "__main__":
    main()
