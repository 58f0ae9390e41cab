"""Sampling: layout of a rollout, truncation at EOS, and log-probs that equal a fresh scoring pass."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alignlab import paths
from alignlab.models import load_policy, load_tokenizer
from alignlab.rollout import Rollout, draw, sample, sequence_token_logprobs



EOS, PAD = 0, 1


def small_model(vocab=12, seed=0):
    """A random GPT-2 with a tiny vocabulary: EOS is sampled often, so rows stop at different steps."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                     eos_token_id=EOS, pad_token_id=PAD, bos_token_id=EOS)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def tiny():
    return load_policy(paths.TINY_POLICY_DIR), load_tokenizer(paths.TINY_POLICY_DIR)


PROMPTS = [[5, 6, 7, 8, 9], [3], [4, 4, 2], [11, 10]]


def test_rollout_layout_left_padded_prompt_then_completion():
    ro = sample(small_model(), PROMPTS, 10, generator=torch.Generator().manual_seed(0))
    assert isinstance(ro, Rollout) and ro.prompt_width == 5
    B, T = ro.input_ids.shape
    assert B == 4 and ro.logprobs.shape == (B, T - 1) and ro.logprobs.dtype == torch.float32
    for i, p in enumerate(PROMPTS):
        row = ro.input_ids[i].tolist()
        assert row[5 - len(p):5] == p and row[:5 - len(p)] == [PAD] * (5 - len(p))
        assert ro.attention_mask[i, :5].tolist() == [0] * (5 - len(p)) + [1] * len(p)
        n = len(ro.completion_ids[i])
        assert row[5:5 + n] == ro.completion_ids[i] and ro.completion_mask[i].sum() == n
        assert ro.completion_mask[i, 5:5 + n].all() and ro.attention_mask[i, 5:5 + n].all()
        assert not ro.completion_mask[i, :5].any()


def test_rows_stop_at_eos_and_are_padded_after_it():
    ro = sample(small_model(), PROMPTS * 8, 12, generator=torch.Generator().manual_seed(1))
    assert ro.ended_with_eos.any() and not ro.ended_with_eos.all()
    for i, c in enumerate(ro.completion_ids):
        assert EOS not in c[:-1]                             # nothing is sampled after an EOS
        assert ro.ended_with_eos[i] == (c[-1] == EOS)
        assert len(c) == 12 or c[-1] == EOS
        rest = ro.input_ids[i, ro.prompt_width + len(c):]
        assert (rest == PAD).all() and not ro.attention_mask[i, ro.prompt_width + len(c):].any()


def test_logprobs_are_zero_outside_the_completion():
    ro = sample(small_model(), PROMPTS * 4, 12, generator=torch.Generator().manual_seed(2))
    outside = ro.completion_mask[:, 1:] == 0
    assert (ro.logprobs[outside] == 0).all() and (ro.logprobs[~outside] < 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_a_fresh_scoring_pass(temperature, tiny):
    policy, tok = tiny
    prompts = [tok("This movie")["input_ids"], tok("I went to see this film because")["input_ids"],
               tok("Worst")["input_ids"]]
    ro = sample(policy, prompts, 20, temperature=temperature, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fresh = sequence_token_logprobs(policy, ro.input_ids, ro.attention_mask, temperature=temperature)
    m = ro.completion_mask[:, 1:].bool()
    torch.testing.assert_close(ro.logprobs[m], fresh[m], atol=2e-4, rtol=1e-4)


def test_left_padding_does_not_change_scores(tiny):
    policy, tok = tiny
    short = tok("A great film")["input_ids"]
    long = tok("I rented this movie last night and")["input_ids"]
    ro = sample(policy, [short, long], 8, generator=torch.Generator().manual_seed(3))
    assert ro.attention_mask[0, 0] == 0                       # the short prompt is left-padded
    with torch.no_grad():
        batched = sequence_token_logprobs(policy, ro.input_ids, ro.attention_mask)[0]      # (T-1,)
        ids = torch.tensor([short + ro.completion_ids[0]])
        single = sequence_token_logprobs(policy, ids, torch.ones_like(ids))[0]
    real = (ro.attention_mask[0, :-1] * ro.attention_mask[0, 1:]).bool()   # context and target both real
    assert (batched[~real] == 0).all()
    torch.testing.assert_close(batched[real], single, atol=2e-4, rtol=1e-4)


def test_same_generator_seed_same_samples(tiny):
    policy, tok = tiny
    p = [tok("The acting")["input_ids"]] * 3
    a = sample(policy, p, 10, generator=torch.Generator().manual_seed(7), tokenizer=tok)
    b = sample(policy, p, 10, generator=torch.Generator().manual_seed(7), tokenizer=tok)
    assert a.completion_ids == b.completion_ids and a.texts == b.texts
    assert a.texts[0] == tok.decode(a.completion_ids[0], skip_special_tokens=True)


def test_bad_input_gets_clear_errors():
    m = small_model()
    with pytest.raises(ValueError, match="empty batch"):
        sample(m, [], 5)
    with pytest.raises(ValueError, match="prompt is empty"):
        sample(m, [[3], []], 5)
    with pytest.raises(ValueError, match="context of 32"):
        sample(m, [[3] * 30], 5)
    with pytest.raises(ValueError, match="temperature"):
        sample(m, [[3]], 5, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(m, [[3]], 0)
    with pytest.raises(ValueError, match="distinct pad"):
        sample(m, [[3]], 5, pad_id=EOS)
    class CudaGenerator:                      # stands in for torch.Generator(device="cuda") on a CPU-only machine
        device = torch.device("cuda")
    with pytest.raises(ValueError, match=r"torch.Generator\(device=track.device\)"):
        sample(m, [[3]], 5, generator=CudaGenerator())     # on the GPU track it is the other way round
    with pytest.raises(ValueError, match="context"):
        sequence_token_logprobs(m, torch.ones(1, 40, dtype=torch.long), torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        sequence_token_logprobs(m, torch.ones(0, 4, dtype=torch.long), torch.ones(0, 4, dtype=torch.long))


def test_all_zero_mask_row_scores_zeros_not_nan():
    m = small_model()
    ids = torch.tensor([[3, 4, 5], [PAD, PAD, PAD]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    lp = sequence_token_logprobs(m, ids, mask)
    assert torch.isfinite(lp).all() and (lp[1] == 0).all() and (lp[0] < 0).all()


def test_scoring_lets_gradients_flow():
    m = small_model().train()
    ids = torch.tensor([[3, 4, 5, 6]])
    sequence_token_logprobs(m, ids, torch.ones_like(ids)).sum().backward()
    assert m.transformer.wte.weight.grad is not None


def test_committed_pairs_reference_logps_match_the_committed_sft_policy(tiny):
    """The pairs' ref_*_logps were sampled from the SFT policy: a stale pairs file fails here."""
    from alignlab.data import collate_pairs
    from alignlab.models import load_sft_policy
    from alignlab.pairs import load_pairs
    policy, tok = load_sft_policy(None), tiny[1]
    rows = load_pairs("test")[:16]
    b = collate_pairs(rows, pad_id=tok.pad_token_id)
    with torch.no_grad():
        for name in ("chosen", "rejected"):
            lp = sequence_token_logprobs(policy, b[f"{name}_input_ids"], b[f"{name}_attention_mask"])
            summed = (lp * b[f"{name}_completion_mask"][:, 1:]).sum(-1)                          # (B,)
            torch.testing.assert_close(summed, b[f"ref_{name}_logps"], atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("V", [5, 64, 130, 4096])
def test_draw_samples_the_softmax_and_never_a_zero_probability_token(V):
    """draw() is an exact sampler: frequencies match softmax(logits) as closely as torch.multinomial's do."""
    torch.manual_seed(V)
    logits = torch.randn(2, V) * 2
    logits[:, 1] = float("-inf")                       # like the pad token: never drawn
    if V > 64:
        logits[1, 64:] = float("-inf")                 # a whole block of zero mass
    probs = torch.softmax(logits, -1)
    n = 40_000
    rows = torch.arange(2).repeat_interleave(n)
    tokens, logps = draw(logits[rows], torch.Generator().manual_seed(0))
    assert tokens.dtype == torch.long and tokens.shape == (2 * n,)
    assert torch.isfinite(logps).all() and not (tokens == 1).any()
    assert not (tokens[n:] >= 64).any() if V > 64 else True
    torch.testing.assert_close(logps, torch.log(probs[rows, tokens]), atol=1e-5, rtol=0)
    ours = torch.zeros(2, V).index_put_((rows, tokens), torch.ones(2 * n), accumulate=True) / n
    baseline = torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(1))
    theirs = torch.zeros(2, V).scatter_add_(1, baseline, torch.ones(2, n)) / n
    tv_ours = 0.5 * (ours - probs).abs().sum(-1)
    tv_theirs = 0.5 * (theirs - probs).abs().sum(-1)
    assert (tv_ours < 1.5 * tv_theirs + 0.005).all(), (tv_ours, tv_theirs)


def test_draw_with_one_possible_token_always_draws_it():
    logits = torch.full((3, 200), float("-inf"))
    logits[:, 137] = 0.0
    tokens, logps = draw(logits, torch.Generator().manual_seed(0))
    assert tokens.tolist() == [137, 137, 137] and torch.allclose(logps, torch.zeros(3))
