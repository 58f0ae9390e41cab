"""SFT: demonstrations that end, the loop, and the stored SFT policy (data/sft/) with its card's figures."""
import hashlib
import json

import pytest
import torch

from alignlab import paths
from alignlab.config import Track
from alignlab.data import load_reviews
from alignlab.models import SFT_CARD, SFT_WEIGHTS, load_policy, load_sft_policy, load_tokenizer
from alignlab.pairs import MAX_NEW_TOKENS, PROMPT_TOKENS, load_prompts
from alignlab.reference import sft_loss
from alignlab.sft import SFTConfig, completion_stats, make_demonstrations, train_sft

torch.set_num_threads(1)
TINY = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(paths.TINY_POLICY_DIR)


@pytest.fixture(scope="module")
def card():
    return json.loads((paths.SFT_DIR / SFT_CARD).read_text())


def test_demonstrations_are_a_prefix_then_the_rest_of_its_sentence_and_eos_within_the_budget(tok):
    reviews = load_reviews("train")[:300]
    demos = make_demonstrations(tok, reviews)
    assert len(demos) > 60
    assert make_demonstrations(tok, reviews) == demos                       # fixed seed
    by_id = {r["id"]: r["text"] for r in reviews}
    for d in demos:
        assert PROMPT_TOKENS[0] <= len(d["prompt_ids"]) <= PROMPT_TOKENS[1]
        assert 2 <= len(d["completion_ids"]) <= MAX_NEW_TOKENS and d["completion_ids"][-1] == tok.eos_token_id
        assert tok.eos_token_id not in d["completion_ids"][:-1]
        text = tok.decode(d["prompt_ids"] + d["completion_ids"][:-1])
        assert by_id[d["review"]].startswith(text)
        assert text.rstrip("\"')]").endswith((".", "!", "?"))
    lengths = {len(d["completion_ids"]) for d in demos}
    assert len(lengths) > 10                                                 # lengths vary


def test_sft_config_for_track_cpu_gpu_grading():
    assert SFTConfig.for_track(TINY).steps == 30
    assert SFTConfig.for_track(Track("tiny", "x", "cpu", True, "")).steps == 4
    gpu = SFTConfig.for_track(Track("gpt2", "gpt2", "cuda", False, ""), lr=1e-4)
    assert (gpu.steps, gpu.batch_size, gpu.lr) == (200, 64, 1e-4)


def test_train_sft_uses_the_given_loss_and_leaves_the_policy_in_eval_mode(tok):
    demos = make_demonstrations(tok, load_reviews("train")[:200])
    policy = load_policy(paths.TINY_POLICY_DIR)
    calls = []

    def loss_fn(logits, input_ids, completion_mask):
        calls.append(tuple(logits.shape))
        return sft_loss(logits, input_ids, completion_mask)
    losses = train_sft(policy, demos, SFTConfig(steps=3, batch_size=4, warmup=1), loss_fn, tok.pad_token_id, progress=False)
    assert len(losses) == 3 == len(calls) and all(torch.isfinite(torch.tensor(losses)))
    assert not policy.training
    with pytest.raises(ValueError, match="at least one demonstration"):
        train_sft(policy, [], SFTConfig(steps=1), sft_loss, tok.pad_token_id)


def test_the_stored_sft_policy_loads_on_the_tiny_track_and_differs_from_the_base():
    sft, base = load_sft_policy(TINY), load_policy(paths.TINY_POLICY_DIR)
    assert not sft.training and sft.lm_head.weight is sft.transformer.wte.weight
    assert sft.config.eos_token_id == base.config.eos_token_id and sft.config.pad_token_id == base.config.pad_token_id
    assert torch.equal(load_sft_policy(None).transformer.wte.weight, sft.transformer.wte.weight)
    diff = max((a - b).abs().max().item() for a, b in zip(sft.parameters(), base.parameters()))
    assert diff > 1e-3
    assert (paths.SFT_DIR / SFT_WEIGHTS).stat().st_size < 4e6                 # float16, no duplicated output layer


def test_another_track_warns_that_it_has_no_sft_stage_and_starts_from_its_base_model():
    track = Track("gpt2", str(paths.TINY_POLICY_DIR), "cpu", False, "")     # a gpt2-named track, offline
    with pytest.warns(UserWarning, match="no SFT stage"):
        policy = load_sft_policy(track)
    base = load_policy(track)
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), base.state_dict().values()))


def test_the_card_s_figures_are_consistent(card):
    assert card["base_policy"] == hashlib.sha256((paths.TINY_POLICY_DIR / "model.safetensors").read_bytes()).hexdigest()[:16], \
        "data/tiny-gpt2 changed since the SFT policy was built: rebuild it (scripts/build_sft.py)"
    assert card["demonstrations"]["n"] > 5000 and len(card["train_losses"]) == card["config"]["steps"]
    for side in ("base", "sft"):
        m = card[side]
        q1, q2, q3 = m["length_quartiles"]
        assert 1 <= q1 <= q2 <= q3 <= card["max_new_tokens"] and 1 <= m["length_mean"] <= card["max_new_tokens"]
        assert m["n"] == card["heldout_prompts"] == len(load_prompts("test"))
    assert card["base"]["eos_rate"] < 0.05 and card["sft"]["eos_rate"] > 0.8           # most SFT samples end
    assert card["sft"]["length_std"] > 3 and card["sft"]["length_quartiles"][2] - card["sft"]["length_quartiles"][0] >= 4
    assert card["sft"]["heldout_loss"] < card["base"]["heldout_loss"]


def test_the_stored_policy_still_gives_the_card_s_eos_rate(card, tok):
    prompts = [p["prompt_ids"] for p in load_prompts("test")]
    stats = completion_stats(load_sft_policy(None), prompts, tok, seed=card["eval_seed"])
    assert abs(stats["eos_rate"] - card["sft"]["eos_rate"]) < 0.05
    assert abs(stats["length_mean"] - card["sft"]["length_mean"]) < 1.0


def test_rejection_sampling_keeps_each_prompt_s_best_sample_by_the_score():
    from alignlab import sft
    policy, tokenizer = load_policy(TINY), load_tokenizer(TINY)
    prompts = [p["prompt_ids"] for p in load_prompts("test", TINY)[:6]]
    seen = []

    def longest(prompt_ids, completion_ids):                       # a score we can check by hand
        seen.append([len(c) for c in completion_ids])
        return [float(len(c)) for c in completion_ids]

    demos = sft.best_of_n_demonstrations(policy, prompts, 4, longest, tokenizer, max_new_tokens=12, seed=1)
    lengths = [x for call in seen for x in call]
    assert len(demos) == len(prompts) and len(lengths) == 4 * len(prompts)
    for i, d in enumerate(demos):
        group = lengths[4 * i: 4 * i + 4]
        assert d["prompt_ids"] == prompts[i]
        assert len(d["completion_ids"]) == max(group) == d["score"]
        assert d["mean_score"] == pytest.approx(sum(group) / 4)
    again = sft.best_of_n_demonstrations(policy, prompts, 4, longest, tokenizer, max_new_tokens=12, seed=1)
    assert [d["completion_ids"] for d in again] == [d["completion_ids"] for d in demos]      # seeded
