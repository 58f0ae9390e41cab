"""Build the prompts and the labelled preference pairs from the SFT policy (data/sft/) and the gold classifier.

    .venv/bin/python scripts/build_pairs.py [--train-prompts 3000] [--test-prompts 500] [--out data]

Prompts: 2-8-token prefixes (length uniform) of IMDb reviews, "train" ones
from training reviews, "test" ones from held-out reviews. For each prompt the
SFT policy samples 4 completions of at most 24 new tokens at temperature 1; every
pair of them (6) is labelled by a simulated Bradley-Terry annotator:
P(a preferred) = sigmoid((g_a - g_b) / ANNOTATOR_TEMPERATURE), g = gold
P(positive) of prompt + completion. Writes prompts.jsonl, pairs.jsonl.gz and
pairs_metrics.json into ``--out`` (default data/). The code lives in
``alignlab.pairs``, which the gpt2 track also uses at run time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from alignlab import paths  # noqa: E402
from alignlab.data import write_jsonl, write_pairs  # noqa: E402
from alignlab.models import load_sft_policy, load_tokenizer  # noqa: E402
from alignlab.pairs import (ANNOTATOR_SEED, ANNOTATOR_TEMPERATURE, MAX_NEW_TOKENS, PROMPT_SEED,  # noqa: E402
                            SAMPLE_SEED, SAMPLES_PER_PROMPT, make_pairs, make_prompts, pair_stats)
from alignlab.rewards import load_gold  # noqa: E402

PAIRS_METRICS = paths.DATA_DIR / "pairs_metrics.json"


def build(n_train: int = 3000, n_test: int = 500, out: Path | None = None) -> dict:
    """Write prompts, pairs and their metrics into ``out`` (default: the data folder) and return the metrics."""
    out = Path(out) if out is not None else paths.DATA_DIR
    torch.manual_seed(0)
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    policy = load_sft_policy(None)                 # pairs are the SFT policy's samples (issue 22)
    gold = load_gold()
    prompts = make_prompts(tok, n_train, n_test)
    write_jsonl(out / paths.PROMPTS_FILE.name, prompts)
    t0 = time.time()
    rows, eos_rate = make_pairs(policy, tok, gold, prompts, log=lambda line: print(line, flush=True))
    seconds = time.time() - t0
    write_pairs(out / paths.PAIRS_FILE.name, rows)
    metrics = {"prompts": {s: sum(p["split"] == s for p in prompts) for s in ("train", "test")},
               "samples_per_prompt": SAMPLES_PER_PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
               "annotator_temperature": ANNOTATOR_TEMPERATURE, "eos_rate": eos_rate, "build_seconds": seconds,
               "seeds": {"prompts": PROMPT_SEED, "sampling": SAMPLE_SEED, "annotators": ANNOTATOR_SEED},
               **{s: pair_stats([r for r in rows if r["split"] == s]) for s in ("train", "test")}}
    (out / PAIRS_METRICS.name).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-prompts", type=int, default=3000)
    ap.add_argument("--test-prompts", type=int, default=500)
    ap.add_argument("--out", type=Path, default=None, help="folder to write into (default: data/)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(build(a.train_prompts, a.test_prompts, a.out), indent=2))
