"""Pretrain the tiny GPT-2 policy on IMDb review openings; save it in Hugging Face format (safetensors).

    .venv/bin/python scripts/pretrain_policy.py --steps 900 [--out data/tiny-gpt2] [--bf16]

Each training example is the first ``OPENING`` tokens of a train review, with
EOS appended when the review ends within them. A fixed seed and a fixed number
of steps (never a time limit) make a rebuild reproducible on the same machine
and thread count. Writes the held-out perplexity (2,500 test-review openings,
fp32) and throughput to ``build/pretrain_metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from alignlab import paths  # noqa: E402
from alignlab.data import load_reviews  # noqa: E402
from alignlab.models import load_tokenizer  # noqa: E402

OPENING = 62    # tokens of each review the policy learns from (+ EOS when the review ends there)


@dataclass
class PretrainConfig:
    steps: int = 900             # optimizer steps (fixed: no time limit, so a rebuild is reproducible)
    batch_size: int = 32         # review openings per step
    lr: float = 2e-3             # peak AdamW learning rate
    warmup: int = 100            # linear warm-up steps, then cosine decay to lr/10
    weight_decay: float = 0.01   # AdamW weight decay
    n_layer: int = 4             # transformer blocks
    n_embd: int = 128            # width
    n_head: int = 4              # attention heads
    n_positions: int = 64        # context length
    dropout: float = 0.0         # saved in the config: no dropout, so PPO/DPO log-prob ratios start at exactly 1
    seed: int = 0                # initialization and batch order
    bf16: bool = False           # bf16 autocast for the forward pass (off: 8x slower on this build CPU, no native bf16)
    threads: int = 2             # torch threads (results depend slightly on it)


def encode_openings(tokenizer, texts, n=OPENING):
    """(N, n+1) long ids and (N, n+1) mask: the first n tokens, + EOS if the review ended; pad after."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    width = n + 1
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, seq in enumerate(ids):
        seq = seq[:n] + [tokenizer.eos_token_id] if len(seq) <= n else seq[:n]
        out[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    return out, mask


def lm_loss(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()     # (B, T-1, V)
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)                       # (B, T-1)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=-100, reduction="sum"), int((target != -100).sum())


@torch.no_grad()
def perplexity(model, ids, mask, batch=256):
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(ids), batch):
        loss, n = lm_loss(model, ids[i:i + batch], mask[i:i + batch])
        total, count = total + float(loss), count + n
    model.train()
    return math.exp(total / count)


def pretrain(cfg: PretrainConfig, out_dir: Path, log_every: int = 100):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    train_ids, train_mask = encode_openings(tok, [r["text"] for r in load_reviews("train")])
    test_ids, test_mask = encode_openings(tok, [r["text"] for r in load_reviews("test")])
    config = GPT2Config(vocab_size=len(tok), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.dropout, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    order, cursor = torch.randperm(len(train_ids), generator=gen), 0
    t0, tokens = time.time(), 0
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(train_ids), generator=gen), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        ids, mask = train_ids[idx], train_mask[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss_sum, n = lm_loss(model, ids, mask)
        loss = loss_sum / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += n
        if (step + 1) % log_every == 0 or step == 0:
            el = time.time() - t0
            print(f"step {step + 1}/{cfg.steps} loss {loss.item():.3f} lr {lr_at(step):.2e} "
                  f"{tokens / el:.0f} tok/s elapsed {el / 60:.1f} min", flush=True)
    train_s = time.time() - t0
    ppl = perplexity(model, test_ids, test_mask)
    print(f"held-out perplexity {ppl:.1f} after {cfg.steps} steps ({train_s / 60:.1f} min)", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    if out_dir.resolve() != paths.TINY_POLICY_DIR.resolve():
        tok.save_pretrained(out_dir)
    metrics = {"perplexity_heldout": ppl, "steps": cfg.steps, "train_seconds": train_s,
               "tokens_per_second": tokens / train_s, "tokens_seen": tokens,
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_openings": len(train_ids), "heldout_openings": len(test_ids), "config": asdict(cfg)}
    (out_dir / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def install(staging: Path, final: Path = paths.TINY_POLICY_DIR) -> None:
    """Copy a finished model from a staging folder over the committed one (weights, config, metrics)."""
    for name in ("model.safetensors", "config.json", "generation_config.json", "pretrain_metrics.json"):
        if (staging / name).exists():
            shutil.copyfile(staging / name, final / f".{name}.tmp")
            (final / f".{name}.tmp").replace(final / name)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=PretrainConfig.steps)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=PretrainConfig.threads)
    ap.add_argument("--out", type=Path, default=paths.TINY_POLICY_DIR)
    args = ap.parse_args()
    m = pretrain(PretrainConfig(steps=args.steps, bf16=args.bf16, threads=args.threads), args.out)
    print(json.dumps({k: v for k, v in m.items() if k != "config"}, indent=2))
