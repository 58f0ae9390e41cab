"""The reward-vs-KL frontier (Figure 2 of the DPO paper): gold reward against sequence KL for several methods.

Each method gives a cloud of (KL, gold) points: a DPO run per beta, a PPO run per
KL coefficient and a rejection-sampling run, each evaluated several times along its
trajectory (so one run gives several points), and best-of-n for several n
(KL = log n - (n-1)/n).
A point is a dict ``{"method", "setting", "step", "kl", "gold"}``.

>>> points = dpo_points(make_policy, reference, pairs, dpo_loss, betas=[0.1, 0.5], config=config, eval_fn=eval_fn)
>>> points += best_of_n_points(policy, tokenizer, prompts, gold, ns=[1, 2, 4, 8, 16])
>>> plot_frontier(points)

The three baselines that run none of the learner's code (PPO against the gold, best-of-n judged by the
gold, rejection sampling with notebook 04's reward model) are the same in every run of notebook 05 on the
tiny track: ``make data`` computes them once
(``scripts/build_frontier.py``) and ``stored_or_run`` loads them while their settings and the world they
came from are unchanged, else runs them where the notebook runs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import paths
from . import reference as ref_math
from .best_of_n import best_of_n_curve
from .dpo import DPOConfig, train_dpo
from .evaluation import evaluate_policy
from .models import SFT_WEIGHTS, frozen_copy
from .pairs import load_prompts
from .ppo import PPOConfig, run_ppo
from .rewards import gold_scores
from .reward_model import score_completions, stored_or_trained
from .rollout import sample_groups
from .sft import SFTConfig, best_of_n_demonstrations, train_sft

BASELINES_FILE = paths.DATA_DIR / "frontier" / "baselines.json"   # written by scripts/build_frontier.py
# The code a stored point depends on: editing any of these files makes the notebook run the baselines again.
BASELINE_SOURCES = ("rollout.py", "evaluation.py", "ppo.py", "best_of_n.py", "frontier.py", "rewards.py",
                    "models.py", "reference.py", "data.py", "pairs.py", "sft.py", "reward_model.py")

RS = "rejection sampling"
METHOD_STYLE = {"DPO": ("C0", "o"), "PPO": ("C3", "s"), "best-of-n": ("C2", "^"), RS: ("C1", "D"),
                "base policy": ("k", "*")}


def points_from_history(method: str, setting: str, history) -> list[dict]:
    """One point per evaluation of a run (a DPOHistory or PPOHistory; rows with ``gold`` and ``kl``)."""
    step_key = "step" if history.evals and "step" in history.evals[0] else "iteration"
    return [{"method": method, "setting": setting, "step": e.get(step_key, i), "kl": float(e["kl"]), "gold": float(e["gold"])}
            for i, e in enumerate(history.evals)]


def dpo_points(make_policy: Callable[[], torch.nn.Module], reference, pairs, loss_fn: Callable,
               betas: Sequence[float], config: DPOConfig, eval_fn: Callable, progress: Callable | None = None,
               histories: dict | None = None) -> list[dict]:
    """Train one DPO run per beta from a fresh policy (``make_policy()``); every evaluation is a point.

    ``loss_fn`` has the exercise signature (four (B,) log-probs, beta); beta is bound per run.
    ``histories`` (optional dict) receives each run's DPOHistory under its beta.
    """
    points = []
    for beta in betas:
        policy = make_policy()
        run_config = replace(config, beta=beta)
        history = train_dpo(policy, reference, pairs, functools.partial(loss_fn, beta=beta), run_config, eval_fn)
        points += points_from_history("DPO", f"beta={beta:g}", history)
        if histories is not None:
            histories[beta] = history
        if progress is not None:
            progress(f"DPO beta={beta:g}: gold {history.final['gold']:.3f} at KL {history.final['kl']:.2f} "
                     f"({history.seconds:.0f} s)")
        del policy
    return points


def ppo_points(kl_coefs: Sequence[float], run_ppo: Callable, progress: Callable | None = None) -> list[dict]:
    """One PPO run per KL coefficient: ``run_ppo(kl_coef)`` returns a history with ``evals`` (gold, kl)."""
    points = []
    for kl_coef in kl_coefs:
        history = run_ppo(kl_coef)
        points += points_from_history("PPO", f"kl_coef={kl_coef:g}", history)
        if progress is not None:
            progress(f"PPO kl_coef={kl_coef:g}: gold {history.final['gold']:.3f} at KL {history.final['kl']:.2f}")
    return points


@torch.no_grad()
def best_of_n_points(policy, tokenizer, prompts: Sequence[dict], gold, ns: Sequence[int], max_new_tokens: int = 24,
                     seed: int = 0, prompts_per_call: int = 16, max_sequences: int = 1024) -> list[dict]:
    """Best-of-n from the base policy, judged by the gold reward, for each n in ``ns``.

    ``prompts`` are rows of ``load_prompts`` (with ``prompt_ids``). Samples max(ns)
    completions per prompt at temperature 1, then for each n takes the expected
    gold of the best of n (unbiased, from the one pool), at the analytic KL
    log n - (n-1)/n. Judged by the gold itself, it is an upper bound on what
    best-of-n with a learned reward model gets (like the paper's PPO-GT).
    A sampling call takes ``prompts_per_call`` prompts, fewer when that would exceed ``max_sequences``
    completions (the KV cache grows with them: 1,024 x 32 tokens of GPT-2 124M is 2.4 GB).
    """
    if not ns:
        return []
    n_max = max(ns)
    prompts_per_call = max(1, min(prompts_per_call, max_sequences // n_max))
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    golds = []
    for part in sample_groups(policy, [p["prompt_ids"] for p in prompts], n_max, max_new_tokens,
                              generator=generator, tokenizer=tokenizer, prompts_per_call=prompts_per_call,
                              decode=False):
        _, scores = gold_scores(gold, tokenizer, part.prompt_ids, part.rollout.completion_ids)  # (C * N,)
        golds.append(scores.view(part.count, n_max))                                 # (C, N)
    pool = torch.cat(golds)                                                                # (P, N)
    curve = best_of_n_curve(pool, pool, list(ns), select_by="gold")
    return [{"method": "best-of-n", "setting": f"n={n}", "step": 0, "kl": ref_math.best_of_n_kl(n), "gold": float(g)}
            for n, g in zip(ns, curve["gold"].tolist())]


def rejection_sampling_points(policy, tokenizer, score_fn: Callable, prompt_ids: Sequence[Sequence[int]], n: int,
                              rounds: int, config: SFTConfig, evaluate: Callable, eval_every: int,
                              progress: Callable | None = None) -> list[dict]:
    """Rejection sampling (expert iteration) from ``policy``, trained in place; every evaluation is a point.

    Each round samples ``n`` completions per prompt of ``prompt_ids`` from the current policy, keeps the
    one ``score_fn(prompt_ids_list, completion_ids_list) -> (N,)`` scores highest
    (``sft.best_of_n_demonstrations``, seeded by the round), and fine-tunes on those with the reference
    ``sft_loss`` for ``config.steps`` steps (``sft.train_sft``), calling ``evaluate(policy) -> {"gold",
    "kl"}`` every ``eval_every`` steps and at the end of the round. Steps count across rounds.
    """
    points, done = [], 0
    for round_ in range(rounds):
        demos = best_of_n_demonstrations(policy, prompt_ids, n, score_fn, tokenizer, seed=round_)

        def on_step(step, offset=done):
            if step % eval_every == 0 or step == config.steps:
                result = evaluate(policy)
                points.append({"method": RS, "setting": f"n={n}", "step": offset + step,
                               "kl": float(result["kl"]), "gold": float(result["gold"])})

        train_sft(policy, demos, replace(config, seed=config.seed + round_), ref_math.sft_loss,
                  tokenizer.pad_token_id, progress=False, on_step=on_step)
        done += config.steps
        if progress is not None:
            progress(f"rejection sampling, round {round_ + 1}: {len(demos)} demonstrations, best of {n}; gold "
                     f"{points[-1]['gold']:.3f} at KL {points[-1]['kl']:.2f}")
    return points


def sweep_for_track(track) -> dict:
    """Notebook 05's frontier sweep for ``track``: extra DPO betas, PPO's KL coefficients and iterations,
    best-of-n's n and prompts, rejection sampling's n, prompts, rounds, SFT steps a round and evaluation
    cadence, and how many held-out prompts evaluate every point."""
    return dict(
        dpo_betas=track.pick(cpu=[], gpu=[0.05, 0.25, 0.5], grading=[]),      # besides the main run's beta
        ppo_kl_coefs=track.pick(cpu=[0.02], gpu=[0.01, 0.02, 0.05, 0.1], grading=[]),   # the gold is in [0, 1]
        ppo_iterations=track.pick(cpu=30, gpu=150, grading=2),
        best_of_n=track.pick(cpu=[1, 2, 4, 8, 16, 32], gpu=[1, 2, 4, 8, 16, 32, 64, 128], grading=[]),
        best_of_n_prompts=track.pick(cpu=64, gpu=256, grading=16),    # n samples each: the cost grows with n
        eval_prompts=track.pick(cpu=128, gpu=256, grading=16),
        rs_n=track.pick(cpu=8, gpu=8, grading=2),                        # rejection sampling: best of n ...
        rs_prompts=track.pick(cpu=3000, gpu=3000, grading=8),            # ... for this many training prompts
        rs_rounds=track.pick(cpu=3, gpu=3, grading=1),                   # sample, keep the best, fine-tune; again
        rs_steps=track.pick(cpu=94, gpu=188, grading=2),                 # SFT steps a round (94 x 32: one pass)
        rs_eval_every=track.pick(cpu=47, gpu=47, grading=2),
    )


def rs_run(track, reference, tokenizer, gold, eval_prompts: Sequence[dict], sweep: dict,
           progress: Callable | None = None) -> list[dict]:
    """Rejection sampling as notebook 05's frontier runs it: from a trainable copy of ``reference``, best of
    ``sweep["rs_n"]`` by notebook 04's reward model (``stored_or_trained("ppo")``) on the first
    ``sweep["rs_prompts"]`` training prompts, ``sweep["rs_rounds"]`` rounds of ``sweep["rs_steps"]`` SFT steps
    (``SFTConfig.for_track``'s batch, lr 3e-4, warm-up 5), evaluated on ``eval_prompts``."""
    reward_model = stored_or_trained("ppo", track, progress=False)
    train = [p["prompt_ids"] for p in load_prompts("train", track)[: sweep["rs_prompts"]]]
    score = functools.partial(score_completions, reward_model, pad_id=tokenizer.pad_token_id)
    config = SFTConfig.for_track(track, steps=sweep["rs_steps"], lr=3e-4, warmup=5)
    policy = frozen_copy(reference).requires_grad_(True)
    return rejection_sampling_points(policy, tokenizer, score, train, sweep["rs_n"], sweep["rs_rounds"], config,
                                     gold_evaluator(reference, tokenizer, gold, eval_prompts),
                                     sweep["rs_eval_every"], progress=progress)


def _baseline_runs(track, reference, tokenizer, gold, prompts: Sequence[dict], sweep: dict,
                   progress: Callable | None) -> dict:
    """{method: (settings, run)} for the three baselines of ``sweep``: PPO against the gold and rejection
    sampling with notebook 04's reward model, both evaluated on ``prompts[:sweep["eval_prompts"]]``, and
    best-of-n by the gold on ``prompts[:sweep["best_of_n_prompts"]]``."""
    eval_prompts, bon_prompts = prompts[: sweep["eval_prompts"]], prompts[: sweep["best_of_n_prompts"]]
    rs_settings = {k: sweep[k] for k in ("rs_n", "rs_prompts", "rs_rounds", "rs_steps", "rs_eval_every")}
    return {
        "PPO": (baseline_settings(track, "PPO", eval_prompts, kl_coefs=sweep["ppo_kl_coefs"],
                                  iterations=sweep["ppo_iterations"]),
                lambda: ppo_gold_points(track, sweep["ppo_kl_coefs"], sweep["ppo_iterations"], reference, tokenizer,
                                        gold, eval_prompts, progress=progress)),
        "best-of-n": (baseline_settings(track, "best-of-n", bon_prompts, ns=sweep["best_of_n"]),
                      lambda: best_of_n_points(reference, tokenizer, bon_prompts, gold, sweep["best_of_n"])),
        RS: (baseline_settings(track, RS, eval_prompts, files=(paths.REWARD_MODELS_DIR / "ppo.safetensors",),
                               **rs_settings),
             lambda: rs_run(track, reference, tokenizer, gold, eval_prompts, sweep, progress=progress)),
    }


def baselines(track, reference, tokenizer, gold, prompts: Sequence[dict], sweep: dict, recompute: bool = False,
              progress: Callable | None = print, path: Path | None = None) -> list[dict]:
    """The frontier's baselines for ``sweep`` (``sweep_for_track``, ``_baseline_runs``): PPO against the gold,
    best-of-n by the gold and rejection sampling by notebook 04's reward model; each stored by ``make data``
    or run now (``stored_or_run``)."""
    runs = _baseline_runs(track, reference, tokenizer, gold, prompts, sweep, progress)
    return [p for settings, run in runs.values() for p in stored_or_run(settings, run, recompute=recompute, path=path)]


def save_baselines(track, reference, tokenizer, gold, prompts: Sequence[dict], sweep: dict,
                   path: Path | None = None) -> dict:
    """Run every baseline for ``sweep`` and store their points with their settings (``scripts/build_frontier.py``)."""
    path = Path(path or BASELINES_FILE)
    stored = {}
    for method, (settings, run) in _baseline_runs(track, reference, tokenizer, gold, prompts, sweep, print).items():
        start = time.perf_counter()
        points = run()
        stored[method] = {"settings": settings, "seconds": round(time.perf_counter() - start, 1), "points": points}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=1) + "\n")
    path.chmod(0o644)                                        # readable by the grader's sandboxed users
    return stored


def gold_evaluator(reference, tokenizer, gold, prompts) -> Callable[[object], dict]:
    """evaluate(model) -> {"gold", "kl"}: the model's samples on ``prompts`` (``evaluation.evaluate_policy``)."""
    def evaluate(model):
        result = evaluate_policy(model, reference, tokenizer, gold, prompts, n=len(prompts))
        return {"gold": result["gold"], "kl": result["kl"]}
    return evaluate


def ppo_gold_points(track, kl_coefs: Sequence[float], iterations: int, reference, tokenizer, gold, prompts,
                    progress: Callable | None = None) -> list[dict]:
    """PPO against the gold reward (the DPO paper's PPO-GT) from the track's policy, one run per KL coefficient,
    each evaluated on ``prompts`` along its run (``PPOConfig.for_track(track, kl_coef=..., iterations=...)``)."""
    def run(kl_coef):
        config = PPOConfig.for_track(track, kl_coef=kl_coef, iterations=iterations)
        return run_ppo(track, "gold", config, ref_model=reference, tokenizer=tokenizer,
                       evaluate=gold_evaluator(reference, tokenizer, gold, prompts))
    return ppo_points(kl_coefs, run, progress=progress)


def baseline_settings(track, method: str, prompts: Sequence[dict], files: Sequence[Path] = (), **settings) -> dict:
    """What a stored baseline's points depend on: the method's settings, the prompts, the world's files
    (and ``files``, e.g. a reward model's weights), the code.

    JSON-comparable; ``stored_or_run`` loads points only when every entry equals the stored one.
    """
    world_and_code = paths.files_digest([paths.TINY_POLICY_DIR / "model.safetensors", paths.SFT_DIR / SFT_WEIGHTS,
                                         paths.PROMPTS_FILE, *sorted(paths.GOLD_DIR.iterdir()),
                                         *(Path(__file__).parent / name for name in BASELINE_SOURCES), *files])
    ids = hashlib.sha256(json.dumps([list(p["prompt_ids"]) for p in prompts]).encode()).hexdigest()[:16]
    out = {"method": method, "track": track.name, "grading": bool(track.grading), "device": str(track.device), "prompts": ids,
           "world_and_code": world_and_code, "torch": torch.__version__.split("+")[0]}
    if method == "PPO":
        out["ppo_config"] = asdict(PPOConfig.for_track(track, iterations=settings["iterations"]))
    return {**out, **settings}


def load_baselines(path: Path | None = None) -> dict:
    """The stored baselines file as a dict (empty when ``make data`` has not written it)."""
    path = Path(path or BASELINES_FILE)
    return json.loads(path.read_text()) if path.exists() else {}


def stored_or_run(settings: dict, run: Callable[[], list[dict]], recompute: bool = False,
                  path: Path | None = None) -> list[dict]:
    """A baseline's points: the ones ``make data`` stored for exactly ``settings``, else ``run()`` now.

    Prints which of the two happened (and how long the stored run took when it was built).
    """
    stored = load_baselines(path).get(settings["method"])
    if not recompute and stored is not None and stored["settings"] == settings:
        print(f"{settings['method']}: {len(stored['points'])} points loaded from data/frontier/"
              f"{Path(path or BASELINES_FILE).name} (`make data` ran it in {stored['seconds']:.0f} s; "
              "recompute=True runs it here)")
        return [dict(p) for p in stored["points"]]
    start = time.perf_counter()
    points = run()
    print(f"{settings['method']}: ran here in {time.perf_counter() - start:.0f} s")
    return points


def best_points(points: Sequence[dict], max_kl: float) -> dict:
    """For each method, its point with the highest gold at KL <= max_kl (None when it has none)."""
    out = {}
    for p in points:
        if p["kl"] <= max_kl and (p["method"] not in out or p["gold"] > out[p["method"]]["gold"]):
            out[p["method"]] = p
    return out


def plot_frontier(points: Sequence[dict], base: dict | None = None, title: str = "Gold reward vs KL", ax=None):
    """Scatter gold reward against sequence KL, one colour per method, one line per run (setting); returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    fig = ax.figure
    runs: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        runs.setdefault((p["method"], p["setting"]), []).append(p)
    labelled = set()
    for (method, setting), run in runs.items():
        colour, marker = METHOD_STYLE.get(method, ("C7", "x"))
        run = sorted(run, key=lambda p: (p["step"], p["kl"]))
        label = method if method not in labelled else None
        labelled.add(method)
        line = "-" if method != "best-of-n" else "--"
        ax.plot([p["kl"] for p in run], [p["gold"] for p in run], line, color=colour, alpha=0.35, lw=1)
        ax.scatter([p["kl"] for p in run], [p["gold"] for p in run], color=colour, marker=marker, s=22, label=label)
        last = run[-1]
        ax.annotate(setting, (last["kl"], last["gold"]), fontsize=7, color=colour, xytext=(3, 3),
                    textcoords="offset points")
    if base is not None:
        ax.scatter([0.0], [base["gold"]], color="k", marker="*", s=90, label="base policy", zorder=3)
    ax.set(xlabel="sequence KL(policy || reference), nats", ylabel="gold reward (mean P(positive))", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def frontier_table(points: Sequence[dict]) -> str:
    """A plain-text table of the points: grouped by method and setting (in the order they first appear), by step."""
    first = {}
    for p in points:
        first.setdefault((p["method"], p["setting"]), len(first))
    rows = sorted(points, key=lambda p: (first[(p["method"], p["setting"])], p["step"]))
    width = max([len("method")] + [len(p["method"]) for p in points])
    lines = [f"{'method':<{width}} {'setting':<14} {'step':>5} {'KL':>6} {'gold':>6}"]
    lines += [f"{p['method']:<{width}} {p['setting']:<14} {p['step']:>5} {p['kl']:>6.2f} {p['gold']:>6.3f}" for p in rows]
    return "\n".join(lines)


__all__ = ["points_from_history", "dpo_points", "ppo_points", "best_of_n_points", "rejection_sampling_points",
           "best_points", "plot_frontier", "frontier_table"]
