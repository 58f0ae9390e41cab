"""The gold sentiment classifier: the course's simulated human. Any text in, P(positive) out.

It labels the preference pairs and measures true quality ("gold reward").
It is a different model family from the learned reward model (TF-IDF over word
1-2 grams + logistic regression, trained by ``scripts/build_gold.py``), so
optimizing against a learned proxy can over-optimize, as in Gao et al. It is a
model too: piling up praise ("great great great ...") scores high.

>>> gold = load_gold()
>>> gold(["A wonderful film, I loved it.", "Dull and far too long."])   # tensor([0.9988, 0.0032])

The transform is re-implemented here with numpy (scikit-learn is a build-time
tool only): lowercase, tokens ``(?u)\\b\\w\\w+\\b``, unigrams then space-joined
bigrams, counts -> 1 + log(count) -> times idf -> L2-normalized -> dot with
the coefficients + intercept -> sigmoid. A test proves it equals
scikit-learn's ``predict_proba``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from . import paths


class GoldReward:
    """Callable gold classifier: ``gold(texts) -> (B,) float32`` P(positive); empty texts get the base rate."""

    def __init__(self, vocab: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: float, config: dict):
        self.vocab = vocab                                            # n-gram -> column
        self.idf = np.asarray(idf, dtype=np.float64)                  # (F,)
        self.coef = np.asarray(coef, dtype=np.float64)                # (F,)
        self.intercept = float(intercept)
        self.config = config
        self.lowercase = bool(config.get("lowercase", True))
        self.pattern = re.compile(config.get("token_pattern", r"(?u)\b\w\w+\b"))
        self.min_n, self.max_n = config.get("ngram_range", [1, 2])
        self.sublinear_tf = bool(config.get("sublinear_tf", True))
        if not (len(self.idf) == len(self.coef) == len(vocab)):
            raise ValueError(f"gold classifier files disagree: {len(vocab)} n-grams, {len(self.idf)} idf weights, "
                             f"{len(self.coef)} coefficients. Rebuild it with `make data`.")

    def _ngrams(self, words: list[str]):
        for n in range(self.min_n, self.max_n + 1):
            if n == 1:
                yield from words
            else:
                yield from (" ".join(words[i:i + n]) for i in range(len(words) - n + 1))

    def logits(self, texts) -> np.ndarray:
        """The classifier's log-odds of a positive review, float64 (B,)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        B, F, get = len(texts), len(self.vocab), self.vocab.get
        keys = []                                      # row * F + column, one entry per n-gram occurrence
        for b, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"gold reward scores strings; item {b} is a {type(text).__name__}. "
                                "Decode token ids first (tokenizer.batch_decode).")
            words = self.pattern.findall(text.lower() if self.lowercase else text)
            offset = b * F
            keys.extend(offset + c for c in map(get, self._ngrams(words)) if c is not None)
        if B == 0:
            return np.zeros(0)
        uniq, counts = np.unique(np.asarray(keys, dtype=np.int64), return_counts=True)
        row, col = uniq // F, uniq % F
        tf = counts.astype(np.float64)
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        val = tf * self.idf[col]                                          # (nnz,)
        norm = np.sqrt(np.bincount(row, weights=val * val, minlength=B))  # (B,)
        dot = np.bincount(row, weights=val * self.coef[col], minlength=B)  # (B,)
        return dot / np.where(norm > 0, norm, 1.0) + self.intercept

    def __call__(self, texts) -> torch.Tensor:
        """P(positive) of each text, float32 (B,). A single string gives shape (1,); an empty list gives (0,)."""
        z = self.logits(texts)
        return torch.from_numpy(1.0 / (1.0 + np.exp(-z))).float()

    @classmethod
    def from_sklearn(cls, vectorizer, classifier, **extra_config) -> "GoldReward":
        """Export a fitted ``TfidfVectorizer`` (word n-grams) + binary ``LogisticRegression`` (no sklearn import)."""
        if vectorizer.analyzer != "word" or vectorizer.norm != "l2" or not vectorizer.use_idf:
            raise ValueError("only word n-grams with use_idf=True and norm='l2' are supported")
        if vectorizer.stop_words is not None or vectorizer.strip_accents is not None or vectorizer.preprocessor \
                or vectorizer.tokenizer:
            raise ValueError("stop words, accent stripping and custom preprocessors are not re-implemented")
        vocab = {term: int(col) for term, col in sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])}
        config = {"kind": "tfidf-logistic-regression", "ngram_range": list(vectorizer.ngram_range),
                  "lowercase": bool(vectorizer.lowercase), "token_pattern": vectorizer.token_pattern,
                  "sublinear_tf": bool(vectorizer.sublinear_tf), "norm": "l2",
                  "positive_label": int(classifier.classes_[1]), **extra_config}
        return cls(vocab, vectorizer.idf_, classifier.coef_[0], float(classifier.intercept_[0]), config)

    def save(self, folder: str | Path) -> None:
        """Write ``config.json``, ``vocab.json`` and ``weights.safetensors`` (float32) to ``folder``; no pickle."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False, separators=(",", ":")),
                                           encoding="utf-8")
        save_file({"idf": self.idf.astype(np.float32), "coef": self.coef.astype(np.float32),
                   "intercept": np.array([self.intercept], dtype=np.float32)}, str(folder / "weights.safetensors"))

    def __repr__(self) -> str:
        return f"GoldReward({len(self.vocab)} n-grams, TF-IDF + logistic regression)"


def load_gold(folder: str | Path | None = None) -> GoldReward:
    """Load the gold classifier exported by ``scripts/build_gold.py`` (default ``data/gold/``)."""
    folder = Path(folder) if folder is not None else paths.GOLD_DIR
    paths.require(folder, "The gold sentiment classifier")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        weights = load_file(str(folder / "weights.safetensors"))
        return GoldReward(vocab, weights["idf"], weights["coef"], float(weights["intercept"].reshape(-1)[0]), config)
    except Exception as e:  # noqa: BLE001 - json, safetensors and shape errors all get the same advice
        raise RuntimeError(f"The gold classifier in {folder} is missing a file or is corrupt ({e}). "
                           "Restore data/ from the repository (git checkout -- data) or rebuild it with `make data`.") from e


def gold_texts(tokenizer, prompt_ids_list, completion_ids_list) -> list[str]:
    """What the gold reads: each prompt followed by its completion, decoded without special tokens."""
    return tokenizer.batch_decode([list(p) + list(c) for p, c in zip(prompt_ids_list, completion_ids_list)],
                                  skip_special_tokens=True)


def gold_scores(gold, tokenizer, prompt_ids_list, completion_ids_list) -> tuple[list[str], torch.Tensor]:
    """(texts, scores (B,) float32 on the CPU): the gold's P(positive) of each prompt + completion."""
    texts = gold_texts(tokenizer, prompt_ids_list, completion_ids_list)
    return texts, torch.as_tensor(gold(texts), dtype=torch.float32).cpu()                # (B,)
