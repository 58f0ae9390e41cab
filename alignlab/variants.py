"""Notebook 06's experiment helpers: noisy labels, loss shapes, completion lengths, length-controlled gold,
and the comparison plots.

>>> noisy = flip_labels(pairs, fraction=0.2, seed=0)        # extra annotator mistakes
>>> label_agreement(noisy)                                   # share of pairs the gold classifier agrees with
>>> plot_loss_shapes({"DPO": dpo_fn, "IPO": ipo_fn})         # per-pair loss and gradient against h
>>> plot_runs({"DPO": history, "IPO": history2}, base=base)  # gold against KL, one path per run

A run is anything with ``evals``: a list of dicts with ``step``, ``gold`` and ``kl``
(``alignlab.dpo.DPOHistory``, ``alignlab.online.OnlineHistory``).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from . import paths, report
from .models import SFT_WEIGHTS
from .pairs import LENGTH_BINS
from .rewards import gold_scores
from .rollout import sample


# ------------------------------------------------------------------ pairs
def flip_labels(pairs: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """A copy of ``pairs`` where a random ``fraction`` of them has chosen and rejected swapped.

    Every ``*chosen*`` field trades places with its ``*rejected*`` twin (ids, gold
    scores, reference log-probs); ``p_chosen`` becomes ``1 - p_chosen``; flipped rows
    get ``"flipped": True``. The rows of ``pairs`` are not modified.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    out = []
    for row in pairs:
        row = dict(row)
        if rng.random() < fraction:
            for key in [k for k in row if "chosen" in k and k != "p_chosen"]:
                twin = key.replace("chosen", "rejected")
                if twin in row:
                    row[key], row[twin] = row[twin], row[key]
            if "p_chosen" in row:
                row["p_chosen"] = 1.0 - row["p_chosen"]
            row["flipped"] = True
        out.append(row)
    return out


def label_agreement(pairs: Sequence[dict]) -> float:
    """Share of pairs whose chosen completion has the strictly higher gold score."""
    return sum(r["gold_chosen"] > r["gold_rejected"] for r in pairs) / max(1, len(pairs))


def pair_lengths(pairs: Sequence[dict], eos_id: int | None = None) -> dict:
    """Mean completion length (tokens) of chosen and rejected completions, and how often each ends with EOS."""
    chosen = torch.tensor([len(r["chosen_ids"]) for r in pairs], dtype=torch.float32)
    rejected = torch.tensor([len(r["rejected_ids"]) for r in pairs], dtype=torch.float32)
    out = {"chosen": chosen.mean().item(), "rejected": rejected.mean().item(),
           "longer_chosen": (chosen > rejected).float().mean().item(),
           "shorter_chosen": (chosen < rejected).float().mean().item()}
    if eos_id is not None:
        out["eos_chosen"] = sum(bool(r["chosen_ids"]) and r["chosen_ids"][-1] == eos_id for r in pairs) / len(pairs)
        out["eos_rejected"] = sum(bool(r["rejected_ids"]) and r["rejected_ids"][-1] == eos_id for r in pairs) / len(pairs)
    return out


# ------------------------------------------------------------------ loss shapes
def loss_shape(loss_fn: Callable, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair loss and its derivative with respect to h, for a four-argument DPO-style loss.

    ``loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected)`` (other arguments bound)
    returns a batch-mean loss or a tuple starting with it. Each h is put on the chosen
    policy log-prob with zeros elsewhere, so dpo_logits = h. Shapes: h (N,) -> ((N,), (N,)).
    """
    losses, grads = [], []
    for value in h.tolist():
        x = torch.tensor([value], dtype=torch.float64, requires_grad=True)              # (1,)
        zero = torch.zeros(1, dtype=torch.float64)
        out = loss_fn(x, zero, zero, zero)
        loss = out[0] if isinstance(out, (tuple, list)) else out
        (grad,) = torch.autograd.grad(loss, x)
        losses.append(float(loss.detach()))
        grads.append(float(grad))
    return torch.tensor(losses), torch.tensor(grads)


def plot_loss_shapes(losses: Mapping[str, Callable], h_range: tuple[float, float] = (-40.0, 60.0),
                     points: int = 201, ylim: float = 4.0, targets: Mapping[str, float] | None = None):
    """The per-pair loss against h (one panel), then the pull -d loss / d h of each loss on its own y-axis.

    The pulls differ by orders of magnitude (IPO's grows linearly in h, DPO's is at most beta), so each
    gets its own panel and scale; positive pull raises h. ``targets``: a dotted line where a loss stops.
    """
    import matplotlib.pyplot as plt

    h = torch.linspace(*h_range, points, dtype=torch.float64)                            # (N,)
    fig, axes = plt.subplots(1, 1 + len(losses), figsize=(3.6 * (1 + len(losses)), 3.3))
    ax_loss = axes[0]
    for i, (name, fn) in enumerate(losses.items()):
        loss, grad = loss_shape(fn, h)
        ax_pull = axes[1 + i]
        ax_loss.plot(h, loss, color=f"C{i}", label=name)
        ax_pull.plot(h, -grad, color=f"C{i}")
        ax_pull.axhline(0, color="grey", lw=0.5)
        ax_pull.set(xlabel="h, nats", ylabel="-d loss / d h", title=f"pull: {name}")
        ax_pull.title.set_fontsize(9)
        if targets and name in targets:
            for ax in (ax_loss, ax_pull):
                ax.axvline(targets[name], color=f"C{i}", ls=":", lw=1)
    ax_loss.set(xlabel="h = log-ratio(chosen) - log-ratio(rejected), nats", ylabel="per-pair loss",
                title="loss", ylim=(0, ylim))
    ax_loss.legend(fontsize=7)
    for ax in axes:
        ax.axvline(0, color="grey", lw=0.5)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ runs
def summary_table(runs: Mapping[str, object], base: dict | None = None,
                  columns: Sequence[str] = ("gold", "kl", "length")) -> str:
    """A plain-text table of each run's final evaluation (and the base policy's), one row per run."""
    head = f"{'run':<36}" + "".join(f"{c:>9}" for c in columns)
    rows = [head]
    items = ([("base policy", base)] if base is not None else []) + [(k, getattr(r, "final", r)) for k, r in runs.items()]
    for name, final in items:
        cells = "".join(f"{final[c]:>9.3f}" if isinstance(final.get(c), (int, float)) else f"{'-':>9}" for c in columns)
        rows.append(f"{name:<36}" + cells)
    return "\n".join(rows)


def plot_runs(runs: Mapping[str, object], base: dict | None = None, title: str = "", x: str = "step"):
    """Left: gold reward against training ``x`` (step); right: each run's path in the gold-vs-KL plane.

    Where the evaluations carry ``gold_std`` and ``n`` (``evaluate_policy`` does), each point has an error
    bar of one standard error of the gold mean, so a gap smaller than the bars reads as the noise it is.
    """
    import matplotlib.pyplot as plt

    fig, (ax_gold, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, run) in enumerate(runs.items()):
        evals = run.evals
        se = [e["gold_std"] / math.sqrt(e["n"]) if "gold_std" in e and e.get("n") else 0.0 for e in evals]
        ax_gold.errorbar([e[x] for e in evals], [e["gold"] for e in evals], yerr=se, fmt="o-", ms=4, capsize=2,
                         color=f"C{i}", label=name)
        ax_kl.errorbar([e["kl"] for e in evals], [e["gold"] for e in evals], yerr=se, fmt="o-", ms=4, capsize=2,
                       color=f"C{i}", label=name)
        ax_kl.annotate(name, (evals[-1]["kl"], evals[-1]["gold"]), fontsize=8, color=f"C{i}",
                       xytext=(4, -3), textcoords="offset points")
    if base is not None:
        ax_gold.axhline(base["gold"], color="k", ls=":", lw=1, label="base policy")
        ax_kl.scatter([0.0], [base["gold"]], color="k", marker="*", s=80, zorder=3, label="base policy")
    ax_gold.set(xlabel=f"training {x}", ylabel="gold reward (mean P(positive))", title="gold reward during training")
    ax_kl.set(xlabel="sequence KL(policy || reference), nats", ylabel="gold reward", title="gold reward vs KL")
    for ax in (ax_gold, ax_kl):
        ax.grid(alpha=0.3)
    ax_gold.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lengths(lengths: Mapping[str, Sequence[float]], max_new_tokens: int, data: dict | None = None):
    """Histograms of completion lengths (tokens) per policy; ``data`` adds the pairs' chosen/rejected means."""
    import matplotlib.pyplot as plt

    panels = 2 if data else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.4), squeeze=False)
    ax = axes[0, 0]
    bins = torch.arange(0.5, max_new_tokens + 1.5, 1.0).tolist()
    for i, (name, values) in enumerate(lengths.items()):
        values = [float(v) for v in values]
        mean = sum(values) / max(1, len(values))
        ax.hist(values, bins=bins, histtype="step", lw=1.5, color=f"C{i}", label=f"{name}: mean {mean:.1f}")
    ax.set(xlabel="completion length (tokens, EOS included)", ylabel="completions",
           title=f"how long the policy writes (limit {max_new_tokens})")
    ax.legend(fontsize=8, loc="upper left")
    if data:
        ax = axes[0, 1]
        ax.bar(["chosen", "rejected"], [data["chosen"], data["rejected"]], color=["C2", "C3"])
        for j, key in enumerate(("chosen", "rejected")):
            ax.text(j, data[key], f"{data[key]:.2f}", ha="center", va="bottom", fontsize=9)
        ax.set(ylabel="mean length (tokens)", title="in the preference pairs",
               ylim=(0, max(data["chosen"], data["rejected"]) * 1.2))
    fig.tight_layout()
    return fig



# ------------------------------------------------------------------ length-controlled gold
@torch.no_grad()
def sample_gold_lengths(policy, tokenizer, gold, prompts: Sequence[dict], max_new_tokens: int, seed: int = 0,
                        samples_per_prompt: int = 1, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-completion gold scores and lengths of ``policy``'s samples: ((N,), (N,)) float32 on the CPU.

    One completion per prompt per ``samples_per_prompt`` (N = len(prompts) * samples_per_prompt, each
    prompt's samples adjacent), temperature 1, stopped at EOS or ``max_new_tokens``; length counts the
    completion's tokens, EOS included. With one sample per prompt and the same ``seed``, ``batch_size``
    and prompts, the samples are those of ``alignlab.evaluation.evaluate_policy``, so the mean of the
    golds is its ``gold``. The policy's train/eval mode is restored.
    """
    model = getattr(policy, "policy", policy)
    mode = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = [p["prompt_ids"] for p in prompts for _ in range(samples_per_prompt)]
    golds, lengths = [], []
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            out = sample(model, chunk, max_new_tokens, temperature=1.0, eos_id=tokenizer.eos_token_id,
                         pad_id=tokenizer.pad_token_id, generator=generator)
            golds.append(gold_scores(gold, tokenizer, chunk, out.completion_ids)[1])                # (B,)
            lengths.append(out.completion_mask.sum(-1).float().cpu())                              # (B,)
    finally:
        model.train(mode)
    return torch.cat(golds), torch.cat(lengths)


def length_controlled_gold(golds, lengths, reference_lengths, bins: Sequence[tuple[int, int]] | None = None) -> dict:
    """A policy's mean gold at the reference's length distribution, two ways, beside the raw mean.

    Args:
        golds, lengths: (N,) gold score and completion length (tokens, EOS included) of each of the
            policy's samples (:func:`sample_gold_lengths`).
        reference_lengths: (M,) completion lengths of the reference policy's samples.
        bins: inclusive (lo, hi) length ranges; default ``alignlab.pairs.LENGTH_BINS``.

    Returns a dict:
        ``gold``, ``gold_se``: the raw mean gold and its standard error.
        ``stratified``, ``stratified_se``: post-stratification. The policy's mean gold in each bin,
            weighted by the share of the reference's samples in that bin (w_b): sum_b w_b mean_b,
            over the bins where the policy has samples, renormalized by ``coverage``; standard error
            sqrt(sum_b (w_b / coverage)^2 s_b^2 / n_b), s_b^2 the bin's sample variance (the pooled
            within-bin variance for a bin with one sample).
        ``coverage``: the share of the reference's samples whose bin the policy reached (1: every bin).
        ``at_reference_length``, ``slope``: the least-squares line gold = a + slope * length over the
            policy's samples, read at the reference's mean length (NaN slope, raw mean, when all
            lengths are equal).
        ``reference_length``, ``length``: mean lengths of the reference's and the policy's samples.
        ``bins``: per bin "lo-hi": ``n`` (policy samples), ``share`` (of the policy's samples),
            ``reference_share``, ``gold`` (NaN when empty).

    What it controls for: a shift in how many completions of each length the policy writes. What it
    cannot: length is not assigned at random, so a bin's mean mixes the effect of length with what
    the policy writes at that length; within a bin, lengths can still differ; and a bin the policy
    never reaches has no estimate (``coverage`` < 1 says so).
    """
    bins = LENGTH_BINS if bins is None else bins
    g = torch.as_tensor(golds, dtype=torch.float64).flatten()                            # (N,)
    n_len = torch.as_tensor(lengths, dtype=torch.float64).flatten()                      # (N,)
    ref = torch.as_tensor(reference_lengths, dtype=torch.float64).flatten()              # (M,)
    if len(g) != len(n_len) or len(g) == 0 or len(ref) == 0:
        raise ValueError(f"need as many golds as lengths (got {len(g)} and {len(n_len)}) and at least one "
                         f"sample of each policy (reference: {len(ref)})")
    N = len(g)
    raw_se = g.std().item() / math.sqrt(N) if N > 1 else math.nan
    rows, values_in, within = {}, {}, []
    for lo, hi in bins:
        in_bin = (n_len >= lo) & (n_len <= hi)
        values = values_in[f"{lo}-{hi}"] = g[in_bin]
        rows[f"{lo}-{hi}"] = {"n": int(in_bin.sum()), "share": in_bin.double().mean().item(),
                              "reference_share": ((ref >= lo) & (ref <= hi)).double().mean().item(),
                              "gold": values.mean().item() if len(values) else math.nan}
        within += (values - values.mean()).tolist() if len(values) > 1 else []
    dof = len(within) - sum(1 for r in rows.values() if r["n"] > 1)
    pooled_var = sum(v * v for v in within) / dof if dof > 0 else math.nan
    covered = [(key, r) for key, r in rows.items() if r["n"] > 0 and r["reference_share"] > 0]
    coverage = sum(r["reference_share"] for _, r in covered)
    stratified, var = 0.0, 0.0
    for key, r in covered:
        w = r["reference_share"] / coverage
        values = values_in[key]
        s2 = values.var().item() if len(values) > 1 else pooled_var
        stratified += w * r["gold"]
        var += w * w * s2 / r["n"]
    if not covered:
        stratified = math.nan
    ref_mean = ref.mean().item()
    centred = n_len - n_len.mean()
    if float((centred ** 2).sum()) > 0:
        slope = float((centred * (g - g.mean())).sum() / (centred ** 2).sum())
        at_ref = g.mean().item() + slope * (ref_mean - n_len.mean().item())
    else:
        slope, at_ref = math.nan, g.mean().item()
    return {"gold": g.mean().item(), "gold_se": raw_se, "stratified": stratified,
            "stratified_se": math.sqrt(var) if covered and not math.isnan(var) else math.nan,
            "coverage": coverage, "at_reference_length": at_ref, "slope": slope,
            "reference_length": ref_mean, "length": n_len.mean().item(), "bins": rows}


def evaluation_difference(a: Mapping, b: Mapping, key: str = "gold", z: float = 2.0) -> dict:
    """``a[key] - b[key]`` for two evaluations (``evaluate_policy`` dicts), with its standard error and a verdict.

    The standard error is sqrt(se_a^2 + se_b^2), se = ``{key}_std`` / sqrt(``n``) of each evaluation: it
    counts the evaluation's sampling noise only (not a training seed's), and treats the two as independent.
    Returns ``{"diff", "se", "inside_noise"}``; ``inside_noise`` is ``|diff| < z * se``.
    """
    se = math.sqrt((a[f"{key}_std"] ** 2) / a["n"] + (b[f"{key}_std"] ** 2) / b["n"])
    diff = float(a[key]) - float(b[key])
    return {"diff": diff, "se": se, "inside_noise": abs(diff) < z * se}


def gold_per_nat(run_final: dict, base: dict) -> float:
    """Gold gained per nat of KL spent, (gold - base gold) / KL (nan when KL is ~0)."""
    kl = run_final["kl"]
    return (run_final["gold"] - base["gold"]) / kl if kl > 1e-6 else math.nan


def same_weights(model_a, model_b) -> bool:
    """True when two models have identical parameters (e.g. a copy of the SFT model that has not trained yet)."""
    pa, pb = list(model_a.parameters()), list(model_b.parameters())
    return len(pa) == len(pb) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(pa, pb))


# ------------------------------------------------------------------ more seeds
SEEDS_FILE = paths.DATA_DIR / "variants" / "seeds.json"    # scripts/build_variant_seeds.py (`make data`)
NOTEBOOK = paths.REPO_ROOT / "solutions" / "06_beyond_dpo" / "06_beyond_dpo.ipynb"
POINT_KEYS = ("step", "kl", "gold", "gold_std", "kl_std", "n", "length", "eos_rate")


def eval_points(run) -> list[dict]:
    """A run's evaluations without their sample texts: ``{step, kl, gold, gold_std, kl_std, n, length, eos_rate}``
    (the keys it has), JSON-ready floats, as ``report.record`` and the stored seeds keep them."""
    return [{k: float(e[k]) for k in POINT_KEYS if k in e} for e in run.evals]


def world_fingerprint() -> str:
    """What notebook 06's runs read from data/: the SFT policy's weights, the pairs, the prompts, the gold."""
    return paths.files_digest([paths.SFT_DIR / SFT_WEIGHTS, paths.PAIRS_FILE, paths.PROMPTS_FILE,
                               *sorted(paths.GOLD_DIR.iterdir())])


def code_fingerprint(notebook: Path = NOTEBOOK) -> str:
    """The code cells of notebook 06's solution, hashed: a stored seed is stale once any of them changes."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    code = "\n# ----\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def load_seed_runs(track, path: Path | None = None) -> dict[str, list[list[dict]]]:
    """The other seeds of notebook 06's runs, ``{run name: [points of seed 1, points of seed 2, ...]}``.

    ``make data`` (``scripts/build_variant_seeds.py``) runs the solution notebook again with ``SEED = 1, 2, ...``
    on the CPU track and stores each run's evaluations. Empty (and a line saying why) on another track, in
    grading mode, or when the file is missing or was built from other data; the notebook then has its own
    run only.
    """
    path = Path(path or SEEDS_FILE)
    why = None
    if track.name != "tiny" or track.grading or str(track.device) != "cpu":
        why = (f"they are stored for the tiny CPU track only (this run: track {track.name} on {track.device}"
               f"{', grading mode' if track.grading else ''})")
    elif not path.exists():
        why = f"{path} is missing: python scripts/build_world.py --only variant_seeds builds it"
    else:
        stored = json.loads(path.read_text())
        if stored.get("world") != world_fingerprint():
            why = (f"{path.name} was built from other data/ files: rebuild it with "
                   "python scripts/build_world.py --only variant_seeds")
    if why:
        print(f"other seeds not loaded: {why}")
        return {}
    runs: dict[str, list[list[dict]]] = {}
    for seed in sorted(stored["seeds"], key=int):
        for name, points in stored["seeds"][seed].items():
            runs.setdefault(name, []).append(points)
    print(f"seeds {', '.join(sorted(stored['seeds'], key=int))} of these runs loaded from data/variants/{path.name} "
          f"(this notebook's cells with SEED changed, run by `make data`)")
    return runs


def with_seeds(runs: Mapping[str, object], stored: Mapping[str, list[list[dict]]]) -> dict[str, list[list[dict]]]:
    """``{name: [this run's points, *the stored seeds' points]}`` for ``compare_at_kl``; a name not stored
    keeps its own run only. Also records this run's points as ``06.evals.<name>`` (``report.record``, a
    no-op unless ALIGNLAB_RECORD is set): that is how ``scripts/build_variant_seeds.py`` collects them."""
    out = {}
    for name, run in runs.items():
        points = eval_points(run)
        report.record(f"06.evals.{name}", points)
        out[name] = [points, *stored.get(name, [])]
    return out


__all__ = ["flip_labels", "label_agreement", "pair_lengths", "loss_shape", "plot_loss_shapes", "summary_table",
           "plot_runs", "plot_lengths", "sample_gold_lengths", "length_controlled_gold", "evaluation_difference",
           "gold_per_nat", "same_weights", "eval_points", "world_fingerprint", "code_fingerprint", "load_seed_runs",
           "with_seeds", "SEEDS_FILE"]
