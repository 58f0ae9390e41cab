"""The exact world of the policy-gradient notebook: enumeration, exact gradients, the estimator and KL studies."""
from __future__ import annotations

import copy

import matplotlib
import pytest
import torch

from alignlab import arithmetic as ar
from alignlab import policy_gradient as pg
from alignlab import reference
from alignlab.config import Track
from alignlab.grpo import completion_token_logps
from alignlab.history import RunHistory
from alignlab.pg_experiments import PLACEMENTS, kl_placement, reuse_study
from alignlab.pg_plots import plot_estimators, plot_reuse, plot_training
from alignlab.reinforce import PGConfig, train_pg

matplotlib.use("Agg")
torch.set_num_threads(1)

PROBLEMS = ar.split_problems()[1][:3]


@pytest.fixture(scope="module")
def base():
    return ar.load_policy()


@pytest.fixture(scope="module")
def moved(base):
    """A policy near the base one (every weight nudged), so that KL and ratios are not trivial."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def test_every_completion_is_enumerated_once_with_its_mask():
    assert pg.N_COMPLETIONS == 1 + 10 + 100 + 1000 + 10000 == len(pg.COMPLETIONS)
    assert len({tuple(r) for r in pg.COMPLETIONS.tolist()}) == pg.N_COMPLETIONS
    assert torch.equal(pg.COMPLETION_MASK.sum(1)[[0, 1, 11, 111, 1111]], torch.tensor([1.0, 2, 3, 4, 4]))
    for p in PROBLEMS:
        assert ar.verify(p, pg.COMPLETIONS[pg.answer_index(p)]) == 1.0


def test_the_distribution_sums_to_one_and_matches_the_sampler_s_log_probs(base):
    probs = pg.distribution(base, PROBLEMS[:1])                                      # (1, N), every completion
    assert abs(float(probs.sum()) - 1.0) < 1e-5
    index = torch.tensor([0, 7, 42, 500, 4321, 11110, pg.answer_index(PROBLEMS[0])])
    comp = pg.COMPLETIONS[index]
    prompts = torch.tensor([ar.encode_prompt(PROBLEMS[0])] * len(index))
    with torch.no_grad():
        sampled = (completion_token_logps(base, prompts, comp) * ar.completion_mask(comp)).sum(1).double()
    assert torch.allclose(probs[0, index].log(), sampled, atol=1e-4)


def test_a_threshold_only_drops_completions_below_improbable_prefixes(base):
    full, pruned = pg.distribution(base, PROBLEMS), pg.distribution(base, PROBLEMS, threshold=1e-6)
    kept = pruned > 0
    assert torch.allclose(pruned[kept], full[kept], rtol=1e-6, atol=1e-12)
    assert float((full - pruned).sum(1).max()) <= 1000 * 1e-6


def test_the_functional_gpt2_matches_hugging_face(base):
    ids = torch.randint(0, len(ar.VOCAB), (4, 11), generator=torch.Generator().manual_seed(1))
    params = dict(base.named_parameters())
    with torch.no_grad():
        assert torch.allclose(pg.gpt2_logits(params, base.config, ids), base(input_ids=ids).logits, atol=1e-4)


def test_vmapped_score_gradients_equal_one_backward_pass_each(base):
    pairs = [(0, pg.answer_index(PROBLEMS[0])), (1, 3), (2, 1234)]
    scores = pg.score_gradients(base, PROBLEMS, pairs).double()
    for row, (p, i) in zip(scores, pairs):
        expected = pg.flat_grad(pg.token_logprobs(base, [PROBLEMS[p]], torch.tensor([[i]])).sum(), base)
        assert torch.allclose(row, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def test_expected_reward_is_the_probability_of_the_right_answer_and_the_score_has_mean_zero(base):
    probs = pg.distribution(base, PROBLEMS)
    answers = [pg.answer_index(p) for p in PROBLEMS]
    with torch.no_grad():
        assert float(pg.expected_reward(base, PROBLEMS)) == pytest.approx(float(probs[range(3), answers].mean()), rel=1e-5)
    logp = pg.token_logprobs(base, PROBLEMS[:1]).sum(-1)[0]                          # (N,) every completion
    mean_score = pg.flat_grad((logp.detach().exp() * logp).sum(), base, retain_graph=True)   # E_pi[grad log pi]
    one_score = pg.flat_grad(logp[answers[0]], base)
    assert mean_score.norm() < 1e-4 * one_score.norm()


def test_estimator_study_mean_baseline_is_a_shrunk_rloo_and_rloo_ignores_a_reward_shift(base):
    advantages = {"mean": lambda r: r - r.mean(1, keepdim=True), "rloo": reference.rloo_advantages,
                  "rloo, reward + 1": lambda r: reference.rloo_advantages(r + 1), "none": lambda r: r}
    rows = pg.estimator_study(base, PROBLEMS, advantages, group_sizes=(2, 4), batches=30)
    by = {(r["estimator"], r["G"]): r for r in rows}
    for G in (2, 4):
        assert by["mean", G]["cos"] == pytest.approx(by["rloo", G]["cos"], abs=1e-9)
        assert by["mean", G]["scale"] == pytest.approx(by["rloo", G]["scale"] * (G - 1) / G, rel=1e-9)
        assert by["rloo, reward + 1", G]["variance"] == pytest.approx(by["rloo", G]["variance"], rel=1e-9)
        assert by["none", G]["batch"] == 3 * G and 0 < by["none", G]["variance"]


def test_kl_placement_reproduces_the_exact_identities(base, moved):
    out = kl_placement(moved, base, PROBLEMS[:2])
    rows = {(r["estimator"], r["placement"], r["level"]): r for r in out["rows"]}
    assert len(rows) == len(PLACEMENTS) and out["kl"] > 0 and out["reverse_kl"] > 0 and out["left_out"] < 1e-4
    assert rows["k1", "loss", "sequence"]["norm_kl"] < 1e-4                           # E[grad log pi] = 0
    for key in (("k1", "reward", "sequence"), ("k2", "loss", "sequence"), ("k1", "reward", "token")):
        assert rows[key]["cos_kl"] > 1 - 1e-6 and rows[key]["scale_kl"] == pytest.approx(1.0, abs=1e-4)
    assert rows["k3", "loss", "sequence"]["cos_reverse"] > 1 - 1e-6
    assert rows["k1", "loss", "sequence"]["value"] == pytest.approx(out["kl"], rel=1e-4)      # unbiased values
    assert rows["k3", "loss", "sequence"]["value"] == pytest.approx(out["kl"], rel=1e-4)


def test_reuse_study_ratio_one_identity_and_exact_importance_weights(base):
    out = reuse_study(base, PROBLEMS, reference.reinforce_loss, reference.rloo_advantages, updates=2, group_size=4)
    assert out["identity"]["max_difference"] <= 1e-6 * out["identity"]["gradient_norm"]
    reuse = [r for r in out["rows"] if r["run"] == "reuse"]
    assert [r["update"] for r in reuse] == [0, 1, 2] and reuse[0]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert all(r["sequence_ratio"] > 0.999 for r in reuse)
    assert reuse[0]["naive"] == pytest.approx(1.0, abs=1e-6) and reuse[0]["token_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert {r["run"] for r in out["rows"]} == {"reuse", "clipped"}


def test_train_pg_runs_both_advantages_and_refuses_others(base):
    track = Track("tiny", "", "cpu", True, "test")
    train, test = ar.split_problems()
    runs = {}
    for advantage in ("none", "rloo"):
        policy = copy.deepcopy(base)
        runs[advantage] = train_pg(policy, train, test, PGConfig.for_track(track, steps=2, prompts_per_step=2, group_size=2,
                                                                             eval_problems=4, advantage=advantage), progress=False)
        h = runs[advantage]
        assert len(h.steps) == 2 and [e["step"] for e in h.evals] == [0, 2]
        assert all(0 <= r["entropy"] <= torch.log(torch.tensor(11.0)) for r in h.steps)
        assert 0 <= h.final["expected_reward"] <= 1
    with pytest.raises(ValueError, match="advantage"):
        train_pg(copy.deepcopy(base), train, test, PGConfig(advantage="grpo"), progress=False)
    assert plot_training(runs) is not None


def test_plots_return_their_figures():
    rows = [{"estimator": e, "G": G, "batch": 2 * G, "cos": 0.5, "variance": 1.0 / G} for e in ("none", "rloo") for G in (2, 4)]
    assert plot_estimators(rows) is not None
    reuse = [{"run": run, "update": k, "kl": 0.1 * k, "naive": 1.0, "token_ratio": 1.0, "sequence_ratio": 1.0}
             for run in ("reuse", "clipped") for k in range(3)]
    assert plot_reuse(reuse) is not None
    assert plot_training({"a": RunHistory(steps=[{"step": 1, "entropy": 0.1}],
                                          evals=[{"step": 0, "expected_reward": 0.5}])}) is not None
