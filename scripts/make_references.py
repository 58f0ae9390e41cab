"""Regenerate the checks' reference outputs: `make references` (or `python scripts/make_references.py [--out DIR]`).

For every exercise, build its fixed cases from seeds (alignlab/checks/ex_*.py),
run alignlab.reference on them in float64, and store under autograder/references/:

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
from safetensors.torch import save as save_tensors

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from alignlab import paths  # noqa: E402
from alignlab.checks._core import MANIFEST, Case, Exercise, generator, randn, reference_function  # noqa: E402
from alignlab.checks.exercises import EXERCISES  # noqa: E402


def _as64(v):
    return v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


def _entry(key: str, value, tensors: dict) -> dict:
    """Store a tensor under key and point to it, or keep a plain value in the JSON."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().contiguous()
        return {"tensor": key}
    return {"value": value}


def build_exercise(exercise: Exercise) -> tuple[bytes, bytes]:
    """The (json, safetensors) bytes of one exercise."""
    reference = reference_function(exercise.name)
    tensors: dict[str, torch.Tensor] = {}
    cases = []
    for i, case in enumerate(exercise.build()):
        args = {k: _as64(v) for k, v in case.args.items()}
        for name in case.grad:
            args[name] = args[name].clone().requires_grad_(True)
        if case.raises:
            try:
                reference(*args.values())
            except Exception as error:
                assert case.raises in [k.__name__ for k in type(error).__mro__], (exercise.name, case.name, error)
            else:
                raise AssertionError(f"{exercise.name}: the reference does not raise {case.raises} on '{case.name}'")
            cases.append({"name": case.name, "hidden": case.hidden, "grad": [], "raises": case.raises,
                          "args": [[k, _entry(f"{i}.arg.{k}", v, tensors)] for k, v in case.args.items()], "outputs": []})
            continue
        result = reference(*args.values())
        outputs = list(result) if isinstance(result, tuple) else [result]
        record = {
            "name": case.name, "hidden": case.hidden, "grad": list(case.grad),
            "args": [[k, _entry(f"{i}.arg.{k}", v, tensors)] for k, v in case.args.items()],
            "outputs": [_entry(f"{i}.out.{j}", _as64(o.detach()) if isinstance(o, torch.Tensor) else float(o), tensors)
                        for j, o in enumerate(outputs)],
        }
        if case.scale is not None:
            record["scale"] = case.scale
        if case.grad:
            out = outputs[exercise.grad_output]
            weight = case.grad_weight
            if weight is None:
                weight = randn(generator(10_000 + i), *out.shape, dtype=torch.float64) if out.dim() else torch.ones((), dtype=torch.float64)
            grads = torch.autograd.grad((out * weight).sum(), [args[n] for n in case.grad])
            record["grad_weight"] = _entry(f"{i}.grad_weight", weight, tensors)["tensor"]
            record["expected_grads"] = {n: _entry(f"{i}.grad.{n}", gr.double(), tensors)["tensor"] for n, gr in zip(case.grad, grads)}
        cases.append(record)
    meta = json.dumps({"exercise": exercise.name, "cases": cases}, indent=1, sort_keys=False) + "\n"
    return meta.encode(), save_tensors(dict(sorted(tensors.items())))


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
