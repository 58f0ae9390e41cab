"""Notebook 01's displays: preference pairs, noisy annotators, the Bradley-Terry explorer, per-token log-probs.

The math (``bradley_terry_probability``, ``token_logprobs``, ``sequence_logprob``)
is the learner's; every function here that needs it takes it as an argument
``bt_fn`` so the pictures are drawn with the learner's own code.

Annotators are simulated as in the embedded data set: an annotator comparing
completions a and b with gold scores g_a, g_b (P(positive) in [0, 1]) prefers a
with probability sigmoid((g_a - g_b) / temperature), i.e. Bradley-Terry with
reward g / temperature. A small temperature is a careful annotator.
"""
from __future__ import annotations

import textwrap
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch

from .data import collate_pairs

BTFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CHOSEN_COLOR = "tab:green"
REJECTED_COLOR = "tab:red"


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


# Field names of a pair row (alignlab.pairs.load_pairs); one place to change if the data set renames them.
GOLD_CHOSEN, GOLD_REJECTED, P_CHOSEN = "gold_chosen", "gold_rejected", "p_chosen"


def decode_pair(row: dict, tokenizer) -> dict:
    """The texts of a pair row: ``prompt``, ``chosen``, ``rejected`` (special tokens such as EOS dropped)."""
    dec = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    return {"prompt": dec(row["prompt_ids"]), "chosen": dec(row["chosen_ids"]), "rejected": dec(row["rejected_ids"])}


def gold_scores(rows: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(gold_chosen (N,), gold_rejected (N,)) float64 gold rewards of pair rows."""
    return (torch.tensor([r[GOLD_CHOSEN] for r in rows], dtype=torch.float64),
            torch.tensor([r[GOLD_REJECTED] for r in rows], dtype=torch.float64))


def annotator_temperature(rows: Sequence[dict]) -> float:
    """The data set's annotator temperature, read back from its rows: median of (g_c - g_r) / logit(p_chosen).

    Each row keeps the probability ``p_chosen`` = sigmoid((g_c - g_r) / temperature) with which the annotator
    picked the chosen completion; pairs with (nearly) equal gold scores carry no information and are skipped.
    """
    gc, gr = gold_scores(rows)
    p = torch.tensor([r[P_CHOSEN] for r in rows], dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    logit = torch.log(p) - torch.log1p(-p)
    keep = ((gc - gr).abs() > 1e-3) & (logit.abs() > 1e-6) & torch.isfinite(logit)
    return float(((gc - gr)[keep] / logit[keep]).median())


def show_pair(row: dict, tokenizer, width: int = 90) -> None:
    """Print one preference pair: the prompt, both completions, their gold scores and P(chosen preferred)."""
    t = decode_pair(row, tokenizer)

    def wrap(label: str, text: str) -> str:
        return textwrap.fill(text, width, initial_indent=label, subsequent_indent=" " * len(label))

    print(wrap("prompt   : ", repr(t["prompt"])))
    print(wrap(f"chosen   : (gold {row[GOLD_CHOSEN]:.2f}) ", repr(t["chosen"])))
    print(wrap(f"rejected : (gold {row[GOLD_REJECTED]:.2f}) ", repr(t["rejected"])))
    if P_CHOSEN in row:
        print(f"the annotator model chose it with probability {row[P_CHOSEN]:.2f}")


def expected_disagreement(gold_a, gold_b, temperature: float, bt_fn: BTFn) -> float:
    """Expected share of pairs on which a Bradley-Terry annotator picks the completion with the lower gold score.

    gold_a, gold_b: (N,) gold scores. Pairs with equal gold scores are left out (no right answer).
    Exact expectation, no sampling: mean over pairs of P(annotator picks the worse one).
    """
    gold_a, gold_b = _as_tensor(gold_a), _as_tensor(gold_b)
    hi, lo = torch.maximum(gold_a, gold_b), torch.minimum(gold_a, gold_b)
    keep = hi > lo
    p_wrong = bt_fn(lo[keep] / temperature, hi[keep] / temperature)  # (N',) P(worse preferred)
    return float(p_wrong.mean())


def simulate_labels(gold_a, gold_b, temperature: float, bt_fn: BTFn, generator: torch.Generator | None = None) -> torch.Tensor:
    """One round of annotation: (N,) bool, True where the annotator prefers a over b."""
    p = bt_fn(_as_tensor(gold_a) / temperature, _as_tensor(gold_b) / temperature)  # (N,)
    return torch.rand(p.shape, generator=generator, dtype=p.dtype) < p


def plot_disagreement(gold_a, gold_b, bt_fn: BTFn, temperatures: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                      observed: float | None = None, observed_temperature: float | None = None):
    """How often annotators contradict the gold reward, as their temperature grows (log x axis).

    ``observed``: the disagreement actually measured in the data set, drawn as a point at
    ``observed_temperature``.
    """
    temps = list(temperatures)
    rates = [expected_disagreement(gold_a, gold_b, t, bt_fn) for t in temps]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(temps, rates, "o-", label="Bradley-Terry annotators (expected)")
    if observed is not None and observed_temperature is not None:
        ax.plot([observed_temperature], [observed], "s", ms=9, color="black", label="the data set's labels")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.text(temps[0], 0.51, "coin flip", color="grey", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("annotator temperature (noise)")
    ax.set_ylabel("share of pairs against the gold order")
    ax.set_ylim(0, 0.55)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Noisy annotators disagree with the gold reward")
    fig.tight_layout()
    return fig


def plot_pairs_by_prompt(rows: Sequence[dict], tokenizer, max_prompts: int = 6):
    """The motivation picture: for a few prompts, each pair as an arrow from the rejected to the chosen gold score.

    Green arrows point up the gold scale (the annotator agreed with the gold reward), red ones down.
    """
    prompts = [tokenizer.decode(r["prompt_ids"], skip_special_tokens=True) for r in rows]
    chosen_gold, rejected_gold = gold_scores(rows)
    order: list[str] = []
    for p in prompts:
        if p not in order:
            order.append(p)
        if len(order) == max_prompts:
            break
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(order) + 1.2))
    for row, prompt in enumerate(order):
        idx = [i for i, p in enumerate(prompts) if p == prompt]
        for k, i in enumerate(idx):
            c, r = float(chosen_gold[i]), float(rejected_gold[i])
            y = row + 0.5 * (k + 1) / (len(idx) + 1) - 0.25
            color = CHOSEN_COLOR if c >= r else REJECTED_COLOR
            ax.annotate("", xy=(c, y), xytext=(r, y), arrowprops=dict(arrowstyle="->", color=color, lw=1.3))
            ax.plot([r, c], [y, y], "o", color="grey", ms=3)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([textwrap.shorten(repr(p), 28) for p in order], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("gold reward P(positive):  arrow = rejected -> chosen")
    ax.set_title("Pairs of completions per prompt (green: annotator agrees with gold, red: not)")
    fig.tight_layout()
    return fig


def plot_bradley_terry(bt_fn: BTFn, gap: float, temperature: float, gaps=None):
    """P(a preferred over b) against the gold gap g_a - g_b for one annotator temperature.

    ``gap`` is marked on the curve; ``gaps`` (optional, the data set's gold gaps) is drawn as a histogram.
    """
    x = torch.linspace(-1, 1, 201, dtype=torch.float64)
    y = bt_fn(x / temperature, torch.zeros_like(x))  # (201,)
    p = float(bt_fn(_as_tensor(gap) / temperature, _as_tensor(0.0)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if gaps is not None:
        hist_ax = ax.twinx()
        hist_ax.hist(_as_tensor(gaps).numpy(), bins=40, range=(-1, 1), color="lightgrey")
        hist_ax.set_yticks([])
        ax.set_zorder(hist_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(x.numpy(), y.numpy(), lw=2)
    ax.plot([gap], [p], "o", ms=9, color="black")
    ax.annotate(f"P(a > b) = {p:.3f}", (gap, p), xytext=(8, -14), textcoords="offset points")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("gold gap g_a - g_b")
    ax.set_ylabel("P(annotator prefers a)")
    ax.set_title(f"Bradley-Terry annotator, temperature {temperature:.2f}")
    fig.tight_layout()
    return fig


def bradley_terry_explorer(bt_fn: BTFn, gaps=None):
    """An ipywidgets explorer of the Bradley-Terry curve: sliders for the gold gap and the annotator temperature.

    Uses only ``interact`` and ``FloatSlider`` (the API common to ipywidgets 7.7, Colab's, and 8).
    """
    import ipywidgets as widgets

    def draw(gap: float = 0.2, temperature: float = 0.1):
        plot_bradley_terry(bt_fn, gap, temperature, gaps=gaps)
        plt.show()

    return widgets.interact(
        draw,
        gap=widgets.FloatSlider(value=0.2, min=-1.0, max=1.0, step=0.01, description="gold gap",
                                style={"description_width": "initial"}),
        temperature=widgets.FloatSlider(value=0.1, min=0.01, max=1.0, step=0.01, description="temperature",
                                        style={"description_width": "initial"}),   # 7.7 and 8: full label
    )


def plot_token_logprobs(tokens: Sequence[Sequence[str]], logps: Sequence[Sequence[float]], labels: Sequence[str],
                        colors: Sequence[str] = (CHOSEN_COLOR, REJECTED_COLOR)):
    """Bar charts of per-token log-probabilities of completions (one panel each), tokens on the x axis."""
    fig, axes = plt.subplots(len(tokens), 1, figsize=(8, 2.3 * len(tokens)), squeeze=False)
    low = min(min(v) for v in logps if len(v)) if any(len(v) for v in logps) else -1.0
    for ax, toks, lp, label, color in zip(axes[:, 0], tokens, logps, labels, colors):
        ax.bar(range(len(lp)), list(lp), color=color)
        ax.set_xticks(range(len(toks)))
        ax.set_xticklabels([repr(t)[1:-1] for t in toks], rotation=60, fontsize=8, ha="right")
        ax.set_ylim(low * 1.1, 0)
        ax.set_ylabel("log p")
        ax.set_title(f"{label}: sum {sum(lp):.1f} nats over {len(lp)} tokens, mean {sum(lp) / max(len(lp), 1):.2f}",
                     fontsize=10)
    fig.tight_layout()
    return fig


def completion_tokens(input_ids: torch.Tensor, token_logps: torch.Tensor, completion_mask: torch.Tensor, tokenizer):
    """(tokens, logps) of one sequence's completion: input_ids (T,), token_logps (T-1,), completion_mask (T,)."""
    keep = completion_mask[1:].bool()                                     # (T-1,) aligned with token_logps
    ids = input_ids[1:][keep].tolist()
    return [tokenizer.decode([i]) for i in ids], token_logps[keep].tolist()


@torch.no_grad()
def completion_logprobs(policy, rows: Sequence[dict], pad_id: int, token_logprobs_fn, sequence_logprob_fn,
                        eos_token_id: int | None = None, batch_size: int = 128) -> dict:
    """Both completions of each pair under the policy, scored with the given ``token_logprobs`` and ``sequence_logprob``.

    Returns ``{"chosen": d, "rejected": d}``, each ``d`` a dict of (N,) CPU tensors in pair order:
    ``"sum"`` the completion's summed log-prob log pi(y|x) (nats), ``"mean"`` its per-token mean
    (``sequence_logprob(..., average=True)``), ``"length"`` its number of tokens (the completion mask's
    count, a final EOS included), and ``"eos"`` the log-prob of its last token where that token is
    ``eos_token_id``, NaN where the completion has no final EOS (all NaN when ``eos_token_id`` is None).
    """
    device = next(policy.parameters()).device
    parts = {side: {k: [] for k in ("sum", "mean", "length", "eos")} for side in ("chosen", "rejected")}
    for start in range(0, len(rows), batch_size):
        batch = collate_pairs(list(rows[start:start + batch_size]), pad_id)
        for side, out in parts.items():
            ids = batch[f"{side}_input_ids"].to(device)                              # (B, T)
            logits = policy(input_ids=ids, attention_mask=batch[f"{side}_attention_mask"].to(device)).logits
            token_logps = token_logprobs_fn(logits, ids).cpu()                      # (B, T-1)
            mask = batch[f"{side}_completion_mask"]                                   # (B, T)
            length = mask[:, 1:].sum(dim=-1)                                         # (B,)
            last = (mask[:, 1:].cumsum(dim=-1) == length[:, None]) & mask[:, 1:].bool()  # (B, T-1) last completion token
            last_logp = (token_logps * last).sum(dim=-1).double()                  # (B,)
            last_id = (ids.cpu()[:, 1:] * last).sum(dim=-1)                           # (B,) id of the last token
            ends = (length > 0) & (last_id == eos_token_id) if eos_token_id is not None else torch.zeros_like(last_id).bool()
            out["sum"].append(sequence_logprob_fn(token_logps, mask).double())
            out["mean"].append(sequence_logprob_fn(token_logps, mask, average=True).double())
            out["length"].append(length)
            out["eos"].append(torch.where(ends, last_logp, torch.full_like(last_logp, float("nan"))))
    empty = {"sum": torch.float64, "mean": torch.float64, "length": torch.long, "eos": torch.float64}
    return {side: {k: torch.cat(v) if v else torch.zeros(0, dtype=empty[k]) for k, v in out.items()}
            for side, out in parts.items()}


def policy_preference_rate(policy, rows: Sequence[dict], pad_id: int, token_logprobs_fn, sequence_logprob_fn,
                           batch_size: int = 64) -> dict:
    """Share of pairs where the policy gives the chosen completion the higher log-probability (strict).

    Uses the given ``token_logprobs`` and ``sequence_logprob``; returns ``{"sum": share, "average": share}``
    for summed and per-token-averaged completion log-probs.
    """
    scored = completion_logprobs(policy, rows, pad_id, token_logprobs_fn, sequence_logprob_fn, batch_size=batch_size)
    chosen, rejected = scored["chosen"], scored["rejected"]
    n = max(len(rows), 1)
    return {"sum": int((chosen["sum"] > rejected["sum"]).sum()) / n,
            "average": int((chosen["mean"] > rejected["mean"]).sum()) / n}


def plot_logprob_vs_length(scored: dict):
    """Summed and per-token mean log-probs of completions against their length (two panels, every completion once
    per pair side), from the output of ``completion_logprobs``; each panel's title gives the Pearson correlation."""
    sides = [scored["chosen"], scored["rejected"]]
    length = torch.cat([d["length"] for d in sides]).double()                      # (2N,)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, key, name in zip(axes, ("sum", "mean"), ("summed log-prob  log pi(y|x)", "per-token mean log-prob")):
        value = torch.cat([d[key] for d in sides])                                 # (2N,)
        jitter = (torch.rand(length.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.4
        ax.scatter((length + jitter).numpy(), value.numpy(), s=4, alpha=0.3)
        corr = float(torch.corrcoef(torch.stack([length, value]))[0, 1])
        ax.set_xlabel("completion length (tokens)")
        ax.set_ylabel("nats")
        ax.set_title(f"{name}\ncorrelation with length {corr:.2f}", fontsize=10)
    fig.tight_layout()
    return fig
