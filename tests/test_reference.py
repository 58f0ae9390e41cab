"""The reference math obeys the contracts of docs/conventions.md (read these as the spec)."""
import math

import pytest
import torch
import torch.nn.functional as F

from alignlab import reference as R

torch.set_num_threads(1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def pairs(B=6, seed=0, scale=5.0, dtype=torch.float64):
    """Four (B,) summed log-probs: policy chosen, policy rejected, ref chosen, ref rejected."""
    return [-(scale * torch.rand(B, generator=gen(seed + i), dtype=dtype)) * 10 for i in range(4)]


def right_and_left_mask():
    return torch.tensor([[0, 0, 1, 1, 1, 0, 0],    # prompt, completion, right padding
                         [0, 1, 1, 1, 1, 1, 1],    # left padded prompt, completion to the end
                         [1, 1, 1, 1, 1, 1, 1]])


# ------------------------------------------------------------ log_softmax
def test_log_softmax_equals_torch_and_exponentiates_to_one():
    x = torch.randn(3, 4, 11, generator=gen(), dtype=torch.float64)
    assert torch.allclose(R.log_softmax(x), torch.log_softmax(x, -1))
    assert torch.allclose(R.log_softmax(x).exp().sum(-1), torch.ones(3, 4, dtype=torch.float64))


def test_log_softmax_is_stable_for_huge_logits():
    x = torch.tensor([[1e4, 0.0, -1e4], [1000.0, 1000.0, 999.0]])
    out = R.log_softmax(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.log_softmax(x.double(), -1).float())


def test_log_softmax_upcasts_low_precision():
    x = torch.randn(2, 9, generator=gen()).bfloat16()
    assert R.log_softmax(x).dtype == torch.float32
    assert R.log_softmax(x.double()).dtype == torch.float64


# ------------------------------------------------------------ 01
def test_bradley_terry_is_sigmoid_of_the_gap_and_broadcasts():
    ra = torch.tensor([[0.0], [2.0]])
    rb = torch.tensor([0.0, 1.0, 1e4])
    p = R.bradley_terry_probability(ra, rb)
    assert p.shape == (2, 3)
    assert torch.allclose(p, torch.sigmoid(ra - rb))
    assert p[0, 0] == 0.5 and torch.isfinite(p).all()
    assert torch.allclose(R.bradley_terry_probability(rb, ra) + p, torch.ones(2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_token_logprobs_equals_the_naive_gather(dtype):
    logits = (torch.randn(3, 8, 13, generator=gen()) * 4).to(dtype)
    ids = torch.randint(0, 13, (3, 8), generator=gen(1))
    naive = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    out = R.token_logprobs(logits, ids)
    assert out.shape == (3, 7)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.allclose(out.double(), naive, atol=1e-5)


def test_token_logprobs_shifts_entry_t_scores_token_t_plus_1():
    V = 5
    ids = torch.tensor([[1, 3, 4]])
    logits = torch.full((1, 3, V), -50.0)
    logits[0, 0, 3] = 0.0      # position 0 predicts token 3 = ids[0, 1]
    logits[0, 1, 4] = 0.0      # position 1 predicts token 4 = ids[0, 2]
    assert torch.allclose(R.token_logprobs(logits, ids), torch.zeros(1, 2), atol=1e-6)


def test_token_logprobs_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        R.token_logprobs(torch.randn(3, 5), torch.zeros(3, 5, dtype=torch.long))


def test_sequence_logprob_sums_completion_tokens_with_the_shifted_mask():
    token_logps = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])   # scores tokens 1..4
    mask = torch.tensor([[0, 0, 1, 1, 0]])                    # completion = tokens 2 and 3
    assert R.sequence_logprob(token_logps, mask).item() == -5.0
    assert R.sequence_logprob(token_logps, mask, average=True).item() == -2.5


def test_sequence_logprob_masked_tokens_get_zero_gradient():
    token_logps = torch.randn(2, 6, generator=gen(), requires_grad=True)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]])
    R.sequence_logprob(token_logps, mask).sum().backward()
    assert torch.equal(token_logps.grad, mask[:, 1:].float())


def test_sequence_logprob_rejects_a_misaligned_mask_and_empty_average():
    with pytest.raises(ValueError, match="completion_mask"):
        R.sequence_logprob(torch.zeros(2, 5), torch.ones(2, 5))
    with pytest.raises(ValueError):
        R.sequence_logprob(torch.zeros(1, 3), torch.tensor([[1, 0, 0, 0]]), average=True)


def test_sft_loss_is_a_token_mean_of_the_completion_nll_with_the_shift_inside():
    logits = torch.randn(2, 5, 7, generator=gen(), dtype=torch.float64)
    ids = torch.randint(0, 7, (2, 5), generator=gen(1))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])          # 2 + 4 completion tokens, right padding
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = -(logps * mask[:, 1:]).sum() / 6                       # one mean over the batch's 6 tokens
    assert torch.allclose(R.sft_loss(logits, ids, mask), expected)
    labels = ids.masked_fill(mask == 0, -100)[:, 1:]
    assert torch.allclose(R.sft_loss(logits, ids, mask), F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels.reshape(-1)))


def test_sft_loss_is_finite_for_large_logits_and_masked_positions_get_no_gradient():
    logits = (torch.randn(2, 5, 7, generator=gen()) * 500 + 1000).requires_grad_(True)
    ids = torch.randint(0, 7, (2, 5), generator=gen(1))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    loss = R.sft_loss(logits, ids, mask)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    logits = (torch.randn(2, 5, 7, generator=gen()) * 2).requires_grad_(True)
    R.sft_loss(logits, ids, mask).backward()
    grad_rows = logits.grad.abs().sum(-1)                              # (B, T): position t predicts token t+1
    assert torch.equal(grad_rows[:, :-1] > 0, mask[:, 1:].bool()) and (grad_rows[:, -1] == 0).all()


def test_sft_loss_refuses_an_empty_mask_and_wrong_shapes():
    with pytest.raises(ValueError, match="no completion token"):
        R.sft_loss(torch.randn(2, 4, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no completion token"):   # column 0 is never a target
        R.sft_loss(torch.randn(1, 4, 5), torch.zeros(1, 4, dtype=torch.long), torch.tensor([[1, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        R.sft_loss(torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4))


# ------------------------------------------------------------ 02
def test_last_token_index_handles_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    idx = R.last_token_index(mask)
    assert idx.dtype == torch.long
    assert idx.tolist() == [2, 4, 1, 4]
    assert R.last_token_index(mask.bool()).tolist() == [2, 4, 1, 4]


def test_last_token_index_refuses_an_empty_row():
    with pytest.raises(ValueError, match="at least one"):
        R.last_token_index(torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_pairwise_reward_loss_and_gradient_stay_finite_for_gaps_of_1e4():
    chosen = torch.tensor([1e4, -1e4, 0.0], requires_grad=True)
    rejected = torch.zeros(3)
    loss = R.pairwise_reward_loss(chosen, rejected)
    loss.backward()
    assert math.isclose(loss.item(), (1e4 + math.log(2)) / 3, rel_tol=1e-6)
    assert torch.isfinite(chosen.grad).all()
    assert torch.allclose(chosen.grad, torch.tensor([0.0, -1 / 3, -1 / 6]))


def test_pairwise_reward_loss_subtracts_the_margin():
    c, r = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.0])
    m = torch.tensor([1.0, 0.5])
    assert torch.isclose(R.pairwise_reward_loss(c, r, m), torch.tensor(math.log(2)))
    assert R.pairwise_reward_loss(c, r, 0.0) == R.pairwise_reward_loss(c, r)


def test_best_of_n_kl_is_log_n_minus_n_minus_1_over_n():
    assert R.best_of_n_kl(1) == 0.0
    assert isinstance(R.best_of_n_kl(4), float)
    assert math.isclose(R.best_of_n_kl(16), math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        R.best_of_n_kl(0)



# ------------------------------------------------------------ policy gradients
def test_reinforce_loss_is_minus_the_mean_advantage_weighted_summed_log_prob():
    lp = -torch.rand(3, 5, generator=gen(1), dtype=torch.float64)
    mask = right_and_left_mask()[:, :5]
    rewards, baseline = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    expected = -((rewards - baseline) * (lp * mask).sum(-1)).mean()
    assert torch.allclose(R.reinforce_loss(lp, rewards, mask, baseline), expected)
    assert torch.allclose(R.reinforce_loss(lp, rewards, mask, 0.5), -((rewards - 0.5) * (lp * mask).sum(-1)).mean())
    assert torch.allclose(R.reinforce_loss(lp, rewards, mask), -(rewards * (lp * mask).sum(-1)).mean())


def test_reinforce_loss_sends_gradient_only_to_masked_log_probs_never_to_the_baseline():
    lp = (-torch.rand(3, 7, generator=gen(2), dtype=torch.float64)).requires_grad_(True)
    baseline = torch.rand(3, generator=gen(3), dtype=torch.float64).requires_grad_(True)
    rewards, mask = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), right_and_left_mask()
    R.reinforce_loss(lp, rewards, mask, baseline).backward()
    assert baseline.grad is None
    assert torch.equal(lp.grad == 0, mask == 0)                                    # masked positions: exactly 0
    assert torch.allclose(lp.grad, -((rewards - baseline.detach()) / 3)[:, None] * mask)


def test_rloo_subtracts_the_mean_of_the_other_samples_and_refuses_one_sample():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 6.0]], dtype=torch.float64)
    loop = torch.stack([torch.stack([r[p, i] - torch.cat([r[p, :i], r[p, i + 1:]]).mean() for i in range(4)]) for p in range(2)])
    assert torch.allclose(R.rloo_advantages(r), loop)
    assert torch.allclose(R.rloo_advantages(r), 4 / 3 * (r - r.mean(1, keepdim=True)))
    with pytest.raises(ValueError):
        R.rloo_advantages(torch.ones(3, 1))


def test_token_entropy_is_log_v_when_uniform_zero_when_certain_and_finite_for_huge_logits():
    mask = torch.tensor([[1, 1, 0]])
    uniform = R.token_entropy(torch.zeros(1, 3, 7), mask)
    assert torch.allclose(uniform, torch.tensor([[math.log(7), math.log(7), 0.0]]))
    certain = torch.tensor([[[3000.0, 0.0, -3000.0]] * 3])
    assert torch.equal(R.token_entropy(certain, mask), torch.zeros(1, 3))
    logits = torch.randn(2, 4, 9, generator=gen(4), dtype=torch.float64) * 3
    p = torch.softmax(logits, -1)
    assert torch.allclose(R.token_entropy(logits, torch.ones(2, 4)), -(p * p.log()).sum(-1))
    assert R.token_entropy(logits.bfloat16(), torch.ones(2, 4)).dtype == torch.float32

# ------------------------------------------------------------ 04
def test_kl_penalized_rewards_put_the_score_on_the_last_masked_token():
    mask = right_and_left_mask()
    lp = torch.randn(mask.shape, generator=gen(), dtype=torch.float64)
    ref = torch.randn(mask.shape, generator=gen(1), dtype=torch.float64)
    scores = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = R.kl_penalized_rewards(scores, lp, ref, mask, 0.1)
    expected = -0.1 * (lp - ref) * mask
    expected[0, 4] += 1.0
    expected[1, 6] += 2.0
    expected[2, 6] += 3.0
    assert torch.allclose(out, expected)
    assert (out[mask == 0] == 0).all()


def test_masked_mean_ignores_masked_entries_and_refuses_an_empty_mask():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert R.masked_mean(x, mask).item() == 3.0
    with pytest.raises(ValueError, match="all zeros"):
        R.masked_mean(x, torch.zeros_like(mask))


def test_masked_whiten_gives_zero_mean_unit_unbiased_variance_on_the_mask():
    x = torch.randn(4, 9, generator=gen(), dtype=torch.float64) * 3 + 7
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[:, :2] = 0
    mask[0, 6:] = 0
    out = R.masked_whiten(x, mask)
    kept = out[mask.bool()]
    assert abs(kept.mean().item()) < 1e-9
    assert math.isclose(kept.var(correction=1).item(), 1.0, rel_tol=1e-6)
    assert (out[mask == 0] == 0).all()


def test_masked_whiten_without_shift_keeps_the_mean():
    x = torch.randn(3, 5, generator=gen(), dtype=torch.float64) + 4
    mask = torch.ones(3, 5)
    out = R.masked_whiten(x, mask, shift_mean=False)
    assert math.isclose(out.mean().item(), x.mean().item(), rel_tol=1e-9)
    assert math.isclose(out.var().item(), 1.0, rel_tol=1e-6)


def gae_loop(rewards, values, mask, gamma, lam):
    """GAE the plain way: Python floats, one row and one step at a time, over the row's masked span."""
    B, T = rewards.shape
    advantages = [[0.0] * T for _ in range(B)]
    for b in range(B):
        span = [t for t in range(T) if mask[b, t]]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(span):
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            next_adv = delta + gamma * lam * next_adv
            advantages[b][t] = next_adv
            next_value = float(values[b, t])
    advantages = torch.tensor(advantages, dtype=torch.float64)
    return advantages, (advantages + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_vectorized_gae_equals_the_plain_loop(gamma, lam):
    mask = right_and_left_mask()
    rewards = torch.randn(mask.shape, generator=gen(), dtype=torch.float64)
    values = torch.randn(mask.shape, generator=gen(1), dtype=torch.float64)
    rewards[mask == 0] = 1e3       # garbage on padding must not leak in
    values[mask == 0] = -1e3
    adv, ret = R.gae_advantages(rewards, values, mask, gamma, lam)
    adv_loop, ret_loop = gae_loop(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, adv_loop)
    assert torch.allclose(ret, ret_loop)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_gae_bootstraps_zero_after_the_last_token():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = R.gae_advantages(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(ret, torch.ones(1, 3))          # lam = 1: returns are reward-to-go
    assert torch.allclose(adv, torch.full((1, 3), 0.5))


def test_ppo_policy_loss_is_minus_mean_advantage_at_ratio_one():
    adv = torch.randn(2, 5, generator=gen())
    lp = torch.randn(2, 5, generator=gen(1), requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    loss, clip_fraction = R.ppo_policy_loss(lp, lp.detach(), adv, mask, 0.2)
    assert torch.isclose(loss, -adv[mask.bool()].mean())
    assert clip_fraction.item() == 0.0
    loss.backward()
    assert (lp.grad[mask == 0] == 0).all()


def test_ppo_policy_loss_clips_the_pessimistic_term():
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clip_fraction = R.ppo_policy_loss(lp, old, adv, torch.ones(1, 4), 0.2)
    # per token: -min(A r, A clip(r)) = [-1.2, -0.5, 1.5, 0.8]
    assert torch.isclose(loss, torch.tensor((-1.2 - 0.5 + 1.5 + 0.8) / 4))
    assert torch.isclose(clip_fraction, torch.tensor(0.5))   # tokens 0 and 3: the clipped term is larger
    lp = torch.log(torch.tensor([[0.5, 1.5]]))     # moved away from the safe side: never clipped
    _, clip_fraction = R.ppo_policy_loss(lp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), 0.2)
    assert clip_fraction.item() == 0.0


def test_ppo_value_loss_takes_the_larger_error_and_halves_it():
    values = torch.tensor([[2.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    # token 0: unclipped (2-1)^2 = 1, clipped (0.2-1)^2 = 0.64 -> 1; token 1: 1 and 1 -> 1
    assert torch.isclose(R.ppo_value_loss(values, old, returns, torch.ones(1, 2), 0.2), torch.tensor(0.5))
    values = torch.tensor([[0.0]])
    old = torch.tensor([[1.0]])
    # unclipped (0-0)^2 = 0, clipped (0.8-0)^2 = 0.64
    assert torch.isclose(R.ppo_value_loss(values, old, torch.zeros(1, 1), torch.ones(1, 1), 0.2), torch.tensor(0.32))


# ------------------------------------------------------------ 05
def test_concatenated_pair_logps_sums_each_half_and_ignores_the_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0],     # chosen of pair 0: prompt, completion, padding
                         [0, 1, 1, 1, 1, 1, 1],     # chosen of pair 1: completion to the end
                         [0, 0, 1, 0, 0, 0, 0],     # rejected of pair 0: one token
                         [0, 1, 1, 1, 0, 0, 0]])
    logits = torch.randn(4, 7, 9, generator=gen(), dtype=torch.float64) * 3
    ids = torch.randint(0, 9, (4, 7), generator=gen(1))
    chosen, rejected = R.concatenated_pair_logps(logits, ids, mask)
    rows = R.sequence_logprob(R.token_logprobs(logits, ids), mask)
    assert chosen.shape == rejected.shape == (2,)
    assert torch.allclose(chosen, rows[:2]) and torch.allclose(rejected, rows[2:])
    by_hand = torch.log_softmax(logits[0, 1:4], -1)[torch.arange(3), ids[0, 2:5]].sum()   # tokens 2-4 of row 0, from logits 1-3
    assert torch.allclose(chosen[0], by_hand)
    junk = logits.clone()
    junk[0, 5:], junk[2, 3:] = 1e4, -1e4                 # what the padding predicts never counts
    assert torch.equal(torch.stack(R.concatenated_pair_logps(junk, ids, mask)), torch.stack((chosen, rejected)))
    huge = R.concatenated_pair_logps((logits * 1000).float(), ids, mask)
    assert all(torch.isfinite(x).all() and x.dtype == torch.float32 for x in huge)
    with pytest.raises(ValueError):
        R.concatenated_pair_logps(logits[:3], ids[:3], mask[:3])                  # an odd number of rows


def test_dpo_logits_is_the_difference_of_log_ratios():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-10.0, -12.0, -11.0, -11.5))
    assert R.dpo_logits(pc, pr, rc, rr).item() == pytest.approx(1.5)


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    pc, pr, _, _ = pairs()
    loss, chosen_rewards, rejected_rewards = R.dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-12)
    assert (chosen_rewards == 0).all() and (rejected_rewards == 0).all()


def test_dpo_loss_sends_no_gradient_to_the_reference_and_detaches_rewards():
    pc, pr, rc, rr = (t.clone().requires_grad_(True) for t in pairs())
    loss, chosen_rewards, rejected_rewards = R.dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    loss.backward()
    assert rc.grad is None and rr.grad is None
    weight = R.dpo_gradient_weight(pc, pr, rc, rr, 0.5).detach()
    assert torch.allclose(pc.grad, -0.5 * weight / len(weight))   # d loss / d pc = -beta * w / B
    assert torch.allclose(pr.grad, 0.5 * weight / len(weight))


def test_dpo_loss_rewards_and_probability_values():
    pc, pr, rc, rr = pairs()
    loss, chosen_rewards, rejected_rewards = R.dpo_loss(pc, pr, rc, rr, beta=0.3)
    h = (pc - rc) - (pr - rr)
    assert torch.allclose(loss, -torch.log(torch.sigmoid(0.3 * h)).mean())
    assert torch.allclose(chosen_rewards, 0.3 * (pc - rc)) and torch.allclose(rejected_rewards, 0.3 * (pr - rr))
    assert torch.allclose(R.dpo_preference_probability(pc, pr, rc, rr, 0.3), torch.sigmoid(0.3 * h))
    assert torch.allclose(R.dpo_gradient_weight(pc, pr, rc, rr, 0.3), torch.sigmoid(rejected_rewards - chosen_rewards))


def test_dpo_loss_stays_finite_for_huge_log_ratios():
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    zero = torch.zeros(2)
    loss, _, _ = R.dpo_loss(big, zero, zero, zero, beta=1.0)
    loss.backward()
    assert math.isclose(loss.item(), 1e4 / 2, rel_tol=1e-6)
    assert torch.isfinite(big.grad).all()


def test_dpo_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        R.dpo_logits(torch.zeros(3), torch.zeros(3), torch.zeros(3, 1), torch.zeros(3))


# ------------------------------------------------------------ 06
def test_cdpo_with_no_smoothing_equals_dpo_and_half_is_symmetric():
    pc, pr, rc, rr = pairs()
    assert torch.allclose(R.cdpo_loss(pc, pr, rc, rr, 0.2, 0.0), R.dpo_loss(pc, pr, rc, rr, 0.2)[0])
    flipped = R.cdpo_loss(pr, pc, rr, rc, 0.2, 0.5)
    assert torch.allclose(R.cdpo_loss(pc, pr, rc, rr, 0.2, 0.5), flipped)


def test_ipo_loss_is_minimal_at_h_equal_one_over_two_tau():
    tau = 0.25
    target = 1 / (2 * tau)
    zero = torch.zeros(1, dtype=torch.float64)
    hs = torch.linspace(target - 1, target + 1, 201, dtype=torch.float64)
    losses = torch.stack([R.ipo_loss(h.reshape(1), zero, zero, zero, tau) for h in hs])
    assert hs[losses.argmin()].item() == pytest.approx(target)
    assert losses.min().item() == pytest.approx(0.0)


def test_simpo_is_the_margin_loss_without_reference():
    c = torch.tensor([-1.0, -2.0])
    r = torch.tensor([-1.5, -1.0])
    expected = -F.logsigmoid(2.0 * (c - r) - 0.5).mean()
    assert torch.isclose(R.simpo_loss(c, r, 2.0, 0.5), expected)


def test_grpo_advantages_have_zero_mean_and_unit_unbiased_std_per_group():
    rewards = torch.rand(5, 4, generator=gen(), dtype=torch.float64)
    adv = R.group_relative_advantages(rewards, eps=0.0)
    assert torch.allclose(adv.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(adv.std(1, correction=1), torch.ones(5, dtype=torch.float64))


def test_grpo_constant_group_gives_zero_and_single_sample_is_refused():
    assert (R.group_relative_advantages(torch.ones(2, 3)) == 0).all()
    with pytest.raises(ValueError, match="G = 2"):
        R.group_relative_advantages(torch.ones(3, 1))


def test_ppo_losses_ignore_padding_entirely():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = torch.tensor([[0.1, -0.1, 2.0], [0.05, -3.0, 5.0]])
    old = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, -1.0, 7.0], [0.5, 9.0, -9.0]])
    keep = mask.bool()
    loss, clip_fraction = R.ppo_policy_loss(lp, old, adv, mask, 0.2)
    loss_kept, clip_kept = R.ppo_policy_loss(lp[keep][None], old[keep][None], adv[keep][None], torch.ones(1, 3), 0.2)
    assert torch.isclose(loss, loss_kept) and torch.isclose(clip_fraction, clip_kept)
    assert clip_fraction.item() == 0.0                   # only the padding would have been clipped
    values, returns = torch.tensor([[1.0, 2.0, 50.0], [0.0, -40.0, 3.0]]), torch.tensor([[0.5, 2.5, 0.0], [1.0, 0.0, 0.0]])
    v_loss = R.ppo_value_loss(values, torch.zeros(2, 3), returns, mask, 10.0)
    assert torch.isclose(v_loss, 0.5 * ((values - returns)[keep] ** 2).mean())


@pytest.mark.parametrize("name,extra", [("dpo_logits", ()), ("dpo_preference_probability", (0.1,)),
                                        ("dpo_gradient_weight", (0.1,)), ("cdpo_loss", (0.1, 0.2)), ("ipo_loss", (0.1,))])
def test_no_gradient_reaches_the_reference_log_probs(name, extra):
    pc, pr, rc, rr = (t.clone().requires_grad_(True) for t in pairs())
    out = getattr(R, name)(pc, pr, rc, rr, *extra)
    out.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert pc.grad is not None and pr.grad is not None


def test_variant_losses_stay_finite_for_huge_gaps():
    big = torch.tensor([1e4, -1e4], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    cdpo = R.cdpo_loss(big, zero, zero, zero, 1.0, 0.1)
    assert math.isclose(cdpo.item(), ((0.9 * 0 + 0.1 * 1e4) + (0.9 * 1e4 + 0.1 * 0)) / 2, rel_tol=1e-9)
    simpo = R.simpo_loss(big, zero, 1.0, 0.5)
    assert math.isclose(simpo.item(), (0.0 + (1e4 + 0.5)) / 2, rel_tol=1e-6)


def test_ipo_loss_value_uses_the_reference_and_averages_the_batch():
    pc, pr, rc, rr = pairs(B=3)
    h = (pc - rc) - (pr - rr)
    assert torch.allclose(R.ipo_loss(pc, pr, rc, rr, 0.1), ((h - 5.0) ** 2).mean())
