"""Build the SFT policy: fine-tune the tiny GPT-2 on demonstrations that end; store it in data/sft/ (a step of `make data`).

    .venv/bin/python scripts/build_sft.py [--steps 300] [--threads 1]

Demonstrations (``alignlab.sft.make_demonstrations``, seed ``DEMO_SEED``): from the train reviews,
a 2-8-token prefix as prompt and the rest of its sentence + EOS as completion, within the completion
budget of 24 tokens (EOS counted); reviews whose sentence does not end in budget are skipped. The base
policy (data/tiny-gpt2/) is fine-tuned with the reference ``sft_loss`` (fixed seed, a fixed number of
steps, never a time limit), then stored as float16 safetensors (data/sft/model.safetensors) with a
card (data/sft/sft.json): the settings, the demonstrations' count and lengths, the held-out loss,
the training time and loss curve, and how completions sampled at temperature 1 on the 500 held-out
test prompts end, base against SFT (EOS rate within the budget; length mean, std and quartiles).
The SFT figures are measured on the stored float16 copy, the model the course loads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from alignlab import paths  # noqa: E402
from alignlab.data import collate, load_reviews  # noqa: E402
from alignlab.models import SFT_CARD, load_policy, load_sft_policy, load_tokenizer, position_ids_from_mask, save_sft_policy  # noqa: E402
from alignlab.pairs import MAX_NEW_TOKENS, load_prompts  # noqa: E402
from alignlab.reference import sft_loss  # noqa: E402
from alignlab.sft import (DEMO_SEED, SFTConfig, completion_stats, demonstration_stats, make_demonstrations,  # noqa: E402
                          train_sft)

STEPS = 300          # the stored policy's steps (a few minutes at 1 thread on the shared 2-core machine)
HELDOUT_DEMOS = 512  # demonstrations from the test reviews on which the loss is reported
EVAL_SEED = 0        # sampling seed of the base-vs-SFT comparison


@torch.no_grad()
def heldout_loss(policy, demos, pad_id: int, batch: int = 128) -> float:
    """The token-mean SFT loss of ``policy`` on ``demos`` (every completion token of them, one mean)."""
    total, count = 0.0, 0
    for i in range(0, len(demos), batch):
        rows = demos[i:i + batch]
        b = collate([r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows], pad_id)
        logits = policy(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        position_ids=position_ids_from_mask(b["attention_mask"])).logits
        n = int(b["completion_mask"][:, 1:].sum())
        total, count = total + float(sft_loss(logits, b["input_ids"], b["completion_mask"])) * n, count + n
    return total / count


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build(steps: int = STEPS, threads: int = 1, folder: Path | None = None) -> dict:
    folder = Path(folder or paths.SFT_DIR)
    torch.set_num_threads(threads)
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    demos = make_demonstrations(tok, load_reviews("train"))
    heldout = make_demonstrations(tok, load_reviews("test"), n=HELDOUT_DEMOS)
    prompts = [p["prompt_ids"] for p in load_prompts("test")]
    print(f"{len(demos):,} demonstrations ({len(heldout)} held-out), {len(prompts)} held-out prompts", flush=True)

    policy = load_policy(paths.TINY_POLICY_DIR)
    base = completion_stats(policy, prompts, tok, seed=EVAL_SEED)
    base["heldout_loss"] = heldout_loss(policy, heldout, tok.pad_token_id)
    print("base:", json.dumps(base), flush=True)

    cfg = SFTConfig(steps=steps)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    losses = train_sft(policy, demos, cfg, loss_fn=sft_loss, pad_id=tok.pad_token_id, progress=False)
    train_seconds = time.time() - t0
    print(f"trained {steps} steps in {train_seconds:.0f} s; loss {losses[0]:.3f} -> {sum(losses[-20:]) / 20:.3f} "
          "(mean of the last 20 steps)", flush=True)

    save_sft_policy(policy, folder)
    stored = load_sft_policy(None, folder=folder)        # the float16 copy the course loads
    sft = completion_stats(stored, prompts, tok, seed=EVAL_SEED)
    sft["heldout_loss"] = heldout_loss(stored, heldout, tok.pad_token_id)
    print("sft: ", json.dumps(sft), flush=True)

    card = {
        "about": "the SFT policy: data/tiny-gpt2 fine-tuned on demonstrations that end with EOS (scripts/build_sft.py)",
        "config": asdict(cfg), "threads": threads, "max_new_tokens": MAX_NEW_TOKENS, "demo_seed": DEMO_SEED,
        "eval_seed": EVAL_SEED, "base_policy": _sha(paths.TINY_POLICY_DIR / "model.safetensors"),
        "demonstrations": demonstration_stats(demos), "heldout_demonstrations": len(heldout),
        "train_seconds": round(train_seconds, 1), "machine": f"{platform.machine()}, {platform.processor() or '?'}, "
                                                                f"torch {torch.__version__}",
        "train_losses": [round(x, 4) for x in losses],
        "heldout_prompts": len(prompts), "base": base, "sft": sft,
    }
    (folder / SFT_CARD).write_text(json.dumps(card, indent=1) + "\n")
    return card


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=paths.SFT_DIR)
    args = ap.parse_args(argv)
    card = build(args.steps, args.threads, args.out)
    print(json.dumps({k: card[k] for k in ("demonstrations", "train_seconds", "base", "sft")}, indent=1))


if __name__ == "__main__":
    main()
