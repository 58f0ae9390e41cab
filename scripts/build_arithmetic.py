"""Build notebook 07's world: a tiny char-level GPT-2 that adds two-digit numbers imperfectly.

Fixed seeds. Trains on the training split (answers only in the loss) where 55% of
the answers carry a systematic slip (the sum plus 10), so the base model knows the
right answer but prefers the slip on most problems: greedy accuracy is low, pass@k
high, and RL with the exact verifier has room to raise it. Writes data/arithmetic/
(Hugging Face format) and its dataset card with base accuracy and pass@k.

    python scripts/build_arithmetic.py            # about 2 minutes on one CPU thread
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alignlab import arithmetic as ar
from alignlab.paths import ARITHMETIC_DIR


def noisy_answer(problem, noise, g) -> str:
    """The sum, or (with probability ``noise``) the sum plus 10: the systematic slip the base model learns."""
    slip = torch.rand((), generator=g).item() < noise
    return str(problem.a + problem.b + (10 if slip else 0))


def batch(problems, idx, noise=0.0, g=None):
    rows = [ar.encode_prompt(problems[i]) + ar.encode_answer(noisy_answer(problems[i], noise, g)) for i in idx]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), ar.PAD)
    labels = torch.full((len(rows), width), -100)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        labels[r, ar.PROMPT_LEN:len(row)] = torch.tensor(row[ar.PROMPT_LEN:])
    return ids, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", type=float, default=0.55, help="share of training answers written as sum + 10")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", default=str(ARITHMETIC_DIR))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, test = ar.split_problems()
    config = GPT2Config(vocab_size=len(ar.VOCAB), n_positions=16, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=ar.BOS, eos_token_id=ar.EOS, pad_token_id=ar.PAD,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    start = time.time()
    acc = 0.0
    for step in range(1, args.steps + 1):
        model.train()
        ids, labels = batch(train, torch.randint(len(train), (128,), generator=g).tolist(), args.noise, g)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            model.eval()
            acc = ar.greedy_accuracy(model, test)
            print(f"step {step} loss {loss.item():.3f} held-out greedy {acc:.3f} ({time.time() - start:.0f}s)", flush=True)
    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    pk = ar.pass_at_ks(model, test, n=16, ks=(1, 4, 16))
    acc = ar.greedy_accuracy(model, test)
    metrics = {"steps": step, "noise": args.noise, "held_out_greedy_accuracy": acc, "pass_at_k_t1": pk, "n_train": len(train),
               "n_test": len(test), "seconds": round(time.time() - start)}
    with open(f"{args.out}/metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
