"""The DPO loop (alignlab.dpo): log-probs of pairs, the frozen reference, the loop's contract with its loss function."""
from __future__ import annotations

import copy
import functools
import inspect
import math
import re

import matplotlib
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

matplotlib.use("Agg")

from alignlab import dpo, dpo_plots, reference  # noqa: E402
from alignlab.config import Track  # noqa: E402
from alignlab.data import collate_pairs  # noqa: E402

VOCAB, PAD, GOOD, BAD = 24, 0, 5, 6


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, pad_token_id=PAD)
    return GPT2LMHeadModel(cfg)


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Prompts of 2-4 random tokens; chosen completions are runs of GOOD, rejected runs of BAD (lengths differ)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(7, VOCAB, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g).tolist()
        rows.append({"prompt_ids": prompt,
                     "chosen_ids": [GOOD] * int(torch.randint(1, 6, (1,), generator=g)),
                     "rejected_ids": [BAD] * int(torch.randint(1, 6, (1,), generator=g))})
    return rows


def with_stored_reference(rows, model):
    """Copy of ``rows`` with ref_chosen_logps / ref_rejected_logps computed one row at a time under ``model``."""
    out = []
    for r in rows:
        batch = collate_pairs([r], pad_id=PAD)
        with torch.no_grad():
            c, rj = dpo.pair_logps(model.eval(), batch)
        out.append({**r, "ref_chosen_logps": c.item(), "ref_rejected_logps": rj.item()})
    return out


def frozen(model):
    ref = copy.deepcopy(model).eval()
    return ref.requires_grad_(False)


def config(**kw) -> dpo.DPOConfig:
    base = dict(beta=0.5, lr=3e-3, steps=30, batch_size=8, warmup_steps=0, eval_every=10, pad_token_id=PAD)
    base.update(kw)
    return dpo.DPOConfig(**base)


# ------------------------------------------------------------ log-probs
def test_pair_logps_of_a_row_does_not_depend_on_the_padding_around_it():
    model = tiny_model().eval()
    rows = make_pairs(6)
    batch = collate_pairs(rows, pad_id=PAD)
    with torch.no_grad():
        chosen, rejected = dpo.pair_logps(model, batch)
        for i, r in enumerate(rows):
            c1, r1 = dpo.pair_logps(model, collate_pairs([r], pad_id=PAD))
            assert torch.allclose(chosen[i], c1[0], atol=1e-5) and torch.allclose(rejected[i], r1[0], atol=1e-5)
    assert chosen.shape == rejected.shape == (6,)


def test_pair_logps_are_sums_of_completion_tokens_and_averages_divide_by_length():
    model = tiny_model().eval()
    rows = make_pairs(5)
    batch = collate_pairs(rows, pad_id=PAD)
    with torch.no_grad():
        logits = model(batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]).logits
        token = reference.token_logprobs(logits, batch["chosen_input_ids"])                  # (B, T-1)
        expected = (token * batch["chosen_completion_mask"][:, 1:]).sum(-1)
        summed, _ = dpo.pair_logps(model, batch)
        averaged, _ = dpo.pair_logps(model, batch, average=True)
    lengths = torch.tensor([len(r["chosen_ids"]) for r in rows], dtype=torch.float32)
    assert torch.allclose(summed, expected, atol=1e-5)
    assert torch.allclose(averaged, expected / lengths, atol=1e-5)


def grouped_pairs(n_prompts: int, k: int = 4, seed: int = 0) -> list[dict]:
    """Each prompt with k completions and all k(k-1)/2 pairs among them, as the embedded world stores them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_prompts):
        prompt = torch.randint(7, VOCAB, (3,), generator=g).tolist()
        completions = [torch.randint(2, VOCAB, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
                       for _ in range(k)]
        rows += [{"prompt_ids": prompt, "chosen_ids": completions[a], "rejected_ids": completions[b]}
                 for a in range(k) for b in range(a + 1, k)]
    return rows


class CountingModel(torch.nn.Module):
    """Wraps a causal LM and counts the sequences it is asked to run."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, input_ids, **kwargs):
        self.rows += input_ids.shape[0]
        return self.model(input_ids=input_ids, **kwargs)


def test_pair_logps_runs_a_completion_shared_by_several_pairs_once_with_the_same_values_and_gradients():
    rows = grouped_pairs(3)                                            # 18 pairs over 12 distinct sequences
    batch = collate_pairs(rows, pad_id=PAD)
    model = tiny_model().eval()
    counting = CountingModel(model)
    chosen, rejected = dpo.pair_logps(counting, batch)
    assert counting.rows == 12
    (chosen - 2 * rejected).sum().backward()
    shared = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    one_by_one = [dpo.pair_logps(model, collate_pairs([r], pad_id=PAD)) for r in rows]
    expected_c, expected_r = (torch.cat(x) for x in zip(*one_by_one))
    assert torch.allclose(chosen, expected_c, atol=1e-5) and torch.allclose(rejected, expected_r, atol=1e-5)
    (expected_c - 2 * expected_r).sum().backward()
    for got, want in zip(shared, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, atol=1e-5)


class ShapeRecorder(CountingModel):
    """Also records the (rows, columns) of every call."""

    def forward(self, input_ids, **kwargs):
        self.shapes = getattr(self, "shapes", []) + [tuple(input_ids.shape)]
        return super().forward(input_ids, **kwargs)


def test_pair_logps_runs_short_and_long_rows_as_two_cut_buckets_with_the_same_values_and_gradients(monkeypatch):
    g = torch.Generator().manual_seed(5)
    rows = [{"prompt_ids": torch.randint(7, VOCAB, (3,), generator=g).tolist(),
             "chosen_ids": [GOOD] * (2 if i % 2 else 20), "rejected_ids": [BAD] * (1 if i < 4 else 18)}
            for i in range(8)]                                          # lengths 4-23 tokens: half the slots padding
    batch = collate_pairs(rows, pad_id=PAD)
    model = tiny_model().eval()
    recorder = ShapeRecorder(model)
    chosen, rejected = dpo.pair_logps(recorder, batch)
    assert len(recorder.shapes) > 1 and max(w for _, w in recorder.shapes) == 23 and min(w for _, w in recorder.shapes) < 23
    (chosen - 2 * rejected).sum().backward()
    bucketed = [q.grad.clone() for q in model.parameters()]

    model.zero_grad()
    monkeypatch.setattr(dpo, "BUCKET_MIN_SAVING", 1.0)                  # never split: one padded call
    whole = ShapeRecorder(model)
    expected_c, expected_r = dpo.pair_logps(whole, batch)
    assert len(whole.shapes) == 1
    assert torch.allclose(chosen, expected_c, atol=1e-5) and torch.allclose(rejected, expected_r, atol=1e-5)
    (expected_c - 2 * expected_r).sum().backward()
    for got, want in zip(bucketed, (q.grad for q in model.parameters())):
        assert torch.allclose(got, want, atol=1e-5)


def test_visit_order_is_one_shuffled_epoch_and_keeps_a_prompts_pairs_together_when_grouped():
    rows = grouped_pairs(5)
    flat, grouped = dpo.visit_order(rows, seed=1), dpo.visit_order(rows, seed=1, group_by_prompt=True)
    assert sorted(flat) == sorted(grouped) == list(range(len(rows)))
    assert flat != list(range(len(rows)))
    prompts = [tuple(rows[i]["prompt_ids"]) for i in grouped]
    assert all(len(set(prompts[j:j + 6])) == 1 for j in range(0, len(rows), 6))
    assert grouped != list(range(len(rows))) and grouped == dpo.visit_order(rows, seed=1, group_by_prompt=True)


def test_reference_logps_carry_no_gradient_even_from_a_model_that_requires_it():
    model = tiny_model()
    batch = collate_pairs(make_pairs(4), pad_id=PAD)
    chosen, rejected = dpo.reference_logps(model, batch)
    assert not chosen.requires_grad and not rejected.requires_grad


def test_stored_reference_logps_match_the_reference_model_and_average_by_length():
    model = tiny_model().eval()
    rows = with_stored_reference(make_pairs(6), model)
    batch = collate_pairs(rows, pad_id=PAD)
    from_model = dpo.reference_logps(model, batch, average=True)
    from_pairs = dpo.reference_logps(None, batch, average=True)
    for a, b in zip(from_model, from_pairs):
        assert torch.allclose(a, b, atol=1e-5)


def test_reference_none_without_stored_logps_says_what_to_do():
    with pytest.raises(ValueError, match="frozen reference"):
        dpo.reference_logps(None, collate_pairs(make_pairs(2), pad_id=PAD))


# ------------------------------------------------------------ the loop
def test_first_loss_is_ln2_when_the_policy_equals_the_reference():
    policy = tiny_model()
    history = dpo.train_dpo(policy, frozen(policy), make_pairs(16), functools.partial(reference.dpo_loss, beta=0.5),
                            config(steps=1))
    assert history.steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert history.steps[0]["rewards/accuracies"] == 0.0   # strict >: ties are not correct


def test_training_learns_the_preference_and_leaves_the_reference_untouched():
    policy = tiny_model()
    ref = tiny_model()                       # same weights, a separate module that even requires grad
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    history = dpo.train_dpo(policy, ref, make_pairs(64), functools.partial(reference.dpo_loss, beta=0.5), config())
    assert history.steps[-1]["loss"] < 0.5 < math.log(2)
    assert history.steps[-1]["rewards/accuracies"] > 0.9 and history.steps[-1]["rewards/margins"] > 0
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items()), "the reference changed"
    assert all(p.grad is None for p in ref.parameters()), "gradient reached the reference"
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))


def test_stored_reference_logps_train_like_the_reference_model():
    losses = []
    for use_model in (True, False):
        policy = tiny_model()
        rows = with_stored_reference(make_pairs(32), tiny_model())
        ref = frozen(tiny_model()) if use_model else None
        h = dpo.train_dpo(policy, ref, rows, functools.partial(reference.dpo_loss, beta=0.5), config(steps=5))
        losses.append(h.column("loss"))
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_loss_fn_gets_four_batch_vectors_and_may_return_a_bare_loss():
    seen = []

    def bare_loss(pc, pr, rc, rr):
        seen.append((pc.shape, pr.shape, rc.shape, rr.shape, pc.requires_grad, rc.requires_grad))
        return -torch.nn.functional.logsigmoid(0.5 * ((pc - rc) - (pr - rr))).mean()

    policy = tiny_model()
    history = dpo.train_dpo(policy, frozen(policy), make_pairs(16), bare_loss, config(steps=3, batch_size=4, beta=0.25))
    assert seen[0] == ((4,), (4,), (4,), (4,), True, False)
    assert len(seen) == 3 and len(history.steps) == 3
    assert history.steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert history.steps[-1]["rewards/margins"] != 0.0     # implicit rewards from config.beta


def test_average_logps_feeds_per_token_averages():
    seen = []

    def spy(pc, pr, rc, rr):
        seen.append((pc.detach(), rc))
        return (pc - pr).mean() * 0

    policy = tiny_model()
    rows = make_pairs(4)
    dpo.train_dpo(policy, frozen(policy), rows, spy, config(steps=1, batch_size=4, average_logps=True))
    order = torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist()
    batch = collate_pairs([rows[i] for i in order], pad_id=PAD)
    expected, _ = dpo.pair_logps(policy.eval(), batch, average=True)
    assert torch.allclose(seen[0][0], expected.detach(), atol=1e-5)
    assert torch.allclose(seen[0][1], expected.detach(), atol=1e-5)


def test_eval_fn_runs_at_the_start_every_eval_every_steps_and_at_the_end():
    calls = []

    def eval_fn(policy):
        calls.append(policy.training)
        return {"gold": 0.5, "kl": float(len(calls))}

    policy = tiny_model()
    history = dpo.train_dpo(policy, frozen(policy), make_pairs(16), functools.partial(reference.dpo_loss, beta=0.1),
                            config(steps=7, eval_every=3), eval_fn=eval_fn)
    assert history.column("step", evals=True) == [0, 3, 6, 7]
    assert history.final == {"step": 7, "gold": 0.5, "kl": 4.0}
    assert not any(calls), "evaluation should see the policy in eval mode"


def test_learning_rate_warms_up_then_stays_or_decays_linearly_to_zero():
    rows = make_pairs(16)
    loss = functools.partial(reference.dpo_loss, beta=0.1)
    for decay in (False, True):
        policy = tiny_model()
        history = dpo.train_dpo(policy, frozen(policy), rows, loss, config(steps=8, warmup_steps=2, lr=1e-3, decay=decay))
        lrs = history.column("lr")
        assert lrs[:2] == pytest.approx([5e-4, 1e-3])
        expected = [1e-3 * (8 - s) / 6 for s in range(2, 8)] if decay else [1e-3] * 6
        assert lrs[2:] == pytest.approx(expected)


# ------------------------------------------------------------ config and widget
def test_config_fields_each_have_a_comment_and_tracks_scale():
    source = inspect.getsource(dpo.DPOConfig)
    for name in dpo.DPOConfig.__dataclass_fields__:
        assert re.search(rf"^\s+{name}:.*#\s*\S", source, re.M), f"field {name} has no comment"
    tiny = dpo.DPOConfig.for_track(Track("tiny", "x", "cpu", False, ""))
    grading = dpo.DPOConfig.for_track(Track("tiny", "x", "cpu", True, ""))
    gpu = dpo.DPOConfig.for_track(Track("gpt2", "gpt2", "cuda", False, ""), beta=0.5)
    assert grading.steps < tiny.steps < gpu.steps and gpu.beta == 0.5 and gpu.lr < tiny.lr


def test_beta_explorer_draws_with_the_given_functions():
    calls = []

    def prob(*args):
        calls.append("p")
        return reference.dpo_preference_probability(*args)

    widget = dpo_plots.beta_explorer(prob, reference.dpo_gradient_weight)
    assert "beta" in [c.description for c in widget.children if hasattr(c, "description")]
    widget.children[0].value = 1.0
    assert calls, "moving the slider should redraw with the learner's function"


def test_heldout_pairs_are_measured_without_training_on_them_and_memorization_shows_as_a_gap():
    policy, ref = tiny_model(), None
    train = with_stored_reference(make_pairs(8, seed=1), tiny_model())
    heldout = with_stored_reference(make_pairs(8, seed=2), tiny_model())
    before = copy.deepcopy(policy.state_dict())
    history = dpo.train_dpo(policy, ref, train, functools.partial(reference.dpo_loss, beta=0.5),
                            config(steps=12, heldout_every=4), heldout_pairs=heldout)
    assert [h["step"] for h in history.heldout] == [0, 4, 8, 12]
    assert history.heldout[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)     # policy = reference at step 0
    assert all(0.0 <= h["rewards/accuracies"] <= 1.0 for h in history.heldout)
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    fig = dpo_plots.plot_history(history)
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert "held-out pairs" in labels and "training batches" in labels


def test_implicit_rewards_are_beta_times_the_log_ratio_and_the_heldout_log_ratios_are_logged():
    ref_model = tiny_model(seed=3).eval()
    train = with_stored_reference(make_pairs(8, seed=1), ref_model)
    heldout = with_stored_reference(make_pairs(6, seed=2), ref_model)
    policy = copy.deepcopy(ref_model)
    zero_c, zero_r = dpo.implicit_rewards(policy.eval(), None, heldout, beta=0.5, batch_size=4, pad_id=PAD)
    assert zero_c.shape == zero_r.shape == (6,)
    assert torch.allclose(zero_c, torch.zeros(6), atol=1e-5) and torch.allclose(zero_r, torch.zeros(6), atol=1e-5)
    history = dpo.train_dpo(policy, None, train, functools.partial(reference.dpo_loss, beta=0.5),
                            config(steps=8, heldout_every=4),
                            heldout_pairs=heldout)
    policy.eval()
    chosen, rejected = dpo.implicit_rewards(policy, frozen(ref_model), heldout, beta=0.5, batch_size=4, pad_id=PAD)
    with torch.no_grad():                                   # one pair at a time, by hand
        for i, row in enumerate(heldout):
            c, r = dpo.pair_logps(policy, collate_pairs([row], pad_id=PAD))
            assert chosen[i].item() == pytest.approx(0.5 * (c.item() - row["ref_chosen_logps"]), abs=1e-4)
            assert rejected[i].item() == pytest.approx(0.5 * (r.item() - row["ref_rejected_logps"]), abs=1e-4)
    last = history.heldout[-1]
    assert last["rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-4)
    assert last["rewards/rejected"] == pytest.approx(rejected.mean().item(), abs=1e-4)
    assert (chosen > rejected).float().mean().item() == pytest.approx(last["rewards/accuracies"])
    fig = dpo_plots.plot_logratios(history, beta=0.5)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"chosen, held-out pairs", "rejected, held-out pairs", "chosen, training batches"} <= set(labels)


def test_for_track_is_notebook_04s_recipe():
    tiny = dpo.DPOConfig.for_track(Track("tiny", "x", "cpu", False, ""))
    assert (tiny.beta, tiny.lr, tiny.batch_size, tiny.steps, tiny.decay, tiny.group_by_prompt) == \
        (0.15, 6e-4, 96, 300, True, True)


def test_eos_logratios_are_zero_for_the_reference_and_single_out_a_lowered_eos():
    EOS = 3
    rows = [{**r, "chosen_ids": r["chosen_ids"] + [EOS], "rejected_ids": r["rejected_ids"] + ([EOS] if i % 2 else [])}
            for i, r in enumerate(make_pairs(6))]
    model = tiny_model().eval()
    same = dpo.eos_logratios(model, frozen(model), rows, eos_id=EOS, pad_id=PAD, batch_size=4)
    assert same["chosen"]["eos_tokens"] == 6 and same["rejected"]["eos_tokens"] == 3
    assert all(abs(v) < 1e-6 for side in same.values() for k, v in side.items() if k != "eos_tokens")

    class LowerEOS(torch.nn.Module):                      # the same model with the EOS logit 2 nats lower
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits[..., EOS] -= 2.0
            return out

    moved = dpo.eos_logratios(LowerEOS(model), frozen(model), rows, eos_id=EOS, pad_id=PAD)
    for side in ("chosen", "rejected"):
        assert -2.0 < moved[side]["eos"] < -1.0 < 0.0 < moved[side]["other"]


# ------------------------------------------------------------ RPO
def test_chosen_nll_is_the_mean_per_token_nll_and_refuses_mismatched_shapes():
    logps, lengths = torch.tensor([-6.0, -2.0, 0.0]), torch.tensor([3, 4, 0])
    assert dpo.chosen_nll(logps, lengths).item() == pytest.approx((2.0 + 0.5 + 0.0) / 3)   # empty row: 0, not NaN
    with pytest.raises(ValueError, match=r"two \(B,\) tensors"):
        dpo.chosen_nll(logps, lengths[:2])


@pytest.mark.parametrize("average", [False, True])
def test_rpo_alpha_adds_alpha_times_the_chosen_nll_to_the_loss_fn_s_loss(average):
    policy, rows = tiny_model(), make_pairs(6)
    batch = collate_pairs(rows, pad_id=PAD)
    loss_fn = functools.partial(reference.dpo_loss, beta=0.5)
    plain, *_ = dpo._loss_and_rewards(policy.eval(), None, {**batch, **stored(rows, policy)}, loss_fn,
                                      config(average_logps=average))
    rpo, *_ = dpo._loss_and_rewards(policy.eval(), None, {**batch, **stored(rows, policy)}, loss_fn,
                                    config(average_logps=average, rpo_alpha=0.7))
    summed, _ = dpo.pair_logps(policy, batch)
    lengths = torch.tensor([len(r["chosen_ids"]) for r in rows])
    assert (rpo - plain).item() == pytest.approx(0.7 * (-summed / lengths).mean().item(), rel=1e-4)


def stored(rows, model) -> dict:
    """The batch fields of ``with_stored_reference`` for ``rows`` (reference = ``model``)."""
    return {k: v for k, v in collate_pairs(with_stored_reference(rows, model), pad_id=PAD).items() if k.startswith("ref_")}


def test_rpo_keeps_the_chosen_completions_likelier_than_dpo_does():
    pairs = make_pairs(32)
    logps = {}
    for alpha in (0.0, 1.0):
        policy = tiny_model()
        reference_model = frozen(policy)
        dpo.train_dpo(policy, reference_model, pairs, functools.partial(reference.dpo_loss, beta=0.5),
                      config(steps=30, rpo_alpha=alpha))
        batch = collate_pairs(pairs, pad_id=PAD)
        with torch.no_grad():
            logps[alpha] = dpo.pair_logps(policy.eval(), batch)[0].mean().item()
    assert logps[1.0] > logps[0.0]
