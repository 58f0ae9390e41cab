"""The arithmetic world (notebook 07) and the GRPO loop."""
from __future__ import annotations

import math

import pytest
import torch

from alignlab import arithmetic as ar
from alignlab import reference
from alignlab.config import Track
from alignlab.grpo import GRPOConfig, completion_token_logps, train_grpo, update_loss


def ids(text: str) -> torch.Tensor:
    return torch.tensor(ar.encode_answer(text) + [ar.PAD] * (ar.MAX_NEW - len(text) - 1))


def test_verifier_is_exact_match_up_to_eos():
    p = ar.Problem(37, 48)
    assert p.prompt == "37+48=" and p.answer == "85"
    assert ar.verify(p, ids("85")) == 1.0
    assert ar.verify(p, ids("95")) == 0.0
    assert ar.verify(p, ids("850")) == 0.0
    assert ar.verify(p, torch.tensor([ar.STOI["8"], ar.STOI["5"], ar.EOS, ar.STOI["1"]])) == 1.0


def test_split_is_fixed_and_disjoint():
    train, test = ar.split_problems()
    assert len(test) == 500 and len(train) == 8100 - 500
    assert not set(train) & set(test)
    assert ar.split_problems()[1][:5] == test[:5]


def test_completion_mask_includes_the_first_eos_only():
    comp = torch.tensor([[ar.STOI["1"], ar.EOS, ar.PAD, ar.PAD], [1, 2, 3, 4]])
    assert ar.completion_mask(comp).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_pass_at_k_unbiased_estimator():
    assert ar.pass_at_k(16, 0, 4) == 0.0
    assert ar.pass_at_k(16, 13, 4) == 1.0
    assert ar.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert ar.pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))


def test_restrict_leaves_only_digits_and_eos():
    out = ar.restrict(torch.zeros(2, len(ar.VOCAB)))
    finite = torch.isfinite(out[0]).nonzero().squeeze(1).tolist()
    assert sorted(finite) == sorted(ar.ANSWER_TOKENS)


def test_sampling_is_seeded_and_log_probs_match_sampling():
    model = ar.load_policy()
    problems = ar.split_problems()[1][:6]
    a = ar.sample(model, problems, n=3, generator=torch.Generator().manual_seed(0))
    b = ar.sample(model, problems, n=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[1], b[1]) and a[0].shape == (18, ar.PROMPT_LEN)
    lp = completion_token_logps(model, *a)
    assert lp.shape == (18, ar.MAX_NEW) and torch.all(lp <= 0)


def test_base_policy_matches_its_card():
    model = ar.load_policy()
    acc = ar.greedy_accuracy(model, ar.split_problems()[1])
    assert 0.2 <= acc <= 0.7, acc


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_a_short_grpo_run_raises_accuracy(aggregation):
    torch.set_num_threads(1)
    train, test = ar.split_problems()
    model = ar.load_policy()
    h = train_grpo(model, train, test, GRPOConfig(steps=12, eval_every=12, eval_problems=100, aggregation=aggregation),
                   progress=False)
    assert h.final["accuracy"] > h.evals[0]["accuracy"] + 0.1, (h.evals[0], h.final)
    assert [r["step"] for r in h.steps] == list(range(1, 13)) and [e["step"] for e in h.evals] == [0, 12]


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
def test_the_kl_term_runs_both_ways(kl_in):
    train, test = ar.split_problems()
    h = train_grpo(ar.load_policy(), train, test, GRPOConfig(steps=2, eval_every=2, eval_problems=20, kl_coef=0.1,
                                                               kl_in=kl_in, scale_rewards=kl_in == "loss"), progress=False)
    assert len(h.steps) == 2 and len(h.evals) == 2 and 0 <= h.final["accuracy"] <= 1


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_the_kl_term_sits_in_the_per_token_loss_and_is_aggregated_with_it(aggregation):
    """By hand: per token l_t + beta * k3_t, then the aggregation's own divisor (GRPO's objective, TRL)."""
    lp = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -0.7, -9.0], [-4.0, -4.0, -4.0]])
    old = torch.tensor([[-1.1, -0.4, -2.0], [-0.3, -0.9, -1.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -0.5, -3.0], [-0.1, -0.2, -5.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])        # lengths 3, 2 and an all-masked row
    adv, beta, c = torch.tensor([1.0, -0.5, 2.0]), 0.1, 0.2
    config = GRPOConfig(aggregation=aggregation, kl_coef=beta, kl_in="loss", clip_range=c)
    rows = []
    for b in range(3):
        terms = []
        for t in range(3):
            if mask[b, t]:
                ratio = math.exp(lp[b, t] - old[b, t])
                clipped = min(max(ratio, 1 - c), 1 + c)
                surrogate = max(-adv[b].item() * ratio, -adv[b].item() * clipped)
                log_r = (ref[b, t] - lp[b, t]).item()
                terms.append(surrogate + beta * (math.exp(log_r) - 1 - log_r))
        rows.append(terms)
    total = sum(sum(r) for r in rows)
    hand = {"sequence_mean": sum(sum(r) / max(len(r), 1) for r in rows) / 3,
            "token_mean": total / sum(len(r) for r in rows),
            "constant": total / (3 * 3)}[aggregation]
    assert update_loss(lp, old, ref, adv, mask, config).item() == pytest.approx(hand, rel=1e-6)
    no_kl = update_loss(lp, old, None, adv, mask, config).item()
    assert no_kl == pytest.approx(reference.grpo_policy_loss(lp, old, adv, mask, c, aggregation).item(), rel=1e-6)


def test_for_track_is_smallest_under_the_grader():
    grading = Track("tiny", "", "cpu", True, "test")
    normal = Track("tiny", "", "cpu", False, "test")
    assert GRPOConfig.for_track(grading).steps < GRPOConfig.for_track(normal).steps
    assert GRPOConfig.for_track(normal, aggregation="constant").aggregation == "constant"


def test_kl_estimators_k3_is_never_negative_and_k1_k3_unbiased():
    g = torch.Generator().manual_seed(0)
    logits_p, logits_q = torch.randn(10, generator=g), torch.randn(10, generator=g)
    lp, lq = torch.log_softmax(logits_p, 0), torch.log_softmax(logits_q, 0)
    exact = (lp.exp() * (lp - lq)).sum()
    draws = torch.multinomial(lp.exp(), 200_000, replacement=True, generator=g)
    k1, k2, k3 = reference.kl_estimators(lp[draws][None], lq[draws][None], torch.ones(1, len(draws)))
    assert torch.all(k3 >= 0)
    assert k1.mean().item() == pytest.approx(exact.item(), abs=0.02)
    assert k3.mean().item() == pytest.approx(exact.item(), abs=0.02)
