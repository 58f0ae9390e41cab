"""Notebook 06's library: noisy labels, loss shapes, lengths, and online DPO (alignlab.variants, alignlab.online)."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from alignlab import online, paths, reference, rollout, variants
from alignlab.config import Track
from alignlab.dpo import DPOConfig, completion_logps


def _pairs(n: int = 40, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        gc, gr = torch.rand(2, generator=g).tolist()
        rows.append({"prompt_ids": [1, 2], "chosen_ids": [3] * (1 + i % 5), "rejected_ids": [4] * (1 + i % 3),
                     "gold_chosen": max(gc, gr), "gold_rejected": min(gc, gr), "p_chosen": 0.8,
                     "ref_chosen_logps": -float(i), "ref_rejected_logps": -2.0 * i, "split": "train"})
    return rows


# ------------------------------------------------------------------ flip_labels
def test_flip_nothing_keeps_every_pair():
    pairs = _pairs()
    assert variants.flip_labels(pairs, 0.0) == pairs


def test_flip_everything_swaps_every_chosen_field_with_its_rejected_twin():
    pairs = _pairs()
    flipped = variants.flip_labels(pairs, 1.0)
    for old, new in zip(pairs, flipped):
        assert new["chosen_ids"] == old["rejected_ids"] and new["rejected_ids"] == old["chosen_ids"]
        assert new["gold_chosen"] == old["gold_rejected"] and new["gold_rejected"] == old["gold_chosen"]
        assert new["ref_chosen_logps"] == old["ref_rejected_logps"] and new["ref_rejected_logps"] == old["ref_chosen_logps"]
        assert new["p_chosen"] == pytest.approx(1 - old["p_chosen"])
        assert new["flipped"] and new["prompt_ids"] == old["prompt_ids"]
    assert variants.label_agreement(flipped) == 0.0 and variants.label_agreement(pairs) == 1.0


def test_flip_does_not_modify_the_input_and_is_seeded():
    pairs = _pairs(400)
    before = [dict(r) for r in pairs]
    a = variants.flip_labels(pairs, 0.25, seed=3)
    assert pairs == before
    assert a == variants.flip_labels(pairs, 0.25, seed=3)
    assert a != variants.flip_labels(pairs, 0.25, seed=4)
    share = sum(r.get("flipped", False) for r in a) / len(a)
    assert 0.18 < share < 0.32


def test_flip_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError):
        variants.flip_labels(_pairs(), 1.5)


def test_pair_lengths_counts_tokens_and_eos():
    pairs = [{"chosen_ids": [5, 6, 0], "rejected_ids": [5]}, {"chosen_ids": [5], "rejected_ids": [5, 0]}]
    out = variants.pair_lengths(pairs, eos_id=0)
    assert out["chosen"] == 2.0 and out["rejected"] == 1.5
    assert out["longer_chosen"] == 0.5 and out["shorter_chosen"] == 0.5
    assert out["eos_chosen"] == 0.5 and out["eos_rejected"] == 0.5


# ------------------------------------------------------------------ loss shapes
def test_dpo_shape_is_ln2_at_zero_with_pull_beta_over_two():
    h = torch.tensor([0.0], dtype=torch.float64)
    loss, grad = variants.loss_shape(functools.partial(reference.dpo_loss, beta=0.1), h)
    assert loss.item() == pytest.approx(math.log(2))
    assert grad.item() == pytest.approx(-0.05)


def test_cdpo_and_ipo_stop_pushing_at_their_targets():
    beta, eps, tau = 0.1, 0.2, 0.05
    h_cdpo = math.log((1 - eps) / eps) / beta
    h = torch.tensor([h_cdpo - 5, h_cdpo, h_cdpo + 5], dtype=torch.float64)
    _, grad = variants.loss_shape(functools.partial(reference.cdpo_loss, beta=beta, label_smoothing=eps), h)
    assert grad[0] < 0 and abs(grad[1]) < 1e-9 and grad[2] > 0       # pulls h up below the target, down above it
    h = torch.tensor([1 / (2 * tau) - 1, 1 / (2 * tau), 1 / (2 * tau) + 1], dtype=torch.float64)
    loss, grad = variants.loss_shape(functools.partial(reference.ipo_loss, tau=tau), h)
    assert loss.tolist() == pytest.approx([1.0, 0.0, 1.0]) and grad.tolist() == pytest.approx([-2.0, 0.0, 2.0])


def test_dpo_never_stops_pushing():
    h = torch.linspace(-50, 200, 26, dtype=torch.float64)
    _, grad = variants.loss_shape(functools.partial(reference.dpo_loss, beta=0.1), h)
    assert bool((grad < 0).all())


def test_summary_table_lists_every_run_and_the_base():
    class Run:
        final = {"gold": 0.9, "kl": 3.0, "length": 20.0}
    table = variants.summary_table({"DPO": Run(), "IPO": {"gold": 0.7, "kl": 1.0}}, base={"gold": 0.5, "kl": 0.0})
    assert "base policy" in table and "DPO" in table and "IPO" in table and "0.900" in table
    assert variants.gold_per_nat({"gold": 0.9, "kl": 4.0}, {"gold": 0.5}) == pytest.approx(0.1)


# ------------------------------------------------------------------ online DPO
def test_config_splits_the_offline_steps_over_the_rounds():
    cpu = Track("tiny", "x", "cpu", False, "test")
    config = online.OnlineDPOConfig.for_track(cpu, rounds=4, dpo=DPOConfig(steps=120))
    assert config.rounds == 4 and config.dpo.steps == 30
    grading = online.OnlineDPOConfig.for_track(Track("tiny", "x", "cpu", True, "test"))
    assert grading.rounds * grading.prompts_per_round <= 32 and grading.dpo.steps <= 6


def _length_labeller(prompt_ids, completion_ids, texts):
    return torch.tensor([float(len(c)) + 0.001 * i for i, c in enumerate(completion_ids)])  # no ties


def test_online_pairs_put_the_best_scored_sample_first_with_reference_logps(tiny_world):
    tok, policy, ref = tiny_world
    config = online.OnlineDPOConfig(samples_per_prompt=3, max_new_tokens=6)
    prompts = [tok.encode("This movie was"), tok.encode("I went to see it")]
    pairs = online.sample_online_pairs(policy, ref, tok, prompts, _length_labeller, config,
                                       gold=lambda texts: torch.rand(len(texts)),
                                       generator=torch.Generator().manual_seed(0))
    assert len(pairs) == 2
    for row, prompt in zip(pairs, prompts):
        assert row["prompt_ids"] == prompt
        assert row["score_chosen"] > row["score_rejected"]
        assert {"gold_chosen", "gold_rejected"} <= set(row)
        for name in ("chosen", "rejected"):
            ids = torch.tensor([row["prompt_ids"] + row[f"{name}_ids"]])
            mask = torch.tensor([[0] * len(row["prompt_ids"]) + [1] * len(row[f"{name}_ids"])])
            expected = completion_logps(ref, ids, torch.ones_like(ids), mask).item()
            assert row[f"ref_{name}_logps"] == pytest.approx(expected, abs=1e-4)


def test_online_pairs_sample_in_calls_of_sample_batch_completions(tiny_world, monkeypatch):
    """A gpt2-track round (512 prompts x 4) in one sampling call would hold a 2048-row KV cache: it is split."""
    tok, policy, ref = tiny_world
    sizes = []
    real_sample = rollout.sample
    monkeypatch.setattr(rollout, "sample", lambda p, ids, *a, **k: sizes.append(len(ids)) or real_sample(p, ids, *a, **k))
    config = online.OnlineDPOConfig(samples_per_prompt=3, max_new_tokens=5, sample_batch=4)
    prompts = [tok.encode("This movie was"), tok.encode("I went to see it"), tok.encode("The plot")]
    pairs = online.sample_online_pairs(policy, ref, tok, prompts, _length_labeller, config,
                                       generator=torch.Generator().manual_seed(0))
    assert sizes == [3, 3, 3] and len(pairs) == 3            # whole prompts per call: at most 4 // 3 = 1 prompt
    for row, prompt in zip(pairs, prompts):
        assert row["prompt_ids"] == prompt and row["score_chosen"] > row["score_rejected"]
        ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
        mask = torch.tensor([[0] * len(row["prompt_ids"]) + [1] * len(row["chosen_ids"])])
        assert row["ref_chosen_logps"] == pytest.approx(completion_logps(ref, ids, torch.ones_like(ids), mask).item(),
                                                       abs=1e-4)
    assert online.OnlineDPOConfig().sample_batch == 512      # the tiny track's 128 prompts x 4: one call, as before


def test_a_group_of_equal_scores_gives_no_pair(tiny_world):
    tok, policy, ref = tiny_world
    config = online.OnlineDPOConfig(samples_per_prompt=2, max_new_tokens=4)
    pairs = online.sample_online_pairs(policy, ref, tok, [tok.encode("A film")], lambda p, c, t: torch.zeros(len(c)), config)
    assert pairs == []


def test_online_dpo_trains_in_rounds_and_leaves_the_reference_alone(tiny_world):
    tok, policy, ref = tiny_world
    policy = __import__("copy").deepcopy(policy)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    config = online.OnlineDPOConfig(rounds=2, prompts_per_round=3, samples_per_prompt=3, max_new_tokens=5,
                                    dpo=DPOConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=0))
    evals = []

    def eval_fn(p):
        evals.append(1)
        return {"gold": 0.5, "kl": 0.0}

    prompts = [{"prompt_ids": tok.encode(t)} for t in ("This movie", "The plot", "I liked", "Worst film", "A story", "It was")]
    history = online.train_online_dpo(policy, ref, tok, prompts, _length_labeller,
                                      functools.partial(reference.dpo_loss, beta=0.1), config, eval_fn)
    assert [e["step"] for e in history.evals] == [0, 2, 4] and [e["round"] for e in history.evals] == [0, 1, 2]
    assert [r["round"] for r in history.steps] == [1, 2] and all(r["pairs"] == 3 for r in history.steps)
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())
    assert any(not torch.equal(start[k], v) for k, v in policy.state_dict().items())
    assert history.final["step"] == 4


def test_online_dpo_refuses_too_few_prompts(tiny_world):
    tok, policy, ref = tiny_world
    config = online.OnlineDPOConfig(rounds=3, prompts_per_round=4)
    with pytest.raises(ValueError, match="12 training prompts"):
        online.train_online_dpo(policy, ref, tok, [[5]] * 5, _length_labeller, reference.dpo_loss, config)


def test_gold_labeller_scores_texts():
    labeller = online.gold_labeller(lambda texts: [float(len(t)) for t in texts])
    assert labeller([[1]], [[2]], ["abc"]).tolist() == [3.0]


def test_noisy_gold_labeller_orders_two_completions_like_the_bradley_terry_annotator():
    """P(a scored above b) = sigmoid((g_a - g_b) / T), the annotator that labelled the offline pairs."""
    from alignlab.pairs import ANNOTATOR_TEMPERATURE

    gold = lambda texts: torch.tensor([0.6 if t == "a" else 0.5 for t in texts])   # noqa: E731 -- gap 0.1
    labeller = online.noisy_gold_labeller(gold, seed=0)
    n = 20000
    scores = labeller([[1]] * 2 * n, [[2]] * 2 * n, ["a", "b"] * n).view(n, 2)      # (n, 2)
    rate = (scores[:, 0] > scores[:, 1]).float().mean().item()
    expected = 1 / (1 + math.exp(-0.1 / ANNOTATOR_TEMPERATURE))                     # 0.731 at T = 0.1
    assert rate == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))
    sharp = online.noisy_gold_labeller(gold, temperature=0.01, seed=0)([[1]] * 2 * n, [[2]] * 2 * n, ["a", "b"] * n)
    assert (sharp.view(n, 2)[:, 0] > sharp.view(n, 2)[:, 1]).float().mean().item() > 0.99


def test_noisy_gold_labeller_is_seeded_and_refuses_a_bad_temperature():
    gold = lambda texts: torch.zeros(len(texts))                                     # noqa: E731
    first = online.noisy_gold_labeller(gold, seed=3)([[1]] * 5, [[2]] * 5, ["x"] * 5)
    again = online.noisy_gold_labeller(gold, seed=3)([[1]] * 5, [[2]] * 5, ["x"] * 5)
    assert torch.equal(first, again) and first.shape == (5,) and first.dtype == torch.float32
    assert len(set(first.tolist())) == 5                                             # noise: no ties
    with pytest.raises(ValueError, match="temperature"):
        online.noisy_gold_labeller(gold, temperature=0.0)


# ------------------------------------------------------------------ the notebook's nbgrader cells
def _notebook_cells():
    import json
    path = paths.REPO_ROOT / "solutions" / "06_beyond_dpo" / "06_beyond_dpo.ipynb"
    return json.loads(path.read_text())["cells"]


def test_written_answers_are_manually_graded_with_a_hidden_rubric():
    written = [c for c in _notebook_cells() if c["cell_type"] == "markdown" and c["metadata"].get("nbgrader")]
    assert len(written) >= 2
    for cell in written:
        meta = cell["metadata"]["nbgrader"]
        assert meta["grade"] and meta["solution"] and not meta["locked"] and not meta["task"] and meta["points"] > 0
        source = "".join(cell["source"])
        begin, end = source.index("### BEGIN SOLUTION"), source.index("### END SOLUTION")
        assert "Rubric" in source[begin:end], f"{meta['grade_id']}: the rubric must sit inside the solution region"


def test_every_exercise_has_a_solution_cell_and_a_locked_test_with_hidden_checks():
    cells = {c["metadata"]["nbgrader"]["grade_id"]: c for c in _notebook_cells() if c["metadata"].get("nbgrader")}
    for name in ("cdpo_loss", "ipo_loss", "simpo_loss", "group_relative_advantages"):
        assert cells[name]["metadata"]["nbgrader"]["solution"]
        test = cells[f"test_{name}"]
        assert test["metadata"]["nbgrader"]["locked"] and test["metadata"]["nbgrader"]["points"] > 0
        source = "".join(test["source"])
        assert source.index(f"checks.{name}({name})") < source.index("### BEGIN HIDDEN TESTS") \
            < source.index(f"checks.{name}({name}, hidden=True)") < source.index("### END HIDDEN TESTS")
    assert not any(c.get("outputs") for c in _notebook_cells() if c["cell_type"] == "code")
