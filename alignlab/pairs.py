"""Prompts and labelled preference pairs by track: loading them, and building them from a policy.

This module owns track-aware loading. On the tiny track (or ``track=None``)
``load_prompts`` / ``load_pairs`` return the embedded files; on the gpt2 track,
whose tokenizer and policy differ from the tiny ones (so the stored ids and
reference log-probs do not apply), the prompts are re-encoded from their text
and the pairs are sampled from that policy, labelled and cached on disk. The
same builders write the embedded files (``scripts/build_pairs.py``).

>>> prompts = load_prompts("test", track)           # dicts: prompt, prompt_ids, split, review, review_label
>>> pairs = load_pairs("train", track, n=600)       # dicts: prompt_ids, chosen_ids, rejected_ids, gold_*, p_chosen, ...

Pairs: the policy samples ``SAMPLES_PER_PROMPT`` completions per prompt (at
most ``MAX_NEW_TOKENS`` tokens, temperature 1); every pair of them is labelled
by a simulated Bradley-Terry annotator, P(a preferred) =
sigmoid((g_a - g_b) / ANNOTATOR_TEMPERATURE) with g the gold P(positive) of
prompt + completion. Row fields: split, prompt, prompt_ids, chosen,
chosen_ids, rejected, rejected_ids, gold_chosen, gold_rejected, p_chosen,
ref_chosen_logps, ref_rejected_logps (summed completion log-probs under the
sampling policy; stored on disk as ref_chosen_logp, ref_rejected_logp: ``alignlab.data.read_pairs``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .data import check_split, load_reviews, read_pairs, stored_pairs, stored_prompts, write_pairs
from .models import load_sft_policy, load_tokenizer
from .rewards import gold_texts, load_gold
from .rollout import sample_groups

PROMPT_SEED = 1              # which reviews and prefix lengths become prompts
SAMPLE_SEED = 2              # policy sampling
ANNOTATOR_SEED = 3           # the simulated annotators' coin flips
SAMPLES_PER_PROMPT = 4       # completions per prompt -> 6 pairs
MAX_NEW_TOKENS = 24          # completion length cap (EOS included)
ANNOTATOR_TEMPERATURE = 0.1  # Bradley-Terry temperature on the gold P(positive) gap
PROMPT_TOKENS = (2, 8)       # prefix length range, inclusive
PAIRS_PER_PROMPT = SAMPLES_PER_PROMPT * (SAMPLES_PER_PROMPT - 1) // 2
CACHE_VERSION = 1            # bump when the pair format or the sampling changes, to invalidate old caches


# ------------------------------------------------------------------ building blocks (used by the build script)
def make_prompts(tokenizer, n_train: int, n_test: int) -> list[dict]:
    """2-8-token prefixes (length uniform) of ``n_train`` training and ``n_test`` held-out IMDb reviews."""
    rng = np.random.RandomState(PROMPT_SEED)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        reviews = load_reviews(split)
        picked = rng.choice(len(reviews), size=n, replace=False)
        lengths = rng.randint(PROMPT_TOKENS[0], PROMPT_TOKENS[1] + 1, size=n)
        texts = [reviews[i]["text"][:200] for i in picked]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, seq, k in zip(picked, ids, lengths):
            p = seq[:int(k)]
            rows.append({"split": split, "prompt": tokenizer.decode(p), "prompt_ids": p,
                         "review": int(reviews[i]["id"]), "review_label": int(reviews[i]["label"])})
    return rows


def make_pairs(policy, tokenizer, gold, prompts, batch_prompts: int = 128, max_new_tokens: int = MAX_NEW_TOKENS,
               log=print) -> tuple[list[dict], float]:
    """Sample, score and label pairs for ``prompts`` (rows with ``split``, ``prompt``, ``prompt_ids``).

    Returns (rows, EOS rate of the samples). Sampling uses one generator seeded
    ``SAMPLE_SEED`` on the policy's device, in chunks of ``batch_prompts``
    prompts, so a rebuild with the same sizes gives the same rows. ``log``
    (None: silent) gets one progress line per chunk.
    """
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(SAMPLE_SEED)
    ann = np.random.RandomState(ANNOTATOR_SEED)
    rows, ends, t0 = [], [], time.time()
    for part in sample_groups(policy, [p["prompt_ids"] for p in prompts], SAMPLES_PER_PROMPT, max_new_tokens,
                              generator=gen, tokenizer=tokenizer, prompts_per_call=batch_prompts):
        chunk, ids, ro = prompts[part.first:part.first + part.count], part.prompt_ids, part.rollout
        full = gold_texts(tokenizer, ids, ro.completion_ids)
        g = gold(full).double().numpy()                                           # (B,)
        logp = (ro.logprobs * ro.completion_mask[:, 1:]).sum(-1).tolist()         # (B,) summed completion log-probs
        ends.extend(ro.ended_with_eos.tolist())
        for j, p in enumerate(chunk):
            base = j * SAMPLES_PER_PROMPT
            for a, b in itertools.combinations(range(base, base + SAMPLES_PER_PROMPT), 2):
                p_a = 1.0 / (1.0 + np.exp(-(g[a] - g[b]) / ANNOTATOR_TEMPERATURE))
                c, r = (a, b) if ann.rand() < p_a else (b, a)
                rows.append({"split": p["split"], "prompt": p["prompt"], "prompt_ids": p["prompt_ids"],
                             "chosen": ro.texts[c], "chosen_ids": ro.completion_ids[c],
                             "rejected": ro.texts[r], "rejected_ids": ro.completion_ids[r],
                             "gold_chosen": round(float(g[c]), 5), "gold_rejected": round(float(g[r]), 5),
                             "p_chosen": round(float(p_a if c == a else 1 - p_a), 5),
                             "ref_chosen_logps": round(logp[c], 4), "ref_rejected_logps": round(logp[r], 4)})
        if log is not None:
            log(f"pairs: {part.first + part.count}/{len(prompts)} prompts "
                f"({time.time() - t0:.0f} s)")
    return rows, float(np.mean(ends)) if ends else 0.0


def pair_stats(rows: list[dict]) -> dict:
    """Label noise, annotator agreement, accuracy ceiling and mean gold scores of a list of pairs."""
    gc = np.array([r["gold_chosen"] for r in rows])
    gr = np.array([r["gold_rejected"] for r in rows])
    pc = np.array([r["p_chosen"] for r in rows])
    return {"pairs": len(rows),
            "label_noise": float(np.mean(gc < gr)),                      # label disagrees with the gold order
            "gold_ties": float(np.mean(gc == gr)),
            "annotator_agreement": float(np.mean(pc ** 2 + (1 - pc) ** 2)),  # two independent annotators agree
            "accuracy_ceiling": float(np.mean(np.maximum(pc, 1 - pc))),   # best possible label-prediction accuracy
            "mean_gold_chosen": float(gc.mean()), "mean_gold_rejected": float(gr.mean())}


LENGTH_BINS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, MAX_NEW_TOKENS))   # completion tokens, EOS counted


def length_stats(rows: list[dict], eos_token_id: int = 0) -> dict:
    """How the pairs' completions relate to length: the lengths, how often they end, and how the gold and the
    annotators' labels depend on length.

    Completions are counted once each (a prompt's completions appear in several pairs). ``corr_gold_length``:
    Pearson correlation of a completion's gold score with its length; ``chosen_longer`` / ``chosen_shorter``:
    fractions of pairs whose chosen completion is the longer / the shorter; ``gold_better_longer``: among
    pairs of unequal length and unequal gold, how often the gold's better one is the longer;
    ``label_longer``: the same for the annotators' label; ``gold_by_length``: mean gold of the completions
    in each bin of ``LENGTH_BINS``.
    """
    seen, lengths, golds, ends = set(), [], [], []
    for r in rows:
        for side in ("chosen", "rejected"):
            key = (tuple(r["prompt_ids"]), tuple(r[f"{side}_ids"]))
            if key in seen:
                continue
            seen.add(key)
            lengths.append(len(r[f"{side}_ids"]))
            golds.append(r[f"gold_{side}"])
            ends.append(bool(r[f"{side}_ids"]) and r[f"{side}_ids"][-1] == eos_token_id)
    lengths, golds = np.array(lengths, dtype=float), np.array(golds, dtype=float)
    lc = np.array([len(r["chosen_ids"]) for r in rows])
    lr = np.array([len(r["rejected_ids"]) for r in rows])
    gc = np.array([r["gold_chosen"] for r in rows])
    gr = np.array([r["gold_rejected"] for r in rows])
    both = (lc != lr) & (gc != gr)
    bins = {f"{lo}-{hi}": (float(golds[(lengths >= lo) & (lengths <= hi)].mean())
                           if ((lengths >= lo) & (lengths <= hi)).any() else float("nan"))
            for lo, hi in LENGTH_BINS}
    return {"completions": int(len(lengths)), "eos_rate": float(np.mean(ends)),
            "length_mean": float(lengths.mean()), "length_std": float(lengths.std()),
            "length_quartiles": [float(q) for q in np.percentile(lengths, [25, 50, 75])],
            "corr_gold_length": float(np.corrcoef(golds, lengths)[0, 1]) if lengths.std() > 0 else float("nan"),
            "chosen_longer": float(np.mean(lc > lr)), "chosen_shorter": float(np.mean(lc < lr)),
            "gold_better_longer": float(np.mean((gc > gr)[both] == (lc > lr)[both])) if both.any() else float("nan"),
            "label_longer": float(np.mean((lc > lr)[lc != lr])) if (lc != lr).any() else float("nan"),
            "gold_by_length": bins}


# ------------------------------------------------------------------ the gpt2 track at run time
def is_stored_track(track) -> bool:
    """True for None or the tiny track: the embedded files apply as they are."""
    name = getattr(track, "name", track)
    if name is None or name == "tiny":
        return True
    if not hasattr(track, "policy"):
        raise TypeError(f"track must be None or a Track from alignlab.config.select_track, not {track!r}")
    return False


def retokenize_prompts(rows: list[dict], tokenizer) -> list[dict]:
    """The prompts re-encoded from their text (``prompt``) with ``tokenizer``; every other field kept."""
    ids = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"] if rows else []
    return [{**r, "prompt_ids": list(p)} for r, p in zip(rows, ids)]


def track_prompts(track, split: str) -> list[dict]:
    """The stored prompts of ``split`` with ids from the track's tokenizer."""
    return retokenize_prompts(stored_prompts(split), load_tokenizer(track))


def cache_dir() -> Path:
    """Where regenerated pairs live: ``$ALIGNLAB_CACHE`` or ``~/.cache/alignlab``."""
    return Path(os.environ.get("ALIGNLAB_CACHE") or Path.home() / ".cache" / "alignlab")


def _policy_key(track) -> str:
    """The policy's name, or its resolved folder with its config's modification time (a rebuilt model is new)."""
    src = str(track.policy)
    config = Path(src) / "config.json"
    if config.exists():
        return f"{Path(src).resolve()}@{config.stat().st_mtime_ns}"
    return src


def cache_file(track, split: str, n_prompts: int, max_new_tokens: int = MAX_NEW_TOKENS,
               batch_prompts: int = 64) -> Path:
    """The cache file for these pairs, keyed by policy, split, sizes, sampling chunk and seeds."""
    key = json.dumps({"policy": _policy_key(track), "split": split, "prompts": n_prompts,
                      "samples": SAMPLES_PER_PROMPT, "max_new_tokens": max_new_tokens, "chunk": batch_prompts,
                      "seeds": [PROMPT_SEED, SAMPLE_SEED, ANNOTATOR_SEED], "temperature": ANNOTATOR_TEMPERATURE,
                      "version": CACHE_VERSION}, sort_keys=True)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / f"pairs-{track.name}-{split}-{n_prompts}p-{digest}.jsonl.gz"


def track_pairs(track, split: str, n: int | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
                batch_prompts: int | None = None) -> list[dict]:
    """Preference pairs of ``split`` sampled from the track's policy, labelled by the gold annotators, cached.

    ``n``: how many pairs (default: as many as the stored split, 6 per stored
    prompt); the first ``ceil(n / 6)`` prompts are used. The first call
    samples and prints one line; later calls read the cache file.
    """
    prompts = track_prompts(track, split)
    total = len(prompts) * PAIRS_PER_PROMPT
    n = total if n is None else int(n)
    if not 0 < n <= total:
        raise ValueError(f"n must be between 1 and {total} (the {split} split's {len(prompts)} prompts x "
                         f"{PAIRS_PER_PROMPT} pairs), got {n}")
    n_prompts = math.ceil(n / PAIRS_PER_PROMPT)
    batch_prompts = batch_prompts or (256 if getattr(track, "device", "cpu") == "cuda" else 64)
    path = cache_file(track, split, n_prompts, max_new_tokens, batch_prompts)
    if path.exists():
        try:
            return read_pairs(path)[:n]
        except (OSError, EOFError, ValueError):   # a damaged cache file is rebuilt, not trusted
            pass
    print(f"Regenerating {n_prompts * PAIRS_PER_PROMPT} {split} pairs from {track.policy} on {track.device} "
          f"(once; cached in {path.parent})", flush=True)
    tokenizer = load_tokenizer(track)
    policy = load_sft_policy(track)
    with torch.random.fork_rng(devices=[]):
        rows, _ = make_pairs(policy, tokenizer, load_gold(), prompts[:n_prompts], batch_prompts=batch_prompts,
                             max_new_tokens=max_new_tokens, log=None)
    del policy
    write_pairs(path, rows)
    return rows[:n]


# ------------------------------------------------------------------ loading, by track
def load_prompts(split: str, track=None) -> list[dict]:
    """Prompts: 2-8-token IMDb prefixes, ``{"prompt", "prompt_ids", "split", "review"}``; see data/README.md.

    ``track``: None or the tiny track gives the stored rows; the gpt2 track
    gives the same prompts with ``prompt_ids`` re-encoded from their text by
    that track's tokenizer (``track_prompts``).
    """
    check_split(split)
    return stored_prompts(split) if is_stored_track(track) else track_prompts(track, split)


def load_pairs(split: str, track=None, n: int | None = None) -> list[dict]:
    """Labelled preference pairs of one split (list of dicts; fields in data/README.md).

    ``track``: None or the tiny track gives the stored rows. The gpt2 track
    gives pairs with the same fields sampled from its own policy and labelled
    by the same simulated annotators (``track_pairs``): the first call
    generates them (one printed line) and caches them on disk
    (``$ALIGNLAB_CACHE`` or ``~/.cache/alignlab``); later calls read the cache.
    ``n``: at most this many pairs (default: the whole split).
    """
    check_split(split)
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not is_stored_track(track):
        return track_pairs(track, split, n=n)
    rows = stored_pairs(split)
    return rows if n is None else rows[:n]
