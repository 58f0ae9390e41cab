"""Exercises of notebooks 05 and 06: DPO, its implicit rewards, and the variants (cDPO, IPO, SimPO, GRPO)."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, generator, randint, randn, spans
from .ex_basics import _extra_precision
from .mistakes import MISTAKES

FOUR = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
POLICY = FOUR[:2]


def _pairs(g, B: int, spread: float = 5.0, level: float = -60.0, equal: bool = False) -> dict:
    """Summed sequence log-probs: a reference, and a policy that moved from it by about `spread` nats."""
    rc, rr = randn(g, B, scale=15.0, shift=level), randn(g, B, scale=15.0, shift=level)
    if equal:
        return dict(zip(FOUR, (rc.clone(), rr.clone(), rc, rr)))
    return dict(zip(FOUR, (rc + randn(g, B, scale=spread), rr + randn(g, B, scale=spread), rc, rr)))


def _large(g, B: int) -> dict:
    """Log-ratios of thousands of nats in both directions (beta * h of hundreds)."""
    rc, rr = randn(g, B, scale=100.0, shift=-3000.0), randn(g, B, scale=100.0, shift=-3000.0)
    moves = torch.tensor([3000.0, -3000.0, 40.0, -2500.0])[:B]
    return dict(zip(FOUR, (rc + moves, rr - moves / 2, rc, rr)))


def _four_cases(seed: int, knob: str, public: tuple, hidden_value, equal_name: str, extra_public=()) -> list[Case]:
    """Cases shared by the exercises that take the four log-probs and one scalar (beta or tau)."""
    g = generator(seed)
    cases = [Case(f"four pairs, {knob} = {public[0]}", {**_pairs(g, 4), knob: public[0]})]
    if equal_name:
        cases.append(Case(equal_name, {**_pairs(g, 3, equal=True), knob: public[0]}))
    cases += [Case(f"four pairs, {knob} = {v}", {**_pairs(g, 4, spread=2.0), knob: v}) for v in public[1:]]
    cases += list(extra_public)
    cases += [
        Case("large log-ratios (thousands of nats)", {**_large(g, 4), knob: hidden_value}),
        Case("a batch of one", {**_pairs(g, 1), knob: hidden_value}, hidden=True),
        Case("gradient into the policy log-probs", {**_pairs(g, 4), knob: hidden_value}, grad=POLICY),
    ]
    return cases


def _cdpo_cases() -> list[Case]:
    g = generator(404)
    return [
        Case("four pairs, beta = 0.1, label_smoothing = 0.1", {**_pairs(g, 4), "beta": 0.1, "label_smoothing": 0.1}),
        Case("label_smoothing = 0 is the DPO loss", {**_pairs(g, 4), "beta": 0.1, "label_smoothing": 0.0}),
        Case("beta = 0.5, label_smoothing = 0.3", {**_pairs(g, 4, spread=2.0), "beta": 0.5, "label_smoothing": 0.3}),
        Case("large log-ratios (thousands of nats)", {**_large(g, 4), "beta": 0.1, "label_smoothing": 0.2}),
        Case("label_smoothing = 0.5: the loss no longer depends on the order", {**_pairs(g, 3), "beta": 0.2, "label_smoothing": 0.5},
             hidden=True),
        Case("a batch of one", {**_pairs(g, 1), "beta": 0.1, "label_smoothing": 0.1}, hidden=True),
        Case("gradient into the policy log-probs", {**_pairs(g, 4), "beta": 0.1, "label_smoothing": 0.1}, hidden=True, grad=POLICY),
    ]


def _ipo_cases() -> list[Case]:
    g = generator(405)
    on_target = _pairs(g, 3)
    on_target["policy_chosen_logps"] = (on_target["policy_rejected_logps"].double() - on_target["ref_rejected_logps"].double()
                                        + on_target["ref_chosen_logps"].double() + 5.0).float()   # h = 1/(2 tau) = 5
    return _four_cases(405, "tau", (0.1, 0.5), 0.05, "",
                       extra_public=[Case("h equals 1/(2 tau): the loss is about 0", {**on_target, "tau": 0.1})])


def _simpo_cases() -> list[Case]:
    g = generator(406)

    def avgs(B, scale=0.5, shift=-1.5):
        return {"policy_chosen_avg_logps": randn(g, B, scale=scale, shift=shift), "policy_rejected_avg_logps": randn(g, B, scale=scale, shift=shift)}

    same = randn(g, 3, scale=0.5, shift=-1.5)
    return [
        Case("four pairs, beta = 2, gamma = 0.5", {**avgs(4), "beta": 2.0, "gamma": 0.5}),
        Case("equal averages: the loss is log(1 + exp(gamma))",
             {"policy_chosen_avg_logps": same, "policy_rejected_avg_logps": same.clone(), "beta": 2.0, "gamma": 1.0}),
        Case("beta = 10, gamma = 2", {**avgs(4), "beta": 10.0, "gamma": 2.0}),
        Case("large gaps: beta * gap of hundreds", {"policy_chosen_avg_logps": torch.tensor([-0.5, -150.0, -1.0]),
                                                     "policy_rejected_avg_logps": torch.tensor([-90.0, -0.2, -1.2]), "beta": 5.0, "gamma": 1.0},
             hidden=True),
        Case("a batch of one", {**avgs(1), "beta": 2.5, "gamma": 0.3}, hidden=True),
        Case("gradient into both average log-probs", {**avgs(4), "beta": 2.0, "gamma": 0.5}, hidden=True,
             grad=("policy_chosen_avg_logps", "policy_rejected_avg_logps")),
    ]


def _grpo_cases() -> list[Case]:
    g = generator(407)
    const = randn(g, 3, 4, scale=2.0)
    const[1] = 0.75                     # a group whose samples all got the same reward
    return [
        Case("three prompts, four samples each", {"rewards": randn(g, 3, 4, scale=2.0)}),
        Case("two prompts, eight samples each, eps = 1e-3", {"rewards": randn(g, 2, 8, shift=1.0), "eps": 1e-3}),
        Case("a group of equal rewards: advantages 0", {"rewards": const}, hidden=True),
        Case("large rewards (about 500)", {"rewards": randn(g, 4, 6, scale=100.0, shift=500.0)}, hidden=True),
        Case("one prompt, two samples", {"rewards": torch.tensor([[0.2, 0.9]])}, hidden=True),
        Case("gradient with respect to the rewards", {"rewards": randn(g, 2, 5)}, hidden=True, grad=("rewards",)),
        Case("one sample per prompt (G = 1) raises ValueError", {"rewards": randn(g, 3, 1)}, raises="ValueError"),
    ]


def _concatenated_cases() -> list[Case]:
    g = generator(408)

    def case(name, pairs, T, V=11, scale=2.0, shift=0.0, dtype=torch.float32, mask_dtype=torch.long, junk=False, **kw):
        """pairs: (prompt, chosen, rejected) lengths; rows 0..B-1 chosen, B..2B-1 rejected, right-padded to T."""
        rows = [(p, p + c) for p, c, _ in pairs] + [(p, p + r) for p, _, r in pairs]
        logits = randn(g, len(rows), T, V, scale=scale, shift=shift, dtype=dtype)
        ids = randint(g, V - 1, len(rows), T)
        for b, (_, stop) in enumerate(rows):
            ids[b, stop:] = V - 1                                       # the pad id
            if junk:
                logits[b, stop:] = torch.where(torch.arange(V) % 2 == 0, 5e4, -5e4).to(dtype)   # junk after the completion
        return Case(name, {"logits": logits, "input_ids": ids, "completion_mask": spans(T, rows, dtype=mask_dtype)}, **kw)

    two = [(2, 4, 2), (3, 2, 5)]                     # prompt, chosen and rejected lengths: every row padded differently
    uneven = [(2, 6, 1), (4, 1, 4), (1, 3, 3)]       # a completion to the last column; a completion of only its EOS
    return [
        case("two pairs, rows 0-1 chosen and 2-3 rejected, each padded to width 8: logits (4, 8, 11)", two, 8),
        case("three pairs of different prompt and completion lengths: logits (6, 9, 13)",
             [(1, 5, 3), (3, 6, 2), (2, 2, 7)], 9, V=13),
        case("large logits (about 1000, spread 300): use log-softmax, not log(softmax)", two, 8, scale=300.0, shift=1000.0),
        case("bfloat16 logits: compute in float32", two, 8, V=50, scale=4.0, dtype=torch.bfloat16),
        case("gradient of chosen_logps with respect to the logits: prompt, padding and rejected rows receive none", two, 8,
             grad=("logits",)),
        case("a batch of one pair (2 rows), extra padding", [(3, 4, 2)], 9, hidden=True),
        case("junk in the padding (logits of +-50000 after each completion)", two, 8, junk=True, hidden=True),
        case("a completion up to the last column, a completion of one token", uneven, 8, hidden=True),
        case("a bool completion mask", uneven, 8, mask_dtype=torch.bool, hidden=True),
        case("a float completion mask", two, 8, V=17, mask_dtype=torch.float32, hidden=True),
        case("very negative and very large logits (around -10000, spread 5000)", uneven, 8, scale=5000.0, shift=-1e4, hidden=True),
        case("gradient, rows of uneven lengths", uneven, 8, hidden=True, grad=("logits",)),
    ]


def _logits_cases() -> list[Case]:
    g = generator(400)
    return [
        Case("four pairs", _pairs(g, 4)),
        Case("policy equals reference: h = 0", _pairs(g, 3, equal=True)),
        Case("large log-ratios (thousands of nats)", _large(g, 4)),
        Case("a batch of one", _pairs(g, 1), hidden=True),
        Case("gradient: +1 into policy_chosen_logps, -1 into policy_rejected_logps", _pairs(g, 4), hidden=True, grad=POLICY),
    ]


def _detached_rewards(case: Case, outputs: tuple) -> str | None:
    if case.grad and any(isinstance(o, torch.Tensor) and o.requires_grad for o in outputs[1:]):
        return ("the implicit rewards carry gradient: return them detached (`.detach()`); "
                "they are for logging and accuracy, not for the gradient.")
    return None


EXERCISES = [
    Exercise("concatenated_pair_logps", outputs=("chosen_logps", "rejected_logps"), build=_concatenated_cases,
             mistakes=MISTAKES["concatenated_pair_logps"], extra=_extra_precision,
             hint="log_softmax(logits[:, :-1]) gathered at input_ids[:, 1:], summed where completion_mask[:, 1:] is 1; "
                  "chosen = the first half of the rows, rejected = the second."),
    Exercise("dpo_logits", build=_logits_cases,
             mistakes=MISTAKES["dpo_logits"], hint="h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)."),
    Exercise("dpo_loss", outputs=("loss", "chosen_rewards", "rejected_rewards"), mistakes=MISTAKES["dpo_loss"],
             build=lambda: _four_cases(401, "beta", (0.1, 0.5), 0.1, "policy equals reference: the loss is ln 2, the rewards 0"),
             extra=_detached_rewards,
             hint="loss = mean of -logsigmoid(beta * h); rewards = beta * (policy - reference) log-probs, detached."),
    Exercise("dpo_preference_probability", mistakes=MISTAKES["dpo_preference_probability"],
             build=lambda: _four_cases(402, "beta", (0.1, 0.5), 0.1, "policy equals reference: the probability is 0.5"),
             hint="sigmoid(beta * h)."),
    Exercise("dpo_gradient_weight", mistakes=MISTAKES["dpo_gradient_weight"],
             build=lambda: _four_cases(403, "beta", (0.1, 0.5), 0.1, "policy equals reference: the weight is 0.5"),
             hint="sigmoid(rejected_reward - chosen_reward) = sigmoid(-beta * h)."),
    Exercise("cdpo_loss", build=_cdpo_cases, mistakes=MISTAKES["cdpo_loss"],
             hint="mean of -(1 - e) logsigmoid(beta h) - e logsigmoid(-beta h), e = label_smoothing."),
    Exercise("ipo_loss", build=_ipo_cases, mistakes=MISTAKES["ipo_loss"], hint="mean of (h - 1 / (2 tau))^2, h from summed log-probs."),
    Exercise("simpo_loss", build=_simpo_cases, mistakes=MISTAKES["simpo_loss"],
             hint="mean of -logsigmoid(beta * (avg_chosen - avg_rejected) - gamma); no reference model."),
    Exercise("group_relative_advantages", build=_grpo_cases, mistakes=MISTAKES["group_relative_advantages"],
             hint="(r - group mean) / (group unbiased std + eps), one group per row."),
]

