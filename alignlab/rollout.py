"""Sampling completions (temperature, truncation at EOS, log-probs of the sampled tokens) and scoring log-probs.

>>> ro = sample(policy, [p["prompt_ids"] for p in prompts[:64]], max_new_tokens=24,
...             tokenizer=tokenizer, generator=torch.Generator().manual_seed(0))
>>> ro.input_ids.shape, ro.logprobs.shape            # (B, T), (B, T-1)
>>> sequence_token_logprobs(reference, ro.input_ids, ro.attention_mask)   # (B, T-1), same convention
>>> for chunk in sample_groups(policy, prompt_ids, n=8, max_new_tokens=24):   # 8 completions per prompt
...     scores = score(chunk.prompt_ids, chunk.rollout)                          # rows grouped by prompt

Layout of a rollout (docs/architecture.md): each row is its prompt, left-padded
to the longest prompt, then its completion, right-padded after EOS. The
completion includes the EOS when one was sampled. ``logprobs[:, t]`` is
log p(x[t+1] | x[..t]) of the sampled token at the sampling temperature, so
``completion_mask[:, 1:]`` selects the completion's entries.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Iterator, Sequence

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


def cache_kwarg(model) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _device(model):
    return next(model.parameters()).device


ONE_THREAD_ROWS = 128   # up to this many rows, decoding on a CPU runs on one thread (measured crossover, 2 cores)


@contextlib.contextmanager
def one_thread():
    """Run the block with one intra-op thread (then restore): token-by-token decoding is many tiny ops.

    Each decoding step of a small model is dozens of operations on a few rows. Splitting each one
    over two threads costs more in synchronization than it saves: on the course's 2-core machines
    sampling took 0.42 s with two threads and 0.26 s with one (64 prompts x 24 tokens), and on a
    loaded machine, where the second thread waits for a core, many times longer. From about 256
    rows on, two threads win again (0.88 s against 1.02 s), so ``sample`` uses one thread only up
    to ``ONE_THREAD_ROWS`` rows.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from logits (B, V) -> (tokens (B,) long, their log-probs (B,) float32).

    Exactly a draw from softmax(logits), by inverting the cumulative distribution: one uniform
    number per row, then the first token whose cumulative probability exceeds it (a token of
    probability 0, logit -inf, is never drawn). The search runs in two levels, over blocks of
    64 tokens and then inside the chosen block, so no (B, V) cumulative sum is built.
    ``torch.multinomial`` draws an exponential variate for every entry of the vocabulary, which
    made it the largest single cost of sampling on a CPU.
    """
    logits = logits.float()
    top = logits.amax(-1, keepdim=True)                                          # (B, 1)
    weights = (logits - top).exp()                                               # (B, V) unnormalized probs
    B, V = weights.shape
    K = 64
    blocks = torch.nn.functional.pad(weights, (0, (-V) % K)).view(B, -1, K)      # (B, NB, K)
    block_cdf = blocks.sum(-1).cumsum(-1)                                        # (B, NB)
    total = block_cdf[:, -1:]                                                    # (B, 1)
    u = torch.rand(B, 1, generator=generator, device=logits.device, dtype=logits.dtype) * total
    u = torch.minimum(u, total * (1 - 1e-6))                                     # strictly inside the mass
    block = torch.searchsorted(block_cdf, u, right=True).clamp(max=blocks.shape[1] - 1)  # (B, 1)
    before = torch.where(block > 0, block_cdf.gather(-1, (block - 1).clamp(min=0)), torch.zeros_like(u))
    inside = blocks[torch.arange(B, device=logits.device), block.squeeze(-1)].cumsum(-1)  # (B, K)
    rest = (u - before).clamp(min=0)
    rest = torch.minimum(rest, inside[:, -1:] * (1 - 1e-6))                      # rounding: stay on a real token
    tokens = (block * K + torch.searchsorted(inside, rest, right=True)).squeeze(-1)  # (B,)
    logp = logits.gather(-1, tokens[:, None]).squeeze(-1) - top.squeeze(-1) - weights.sum(-1).log()  # (B,)
    return tokens, logp


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
    with one_thread() if device.type == "cpu" and len(prompts) <= ONE_THREAD_ROWS else contextlib.nullcontext():
        return _sample(model, prompts, P, max_new_tokens, temperature, eos_id, pad_id, generator, tokenizer, device)


def _sample(model, prompts, P, max_new_tokens, temperature, eos_id, pad_id, generator, tokenizer, device) -> Rollout:
    """The decoding loop of ``sample`` (arguments already checked)."""
    B = len(prompts)
    input_ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)     # (B, P)
    attention_mask = torch.zeros((B, P), dtype=torch.long, device=device)       # (B, P)
    for i, p in enumerate(prompts):
        input_ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p):] = 1

    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=True, logits_to_keep=1)
    cache_kw = cache_kwarg(model)
    past, logits = cache_of(out), out.logits[:, -1]                            # (B, V)
    next_pos = attention_mask.sum(-1)                                           # (B,)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, token_lps, alive_cols = [], [], []
    mask = attention_mask
    for step in range(max_new_tokens):
        logits = logits.float()
        logits[:, pad_id] = float("-inf")                                       # pad is never a completion token
        tok, lp = draw(logits if temperature == 1.0 else logits / temperature, generator)  # (B,), (B,)
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
        past, logits = cache_of(out), out.logits[:, -1]
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
                   position_ids=position_ids_from_mask(attention_mask)).logits[:, :-1].float()  # (B, T-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    # log p(token) = its logit - logsumexp over the vocabulary: no (B, T-1, V) log-softmax is materialized.
    token_logp = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)  # (B, T-1)
    real = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()                   # (B, T-1)
    return torch.where(real, token_logp, torch.zeros_like(token_logp))


@dataclass
class GroupChunk:
    """One sampling call of ``sample_groups``: prompts ``first .. first + count - 1``, each repeated n times."""

    first: int                     # index of the chunk's first prompt in the caller's list
    count: int                     # prompts in this chunk
    prompt_ids: list               # count * n prompt id lists: row i * n + j is prompt first + i, sample j
    rollout: Rollout               # their completions, same row order


def sample_groups(policy, prompt_ids_list: Sequence, n: int, max_new_tokens: int, temperature: float = 1.0,
                  generator: torch.Generator | None = None, tokenizer=None, rows_per_call: int = 256,
                  prompts_per_call: int | None = None, decode: bool = True) -> Iterator[GroupChunk]:
    """Sample ``n`` completions for every prompt, several prompts per call; yield each call's rows to score.

    The one loop behind every "repeat each prompt n times, sample in chunks, score" of the course
    (preference pairs, best-of-n pools and points, online DPO, reward normalization). Rows come
    grouped by prompt: row ``i * n + j`` of a chunk is sample j of prompt ``chunk.first + i``.
    A call holds ``prompts_per_call`` prompts (default: as many as fit in ``rows_per_call`` rows, at
    least one): on a CPU the fixed cost of each forward dominates a model this small, so a call
    should be as wide as memory allows. The same generator, sizes and prompts give the same samples.
    ``tokenizer`` gives the EOS and pad ids (default: the model config's) and, with ``decode``, the
    rollout's ``texts``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 completion per prompt, got {n}")
    prompts = [list(p) for p in prompt_ids_list]
    per_call = prompts_per_call or max(1, rows_per_call // n)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    for first in range(0, len(prompts), per_call):
        chunk = prompts[first:first + per_call]
        repeated = [ids for ids in chunk for _ in range(n)]
        ro = sample(policy, repeated, max_new_tokens, temperature=temperature, eos_id=eos_id, pad_id=pad_id,
                    generator=generator, tokenizer=tokenizer if decode else None)
        yield GroupChunk(first, len(chunk), repeated, ro)
