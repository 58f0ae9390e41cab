"""Notebook 02's plumbing: reward-model training with a given loss, its evaluations, best-of-n from one pool."""
import itertools
import math
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from alignlab import best_of_n, paths, reward_model  # noqa: E402
from alignlab.config import Track  # noqa: E402
from alignlab.reward_model import RewardModelConfig  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------ metrics
def test_accuracy_is_strict_a_tie_is_a_miss():
    chosen = torch.tensor([1.0, 2.0, 0.0, 5.0])
    rejected = torch.tensor([0.0, 2.0, 1.0, 4.0])
    assert reward_model.pairwise_accuracy(chosen, rejected) == pytest.approx(0.5)


def test_calibration_counts_both_orientations_and_is_symmetric():
    gap = torch.linspace(-3, 3, 101)
    cal = reward_model.calibration(gap, torch.zeros_like(gap), n_bins=10)
    assert float(cal["count"].sum()) == 2 * 101
    assert torch.allclose(cal["predicted"], 1 - cal["predicted"].flip(0), atol=1e-6)
    assert torch.allclose(cal["empirical"], 1 - cal["empirical"].flip(0), atol=1e-6)


def test_calibration_of_a_calibrated_model_lies_on_the_diagonal():
    g = torch.Generator().manual_seed(0)
    gap = torch.randn(20000, generator=g, dtype=torch.float64) * 2
    chosen_is_a = torch.rand(20000, generator=g, dtype=torch.float64) < torch.sigmoid(gap)
    # orient every pair as (chosen, rejected): when b was chosen the gap flips
    chosen_minus_rejected = torch.where(chosen_is_a, gap, -gap)
    cal = reward_model.calibration(chosen_minus_rejected, torch.zeros_like(gap), n_bins=10)
    keep = cal["count"] > 500
    assert torch.allclose(cal["empirical"][keep], cal["predicted"][keep], atol=0.03)
    assert isinstance(reward_model.plot_calibration(cal), matplotlib.figure.Figure)


def test_pearson_of_a_line_is_one():
    x = torch.arange(10.0)
    assert reward_model.pearson(x, 3 * x + 1) == pytest.approx(1.0)
    assert reward_model.pearson(x, -x) == pytest.approx(-1.0)


def length_pairs():
    """Four pairs: (chosen length, rejected length, gold chosen, gold rejected, r chosen, r rejected)."""
    rows = [(3, 1, 0.8, 0.2, 1.0, 0.0),      # longer chosen; the RM, the label and the gold prefer it
            (1, 4, 0.6, 0.4, 0.0, 2.0),      # longer rejected; the RM prefers it, label and gold do not
            (2, 2, 0.7, 0.3, 1.0, 0.0),      # equal lengths: in no length rate
            (5, 2, 0.5, 0.5, 0.0, 1.0)]      # longer chosen, equal gold; the RM prefers the shorter
    pairs = [{"prompt_ids": [i % 2], "chosen_ids": [7] * c, "rejected_ids": [8] * r, "gold_chosen": gc,
              "gold_rejected": gr} for i, (c, r, gc, gr, _, _) in enumerate(rows)]
    return torch.tensor([row[4] for row in rows]), torch.tensor([row[5] for row in rows]), pairs


def test_length_preference_counts_the_longer_side_for_the_rm_the_label_and_the_gold():
    chosen, rejected, pairs = length_pairs()
    out = reward_model.length_preference(chosen, rejected, pairs)
    assert (out["pairs"], out["unequal_length"]) == (4, 3)
    assert out["prefers_longer"] == pytest.approx(2 / 3) and out["label_longer"] == pytest.approx(2 / 3)
    assert out["gold_longer"] == pytest.approx(1 / 2)                          # the tied-gold pair is left out
    assert out["accuracy_chosen_longer"] == pytest.approx(1 / 2) and out["accuracy_chosen_shorter"] == 0.0
    lengths = torch.tensor([3, 1, 2, 5, 1, 4, 2, 2], dtype=torch.float64)   # every chosen, then every rejected
    golds = torch.tensor([0.8, 0.6, 0.7, 0.5, 0.2, 0.4, 0.3, 0.5], dtype=torch.float64)
    assert out["corr_score_length"] == pytest.approx(reward_model.pearson(torch.cat([chosen, rejected]), lengths))
    assert out["corr_gold_length"] == pytest.approx(reward_model.pearson(golds, lengths))
    with pytest.raises(ValueError, match="score the same pairs"):
        reward_model.length_preference(chosen[:3], rejected[:3], pairs)


def test_length_preference_report_adds_counts_and_standard_errors(capsys):
    chosen, rejected, pairs = length_pairs()
    out = reward_model.length_preference_report(chosen, rejected, pairs)
    expected_n = {"prefers_longer": 3, "label_longer": 3, "gold_longer": 2,
                  "accuracy_chosen_longer": 2, "accuracy_chosen_shorter": 1}
    for key, n in expected_n.items():
        p = out[key]
        assert out[f"n_{key}"] == n and out[f"se_{key}"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert out["prompts"] == 2
    printed = capsys.readouterr().out
    assert "0.667 +- 0.272" in printed and "(2 pairs)" in printed and "reward model score" in printed


# ------------------------------------------------------------------ best-of-n
def test_best_of_n_weights_equal_brute_force_over_all_subsets():
    N, n = 6, 3
    scores = torch.arange(N, dtype=torch.float64)          # already ascending
    counts = torch.zeros(N, dtype=torch.float64)
    subsets = list(itertools.combinations(range(N), n))
    for s in subsets:
        counts[max(s)] += 1
    assert torch.allclose(best_of_n.best_of_n_weights(N, n), counts / len(subsets))
    assert float(best_of_n.best_of_n_weights(N, n) @ scores) == pytest.approx(float(counts @ scores) / len(subsets))


def test_best_of_n_weights_edge_cases():
    assert torch.allclose(best_of_n.best_of_n_weights(5, 1), torch.full((5,), 0.2, dtype=torch.float64))
    assert torch.equal(best_of_n.best_of_n_weights(5, 5), torch.tensor([0, 0, 0, 0, 1.0], dtype=torch.float64))
    assert float(best_of_n.best_of_n_weights(64, 17).sum()) == pytest.approx(1.0)


def test_best_of_n_curve_proxy_rises_and_the_gold_judge_is_an_upper_bound():
    g = torch.Generator().manual_seed(0)
    gold = torch.rand(32, 16, generator=g)
    proxy = gold + 0.3 * torch.randn(32, 16, generator=g)   # a noisy proxy
    ns = [1, 2, 4, 8, 16]
    curve = best_of_n.best_of_n_curve(proxy, gold, ns)
    oracle = best_of_n.best_of_n_curve(proxy, gold, ns, select_by="gold")
    assert curve["gold"][0] == pytest.approx(float(gold.double().mean()))   # n = 1: no selection
    assert torch.all(curve["proxy"].diff() > 0)
    assert torch.all(oracle["gold"] >= curve["gold"] - 1e-9)
    assert oracle["gold"][-1] == pytest.approx(float(gold.double().max(1).values.mean()))
    kl = [math.log(n) - (n - 1) / n for n in ns]
    assert isinstance(best_of_n.plot_best_of_n(curve, kl, oracle=oracle), matplotlib.figure.Figure)


# ------------------------------------------------------------------ configs
def make_track(name="tiny", grading=False, policy="x"):
    return Track(name, policy, "cpu", grading, "test")


def test_config_scales_down_under_the_grader_and_up_on_the_gpu_track():
    cpu = RewardModelConfig.for_track(make_track())
    grading = RewardModelConfig.for_track(make_track(grading=True))
    gpu = RewardModelConfig.for_track(make_track("gpt2"))
    assert grading.steps < cpu.steps < gpu.steps
    assert RewardModelConfig.for_track(make_track(), steps=7).steps == 7
    bon = best_of_n.BestOfNConfig.for_track
    assert bon(make_track(grading=True)).n_max < bon(make_track()).n_max < bon(make_track("gpt2")).n_max
    # One sampling call holds prompts_per_call * n_max sequences' KV cache: 4,096 of GPT-2 124M at 56 tokens
    # is 17 GB, more than a T4 has; at most 1,024 (4.2 GB) on every track.
    assert all(c.prompts_per_call * c.n_max <= 1024 for c in (bon(make_track("gpt2")), bon(make_track())))


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def toy_track(tmp_path_factory):
    """A 1-layer random GPT-2 with the course tokenizer, saved like the tiny policy."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab import models

    src = paths.TINY_POLICY_DIR
    if not (src / "tokenizer.json").exists():
        pytest.skip("the course tokenizer (data/tiny-gpt2) is not built yet")
    folder = tmp_path_factory.mktemp("toy-gpt2")
    for f in src.glob("tokenizer*"):
        shutil.copy(f, folder / f.name)
    for f in ("special_tokens_map.json",):
        if (src / f).exists():
            shutil.copy(src / f, folder / f)
    tok = models.load_tokenizer(folder)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return make_track(policy=str(folder)), tok


def toy_pairs(n=64, good=5, bad=6, seed=0):
    """Pairs where the chosen completion ends in token ``good`` and the rejected one in ``bad``."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(10, 200, (3,), generator=g).tolist()
        body = torch.randint(10, 200, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        rows.append({"prompt_ids": prompt, "chosen_ids": body + [good], "rejected_ids": body + [bad]})
    return rows


def test_training_learns_a_separable_preference(toy_track):
    track, tok = toy_track
    config = RewardModelConfig(steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=1)
    rm = reward_model.train_reward_model(toy_pairs(), config, track=track, progress=False)
    assert not rm.training
    held_out = toy_pairs(seed=1)
    chosen, rejected = reward_model.score_pairs(rm, held_out, tok)
    assert reward_model.pairwise_accuracy(chosen, rejected) == 1.0
    assert len(rm.train_losses) == 40 and rm.train_losses[-1] < rm.train_losses[0]


def test_training_uses_the_given_loss_and_reader(toy_track):
    track, tok = toy_track
    read = []

    def last_index(mask):
        read.append(mask.shape)
        return (torch.arange(mask.shape[1]) * mask).amax(1)

    def flipped_loss(chosen, rejected, margin=None):         # prefers the rejected completion
        return -F.logsigmoid(rejected - chosen).mean()

    config = RewardModelConfig(steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=1)
    rm = reward_model.train_reward_model(toy_pairs(), config, loss_fn=flipped_loss, track=track,
                                         last_index_fn=last_index, progress=False)
    assert read, "the reward model did not read with the given last_index_fn"
    chosen, rejected = reward_model.score_pairs(rm, toy_pairs(seed=1), tok)
    assert reward_model.pairwise_accuracy(chosen, rejected) == 0.0
    assert isinstance(reward_model.plot_training(rm), matplotlib.figure.Figure)


def test_margin_reaches_the_loss(toy_track):
    track, _ = toy_track
    seen = []

    def loss(chosen, rejected, margin=None):
        seen.append(margin)
        return -F.logsigmoid(chosen - rejected).mean()

    config = RewardModelConfig(steps=2, batch_size=4, margin=0.5)
    reward_model.train_reward_model(toy_pairs(8), config, loss_fn=loss, track=track, progress=False)
    assert seen == [0.5, 0.5]


def test_chosen_and_rejected_of_different_widths_are_scored_alike(toy_track):
    """collate_pairs pads each side to its own width; a batch where they differ trains and scores."""
    track, tok = toy_track
    rows = toy_pairs(8)
    rows[0] = {**rows[0], "rejected_ids": rows[0]["rejected_ids"] + [7, 8, 9]}   # the widest row is a rejected one
    config = RewardModelConfig(steps=2, batch_size=8, warmup_steps=1)
    rm = reward_model.train_reward_model(rows, config, track=track, progress=False)
    chosen, rejected = reward_model.score_pairs(rm, rows, tok)
    for i, row in enumerate(rows):                                          # the same as scoring each alone
        alone_c, alone_r = reward_model.score_pairs(rm, [row], tok)
        assert torch.allclose(chosen[i], alone_c[0], atol=1e-5) and torch.allclose(rejected[i], alone_r[0], atol=1e-5)


def test_gao_fit_recovers_a_known_law():
    kl = [math.log(n) - (n - 1) / n for n in (1, 2, 4, 8, 16, 32, 64)]
    gold = [0.5 + math.sqrt(k) * (0.3 - 0.1 * math.sqrt(k)) for k in kl]
    a, b = best_of_n.fit_gao(kl, gold)
    assert a == pytest.approx(0.3, abs=1e-9) and b == pytest.approx(0.1, abs=1e-9)


def test_n_for_kl_finds_the_smallest_n_like_counting_up():
    from alignlab.best_of_n import n_for_kl
    from alignlab.reference import best_of_n_kl

    for kl in (0.0, 0.05, 0.1931, 1.0, 3.1745, 7.3):
        assert n_for_kl(best_of_n_kl, kl) == next(n for n in range(1, 10 ** 5) if best_of_n_kl(n) >= kl)
    assert n_for_kl(best_of_n_kl, 54.0) is None                      # beyond n = 10 million


# ------------------------------------------------------------------ notebook 04's stored reward models
def test_the_stored_reward_models_are_today_s_and_load_only_for_their_own_config():
    """`make data` stored notebook 04's two reward models; they load for the tiny track's CPU config, else None."""
    tiny = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "test")
    for name in reward_model.PPO_REWARD_MODELS:
        config = reward_model.ppo_reward_model_config(name, tiny)
        model = reward_model.load_stored(name, config, tiny)
        assert model is not None, (f"data/reward-models/{name} is missing or stale (trained from another policy, "
                                   "pairs or config): run `python scripts/build_reward_models.py`")
        assert len(model.train_losses) == config.steps and not model.training
        assert reward_model.load_stored(name, RewardModelConfig.for_track(tiny, steps=config.steps + 1), tiny) is None
        assert reward_model.load_stored(name, config, Track("gpt2", "gpt2", "cpu", False, "test")) is None
    grading = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", True, "test")
    assert reward_model.ppo_reward_model_config("ppo", grading).steps == 8      # grading mode trains its own, small


def test_a_stored_reward_model_round_trips_at_float16_precision(toy_track, tmp_path, monkeypatch):
    track, tok = toy_track
    config = RewardModelConfig(steps=3, batch_size=8, warmup_steps=1)
    model = reward_model.train_reward_model(toy_pairs(16), config, track=track, progress=False)
    monkeypatch.setattr(reward_model, "_fingerprint", lambda: "fixed")
    reward_model.save_stored(model, "toy", config, folder=tmp_path)
    loaded = reward_model.load_stored("toy", config, track, folder=tmp_path)
    ids, mask = torch.randint(0, 30, (4, 6)), torch.ones(4, 6, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model(ids, mask), atol=5e-3, rtol=5e-3)
    assert loaded.train_losses == model.train_losses
    monkeypatch.setattr(reward_model, "_fingerprint", lambda: "another policy or pairs")
    assert reward_model.load_stored("toy", config, track, folder=tmp_path) is None
