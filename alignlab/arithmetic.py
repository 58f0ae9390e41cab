"""The second embedded world: two-digit addition with an exact verifier (notebook 07).

Problems are ``"37+48="``; a completion is the answer digits then ``<eos>``
(``"85"``). The vocabulary is character level (16 tokens), the policy is a tiny
GPT-2 in Hugging Face format under ``data/arithmetic`` (built by
``scripts/build_arithmetic.py`` with fixed seeds). The reward is exact match of
the answer, and pass@k uses the unbiased estimator of Chen et al. (2021).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel

from .models import fast_forward_settings
from .paths import ARITHMETIC_DIR, require
from .rollout import cache_kwarg, cache_of

VOCAB = list("0123456789+=") + ["<eos>", "<pad>", "<bos>", "?"]
STOI = {s: i for i, s in enumerate(VOCAB)}
EOS, PAD, BOS = STOI["<eos>"], STOI["<pad>"], STOI["<bos>"]
PROMPT_LEN = 7          # <bos> a a + b b =
MAX_NEW = 4             # up to 3 answer digits + <eos>
ANSWER_TOKENS = [STOI[c] for c in "0123456789"] + [EOS]   # what a completion may contain


def restrict(logits: Tensor) -> Tensor:
    """Logits (..., V) with every token but the digits and <eos> set to -inf (sampling and log-probs agree)."""
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[ANSWER_TOKENS] = True
    return logits.masked_fill(~allowed, float("-inf"))


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def all_problems() -> list[Problem]:
    return [Problem(a, b) for a in range(10, 100) for b in range(10, 100)]


def split_problems(seed: int = 0, n_test: int = 500) -> tuple[list[Problem], list[Problem]]:
    """A fixed train/held-out split of the 8,100 two-digit sums."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    return problems[n_test:], problems[:n_test]


def encode_prompt(problem: Problem) -> list[int]:
    return [BOS] + [STOI[c] for c in problem.prompt]


def encode_answer(text: str) -> list[int]:
    return [STOI[c] for c in text] + [EOS]


def decode(ids) -> str:
    """Completion ids -> text, stopping at <eos> (padding dropped)."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i != PAD:
            out.append(VOCAB[i])
    return "".join(out)


def verify(problem: Problem, completion_ids) -> float:
    """Exact-match reward: 1.0 when the completion (up to <eos>) is the sum, else 0.0."""
    return 1.0 if decode(completion_ids) == problem.answer else 0.0


def completion_mask(completions: Tensor) -> Tensor:
    """(N, T) completion ids -> (N, T) float mask: 1 up to and including the first <eos>."""
    is_eos = (completions == EOS).long()
    before = torch.cumsum(is_eos, dim=1) - is_eos        # number of <eos> strictly before each position
    return (before == 0).float()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def sample(model, problems: list[Problem], n: int = 1, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """n completions for each problem: prompts (P*n, 7) and completions (P*n, MAX_NEW), greedy at temperature 0.

    Completions are padded with <pad> after <eos>; rows are grouped by problem (row i*n + j).
    """
    prompts = torch.tensor([encode_prompt(p) for p in problems for _ in range(n)])
    ids = prompts
    done = torch.zeros(len(ids), dtype=torch.bool)
    past = None
    out = []
    step_input = ids
    attention = torch.ones_like(ids)                       # no padding: every prompt has the same 7 tokens
    for _ in range(MAX_NEW):
        res = model(input_ids=step_input, attention_mask=attention, use_cache=True,
                    **({cache_kwarg(model): past} if past is not None else {}))
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        past = cache_of(res)
        logits = restrict(res.logits[:, -1, :].float())
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out.append(nxt)
        done = done | (nxt == EOS)
        step_input = nxt[:, None]
    return prompts, torch.stack(out, dim=1)


def rewards_for(problems: list[Problem], completions: Tensor, n: int) -> Tensor:
    """(P*n, T) completions grouped by problem -> (P, n) exact-match rewards."""
    r = [verify(problems[i // n], completions[i]) for i in range(len(completions))]
    return torch.tensor(r).view(len(problems), n)


def greedy_accuracy(model, problems: list[Problem]) -> float:
    _, comp = sample(model, problems, n=1, temperature=0)
    return rewards_for(problems, comp, 1).mean().item()


def pass_at_ks(model, problems: list[Problem], n: int = 16, ks=(1, 4, 16), seed: int = 0,
               temperature: float = 1.0) -> dict[int, float]:
    """Mean unbiased pass@k over problems from n samples each at the given temperature."""
    g = torch.Generator().manual_seed(seed)
    _, comp = sample(model, problems, n=n, temperature=temperature, generator=g)
    correct = rewards_for(problems, comp, n).sum(1).long().tolist()
    return {k: sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks}


def load_policy(path=None):
    model = GPT2LMHeadModel.from_pretrained(require(path or ARITHMETIC_DIR, "The arithmetic policy"))
    return fast_forward_settings(model).eval()
