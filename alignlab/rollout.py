"""Sampling completions (temperature, truncation at EOS, log-probs of the sampled tokens) and scoring log-probs.

>>> ro = sample(policy, [p["prompt_ids"] for p in prompts[:64]], max_new_tokens=24,
...             tokenizer=tokenizer, generator=torch.Generator().manual_seed(0))
>>> ro.input_ids.shape, ro.logprobs.shape            # (B, T), (B, T-1)
>>> sequence_token_logprobs(reference, ro.input_ids, ro.attention_mask)   # (B, T-1), same convention

Layout of a rollout (docs/architecture.md): each row is its prompt, left-padded
to the longest prompt, then its completion, right-padded after EOS. The
completion includes the EOS when one was sampled. ``logprobs[:, t]`` is
log p(x[t+1] | x[..t]) of the sampled token at the sampling temperature, so
``completion_mask[:, 1:]`` selects the completion's entries.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .models import check_batch, position_ids_from_mask


@dataclass
class Rollout:
    """A batch of sampled completions. B = prompts, T = prompt width + longest completion."""

    input_ids: torch.Tensor        # (B, T) long: left-padded prompt + completion, pad after EOS
    attention_mask: torch.Tensor   # (B, T) long: 1 on real tokens (prompt and completion, EOS included)
    completion_mask: torch.Tensor  # (B, T) long: 1 on completion tokens, EOS included
    logprobs: torch.Tensor         # (B, T-1) float32: log p(x[t+1] | x[..t]) of sampled tokens, 0 elsewhere
    completion_ids: list           # B lists of sampled ids (EOS included when sampled)
    texts: list | None             # B decoded completions (special tokens skipped), None without a tokenizer
    ended_with_eos: torch.Tensor   # (B,) bool: the completion stopped at EOS (else it hit max_new_tokens)
    prompt_width: int              # columns taken by the left-padded prompts

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _unwrap(model):
    """Sampling and scoring use the causal LM; a PolicyWithValue is unwrapped to its ``.policy``."""
    return getattr(model, "policy", model)


def _context(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def sample(policy, prompt_ids_list, max_new_tokens: int, temperature: float = 1.0, eos_id: int | None = None,
           pad_id: int | None = None, generator: torch.Generator | None = None, tokenizer=None) -> Rollout:
    """Sample one completion per prompt with a KV cache; stop each row at EOS or after ``max_new_tokens``.

    Args:
        policy: a causal LM (GPT2LMHeadModel) or a PolicyWithValue.
        prompt_ids_list: B non-empty lists of prompt token ids.
        max_new_tokens: the most completion tokens per row (EOS included).
        temperature: logits are divided by it before sampling; the returned
            log-probs are at this temperature (> 0).
        eos_id, pad_id: default to the model config's ``eos_token_id`` / ``pad_token_id``.
        generator: a torch.Generator on the model's device (``torch.Generator(device=track.device)``)
            for reproducible samples; one on another device is refused with that advice.
        tokenizer: when given, ``texts`` holds the decoded completions.

    The pad token is never sampled (its logit is set to -inf; a model that was
    never trained to emit it gives it almost no mass anyway). The model is used
    as it is (call ``.eval()`` first to sample without dropout).
    """
    model = _unwrap(policy)
    cfg = model.config
    eos_id = cfg.eos_token_id if eos_id is None else eos_id
    pad_id = cfg.pad_token_id if pad_id is None else pad_id
    if eos_id is None or pad_id is None or eos_id == pad_id:
        raise ValueError(f"sample needs an EOS id and a distinct pad id (got eos={eos_id}, pad={pad_id}); "
                         "load the model with alignlab.models.load_policy, which sets both.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    prompts = [list(p) for p in prompt_ids_list]
    if len(prompts) == 0:
        raise ValueError("empty batch: sample needs at least one prompt")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt is empty: every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    ctx = _context(model)
    if ctx is not None and P + max_new_tokens > ctx:
        raise ValueError(f"a prompt of {P} tokens + max_new_tokens={max_new_tokens} exceeds the model's context of "
                         f"{ctx} positions: shorten the prompts or ask for fewer new tokens.")
    device = _device(model)
    if generator is not None and torch.device(generator.device).type != device.type:
        raise ValueError(f"the generator is on {generator.device} but the model is on {device}: "
                         f"pass torch.Generator(device=track.device) (here torch.Generator(device='{device.type}')).")
    B = len(prompts)
    input_ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)     # (B, P)
    attention_mask = torch.zeros((B, P), dtype=torch.long, device=device)       # (B, P)
    for i, p in enumerate(prompts):
        input_ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p):] = 1

    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=True)
    cache_kw = _cache_kwarg(model)
    past, logits = _cache_of(out), out.logits[:, -1]                            # (B, V)
    next_pos = attention_mask.sum(-1)                                           # (B,)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, token_lps, alive_cols = [], [], []
    mask = attention_mask
    for step in range(max_new_tokens):
        logits = logits.float()
        logits[:, pad_id] = float("-inf")                                       # pad is never a completion token
        logp = torch.log_softmax(logits / temperature, dim=-1)                  # (B, V)
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)  # (B,)
        lp = logp.gather(-1, tok[:, None]).squeeze(-1)                          # (B,)
        alive = ~done
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        tokens.append(tok)
        token_lps.append(torch.where(alive, lp, torch.zeros_like(lp)))
        alive_cols.append(alive.long())
        done = done | (tok == eos_id)
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, alive.long()[:, None]], dim=1)                  # (B, P+step+1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    use_cache=True, **{cache_kw: past})
        past, logits = _cache_of(out), out.logits[:, -1]
        next_pos = next_pos + 1

    comp = torch.stack(tokens, dim=1)                                           # (B, L)
    comp_mask = torch.stack(alive_cols, dim=1)                                  # (B, L)
    full_ids = torch.cat([input_ids, comp], dim=1)                              # (B, T)
    full_mask = torch.cat([attention_mask, comp_mask], dim=1)                   # (B, T)
    completion_mask = torch.cat([torch.zeros_like(attention_mask), comp_mask], dim=1)  # (B, T)
    logprobs = torch.zeros((B, full_ids.shape[1] - 1), dtype=torch.float32, device=device)  # (B, T-1)
    logprobs[:, P - 1:] = torch.stack(token_lps, dim=1)
    completion_ids = [row[m.bool()].tolist() for row, m in zip(comp, comp_mask)]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True) if tokenizer is not None else None
    ended = torch.tensor([len(c) > 0 and c[-1] == eos_id for c in completion_ids], dtype=torch.bool)
    return Rollout(full_ids, full_mask, completion_mask, logprobs, completion_ids, texts, ended, P)


def sequence_token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the given tokens: (B, T-1) float32, entry t = log p(x[t+1] | x[..t]) at ``temperature``.

    Left or right padding (position ids come from the mask). Entry t is 0 unless
    both x[t] and x[t+1] are real tokens (so a left-padded row has no entry for
    its first token, exactly like an unpadded one), and an all-zero mask row
    gives zeros, never NaN. Completion entries are always kept: select them
    with ``completion_mask[:, 1:]``. Gradients flow (wrap in
    ``torch.no_grad()`` for a reference model).
    """
    model = _unwrap(model)
    check_batch(model.config, input_ids)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask)).logits[:, :-1]   # (B, T-1, V)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)                       # (B, T-1, V)
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)                     # (B, T-1)
    real = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()                   # (B, T-1)
    return torch.where(real, token_logp, torch.zeros_like(token_logp))
