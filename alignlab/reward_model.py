"""Notebook 02's plumbing: train a reward model with a given loss and evaluate it.

The loss is the caller's (the learner's ``pairwise_reward_loss`` in the notebook,
the course's reference elsewhere), so the learner's own code trains the model.

Stable entry points (notebook 04 and later reuse them; keep the signatures):

- ``RewardModelConfig.for_track(track, **overrides)`` -- sizes for a track.
- ``train_reward_model(pairs, config, loss_fn=None, track=None, last_index_fn=None, progress=True) -> RewardModel``
  -- a trained reward model in eval mode, on the track's device (pass ``steps=`` to ``for_track`` for a
  shorter run). ``pairs`` is the training split of ``alignlab.pairs.load_pairs()``. The model carries ``.train_losses`` and
  ``.train_accuracies`` (lists of float). ``loss_fn`` defaults to ``reference.pairwise_reward_loss``.
- ``stored_or_trained(name, config, track) -> RewardModel`` -- notebook 04's reward models (``PPO_REWARD_MODELS``):
  on the tiny track, the copy ``make data`` trained with exactly this config, pairs and policy; otherwise trained here.
- ``score_batch(reward_model, input_ids, attention_mask) -> (B,)`` -- rewards of collated sequences
  (e.g. a rollout's), any padding side.
- ``score_pairs(reward_model, pairs, tokenizer) -> (chosen (N,), rejected (N,))`` and
  ``score_completions(reward_model, prompt_ids_list, completion_ids_list, pad_id) -> (N,)`` -- rewards.
- ``pairwise_accuracy``, ``calibration``, ``plot_calibration``, ``plot_gold_agreement``, ``length_preference``,
  ``length_preference_report`` -- the notebook's evaluations. Best-of-n sampling against the reward model is ``alignlab.best_of_n``.

Convention: a pair's reward gap is r_chosen - r_rejected; accuracy is the share of
pairs with a strictly positive gap (ties count as wrong).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import data as data_lib
from . import models, paths, reference, report
from .config import select_track
from .pairs import load_pairs

LossFn = Callable[..., torch.Tensor]           # (chosen_rewards (B,), rejected_rewards (B,), margin=None) -> ()
LastIndexFn = Callable[[torch.Tensor], torch.Tensor]  # attention_mask (B, T) -> (B,) long


@dataclass
class RewardModelConfig:
    """Hyperparameters of reward-model training (``for_track`` scales them to a track)."""

    steps: int = 200                 # optimizer steps (each on batch_size pairs)
    batch_size: int = 32             # pairs per step (2 * batch_size sequences per forward)
    learning_rate: float = 1e-3      # AdamW step size for backbone and head (tiny models like it large)
    weight_decay: float = 0.0        # AdamW decoupled weight decay
    warmup_steps: int = 20           # linear learning-rate warm-up, then constant
    max_grad_norm: float = 1.0       # global gradient-norm clip
    margin: float | None = None      # passed to the loss as margin=...; None: the plain Bradley-Terry loss
    max_pairs: int | None = None     # use only the first this many training pairs (None: all)
    eval_batch_size: int = 128       # sequences per forward when scoring
    eval_pairs: int | None = 1000    # held-out pairs the notebook evaluates on (None: all)
    seed: int = 0                    # head initialization and shuffling seed

    @classmethod
    def for_track(cls, track, **overrides) -> "RewardModelConfig":
        """Reward-model training sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field."""
        cfg = cls(
            steps=track.pick(cpu=200, gpu=1500, grading=8),
            batch_size=track.pick(cpu=32, gpu=64, grading=8),
            learning_rate=track.pick(cpu=1e-3, gpu=1e-5),
            warmup_steps=track.pick(cpu=20, gpu=100, grading=2),
            eval_pairs=track.pick(cpu=1000, gpu=100_000, grading=64),
        )
        return replace(cfg, **overrides)


def build_reward_model(track, last_index_fn: LastIndexFn | None = None, seed: int = 0):
    """A fresh RewardModel: the track's SFT policy's backbone (``models.load_sft_policy``), a new scalar head,
    read at ``last_index_fn``'s token."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.RewardModel.from_policy(models.load_sft_policy(track), last_index_fn=last_index_fn)
    return model.to(track.device)


def _pair_batches(n_pairs: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield ``steps`` index batches, reshuffling after each pass over the pairs."""
    order = torch.randperm(n_pairs, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n_pairs:
            order, pos = torch.randperm(n_pairs, generator=generator), 0
        yield order[pos:pos + batch_size].tolist()
        pos += batch_size


def train_reward_model(pairs, config: RewardModelConfig, loss_fn: LossFn | None = None, track=None,
                       last_index_fn: LastIndexFn | None = None, progress: bool = True):
    """Train a reward model on preference pairs with ``loss_fn``; return it in eval mode.

    pairs: the training split of ``alignlab.pairs.load_pairs()``.
    loss_fn(chosen_rewards (B,), rejected_rewards (B,), margin=None) -> () scalar to minimize;
        defaults to ``alignlab.reference.pairwise_reward_loss``.
    track: from ``select_track()`` (default: the tiny track); gives the backbone and device.
    last_index_fn: where the head reads each sequence (default: the reference ``last_token_index``).
    The returned model has ``.train_losses`` and ``.train_accuracies`` (one float per step).
    """
    track = track or select_track("tiny")
    loss_fn = loss_fn or reference.pairwise_reward_loss
    tokenizer = models.load_tokenizer(track)
    model = build_reward_model(track, last_index_fn=last_index_fn, seed=config.seed)
    pairs = list(pairs)[: config.max_pairs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    generator = torch.Generator().manual_seed(config.seed)
    losses, accuracies = [], []
    model.train()
    bar = tqdm(_pair_batches(len(pairs), config.batch_size, config.steps, generator),
               total=config.steps, desc="reward model", disable=not progress)
    for idx in bar:
        batch = data_lib.collate_pairs([pairs[i] for i in idx], tokenizer.pad_token_id)
        chosen_rewards, rejected_rewards = _pair_rewards(model, batch, track.device)  # (B,), (B,)
        kwargs = {} if config.margin is None else {"margin": config.margin}
        loss = loss_fn(chosen_rewards, rejected_rewards, **kwargs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        accuracies.append(pairwise_accuracy(chosen_rewards.detach(), rejected_rewards.detach()))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    model.train_losses, model.train_accuracies = losses, accuracies
    return model


# ------------------------------------------------------------ notebook 04's reward models, built once
# Notebook 04 optimizes a reward model with PPO and shows reward hacking against a weak one. Training them is
# the same work notebook 02 already showed, so `make data` trains them once (scripts/build_reward_models.py)
# and the tiny track loads them; any other track, scale or config trains them where it runs.
PPO_REWARD_MODELS = {
    "ppo": dict(steps=dict(cpu=200, gpu=1500, grading=8), learning_rate=dict(cpu=1e-3, gpu=1e-5)),
    "weak": dict(steps=dict(cpu=40, gpu=150, grading=4), learning_rate=dict(cpu=1e-3, gpu=1e-5)),
}


def ppo_reward_model_config(name: str, track) -> RewardModelConfig:
    """The config of notebook 04's reward model ``name`` ("ppo" or "weak") at the track's scale."""
    if name not in PPO_REWARD_MODELS:
        raise ValueError(f"unknown reward model {name!r}: one of {sorted(PPO_REWARD_MODELS)}")
    return RewardModelConfig.for_track(track, **{k: track.pick(**v) for k, v in PPO_REWARD_MODELS[name].items()})


def _fingerprint() -> str:
    """What a stored reward model was trained from: the base and SFT policies' weights and the pairs file."""
    digest = hashlib.sha256()
    for path in (paths.TINY_POLICY_DIR / "model.safetensors", paths.SFT_DIR / models.SFT_WEIGHTS, paths.PAIRS_FILE):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def save_stored(model, name: str, config: RewardModelConfig, folder: Path | None = None) -> Path:
    """Store a tiny-track reward model as float16 safetensors (half the size; the build's own weights, rounded)."""
    folder = Path(folder or paths.REWARD_MODELS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.safetensors").chmod(0o644)                   # readable by the grader's sandboxed users
    meta = {"config": asdict(config), "trained_from": _fingerprint(),
            "train_losses": model.train_losses, "train_accuracies": model.train_accuracies}
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return folder / f"{name}.safetensors"


def load_stored(name: str, config: RewardModelConfig, track, folder: Path | None = None):
    """The stored reward model ``name`` if it was trained with ``config`` from today's policy and pairs, else None."""
    folder = Path(folder or paths.REWARD_MODELS_DIR)
    weights, meta_file = folder / f"{name}.safetensors", folder / f"{name}.json"
    if track.name != "tiny" or not (weights.exists() and meta_file.exists()):
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("config") != asdict(config) or meta.get("trained_from") != _fingerprint():
        return None
    model = build_reward_model(track, seed=config.seed)
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state)
    model.train_losses, model.train_accuracies = meta["train_losses"], meta["train_accuracies"]
    return model.to(track.device).eval()


def stored_or_trained(name: str, track, pairs=None, progress: bool = True):
    """Notebook 04's reward model ``name``: loaded if ``make data`` stored it for this config, else trained now.

    ``pairs``: the training pairs (default ``load_pairs("train", track)``); only read when training.
    Prints which of the two happened. The stored copy is float16-rounded, so its scores differ from a
    fresh training run's by about 1e-3.
    """
    config = ppo_reward_model_config(name, track)
    model = load_stored(name, config, track)
    if model is not None:
        print(f"reward model {name!r}: loaded the copy `make data` trained ({config.steps} steps, "
              f"data/{paths.REWARD_MODELS_DIR.name}/{name}.safetensors)")
        return model
    print(f"reward model {name!r}: training it now ({config.steps} steps)")
    return train_reward_model(pairs if pairs is not None else load_pairs("train", track), config, track=track,
                              progress=progress)


def _pair_rewards(model, batch, device):
    """Rewards of a collated pair batch in one forward: chosen and rejected stacked along the batch.

    The two sides are padded separately by ``collate_pairs``, so the narrower one is right-padded to the
    wider (attention 0 there; the head reads the last real token, so the pad id does not matter).
    """
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    ids = torch.cat([data_lib.pad_right(batch[f"{side}_input_ids"], width) for side in ("chosen", "rejected")])       # (2B, T)
    mask = torch.cat([data_lib.pad_right(batch[f"{side}_attention_mask"], width) for side in ("chosen", "rejected")])  # (2B, T)
    ids, mask = ids.to(device), mask.to(device)
    rewards = model(ids, mask)  # (2B,)
    return rewards.chunk(2)


def plot_training(model, window: int = 20):
    """Training loss and batch accuracy of a model returned by ``train_reward_model`` (moving average over ``window``)."""
    def smooth(v):  # (x, y): moving average, x at each window's last step
        v = torch.as_tensor(v, dtype=torch.float64)
        k = max(1, min(window, len(v)))
        y = torch.nn.functional.avg_pool1d(v[None, None], k, stride=1)[0, 0] if len(v) else v
        return list(range(k - 1, k - 1 + len(y))), y.tolist()

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3))
    ax_l.plot(model.train_losses, color="lightgrey")
    ax_l.plot(*smooth(model.train_losses))
    ax_l.axhline(math.log(2), color="grey", ls=":", lw=1)
    ax_l.text(0, math.log(2), "log 2 (guessing)", fontsize=8, va="bottom", color="grey")
    ax_l.set_xlabel("step")
    ax_l.set_title("training loss")
    ax_a.plot(*smooth(model.train_accuracies))
    ax_a.axhline(0.5, color="grey", ls=":", lw=1)
    ax_a.set_xlabel("step")
    ax_a.set_title("batch accuracy (training pairs)")
    fig.tight_layout()
    return fig


@torch.no_grad()
def score_pairs(reward_model, pairs, tokenizer, batch_size: int = 128):
    """(chosen_rewards (N,), rejected_rewards (N,)) for a list of pairs, on the CPU."""
    device = next(reward_model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = data_lib.collate_pairs(list(pairs[start:start + batch_size]), tokenizer.pad_token_id)
        c, r = _pair_rewards(reward_model, batch, device)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


def length_preference(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, pairs) -> dict:
    """How a reward model's scores of ``pairs`` (``score_pairs``) relate to the completions' lengths.

    ``prefers_longer``: among pairs of unequal length, how often the longer completion scores higher;
    ``label_longer`` and ``gold_longer``: how often the annotators' label and the gold prefer it (the
    gold among pairs whose gold scores differ too); ``corr_score_length`` and ``corr_gold_length``:
    Pearson correlations over the pairs' completions (each side of each pair once);
    ``accuracy_chosen_longer`` / ``accuracy_chosen_shorter``: label accuracy on the pairs whose chosen
    completion is the longer / the shorter one; ``n_<rate>`` for each rate of ``LENGTH_RATES``: the number
    of pairs it is a share of.
    """
    rc, rr = chosen_rewards.double(), rejected_rewards.double()
    lc = torch.tensor([len(r["chosen_ids"]) for r in pairs], dtype=torch.float64)
    lr = torch.tensor([len(r["rejected_ids"]) for r in pairs], dtype=torch.float64)
    gc = torch.tensor([r["gold_chosen"] for r in pairs], dtype=torch.float64)
    gr = torch.tensor([r["gold_rejected"] for r in pairs], dtype=torch.float64)
    if not (len(rc) == len(rr) == len(pairs)):
        raise ValueError(f"got {len(rc)} chosen and {len(rr)} rejected rewards for {len(pairs)} pairs: "
                         "score the same pairs with score_pairs(reward_model, pairs, tokenizer)")
    unequal = lc != lr
    longer_scores_higher = torch.where(lc > lr, rc > rr, rr > rc)
    gold_unequal = unequal & (gc != gr)
    out = {"pairs": len(pairs), "unequal_length": int(unequal.sum()),
           "prefers_longer": float(longer_scores_higher[unequal].double().mean()),
           "label_longer": float((lc > lr)[unequal].double().mean()),
           "gold_longer": float(torch.where(lc > lr, gc > gr, gr > gc)[gold_unequal].double().mean()),
           "corr_score_length": pearson(torch.cat([rc, rr]), torch.cat([lc, lr])),
           "corr_gold_length": pearson(torch.cat([gc, gr]), torch.cat([lc, lr])),
           "accuracy_chosen_longer": float((rc > rr)[lc > lr].double().mean()),
           "accuracy_chosen_shorter": float((rc > rr)[lc < lr].double().mean())}
    counts = (unequal, unequal, gold_unequal, lc > lr, lc < lr)                # the pairs behind each rate
    return {**out, **{f"n_{key}": int(mask.sum()) for key, mask in zip(LENGTH_RATES, counts)}}


LENGTH_RATES = ("prefers_longer", "label_longer", "gold_longer", "accuracy_chosen_longer", "accuracy_chosen_shorter")


def length_preference_report(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, pairs) -> dict:
    """``length_preference`` with each rate's standard error, printed.

    For each rate of ``LENGTH_RATES`` adds ``se_<rate>`` = sqrt(p (1 - p) / n), n = ``n_<rate>`` (the pairs
    it is a share of), which treats the pairs as independent (a prompt's pairs share completions, so
    the true spread is somewhat larger); adds ``prompts``, the distinct prompts among ``pairs``. Prints the
    rates with their standard errors and the two correlations, and returns the dict.
    """
    out = length_preference(chosen_rewards, rejected_rewards, pairs)
    for key in LENGTH_RATES:
        n, p = out[f"n_{key}"], out[key]
        out[f"se_{key}"] = math.sqrt(p * (1 - p) / n) if n else float("nan")
    out["prompts"] = len({tuple(r["prompt_ids"]) for r in pairs})
    labels = {"prefers_longer": "the reward model scores the longer one higher",
              "label_longer": "the annotators' label prefers the longer one",
              "gold_longer": "the gold prefers the longer one (gold scores differ)",
              "accuracy_chosen_longer": "label accuracy, chosen is the longer",
              "accuracy_chosen_shorter": "label accuracy, chosen is the shorter"}
    print(f"{out['pairs']:,} held-out pairs from {out['prompts']:,} prompts, {out['unequal_length']:,} of unequal length")
    for key in LENGTH_RATES:
        print(f"  {labels[key]:<55} {out[key]:.3f} +- {out[f'se_{key}']:.3f}  ({out[f'n_{key}']:,} pairs)")
    print(f"correlation with length (completions):  reward model score {out['corr_score_length']:+.3f},  "
          f"gold {out['corr_gold_length']:+.3f}")
    for key in ("prefers_longer", "label_longer", "gold_longer", "corr_score_length", "corr_gold_length"):
        report.record(f"02_reward_model/length_{key}", round(out[key], 4))
    return out


@torch.no_grad()
def score_completions(reward_model, prompt_ids_list, completion_ids_list, pad_id: int, batch_size: int = 128):
    """(N,) reward of each prompt + completion (lists of token ids), on the CPU."""
    device = next(reward_model.parameters()).device
    out = []
    for start in range(0, len(prompt_ids_list), batch_size):
        batch = data_lib.collate(list(prompt_ids_list[start:start + batch_size]),
                                 list(completion_ids_list[start:start + batch_size]), pad_id)
        out.append(reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def score_batch(reward_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 256):
    """(B,) rewards of already-collated sequences (any padding side), in chunks, on the CPU."""
    device = next(reward_model.parameters()).device
    out = [reward_model(input_ids[i:i + batch_size].to(device), attention_mask[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, input_ids.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
def rewards_both_paddings(reward_model, prompt_ids_list, completion_ids_list, pad_id: int):
    """(right (B,), left (B,)): the same sequences scored once right-padded and once left-padded."""
    device = next(reward_model.parameters()).device
    out = []
    for side in ("right", "left"):
        b = data_lib.collate(list(prompt_ids_list), list(completion_ids_list), pad_id, side=side)
        out.append(reward_model(b["input_ids"].to(device), b["attention_mask"].to(device)).float().cpu())
    return tuple(out)


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """Share of pairs with r_chosen > r_rejected (strict: a tie is a miss)."""
    return float((chosen_rewards > rejected_rewards).float().mean())


def accuracy_report(chosen_rewards, rejected_rewards, gold_chosen, gold_rejected) -> dict:
    """Held-out accuracy on the labels, the annotator-agreement ceiling, and accuracy against the gold order.

    ceiling: share of pairs whose label agrees with the gold order (g_chosen > g_rejected, strict), i.e. the
    accuracy of a model that ranks exactly as the gold reward does. Pairs with equal gold scores are left
    out of ``gold_accuracy``. Prints the three figures and returns them.
    """
    gc, gr = torch.as_tensor(gold_chosen, dtype=torch.float64), torch.as_tensor(gold_rejected, dtype=torch.float64)
    untied = gc != gr
    gold_order = torch.where(gc > gr, chosen_rewards - rejected_rewards, rejected_rewards - chosen_rewards)
    out = {"accuracy": pairwise_accuracy(chosen_rewards, rejected_rewards),
           "ceiling": float((gc > gr).double().mean()),
           "gold_accuracy": float((gold_order[untied] > 0).double().mean()),
           "pairs": len(gc)}
    print(f"held-out pairwise accuracy           {out['accuracy']:.3f}  ({out['pairs']:,} pairs)")
    print(f"annotator-agreement ceiling          {out['ceiling']:.3f}  (labels that follow the gold order)")
    print(f"agreement with the gold order        {out['gold_accuracy']:.3f}  (the reward model vs the gold reward)")
    for k in ("accuracy", "ceiling", "gold_accuracy"):
        report.record(f"02_reward_model/{k}", round(out[k], 4))
    return out


def calibration(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, n_bins: int = 10):
    """Reliability data: predicted P(a preferred) = sigmoid(r_a - r_b) against how often a was chosen.

    Each pair is counted in both orientations, (chosen, rejected) labelled 1 and (rejected, chosen)
    labelled 0, so predictions cover [0, 1]. Returns a dict of (n_bins,) tensors:
    ``predicted`` (mean prediction in the bin), ``empirical`` (share labelled 1), ``count``; empty bins are NaN.
    """
    gap = (chosen_rewards - rejected_rewards).double()
    pred = torch.cat([torch.sigmoid(gap), torch.sigmoid(-gap)])  # (2N,)
    label = torch.cat([torch.ones_like(gap), torch.zeros_like(gap)])  # (2N,)
    bins = torch.clamp((pred * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    safe = count.clamp(min=1)
    predicted = torch.bincount(bins, weights=pred, minlength=n_bins) / safe
    empirical = torch.bincount(bins, weights=label, minlength=n_bins) / safe
    nan = torch.full_like(count, float("nan"))
    return {"predicted": torch.where(count > 0, predicted, nan),
            "empirical": torch.where(count > 0, empirical, nan), "count": count}


def plot_calibration(cal: dict, title: str = "Calibration on held-out pairs"):
    """Reliability diagram: predicted vs empirical preference probability, point size = pairs in the bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    keep = cal["count"] > 0
    sizes = 200 * cal["count"][keep] / cal["count"].max()
    ax.plot(cal["predicted"][keep], cal["empirical"][keep], "-", color="tab:blue")
    ax.scatter(cal["predicted"][keep], cal["empirical"][keep], s=sizes, color="tab:blue", zorder=3,
               label="reward model (size = pairs)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(a preferred) = sigmoid(r_a - r_b)")
    ax.set_ylabel("share of pairs where a was chosen")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two (N,) tensors."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-12))


def plot_gold_agreement(rewards: torch.Tensor, gold: torch.Tensor):
    """Scatter of the learned reward against the gold reward on held-out completions, with Pearson r."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(gold.numpy(), rewards.numpy(), s=6, alpha=0.4)
    ax.set_xlabel("gold reward P(positive)")
    ax.set_ylabel("learned reward r(x, y)")
    ax.set_title(f"Learned vs gold reward (Pearson r = {pearson(rewards, gold):.2f})")
    fig.tight_layout()
    return fig
