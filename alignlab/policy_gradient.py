"""The policy-gradient notebook's exact world: every completion of an arithmetic prompt, and exact gradients.

The arithmetic policy (``alignlab.arithmetic``) answers with at most ``MAX_NEW`` = 4 tokens drawn from 11
(the ten digits and ``<eos>``), so a prompt has 1 + 10 + 100 + 1,000 + 10,000 = 11,111 possible completions.
That is few enough to sum over all of them: the expected reward, the KL between two policies and their
exact gradients are sums over ``COMPLETIONS``, not estimates. One forward pass per 3-digit prefix (at most
1,000 per prompt, rows ``<bos>a+b=d1d2d3``) gives the next-token distribution at every node of the tree.

- ``token_logprobs(model, problems, index)``: per-token log-probs of chosen completions (differentiable);
- ``distribution``: the exact probability of every completion; ``expected_reward``: mean pi(right answer);
- ``flat_grad``, ``score_gradients``: gradients as flat vectors (all parameters);
- ``estimator_study``: REINFORCE estimators against the exact gradient over many batches (``pg_experiments``
  has the reuse and KL-placement studies).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad, vmap

from . import arithmetic as ar

DIGITS = 10
N_ANSWER_TOKENS = len(ar.ANSWER_TOKENS)            # 11: the digits and <eos>


def _all_completions() -> Tensor:
    """Every completion, (N, MAX_NEW) long, padded with <pad> after <eos>: shortest first, then in digit order."""
    rows = []
    for length in range(ar.MAX_NEW):              # `length` digits, then <eos>
        for digits in itertools.product(range(DIGITS), repeat=length):
            rows.append(list(digits) + [ar.EOS] + [ar.PAD] * (ar.MAX_NEW - length - 1))
    rows += [list(d) for d in itertools.product(range(DIGITS), repeat=ar.MAX_NEW)]   # no <eos>: cut at MAX_NEW
    return torch.tensor(rows)


COMPLETIONS = _all_completions()                                     # (N, 4)
N_COMPLETIONS = len(COMPLETIONS)                                     # 11,111
COMPLETION_MASK = ar.completion_mask(COMPLETIONS)                    # (N, 4): 1 up to and including <eos>
_PREFIX_DIGITS = ar.MAX_NEW - 1                                      # a forward on 3 digits scores all 4 positions
_ROW = (torch.where(COMPLETIONS[:, :_PREFIX_DIGITS] < DIGITS, COMPLETIONS[:, :_PREFIX_DIGITS], 0)
        * torch.tensor([100, 10, 1])).sum(1)                         # (N,) the 3-digit prefix row that scores it
_INDEX = {tuple(row): i for i, row in enumerate(COMPLETIONS.tolist())}


def answer_index(problem: ar.Problem) -> int:
    """The index in ``COMPLETIONS`` of the right answer (its digits, then <eos>)."""
    ids = ar.encode_answer(problem.answer)
    return _INDEX[tuple(ids + [ar.PAD] * (ar.MAX_NEW - len(ids)))]


def _node_logp(model, problems: Sequence[ar.Problem], keys: Tensor) -> Tensor:
    """log pi(. | problem, prefix) at the 4 positions of each row key = problem position * 1000 + 3-digit prefix: (R, 4, V)."""
    prompts = torch.tensor([ar.encode_prompt(p) for p in problems])   # (P, 7)
    prefix = torch.stack([keys % 1000 // 100, keys % 100 // 10, keys % 10], 1)   # (R, 3)
    ids = torch.cat([prompts[keys // 1000], prefix], dim=1)           # (R, 10)
    mask = torch.ones_like(ids)        # causal: a pad after the answer is never seen by the positions read here
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, ar.PROMPT_LEN - 1:, :].float()  # (R, 4, V)
    return torch.log_softmax(ar.restrict(logits), dim=-1)


def token_logprobs(model, problems: Sequence[ar.Problem], index: Tensor | None = None) -> Tensor:
    """Per-token log-probs (P, n, MAX_NEW) of completions ``index`` (P, n) of each problem (default: all N), 0 after <eos>.

    Differentiable; one forward pass over the distinct 3-digit prefixes the completions need.
    """
    P = len(problems)
    index = torch.arange(N_COMPLETIONS).expand(P, -1) if index is None else index
    keys = torch.arange(P)[:, None] * 1000 + _ROW[index]              # (P, n) one key per (problem, prefix)
    unique, where = torch.unique(keys, return_inverse=True)           # (R,), (P, n)
    logp = _node_logp(model, problems, unique)                        # (R, 4, V)
    tokens, mask = COMPLETIONS[index], COMPLETION_MASK[index]         # (P, n, 4)
    picked = logp[where[..., None], torch.arange(ar.MAX_NEW), torch.where(mask.bool(), tokens, 0)]  # (P, n, 4)
    return picked * mask


@torch.no_grad()
def distribution(model, problems: Sequence[ar.Problem], threshold: float = 0.0) -> Tensor:
    """The exact probability of every completion of each problem, (P, N) float64.

    With ``threshold`` 0 every row sums to 1. Otherwise the 4th token is scored only after 3-digit prefixes whose
    probability exceeds ``threshold``; the completions below the others get 0, and ``1 - row sum`` is their mass.
    """
    P = len(problems)
    first = _node_logp(model, problems, (torch.arange(P)[:, None] * 1000 + torch.arange(100) * 10).reshape(-1))
    first = first.double().view(P, 100, ar.MAX_NEW, -1)               # rows d1 d2 0: every node of depth < 3
    out = torch.zeros(P, N_COMPLETIONS, dtype=torch.float64)
    short = torch.arange(1 + DIGITS + DIGITS ** 2)                    # at most 2 digits, then <eos>
    tokens, mask = COMPLETIONS[short], COMPLETION_MASK[short]
    picked = first[:, (_ROW[short] // 10)[:, None], torch.arange(ar.MAX_NEW), torch.where(mask.bool(), tokens, 0)]
    out[:, short] = (picked * mask).sum(-1).exp()
    d = torch.arange(DIGITS ** 3)                                     # the 3-digit prefixes d1 d2 d3
    prefix = first[:, d // 10, 0, d // 100] + first[:, d // 10, 1, d // 10 % 10] + first[:, d // 10, 2, d % 10]  # (P, 1000)
    p_idx, d_idx = (prefix.exp() > threshold).nonzero(as_tuple=True)
    last = _node_logp(model, problems, p_idx * 1000 + d_idx)[:, 3, :].double()   # (K, V): the 4th token's distribution
    base = prefix[p_idx, d_idx]                                       # (K,)
    three = 1 + DIGITS + DIGITS ** 2                                  # index of "000<eos>"
    out[p_idx, three + d_idx] = (base + last[:, ar.EOS]).exp()
    four = three + DIGITS ** 3                                        # index of "0000"
    for digit in range(DIGITS):
        out[p_idx, four + d_idx * DIGITS + digit] = (base + last[:, digit]).exp()
    return out


def answer_logprobs(model, problems: Sequence[ar.Problem]) -> Tensor:
    """log pi(right answer | problem), (P,), differentiable: one short forward pass per problem."""
    index = torch.tensor([[answer_index(p)] for p in problems])
    return token_logprobs(model, problems, index).sum(-1)[:, 0]


def expected_reward(model, problems: Sequence[ar.Problem]) -> Tensor:
    """J = mean over problems of E_pi[reward] = mean pi(right answer): exact (the reward is 1 on one completion)."""
    return answer_logprobs(model, problems).exp().mean()


def flat_grad(scalar: Tensor, model, retain_graph: bool = False) -> Tensor:
    """The gradient of ``scalar`` with respect to every parameter of ``model``, as one flat float64 vector (D,)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(scalar, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)])


def _gelu_new(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_logits(params: Mapping[str, Tensor], config, ids: Tensor) -> Tensor:
    """Hugging Face ``GPT2LMHeadModel``'s logits (eval mode, no padding, tied head) as a pure function of its parameters.

    ``params`` is ``dict(model.named_parameters())``; ids (..., T) -> logits (..., T, V). A pure function can be
    vmapped: ``score_gradients`` takes one gradient per completion in a single call (tests check parity with HF).
    """
    T, d, heads, eps = ids.shape[-1], config.n_embd, config.n_head, config.layer_norm_epsilon
    h = params["transformer.wte.weight"][ids] + params["transformer.wpe.weight"][:T]      # (..., T, d)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        a = F.layer_norm(h, (d,), params[p + "ln_1.weight"], params[p + "ln_1.bias"], eps)
        q, k, v = (a @ params[p + "attn.c_attn.weight"] + params[p + "attn.c_attn.bias"]).split(d, dim=-1)
        q, k, v = (x.unflatten(-1, (heads, d // heads)).transpose(-2, -3) for x in (q, k, v))   # (..., heads, T, d/heads)
        att = (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + (att @ v).transpose(-2, -3).flatten(-2) @ params[p + "attn.c_proj.weight"] + params[p + "attn.c_proj.bias"]
        a = F.layer_norm(h, (d,), params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps)
        a = _gelu_new(a @ params[p + "mlp.c_fc.weight"] + params[p + "mlp.c_fc.bias"])
        h = h + a @ params[p + "mlp.c_proj.weight"] + params[p + "mlp.c_proj.bias"]
    h = F.layer_norm(h, (d,), params["transformer.ln_f.weight"], params["transformer.ln_f.bias"], eps)
    return h @ params["transformer.wte.weight"].T                                          # (..., T, V)


def score_gradients(model, problems: Sequence[ar.Problem], pairs: Sequence[tuple[int, int]]) -> Tensor:
    """grad log pi(y | x) for each (problem position, completion index) pair: (len(pairs), D) float32, in the order of
    ``flat_grad`` (``model.parameters()``). One vmapped call of ``gpt2_logits``, not one backward pass per pair."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters()}
    prompts = torch.tensor([ar.encode_prompt(problems[p]) for p, _ in pairs])              # (U, 7)
    index = torch.tensor([i for _, i in pairs])
    tokens, mask = COMPLETIONS[index], COMPLETION_MASK[index]                              # (U, 4)
    ids = torch.cat([prompts, torch.where(mask.bool(), tokens, ar.EOS)], dim=1)[:, :-1]    # (U, 10)

    def logprob(params, ids, tokens, mask):
        logits = ar.restrict(gpt2_logits(params, model.config, ids)[ar.PROMPT_LEN - 1:])   # (4, V)
        picked = torch.log_softmax(logits, -1).gather(-1, torch.where(mask.bool(), tokens, 0)[:, None]).squeeze(-1)
        return (picked * mask).sum()

    grads = vmap(grad(logprob), in_dims=(None, 0, 0, 0))(params, ids, tokens, mask.float())
    return torch.cat([grads[n].reshape(len(pairs), -1) for n in names], dim=1)


def cosine(a: Tensor, b: Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()).clamp_min(1e-300))


def estimator_study(model, problems: Sequence[ar.Problem], advantages: Mapping[str, Callable[[Tensor], Tensor]],
                    group_sizes: Sequence[int] = (2, 4, 8, 16, 32), batches: int = 200, seed: int = 0,
                    threshold: float = 1e-9) -> list[dict]:
    """REINFORCE estimators of grad J against the exact grad J, over ``batches`` independent batches per size.

    A batch draws G completions for each problem from the exact distribution; an estimator turns the (P, G)
    rewards into advantages A and estimates grad J by mean over the batch of A * grad log pi(y). Each row:
    ``estimator``, ``G``, ``batch`` (P * G), ``cos`` (mean over batches of the cosine to the exact gradient; a
    zero estimate counts 0), ``cos_of_mean`` and ``scale`` (<mean estimate, grad J> / |grad J|^2: 1 when
    unbiased), ``variance`` (mean squared distance of an estimate from the mean estimate, over |grad J|^2).
    """
    P, G_max = len(problems), max(group_sizes)
    probs = distribution(model, problems, threshold)                                   # (P, N)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(probs.float(), batches * G_max, replacement=True, generator=gen).view(P, batches, G_max)
    answers = torch.tensor([answer_index(p) for p in problems])                         # (P,)
    keys = torch.cat([(torch.arange(P)[:, None, None] * N_COMPLETIONS + draws).reshape(-1),
                      torch.arange(P) * N_COMPLETIONS + answers])
    unique, inverse = torch.unique(keys, return_inverse=True)                          # the distinct (problem, completion)
    scores = score_gradients(model, problems, [(int(k) // N_COMPLETIONS, int(k) % N_COMPLETIONS) for k in unique])
    gram = (scores @ scores.T).double()                                                 # (U, U) <grad log pi, grad log pi>
    slot = inverse[:-P].view(P, batches, G_max)                                         # (P, R, G) -> row of `scores`
    exact = torch.zeros(len(unique), dtype=torch.float64)
    exact.index_add_(0, inverse[-P:], probs[torch.arange(P), answers] / P)              # grad J = mean_p pi(y*) grad log pi(y*)
    exact_sq = exact @ gram @ exact
    rewards_all = (draws == answers[:, None, None]).double()                            # (P, R, G)
    rows = []
    for name, advantage_fn in advantages.items():
        for G in group_sizes:
            coef = torch.zeros(batches, len(unique), dtype=torch.float64)               # estimate b = coef[b] @ scores
            for b in range(batches):
                adv = advantage_fn(rewards_all[:, b, :G]).double()                      # (P, G)
                coef[b].index_add_(0, slot[:, b, :G].reshape(-1), adv.reshape(-1) / (P * G))
            inner, sq = coef @ gram @ exact, ((coef @ gram) * coef).sum(1)              # (R,), (R,)
            cos = torch.where(sq > 0, inner / (sq * exact_sq).clamp_min(1e-300).sqrt(), torch.zeros_like(sq))
            mean = coef.mean(0)
            centred = coef - mean
            rows.append({"estimator": name, "G": G, "batch": P * G, "cos": float(cos.mean()),
                         "cos_of_mean": float(mean @ gram @ exact / (mean @ gram @ mean * exact_sq).sqrt()),
                         "scale": float(mean @ gram @ exact / exact_sq),
                         "variance": float(((centred @ gram) * centred).sum(1).mean() / exact_sq)})
    return rows


def format_rows(rows: Sequence[dict], columns: Sequence[str], formats: Mapping[str, str] | None = None) -> str:
    """A plain-text table of ``rows`` (dicts) with one column per key."""
    formats = formats or {}
    cells = [[formats.get(c, "{}").format(r[c]) if not isinstance(r[c], str) else r[c] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    def line(values):
        return "  ".join(v.rjust(w) for v, w in zip(values, widths))

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells])
