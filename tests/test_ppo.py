"""The PPO loop of notebook 04 (alignlab.ppo): a few fast iterations on a randomly initialized tiny GPT-2."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from alignlab import reference
from alignlab.config import Track
from alignlab.models import PolicyWithValue, frozen_copy, load_policy, load_tokenizer
from alignlab.ppo import (
    KLController,
    ModelReward,
    PPOConfig,
    PPOFunctions,
    TextReward,
    collect_rollouts,
    forward_logprobs_values,
    train_ppo,
)

PROMPT_TEXTS = ["This movie was", "I watched it", "The acting", "What a"]
SMALL = PPOConfig(iterations=2, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=6, eval_every=1,
                  temperature=0.7)   # a temperature other than 1, so dividing the logits by it matters


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 2-layer, width-32 GPT-2 with the course's tokenizer, saved like the embedded policy."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab import paths

    tokenizer = load_tokenizer(paths.require(paths.TINY_POLICY_DIR, "The tiny policy's tokenizer"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    path = tmp_path_factory.mktemp("rand-gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def setup(model_dir):
    tokenizer = load_tokenizer(model_dir)
    base = load_policy(model_dir)
    return PolicyWithValue(base), frozen_copy(base), tokenizer


@pytest.fixture()
def prompts(setup):
    """Prompts as rows of load_prompts: dicts with prompt_ids."""
    tokenizer = setup[2]
    return [{"prompt": t, "prompt_ids": tokenizer(t)["input_ids"]} for t in PROMPT_TEXTS]


def count_e(texts):
    """A toy reward: how often the letter e appears."""
    return torch.tensor([t.count("e") / 10 for t in texts])


def test_rollout_logprobs_are_recomputed_at_the_sampling_temperature(setup, prompts):
    policy, ref, tokenizer = setup
    batch = collect_rollouts(policy, ref, tokenizer, prompts, SMALL, generator=torch.Generator().manual_seed(0))
    B, M = batch.mask.shape
    assert batch.input_ids.shape == (B, M + 1) and B == len(prompts)
    assert batch.texts[0].startswith("This movie was"), "texts are prompt + completion (what the gold reads)"
    assert batch.logprobs.shape == batch.ref_logprobs.shape == batch.values.shape == (B, M)
    assert torch.all(batch.mask.sum(-1) >= 1), "every rollout has at least one completion token"
    with torch.no_grad():
        same, _, _ = forward_logprobs_values(policy, batch.input_ids, batch.attention_mask, SMALL.temperature, batch.mask)
        other, _, _ = forward_logprobs_values(policy, batch.input_ids, batch.attention_mask, 1.0, batch.mask)
    # Before any update the ratio is exactly 1 (same temperature, no dropout) ...
    torch.testing.assert_close(same * batch.mask, batch.logprobs)
    # ... and scoring at another temperature would not give it.
    assert not torch.allclose(other * batch.mask, batch.logprobs, atol=1e-3)
    # The policy is its own reference at the start: the KL-shaped reward has no penalty yet.
    torch.testing.assert_close(batch.logprobs, batch.ref_logprobs, atol=1e-5, rtol=0)


def test_a_few_iterations_log_everything_and_move_the_policy(setup, prompts):
    policy, ref, tokenizer = setup
    before = [p.detach().clone() for p in policy.parameters()]
    torch.manual_seed(0)
    history = train_ppo(policy, ref, tokenizer, TextReward(count_e), prompts, SMALL,
                        evaluate=lambda m: {"gold": 0.5, "kl": 0.0}, progress=False)
    assert [row["iteration"] for row in history.steps] == [1, 2]
    for key in ("score", "rollout_kl", "kl_coef", "pg_loss", "v_loss", "clipfrac", "approx_kl", "entropy", "time"):
        values = history.column(key)
        assert all(torch.isfinite(torch.tensor(v)) for v in values), key
    assert [e["iteration"] for e in history.evals] == [0, 1, 2], "evaluated at the start and every eval_every"
    assert history.final["gold"] == 0.5
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters())), "the update changed the policy"
    assert all(not p.requires_grad for p in ref.parameters()), "the reference stays frozen"


def test_the_loop_calls_the_functions_it_is_given(setup, prompts):
    policy, ref, tokenizer = setup
    called = set()

    def spy(name):
        def fn(*args, **kwargs):
            called.add(name)
            return getattr(reference, name)(*args, **kwargs)
        return fn

    fns = PPOFunctions(**{name: spy(name) for name in PPOFunctions.__dataclass_fields__})
    train_ppo(policy, ref, tokenizer, TextReward(count_e), prompts, replace(SMALL, iterations=1), fns=fns, progress=False)
    assert called == set(PPOFunctions.__dataclass_fields__)


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.05)
    fixed.update(kl=100.0, n_rollouts=64)
    assert fixed.value == 0.05
    adaptive = KLController(0.05, target=6.0, horizon=640)
    adaptive.update(kl=12.0, n_rollouts=64)                   # too much KL: error clipped to +0.2
    assert adaptive.value == pytest.approx(0.05 * (1 + 0.2 * 64 / 640))
    adaptive.update(kl=3.0, n_rollouts=64)                    # too little: the coefficient falls
    assert adaptive.value < 0.05 * (1 + 0.2 * 64 / 640)


def test_model_reward_normalizes_with_shift_and_scale():
    class Constant(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return input_ids[:, 0].float()

    class FakeBatch:
        input_ids = torch.tensor([[3, 0], [5, 0]])
        attention_mask = torch.ones(2, 2)

    reward = ModelReward(Constant(), shift=4.0, scale=2.0)
    torch.testing.assert_close(reward(FakeBatch()), torch.tensor([-0.5, 0.5]))


def test_config_for_track_is_smallest_when_grading():
    cpu = PPOConfig.for_track(Track("tiny", "x", "cpu", False, ""))
    grading = PPOConfig.for_track(Track("tiny", "x", "cpu", True, ""))
    gpu = PPOConfig.for_track(Track("gpt2", "gpt2", "cuda", False, ""), kl_coef=0.2)
    assert grading.iterations * grading.batch_size < cpu.iterations * cpu.batch_size
    assert gpu.batch_size >= cpu.batch_size and gpu.kl_coef == 0.2
    assert cpu.batch_size % cpu.minibatch_size == 0 and grading.batch_size % grading.minibatch_size == 0


def test_run_ppo_trains_a_fresh_policy_and_returns_gold_and_kl_per_evaluation(model_dir):
    """Notebook 05's entry point: run_ppo(source, reward, config) -> history.evals with gold and kl."""
    from alignlab.ppo import run_ppo

    config = replace(SMALL, iterations=2, eval_every=1, eval_prompts=4, kl_coef=0.2)
    history = run_ppo(str(model_dir), TextReward(count_e), config, progress=False)
    assert [e["iteration"] for e in history.evals] == [0, 1, 2]
    assert all({"gold", "kl"} <= set(e) for e in history.evals)
    assert history.evals[0]["kl"] == pytest.approx(0.0, abs=0.01), "the fresh policy starts at the reference"
    assert history.config["kl_coef"] == 0.2


def test_run_ppo_starts_the_value_model_from_a_reward_model_and_the_gold_gets_a_head(model_dir, monkeypatch):
    """Notebook 04's layout in run_ppo: a reward model is copied into the value model; a text reward gets a value head."""
    from alignlab import ppo
    from alignlab.models import RewardModel

    seen = []
    real_train = ppo.train_ppo

    def spy(policy, *args, **kwargs):
        seen.append(policy)
        return real_train(policy, *args, **kwargs)

    monkeypatch.setattr(ppo, "train_ppo", spy)
    config = replace(SMALL, iterations=1, eval_every=1, eval_prompts=4, normalize_samples=8)
    rm = RewardModel.from_policy(str(model_dir)).eval()
    start = {k: v.clone() for k, v in rm.state_dict().items()}
    ppo.run_ppo(str(model_dir), rm, config, progress=False)
    ppo.run_ppo(str(model_dir), TextReward(count_e), config, progress=False)
    with_rm, with_text = seen
    assert with_rm.value_model is not None and with_rm.value_model is not rm
    assert with_rm.scale > 0 and with_rm.shift != 0.0, "the values share the reward's normalization"
    assert with_text.value_model is None and hasattr(with_text, "value_head")
    for k, v in rm.state_dict().items():   # PPO trains the copy, never the reward model it optimizes
        torch.testing.assert_close(v, start[k])


def test_ppo_raises_a_toy_reward_that_the_base_policy_meets_half_the_time(setup, prompts):
    """The reward: the share of completion tokens in the lower half of the vocabulary (about 0.5 at the start)."""
    policy, ref, tokenizer = setup
    half = len(tokenizer) // 2

    def lower_half_share(batch):
        tokens = batch.input_ids[:, 1:]                                           # (B, M): entry t is token t+1
        return ((tokens < half).float() * batch.mask).sum(-1) / batch.mask.sum(-1).clamp(min=1)   # (B,)

    config = replace(SMALL, iterations=25, batch_size=32, minibatch_size=16, learning_rate=1e-2, kl_coef=0.0,
                     temperature=1.0, eval_every=100)
    torch.manual_seed(0)
    history = train_ppo(policy, ref, tokenizer, lower_half_share, prompts, config, progress=False)
    scores = history.column("score")
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert 0.3 < first < 0.7, f"the toy reward should start near 0.5, got {first:.2f}"
    assert last > first + 0.3, f"PPO did not raise the toy reward: {first:.2f} -> {last:.2f} ({scores})"


def test_projecting_only_the_masked_positions_changes_no_number():
    """forward_logprobs_values' fast path (vocabulary projection at masked positions) equals the plain one."""
    from alignlab.models import PolicyWithValue, load_policy
    from alignlab.ppo import _forward_logprobs_values_all_positions
    from alignlab import paths

    torch.manual_seed(0)
    for value_from in (None, "model"):
        base = load_policy(paths.TINY_POLICY_DIR)
        if value_from is None:
            policy = PolicyWithValue(base)
        else:
            from alignlab.models import RewardModel
            policy = PolicyWithValue.around(base, RewardModel(load_policy(paths.TINY_POLICY_DIR).transformer))
        ids = torch.randint(5, 4000, (3, 9))
        attention = torch.ones_like(ids)
        attention[0, :2] = 0
        mask = torch.zeros(3, 8)
        mask[:, 4:] = 1
        mask[2, 7] = 0
        for temperature in (1.0, 0.7):
            fast = forward_logprobs_values(policy, ids, attention, temperature, mask)
            plain = _forward_logprobs_values_all_positions(policy, ids, attention, temperature, mask)
            for a, b in zip(fast, plain):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        fast[0].sum().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in policy.parameters())


def test_the_history_plots_draw_length_and_eos_beside_gold_and_kl():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignlab.ppo import PPOHistory
    from alignlab.ppo_plots import plot_ppo_history, plot_proxy_vs_gold
    steps = [{"iteration": i, "score": 0.1 * i, "rollout_kl": 0.5 * i, "length": 14.0 - i, "clipfrac": 0.0,
              "approx_kl": 0.0, "entropy": 3.0} for i in (1, 2)]
    evals = [{"iteration": i, "gold": 0.5, "kl": 0.5 * i, "length": 14.0 - i, "eos_rate": 0.9} for i in (0, 2)]
    history = PPOHistory(steps=steps, evals=evals)
    fig = plot_ppo_history(history)
    length_ax = fig.axes[3]
    assert "length" in length_ax.get_title() and len(length_ax.lines) == 2
    assert list(length_ax.lines[1].get_ydata()) == [14.0, 12.0]              # the held-out evaluations
    assert list(fig.axes[4].lines[0].get_ydata()) == [0.9, 0.9]             # EOS rate
    no_length = PPOHistory(steps=steps, evals=[{k: v for k, v in e.items() if k in ("iteration", "gold", "kl")}
                                               for e in evals])
    assert len(plot_proxy_vs_gold({"a": history, "b": no_length}).axes[3].lines) == 1   # only the run that logged it
    plt.close("all")
