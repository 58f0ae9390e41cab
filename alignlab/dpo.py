"""Notebook 05's DPO loop (its plots and the beta explorer: ``alignlab.dpo_plots``).

DPO trains the policy on fixed preference pairs with a classification loss on
log-ratios against a frozen reference; no reward model, no sampling. The loop
is short and visible; the loss is passed in (the learner's own in the notebook):

>>> config = DPOConfig.for_track(track)
>>> loss_fn = functools.partial(dpo_loss, beta=config.beta)
>>> history = train_dpo(policy, reference, pairs, loss_fn, config, eval_fn=None)

``loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
ref_rejected_logps)`` gets four (B,) tensors and returns a loss, or a tuple
whose first element is the loss (and, for ``dpo_loss``, the implicit rewards).
Sequence log-probs are sums over completion tokens (``average_logps=False``);
SimPO-style losses ask for per-token averages with ``average_logps=True``.
"""
from __future__ import annotations

import functools
import itertools
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from . import reference as ref_math
from .data import collate_pairs, pad_right
from .history import RunHistory
from .models import position_ids_from_mask

LossFn = Callable[..., "torch.Tensor | tuple"]
EvalFn = Callable[[torch.nn.Module], dict]  # policy -> {"gold": float, "kl": float, ...}


@dataclass
class DPOConfig:
    """Settings of one DPO run. ``for_track`` gives notebook 05's tuned recipe; ``docs/tuning.md`` has the runs behind it."""

    beta: float = 0.1              # KL strength: implicit reward = beta * log(pi / pi_ref); bind it into loss_fn
    lr: float = 3e-4               # AdamW learning rate (tiny model, small data: far above the paper's 1e-6)
    steps: int = 200               # optimizer steps; DPO keeps drifting from the reference, so stop early
    batch_size: int = 32           # pairs per step
    warmup_steps: int = 10         # linear learning-rate warm-up, then constant (as in the paper) unless decay
    decay: bool = False            # True: after the warm-up, decay linearly to 0 at the last step (TRL's default)
    max_grad_norm: float = 1.0     # gradient clipping on the policy's parameters
    average_logps: bool = False    # True: per-token average log-probs (SimPO); DPO needs sums
    rpo_alpha: float = 0.0         # RPO: add rpo_alpha x the chosen completions' NLL per token (Pang et al. 2024); 0: none
    eval_every: int = 50           # call eval_fn every this many steps (and at step 0 and at the end)
    heldout_every: int = 25        # loss and implicit-reward accuracy on the held-out pairs every this many steps
    seed: int = 0                  # order in which the pairs are visited
    group_by_prompt: bool = False  # True: a prompt's pairs are visited together, so its completions run once a batch
    pad_token_id: int | None = None  # pad id for collating pairs; None: the policy's config.pad_token_id (or 0)

    @classmethod
    def for_track(cls, track, **overrides) -> "DPOConfig":
        """Notebook 05's DPO recipe for ``track`` (CPU, GPU, grading); ``overrides`` replace any field.

        beta 0.15; a prompt's pairs share a batch (96 pairs = 16 prompts on the CPU); the learning rate is
        warmed up, then decays linearly to 0. E.g. ``for_track(track, beta=0.3)``.
        """
        cfg = cls(
            beta=0.15,
            lr=track.pick(cpu=6e-4, gpu=5e-6),
            steps=track.pick(cpu=300, gpu=600, grading=6),
            batch_size=track.pick(cpu=96, gpu=64, grading=12),
            warmup_steps=track.pick(cpu=10, gpu=50, grading=0),
            decay=True,
            group_by_prompt=True,
            eval_every=track.pick(cpu=75, gpu=100, grading=3),
        )
        return replace(cfg, **overrides)


DPOHistory = RunHistory  # the name notebook 05 and older code use


# ------------------------------------------------------------ log-probs of pairs
def completion_logps(model, input_ids, attention_mask, completion_mask, average: bool = False) -> torch.Tensor:
    """Summed (or averaged) log-probs of each row's completion under ``model``.

    Shapes: input_ids, attention_mask, completion_mask (B, T) -> (B,) float32.
    position_ids follow the attention mask, so left and right padding both work.
    """
    position_ids = position_ids_from_mask(attention_mask)                               # (B, T)
    if not isinstance(model, GPT2LMHeadModel):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits  # (B, T, V)
        token_logps = ref_math.token_logprobs(logits, input_ids)                       # (B, T-1)
        return ref_math.sequence_logprob(token_logps, completion_mask, average=average)  # (B,)
    # GPT-2: the same numbers, with the vocabulary projection only where a completion token is predicted
    # (prompt and padding positions need none), and one fused log-softmax-and-pick.
    hidden = model.transformer(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state            # (B, T, H)
    predicts = completion_mask[:, 1:].bool()                                            # (B, T-1): next token is completion
    logits = model.lm_head(hidden[:, :-1][predicts]).float()                            # (N, V)
    picked = -torch.nn.functional.cross_entropy(logits, input_ids[:, 1:][predicts], reduction="none")  # (N,)
    token_logps = torch.zeros(predicts.shape, dtype=picked.dtype, device=picked.device).masked_scatter(predicts, picked)
    return ref_math.sequence_logprob(token_logps, completion_mask, average=average)     # (B,)


def pair_logps(model, batch: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen_logps (B,), rejected_logps (B,)) of a ``collate_pairs`` batch (right-padded), in one forward pass.

    A sequence that appears in several pairs of the batch (the K completions of
    one prompt make K(K-1)/2 pairs) is run through the model once; its log-prob
    is shared by those pairs, and so is the gradient that flows back to it.
    """
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    both = {k: torch.cat([pad_right(batch[f"chosen_{k}"], width), pad_right(batch[f"rejected_{k}"], width)])
            for k in ("input_ids", "attention_mask", "completion_mask")}               # each (2B, T)
    rows = torch.cat([both["input_ids"], both["attention_mask"], both["completion_mask"]], dim=1)  # (2B, 3T)
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)                    # (U, 3T), (2B,)
    ids, attention, completion = unique.split(width, dim=1)                             # each (U, T)
    logps = _length_bucketed_logps(model, ids, attention, completion, average)[inverse]  # (2B,)
    n = batch["chosen_input_ids"].shape[0]
    return logps[:n], logps[n:]                                                         # (B,), (B,)


BUCKETS = 4                 # pair_logps runs a batch's distinct rows in up to this many length buckets ...
BUCKET_MIN_SAVING = 0.15    # ... when that skips at least this share of the padded batch's token slots


def _length_bucketed_logps(model, ids, attention, completion, average: bool) -> torch.Tensor:
    """``completion_logps`` of right-padded rows, run in length buckets when that saves compute.

    Shapes: ids, attention, completion (U, T) -> (U,). Rows are sorted by their number of real tokens and
    split into ``BUCKETS`` equal groups; each group is cut to its own longest row (right padding only, so no
    real token loses a column it attends to). Worth it when completions end at different lengths (after
    SFT most do: a quarter to a third of the slots are padding); when the buckets would skip less than
    ``BUCKET_MIN_SAVING`` of the padded batch (completions that all run to the budget), one call as before.
    """
    lengths = attention.sum(-1)                                                         # (U,) real tokens
    order = torch.argsort(lengths, stable=True)                                         # (U,) short first
    groups = [g for g in order.chunk(BUCKETS) if len(g)]
    widths = [int(lengths[g].max()) for g in groups]
    slots = sum(len(g) * w for g, w in zip(groups, widths))
    if len(groups) < 2 or slots > (1 - BUCKET_MIN_SAVING) * ids.numel():
        return completion_logps(model, ids, attention, completion, average)
    parts = [completion_logps(model, ids[g, :w], attention[g, :w], completion[g, :w], average)
             for g, w in zip(groups, widths)]                                           # each (len(g),)
    return torch.cat(parts)[torch.argsort(order)]                                       # (U,) in the rows' order


def reference_logps(reference, batch: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's log-probs of a batch, without gradient: from the frozen model, or stored in the pairs.

    ``reference=None`` reads ``ref_chosen_logps``/``ref_rejected_logps`` (sums, from
    the policy that sampled the pairs); ``average=True`` divides them by the completion length.
    """
    if reference is not None:
        with torch.no_grad():
            return pair_logps(reference, batch, average)
    if "ref_chosen_logps" not in batch:
        raise ValueError("reference=None needs pairs with stored ref_chosen_logps/ref_rejected_logps; pass a frozen reference model")
    out = []
    for name in ("chosen", "rejected"):
        logps = batch[f"ref_{name}_logps"]                                              # (B,)
        if average:
            logps = logps / batch[f"{name}_completion_mask"].sum(-1).clamp(min=1)
        out.append(logps)
    return out[0], out[1]


@torch.no_grad()
def implicit_rewards(policy, reference, pairs: Sequence[dict], beta: float, batch_size: int = 96,
                     pad_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit reward of each pair's two completions: beta * (log pi - log pi_ref), summed over tokens.

    ``pairs``: rows of ``load_pairs``; ``reference=None`` reads their stored reference log-probs.
    Returns (chosen (N,), rejected (N,)) float32 on the CPU, in the order of ``pairs``.
    """
    device = next(policy.parameters()).device
    pad_id = pad_id if pad_id is not None else (policy.config.pad_token_id or 0)
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(list(pairs[i:i + batch_size]), pad_id=pad_id).items()}
        policy_chosen, policy_rejected = pair_logps(policy, batch)                      # (B,), (B,)
        ref_chosen, ref_rejected = reference_logps(reference, batch)                    # (B,), (B,)
        chosen.append((beta * (policy_chosen - ref_chosen)).float().cpu())
        rejected.append((beta * (policy_rejected - ref_rejected)).float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def eos_logratios(policy, reference, pairs: Sequence[dict], eos_id: int, pad_id: int, batch_size: int = 96) -> dict:
    """Where a policy moved away from its reference on the pairs' completions: the mean per-token log-ratio
    log pi(x_t | x_<t) - log pi_ref(x_t | x_<t) at the completions' final EOS and at their other tokens.

    ``pairs``: rows of ``load_pairs`` (both models are run; the stored reference log-probs are sums, not per token).
    Returns ``{"chosen": {"eos": mean, "other": mean, "eos_tokens": count}, "rejected": {...}}``: floats in nats.
    A completion cut at the budget has no EOS and adds only to "other".
    """
    device = next(policy.parameters()).device
    sums = {side: {"eos": 0.0, "other": 0.0, "eos_tokens": 0, "other_tokens": 0} for side in ("chosen", "rejected")}
    for i in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(list(pairs[i:i + batch_size]), pad_id=pad_id).items()}
        for side in ("chosen", "rejected"):
            ids, attention = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]      # (B, T)
            positions = position_ids_from_mask(attention)
            ratio = (ref_math.token_logprobs(policy(input_ids=ids, attention_mask=attention,
                                                    position_ids=positions).logits, ids)
                     - ref_math.token_logprobs(reference(input_ids=ids, attention_mask=attention,
                                                         position_ids=positions).logits, ids))   # (B, T-1)
            completion = batch[f"{side}_completion_mask"][:, 1:].bool()                          # (B, T-1)
            at_eos = completion & (ids[:, 1:] == eos_id)
            other = completion & ~at_eos
            sums[side]["eos"] += ratio[at_eos].sum().item()
            sums[side]["other"] += ratio[other].sum().item()
            sums[side]["eos_tokens"] += int(at_eos.sum())
            sums[side]["other_tokens"] += int(other.sum())
    return {side: {"eos": s["eos"] / max(1, s["eos_tokens"]), "other": s["other"] / max(1, s["other_tokens"]),
                   "eos_tokens": s["eos_tokens"]} for side, s in sums.items()}


def chosen_nll(policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """RPO's extra term: the chosen completions' negative log-likelihood per token, averaged over the pairs.

    Shapes: policy_chosen_logps (B,) summed completion log-probs, chosen_lengths (B,) their token counts -> ().
    Mean over pairs of -log pi(y_w | x) / |y_w| (Pang et al. 2024, section 2: each winner's NLL divided by its
    length). A length below 1 counts as 1, so an empty completion adds 0 rather than NaN.
    """
    if policy_chosen_logps.shape != chosen_lengths.shape or policy_chosen_logps.dim() != 1:
        raise ValueError(f"chosen_nll: expected two (B,) tensors, got {tuple(policy_chosen_logps.shape)} and "
                         f"{tuple(chosen_lengths.shape)}")
    return (-policy_chosen_logps / chosen_lengths.to(policy_chosen_logps.dtype).clamp(min=1)).mean()


def implicit_reward_stats(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict:
    """TRL's logged statistics: mean implicit rewards, accuracy (strict >) and margin."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
    }


# ------------------------------------------------------------------- the loop
def lr_factor(step: int, config: DPOConfig) -> float:
    """The learning rate of optimizer step ``step + 1`` as a fraction of ``config.lr``: warm-up, then constant or decaying."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if not config.decay or step < config.warmup_steps:
        return warm
    return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))


def visit_order(pairs: Sequence[dict], seed: int = 0, group_by_prompt: bool = False) -> list[int]:
    """A fixed shuffled order of the pairs' indices, one epoch.

    With ``group_by_prompt`` the prompts are shuffled and each prompt's pairs
    stay together (in their stored order), as InstructGPT batched the K(K-1)/2
    comparisons of a prompt: a batch then holds each completion once for
    several pairs, and :func:`pair_logps` runs it once.
    """
    generator = torch.Generator().manual_seed(seed)
    if not group_by_prompt:
        return torch.randperm(len(pairs), generator=generator).tolist()
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(pairs):
        groups.setdefault(tuple(row["prompt_ids"]), []).append(i)
    members = list(groups.values())
    return [i for g in torch.randperm(len(members), generator=generator).tolist() for i in members[g]]


def _loss_and_rewards(policy, reference, batch: dict, loss_fn: LossFn, config: DPOConfig):
    """(loss, chosen_rewards (B,), rejected_rewards (B,), (policy_chosen_logps, policy_rejected_logps)) of a batch."""
    policy_chosen_logps, policy_rejected_logps = pair_logps(policy, batch, config.average_logps)  # (B,), (B,)
    ref_chosen_logps, ref_rejected_logps = reference_logps(reference, batch, config.average_logps)  # (B,), no grad
    out = loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = out[0] if isinstance(out, (tuple, list)) else out
    if config.rpo_alpha:                                                  # RPO: + alpha x the chosen NLL per token
        lengths = batch["chosen_completion_mask"].sum(-1)                                # (B,)
        summed = policy_chosen_logps * lengths.clamp(min=1) if config.average_logps else policy_chosen_logps
        loss = loss + config.rpo_alpha * chosen_nll(summed, lengths)
    if isinstance(out, (tuple, list)) and len(out) >= 3:
        chosen_rewards, rejected_rewards = out[1], out[2]
    else:
        chosen_rewards = config.beta * (policy_chosen_logps - ref_chosen_logps).detach()
        rejected_rewards = config.beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return loss, chosen_rewards, rejected_rewards, (policy_chosen_logps, policy_rejected_logps)


def train_dpo(policy, reference, pairs: Sequence[dict], loss_fn: LossFn, config: DPOConfig,
              eval_fn: EvalFn | None = None, heldout_pairs: Sequence[dict] | None = None) -> DPOHistory:
    """Train ``policy`` in place on preference ``pairs`` with ``loss_fn``; return the history.

    Args:
        policy: a causal LM (GPT2LMHeadModel); only its parameters are updated.
        reference: the frozen reference model, or None to use the pairs' stored
            ``ref_chosen_logps``/``ref_rejected_logps``. It never receives gradient.
        pairs: rows of ``alignlab.pairs.load_pairs`` (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ...).
        loss_fn: ``loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
            ref_rejected_logps)`` -> loss, or (loss, chosen_rewards, rejected_rewards, ...).
        config: a :class:`DPOConfig`; ``config.beta`` only labels the implicit rewards
            when ``loss_fn`` does not return them.
        eval_fn: called as ``eval_fn(policy)`` at step 0, every ``eval_every`` steps and
            at the end; returns a dict (e.g. ``{"gold": ..., "kl": ...}``) logged in ``history.evals``.
        heldout_pairs: pairs the policy never trains on (the test split): at step 0, every
            ``heldout_every`` steps and at the end, their mean loss and implicit-reward accuracy
            (no gradient) are logged in ``history.heldout``, beside the training batches' in ``history.steps``.
    """
    device = next(policy.parameters()).device
    pad_id = config.pad_token_id if config.pad_token_id is not None else (policy.config.pad_token_id or 0)
    history = DPOHistory(config=asdict(config))
    start = time.perf_counter()
    policy.eval()                        # no dropout: policy and reference log-probs must compare like with like
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config=config))
    visits = itertools.cycle(visit_order(pairs, config.seed, config.group_by_prompt))  # each pair once per epoch

    def evaluate(step):
        if eval_fn is not None:
            history.evals.append({"step": step, **eval_fn(policy)})

    def measure_heldout(step):
        if not heldout_pairs or not (step % config.heldout_every == 0 or step == config.steps):
            return
        losses, stats, chosen_sum, rejected_sum = [], [], 0.0, 0.0
        with torch.no_grad():
            for i in range(0, len(heldout_pairs), config.batch_size):
                batch = {k: v.to(device) for k, v in collate_pairs(list(heldout_pairs[i:i + config.batch_size]),
                                                                   pad_id=pad_id).items()}
                loss, chosen_rewards, rejected_rewards, _ = _loss_and_rewards(policy, reference, batch, loss_fn, config)
                losses.append(loss.item() * len(chosen_rewards))
                stats.append((chosen_rewards > rejected_rewards).float().sum().item())
                chosen_sum += chosen_rewards.float().sum().item()
                rejected_sum += rejected_rewards.float().sum().item()
        n = len(heldout_pairs)
        history.heldout.append({"step": step, "loss": sum(losses) / n, "rewards/accuracies": sum(stats) / n,
                                "rewards/chosen": chosen_sum / n, "rewards/rejected": rejected_sum / n})

    evaluate(0)
    measure_heldout(0)
    for step in tqdm(range(1, config.steps + 1), desc="DPO", leave=False):
        rows = [pairs[i] for i in itertools.islice(visits, config.batch_size)]
        batch = {k: v.to(device) for k, v in collate_pairs(rows, pad_id=pad_id).items()}
        loss, chosen_rewards, rejected_rewards, (policy_chosen_logps, policy_rejected_logps) = _loss_and_rewards(
            policy, reference, batch, loss_fn, config)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()

        history.steps.append({"step": step, "loss": loss.item(), **implicit_reward_stats(chosen_rewards, rejected_rewards),
                              "logps/chosen": policy_chosen_logps.mean().item(),
                              "logps/rejected": policy_rejected_logps.mean().item(), "grad_norm": float(grad_norm),
                              "lr": lr})
        measure_heldout(step)
        if step % config.eval_every == 0 or step == config.steps:
            evaluate(step)
    history.seconds = time.perf_counter() - start
    return history


__all__ = ["DPOConfig", "DPOHistory", "train_dpo", "completion_logps", "pair_logps", "reference_logps", "implicit_rewards",
           "implicit_reward_stats", "chosen_nll"]
