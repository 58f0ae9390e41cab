"""Notebook 06's online (iterative) DPO: sample fresh pairs from the current policy, label them, train again.

Offline DPO trains on pairs sampled once from the starting policy. Online DPO
repeats a short loop: sample ``samples_per_prompt`` completions for fresh prompts
from the *current* policy, let a labeller (a learned reward model, or the
simulated annotators: the gold, with or without their Bradley-Terry noise)
score them, keep the best and the worst as a pair, and run a few DPO steps
on those pairs with notebook 05's ``train_dpo``. The reference stays the
starting policy, so the KL it reports means the same as offline DPO's.

>>> labeller = reward_model_labeller(reward_model, tokenizer.pad_token_id)
>>> config = OnlineDPOConfig.for_track(track)
>>> history = train_online_dpo(policy, reference, tokenizer, prompts, labeller, loss_fn, config, eval_fn)
>>> history.final            # {"step", "round", "gold", "kl", ...}

Pairs built here have the fields of ``alignlab.pairs.load_pairs`` rows that DPO
needs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``ref_chosen_logps``,
``ref_rejected_logps``) plus ``score_chosen``/``score_rejected`` (the labeller's)
and ``gold_chosen``/``gold_rejected`` when a gold reward is given.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .dpo import DPOConfig, completion_logps, train_dpo
from .history import RunHistory
from .pairs import ANNOTATOR_TEMPERATURE
from .reward_model import score_completions
from .rewards import gold_texts
from .rollout import sample_groups

# labeller(prompt_ids_list, completion_ids_list, texts) -> (N,) scores, higher is better
Labeller = Callable[[list, list, list], torch.Tensor]


def gold_labeller(gold) -> Labeller:
    """Label with the gold classifier itself: the "ask the humans again" upper bound of online feedback."""
    def label(prompt_ids_list, completion_ids_list, texts):
        return torch.as_tensor(gold(list(texts)), dtype=torch.float32)                  # (N,)
    return label


def noisy_gold_labeller(gold, temperature: float | None = None, seed: int = 0) -> Labeller:
    """Label like the simulated annotators who labelled the offline pairs: the gold, seen through Bradley-Terry noise.

    Each completion's score is ``gold / temperature + G`` with G an independent standard Gumbel draw
    (its own seeded generator, so a run is reproducible). For any two completions a and b,
    ``G_a - G_b`` is standard logistic, so P(score_a > score_b) = sigmoid((g_a - g_b) / temperature):
    exactly the annotator of ``alignlab.pairs`` (default temperature ``ANNOTATOR_TEMPERATURE``). Over a
    group the scores rank the completions by a Plackett-Luce draw; the best-vs-worst pair of a group is
    that ranking's first and last. Scores: (N,) float32, higher is better.
    """
    temperature = ANNOTATOR_TEMPERATURE if temperature is None else float(temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    generator = torch.Generator().manual_seed(seed)

    def label(prompt_ids_list, completion_ids_list, texts):
        g = torch.as_tensor(gold(list(texts)), dtype=torch.float64).cpu()               # (N,)
        uniform = torch.rand(g.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return (g / temperature - torch.log(-torch.log(uniform))).float()              # (N,) gold/T + Gumbel
    return label


def reward_model_labeller(reward_model, pad_id: int) -> Labeller:
    """Label with a learned reward model (notebook 02's): the usual online set-up, a proxy for the humans."""
    def label(prompt_ids_list, completion_ids_list, texts):
        return score_completions(reward_model, prompt_ids_list, completion_ids_list, pad_id)  # (N,)
    return label


@dataclass
class OnlineDPOConfig:
    """Settings of an online DPO run: ``rounds`` x (sample, label, ``dpo.steps`` DPO steps)."""

    rounds: int = 4                    # sample-label-train rounds
    prompts_per_round: int = 128       # fresh training prompts each round (one pair per prompt at most)
    samples_per_prompt: int = 4        # completions per prompt; the best and the worst make the pair
    max_new_tokens: int = 24           # completion length limit when sampling
    temperature: float = 1.0           # sampling temperature (1: the policy itself)
    sample_batch: int = 512            # completions per sampling call: the KV cache grows with it (GPT-2 124M:
                                       # 512 x 56 tokens is 2.1 GB), so a round of 512 prompts x 4 takes 4 calls
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(steps=50, warmup_steps=0))  # the DPO steps of one round
    seed: int = 0                      # sampling seed

    @classmethod
    def for_track(cls, track, **overrides) -> "OnlineDPOConfig":
        """Online-DPO sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field.

        ``dpo`` defaults to ``DPOConfig.for_track`` without warm-up; each round runs its share of its steps.
        """
        rounds = overrides.pop("rounds", track.pick(cpu=4, gpu=5, grading=2))
        dpo = overrides.pop("dpo", None) or DPOConfig.for_track(track, warmup_steps=0)
        dpo = replace(dpo, steps=max(1, dpo.steps // rounds))
        cfg = cls(
            rounds=rounds,
            prompts_per_round=track.pick(cpu=128, gpu=512, grading=8),
            samples_per_prompt=track.pick(cpu=4, gpu=4, grading=2),
            max_new_tokens=track.pick(cpu=24, gpu=48, grading=8),
            dpo=dpo,
        )
        return replace(cfg, **overrides)


OnlineHistory = RunHistory  # one row per round in ``steps``


@torch.no_grad()
def sample_online_pairs(policy, reference, tokenizer, prompt_ids_list: Sequence[list[int]], labeller: Labeller,
                        config: OnlineDPOConfig, gold=None, generator: torch.Generator | None = None) -> list[dict]:
    """Sample ``samples_per_prompt`` completions per prompt from ``policy``; pair each prompt's best and worst.

    The labeller's scores decide the pair; prompts whose samples all score the same give no pair.
    ``ref_*_logps`` are the reference's summed completion log-probs, so ``train_dpo(policy, None, ...)``
    can skip the reference forward pass. ``gold`` (optional) adds ``gold_chosen``/``gold_rejected``.
    """
    G = config.samples_per_prompt
    prompt_ids, completion_ids, ref_logps = [], [], []
    for part in sample_groups(policy, prompt_ids_list, G, config.max_new_tokens, temperature=config.temperature,
                              generator=generator, tokenizer=tokenizer, decode=False,
                              prompts_per_call=max(1, config.sample_batch // G)):   # one call on the tiny track
        out = part.rollout                                                              # rows grouped by prompt
        prompt_ids += part.prompt_ids
        completion_ids += [list(c) for c in out.completion_ids]
        ref_logps += [completion_logps(reference, out.input_ids[i:i + 128], out.attention_mask[i:i + 128],
                                       out.completion_mask[i:i + 128]).float().cpu()
                      for i in range(0, len(out), 128)]                                 # 128 rows at a time
        del out
    ref_logps = torch.cat(ref_logps)                                                    # (P * G,)
    texts = gold_texts(tokenizer, prompt_ids, completion_ids)
    scores = torch.as_tensor(labeller(prompt_ids, completion_ids, texts), dtype=torch.float32).cpu()  # (P * G,)
    golds = torch.as_tensor(gold(texts), dtype=torch.float32) if gold is not None else None
    pairs = []
    for p in range(len(prompt_ids_list)):
        group = scores[p * G:(p + 1) * G]                                               # (G,)
        best, worst = p * G + int(group.argmax()), p * G + int(group.argmin())
        if not scores[best] > scores[worst]:
            continue                                                                    # a tie: nothing to learn
        row = {"prompt_ids": prompt_ids[best], "chosen_ids": completion_ids[best], "rejected_ids": completion_ids[worst],
               "ref_chosen_logps": float(ref_logps[best]), "ref_rejected_logps": float(ref_logps[worst]),
               "score_chosen": float(scores[best]), "score_rejected": float(scores[worst])}
        if golds is not None:
            row.update(gold_chosen=float(golds[best]), gold_rejected=float(golds[worst]))
        pairs.append(row)
    return pairs


def label_gold_agreement(pairs: Sequence[dict]) -> float:
    """Share of pairs whose chosen completion has the strictly higher gold score (nan without gold scores)."""
    rows = [r for r in pairs if "gold_chosen" in r]
    if not rows:
        return float("nan")
    return sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / len(rows)


def train_online_dpo(policy, reference, tokenizer, prompts: Sequence, labeller: Labeller, loss_fn,
                     config: OnlineDPOConfig, eval_fn: Callable | None = None, gold=None) -> OnlineHistory:
    """Online DPO: ``config.rounds`` times, sample fresh pairs from ``policy``, label them, run ``config.dpo`` steps.

    Args:
        policy: the causal LM to train (in place).
        reference: the frozen starting policy; it scores the sampled pairs and never changes.
        prompts: training prompts, dicts with ``prompt_ids`` (``load_prompts("train")``) or lists of
            token ids; each round takes the next ``prompts_per_round``.
        labeller: scores completions (:func:`reward_model_labeller`, :func:`gold_labeller`).
        loss_fn: the four-argument DPO-style loss (beta bound), as for ``train_dpo``.
        eval_fn: ``eval_fn(policy) -> {"gold", "kl", ...}`` at step 0 and after every round.
        gold: optional gold reward, only to log how often the labeller agrees with it.
    """
    history = OnlineHistory(config=asdict(config))
    start = time.perf_counter()
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    needed = config.rounds * config.prompts_per_round
    if len(prompts) < needed:
        raise ValueError(f"online DPO needs {needed} training prompts ({config.rounds} rounds x "
                         f"{config.prompts_per_round}), got {len(prompts)}")
    step = 0
    if eval_fn is not None:
        history.evals.append({"step": 0, "round": 0, **eval_fn(policy)})
    for r in tqdm(range(1, config.rounds + 1), desc="online DPO rounds", leave=False):
        t0 = time.perf_counter()
        chunk = [p["prompt_ids"] if isinstance(p, dict) else p
                 for p in prompts[(r - 1) * config.prompts_per_round: r * config.prompts_per_round]]
        pairs = sample_online_pairs(policy, reference, tokenizer, chunk, labeller, config, gold, generator)
        if not pairs:
            raise RuntimeError(f"round {r}: every prompt's samples scored the same, so there is no pair to train on")
        run = train_dpo(policy, None, pairs, loss_fn, replace(config.dpo, seed=config.seed + r), eval_fn=None)
        step += config.dpo.steps
        losses = run.column("loss")
        history.steps.append({"round": r, "pairs": len(pairs), "label_gold_agreement": label_gold_agreement(pairs),
                               "loss": sum(losses[-10:]) / len(losses[-10:]),
                               "score_gap": sum(p["score_chosen"] - p["score_rejected"] for p in pairs) / len(pairs),
                               "seconds": time.perf_counter() - t0})
        if eval_fn is not None:
            history.evals.append({"step": step, "round": r, **eval_fn(policy)})
    history.seconds = time.perf_counter() - start
    return history


__all__ = ["Labeller", "gold_labeller", "noisy_gold_labeller", "reward_model_labeller", "OnlineDPOConfig", "OnlineHistory",
           "sample_online_pairs", "label_gold_agreement", "train_online_dpo"]
