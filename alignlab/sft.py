"""Supervised fine-tuning (SFT): demonstrations that end, the SFT loop, and how completions end before and after.

The tiny GPT-2 was pretrained on review openings and almost never emits EOS within a
completion budget. SFT fine-tunes it on *demonstrations*: a prompt (a 2-8-token review
prefix, as ``alignlab.pairs.make_prompts`` builds them) and a completion that is the
rest of that review's sentence, followed by EOS, within ``MAX_NEW_TOKENS`` tokens (EOS
counted). After SFT most samples end, at lengths that vary, so length is a quantity
the later notebooks can measure.

>>> demos = make_demonstrations(tokenizer, load_reviews("train"))       # dicts: prompt_ids, completion_ids, review
>>> history = train_sft(policy, demos, SFTConfig.for_track(track), loss_fn=sft_loss, pad_id=tokenizer.pad_token_id)
>>> completion_stats(policy, prompt_ids, tokenizer)                     # EOS rate, length mean/std/quartiles

``train_sft`` takes the loss as an argument (``loss_fn(logits, input_ids, completion_mask) -> ()``),
so notebook 01 trains with the learner's own ``sft_loss``; ``scripts/build_sft.py`` builds the
stored SFT policy (``data/sft/``) with the reference.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import collate
from .models import position_ids_from_mask
from .pairs import MAX_NEW_TOKENS, PROMPT_TOKENS
from .rollout import sample, sample_groups

DEMO_SEED = 4                         # which reviews become demonstrations, and their prefix lengths
SENTENCE_ENDS = (".", "!", "?")       # a completion ends after a token whose text ends with one of these
CLOSERS = "\"')]"                     # ... possibly followed by closing quotes or brackets


def _ends_sentence(text: str) -> bool:
    return text.rstrip(CLOSERS).endswith(SENTENCE_ENDS)


def make_demonstrations(tokenizer, reviews: Sequence[dict], max_new_tokens: int = MAX_NEW_TOKENS,
                        seed: int = DEMO_SEED, n: int | None = None) -> list[dict]:
    """Demonstrations from reviews: a 2-8-token prefix, then the rest of its sentence + EOS.

    For each review (in an order shuffled with ``seed``) the prompt is its first k tokens, k uniform
    in ``PROMPT_TOKENS`` (as the course's prompts); the completion is the following tokens up to and
    including the first one that ends a sentence (its text ends with ., ! or ?, possibly followed by
    closing quotes or brackets, and the next token starts a new word or the review ends), then EOS.
    A review whose sentence does not end within ``max_new_tokens`` tokens (EOS counted) is skipped.
    Returns at most ``n`` dicts ``{"prompt_ids", "completion_ids", "review"}`` (``completion_ids`` ends with EOS).
    """
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(reviews))
    lengths = rng.randint(PROMPT_TOKENS[0], PROMPT_TOKENS[1] + 1, size=len(reviews))
    texts = [reviews[i]["text"][:400] for i in order]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    demos = []
    for i, seq, k in zip(order, ids, lengths):
        k = int(k)
        window = seq[k:k + max_new_tokens]                 # the budget holds max_new_tokens - 1 text tokens + EOS
        pieces = tokenizer.convert_ids_to_tokens(window + seq[k + max_new_tokens:k + max_new_tokens + 1])
        words = [tokenizer.convert_tokens_to_string([p]) for p in pieces]
        for j in range(min(len(window), max_new_tokens - 1)):
            after = words[j + 1] if j + 1 < len(words) else ""
            if _ends_sentence(words[j]) and (after == "" or after[:1].isspace()):
                demos.append({"prompt_ids": seq[:k], "completion_ids": window[:j + 1] + [eos],
                              "review": int(reviews[i]["id"])})
                break
        if n is not None and len(demos) >= n:
            break
    return demos


@dataclass
class SFTConfig:
    """Settings of the SFT loop (``train_sft``)."""
    steps: int = 300                  # optimizer steps
    batch_size: int = 32              # demonstrations per step
    lr: float = 5e-4                  # peak AdamW learning rate (linear warm-up, then cosine to lr/10)
    warmup: int = 20                  # warm-up steps
    weight_decay: float = 0.0         # AdamW weight decay
    max_grad_norm: float = 1.0        # gradient clipping
    seed: int = 0                     # batch order
    cpu_threads: int | None = 1       # torch threads while training on a CPU (None: as set); see train_sft

    @classmethod
    def for_track(cls, track, **overrides) -> "SFTConfig":
        """The settings for ``track`` (CPU, GPU, grading); ``overrides`` replace any field."""
        cfg = cls(steps=track.pick(cpu=30, gpu=200, grading=4), batch_size=track.pick(cpu=32, gpu=64, grading=8))
        return replace(cfg, **overrides)


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to a tenth of ``cfg.lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged), then restore the previous number."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_sft(policy, demos: Sequence[dict], cfg: SFTConfig, loss_fn: Callable, pad_id: int,
              progress: bool = True, on_step: Callable[[int], None] | None = None) -> list[float]:
    """Fine-tune ``policy`` in place on ``demos`` with ``loss_fn(logits, input_ids, completion_mask) -> ()``.

    Batches are right-padded prompt + completion (``alignlab.data.collate``); the batch order is
    seeded with ``cfg.seed``. Returns the loss of every step; the policy is left in eval mode.
    ``on_step(step)``, if given, is called after every optimizer step (1-based) with the policy in eval
    mode (e.g. to evaluate it along the run); training resumes in train mode after it.
    On a CPU the loop runs with ``cfg.cpu_threads`` torch threads (default 1): the tiny model's
    operations are too small to split, and on the busy 2-core machine 10 steps took 3.6 s on one
    thread against 33.6 s on two (the second thread waits for a core), as sampling does
    (``alignlab.rollout.one_thread``).
    """
    if not demos:
        raise ValueError("train_sft needs at least one demonstration")
    device = next(policy.parameters()).device
    with _threads(cfg.cpu_threads if device.type == "cpu" else None):
        return _train(policy, demos, cfg, loss_fn, pad_id, progress, device, on_step)


def _train(policy, demos, cfg, loss_fn, pad_id, progress, device, on_step=None) -> list[float]:
    """The loop of ``train_sft`` (arguments checked)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order, cursor, losses = torch.randperm(len(demos), generator=gen), 0, []
    policy.train()
    for step in tqdm(range(cfg.steps), desc="SFT", disable=not progress):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(demos), generator=gen), 0
        rows = [demos[int(i)] for i in order[cursor:cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        batch = {k: v.to(device) for k, v in collate([r["prompt_ids"] for r in rows],
                                                      [r["completion_ids"] for r in rows], pad_id).items()}
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=position_ids_from_mask(batch["attention_mask"])).logits   # (B, T, V)
        loss = loss_fn(logits, batch["input_ids"], batch["completion_mask"])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            policy.eval()
            on_step(step + 1)
            policy.train()
    policy.eval()
    return losses


@torch.no_grad()
def completion_stats(policy, prompt_ids: Sequence[Sequence[int]], tokenizer, max_new_tokens: int = MAX_NEW_TOKENS,
                     seed: int = 0, batch: int = 128) -> dict:
    """How completions sampled at temperature 1 end: EOS rate within the budget and the length distribution.

    Lengths count completion tokens, EOS included (a completion that hits the budget has
    ``max_new_tokens``). Returns ``{"n", "eos_rate", "length_mean", "length_std", "length_quartiles"
    (25, 50, 75 %), "seconds"}``; sampling uses one generator seeded ``seed``.
    """
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    lengths, ends, t0 = [], [], time.time()
    for first in range(0, len(prompt_ids), batch):
        ro = sample(policy, prompt_ids[first:first + batch], max_new_tokens, generator=gen,
                    eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
        lengths += [len(c) for c in ro.completion_ids]
        ends += ro.ended_with_eos.tolist()
    lengths = np.array(lengths, dtype=float)
    return {"n": len(lengths), "eos_rate": float(np.mean(ends)), "length_mean": float(lengths.mean()),
            "length_std": float(lengths.std()),
            "length_quartiles": [float(q) for q in np.percentile(lengths, [25, 50, 75])],
            "seconds": time.time() - t0}


def demonstration_stats(demos: Sequence[dict]) -> dict:
    """Count and completion-length distribution (EOS included) of demonstrations."""
    lengths = np.array([len(d["completion_ids"]) for d in demos], dtype=float)
    return {"n": len(demos), "length_mean": float(lengths.mean()), "length_std": float(lengths.std()),
            "length_quartiles": [float(q) for q in np.percentile(lengths, [25, 50, 75])]}


# ------------------------------------------------------------ rejection sampling (best-of-n distillation)
@torch.no_grad()
def best_of_n_demonstrations(policy, prompt_ids_list: Sequence[Sequence[int]], n: int, score_fn: Callable,
                             tokenizer, max_new_tokens: int = MAX_NEW_TOKENS, seed: int = 0) -> list[dict]:
    """Rejection sampling's data: for each prompt, the best of ``n`` completions sampled from ``policy``.

    ``score_fn(prompt_ids_list, completion_ids_list) -> (N,)`` scores prompt + completion pairs (a reward
    model through ``reward_model.score_completions``, or the gold); the highest-scoring sample of each
    prompt becomes a demonstration ``{"prompt_ids", "completion_ids", "score", "mean_score"}`` for
    ``train_sft`` (``mean_score``: the mean over that prompt's n samples, what one sample would have
    scored). Fine-tuning on them is expert iteration (Llama 2's rejection sampling, CS336's expert
    iteration); sampling is seeded by ``seed``, so the same inputs give the same demonstrations.
    """
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    demos = []
    for part in sample_groups(policy, prompt_ids_list, n, max_new_tokens, generator=generator, tokenizer=tokenizer,
                              decode=False):
        completions = [list(c) for c in part.rollout.completion_ids]
        scores = torch.as_tensor(score_fn(part.prompt_ids, completions), dtype=torch.float32).view(part.count, n)
        best = scores.argmax(dim=1)                                                      # (count,)
        for i in range(part.count):
            j = i * n + int(best[i])
            demos.append({"prompt_ids": list(part.prompt_ids[j]), "completion_ids": completions[j],
                          "score": float(scores[i, best[i]]), "mean_score": float(scores[i].mean())})
    return demos
