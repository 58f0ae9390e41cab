"""Train the gold sentiment classifier (the simulated human) and export it without pickle to data/gold/.

    .venv/bin/python scripts/build_gold.py

TF-IDF over word 1-2 grams + logistic regression (scikit-learn, build time
only), fitted on the 22,500 train reviews plus the first 32 tokens of each (so
it is confident on short texts like prompt + 24-token completion). Exported as
``vocab.json`` (n-gram -> column), ``weights.safetensors`` (idf, coef,
intercept) and ``config.json``; ``alignlab.rewards`` re-implements the
transform with numpy/torch. Prints held-out accuracy (full reviews and 32-token
snippets) and scoring speed, and writes them to ``data/gold/metrics.json``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from alignlab import paths  # noqa: E402
from alignlab.data import load_reviews  # noqa: E402
from alignlab.models import load_tokenizer  # noqa: E402
from alignlab.rewards import GoldReward, load_gold  # noqa: E402

SNIPPET_TOKENS = 32      # length of the short texts added to the training data
MAX_FEATURES = 60_000    # vocabulary cap (keeps data/gold/ at a few MB)
C = 16.0                 # inverse regularization strength of the logistic regression (field notes)
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def snippets(texts, tokenizer, n=SNIPPET_TOKENS):
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return tokenizer.batch_decode([i[:n] for i in ids], skip_special_tokens=True)


def train_and_export(out_dir: Path = paths.GOLD_DIR):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    train, test = load_reviews("train"), load_reviews("test")
    x_full = [r["text"] for r in train]
    y = np.array([r["label"] for r in train])
    x = x_full + snippets(x_full, tok)
    y2 = np.concatenate([y, y])
    t0 = time.time()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=MAX_FEATURES, sublinear_tf=True,
                          lowercase=True, token_pattern=TOKEN_PATTERN, dtype=np.float64)
    clf = LogisticRegression(C=C, max_iter=2000)
    clf.fit(vec.fit_transform(x), y2)
    fit_s = time.time() - t0

    GoldReward.from_sklearn(vec, clf, C=C, max_features=MAX_FEATURES, min_df=2,
                            snippet_tokens=SNIPPET_TOKENS).save(out_dir)

    # Held-out figures, measured with the exported (numpy/torch) scorer.
    gold = load_gold(out_dir)
    yt = np.array([r["label"] for r in test])
    full = [r["text"] for r in test]
    short = snippets(full, tok)
    acc_full = float(((gold(full).numpy() > 0.5) == yt).mean())
    acc_short = float(((gold(short).numpy() > 0.5) == yt).mean())
    sk_full = float((clf.predict(vec.transform(full)) == yt).mean())
    reps, t0, c0 = 4, time.time(), time.process_time()
    for _ in range(reps):
        gold(short)
    speed = reps * len(short) / (time.time() - t0)               # wall clock on a shared machine
    speed_cpu = reps * len(short) / (time.process_time() - c0)   # per second of this process's CPU time
    metrics = {"accuracy_full": acc_full, "accuracy_32_tokens": acc_short, "sklearn_accuracy_full": sk_full,
               "texts_per_second_32_tokens": speed,
               "texts_per_cpu_second_32_tokens": speed_cpu, "fit_seconds": fit_s, "features": len(gold.vocab),
               "train_texts": len(x), "test_reviews": len(test)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    print(json.dumps(train_and_export(), indent=2))
