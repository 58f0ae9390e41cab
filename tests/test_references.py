"""The checks' reference outputs: regenerated identically from seeds, and refused when tampered with."""
import importlib.util
import json
import shutil

import pytest
import torch

from alignlab import checks, paths, reference
from alignlab.checks._core import MANIFEST, PRACTICE_SEED, ReferenceDataError, build_hidden, hidden_cases, load_cases
from alignlab.checks.exercises import EXERCISES

SCRIPT = paths.REPO_ROOT / "scripts" / "make_references.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_references", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("references")
    load_script().make_references(out)
    return out


def test_committed_references_equal_a_fresh_regeneration(fresh):
    """Same files, same cases, bit-identical inputs; expected values equal up to float64 rounding.

    (float64 exp/log may differ in the last bit between CPU instruction sets, so outputs
    are compared to 1e-12 rather than byte for byte; on one machine the bytes match too.)
    """
    assert sorted(p.name for p in paths.REFERENCE_DIR.iterdir()) == sorted(p.name for p in fresh.iterdir())
    for name, exercise in EXERCISES.items():
        committed, regenerated = load_cases(exercise), load_cases(exercise, fresh)
        assert [c.name for c in committed] == [c.name for c in regenerated], f"{name}: run `make references`"
        for a, b in zip(committed, regenerated):
            assert (a.hidden, a.grad, a.raises, list(a.args)) == (b.hidden, b.grad, b.raises, list(b.args)), (name, a.name)
            for key in a.args:
                x, y = a.args[key], b.args[key]
                assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, (name, a.name, key)
            pairs = list(zip(a.expected, b.expected)) + [(a.expected_grads[k], b.expected_grads[k]) for k in a.grad]
            for x, y in pairs:
                x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
                assert x.shape == y.shape and torch.allclose(x, y, rtol=1e-12, atol=1e-12), f"{name}, {a.name}: run `make references`"


def test_regeneration_is_deterministic_to_the_byte(fresh, tmp_path):
    again = tmp_path / "again"
    load_script().make_references(again)
    for path in fresh.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_manifest_lists_every_file_and_nothing_is_pickled():
    manifest = json.loads((paths.REFERENCE_DIR / MANIFEST).read_text())
    on_disk = {p.name for p in paths.REFERENCE_DIR.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk
    assert all(name.endswith((".json", ".safetensors")) for name in on_disk)
    assert {n.rsplit(".", 1)[0] for n in on_disk} == set(reference.__all__)


def test_every_exercise_has_public_and_hidden_cases_and_gradients_where_asked():
    for name, exercise in EXERCISES.items():
        public, hidden = load_cases(exercise), hidden_cases(exercise)
        assert public and hidden, name
        assert not any(c.hidden for c in public) and all(c.hidden for c in hidden), name
        for case in public + hidden:
            assert set(case.expected_grads) == set(case.grad), (name, case.name)
            if not case.raises:
                assert case.expected, (name, case.name)
                assert all(not isinstance(o, torch.Tensor) or o.dtype in (torch.float64, torch.long) for o in case.expected)


def test_no_hidden_case_is_stored_in_the_repository():
    """The committed references hold public cases only: no hidden input or expected output to look up."""
    for name, exercise in EXERCISES.items():
        meta = json.loads((paths.REFERENCE_DIR / f"{name}.json").read_text())
        assert not any(c["hidden"] for c in meta["cases"]), f"{name}.json stores a hidden case"
        stored = {c.name for c in load_cases(exercise)}
        assert not stored & {c.name for c in hidden_cases(exercise)}, name


def _values(cases):
    return [v for c in cases for v in c.args.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def test_the_grader_s_seed_draws_other_hidden_inputs_with_the_same_structure():
    for name, exercise in EXERCISES.items():
        practice, graded = build_hidden(exercise, PRACTICE_SEED), build_hidden(exercise, 987_654_321)
        assert [c.name for c in practice] == [c.name for c in graded], name
        for a, b in zip(practice, graded):
            assert [(k, getattr(v, "shape", None), getattr(v, "dtype", type(v))) for k, v in a.args.items()] == \
                [(k, getattr(v, "shape", None), getattr(v, "dtype", type(v))) for k, v in b.args.items()], (name, a.name)
        random_inputs = [(x, y) for x, y in zip(_values(practice), _values(graded)) if x.numel() > 1 and x.unique().numel() > 1]
        if random_inputs:
            assert any(not torch.equal(x, y) for x, y in random_inputs), f"{name}: the seed changes no hidden input"
        # Nothing of the stored public cases reappears among the grader's hidden inputs.
        public = _values(load_cases(exercise))
        for x in _values(graded):
            if x.numel() > 1 and x.unique().numel() > 1:
                assert not any(x.shape == y.shape and torch.equal(x, y) for y in public), (name, "a hidden input is stored")


def test_hidden_cases_of_a_seed_are_fresh_copies_each_time():
    graded = hidden_cases(EXERCISES["dpo_loss"], 4242)
    expected = build_hidden(EXERCISES["dpo_loss"], 4242)
    assert all(torch.equal(a.args["policy_chosen_logps"], b.args["policy_chosen_logps"]) for a, b in zip(graded, expected))
    # a caller that edits the cases it was given changes nothing for the next one
    graded[0].expected[0].add_(1.0)
    assert torch.equal(hidden_cases(EXERCISES["dpo_loss"], 4242)[0].expected[0], expected[0].expected[0])
    assert not torch.equal(hidden_cases(EXERCISES["dpo_loss"])[0].args["policy_chosen_logps"],
                           graded[0].args["policy_chosen_logps"])       # the practice seed draws other inputs


def test_expected_outputs_are_the_reference_in_float64():
    case = load_cases(EXERCISES["dpo_loss"])[0]
    args = [a.double() if isinstance(a, torch.Tensor) else a for a in case.args.values()]
    assert torch.equal(reference.dpo_loss(*args)[0], case.expected[0])


@pytest.fixture
def copy_dir(tmp_path, monkeypatch):
    target = tmp_path / "references"
    shutil.copytree(paths.REFERENCE_DIR, target)
    monkeypatch.setattr(paths, "REFERENCE_DIR", target)
    return target


def _passing_dpo_logits(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def test_an_untouched_copy_is_accepted(copy_dir, capsys):
    checks.dpo_logits(_passing_dpo_logits)
    assert "passed" in capsys.readouterr().out


def test_a_tampered_file_is_refused(copy_dir):
    path = copy_dir / "dpo_logits.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ReferenceDataError, match="has been modified"):
        checks.dpo_logits(_passing_dpo_logits)


def test_a_tampered_case_description_is_refused(copy_dir):
    path = copy_dir / "dpo_logits.json"
    path.write_text(path.read_text().replace('"hidden": false', '"hidden": true', 1))
    with pytest.raises(ReferenceDataError, match="has been modified"):
        checks.dpo_logits(_passing_dpo_logits)


@pytest.mark.parametrize("missing", ["dpo_logits.safetensors", MANIFEST])
def test_a_missing_file_is_refused_with_the_way_to_restore_it(copy_dir, missing):
    (copy_dir / missing).unlink()
    with pytest.raises(ReferenceDataError, match="make references"):
        checks.dpo_logits(_passing_dpo_logits)
