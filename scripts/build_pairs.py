"""Build the prompts and the labelled preference pairs from the current tiny policy and gold classifier.

    .venv/bin/python scripts/build_pairs.py [--train-prompts 3000] [--test-prompts 500]

Prompts: 2-8-token prefixes (length uniform) of IMDb reviews, "train" ones
from training reviews, "test" ones from held-out reviews. For each prompt the
policy samples 4 completions of at most 24 new tokens at temperature 1; every
pair of them (6) is labelled by a simulated Bradley-Terry annotator:
P(a preferred) = sigmoid((g_a - g_b) / ANNOTATOR_TEMPERATURE), g = gold
P(positive) of prompt + completion. Writes data/prompts.jsonl,
data/pairs.jsonl.gz and data/pairs_metrics.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alignlab import paths  # noqa: E402
from alignlab.data import load_reviews, write_jsonl  # noqa: E402
from alignlab.models import load_policy, load_tokenizer  # noqa: E402
from alignlab.rewards import load_gold  # noqa: E402
from alignlab.rollout import sample  # noqa: E402

PROMPT_SEED = 1              # which reviews and prefix lengths become prompts
SAMPLE_SEED = 2              # policy sampling
ANNOTATOR_SEED = 3           # the simulated annotators' coin flips
SAMPLES_PER_PROMPT = 4       # completions per prompt -> 6 pairs
MAX_NEW_TOKENS = 24          # completion length cap (EOS included)
ANNOTATOR_TEMPERATURE = 0.1  # Bradley-Terry temperature on the gold P(positive) gap
PROMPT_TOKENS = (2, 8)       # prefix length range, inclusive
PAIRS_METRICS = paths.DATA_DIR / "pairs_metrics.json"


def make_prompts(tokenizer, n_train: int, n_test: int) -> list[dict]:
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


def make_pairs(policy, tokenizer, gold, prompts, batch_prompts: int = 128):
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    ann = np.random.RandomState(ANNOTATOR_SEED)
    rows, ends, t0 = [], [], time.time()
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start:start + batch_prompts]
        ids = [p["prompt_ids"] for p in chunk for _ in range(SAMPLES_PER_PROMPT)]
        ro = sample(policy, ids, MAX_NEW_TOKENS, temperature=1.0, generator=gen, tokenizer=tokenizer)
        full = tokenizer.batch_decode([p + c for p, c in zip(ids, ro.completion_ids)], skip_special_tokens=True)
        g = gold(full).double().numpy()
        logp = (ro.logprobs * ro.completion_mask[:, 1:]).sum(-1).tolist()
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
                             "ref_chosen_logp": round(logp[c], 4), "ref_rejected_logp": round(logp[r], 4)})
        print(f"pairs: {min(start + batch_prompts, len(prompts))}/{len(prompts)} prompts "
              f"({time.time() - t0:.0f} s)", flush=True)
    return rows, float(np.mean(ends))


def pair_stats(rows):
    gc = np.array([r["gold_chosen"] for r in rows])
    gr = np.array([r["gold_rejected"] for r in rows])
    pc = np.array([r["p_chosen"] for r in rows])
    return {"pairs": len(rows),
            "label_noise": float(np.mean(gc < gr)),                      # label disagrees with the gold order
            "gold_ties": float(np.mean(gc == gr)),
            "annotator_agreement": float(np.mean(pc ** 2 + (1 - pc) ** 2)),  # two independent annotators agree
            "accuracy_ceiling": float(np.mean(np.maximum(pc, 1 - pc))),   # best possible label-prediction accuracy
            "mean_gold_chosen": float(gc.mean()), "mean_gold_rejected": float(gr.mean())}


def build(n_train: int = 3000, n_test: int = 500) -> dict:
    torch.manual_seed(0)
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    policy = load_policy(paths.TINY_POLICY_DIR)
    gold = load_gold()
    prompts = make_prompts(tok, n_train, n_test)
    write_jsonl(paths.PROMPTS_FILE, prompts)
    t0 = time.time()
    rows, eos_rate = make_pairs(policy, tok, gold, prompts)
    seconds = time.time() - t0
    write_jsonl(paths.PAIRS_FILE, rows)
    metrics = {"prompts": {s: sum(p["split"] == s for p in prompts) for s in ("train", "test")},
               "samples_per_prompt": SAMPLES_PER_PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
               "annotator_temperature": ANNOTATOR_TEMPERATURE, "eos_rate": eos_rate, "build_seconds": seconds,
               "seeds": {"prompts": PROMPT_SEED, "sampling": SAMPLE_SEED, "annotators": ANNOTATOR_SEED},
               **{s: pair_stats([r for r in rows if r["split"] == s]) for s in ("train", "test")}}
    PAIRS_METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-prompts", type=int, default=3000)
    ap.add_argument("--test-prompts", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(build(a.train_prompts, a.test_prompts), indent=2))
