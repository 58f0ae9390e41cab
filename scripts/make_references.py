"""Regenerate the checks' reference outputs: `make references` (or `python scripts/make_references.py [--out DIR]`).

For every exercise, build its fixed public cases from seeds (alignlab/checks/ex_*.py),
run alignlab.reference on them in float64, and store under autograder/references/
(hidden cases are never stored: the checks build them from the grader's seed):

- NAME.safetensors: the inputs as the learner receives them, the expected outputs
  (float64), the gradient weights and the expected gradients;
- NAME.json: the cases (name, hidden, argument order, scalars, keys into the tensors);
- manifest.json: the sha256 of every file; the checks refuse a file that does not match.

No pickle anywhere. The output depends only on the seeds: one thread, float64, CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from alignlab import paths  # noqa: E402
from alignlab.checks._core import MANIFEST, Exercise, encode_cases, solve  # noqa: E402
from alignlab.checks.exercises import EXERCISES  # noqa: E402


def build_exercise(exercise: Exercise) -> tuple[bytes, bytes]:
    """The (json, safetensors) bytes of one exercise's public cases (hidden ones are never stored)."""
    cases = solve(exercise, exercise.build())
    return encode_cases(exercise, [c for c in cases if not c.hidden])


def make_references(out_dir: Path) -> dict[str, str]:
    """Write every exercise's files and the manifest into out_dir; return the manifest's hashes."""
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, exercise in EXERCISES.items():
        meta, blob = build_exercise(exercise)
        for filename, data in ((f"{name}.json", meta), (f"{name}.safetensors", blob)):
            (out_dir / filename).write_bytes(data)
            hashes[filename] = hashlib.sha256(data).hexdigest()
    manifest = {"about": "sha256 of every reference file; regenerate with `make references`", "files": dict(sorted(hashes.items()))}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=paths.REFERENCE_DIR, help="output folder (default: autograder/references)")
    args = parser.parse_args()
    hashes = make_references(args.out)
    print(f"wrote {len(hashes)} files and {MANIFEST} to {args.out}")


if __name__ == "__main__":
    main()
