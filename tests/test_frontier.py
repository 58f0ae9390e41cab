"""The reward-vs-KL frontier (alignlab.frontier): points from runs, the sweep helpers, the plot."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from alignlab import frontier, reference, rollout  # noqa: E402
from alignlab.dpo import DPOHistory  # noqa: E402
from alignlab.ppo import PPOHistory  # noqa: E402

from test_dpo import config, frozen, make_pairs, tiny_model  # noqa: E402


def test_every_evaluation_of_a_run_becomes_a_point():
    dpo_run = DPOHistory(evals=[{"step": 0, "gold": 0.5, "kl": 0.0}, {"step": 50, "gold": 0.7, "kl": 3.0}])
    ppo_run = PPOHistory(evals=[{"iteration": 10, "gold": 0.6, "kl": 2.0, "score": 0.1}])
    points = frontier.points_from_history("DPO", "beta=0.1", dpo_run) + frontier.points_from_history("PPO", "kl_coef=0.05", ppo_run)
    assert points == [
        {"method": "DPO", "setting": "beta=0.1", "step": 0, "kl": 0.0, "gold": 0.5},
        {"method": "DPO", "setting": "beta=0.1", "step": 50, "kl": 3.0, "gold": 0.7},
        {"method": "PPO", "setting": "kl_coef=0.05", "step": 10, "kl": 2.0, "gold": 0.6},
    ]


def test_dpo_points_train_one_fresh_policy_per_beta_with_that_beta():
    base = tiny_model()
    made, seen_betas = [], []

    def make_policy():
        made.append(tiny_model())
        return made[-1]

    def loss_fn(pc, pr, rc, rr, beta):
        seen_betas.append(beta)
        return reference.dpo_loss(pc, pr, rc, rr, beta)

    kl_calls = iter(range(100))
    histories = {}
    points = frontier.dpo_points(make_policy, frozen(base), make_pairs(16), loss_fn, [0.1, 0.5], config(steps=4, eval_every=2),
                                 lambda policy: {"gold": 0.5, "kl": float(next(kl_calls))}, histories=histories)
    assert len(made) == 2 and made[0] is not made[1]
    assert sorted(set(seen_betas)) == [0.1, 0.5]
    assert [p["setting"] for p in points] == ["beta=0.1"] * 3 + ["beta=0.5"] * 3
    assert [p["step"] for p in points] == [0, 2, 4, 0, 2, 4]
    assert histories[0.5].config["beta"] == 0.5


def test_ppo_points_call_the_runner_once_per_kl_coefficient():
    calls = []

    def run(kl_coef):
        calls.append(kl_coef)
        return PPOHistory(evals=[{"iteration": 0, "gold": 0.5, "kl": 0.0}, {"iteration": 5, "gold": 0.8, "kl": 10 * kl_coef}])

    points = frontier.ppo_points([0.05, 0.2], run)
    assert calls == [0.05, 0.2]
    assert [(p["setting"], p["kl"]) for p in points] == [("kl_coef=0.05", 0.0), ("kl_coef=0.05", 0.5),
                                                         ("kl_coef=0.2", 0.0), ("kl_coef=0.2", 2.0)]


def test_best_points_take_the_highest_gold_within_the_kl_budget():
    points = [{"method": "DPO", "kl": 2.0, "gold": 0.7}, {"method": "DPO", "kl": 12.0, "gold": 0.95},
              {"method": "DPO", "kl": 8.0, "gold": 0.86}, {"method": "PPO", "kl": 11.0, "gold": 0.9}]
    best = frontier.best_points(points, max_kl=10.0)
    assert best == {"DPO": {"method": "DPO", "kl": 8.0, "gold": 0.86}}


def _small_policy():
    """The course's tokenizer and a 1-layer, width-16 GPT-2 on its vocabulary (seed 0), in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab.models import load_tokenizer
    from alignlab.paths import TINY_POLICY_DIR

    tokenizer = load_tokenizer(TINY_POLICY_DIR)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        bos_token_id=tokenizer.eos_token_id)).eval()
    return tokenizer, policy


def test_best_of_n_points_sit_at_the_analytic_kl_and_gold_rises_with_n():
    tokenizer, policy = _small_policy()

    def gold(texts):                                   # a "reward" that likes long texts
        return torch.tensor([min(len(t), 200) / 200 for t in texts])

    prompts = [{"prompt_ids": tokenizer.encode(text)} for text in ("The film", "I watched")]
    points = frontier.best_of_n_points(policy, tokenizer, prompts, gold, ns=[1, 4, 16], max_new_tokens=6)
    assert [p["setting"] for p in points] == ["n=1", "n=4", "n=16"]
    assert [p["kl"] for p in points] == pytest.approx([0.0, math.log(4) - 0.75, math.log(16) - 15 / 16])
    golds = [p["gold"] for p in points]
    assert golds[0] <= golds[1] <= golds[2] and golds[2] > golds[0]


def test_rejection_sampling_fine_tunes_on_the_best_sample_and_evaluates_along_every_round():
    from alignlab.sft import SFTConfig

    tokenizer, policy = _small_policy()
    before = [p.detach().clone() for p in policy.parameters()]
    scored, evaluated = [], []

    def longest(prompt_ids, completion_ids):          # a "reward model" that likes long completions
        scored.append(len(completion_ids))
        return torch.tensor([float(len(c)) for c in completion_ids])

    def evaluate(model):
        assert model is policy and not model.training
        evaluated.append(1)
        return {"gold": 0.5 + 0.1 * len(evaluated), "kl": 0.3 * len(evaluated)}

    prompts = [tokenizer.encode(text) for text in ("The film", "I watched", "This movie")]
    config = SFTConfig(steps=3, batch_size=2, lr=1e-3, warmup=1)
    points = frontier.rejection_sampling_points(policy, tokenizer, longest, prompts, n=4, rounds=2, config=config,
                                                evaluate=evaluate, eval_every=2)
    assert scored == [12, 12]                                      # each round: 3 prompts x 4 samples, scored once
    assert [p["step"] for p in points] == [2, 3, 5, 6]             # every 2 steps and each round's end; steps add up
    assert {p["method"] for p in points} == {frontier.RS} and {p["setting"] for p in points} == {"n=4"}
    assert [p["gold"] for p in points] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))   # trained in place
    assert frontier.RS in frontier.METHOD_STYLE


def test_best_of_n_points_cap_the_sequences_of_one_sampling_call(monkeypatch):
    """The gpt2 track's n = 128 for 16 prompts would sample 2,048 sequences at once: calls hold at most 1,024."""
    sizes = []

    class Stop(Exception):
        pass

    def fake_sample(policy, ids, *args, **kwargs):
        sizes.append(len(ids))
        raise Stop

    monkeypatch.setattr(rollout, "sample", fake_sample)
    policy = torch.nn.Linear(1, 1)
    tokenizer = type("Tokenizer", (), {"eos_token_id": 0, "pad_token_id": 1})()
    prompts = [{"prompt_ids": [5, 6]}] * 20
    for n_max, expected in ((32, 16 * 32), (128, 8 * 128), (2048, 2048)):   # the tiny track's n = 32: 16 prompts
        with pytest.raises(Stop):
            frontier.best_of_n_points(policy, tokenizer, prompts, None, ns=[1, n_max])
        assert sizes.pop() == expected


def test_frontier_plot_and_table_show_every_method():
    points = [{"method": m, "setting": s, "step": st, "kl": kl, "gold": g} for m, s, st, kl, g in [
        ("DPO", "beta=0.1", 0, 0.0, 0.5), ("DPO", "beta=0.1", 50, 4.0, 0.8),
        ("PPO", "kl_coef=0.05", 10, 3.0, 0.7), ("best-of-n", "n=4", 0, 0.64, 0.65)]]
    fig = frontier.plot_frontier(points, base={"gold": 0.5, "kl": 0.0})
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"DPO", "PPO", "best-of-n", "base policy"} <= set(labels)
    table = frontier.frontier_table(points)
    assert table.count("\n") == 4 and "kl_coef=0.05" in table and "0.800" in table


# ------------------------------------------------------------------ the baselines `make data` stores
def _tiny_track(grading=False):
    from alignlab import paths
    from alignlab.config import Track
    return Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", grading, "test")


def test_stored_baselines_load_only_for_their_own_settings(tmp_path, capsys):
    track = _tiny_track()
    prompts = [{"prompt_ids": [1, 2, 3]}, {"prompt_ids": [4, 5]}]
    settings = frontier.baseline_settings(track, "best-of-n", prompts, ns=[1, 2])
    point = {"method": "best-of-n", "setting": "n=2", "step": 0, "kl": 0.19, "gold": 0.6}
    path = tmp_path / "baselines.json"
    path.write_text(__import__("json").dumps({"best-of-n": {"settings": settings, "seconds": 3.0, "points": [point]}}))
    runs = []

    def run():
        runs.append(1)
        return [dict(point, gold=0.7)]

    assert frontier.stored_or_run(settings, run, path=path) == [point] and not runs
    assert "loaded" in capsys.readouterr().out
    assert frontier.stored_or_run(settings, run, recompute=True, path=path)[0]["gold"] == 0.7 and len(runs) == 1
    other = frontier.baseline_settings(track, "best-of-n", prompts, ns=[1, 2, 4])          # another sweep
    assert frontier.stored_or_run(other, run, path=path)[0]["gold"] == 0.7 and len(runs) == 2
    other = frontier.baseline_settings(track, "best-of-n", prompts[:1], ns=[1, 2])          # other prompts
    assert frontier.stored_or_run(other, run, path=path)[0]["gold"] == 0.7 and len(runs) == 3
    assert frontier.stored_or_run(settings, run, path=tmp_path / "none.json")[0]["gold"] == 0.7   # no file: run


def test_the_stored_baselines_are_today_s():
    """`make data` stored notebook 05's baselines for today's world, code and CPU sweep: the notebook loads them.

    Fails after a change to the world's files or to the code they came from (frontier.BASELINE_SOURCES):
    run `python scripts/build_frontier.py` (about two minutes) and commit data/frontier/baselines.json."""
    from alignlab.pairs import load_prompts
    track = _tiny_track()
    sweep = frontier.sweep_for_track(track)
    prompts = load_prompts("test", track)
    stored = frontier.load_baselines()
    expected = {method: settings for method, (settings, _) in
                frontier._baseline_runs(track, None, None, None, prompts, sweep, None).items()}
    assert set(expected) == {"PPO", "best-of-n", frontier.RS}
    for method, settings in expected.items():
        assert method in stored, f"data/frontier/baselines.json has no {method}: run python scripts/build_frontier.py"
        assert stored[method]["settings"] == settings, (
            f"the stored {method} baseline is stale: run python scripts/build_frontier.py")
        assert stored[method]["points"] and all(0 <= p["gold"] <= 1 and p["kl"] >= 0 for p in stored[method]["points"])
    assert len(stored["best-of-n"]["points"]) == len(sweep["best_of_n"])
    assert len(stored[frontier.RS]["points"]) == sweep["rs_rounds"] * sweep["rs_steps"] // sweep["rs_eval_every"]
