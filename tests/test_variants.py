"""Notebook 06's length-controlled gold (alignlab.variants.length_controlled_gold, sample_gold_lengths)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from alignlab import variants
from alignlab.pairs import LENGTH_BINS


def test_a_longer_policy_is_read_at_the_reference_lengths():
    # policy: three short completions (gold 0.2) and one long one (0.8); reference: half short, half long
    out = variants.length_controlled_gold([0.2, 0.2, 0.2, 0.8], [3, 3, 3, 12], [3, 12])
    assert out["gold"] == pytest.approx(0.35)
    assert out["stratified"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.8)
    assert out["coverage"] == pytest.approx(1.0)
    assert out["reference_length"] == pytest.approx(7.5) and out["length"] == pytest.approx(5.25)
    assert out["bins"]["1-5"] == {"n": 3, "share": 0.75, "reference_share": 0.5, "gold": pytest.approx(0.2)}
    assert math.isnan(out["bins"]["16-20"]["gold"]) and out["bins"]["16-20"]["n"] == 0


def test_the_same_length_distribution_leaves_the_gold_unchanged():
    golds = [0.1, 0.5, 0.3, 0.9, 0.7, 0.4]
    lengths = [2, 4, 8, 9, 14, 22]
    out = variants.length_controlled_gold(golds, lengths, lengths)
    assert out["stratified"] == pytest.approx(out["gold"]) == pytest.approx(sum(golds) / 6)
    assert out["at_reference_length"] == pytest.approx(out["gold"])     # the line passes through the means


def test_the_regression_reads_a_linear_gold_at_the_reference_mean_length():
    lengths = torch.tensor([2.0, 5, 9, 13, 17, 24])
    out = variants.length_controlled_gold(0.1 + 0.02 * lengths, lengths, [4, 6])
    assert out["slope"] == pytest.approx(0.02)
    assert out["at_reference_length"] == pytest.approx(0.1 + 0.02 * 5)


def test_a_bin_the_policy_never_reaches_lowers_the_coverage_and_is_left_out():
    out = variants.length_controlled_gold([0.4, 0.6], [3, 4], [2, 3, 22, 23])   # reference half in 21-24
    assert out["coverage"] == pytest.approx(0.5)
    assert out["stratified"] == pytest.approx(0.5)                      # only the 1-5 bin, renormalized


def test_equal_lengths_have_no_slope_and_no_coverage_means_nan():
    out = variants.length_controlled_gold([0.2, 0.4], [24, 24], [3, 4])
    assert math.isnan(out["slope"]) and out["at_reference_length"] == pytest.approx(0.3)
    assert out["coverage"] == 0.0 and math.isnan(out["stratified"]) and math.isnan(out["stratified_se"])


def test_standard_errors_by_hand():
    golds, lengths = [0.1, 0.3, 0.6, 1.0, 0.8], [2, 3, 7, 8, 12]
    out = variants.length_controlled_gold(golds, lengths, [1, 6, 11, 12])
    assert out["gold_se"] == pytest.approx(torch.tensor(golds).double().std().item() / math.sqrt(5))
    # bins 1-5 (0.1, 0.3), 6-10 (0.6, 1.0), 11-15 (0.8 alone: the pooled within-bin variance)
    var_a, var_b = torch.tensor([0.1, 0.3]).double().var().item(), torch.tensor([0.6, 1.0]).double().var().item()
    pooled = (0.1 ** 2 * 2 + 0.2 ** 2 * 2) / (4 - 2)
    expected = math.sqrt(0.25 ** 2 * var_a / 2 + 0.25 ** 2 * var_b / 2 + 0.5 ** 2 * pooled / 1)
    assert out["stratified"] == pytest.approx(0.25 * 0.2 + 0.25 * 0.8 + 0.5 * 0.8)
    assert out["stratified_se"] == pytest.approx(expected)


def test_bins_default_to_the_pairs_length_bins_and_can_be_changed():
    out = variants.length_controlled_gold([0.2, 0.8], [3, 12], [3, 12])
    assert list(out["bins"]) == [f"{lo}-{hi}" for lo, hi in LENGTH_BINS]
    out = variants.length_controlled_gold([0.2, 0.8], [3, 12], [3, 3, 3, 12], bins=[(1, 10), (11, 30)])
    assert list(out["bins"]) == ["1-10", "11-30"] and out["stratified"] == pytest.approx(0.75 * 0.2 + 0.25 * 0.8)


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="as many golds as lengths"):
        variants.length_controlled_gold([0.1, 0.2], [3], [3])
    with pytest.raises(ValueError):
        variants.length_controlled_gold([0.1], [3], [])


def test_sample_gold_lengths_reproduces_evaluate_policy(tiny_world):
    """One sample per prompt with evaluate_policy's seed: the same completions, so the same mean gold and length."""
    from alignlab.evaluation import evaluate_policy
    from alignlab.models import frozen_copy

    tok, policy, _ = tiny_world
    policy.train()
    prompts = [{"prompt_ids": tok.encode(t)} for t in ("This movie was", "I went to see it", "The plot", "Worst")]
    gold = lambda texts: torch.tensor([len(t) / 100 for t in texts])   # noqa: E731 -- any text -> score
    golds, lengths = variants.sample_gold_lengths(policy, tok, gold, prompts, max_new_tokens=6, seed=0)
    assert golds.shape == lengths.shape == (4,) and policy.training               # mode restored
    ev = evaluate_policy(policy, frozen_copy(policy), tok, gold, prompts, n=4, max_new_tokens=6, seed=0)
    assert golds.mean().item() == pytest.approx(ev["gold"]) and lengths.mean().item() == pytest.approx(ev["length"])
    assert bool(((lengths >= 1) & (lengths <= 6)).all())
    golds, lengths = variants.sample_gold_lengths(policy, tok, gold, prompts, max_new_tokens=6, samples_per_prompt=3)
    assert golds.shape == (12,)


def test_evaluation_difference_uses_each_evaluations_standard_error():
    a = {"gold": 0.62, "gold_std": 0.3, "n": 100, "kl": 3.0, "kl_std": 2.0}
    b = {"gold": 0.50, "gold_std": 0.4, "n": 100, "kl": 1.0, "kl_std": 1.0}
    out = variants.evaluation_difference(a, b)
    assert out["diff"] == pytest.approx(0.12) and out["se"] == pytest.approx(0.05)
    assert not out["inside_noise"]                                       # 0.12 > 2 x 0.05
    assert variants.evaluation_difference(a, b, z=3.0)["inside_noise"]  # 0.12 < 3 x 0.05
    kl = variants.evaluation_difference(a, b, key="kl")
    assert kl["diff"] == pytest.approx(2.0) and kl["se"] == pytest.approx(math.sqrt(0.05)) and not kl["inside_noise"]


# ------------------------------------------------------------------ more seeds
class _Run:
    def __init__(self, *golds):
        self.evals = [{"step": i, "kl": float(i), "gold": g, "gold_std": 0.1, "n": 8, "samples": ["text"]}
                      for i, g in enumerate(golds)]


def _track(name="tiny", device="cpu", grading=False):
    from alignlab.config import Track
    return Track(name, "policy", device, grading, "test")


def test_with_seeds_puts_this_run_first_records_it_and_drops_the_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_RECORD", str(tmp_path / "figures.json"))
    stored = {"DPO": [[{"kl": 0.0, "gold": 0.5}, {"kl": 1.0, "gold": 0.7}]]}
    runs = variants.with_seeds({"DPO": _Run(0.5, 0.6), "IPO": _Run(0.5, 0.55)}, stored)
    assert [len(v) for v in runs.values()] == [2, 1] and runs["DPO"][1] == stored["DPO"][0]
    assert runs["DPO"][0][1] == {"step": 1.0, "kl": 1.0, "gold": 0.6, "gold_std": 0.1, "n": 8.0}
    recorded = json.loads((tmp_path / "figures.json").read_text())
    assert recorded["06.evals.IPO"] == runs["IPO"][0]


def test_stored_seeds_load_only_for_the_tiny_cpu_track_and_the_same_data(tmp_path, capsys):
    path = tmp_path / "seeds.json"
    points = [{"kl": 0.0, "gold": 0.5}, {"kl": 2.0, "gold": 0.6}]
    assert variants.load_seed_runs(_track(), path) == {} and "missing" in capsys.readouterr().out
    path.write_text(json.dumps({"world": "other", "seeds": {"1": {"DPO": points}}}))
    assert variants.load_seed_runs(_track(), path) == {} and "other data/" in capsys.readouterr().out
    path.write_text(json.dumps({"world": variants.world_fingerprint(),
                                "seeds": {"2": {"DPO": points}, "1": {"DPO": points[:1]}}}))
    assert variants.load_seed_runs(_track(), path) == {"DPO": [points[:1], points]}     # in the seeds' order
    for other in (_track("gpt2", "cuda"), _track(grading=True), _track(device="cuda")):
        assert variants.load_seed_runs(other, path) == {}
        assert "tiny CPU track only" in capsys.readouterr().out


def test_the_stored_seeds_were_run_from_this_notebook_and_these_data():
    """data/variants/seeds.json is stale once notebook 06's code cells or its data change: rebuild it."""
    stored = json.loads(variants.SEEDS_FILE.read_text())
    rebuild = "rebuild: python scripts/build_world.py --only variant_seeds (about 4 minutes)"
    assert stored["code"] == variants.code_fingerprint(), f"notebook 06's code changed since; {rebuild}"
    assert stored["world"] == variants.world_fingerprint(), f"data/ changed since; {rebuild}"
    names = {"DPO", "SimPO", "RPO", "offline DPO", "online, noisy labels", "online, gold labels"}
    for seed, runs in stored["seeds"].items():
        assert int(seed) != 0 and names <= set(runs), f"seed {seed} lacks {names - set(runs)}"
        assert all(len(points) >= 2 and {"kl", "gold"} <= set(points[0]) for points in runs.values())
