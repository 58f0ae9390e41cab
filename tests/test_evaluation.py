"""evaluate_policy: gold reward and sequence KL on held-out prompts, seeded and batched."""
import pytest
import torch

from alignlab import paths
from alignlab.pairs import load_prompts
from alignlab.evaluation import evaluate_policy
from alignlab.models import frozen_copy, load_policy, load_tokenizer
from alignlab.rewards import load_gold




@pytest.fixture(scope="module")
def world():
    return load_policy(paths.TINY_POLICY_DIR), load_tokenizer(paths.TINY_POLICY_DIR), load_gold(), load_prompts("test")


def test_kl_is_zero_when_the_policy_is_its_reference(world):
    policy, tok, gold, prompts = world
    ev = evaluate_policy(policy, frozen_copy(policy), tok, gold, prompts, n=48)
    assert ev["n"] == 48 and abs(ev["kl"]) < 1e-3
    assert 0.0 < ev["gold"] < 1.0 and len(ev["samples"]) == 4
    assert 0 < ev["length"] <= 24


def test_a_changed_policy_has_positive_kl_and_the_same_seed_repeats(world):
    policy, tok, gold, prompts = world
    changed = frozen_copy(policy)
    with torch.no_grad():
        changed.lm_head.weight.add_(0.05 * torch.randn_like(changed.lm_head.weight))  # tied to the embeddings
    a = evaluate_policy(changed, policy, tok, gold, prompts, n=48, seed=1)
    b = evaluate_policy(changed, policy, tok, gold, prompts, n=48, seed=1)
    assert a["kl"] > 0.5
    assert a == b


def test_gold_is_the_mean_score_of_prompt_plus_completion(world):
    policy, tok, prompts = world[0], world[1], world[3]
    seen = []

    def fake_gold(texts):
        seen.extend(texts)
        return torch.full((len(texts),), 0.25)
    ev = evaluate_policy(policy, frozen_copy(policy), tok, fake_gold, prompts, n=8, n_samples=8)
    assert ev["gold"] == pytest.approx(0.25)
    assert all(t.startswith(p["prompt"]) for t, p in zip(seen, prompts[:8]))
    assert seen == ev["samples"]


def test_training_modes_are_restored(world):
    policy, tok, gold, prompts = world
    policy.train()
    evaluate_policy(policy, frozen_copy(policy), tok, gold, prompts, n=4)
    assert policy.training
    policy.eval()


def test_no_prompts_is_a_clear_error(world):
    policy, tok, gold, prompts = world
    with pytest.raises(ValueError, match="at least one prompt"):
        evaluate_policy(policy, policy, tok, gold, prompts, n=0)
