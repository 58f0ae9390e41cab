"""Measure the course on this machine: notebook run times and peak memory, grading-mode times, teaching figures.

    python benchmarks/run_all.py [--only 05_dpo] [--skip-grading]     (or: make benchmarks)

Each notebook runs in its own process from a fresh kernel (benchmarks/run_notebook.py).
Results go to benchmarks/results/<machine>.json and a Markdown table on stdout,
which README quotes. Budgets (docs/conventions.md): 180 s and 4 GB per notebook,
12 min for the whole course, 40 s to autograde one notebook.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from calibrate import calibration, machine_line  # noqa: E402


def run(notebook: Path, grading: bool, track: str | None) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_notebook.py"), str(notebook)]
    cmd += ["--grading"] if grading else []
    cmd += ["--track", track] if track else []
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"notebook": notebook.stem, "grading": grading, "error": out.stderr[-500:]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="notebook names to run")
    parser.add_argument("--skip-grading", action="store_true")
    parser.add_argument("--track", default=None)
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/<tag>.json)")
    args = parser.parse_args()

    notebooks = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if n.stem in args.only]
    before = calibration()
    print(f"{machine_line()}; calibration before: {json.dumps(before)}", flush=True)
    rows = []
    for nb in notebooks:
        rows.append(run(nb, grading=False, track=args.track))
        print(json.dumps(rows[-1]), flush=True)
        if not args.skip_grading:
            rows.append(run(nb, grading=True, track=None))
            print(json.dumps(rows[-1]), flush=True)
    after = calibration()
    report = {"date": dt.date.today().isoformat(), "machine": machine_line(),
              "calibration": {"before": before, "after": after}, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"{'gpu' if 'no GPU' not in report['machine'] else 'cpu'}.json"
    out.write_text(json.dumps(report, indent=1))

    print(f"\n{report['date']}, {report['machine']}")
    print(f"calibration (benchmarks/calibrate.py) before / after: {json.dumps(before)} / {json.dumps(after)}\n")
    print("| notebook | run (s) | peak memory (MB) | grading mode (s) |")
    print("| --- | ---: | ---: | ---: |")
    full = {r["notebook"]: r for r in rows if not r["grading"]}
    grading = {r["notebook"]: r for r in rows if r["grading"]}

    def cell(row, key):
        return f"{row[key]}" if row.get(key) is not None and not row.get("error") else \
            ("error" if row.get("error") else "-")

    for name, r in full.items():
        g = grading.get(name, {})
        print(f"| {name} | {cell(r, 'wall_s')} | {cell(r, 'peak_mb')} | {cell(g, 'wall_s')} |")
    total = sum(r.get("wall_s", 0) for r in full.values())
    print(f"\nwhole course: {total:.0f} s")
    for r in rows:
        if r.get("error"):
            print(f"ERROR {r['notebook']} (grading={r['grading']}): {r['error']}")
        if r.get("figures") and not r["grading"]:
            print(f"figures {r['notebook']}: {json.dumps(r['figures'])}")


if __name__ == "__main__":
    main()
