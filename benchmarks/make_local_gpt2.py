"""Save a GPT-2-124M-shaped model (random weights) and a tokenizer to a local folder, for the GPU track offline.

    python benchmarks/make_local_gpt2.py build/gpt2-local

The shape is GPT-2 small's (12 layers, width 768, 12 heads, 1024 positions,
vocabulary 50,257); the tokenizer is the course's own byte-level BPE with its
pad token removed, as GPT-2's tokenizer has none, so the loading code must add
one just as it does for the Hub's "gpt2". Point the gpt2 track at it with
ALIGNLAB_GPT2_PATH. Timings are real; the text it writes is noise.
"""
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from alignlab import paths


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())             # the defaults are GPT-2 small (124M)
    model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(paths.TINY_POLICY_DIR)
    tok.pad_token = None
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved a {n / 1e6:.0f}M-parameter GPT-2-shaped model to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/gpt2-local"))
