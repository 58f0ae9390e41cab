"""Where the course's files live: the embedded world under data/, the reference outputs under autograder/.

The package is used from a checkout of the repository (``pip install -e .``, or
a shallow clone on Colab), so everything is found relative to this file. Set
``ALIGNLAB_DATA`` to use a data folder elsewhere.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("ALIGNLAB_DATA", REPO_ROOT / "data"))
AUTOGRADER_DIR = REPO_ROOT / "autograder"
REFERENCE_DIR = AUTOGRADER_DIR / "references"

TINY_POLICY_DIR = DATA_DIR / "tiny-gpt2"      # GPT2LMHeadModel + tokenizer, Hugging Face format
GOLD_DIR = DATA_DIR / "gold"                  # gold sentiment classifier, no pickle
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"     # IMDb prefixes of 2-8 tokens, with a split field
PAIRS_FILE = DATA_DIR / "pairs.jsonl.gz"      # labelled preference pairs, with a split field (gzipped JSON lines)
REWARD_MODELS_DIR = DATA_DIR / "reward-models"  # notebook 04's reward models, trained once by `make data`
SFT_DIR = DATA_DIR / "sft"                    # the SFT policy (float16 weights) and its card (scripts/build_sft.py)


def require(path: Path, what: str) -> Path:
    """Return ``path`` if it exists, else raise a FileNotFoundError that says how to get it."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{what} not found at {path}. The embedded world ships with the repository: "
            "run from a checkout of the course (git clone, then `make lab`), or rebuild it with `make data`."
        )
    return Path(path)

ARITHMETIC_DIR = DATA_DIR / "arithmetic"      # notebook 07: tiny char-level GPT-2 for two-digit sums (scripts/build_arithmetic.py)


def files_digest(files: Iterable[Path]) -> str:
    """A short fingerprint of files' contents, in the given order (16 hex digits of SHA-256); a missing file
    counts as the bytes ``missing``. What a stored artifact came from: it is stale once this changes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes() if Path(path).exists() else b"missing")
    return digest.hexdigest()[:16]

